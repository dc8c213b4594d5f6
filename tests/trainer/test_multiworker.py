"""`crewstream train --strategy multiworker|mirrored`: TF_CONFIG, sharding by file, and a real
two-worker cluster on loopback (two processes, MultiWorkerMirroredStrategy) that trains, is
killed, and resumes.

Each worker is `python -c WORKER_SCRIPT` with its own TF_CONFIG; it runs the trainer's command
line in-process and dumps its final weights to an npz file, so the test can compare the
workers' models.
"""

import json
import os

import numpy as np
import pytest

from tfrecords_schema import ownership, serving
from tests.cluster import (KILLED, assert_each_window_once_per_epoch, assert_same_weights, cluster_argv, run_cluster,
                           tf_config, window_keys, worker_log, worker_result)
from trainer import data, task, train


# --- TF_CONFIG ---------------------------------------------------------------------------------

def test_tf_config_of_a_vertex_style_cluster():
    tf_config = {"cluster": {"chief": ["c:2222"], "worker": ["w0:2222", "w1:2222"]},
                 "task": {"type": "worker", "index": 1, "trial": ""}, "environment": "cloud"}
    parsed = train.read_tf_config({"TF_CONFIG": json.dumps(tf_config)})
    assert parsed == tf_config
    assert train.num_workers(parsed) == 3


@pytest.mark.parametrize("text, message", [
    ("", "needs the TF_CONFIG"),
    ("{cluster", "not JSON"),
    ('{"cluster": {"worker": ["a:1"]}}', '"task"'),
    ('{"cluster": {"worker": ["a:1"], "ps": ["p:1"]}, "task": {"type": "worker", "index": 0}}', "'ps'"),
    ('{"cluster": {"worker": ["a"]}, "task": {"type": "worker", "index": 0}}', "host:port"),
    ('{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}', "non-empty"),
    ('{"cluster": {"chief": ["a:1", "b:1"]}, "task": {"type": "chief", "index": 0}}', "one chief"),
    ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}}', "worker 0..1"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "evaluator", "index": 0}}', "not one of"),
])
def test_bad_tf_config_is_named(text, message):
    with pytest.raises(train.StrategyError, match=message):
        train.read_tf_config({"TF_CONFIG": text})


def test_multiworker_without_tf_config_is_a_clear_error(prep_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert task.main(cluster_argv(prep_dir, tmp_path / "model")) == 1
    assert "needs the TF_CONFIG environment variable" in capsys.readouterr().err
    assert not (tmp_path / "model").exists()


def test_fewer_shards_than_workers_is_a_clear_error(prep_dir, tmp_path, monkeypatch, capsys):
    """3 shards per split, 4 workers: refused before the cluster would start (and wait)."""
    monkeypatch.setenv("TF_CONFIG", tf_config([1, 2, 3, 4], 0))
    assert task.main(cluster_argv(prep_dir, tmp_path / "model")) == 1
    err = capsys.readouterr().err
    assert "3 shard(s) but 4 workers" in err and "--num-shards 4" in err
    assert not (tmp_path / "model").exists()


def test_the_command_line_offers_the_trainers_strategies():
    for name in train.STRATEGIES:
        assert task.config_from_argv(["--data", "d", "--model-dir", "m", "--strategy", name]).strategy == name
    with pytest.raises(SystemExit):
        task.config_from_argv(["--data", "d", "--model-dir", "m", "--strategy", "parameter_server"])


def test_the_command_line_offers_the_models_kinds_and_normalizations():
    from trainer import model as model_lib

    for flag, names, field in [("--model", model_lib.MODELS, "kind"),
                               ("--normalize", model_lib.NORMALIZATIONS, "normalize")]:
        for name in names:
            config = task.config_from_argv(["--data", "d", "--model-dir", "m", flag, name])
            assert getattr(config.model, field) == name
        with pytest.raises(SystemExit):
            task.config_from_argv(["--data", "d", "--model-dir", "m", flag, "gru"])


def test_the_command_line_takes_an_augmentation_gain_of_at_least_one(capsys):
    for text, gain in [("1", 1.0), ("2.5", 2.5)]:
        assert task.config_from_argv(["--data", "d", "--model-dir", "m", "--augment-gain",
                                      text]).model.augment_gain == gain
    for text in ("0.5", "-2", "nan"):
        with pytest.raises(SystemExit) as e:
            task.config_from_argv(["--data", "d", "--model-dir", "m", "--augment-gain", text])
        assert e.value.code == 2 and "--augment-gain: must be >= 1" in capsys.readouterr().err


def test_data_service_with_multiworker_is_a_usage_error():
    with pytest.raises(SystemExit) as e:
        task.config_from_argv(["--data", "d", "--model-dir", "m", "--strategy", "multiworker",
                               "--data-service", "grpc://localhost:5000"])
    assert e.value.code == 2


# --- sharding by file ----------------------------------------------------------------------------


def test_file_auto_sharding_gives_each_worker_the_same_shards_every_epoch(prep_dir, stats, records):
    """What tf.distribute does to each worker's dataset (its FILE auto-shard rewrite, called
    here directly): worker k reads exactly shards k, k+2, ... in every epoch, though the file
    order is reshuffled each epoch; together the workers read every window once."""
    from tensorflow.python.distribute import input_ops  # the rewrite tf.distribute applies

    from tfrecords_schema import WINDOW

    all_windows = records("train")[WINDOW]
    per_worker = []
    for worker in range(2):
        ds = data.make_dataset(prep_dir, "train", 64, shuffle=True, seed=0, num_workers=2)
        sharded = input_ops.auto_shard_dataset(ds, 2, worker, 2)
        expected = data.num_windows(stats, "train", 2, worker)
        epochs = [window_keys(w for x, _, _ in sharded for w in x.numpy()) for _ in range(3)]
        assert len(epochs[0]) == expected
        assert epochs[1] == epochs[0] and epochs[2] == epochs[0]
        per_worker.append(epochs[0])
    assert sorted(per_worker[0] + per_worker[1]) == window_keys(all_windows)
    assert len(per_worker[0]) != len(per_worker[1])  # 2 shards vs 1: the parts differ in size


def test_check_shards(stats):
    data.check_shards(stats, "train", 3)
    with pytest.raises(data.ShardingError, match="'eval' has 3 shard"):
        data.check_shards(stats, "eval", 4)


# --- mirrored --------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["lstm", "tcn"])
def test_mirrored_strategy_trains_and_writes_the_model_folder(prep_dir, tmp_path, model):
    model_dir = tmp_path / "model"
    argv = ["--data", prep_dir, "--model-dir", str(model_dir), "--epochs", "1", "--batch-size", "64",
            "--units", "4", "--filters", "4", "--model", model, "--progress", "none",
            "--strategy", "mirrored"]
    result = train.train(task.config_from_argv(argv))
    assert result["chief"] and result["history"]["epoch"] == [1]
    assert np.isfinite(result["history"]["loss"][0])
    assert result["model"].distribute_strategy.num_replicas_in_sync >= 1
    assert type(result["model"].distribute_strategy).__name__ == "MirroredStrategy"
    assert (model_dir / "serving" / "saved_model.pb").exists()
    # the export is a plain copy (runs outside the strategy), the tcn's sequence signature included

    loaded = serving.load(str(model_dir))
    windows = np.random.default_rng(0).normal(size=(3, 64, 3)).astype(np.float32)
    expected = result["model"](windows, training=False).numpy()
    got = loaded.signatures[serving.SCALED_SIGNATURE](window=windows)[serving.PROBABILITIES].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert (serving.SEQUENCE_SIGNATURE in loaded.signatures) == (model == "tcn")


# --- two workers on loopback ---------------------------------------------------------------------


@pytest.mark.slow
def test_two_workers_finish_with_identical_weights(prep_dir, stats, records, tmp_path):
    model_dir = tmp_path / "model"
    outs, codes = run_cluster(tmp_path, "run", cluster_argv(prep_dir, model_dir))
    assert codes == [0, 0], "\n".join(worker_log(o) for o in outs)
    chief, worker = (worker_result(o) for o in outs)
    assert chief["chief"] and not worker["chief"]
    assert_same_weights([chief, worker])
    assert chief["history"] == worker["history"]
    assert chief["history"]["epoch"] == [1, 2]
    assert_each_window_once_per_epoch(outs, records, stats, chief["history"], epochs=[0, 1])

    # only the chief wrote MODEL, and the worker left no temporary folder behind
    with open(model_dir / train.HISTORY_FILE) as f:
        assert json.load(f) == chief["history"]
    assert chief["serving"] == str(model_dir / "serving") and worker["serving"] is None
    assert sorted(os.listdir(model_dir)) == sorted(
        [ownership.MARKER, "checkpoints", "history.json", "logs", "plots", "serving", "train_config.json"])
    assert os.listdir(model_dir / "checkpoints") == ["chief"]
    assert sorted(os.listdir(model_dir / "logs")) == ["train", "validation"]

    # the export is the chief's model: same probabilities as the worker's weights give
    from trainer import model as model_lib

    net = model_lib.build_model(stats["window"], len(stats["features"]),
                                model_lib.ModelParams(kind=model_lib.LSTM, units=8, normalize=model_lib.NORM_NONE))
    net.set_weights(worker["weights"])
    windows = np.random.default_rng(0).normal(size=(5, stats["window"], len(stats["features"])))
    windows = windows.astype(np.float32)
    scaled = serving.load(str(model_dir)).signatures[serving.SCALED_SIGNATURE]
    np.testing.assert_allclose(scaled(window=windows)[serving.PROBABILITIES].numpy(),
                               net(windows, training=False).numpy(), atol=1e-6)


@pytest.mark.slow
def test_killed_workers_resume_under_the_strategy(prep_dir, stats, records, tmp_path):
    """Both workers die (os._exit) after epoch 1 of 2 is checkpointed; the same command on both
    resumes from the chief's checkpoint at epoch 2, and the workers end identical."""
    model_dir = tmp_path / "model"
    outs, codes = run_cluster(tmp_path, "killed", cluster_argv(prep_dir, model_dir), kill=True)
    assert codes == [KILLED, KILLED], "\n".join(worker_log(o) for o in outs)
    with open(model_dir / train.HISTORY_FILE) as f:
        killed_history = json.load(f)
    assert killed_history["epoch"] == [1]
    assert_each_window_once_per_epoch(outs, records, stats, killed_history, epochs=[0])

    outs, codes = run_cluster(tmp_path, "resumed", cluster_argv(prep_dir, model_dir))
    assert codes == [0, 0], "\n".join(worker_log(o) for o in outs)
    chief, worker = (worker_result(o) for o in outs)
    assert chief["started"] == [1] and worker["started"] == [1]  # not from epoch 0
    assert_same_weights([chief, worker])
    assert chief["history"]["epoch"] == [1, 2]
    assert chief["history"]["loss"][0] == killed_history["loss"][0]  # epoch 1 is the killed run's
    assert_each_window_once_per_epoch(outs, records, stats, chief["history"], epochs=[1])
    assert (model_dir / "serving" / "saved_model.pb").exists()
    assert os.listdir(model_dir / "checkpoints") == ["chief"]
