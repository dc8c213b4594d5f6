"""`crewstream train`: the model folder, and resuming a killed run where it stopped.

The kills are real: a subprocess runs the same training with a callback that calls os._exit right
after epoch 1 is checkpointed (no clean-up code runs), or one that stops in the middle of epoch 2
until the test sends it SIGKILL. The same command then resumes it.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import tensorflow as tf

from trainer import model as model_lib, task, train

EPOCHS = 3
KILLED = 17  # exit status of the killed run
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _argv(prep_dir, model_dir, epochs=EPOCHS, **extra):
    argv = ["--data", prep_dir, "--model-dir", str(model_dir), "--epochs", str(epochs),
            "--batch-size", "64", "--units", "8", "--seed", "3", "--progress", "none"]
    for flag, value in extra.items():
        argv += [f"--{flag.replace('_', '-')}", str(value)]
    return argv


def _run(argv, on_epoch_begin=None):
    """Train in-process as `crewstream train argv`; returns the 0-based epochs that started."""
    started = []
    callback = model_lib.epoch_callback(on_epoch_begin=lambda epoch, logs: started.append(epoch))
    train.train(task._config(task._parse_args(argv)), extra_callbacks=[callback])
    return started


def _history(model_dir):
    with open(os.path.join(model_dir, train.HISTORY_FILE)) as f:
        return json.load(f)


def _scalar_steps(log_dir, tag):
    steps = []
    for name in sorted(os.listdir(log_dir)):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(log_dir, name)):
            for value in event.summary.value:
                if value.tag == tag:
                    assert value.metadata.plugin_data.plugin_name == "scalars"
                    steps.append(event.step)
    return sorted(steps)


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory, prep_dir):
    """MODEL of a run of EPOCHS epochs killed (os._exit) right after epoch 1."""
    model_dir = tmp_path_factory.mktemp("resume") / "model"
    script = textwrap.dedent(f"""
        import os, sys
        from trainer import model, task, train
        kill = model.epoch_callback(on_epoch_end=lambda epoch, logs: os._exit({KILLED}))
        train.train(task._config(task._parse_args(sys.argv[1:])), extra_callbacks=[kill])
    """)
    done = subprocess.run([sys.executable, "-c", script, *_argv(prep_dir, model_dir)],
                          cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == KILLED, done.stderr[-3000:]
    return model_dir


def test_killed_run_left_epoch_one(killed_run):
    assert _history(killed_run)["epoch"] == [1]
    assert os.listdir(killed_run / train.CHECKPOINTS_DIR)
    assert not (killed_run / "serving").exists()


def test_rerun_resumes_after_the_last_epoch_and_finishes(killed_run, prep_dir, capsys):
    before = _history(killed_run)
    started = _run(_argv(prep_dir, killed_run))
    assert started == [1, 2]  # not from epoch 0
    history = _history(killed_run)
    assert history["epoch"] == [1, 2, 3]
    assert set(history) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == EPOCHS for v in history.values())
    assert history["loss"][0] == before["loss"][0]  # epoch 1 is the killed run's, kept

    # the rest of the model folder
    assert (killed_run / "serving" / "saved_model.pb").exists()
    for png in ("loss.png", "accuracy.png"):
        assert os.path.getsize(killed_run / "plots" / png) > 1000
    assert _scalar_steps(killed_run / "logs" / "train", "epoch_loss") == [0, 1, 2]
    assert _scalar_steps(killed_run / "logs" / "validation", "epoch_loss") == [0, 1, 2]

    # a finished run re-run trains nothing; more epochs continue it
    assert _run(_argv(prep_dir, killed_run)) == []
    assert _history(killed_run)["epoch"] == [1, 2, 3]
    assert _run(_argv(prep_dir, killed_run, epochs=4)) == [3]
    assert _history(killed_run)["epoch"] == [1, 2, 3, 4]


# Trains like `python -m trainer.task ARGV`, but after batch 3 of epoch 2 it creates MARKER and
# waits there, mid-epoch, for the test's SIGKILL.
STOP_MID_EPOCH = textwrap.dedent("""
    import pathlib, sys, time
    from trainer import model, task, train

    class StopMidEpoch(model.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1 and batch == 2:
                pathlib.Path(sys.argv[1]).touch()
                while True:
                    time.sleep(1)

    train.train(task._config(task._parse_args(sys.argv[2:])), extra_callbacks=[StopMidEpoch()])
""")


@pytest.fixture(scope="module")
def killed_mid_epoch(tmp_path_factory, prep_dir):
    """MODEL of a run of EPOCHS epochs SIGKILLed in the middle of epoch 2."""
    root = tmp_path_factory.mktemp("mid_epoch")
    model_dir, marker = root / "model", root / "mid-epoch-2"
    with open(root / "stderr", "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", STOP_MID_EPOCH, str(marker), *_argv(prep_dir, model_dir)],
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        while not marker.exists():
            assert proc.poll() is None, (root / "stderr").read_text()[-3000:]
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return model_dir


def test_killed_mid_epoch_resumes_from_the_last_finished_epoch(killed_mid_epoch, prep_dir):
    before = _history(killed_mid_epoch)
    assert before["epoch"] == [1]  # the half of epoch 2 left nothing behind
    assert os.listdir(killed_mid_epoch / train.CHECKPOINTS_DIR)
    assert not (killed_mid_epoch / "serving").exists()
    assert _run(_argv(prep_dir, killed_mid_epoch)) == [1, 2]  # epoch 2 again from its start, then 3
    history = _history(killed_mid_epoch)
    assert history["epoch"] == [1, 2, 3]
    assert history["loss"][0] == before["loss"][0]
    assert (killed_mid_epoch / "serving" / "saved_model.pb").exists()
    assert _scalar_steps(killed_mid_epoch / "logs" / "train", "epoch_loss") == [0, 1, 2]


def test_resuming_with_other_settings_is_refused(killed_run, prep_dir):
    with pytest.raises(train.ResumeError, match="units"):
        _run(_argv(prep_dir, killed_run, units=16))
    assert task.main(_argv(prep_dir, killed_run, learning_rate=0.5)) == 1


def test_steps_per_epoch_repeats_the_split(tmp_path, prep_dir):
    started = _run(_argv(prep_dir, tmp_path / "model", epochs=2, steps_per_epoch=3))
    assert started == [0, 1]
    assert _history(tmp_path / "model")["epoch"] == [1, 2]


def test_history_file_drops_epochs_that_run_again(tmp_path):
    """Killed after writing epoch 3's entry but before its checkpoint: epoch 3 runs again."""
    history = train.HistoryFile(str(tmp_path / "history.json"))
    for epoch in range(3):
        history.on_epoch_end(epoch, {"loss": float(epoch)})
    resumed = train.HistoryFile(str(tmp_path / "history.json"))
    resumed.on_epoch_begin(2)
    assert _history(tmp_path)["epoch"] == [1, 2]
    resumed.on_epoch_end(2, {"loss": 9.0})
    assert _history(tmp_path) == {"epoch": [1, 2, 3], "loss": [0.0, 1.0, 9.0]}


@pytest.mark.parametrize("argv", [["--epochs", "0"], ["--batch-size", "-1"], ["--weighting", "focal"],
                                  ["--weighting", "effective:1.5"], ["--dropout", "1"],
                                  ["--learning-rate", "0"], ["--steps-per-epoch", "0"],
                                  ["--model", "gru"], ["--kernel-size", "1"], ["--blocks", "0"],
                                  ["--filters", "0"], ["--early-stopping", "0"]])
def test_bad_flags_are_usage_errors(argv):
    with pytest.raises(SystemExit) as e:
        task._parse_args(["--data", "d", "--model-dir", "m", *argv])
    assert e.value.code == 2


def test_not_a_preprocess_output(tmp_path, capsys):
    assert task.main(["--data", str(tmp_path), "--model-dir", str(tmp_path / "m")]) == 1
    assert "stats.json" in capsys.readouterr().err


def test_tcn_trains_resumes_and_records_its_receptive_field(tmp_path, prep_dir):
    """`--model tcn` with the default depth: the most blocks that fit W = 64 (4, receptive field
    61 rows), in train_config.json and the serving config; resumed like the lstm."""
    from trainer import export

    model_dir = tmp_path / "model"
    assert _run(_argv(prep_dir, model_dir, epochs=1, model="tcn", filters=4)) == [0]
    with open(model_dir / train.CONFIG_FILE) as f:
        settings = json.load(f)["model"]
    assert (settings["kind"], settings["blocks"], settings["kernel_size"], settings["receptive_field"]) == (
        "tcn", 4, 3, 61)
    serving = export.read_serving_config(str(model_dir))
    assert (serving["model"], serving["receptive_field"]) == ("tcn", 61)
    assert export.SEQUENCE_SIGNATURE in serving["signatures"]
    assert _run(_argv(prep_dir, model_dir, epochs=2, model="tcn", filters=4)) == [1]  # resumed at epoch 2
    assert _history(model_dir)["epoch"] == [1, 2]
    with pytest.raises(train.ResumeError, match="model"):
        _run(_argv(prep_dir, model_dir, epochs=3, model="tcn", filters=8))


def test_a_receptive_field_wider_than_the_window_is_one_line_before_any_training(tmp_path, prep_dir, capsys):
    assert task.main(_argv(prep_dir, tmp_path / "model", model="tcn", blocks=5)) == 1
    err = capsys.readouterr().err
    assert err == ("crewstream train: error: tcn with --kernel-size 3 and --blocks 5 has a receptive field "
                   "of 125 rows, more than the window of 64 rows: use --blocks 4 or fewer\n")
    assert not (tmp_path / "model").exists()
