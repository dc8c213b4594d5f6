"""Cutting windows out of one recording: the Windows contract of DESIGN.md, in plain numpy.

A group is one (crew, seat, experiment), its rows sorted numerically by time. A gap in time larger
than `max_gap` seconds starts a new segment; windows never cross a segment. In a segment of n rows
windows start at rows 0, s, 2s, ... while start + W <= n. A window's label is the label of its
last row and its `end_time` the time of its last row.
"""

from typing import Iterator, NamedTuple, Tuple

import numpy as np


class Windows(NamedTuple):
    """The windows of one time-sorted group, not yet materialized.

    `starts` int64 [N] first row of each window; `labels` int64 [N]; `end_times` float64 [N].
    `take(values, idx)` copies the selected windows out as float32 [k, W, F], so a caller can
    encode a large group in small pieces.
    """

    starts: np.ndarray
    labels: np.ndarray
    end_times: np.ndarray
    window: int

    def take(self, values: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Windows `idx` (indices into `starts`) of `values` [n, F], time-major [k, W, F]."""
        view = np.lib.stride_tricks.sliding_window_view(values, self.window, axis=0)  # [n-W+1, F, W]
        return np.ascontiguousarray(np.swapaxes(view[self.starts[idx]], 1, 2), dtype=np.float32)

    def __len__(self) -> int:
        return len(self.starts)


def sort_by_time(time: np.ndarray) -> np.ndarray:
    """The permutation that orders a group's rows by numeric time (stable, so equal times keep
    their input order)."""
    return np.argsort(time, kind="stable")


def segment_bounds(time: np.ndarray, max_gap: float) -> np.ndarray:
    """[(start, stop)] row ranges of the segments of a time-sorted group, as int64 [K, 2]."""
    n = len(time)
    if n == 0:
        return np.zeros((0, 2), dtype=np.int64)
    breaks = np.flatnonzero(np.diff(time) > max_gap) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [n]])
    return np.stack([starts, stops], axis=1).astype(np.int64)


def window_starts(bounds: np.ndarray, window: int, stride: int) -> np.ndarray:
    """Row indices (into the sorted group) where windows start, segment after segment."""
    if window < 1 or stride < 1:
        raise ValueError(f"window ({window}) and stride ({stride}) must be >= 1")
    starts = [np.arange(a, b - window + 1, stride, dtype=np.int64) for a, b in bounds if b - a >= window]
    return np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)


def cut_windows(time: np.ndarray, labels: np.ndarray, window: int, stride: int, max_gap: float) -> Windows:
    """The windows of one group whose rows are already sorted by time.

    Args:
      time: float64 [n], non-decreasing.
      labels: int [n] label index of each row.
    """
    starts = window_starts(segment_bounds(time, max_gap), window, stride)
    last = starts + window - 1
    return Windows(starts, np.asarray(labels)[last].astype(np.int64), np.asarray(time)[last], window)


def chunks(n: int, size: int) -> Iterator[Tuple[int, int]]:
    """[start, stop) ranges covering range(n) in pieces of at most `size`."""
    for start in range(0, n, size):
        yield start, min(start + size, n)
