"""Per-sample weights from the TRAIN split's class counts (docs/DESIGN.md, "Per-sample weights").

- `none`: 1 for every class.
- `balanced`: N / (K * n_c), with N windows and K classes present; scikit-learn's
  `compute_class_weight('balanced')`.
- `effective:BETA` (0 <= BETA < 1): (1 - BETA) / (1 - BETA^n_c), the inverse "effective number
  of samples" of Cui et al. (CVPR 2019), normalized so the weights average 1 over the training
  windows (sum_c n_c w_c = N), so the loss keeps the scale of an unweighted one.
- A class with no training window gets weight 0 (balanced, effective) and an EmptyClassWarning:
  the model cannot learn it whatever the method.
"""

import math
import warnings
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from tfrecords_schema import LABEL_VOCABULARY

NONE = "none"
BALANCED = "balanced"
EFFECTIVE = "effective"
METHODS = (NONE, BALANCED, f"{EFFECTIVE}:BETA")


class EmptyClassWarning(UserWarning):
    """A class has no training window."""


def parse_method(method: str) -> Tuple[str, Optional[float]]:
    """`none` | `balanced` | `effective:BETA` -> (name, BETA or None); ValueError otherwise."""
    name, sep, arg = str(method).strip().partition(":")
    if name in (NONE, BALANCED) and not sep:
        return name, None
    if name == EFFECTIVE and sep:
        try:
            beta = float(arg)
        except ValueError:
            beta = math.nan
        if 0.0 <= beta < 1.0:
            return name, beta
        raise ValueError(f"weighting {method!r}: BETA must be a number in [0, 1)")
    raise ValueError(f"unknown weighting {method!r}; expected one of {', '.join(METHODS)}")


def _counts(class_counts: Mapping[str, int]) -> np.ndarray:
    """int64 [NUM_CLASSES] in LABEL_VOCABULARY order; a label absent from the mapping counts 0."""
    unknown = set(class_counts) - set(LABEL_VOCABULARY)
    if unknown:
        raise ValueError(f"class_counts has unknown labels {sorted(unknown)}")
    counts = np.array([int(class_counts.get(name, 0)) for name in LABEL_VOCABULARY], dtype=np.int64)
    if (counts < 0).any():
        raise ValueError(f"class counts must be >= 0, got {dict(class_counts)}")
    if counts.sum() == 0:
        raise ValueError("class_counts: the training split has no windows")
    return counts


def _effective(counts: np.ndarray, beta: float) -> np.ndarray:
    present = counts > 0
    raw = np.zeros(len(counts))
    if beta == 0.0:
        raw[present] = 1.0
    else:
        # 1 - beta^n as -expm1(n log beta): exact for beta near 1, where 1 - beta^n cancels.
        raw[present] = (1.0 - beta) / -np.expm1(counts[present] * math.log(beta))
    return raw * counts.sum() / float(np.dot(counts, raw))


def class_weights(class_counts: Mapping[str, int], method: str = BALANCED) -> Dict[str, float]:
    """{label: weight} for every label of LABEL_VOCABULARY.

    Args:
      class_counts: {label: windows} of the TRAIN split (stats.json `splits.train.class_counts`).
      method: `none`, `balanced` or `effective:BETA`.
    """
    name, beta = parse_method(method)
    counts = _counts(class_counts)
    empty = [label for label, n in zip(LABEL_VOCABULARY, counts) if n == 0]
    if empty:
        warnings.warn(f"no training window of class(es) {', '.join(empty)}: weight "
                      f"{'1 (weighting none)' if name == NONE else '0'}; the model cannot learn them",
                      EmptyClassWarning, stacklevel=2)
    if name == NONE:
        weights = np.ones(len(counts))
    elif name == BALANCED:
        present = counts > 0
        weights = np.zeros(len(counts))
        weights[present] = counts.sum() / (present.sum() * counts[present])
    else:
        weights = _effective(counts, beta)
    return {label: float(w) for label, w in zip(LABEL_VOCABULARY, weights)}


def weight_vector(class_counts: Mapping[str, int], method: str = BALANCED) -> np.ndarray:
    """The weights as float32 [NUM_CLASSES], indexed by label index (for a lookup by label)."""
    weights = class_weights(class_counts, method)
    return np.array([weights[label] for label in LABEL_VOCABULARY], dtype=np.float32)
