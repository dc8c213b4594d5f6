"""synth -> preprocess -> train -> evaluate through the `crewstream` command line, on a small sample."""

import json
import os

import numpy as np
import tensorflow as tf

from crewstream import cli
from tfrecords_schema import serving
from tfrecords_schema import LABEL_VOCABULARY, WINDOW, read_stats


def test_synth_preprocess_train_evaluate(tmp_path, capsys):
    sample, out, model = tmp_path / "sample", tmp_path / "out", tmp_path / "model"
    assert cli.main(["synth", "--out", str(sample), "--crews", "1,2,3", "--seconds", "12"]) == 0
    assert cli.main(["preprocess", "--input", str(sample / "train.csv"), "--output", str(out),
                     "--features", "r,ecg,gsr", "--window", "64", "--stride", "16",
                     "--eval-crews", "2", "--num-shards", "2"]) == 0
    assert cli.main(["train", "--data", str(out), "--model-dir", str(model), "--epochs", "3",
                     "--batch-size", "64", "--units", "16", "--learning-rate", "0.01",
                     "--progress", "log"]) == 0
    assert cli.main(["evaluate", "--data", str(out), "--model-dir", str(model)]) == 0
    printed = capsys.readouterr().out
    assert "Epoch 3/3" in printed and "macro_f1" in printed

    stats = read_stats(str(out))
    assert {"serving", "checkpoints", "history.json", "logs", "plots", "eval.json",
            "train_config.json"} <= set(os.listdir(model))
    assert {"loss.png", "accuracy.png", "confusion_matrix_eval.png"} <= set(os.listdir(model / "plots"))
    history = json.loads((model / "history.json").read_text())
    assert history["epoch"] == [1, 2, 3]
    assert history["loss"][-1] < history["loss"][0]

    report = json.loads((model / "eval.json").read_text())
    assert report["num_windows"] == stats["splits"]["eval"]["num_windows"]
    assert [report["per_class"][c]["support"] for c in LABEL_VOCABULARY] == [
        stats["splits"]["eval"]["class_counts"][c] for c in LABEL_VOCABULARY]
    assert np.asarray(report["confusion_matrix"]).sum(axis=1).tolist() == [
        stats["splits"]["eval"]["class_counts"][c] for c in LABEL_VOCABULARY]
    assert 0.0 <= report["macro_f1"] <= 1.0 and np.isfinite(report["log_loss"])

    serving_default = serving.load(str(model)).signatures[serving.SERVING_SIGNATURE]
    raw = tf.random.normal([5, stats["window"], len(stats["features"])], seed=1)
    probabilities = serving_default(**{WINDOW: raw})[serving.PROBABILITIES].numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
