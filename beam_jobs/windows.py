"""Cutting windows out of one recording: the Windows contract of docs/DESIGN.md, in plain numpy.

A group is one (crew, seat, experiment), its rows sorted numerically by time. A gap in time larger
than `max_gap` seconds starts a new segment; windows never cross a segment. In a segment of n rows
windows start at rows 0, s, 2s, ... while start + W <= n. A window's label is the label of its
last row and its `end_time` the time of its last row.
"""

from typing import Iterator, NamedTuple, Sequence, Tuple

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


def blocked_segment_bounds(num_rows: Sequence[int], first_times: Sequence[float], last_times: Sequence[float],
                           gap_starts: Sequence[Sequence[int]], max_gap: float) -> np.ndarray:
    """`segment_bounds` of a group known only block by block, its rows global (blocks in time
    order, block b holding rows [sum(num_rows[:b]), sum(num_rows[:b+1]))).

    Args:
      num_rows: rows of each block (>= 1).
      first_times, last_times: time of each block's first and last row.
      gap_starts: per block, its local rows whose time exceeds the previous row's by > max_gap.
    Returns int64 [K, 2], equal to segment_bounds(time of the whole group, max_gap).
    """
    sizes = np.asarray(num_rows, dtype=np.int64)
    n = int(sizes.sum())
    if n == 0:
        return np.zeros((0, 2), dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    at_edges = offsets[1:][np.asarray(first_times[1:], float) - np.asarray(last_times[:-1], float) > max_gap]
    inside = [offsets[b] + np.asarray(g, dtype=np.int64) for b, g in enumerate(gap_starts)]
    starts = np.unique(np.concatenate([[0], at_edges, *inside]).astype(np.int64))
    return np.stack([starts, np.append(starts[1:], n)], axis=1).astype(np.int64)


def windows_ending_in(bounds: np.ndarray, first_row: int, num_rows: int, window: int,
                      stride: int) -> Tuple[np.ndarray, np.ndarray]:
    """The windows of a group whose LAST row is in rows [first_row, first_row + num_rows).

    Returns (starts int64 [k], index int64 [k]): each window's first row and its index among the
    group's windows (the order `cut_windows` gives them), both global. Over consecutive row
    ranges that tile the group they tile cut_windows' windows.
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window ({window}) and stride ({stride}) must be >= 1")
    a, e = bounds[:, 0], bounds[:, 1]
    count = np.where(e - a >= window, (e - a - window) // stride + 1, 0)
    before = np.concatenate([[0], np.cumsum(count)[:-1]])
    # window i of a segment ends at a + i*stride + window - 1: keep first_row <= that < first_row + num_rows
    lo = np.clip(-((a + window - 1 - first_row) // stride), 0, count)
    hi = np.clip(-((a + window - 1 - first_row - num_rows) // stride), 0, count)
    i = [np.arange(l, h, dtype=np.int64) for l, h in zip(lo, hi) if h > l]
    seg = [np.full(h - l, k, dtype=np.int64) for k, (l, h) in enumerate(zip(lo, hi)) if h > l]
    if not i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    i, seg = np.concatenate(i), np.concatenate(seg)
    return a[seg] + i * stride, before[seg] + i
