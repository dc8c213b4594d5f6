"""Post-hoc temperature scaling of a classifier's probabilities (Guo et al., ICML 2017).

The map: p [..., K] -> softmax(log(max(p, TINY)) / T) over the last axis, one scalar T > 0 for
every class and row. TINY is float32's smallest normal number, so that a probability that float32
softmax rounded to 0 gives a finite log. It keeps every row's order of classes, so the arg-max and
with it accuracy, F1, recall and the confusion matrix do not move; only the confidence does (T > 1
softens, T < 1 sharpens). T = 1 is the identity, exactly: `temper` and `temper_tensor` then
return their input unchanged.

- `fit_temperature(probabilities, labels)`: the T in [MIN_TEMPERATURE, MAX_TEMPERATURE] that
  minimizes the mean (unweighted) negative log likelihood of the tempered probabilities; a
  golden-section search over log T (the NLL is convex in 1/T, hence unimodal in log T) to a
  relative precision of about 1e-7 in T.
- `fit_on_split(net, data_dir, split, stats, batch_size)`: the same on a split's windows run
  through a Keras classifier. It holds the split's probabilities in memory, float32 [n, K] and
  int64 labels [n] (n windows: 24 bytes each at K = 4): meant for a small validation split.
- `temper` (numpy, for fitting and evaluate) and `temper_tensor` (TensorFlow, the serving model's
  last stage, trainer.export): the same map; tests check that they agree.

Why this calibration (docs/DESIGN.md, "The model folder of a train run"): one parameter cannot
overfit a small validation split, and the map is the same at every time step, so the tcn's
one-pass `sequence` output still equals its windowed output.
"""

import logging
import math
import numbers
from typing import Any, Dict

import numpy as np
import tensorflow as tf

from trainer import metrics, weights

_LOG = logging.getLogger("crewstream.calibration")

TINY = float(np.finfo(np.float32).tiny)  # 1.18e-38: log(0) would be -inf
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0  # 0.618...
_LOG_T_TOLERANCE = 1e-7


def _log(probabilities: np.ndarray) -> np.ndarray:
    """log(max(p, TINY)), float64."""
    return np.log(np.maximum(np.asarray(probabilities, dtype=np.float64), TINY))


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _log_tempered(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """log softmax(log(max(p, TINY)) / T), float64 [..., K]: the one numpy definition of the map."""
    return _log_softmax(_log(probabilities) / temperature)


def temper(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(max(p, TINY)) / T) per row: [..., K] in the input's float dtype (computed in
    float64); `probabilities` itself when T == 1. softmax(T * log q) = temper(q, 1 / T) undoes it
    (up to float rounding, and for probabilities above TINY)."""
    check_temperature(temperature)
    probabilities = np.asarray(probabilities)
    if temperature == 1.0:
        return probabilities
    dtype = probabilities.dtype if probabilities.dtype.kind == "f" else np.float64
    return np.exp(_log_tempered(probabilities, temperature)).astype(dtype)


def temper_tensor(probabilities: tf.Tensor, temperature: float) -> tf.Tensor:
    """`temper` in TensorFlow, in the probabilities' dtype (float32 in the serving model), on the
    last axis; `probabilities` itself (no op added to the graph) when T == 1."""
    check_temperature(temperature)
    if temperature == 1.0:
        return probabilities
    tiny = tf.constant(TINY, probabilities.dtype)
    return tf.nn.softmax(tf.math.log(tf.maximum(probabilities, tiny)) / temperature, axis=-1)


def check_temperature(temperature: float) -> float:
    """`temperature` as a float; ValueError (one line) unless it is a finite number > 0."""
    if isinstance(temperature, bool) or not (isinstance(temperature, numbers.Real) and math.isfinite(temperature)
                                             and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return float(temperature)


def mean_nll(probabilities: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean of -log temper(p, T)[true class] over the rows (no clipping): what fit_temperature
    minimizes. probabilities float [n, K], labels int [n] in [0, K)."""
    return _nll(_log(probabilities), np.asarray(labels, dtype=np.int64), temperature)


def _nll(log_p: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    return float(-_log_softmax(log_p / temperature)[np.arange(len(labels)), labels].mean())


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T in [MIN_TEMPERATURE, MAX_TEMPERATURE] minimizing `mean_nll`.

    probabilities: float [n, K], rows summing to 1 (a model's softmax); labels: int [n] in [0, K).
    ValueError when there are no rows or the shapes disagree. A T at a bound of the range (a
    model right, or wrong, with full confidence everywhere) is returned with a warning.
    """
    probabilities = np.asarray(probabilities)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if probabilities.ndim != 2 or probabilities.shape[0] != len(labels):
        raise ValueError(f"probabilities {probabilities.shape} do not match labels ({len(labels)}, K)")
    if not len(labels):
        raise ValueError("no windows to fit a temperature on")
    if labels.min() < 0 or labels.max() >= probabilities.shape[1]:
        raise ValueError(f"labels outside [0, {probabilities.shape[1]}): {sorted(set(labels.tolist()))}")
    log_p = _log(probabilities)  # once, not per step of the search
    log_t = _golden_section(lambda t: _nll(log_p, labels, math.exp(t)), math.log(MIN_TEMPERATURE),
                            math.log(MAX_TEMPERATURE))
    temperature = math.exp(log_t)
    if min(log_t - math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE) - log_t) < 1e-4:
        _LOG.warning("the fitted temperature %.4g is at a bound of [%g, %g]", temperature, MIN_TEMPERATURE,
                     MAX_TEMPERATURE)
    return temperature


def _golden_section(f, low: float, high: float) -> float:
    """The minimizer of a unimodal f on [low, high], to _LOG_T_TOLERANCE; a bound when f's
    minimum is there (the ends are compared too)."""
    a, b = low, high
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = f(c), f(d)
    while b - a > _LOG_T_TOLERANCE:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = f(d)
    best = (a + b) / 2.0
    return min((low, high, best), key=f)


def fit_on_split(net: Any, data_dir: str, split: str, stats: Dict[str, Any], batch_size: int) -> Dict[str, Any]:
    """Fit the temperature of the Keras classifier `net` (scaled windows [B, W, F] -> probabilities
    [B, K]) on the windows of `split` of the preprocess output `data_dir`, read as evaluate reads
    them (trainer.data.make_dataset, every window once, unweighted; `stats`: stats.json as the
    model's windows see it, trainer.data.windowed_stats).

    Returns {"temperature": T, "log_loss_before": ..., "log_loss_after": ..., "num_windows": n},
    the log losses by trainer.metrics.log_loss_terms (scikit-learn's clipping) of the model's
    probabilities and of the tempered ones. Holds the split's probabilities and labels in memory
    (module docstring). ValueError when the split has no windows.
    """
    from trainer import data

    probabilities, labels = [], []
    for window, label, _ in data.make_dataset(data_dir, split, batch_size, weighting=weights.NONE, stats=stats):
        probabilities.append(np.asarray(net(window, training=False)))
        labels.append(label.numpy())
    if not probabilities:
        raise ValueError(f"{data_dir}: split {split} has no windows to fit a temperature on")
    p, y = np.concatenate(probabilities), np.concatenate(labels)
    temperature = fit_temperature(p, y)
    before = float(metrics.log_loss_terms(p, y).mean())
    after = float(metrics.log_loss_terms(temper(p, temperature), y).mean())
    _LOG.info("temperature %.4f fitted on %s (%d windows): log loss %.4f before, %.4f after",
              temperature, split, len(y), before, after)
    return {"temperature": temperature, "log_loss_before": before, "log_loss_after": after, "num_windows": len(y)}
