"""trainer.weights: the "Per-sample weights" contract of docs/DESIGN.md."""

import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight

from tfrecords_schema import LABEL_VOCABULARY
from trainer import weights

COUNTS = [{"A": 1136, "B": 53, "C": 629, "D": 90}, {"A": 5, "B": 5, "C": 5, "D": 5},
          {"A": 1, "B": 1000, "C": 7, "D": 70000}]


def _labels(counts):
    return np.repeat(np.arange(len(LABEL_VOCABULARY)), [counts.get(c, 0) for c in LABEL_VOCABULARY])


@pytest.mark.parametrize("counts", COUNTS + [{"A": 30, "B": 0, "C": 10, "D": 2}])
def test_balanced_equals_scikit_learn(counts):
    y = _labels(counts)
    present = np.unique(y)
    expected = dict(zip(present, compute_class_weight("balanced", classes=present, y=y)))
    with pytest.warns(weights.EmptyClassWarning) if 0 in counts.values() else _no_warning():
        got = weights.class_weights(counts, "balanced")
    assert list(got) == list(LABEL_VOCABULARY)
    for i, label in enumerate(LABEL_VOCABULARY):
        assert got[label] == pytest.approx(expected.get(i, 0.0), rel=1e-12)


@pytest.mark.parametrize("counts", COUNTS)
@pytest.mark.parametrize("beta", [0.0, 0.9, 0.99, 0.999, 0.9999999])
def test_effective_weights_average_one_over_training_windows(counts, beta):
    got = weights.class_weights(counts, f"effective:{beta}")
    n = np.array([counts[c] for c in LABEL_VOCABULARY], dtype=float)
    w = np.array([got[c] for c in LABEL_VOCABULARY])
    assert np.dot(n, w) / n.sum() == pytest.approx(1.0, rel=1e-12)
    raw = (1 - beta) / (1 - beta ** n) if beta else np.ones_like(n)
    np.testing.assert_allclose(w / w[0], raw / raw[0], rtol=1e-9)  # the formula, up to the norm
    assert np.all(np.diff(w[np.argsort(n)]) <= 1e-12)  # rarer classes weigh at least as much


def test_effective_near_one_approaches_balanced():
    counts = COUNTS[0]
    eff = weights.class_weights(counts, "effective:0.99999999")
    bal = weights.class_weights(counts, "balanced")
    ratio = np.array([eff[c] / bal[c] for c in LABEL_VOCABULARY])
    np.testing.assert_allclose(ratio / ratio[0], 1.0, rtol=1e-3)


def test_none_is_one_for_every_class():
    assert weights.class_weights(COUNTS[0], "none") == {c: 1.0 for c in LABEL_VOCABULARY}


@pytest.mark.parametrize("method", ["balanced", "effective:0.99"])
def test_class_without_windows_gets_zero_and_a_warning(method):
    counts = {"A": 30, "B": 0, "C": 10}  # D absent from the mapping: also no windows
    with pytest.warns(weights.EmptyClassWarning, match="B, D"):
        got = weights.class_weights(counts, method)
    assert got["B"] == 0.0 and got["D"] == 0.0
    assert got["A"] > 0 and got["C"] > got["A"]
    if method.startswith("effective"):
        assert (30 * got["A"] + 10 * got["C"]) / 40 == pytest.approx(1.0)


def test_weight_vector_is_float32_in_label_order():
    vector = weights.weight_vector(COUNTS[0], "balanced")
    assert vector.dtype == np.float32 and vector.shape == (len(LABEL_VOCABULARY),)
    by_label = weights.class_weights(COUNTS[0], "balanced")
    np.testing.assert_allclose(vector, [by_label[c] for c in LABEL_VOCABULARY], rtol=1e-7)


@pytest.mark.parametrize("method", ["", "Balanced", "effective", "effective:", "effective:1",
                                    "effective:-0.1", "effective:x", "none:1", "focal"])
def test_bad_methods_are_rejected(method):
    with pytest.raises(ValueError):
        weights.parse_method(method)


@pytest.mark.parametrize("counts", [{}, {"A": 0, "B": 0}, {"A": -1, "B": 3}, {"E": 3}])
def test_bad_counts_are_rejected(counts):
    with pytest.raises(ValueError):
        weights.class_weights(counts, "balanced")


class _no_warning:
    """A context manager failing if an EmptyClassWarning is raised inside it."""

    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("error", weights.EmptyClassWarning)

    def __exit__(self, *exc):
        return self._catch.__exit__(*exc)
