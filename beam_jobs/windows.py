"""Cutting windows out of one recording: the Windows contract of docs/DESIGN.md, in plain numpy.
The arithmetic the preprocess job runs (its DoFns only call it) for the windows layout;
prediction's windows (every row's, padded) are `pad_front` and `window_view`.

A recording is one (crew, seat, experiment), its rows sorted numerically by time. A gap in time larger
than `max_gap` seconds starts a new segment; windows never cross a segment. In a segment of n rows
windows start at rows 0, s, 2s, ... while start + W <= n. A window's label is the label of its
last row and its `end_time` the time of its last row.

The sequence layout cuts each segment into chunks instead (tfrecords_schema.sequence.chunks_ending_in:
chunk i of a segment holds its rows [i*C, (i+1)*C), with the W-1 rows before it as context).

The job knows a recording block by block (its time blocks, in time order, each summarized by
num_rows, first_time, last_time and gap_starts: beam_jobs.blocks.SortedBlock): `recording_segments`
finds the segments from the summaries alone, `block_windows` the windows whose last row is in one
block, and `windows_at` labels them from the rows read.
"""

from typing import Any, Iterator, NamedTuple, Sequence, Tuple

import numpy as np


class Windows(NamedTuple):
    """The windows of one time-sorted recording, not yet materialized.

    `starts` int64 [N] first row of each window; `labels` int64 [N]; `end_times` float64 [N].
    `take(values, idx)` copies the selected windows out as float32 [k, W, F], so a caller can
    encode a large recording in small pieces.
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


def windows_at(starts: np.ndarray, labels: np.ndarray, time: np.ndarray, window: int) -> Windows:
    """The windows starting at rows `starts` (int [k], into the time-sorted rows), labelled by the
    rows' `labels` (int [n]) and `time` (float64 [n]) of their last row."""
    starts = np.asarray(starts, dtype=np.int64)
    last = starts + window - 1
    return Windows(starts, np.asarray(labels)[last].astype(np.int64), np.asarray(time)[last], window)


def batch_bounds(n: int, size: int) -> Iterator[Tuple[int, int]]:
    """[start, stop) ranges covering range(n) in pieces of at most `size`."""
    for start in range(0, n, size):
        yield start, min(start + size, n)


def blocked_segment_bounds(num_rows: Sequence[int], first_times: Sequence[float], last_times: Sequence[float],
                           gap_starts: Sequence[Sequence[int]], max_gap: float) -> np.ndarray:
    """The segments of a recording known only block by block, as [(start, stop)] row ranges, its rows
    global (blocks in time order, block b holding rows [sum(num_rows[:b]), sum(num_rows[:b+1]))).

    Args:
      num_rows: rows of each block (>= 1).
      first_times, last_times: time of each block's first and last row.
      gap_starts: per block, its local rows whose time exceeds the previous row's by > max_gap.
    Returns int64 [K, 2]: a new segment starts at row 0 and at every row whose time exceeds the
    previous row's by more than max_gap.
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
    """The windows of a recording whose LAST row is in rows [first_row, first_row + num_rows).

    Returns (starts int64 [k], index int64 [k]): each window's first row and its index among the
    recording's windows (segment after segment, start after start), both global. Over consecutive
    row ranges that tile the recording they tile the recording's windows.
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window ({window}) and stride ({stride}) must be >= 1")
    a, e = bounds[:, 0], bounds[:, 1]
    count = np.where(e - a >= window, (e - a - window) // stride + 1, 0)
    before = np.concatenate([[0], np.cumsum(count)[:-1]])
    # window i of a segment ends at a + i*stride + window - 1: keep first_row <= that < first_row + num_rows
    lo = np.clip(-((a + window - 1 - first_row) // stride), 0, count)
    hi = np.clip(-((a + window - 1 - first_row - num_rows) // stride), 0, count)
    i = [np.arange(low, h, dtype=np.int64) for low, h in zip(lo, hi) if h > low]
    seg = [np.full(h - low, k, dtype=np.int64) for k, (low, h) in enumerate(zip(lo, hi)) if h > low]
    if not i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    i, seg = np.concatenate(i), np.concatenate(seg)
    return a[seg] + i * stride, before[seg] + i


def recording_segments(blocks: Sequence[Any], max_gap: float) -> np.ndarray:
    """`blocked_segment_bounds` of a recording's time blocks, given in time order as summaries with
    num_rows, first_time, last_time and gap_starts (beam_jobs.blocks.SortedBlock): int64 [K, 2]."""
    return blocked_segment_bounds([b.num_rows for b in blocks], [b.first_time for b in blocks],
                                  [b.last_time for b in blocks], [b.gap_starts for b in blocks], max_gap)


class BlockWindows(NamedTuple):
    """The windows of a recording whose LAST row is in one of its time blocks, rows global.

    `first_row`: the block's first row in the recording; `starts` int64 [k]: each window's first
    row; `index` int64 [k]: each window's index among the recording's windows.
    """

    first_row: int
    starts: np.ndarray
    index: np.ndarray

    @property
    def context(self) -> int:
        """Rows before the block that its windows need (at most W - 1)."""
        return max(0, self.first_row - int(self.starts.min())) if len(self.starts) else 0


def block_windows(recording: Sequence[Any], block: int, max_gap: float, window: int, stride: int) -> BlockWindows:
    """The windows whose last row is in `recording[block]` (summaries as in `recording_segments`,
    in time order); over all blocks they are the recording's windows, each once."""
    first_row = int(sum(b.num_rows for b in recording[:block]))
    starts, index = windows_ending_in(recording_segments(recording, max_gap), first_row,
                                      recording[block].num_rows, window, stride)
    return BlockWindows(first_row, starts, index)


# Prediction: every row's window, the row and the W-1 rows before it in its recording.

def window_view(padded: np.ndarray, window: int) -> np.ndarray:
    """float32 [n, W, F] read-only view: element i is padded[i : i + W]. Nothing is copied."""
    views = np.lib.stride_tricks.sliding_window_view(padded, window, axis=0)  # [n, F, W]
    return views.transpose(0, 2, 1)


def pad_front(rows: np.ndarray, before: np.ndarray, window: int) -> np.ndarray:
    """float32 [W - 1 + n, F]: the W-1 rows before `rows` (the last of `before`, the recording's
    rows preceding them, at most W-1), the first available row repeated in front when there are
    fewer. `before` is empty for a recording's first block."""
    need = window - 1
    before = before[len(before) - need:] if len(before) > need else before
    first = before[:1] if len(before) else rows[:1]
    return np.concatenate([np.repeat(first, need - len(before), axis=0), before, rows]).astype(np.float32, copy=False)
