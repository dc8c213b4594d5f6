"""trainer.calibration: the fitted temperature is scipy's minimizer of the same objective and
recovers a known temperature; the numpy and TensorFlow maps agree; fit_on_split on a real split."""

import math

import numpy as np
import pytest
import tensorflow as tf
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.metrics import log_loss

from trainer import calibration

K = 4


def _softmax_case(rng, n, scale=3.0):
    """float32 probabilities softmax(z) [n, K] of random logits z."""
    z = rng.normal(size=(n, K)) * scale
    return softmax(z, axis=1).astype(np.float32), z


def _scipy_nll(p, labels, log_t):
    """The objective written independently: mean -log softmax(log p / T)[true], T = exp(log_t)."""
    scaled = log_softmax(np.log(np.maximum(p.astype(np.float64), np.finfo(np.float32).tiny)) / np.exp(log_t), axis=1)
    return -scaled[np.arange(len(labels)), labels].mean()


def _labels(rng, z, temperature):
    """One label per row of logits z [n, K], drawn from softmax(z / temperature)."""
    truth = softmax(z / temperature, axis=1)
    return (rng.random((len(z), 1)) > truth.cumsum(axis=1)).sum(axis=1).clip(0, K - 1)


# (logit scale, temperature of the truth): a model too sure, one not sure enough, one whose float32
# softmax underflows to 0 (where a true class then has p = 0: finite through TINY)
CASES = {"overconfident": (4.0, 2.0), "underconfident": (0.5, 0.4), "float32 zeros": (40.0, 8.0)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fit_temperature_is_scipys_minimizer(case):
    scale, true_temperature = CASES[case]
    rng = np.random.default_rng(1)
    p, z = _softmax_case(rng, 3000, scale)
    labels = _labels(rng, z, true_temperature)
    if case == "float32 zeros":  # and some rows' true class among them
        rows = np.flatnonzero((p == 0).any(axis=1))[:20]
        assert len(rows) == 20
        labels[rows] = (p[rows] == 0).argmax(axis=1)
    bounds = (math.log(calibration.MIN_TEMPERATURE), math.log(calibration.MAX_TEMPERATURE))
    reference = minimize_scalar(lambda t: _scipy_nll(p, labels, t), bounds=bounds, method="bounded",
                                options={"xatol": 1e-10})
    fitted = calibration.fit_temperature(p, labels)
    assert fitted == pytest.approx(math.exp(reference.x), rel=1e-4)
    assert calibration.mean_nll(p, labels, fitted) == pytest.approx(reference.fun, rel=1e-9)
    assert np.isfinite(reference.fun)
    assert calibration.mean_nll(p, labels, fitted) < calibration.mean_nll(p, labels, 1.0)
    assert (fitted > 1.2) if true_temperature > 1 else (fitted < 0.8)


@pytest.mark.parametrize("true_temperature", [0.5, 2.5])
def test_a_known_temperature_is_recovered(true_temperature):
    """The model says softmax(z); the truth is drawn from softmax(z / T): the fit finds T."""
    rng = np.random.default_rng(2)
    p, z = _softmax_case(rng, 20000, scale=2.0)
    labels = _labels(rng, z, true_temperature)
    assert calibration.fit_temperature(p, labels) == pytest.approx(true_temperature, rel=0.05)


def test_temper_is_softmax_of_log_p_over_t_and_keeps_the_argmax():
    rng = np.random.default_rng(3)
    p, _ = _softmax_case(rng, 500)
    for t in (0.3, 1.7, 7.0):
        got = calibration.temper(p, t)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, softmax(np.log(p.astype(np.float64)) / t, axis=1), atol=1e-7, rtol=1e-6)
        np.testing.assert_array_equal(got.argmax(axis=1), p.argmax(axis=1))
        np.testing.assert_allclose(calibration.temper(got, 1.0 / t), p, atol=1e-6)  # the inverse
    assert calibration.temper(p, 1.0) is p  # the identity, exactly


def test_the_tensorflow_map_is_the_numpy_map():
    rng = np.random.default_rng(4)
    p, _ = _softmax_case(rng, 200, scale=30.0)
    p[0] = [0.0, 0.0, 1.0, 0.0]  # float32 softmax underflow: finite through TINY
    for t in (0.4, 2.0):
        tensor = calibration.temper_tensor(tf.constant(p), t).numpy()
        assert tensor.dtype == np.float32 and np.isfinite(tensor).all()
        np.testing.assert_allclose(tensor, calibration.temper(p, t), atol=1e-6)
    constant = tf.constant(p)
    assert calibration.temper_tensor(constant, 1.0) is constant
    sequence = tf.constant(p.reshape(2, 100, K))  # [B, T, K]: per step, on the last axis
    np.testing.assert_allclose(calibration.temper_tensor(sequence, 2.0).numpy().reshape(200, K),
                               calibration.temper(p, 2.0), atol=1e-6)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), True, "2"])
def test_a_temperature_that_is_not_a_positive_number_is_refused(bad):
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        calibration.temper(np.full((1, K), 0.25), bad)


def test_fit_temperature_refuses_what_it_cannot_fit():
    with pytest.raises(ValueError, match="no windows"):
        calibration.fit_temperature(np.zeros((0, K)), np.zeros(0, int))
    with pytest.raises(ValueError, match="do not match"):
        calibration.fit_temperature(np.full((3, K), 0.25), np.zeros(2, int))
    with pytest.raises(ValueError, match="labels outside"):
        calibration.fit_temperature(np.full((2, K), 0.25), np.array([0, K]))


def test_a_model_right_with_full_confidence_gets_the_lowest_temperature():
    p = np.eye(K, dtype=np.float32)[[0, 1, 2, 3, 0]] * 0.97 + 0.01
    assert calibration.fit_temperature(p, np.array([0, 1, 2, 3, 0])) == pytest.approx(calibration.MIN_TEMPERATURE)


def test_fit_on_split_of_the_eval_split(exported_tcn, prep_dir, stats, records):
    """The eval split's windows through the Keras network: the numbers are fit_temperature's and
    scikit-learn's on the network's probabilities of the records read directly."""
    from tfrecords_schema import LABEL, WINDOW

    fit = calibration.fit_on_split(exported_tcn.model, prep_dir, "eval", stats, batch_size=100)
    rec = records("eval")
    p = exported_tcn.model(rec[WINDOW], training=False).numpy()
    assert fit["num_windows"] == len(rec[LABEL]) == stats["splits"]["eval"]["num_windows"]
    # the same windows in another order: the same minimizer up to the search's tolerance
    assert fit["temperature"] == pytest.approx(calibration.fit_temperature(p, rec[LABEL]), rel=1e-5)
    assert fit["log_loss_before"] == pytest.approx(log_loss(rec[LABEL], p, labels=range(K)), rel=1e-5)
    tempered = softmax(np.log(p.astype(np.float64)) / fit["temperature"], axis=1).astype(np.float32)
    assert fit["log_loss_after"] == pytest.approx(log_loss(rec[LABEL], tempered, labels=range(K)), rel=1e-4)
    assert fit["log_loss_after"] <= fit["log_loss_before"] + 1e-9
    assert fit["temperature"] != pytest.approx(1.0, abs=1e-3)  # a model whose calibration moves: the check has teeth
