"""`crewstream train`: the model folder, and resuming a killed run where it stopped.

The kills are real: a subprocess runs the same training with a callback that calls os._exit right
after epoch 1 is checkpointed (no clean-up code runs), or one that stops in the middle of epoch 2
until the test sends it SIGKILL. The same command then resumes it.
"""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

from tfrecords_schema import serving
from tfrecords_schema import WINDOW
from tests.reference import keras_early_stopping
from tfrecords_schema import ownership
from trainer import data, model as model_lib, task, train

EPOCHS = 3
KILLED = 17  # exit status of the killed run
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _argv(prep_dir, model_dir, epochs=EPOCHS, **extra):
    argv = ["--data", prep_dir, "--model-dir", str(model_dir), "--epochs", str(epochs),
            "--batch-size", "64", "--units", "8", "--seed", "3", "--progress", "none",
            "--model", "lstm", "--normalize", "none"]  # the resume machinery on the small lstm
    for flag, value in extra.items():
        argv += [f"--{flag.replace('_', '-')}", str(value)]
    return argv


def _run(argv, on_epoch_begin=None):
    """Train in-process as `crewstream train argv`; returns the 0-based epochs that started."""
    started = []
    callback = model_lib.epoch_callback(on_epoch_begin=lambda epoch, logs: started.append(epoch))
    train.train(task.config_from_argv(argv), extra_callbacks=[callback])
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
        train.train(task.config_from_argv(sys.argv[1:]), extra_callbacks=[kill])
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

    train.train(task.config_from_argv(sys.argv[2:]), extra_callbacks=[StopMidEpoch()])
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
    # its earlier epochs' weights were not kept: early stopping could not export the best one
    with pytest.raises(train.ResumeError, match="early_stopping"):
        _run(_argv(prep_dir, killed_run, early_stopping=2))


class BatchCounter(model_lib.keras.callbacks.Callback):
    """Counts the train batches of every epoch: `batches[i]` for the i-th epoch that started."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.append(0)

    def on_train_batch_end(self, batch, logs=None):
        self.batches[-1] += 1


def test_steps_per_epoch_repeats_the_split(tmp_path, prep_dir, stats):
    steps = 3
    one_pass = data.steps_per_epoch(stats, "train", 64)
    assert one_pass > steps  # so 3 steps is neither a whole pass nor what the default would do
    counter = BatchCounter()
    result = train.train(task.config_from_argv(_argv(prep_dir, tmp_path / "model", epochs=2,
                                                     steps_per_epoch=steps)),
                         extra_callbacks=[counter])
    assert counter.batches == [steps, steps]
    assert int(result["model"].optimizer.iterations.numpy()) == 2 * steps
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
                                  ["--model", "gru"], ["--kernel-size", "1"], ["--levels", "0"],
                                  ["--filters", "0"], ["--early-stopping", "0"]])
def test_bad_flags_are_usage_errors(argv):
    with pytest.raises(SystemExit) as e:
        task.config_from_argv(["--data", "d", "--model-dir", "m", *argv])
    assert e.value.code == 2


def test_not_a_preprocess_output(tmp_path, capsys):
    assert task.main(["--data", str(tmp_path), "--model-dir", str(tmp_path / "m")]) == 1
    assert "stats.json" in capsys.readouterr().err


# --- early stopping ---------------------------------------------------------------------------

PATIENCE = 3
ES_EPOCHS = 8
ASCENT_FROM = 2  # 0-based: from epoch 3 on, AscentAndSnapshots trains by gradient ascent
ES_LEARNING_RATE = 0.02


class AscentAndSnapshots(model_lib.keras.callbacks.Callback):
    """Makes val_loss stop improving on any data, and records the reference weights.

    From epoch ASCENT_FROM + 1 on the learning rate is negated (gradient ascent on the train
    loss), so the eval loss climbs and early stopping must end the run before ES_EPOCHS. After
    every epoch the weights go to DIR/epoch-N.npz, the reference the export is compared with;
    after epoch `kill_after` the process dies (os._exit: no clean-up code runs).
    """

    def __init__(self, out_dir, kill_after=None):
        super().__init__()
        self.out_dir, self.kill_after = str(out_dir), kill_after

    def on_epoch_begin(self, epoch, logs=None):
        rate = -ES_LEARNING_RATE if epoch >= ASCENT_FROM else ES_LEARNING_RATE
        self.model.optimizer.learning_rate.assign(rate)

    def on_epoch_end(self, epoch, logs=None):
        np.savez(os.path.join(self.out_dir, f"epoch-{epoch + 1}.npz"), *self.model.get_weights())
        if self.kill_after == epoch + 1:
            os._exit(KILLED)


def _es_argv(prep_dir, model_dir):
    return _argv(prep_dir, model_dir, epochs=ES_EPOCHS, early_stopping=PATIENCE,
                 learning_rate=ES_LEARNING_RATE)


def _snapshot(snapshots, epoch):
    with np.load(snapshots / f"epoch-{epoch}.npz") as f:
        return [f[k] for k in f.files]


def _assert_exports(model_dir, snapshots, epoch, other_epoch, stats, records):
    """MODEL/serving gives the probabilities of the network with epoch `epoch`'s weights, and
    not those of `other_epoch`'s."""

    windows = records("eval")[WINDOW][:64]
    scaled = serving.load(str(model_dir)).signatures[serving.SCALED_SIGNATURE]
    exported = scaled(window=tf.constant(windows))[serving.PROBABILITIES].numpy()
    net = model_lib.build_model(stats["window"], len(stats["features"]),
                                model_lib.ModelParams(kind=model_lib.LSTM, units=8, normalize=model_lib.NORM_NONE))
    net.set_weights(_snapshot(snapshots, epoch))
    np.testing.assert_allclose(exported, net(windows, training=False).numpy(), atol=1e-6)
    net.set_weights(_snapshot(snapshots, other_epoch))
    assert np.abs(exported - net(windows, training=False).numpy()).max() > 1e-3


@pytest.fixture(scope="module")
def early_run(tmp_path_factory, prep_dir):
    """(MODEL, snapshots folder) of an uninterrupted run with --early-stopping PATIENCE."""
    root = tmp_path_factory.mktemp("early")
    (root / "snapshots").mkdir()
    train.train(task.config_from_argv(_es_argv(prep_dir, root / "model")),
                extra_callbacks=[AscentAndSnapshots(root / "snapshots")])
    return root / "model", root / "snapshots"


def test_early_stopping_stops_as_keras_does_and_exports_the_best_epoch(early_run, stats, records):
    model_dir, snapshots = early_run
    history = _history(model_dir)
    best, stop = keras_early_stopping(history["val_loss"], PATIENCE)
    assert stop is not None and stop < ES_EPOCHS, history  # the ascent made it stop early
    assert history["epoch"] == list(range(1, stop + 1))  # not one epoch more, nor less
    assert history["best_epoch"] == best
    assert best < stop
    _assert_exports(model_dir, snapshots, best, stop, stats, records)


def test_rerun_of_a_stopped_run_trains_nothing_and_says_which_epoch_it_kept(early_run, prep_dir,
                                                                            stats, records, capsys):
    model_dir, snapshots = early_run
    before = _history(model_dir)
    assert task.main(_es_argv(prep_dir, model_dir)) == 0
    assert _history(model_dir) == before
    summary = capsys.readouterr().out.splitlines()[0]
    assert summary.startswith(f"trained {before['epoch'][-1]} epoch(s), stopped early")
    best = before["best_epoch"]
    assert f"kept epoch {best}: " in summary
    assert f"val_loss {before['val_loss'][best - 1]:.4f}" in summary
    _assert_exports(model_dir, snapshots, best, before["epoch"][-1], stats, records)


KILL_AFTER_ASCENT = textwrap.dedent("""
    import sys
    from tests.trainer.test_train_resume import AscentAndSnapshots
    from trainer import task, train
    callback = AscentAndSnapshots(sys.argv[1], kill_after=int(sys.argv[2]))
    train.train(task.config_from_argv(sys.argv[3:]), extra_callbacks=[callback])
""")


@pytest.mark.slow
def test_early_stopping_survives_a_kill_between_best_and_stop(tmp_path, prep_dir, stats, records):
    """Killed after epoch ASCENT_FROM + 1, past the best epoch (gradient ascent from there on) and
    before the stop: the resumed run must not restart the patience count, and must export the
    best epoch's weights although this process never held them."""
    model_dir, snapshots, kill_after = tmp_path / "model", tmp_path / "snapshots", ASCENT_FROM + 1
    snapshots.mkdir()
    done = subprocess.run([sys.executable, "-c", KILL_AFTER_ASCENT, str(snapshots), str(kill_after),
                           *_es_argv(prep_dir, model_dir)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == KILLED, done.stderr[-3000:]
    killed = _history(model_dir)
    assert killed["epoch"] == list(range(1, kill_after + 1))
    assert not (model_dir / "serving").exists()

    train.train(task.config_from_argv(_es_argv(prep_dir, model_dir)),
                extra_callbacks=[AscentAndSnapshots(snapshots)])
    history = _history(model_dir)
    assert {k: v[:kill_after] for k, v in history.items() if k != "best_epoch"} == {
        k: v for k, v in killed.items() if k != "best_epoch"}
    best, stop = keras_early_stopping(history["val_loss"], PATIENCE)
    assert best < kill_after < stop, history  # the case this test is about
    assert history["epoch"] == list(range(1, stop + 1)) and history["best_epoch"] == best
    _assert_exports(model_dir, snapshots, best, stop, stats, records)


def test_tcn_trains_resumes_and_records_its_receptive_field(tmp_path, prep_dir):
    """`--model tcn` with the default depth: the most levels that fit W = 64 (4, receptive field
    61 rows), in train_config.json and the serving config; resumed like the lstm."""
    model_dir = tmp_path / "model"
    assert _run(_argv(prep_dir, model_dir, epochs=1, model="tcn", filters=4)) == [0]
    with open(model_dir / train.CONFIG_FILE) as f:
        settings = json.load(f)["model"]
    assert (settings["kind"], settings["levels"], settings["kernel_size"], settings["receptive_field"]) == (
        "tcn", 4, 3, 61)
    config = serving.read_config(str(model_dir))
    assert (config["model"], config["receptive_field"]) == ("tcn", 61)
    assert serving.SEQUENCE_SIGNATURE in config["signatures"]
    assert _run(_argv(prep_dir, model_dir, epochs=2, model="tcn", filters=4)) == [1]  # resumed at epoch 2
    assert _history(model_dir)["epoch"] == [1, 2]
    with pytest.raises(train.ResumeError, match="model"):
        _run(_argv(prep_dir, model_dir, epochs=3, model="tcn", filters=8))


def test_levels_are_recorded_in_train_config_json(tmp_path, prep_dir):
    """`--levels N` is the tcn's depth as train_config.json records it (no other name for it)."""
    config = task.config_from_argv(_argv(prep_dir, tmp_path, model="tcn", levels=2))
    train.check_resumable(dataclasses.replace(config, model=config.model.for_window(64)))
    settings = json.loads((tmp_path / train.CONFIG_FILE).read_text())["model"]
    assert (settings["levels"], settings["receptive_field"]) == (2, 1 + 2 * 2 * 3)
    assert not any("block" in key for key in settings)


def _older_config(model_dir, config, change):
    """MODEL as a killed run of an older crewstream left it: checkpoints, and a train_config.json
    of `config`'s settings changed by `change(settings)`."""
    settings = config.to_json()
    change(settings)
    (model_dir / train.CHECKPOINTS_DIR).mkdir(parents=True)
    (model_dir / train.CONFIG_FILE).write_text(json.dumps(settings))
    return settings


def _blocks_for_levels(settings):
    settings["model"]["blocks"] = settings["model"].pop("levels")


@pytest.mark.parametrize("change, details", [
    (_blocks_for_levels, "without model.levels; with model.blocks"),
    (lambda settings: settings["model"].pop("augment_gain"), "without model.augment_gain"),
    (lambda settings: [settings.pop(key) for key in ("window", "stride", "dense")],
     "without dense, stride, window"),
    (lambda settings: [settings["model"].pop(key) for key in ("kind", "filters", "kernel_size", "levels",
                                                              "receptive_field")],
     "without model.filters, model.kernel_size, model.kind, model.levels, model.receptive_field"),
])
def test_a_run_of_an_older_crewstream_is_not_resumed(tmp_path, prep_dir, change, details):
    """A train_config.json with other keys than this version writes: ResumeError naming them."""
    config = task.config_from_argv(_argv(prep_dir, tmp_path, model="tcn"))
    config = dataclasses.replace(config, model=config.model.for_window(64))
    _older_config(tmp_path, config, change)
    path = tmp_path / train.CONFIG_FILE
    with pytest.raises(train.ResumeError) as e:
        train.check_resumable(config, write=False)
    assert str(e.value) == (f"{path} was written by an older crewstream ({details}): train into a new "
                            "--model-dir")


def test_the_command_refuses_an_older_model_folder_in_one_line(tmp_path, prep_dir, capsys):
    """`crewstream train` into a MODEL an older crewstream left ("blocks", not "levels"): exit 1,
    one line saying how to redo it, MODEL as it was."""
    model_dir = tmp_path / "model"
    argv = _argv(prep_dir, model_dir, model="tcn", filters=4)
    config = task.config_from_argv(argv)
    old = _older_config(model_dir, dataclasses.replace(config, model=config.model.for_window(64)),
                        _blocks_for_levels)
    ownership.claim(str(model_dir), ownership.MODEL)  # markers predate the rename of blocks
    assert task.main(argv) == 1
    assert capsys.readouterr().err == (
        f"crewstream train: error: {model_dir / train.CONFIG_FILE} was written by an older crewstream "
        "(without model.levels; with model.blocks): train into a new --model-dir\n")
    assert json.loads((model_dir / train.CONFIG_FILE).read_text()) == old
    assert sorted(os.listdir(model_dir)) == [ownership.MARKER, train.CHECKPOINTS_DIR, train.CONFIG_FILE]


def test_without_checkpoints_an_older_train_config_json_is_replaced(tmp_path, prep_dir):
    """Nothing of that run would be resumed: the new run's settings are written over it."""
    config = task.config_from_argv(_argv(prep_dir, tmp_path))
    (tmp_path / train.CONFIG_FILE).write_text(json.dumps({"model": {"blocks": 3}}))
    train.check_resumable(config)
    assert json.loads((tmp_path / train.CONFIG_FILE).read_text()) == config.to_json()


def test_a_receptive_field_wider_than_the_window_is_one_line_before_any_training(tmp_path, prep_dir, capsys):
    assert task.main(_argv(prep_dir, tmp_path / "model", model="tcn", levels=5)) == 1
    err = capsys.readouterr().err
    assert err == ("crewstream train: error: tcn with --kernel-size 3 and --levels 5 has a receptive field "
                   "of 125 rows, more than the window of 64 rows: use --levels 4 or fewer\n")
    assert not (tmp_path / "model").exists()


def test_early_stopping_without_an_eval_split_is_refused(tmp_path, prep_dir, capsys):
    """A preprocess output whose eval split is empty (no --eval-crews): one line, nothing trained."""
    out = tmp_path / "out"
    shutil.copytree(prep_dir, out)
    stats_path = out / "stats.json"
    stats = json.loads(stats_path.read_text())
    stats["splits"]["eval"] = {"crews": [], "num_rows": 0, "num_windows": 0,
                               "class_counts": {c: 0 for c in stats["label_vocabulary"]}, "shards": []}
    stats.pop("inputs")  # its per-file row counts would include the dropped eval rows
    stats_path.write_text(json.dumps(stats))
    shutil.rmtree(out / "eval")
    assert task.main(_es_argv(str(out), tmp_path / "model")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--early-stopping" in err[0] and "'eval' has no windows" in err[0], err
    assert not (tmp_path / "model" / train.HISTORY_FILE).exists()


@pytest.mark.parametrize("patience", [1, 2, 4])
def test_stopping_rule_is_keras_on_any_losses(patience):
    """train.best_epoch / stops_after, which a resumed run derives from history.json, against Keras'
    own EarlyStopping on many loss sequences (ties and NaN included), after every epoch."""
    rng = np.random.default_rng(patience)
    for _ in range(300):
        losses = rng.choice([0.5, 0.6, 0.7, 0.8, float("nan")], size=rng.integers(1, 12)).tolist()
        for n in range(1, len(losses) + 1):
            best, stop = keras_early_stopping(losses[:n], patience)
            history = {"epoch": list(range(1, n + 1)), "val_loss": losses[:n]}
            assert train.stops_after(history, patience) == (stop == n), losses[:n]
            if stop == n or n == len(losses):
                # Keras names epoch 1 best until a finite loss is seen; we name none
                assert train.best_epoch(history) == (best if np.isfinite(losses[:n]).any() else None)
            if stop is not None:
                break


class _FakeNet:
    """What EarlyStopping uses of a Keras model: get_weights() and stop_training."""

    def __init__(self, weights):
        self.weights, self.stop_training = weights, False

    def get_weights(self):
        return list(self.weights)


def test_a_kill_between_the_backup_and_keeping_the_best_weights(tmp_path):
    """Epoch 2 was the best and was checkpointed, but the run died before EarlyStopping kept its
    weights (the file still holds epoch 1's). Resumed, BackupAndRestore hands back epoch 2's
    weights; EarlyStopping must keep those before epoch 3 trains, not export the stale file."""
    path = str(tmp_path / train.BEST_WEIGHTS_FILE)
    history = train.HistoryFile(str(tmp_path / train.HISTORY_FILE))
    first = train.EarlyStopping(_FakeNet([np.zeros(3)]), 2, history, path, write=True)
    history.on_epoch_end(0, {"val_loss": 1.0})
    first.on_epoch_end(0)
    history.on_epoch_end(1, {"val_loss": 0.5})  # ... killed here, after the backup of epoch 2

    restored = [np.full(3, 2.0)]
    resumed_history = train.HistoryFile(str(tmp_path / train.HISTORY_FILE))
    resumed = train.EarlyStopping(_FakeNet(restored), 2, resumed_history, path, write=True)
    assert not resumed.stopped()
    resumed_history.on_epoch_begin(2)
    resumed.on_epoch_begin(2)
    resumed.net.weights = [np.full(3, 3.0)]  # epoch 3 trains, and is worse
    resumed_history.on_epoch_end(2, {"val_loss": 0.9})
    resumed.on_epoch_end(2)
    assert _history(tmp_path)["best_epoch"] == 2 and not resumed.net.stop_training
    np.testing.assert_array_equal(resumed.best_weights()[0], restored[0])

    # and what a later process reads back from the file
    again = train.EarlyStopping(_FakeNet([np.zeros(3)]), 2, train.HistoryFile(str(tmp_path / train.HISTORY_FILE)),
                                path, write=False)
    np.testing.assert_array_equal(again.best_weights()[0], restored[0])
