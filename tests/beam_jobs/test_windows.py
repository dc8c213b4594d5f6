"""The job's window arithmetic (beam_jobs.windows, what preprocess_steps.cut_block_windows calls) against Keras' own
`timeseries_dataset_from_array`, segment by segment, and against a plain loop, over tilings of a
group into time blocks."""

from typing import NamedTuple, Tuple

import numpy as np
import pytest
import tf_keras as keras

from beam_jobs import windows


def loop_starts(time, window, stride, max_gap):
    """Reference: split at gaps with a plain loop; windows start at 0, s, 2s... of each segment."""
    out, start = [], 0
    for i in range(1, len(time) + 1):
        if i == len(time) or time[i] - time[i - 1] > max_gap:
            out += list(range(start, i - window + 1, stride))
            start = i
    return np.array(out, dtype=np.int64)


def keras_windows(values, labels, time, window, stride, max_gap):
    """Reference: split at gaps with a plain loop, then let Keras cut each segment."""
    out_values, out_labels, out_end = [], [], []
    start = 0
    for i in range(1, len(time) + 1):
        if i == len(time) or time[i] - time[i - 1] > max_gap:
            seg = slice(start, i)
            if i - start >= window:
                ds = keras.utils.timeseries_dataset_from_array(
                    values[seg], None, sequence_length=window, sequence_stride=stride, batch_size=None)
                cut = np.stack([w.numpy() for w in ds])
                out_values.append(cut)
                last = start + np.arange(len(cut)) * stride + window - 1
                out_labels.append(labels[last])
                out_end.append(time[last])
            start = i
    if not out_values:
        return np.zeros((0, window, values.shape[1])), np.zeros(0), np.zeros(0)
    return np.concatenate(out_values), np.concatenate(out_labels), np.concatenate(out_end)


class Summary(NamedTuple):
    """What the job knows of a time block without reading it (the fields of blocks.SortedBlock)."""

    num_rows: int
    first_time: float
    last_time: float
    gap_starts: Tuple[int, ...]


def summaries(time, edges, max_gap):
    """The blocks [0, e1), [e1, e2), ... [ek, n) of a time-sorted group, summarized."""
    ranges = list(zip([0, *edges], [*edges, len(time)])) if len(time) else []
    return [Summary(b - a, time[a], time[b - 1], tuple(np.flatnonzero(np.diff(time[a:b]) > max_gap) + 1))
            for a, b in ranges]


def job_windows(time, labels, window, stride, max_gap, edges=()):
    """The group's windows as the job cuts them, block by block; checks each block's share."""
    recording = summaries(time, list(edges), max_gap)
    starts, index = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for b, block in enumerate(recording):
        found = windows.block_windows(recording, b, max_gap, window, stride)
        last = found.starts + window - 1
        assert np.all((last >= found.first_row) & (last < found.first_row + block.num_rows))
        assert 0 <= found.context <= window - 1 and np.all(found.starts >= found.first_row - found.context)
        starts.append(found.starts)
        index.append(found.index)
    starts, index = np.concatenate(starts), np.concatenate(index)
    np.testing.assert_array_equal(index, np.arange(len(starts)))
    return windows.windows_at(starts, labels, time, window)


@pytest.mark.parametrize("edges", [(), (45, 90, 91, 250), (7, 100, 160, 289, 299)])
@pytest.mark.parametrize("window, stride", [(8, 1), (8, 3), (16, 16), (5, 7), (20, 32), (1, 1)])
def test_windows_equal_keras_across_gaps(window, stride, edges):
    rng = np.random.default_rng(window * 100 + stride)
    n = 300
    time = np.arange(n) / 256.0
    time[90:] += 2.0      # a gap > max_gap: new segment
    time[200:] += 0.5     # a gap < max_gap: same segment
    time[290:] += 5.0     # a last segment shorter than most windows
    values = rng.normal(size=(n, 3)).astype(np.float32)
    labels = rng.integers(0, 4, n)
    cut = job_windows(time, labels, window, stride, 1.0, edges)
    ref_values, ref_labels, ref_end = keras_windows(values, labels, time, window, stride, 1.0)
    got = cut.take(values, np.arange(len(cut)))
    assert got.shape == ref_values.shape and got.dtype == np.float32
    np.testing.assert_array_equal(got, ref_values)
    np.testing.assert_array_equal(cut.labels, ref_labels)
    np.testing.assert_array_equal(cut.end_times, ref_end)


def test_segment_shorter_than_window_yields_nothing():
    time = np.arange(10) / 256.0
    assert len(job_windows(time, np.zeros(10, int), window=11, stride=1, max_gap=1.0, edges=(4,))) == 0
    assert windows.recording_segments([], 1.0).shape == (0, 2)


def test_starts_follow_contract():
    recording = summaries(np.array([0, 1, 2, 3, 4, 5, 10, 11, 12.0]), (), max_gap=1.0)
    assert windows.recording_segments(recording, max_gap=1.0).tolist() == [[0, 6], [6, 9]]
    assert windows.block_windows(recording, 0, 1.0, 3, 2).starts.tolist() == [0, 2, 6]
    with pytest.raises(ValueError):
        windows.block_windows(recording, 0, 1.0, 0, 1)


def test_take_copies_only_the_selected_windows():
    values = np.arange(40, dtype=np.float32).reshape(20, 2)
    cut = job_windows(np.arange(20.0) / 256, np.arange(20) % 4, window=4, stride=4, max_gap=1.0, edges=(10,))
    part = cut.take(values, np.array([1, 3]))
    np.testing.assert_array_equal(part, np.stack([values[4:8], values[12:16]]))
    assert part.flags["C_CONTIGUOUS"] and part.base is None or part.base.size == part.size


def _random_group(rng, n):
    """Times with steps of 0.01-0.5 s, gaps of exactly max_gap (no break) and of 1.5 s."""
    steps = rng.choice([0.01, 0.5, 1.0, 1.5], size=n, p=[0.85, 0.07, 0.03, 0.05])
    return np.cumsum(steps)


@pytest.mark.parametrize("window, stride", [(8, 3), (1, 1), (5, 7), (16, 1), (3, 3)])
def test_block_by_block_windows_equal_the_loop_on_the_whole_group(window, stride):
    rng = np.random.default_rng(window * 31 + stride)
    for trial in range(40):
        n = int(rng.integers(0, 200))
        time = _random_group(rng, n)
        edges = np.unique(rng.integers(1, max(n, 2), size=int(rng.integers(0, 12))))
        edges = edges[edges < n] if n else edges[:0]
        cut = job_windows(time, np.arange(n) % 4, window, stride, 1.0, edges.tolist())
        np.testing.assert_array_equal(cut.starts, loop_starts(time, window, stride, 1.0))
        np.testing.assert_array_equal(cut.end_times, time[cut.starts + window - 1])


def test_windows_ending_in_a_block_shorter_than_the_window():
    bounds = np.array([[0, 20]])
    starts, index = windows.windows_ending_in(bounds, 10, 2, window=8, stride=3)
    assert starts.tolist() == [3] and index.tolist() == [1]  # rows 3..10 end in rows [10, 12)
    assert [x.tolist() for x in windows.windows_ending_in(bounds, 0, 5, 8, 3)] == [[], []]
