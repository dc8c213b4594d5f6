"""A val split (preprocess --val-crews): train watches it, not eval (docs/DESIGN.md, "Splits")."""

import json
import os

import numpy as np
import pytest

from tfrecords_schema import read_stats


def _train(data_dir, model_dir, **overrides):
    from trainer import model as model_lib, train

    params = model_lib.ModelParams(kind=model_lib.TCN, filters=8, learning_rate=1e-2,
                                   normalize=model_lib.NORM_CENTER, norm_rows=24)
    config = train.TrainConfig(data=data_dir, model_dir=str(model_dir), epochs=2, batch_size=64, seed=3,
                               model=params, verbose=0, **overrides)
    return train.train(config)


@pytest.fixture(scope="module")
def val_run(tmp_path_factory, val_dir):
    """A run on the val folder; result["read"]: the splits train built datasets of."""
    from trainer import data

    read = []
    make_dataset = data.make_dataset

    def spy(data_dir, split, *args, **kwargs):
        read.append(split)
        return make_dataset(data_dir, split, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(data, "make_dataset", spy)
        result = _train(val_dir, tmp_path_factory.mktemp("val_run") / "model", early_stopping=1)
    return {**result, "read": read}


def _weighted_loss(net, data_dir, split):
    """The loss Keras logs as val_loss for `split`, computed again from the kept weights."""
    from trainer import data

    stats = read_stats(data_dir)
    return net.evaluate(data.make_dataset(data_dir, split, 64, stats=stats), verbose=0, return_dict=True)["loss"]


def test_val_loss_is_the_val_splits_not_evals(val_run, val_dir):
    from trainer import train

    stats = read_stats(val_dir)
    assert stats["splits"]["val"]["crews"] == [3] and stats["splits"]["eval"]["crews"] == [2]
    assert train.watched_split(stats) == "val"
    history = val_run["history"]
    kept = history["epoch"].index(history["best_epoch"])
    assert "eval" not in val_run["read"] and val_run["read"].count("val") == 2  # Keras' validation, calibration
    np.testing.assert_allclose(history["val_loss"][kept], _weighted_loss(val_run["model"], val_dir, "val"),
                               rtol=1e-5)


def test_without_a_val_split_eval_is_watched(prep_dir):
    from trainer import train

    assert train.watched_split(read_stats(prep_dir)) == "eval"
    empty = {"splits": {s: {"num_windows": 0} for s in ("train", "val", "eval")}}
    assert train.watched_split(empty) is None


def test_the_export_carries_the_temperature_fitted_on_val_and_evaluate_reports_eval(val_run, val_dir, tmp_path):
    """The temperature is fitted on val's windows (the same number fit_temperature gives on the
    kept weights' val probabilities, computed again here), the serving model applies it, and
    evaluate scores eval with it, reporting the log loss before it too."""
    from tfrecords_schema import serving
    from trainer import calibration, data, evaluate, metrics

    stats = read_stats(val_dir)
    net = val_run["model"]
    probabilities, labels = [], []
    for window, label, _ in data.make_dataset(val_dir, "val", 64, weighting="none", stats=stats):
        probabilities.append(net(window, training=False).numpy())
        labels.append(label.numpy())
    p, y = np.concatenate(probabilities), np.concatenate(labels)
    expected = calibration.fit_temperature(p, y)
    recorded = val_run["history"]["calibration"]
    assert recorded["split"] == "val" and recorded["num_windows"] == len(y) == stats["splits"]["val"]["num_windows"]
    np.testing.assert_allclose(recorded["temperature"], expected, rtol=1e-6)
    assert recorded["temperature"] != 1.0
    assert recorded["log_loss_after"] <= recorded["log_loss_before"]
    model_dir = os.path.dirname(val_run["serving"])
    assert serving.read_config(model_dir)["temperature"] == pytest.approx(expected, rel=1e-6)
    with open(os.path.join(model_dir, "history.json")) as f:
        assert json.load(f)["calibration"] == recorded

    report = evaluate.evaluate(evaluate.EvalConfig(val_dir, model_dir))
    e_p, e_y = [], []
    for window, label, _ in data.make_dataset(val_dir, "eval", 64, weighting="none", stats=stats):
        e_p.append(net(window, training=False).numpy())
        e_y.append(label.numpy())
    e_p, e_y = np.concatenate(e_p), np.concatenate(e_y)
    assert report["split"] == "eval" and report["num_windows"] == len(e_y)
    np.testing.assert_allclose(report["log_loss_uncalibrated"], metrics.log_loss_terms(e_p, e_y).mean(), rtol=1e-4)
    np.testing.assert_allclose(report["log_loss"],
                               metrics.log_loss_terms(calibration.temper(e_p, expected), e_y).mean(), rtol=1e-4)


def test_without_a_val_split_nothing_is_calibrated(tmp_path, prep_dir):
    from tfrecords_schema import serving

    result = _train(prep_dir, tmp_path / "model")
    assert "calibration" not in result["history"]
    assert serving.read_config(str(tmp_path / "model"))["temperature"] == 1.0


def test_evaluate_refuses_a_val_split_the_folder_does_not_have(tmp_path, prep_dir, exported):
    from trainer import evaluate

    with pytest.raises(evaluate.EvaluateError, match=r"has no val split \(preprocess with --val-crews\)"):
        evaluate.evaluate(evaluate.EvalConfig(prep_dir, exported.model_dir, split="val"))
