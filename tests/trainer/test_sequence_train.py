"""`crewstream train --window W --stride S` and `--dense`: their command line and refusals."""

import json

import pytest

from tfrecords_schema import serving
from trainer import task


@pytest.mark.parametrize("argv", [["--window", "0"], ["--stride", "0"], ["--dense", "--model", "lstm"],
                                  ["--dense", "--stride", "4"],
                                  ["--dense", "--strategy", "multiworker"]])
def test_bad_flags_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as e:
        task.config_from_argv(["--data", "d", "--model-dir", "m", *argv])
    assert e.value.code == 2
    assert argv[0] in capsys.readouterr().err


@pytest.mark.parametrize("flags,message", [
    (["--window", "32"], "a windows-layout folder holds only window 64, stride 32; asked for window 32, stride 32"),
    (["--stride", "8"], "a windows-layout folder holds only window 64, stride 32; asked for window 64, stride 8"),
    (["--dense"], "--dense reads a sequence folder's chunks; this one has the windows layout"),
])
def test_a_windows_folder_refuses_other_windows_in_one_line(tmp_path, prep_dir, capsys, flags, message):
    model_dir = tmp_path / "model"
    assert task.main(["--data", prep_dir, "--model-dir", str(model_dir), "--progress", "none", *flags]) == 1
    err = capsys.readouterr().err
    assert err.startswith("crewstream train: error: ") and err.count("\n") == 1 and message in err, err
    assert not (model_dir / "train_config.json").exists()


def _train(sequence_dir, model_dir, *flags):
    return task.main(["--data", sequence_dir, "--model-dir", str(model_dir), "--epochs", "2",
                      "--batch-size", "32", "--filters", "4", "--learning-rate", "0.01", "--progress", "none",
                      *flags])


def test_train_and_evaluate_windows_of_another_size_and_stride(tmp_path, sequence_dir, capsys):
    """W' 32 < the folder's 64, stride 8: the export and evaluate take windows of 32 rows."""
    from crewstream import cli
    from tfrecords_schema import read_stats
    from trainer import data, train

    model_dir = tmp_path / "model"
    assert _train(sequence_dir, model_dir, "--window", "32", "--stride", "8") == 0
    view = data.windowed_stats(read_stats(sequence_dir), 32, 8)
    assert serving.read_config(str(model_dir))["window"] == 32
    config = json.loads((model_dir / train.CONFIG_FILE).read_text())
    assert (config["window"], config["stride"], config["dense"]) == (32, 8, False)
    assert len(json.loads((model_dir / train.HISTORY_FILE).read_text())["loss"]) == 2
    assert cli.main(["evaluate", "--data", sequence_dir, "--model-dir", str(model_dir)]) == 0
    report = json.loads((model_dir / "eval.json").read_text())
    # evaluate cuts the model's W at the folder's stride
    assert report["num_windows"] == data.windowed_stats(view, 32, 32)["splits"]["eval"]["num_windows"]
    capsys.readouterr()
    # a resumed run must keep its window and stride
    assert _train(sequence_dir, model_dir, "--window", "32", "--stride", "4") == 1
    assert "stride: 8 -> 4" in capsys.readouterr().err


def test_dense_training_lowers_the_loss_and_exports_its_window(tmp_path, sequence_dir, capsys):

    model_dir = tmp_path / "model"
    assert _train(sequence_dir, model_dir, "--window", "48", "--dense", "--batch-size", "4",
                  "--epochs", "3") == 0
    history = json.loads((model_dir / "history.json").read_text())
    assert set(history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert history["loss"][-1] < history["loss"][0]
    config = serving.read_config(str(model_dir))
    assert config["window"] == 48 and serving.SEQUENCE_SIGNATURE in config["signatures"]


@pytest.mark.slow
def test_two_workers_read_a_sequence_folder_each_window_once(sequence_dir, records, tmp_path):
    """A real two-worker cluster (tests/trainer/test_multiworker.py's) on the sequence folder at its
    own W and stride: every epoch each window of the windows layout once over both workers, and
    identical weights (the shard hint splits the files, as FILE auto-sharding does a windows folder's)."""
    from tests.cluster import (cluster_argv, assert_each_window_once_per_epoch,
                                                assert_same_weights, worker_log, worker_result, run_cluster)
    from tfrecords_schema import read_stats

    outs, codes = run_cluster(tmp_path, "seq", cluster_argv(sequence_dir, tmp_path / "model"))
    assert codes == [0, 0], "\n".join(worker_log(o) for o in outs)
    chief, worker = (worker_result(o) for o in outs)
    assert_same_weights([chief, worker])
    assert_each_window_once_per_epoch(outs, records, read_stats(sequence_dir), chief["history"], epochs=[0, 1])
