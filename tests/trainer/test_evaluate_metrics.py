"""trainer.metrics and trainer.evaluate: the numbers are scikit-learn's on the same predictions
(the calibration error, which scikit-learn lacks, a direct numpy computation's)."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import confusion_matrix, f1_score, log_loss, precision_recall_fscore_support

from tfrecords_schema import serving
from tfrecords_schema import LABEL, LABEL_VOCABULARY, WINDOW
from trainer import evaluate, metrics

K = len(LABEL_VOCABULARY)


def _sklearn(labels, probabilities):
    predicted = probabilities.argmax(axis=1)
    p, r, f, s = precision_recall_fscore_support(labels, predicted, labels=range(K), zero_division=0)
    return {
        "log_loss": log_loss(labels, probabilities, labels=range(K)),
        "accuracy": float((predicted == labels).mean()),
        "macro_f1": f1_score(labels, predicted, average="macro", zero_division=0),
        "confusion_matrix": confusion_matrix(labels, predicted, labels=range(K)).tolist(),
        "per_class": {c: {"precision": p[i], "recall": r[i], "f1": f[i], "support": s[i]}
                      for i, c in enumerate(LABEL_VOCABULARY)},
    }


def assert_matches_sklearn(report, labels, probabilities):
    want = _sklearn(labels, probabilities)
    for key in ("log_loss", "accuracy", "macro_f1"):
        assert report[key] == pytest.approx(want[key], rel=1e-6, abs=1e-9), key
    assert report["confusion_matrix"] == want["confusion_matrix"]
    for c in LABEL_VOCABULARY:
        for key, value in want["per_class"][c].items():
            assert report["per_class"][c][key] == pytest.approx(value, abs=1e-12), (c, key)
    assert report["num_windows"] == len(labels)


def _random_case(rng, n, present=range(K), peaked=3.0):
    labels = rng.choice(list(present), size=n)
    logits = rng.normal(size=(n, K)) * peaked
    logits[np.arange(n), labels] += 1.0
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return labels, (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("case", ["all classes", "class never true", "near-certain predictions"])
def test_streaming_metrics_equal_scikit_learn(case):
    rng = np.random.default_rng(0)
    if case == "all classes":
        labels, probs = _random_case(rng, 1000)
    elif case == "class never true":
        labels, probs = _random_case(rng, 500, present=[0, 1, 3])
    else:  # probabilities of exactly 0 and 1 in float32: the clipping must match
        labels, probs = _random_case(rng, 500, peaked=60.0)
        assert (probs == 0).any() and (probs == 1).any()
    stream = metrics.StreamingMetrics(LABEL_VOCABULARY)
    for a in range(0, len(labels), 77):  # uneven batches
        stream.update(labels[a:a + 77], probs[a:a + 77])
    assert_matches_sklearn(stream.report(), labels, probs)


def _reliability(labels, probabilities, bins=15):
    """Top-label calibration written out bin by bin: (ece, counts, mean confidences, accuracies),
    bin i holding the confidences in (i/bins, (i+1)/bins]."""
    confidence = probabilities.max(axis=1).astype(np.float64)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0, 1, bins + 1)
    ece, counts, confidences, accuracies = 0.0, [], [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (confidence > lo) & (confidence <= hi)
        counts.append(int(inside.sum()))
        confidences.append(confidence[inside].mean() if inside.any() else None)
        accuracies.append(correct[inside].mean() if inside.any() else None)
        if inside.any():
            ece += abs(correct[inside].mean() - confidence[inside].mean()) * inside.mean()
    return ece, counts, confidences, accuracies


def assert_reliability_matches(report, labels, probabilities):
    ece, counts, confidences, accuracies = _reliability(labels, probabilities)
    assert report["ece"] == pytest.approx(ece, rel=1e-6, abs=1e-7)
    reliability = report["reliability"]
    np.testing.assert_allclose(reliability["bins"], np.linspace(0, 1, 16), rtol=0, atol=1e-15)
    assert reliability["count"] == counts
    for got, want in ((reliability["confidence"], confidences), (reliability["accuracy"], accuracies)):
        assert [g is None for g in got] == [w is None for w in want]
        np.testing.assert_allclose([g for g in got if g is not None], [w for w in want if w is not None],
                                   rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", ["spread", "near-certain predictions", "uniform rows"])
def test_expected_calibration_error_in_batches_equals_a_direct_computation(case):
    """ECE and the reliability bins, streamed in uneven batches, equal the bins computed at once;
    a confidence of exactly 1 (float32 softmax) and one on a bin edge included."""
    rng = np.random.default_rng(5)
    if case == "spread":
        labels, probs = _random_case(rng, 2000, peaked=1.5)
    elif case == "near-certain predictions":
        labels, probs = _random_case(rng, 600, peaked=60.0)
        assert (probs.max(axis=1) == 1).any()
    else:  # float64 rows of confidence 0.25, and of confidence exactly the edge 6/15 (in bin 5)
        labels = rng.choice(K, size=300)
        probs = np.full((300, K), 0.25)
        edge = np.linspace(0, 1, 16)[6]
        probs[150:] = [edge, (1 - edge) / 3, (1 - edge) / 3, (1 - edge) / 3]
    stream = metrics.StreamingMetrics(LABEL_VOCABULARY)
    for a in range(0, len(labels), 131):
        stream.update(labels[a:a + 131], probs[a:a + 131])
    report = stream.report()
    assert_reliability_matches(report, labels, probs)
    assert sum(report["reliability"]["count"]) == len(labels)
    assert report["ece"] > 1e-3  # not calibrated: the check has teeth
    if case == "uniform rows":
        assert report["reliability"]["count"][3] == report["reliability"]["count"][5] == 150


def test_macro_f1_skips_classes_neither_true_nor_predicted():
    labels = np.array([0, 0, 1, 1])
    probs = np.eye(K, dtype=np.float32)[[0, 1, 1, 1]]
    report = metrics.StreamingMetrics(LABEL_VOCABULARY)
    report.update(labels, probs)
    assert report.report()["macro_f1"] == pytest.approx(f1_score(labels, probs.argmax(1), average="macro"))


def test_no_windows_is_an_error():
    with pytest.raises(ValueError):
        metrics.StreamingMetrics(LABEL_VOCABULARY).report()


def test_evaluate_writes_scikit_learn_numbers(tmp_path, exported, prep_dir, records, capsys):
    """`crewstream evaluate` on the exported model: eval.json equals scikit-learn on the
    predictions of the same SavedModel, computed here from the records read directly."""
    model_dir = tmp_path / "model"
    shutil.copytree(exported.model_dir, model_dir)
    earlier = {"split": "eval", "num_windows": 1, "log_loss": 9.0, "accuracy": 0, "macro_f1": 0, "confusion_matrix": []}
    (model_dir / "eval.json").write_text(json.dumps(earlier))  # an earlier report: replaced
    assert evaluate.main(["--data", prep_dir, "--model-dir", str(model_dir), "--batch-size", "100"]) == 0

    with open(model_dir / "eval.json") as f:
        report = json.load(f)
    rec = records("eval")
    predict = serving.load(str(model_dir)).signatures[serving.SCALED_SIGNATURE]
    probs = predict(**{WINDOW: tf.constant(rec[WINDOW])})[serving.PROBABILITIES].numpy()
    assert report["split"] == "eval" and report["labels"] == list(LABEL_VOCABULARY)
    assert_matches_sklearn(report, rec[LABEL], probs)
    assert_reliability_matches(report, rec[LABEL], probs)
    assert report["temperature"] == 1.0 and report["log_loss_uncalibrated"] == report["log_loss"]
    assert os.path.getsize(model_dir / "plots" / "confusion_matrix_eval.png") > 1000
    assert os.path.getsize(model_dir / "plots" / "reliability_eval.png") > 1000

    printed = capsys.readouterr().out
    assert "macro_f1" in printed and "confusion matrix (rows true, columns predicted)" in printed
    assert f"ece {report['ece']:.4f}" in printed
    assert f"temperature 1.0000  log_loss {report['log_loss']:.4f} before, {report['log_loss']:.4f} after" in printed
    for c in LABEL_VOCABULARY:
        assert f"\n{c} " in printed


def test_evaluate_a_calibrated_model(tmp_path, exported, prep_dir, records, capsys):
    """A model exported with a temperature: eval.json's numbers are of the served (tempered)
    probabilities, log_loss_uncalibrated that of the same network exported without one, and
    arg-max numbers do not move."""
    from trainer import export

    temperature = 0.6
    model_dir = tmp_path / "model"
    export.export_serving(exported.model, prep_dir, str(model_dir), params=exported.params, temperature=temperature)
    assert evaluate.main(["--data", prep_dir, "--model-dir", str(model_dir), "--batch-size", "64"]) == 0
    report = json.loads((model_dir / "eval.json").read_text())

    rec = records("eval")
    plain = serving.load(exported.model_dir).signatures[serving.SCALED_SIGNATURE]
    before = plain(**{WINDOW: tf.constant(rec[WINDOW])})[serving.PROBABILITIES].numpy()
    served = serving.load(str(model_dir)).signatures[serving.SCALED_SIGNATURE]
    after = served(**{WINDOW: tf.constant(rec[WINDOW])})[serving.PROBABILITIES].numpy()
    assert report["temperature"] == temperature
    assert report["log_loss_uncalibrated"] == pytest.approx(log_loss(rec[LABEL], before, labels=range(K)), abs=1e-4)
    assert_matches_sklearn(report, rec[LABEL], after)
    assert_reliability_matches(report, rec[LABEL], after)
    # T moves them, so the checks above have teeth: the served probabilities differ from the plain
    # ones, and the two log losses differ by 10x the tolerance they are compared at (how much T
    # moves the loss depends on the weights: 0.003 in one CI run, > 0.01 in others)
    assert np.abs(after - before).max() > 0.05
    assert abs(report["log_loss"] - report["log_loss_uncalibrated"]) > 1e-3
    assert report["confusion_matrix"] == confusion_matrix(rec[LABEL], before.argmax(axis=1), labels=range(K)).tolist()
    assert os.path.getsize(model_dir / "plots" / "reliability_eval.png") > 1000
    printed = capsys.readouterr().out
    assert (f"temperature 0.6000  log_loss {report['log_loss_uncalibrated']:.4f} before, "
            f"{report['log_loss']:.4f} after") in printed


def test_evaluate_train_split_goes_to_its_own_file(tmp_path, exported, prep_dir):
    shutil.copytree(exported.model_dir, tmp_path / "model")
    report = evaluate.evaluate(evaluate.EvalConfig(prep_dir, str(tmp_path / "model"), split="train"))
    assert sorted(os.listdir(tmp_path / "model")) == ["eval_train.json", "plots", "serving"]
    assert sorted(os.listdir(tmp_path / "model" / "plots")) == ["confusion_matrix_train.png", "reliability_train.png"]
    assert report["num_windows"] == sum(sum(row) for row in report["confusion_matrix"])


def test_evaluate_without_a_model_fails_cleanly(tmp_path, prep_dir, capsys):
    assert evaluate.main(["--data", prep_dir, "--model-dir", str(tmp_path)]) == 1
    assert "train a model first" in capsys.readouterr().err


@pytest.mark.parametrize("content", ["my notes\n", '{"log_loss": 0.5}\n'])
def test_an_eval_json_crewstream_did_not_write_is_refused(tmp_path, exported, prep_dir, capsys, content):
    """tfrecords_schema.ownership: one line, before any work; the file and the folder as they were."""
    model_dir = tmp_path / "model"
    shutil.copytree(exported.model_dir, model_dir)
    (model_dir / "eval.json").write_text(content)
    capsys.readouterr()
    assert evaluate.main(["--data", prep_dir, "--model-dir", str(model_dir)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"crewstream evaluate: error: {model_dir / 'eval.json'} exists and was not written by crewstream (not a "
        "JSON object with accuracy, confusion_matrix, log_loss, macro_f1, num_windows, split); move it or "
        "choose another output file"]
    assert (model_dir / "eval.json").read_text() == content
    assert sorted(os.listdir(model_dir)) == ["eval.json", "serving"]


def test_a_model_fits_a_sequence_folder_up_to_its_window_and_a_windows_folder_at_it(sequence_dir, prep_dir):
    from tfrecords_schema import read_stats

    sequence, windows = read_stats(sequence_dir), read_stats(prep_dir)
    serving = {"features": list(windows["features"]), "window": windows["window"]}
    shorter = dict(serving, window=windows["window"] - 8)
    assert evaluate.check_matches(shorter, sequence, "m", "d")["window"] == windows["window"] - 8
    assert evaluate.check_matches(serving, windows, "m", "d") == windows
    with pytest.raises(evaluate.EvaluateError, match=(
            f"^--model-dir m takes windows of {windows['window'] + 1} rows of r,ecg,gsr; --data d holds "
            f"sequences for windows of up to {windows['window']} rows of r,ecg,gsr: ")):
        evaluate.check_matches(dict(serving, window=windows["window"] + 1), sequence, "m", "d")
    with pytest.raises(evaluate.EvaluateError, match=f"holds windows of {windows['window']} rows of r,ecg,gsr"):
        evaluate.check_matches(shorter, windows, "m", "d")
    with pytest.raises(evaluate.EvaluateError, match="takes windows of 64 rows of gsr,ecg,r; "):
        evaluate.check_matches(dict(serving, features=["gsr", "ecg", "r"]), windows, "m", "d")
