"""Classification metrics accumulated batch by batch, in memory independent of the split's size.

The definitions are scikit-learn's, so the numbers can be checked against it:
- log_loss: mean of -log p(true class) (`log_loss_terms`), p clipped to [eps, 1 - eps] with eps of
  the probabilities' dtype (`sklearn.metrics.log_loss`), or, for `crewstream score`, the
  competition's clip (1e-15) and rows renormalized;
- precision / recall / f1 per class, 0 where undefined (`zero_division=0`);
- macro_f1: mean f1 over the classes that occur as truth or prediction
  (`f1_score(average='macro')`);
- confusion matrix: rows true, columns predicted, classes in label order;
- ece: the top-label expected calibration error (Guo et al., 2017) over ECE_BINS equal-width bins
  of confidence: sum over bins of |bin accuracy - bin mean confidence| * (bin count / n). A row's
  confidence is the probability of its arg-max class, as the log loss scores it (clipped, and
  renormalized under `renormalize`); bin i holds the confidences in (i/M, (i+1)/M] (M = ECE_BINS;
  a confidence is at least 1/K, so none is 0). `reliability` gives the bins themselves: their
  edges, and per bin the count, mean confidence and accuracy (null for an empty bin).
"""

from typing import Dict, Optional, Sequence

import numpy as np

ECE_BINS = 15
_ECE_EDGES = np.linspace(0.0, 1.0, ECE_BINS + 1)


def log_loss_terms(probabilities: np.ndarray, labels: np.ndarray, clip: Optional[float] = None,
                   renormalize: bool = False) -> np.ndarray:
    """-ln p(true class) per row: float64 [n]. The one log-loss definition (evaluate and score).

    probabilities: float [n, K]; labels: int [n] in [0, K). Each probability is clipped to
    [clip, 1 - clip]; clip None means the machine epsilon of the probabilities' dtype (float64's
    for a non-float array), as scikit-learn's log_loss. renormalize: after clipping, divide each
    row by its sum (the competition's rule; clipping first means a row of zeros cannot divide by 0).
    """
    p = _scored(probabilities, clip, renormalize)
    return -np.log(p[np.arange(len(labels)), labels])


def _scored(probabilities: np.ndarray, clip: Optional[float], renormalize: bool) -> np.ndarray:
    """The probabilities the log loss scores, float64 [n, K] (log_loss_terms' rule)."""
    probabilities = np.asarray(probabilities)
    if clip is None:
        clip = np.finfo(probabilities.dtype if probabilities.dtype.kind == "f" else float).eps
    p = np.clip(probabilities.astype(np.float64), clip, 1 - clip)
    if renormalize:
        p /= p.sum(axis=1, keepdims=True)
    return p


class StreamingMetrics:
    """Feed (labels int [B], probabilities float [B, K]) batches; `report()` at the end. Holds
    sums only (a K x K confusion matrix, three numbers per calibration bin), whatever the count.

    clip, renormalize: the log loss's rule, as in `log_loss_terms` (defaults: scikit-learn's).
    """

    def __init__(self, labels: Sequence[str], clip: Optional[float] = None, renormalize: bool = False):
        self.labels = list(labels)
        k = len(self.labels)
        self.confusion = np.zeros((k, k), dtype=np.int64)
        self._clip, self._renormalize = clip, renormalize
        self._log_loss_sum = 0.0
        self.count = 0
        # per confidence bin: rows, sum of their confidences, rows whose arg-max is the true class
        self._bin_count = np.zeros(ECE_BINS, dtype=np.int64)
        self._bin_confidence = np.zeros(ECE_BINS, dtype=np.float64)
        self._bin_correct = np.zeros(ECE_BINS, dtype=np.int64)

    def update(self, labels: np.ndarray, probabilities: np.ndarray) -> None:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        probabilities = np.asarray(probabilities)
        k = len(self.labels)
        if probabilities.shape != (len(labels), k):
            raise ValueError(f"probabilities {probabilities.shape} do not match labels ({len(labels)}, {k})")
        if len(labels) and (labels.min() < 0 or labels.max() >= k):
            raise ValueError(f"labels outside [0, {k}): {sorted(set(labels.tolist()))}")
        scored = _scored(probabilities, self._clip, self._renormalize)
        rows = np.arange(len(labels))
        self._log_loss_sum += float(-np.log(scored[rows, labels]).sum())
        predicted = probabilities.argmax(axis=1)
        np.add.at(self.confusion, (labels, predicted), 1)
        self.count += len(labels)
        confidence = scored[rows, predicted]
        bins = np.clip(np.searchsorted(_ECE_EDGES, confidence, side="left") - 1, 0, ECE_BINS - 1)
        self._bin_count += np.bincount(bins, minlength=ECE_BINS)
        self._bin_confidence += np.bincount(bins, weights=confidence, minlength=ECE_BINS)
        self._bin_correct += np.bincount(bins, weights=predicted == labels, minlength=ECE_BINS).astype(np.int64)

    def report(self) -> Dict[str, object]:
        """{log_loss, accuracy, macro_f1, per_class {label: {precision, recall, f1, support}},
        confusion_matrix (list of rows), labels, num_windows, ece, reliability {bins: the
        ECE_BINS + 1 edges, count, confidence (mean), accuracy: per bin}}."""
        if self.count == 0:
            raise ValueError("no windows were evaluated")
        cm = self.confusion
        tp = np.diag(cm).astype(np.float64)
        support, predicted = cm.sum(axis=1), cm.sum(axis=0)
        precision = _ratio(tp, predicted)
        recall = _ratio(tp, support)
        f1 = _ratio(2 * precision * recall, precision + recall)
        seen = (support + predicted) > 0
        return {
            "num_windows": int(self.count),
            "log_loss": self._log_loss_sum / self.count,
            "accuracy": float(tp.sum() / self.count),
            "macro_f1": float(f1[seen].mean()),
            "per_class": {label: {"precision": float(precision[i]), "recall": float(recall[i]),
                                  "f1": float(f1[i]), "support": int(support[i])}
                          for i, label in enumerate(self.labels)},
            "labels": list(self.labels),
            "confusion_matrix": cm.tolist(),
            "ece": float(np.abs(self._bin_correct - self._bin_confidence).sum() / self.count),
            "reliability": {
                "bins": _ECE_EDGES.tolist(),
                "count": self._bin_count.tolist(),
                "confidence": _means(self._bin_confidence, self._bin_count),
                "accuracy": _means(self._bin_correct, self._bin_count),
            },
        }


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(len(num)), where=den > 0)


def _means(sums: np.ndarray, counts: np.ndarray) -> list:
    """sums / counts per bin as a list, None where a bin is empty."""
    return [float(s / n) if n else None for s, n in zip(sums, counts)]


def format_report(report: Dict[str, object]) -> str:
    """A readable table: per-class precision / recall / f1 / support, totals (with the ECE),
    the log loss before and after calibration when the report has a `temperature`, confusion matrix."""
    labels = report["labels"]
    lines = [f"{'class':<8}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for label in labels:
        c = report["per_class"][label]
        lines.append(f"{label:<8}{c['precision']:>10.4f}{c['recall']:>10.4f}{c['f1']:>10.4f}{c['support']:>10,}")
    lines += ["", f"windows {report['num_windows']:,}  log_loss {report['log_loss']:.4f}  "
                  f"accuracy {report['accuracy']:.4f}  macro_f1 {report['macro_f1']:.4f}  "
                  f"ece {report['ece']:.4f}", ""]
    if "temperature" in report:
        lines += [f"calibration: temperature {report['temperature']:.4f}  log_loss "
                  f"{report['log_loss_uncalibrated']:.4f} before, {report['log_loss']:.4f} after", ""]
    lines += ["confusion matrix (rows true, columns predicted)",
              f"{'':<8}" + "".join(f"{label:>10}" for label in labels)]
    for label, row in zip(labels, report["confusion_matrix"]):
        lines.append(f"{label:<8}" + "".join(f"{n:>10,}" for n in row))
    return "\n".join(lines)
