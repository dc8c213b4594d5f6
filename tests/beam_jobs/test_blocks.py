import pickle

import numpy as np
import pytest

from beam_jobs import blocks
from beam_jobs.csv_reader import Rows


def block(time, line, source=None):
    n = len(time)
    return blocks.RecordingRows(np.array(time, float), np.arange(n * 2, dtype=np.float32).reshape(n, 2),
                        np.zeros(n, np.int8), np.array(line),
                        np.zeros(n, np.int32) if source is None else np.array(source))


def test_sorted_by_time_breaks_ties_by_file_then_line():
    b = block([2.0, 1.0, 1.0, 1.0], [5, 9, 7, 3], source=[0, 1, 0, 0]).sorted_by_time()
    assert b.line.tolist() == [3, 7, 9, 5]


def test_drop_duplicate_times_names_the_twin():
    b = block([0.0, 1.0, 1.0, 1.0, 2.0, 2.0], [2, 3, 4, 5, 6, 7])
    kept, dropped, twins = blocks.drop_duplicate_times(b)
    assert kept.line.tolist() == [2, 3, 6] and dropped.line.tolist() == [4, 5, 7]
    assert twins.tolist() == [3, 3, 6]
    kept, dropped, twins = blocks.drop_duplicate_times(block([], []))
    assert len(kept) == len(dropped) == len(twins) == 0


def test_split_by_recording_and_round_trip(tmp_path):
    rows = Rows(crew=np.array([1, 1, 2]), seat=np.array([0, 1, 0]), experiment=np.array(["CA", "CA", "DA"], object),
                time=np.array([0.5, 0.25, 3.0]), signals=np.float32([[1, 2], [3, 4], [5, 6]]),
                label=np.array([0, 1, 3]), line=np.array([10, 11, 12]), source=np.array([2, 2, 2]))
    parts = dict(blocks.split_by_recording(rows))
    assert sorted(parts) == [(1, 0, "CA"), (1, 1, "CA"), (2, 0, "DA")]
    assert parts[(2, 0, "DA")].label.tolist() == [3] and parts[(2, 0, "DA")].label.dtype == np.int8
    path = blocks.spill_path(str(tmp_path), (1, 1, "CA"), parts[(1, 1, "CA")])
    assert path.endswith("crew1-seat1-CA/f2-l11.spill")
    blocks.write_spill(path, parts[(1, 1, "CA")])
    back = blocks.read_spill(path)
    np.testing.assert_array_equal(back.signals, [[3, 4]])
    assert back.time.tolist() == [0.25]


def test_a_block_file_is_a_numpy_array_of_row_records(tmp_path):
    """Read back with numpy's own reader, pickles refused: the file holds data only."""
    b = block([0.5, 0.25, 3.0], [10, 11, 12], source=[2, 2, 1])
    path = str(tmp_path / "one.block")
    blocks.write_spill(path, b)
    records = np.load(path, allow_pickle=False)
    assert records.dtype == blocks.row_dtype(2)
    assert records["line"].tolist() == [10, 11, 12] and records["source"].tolist() == [2, 2, 1]
    np.testing.assert_array_equal(records["signals"], b.signals)
    back = blocks.read_spill(path)
    for name in ("time", "signals", "label", "line", "source"):
        np.testing.assert_array_equal(getattr(back, name), getattr(b, name))


class _Planted:
    """Unpickling this runs `open(marker, "w")`: what a planted pickle could do on a worker."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_pickle_where_a_block_is_expected_is_refused_not_executed(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "crew1-seat0-CA" / "f0-l1.block"
    path.parent.mkdir()
    path.write_bytes(pickle.dumps(_Planted(str(marker)), protocol=5))
    with pytest.raises(blocks.SpillFileError, match=r"f0-l1.block: not a spill file"):
        blocks.read_spill(str(path))
    assert not marker.exists()
    # A pickled RecordingRows, what block files held before, is refused the same way.
    path.write_bytes(pickle.dumps(block([1.0], [3]), protocol=5))
    with pytest.raises(blocks.SpillFileError):
        blocks.read_spill(str(path))


def test_an_npy_of_other_records_is_not_a_block(tmp_path):
    path = tmp_path / "x.block"
    np.save(path.with_suffix(""), np.arange(4.0))  # np.save appends .npy
    (tmp_path / "x.npy").rename(path)
    with pytest.raises(blocks.SpillFileError, match="not a spill file"):
        blocks.read_spill(str(path))


def test_histograms_merge_and_plan_blocks_at_bin_edges():
    parts = [blocks.time_histogram(np.array([0.1, 0.2, 3.5, 1.0])), blocks.time_histogram(np.array([1.9, 5.0, -0.5]))]
    bins, counts = blocks.merge_histograms(parts)
    assert bins.tolist() == [-1, 0, 1, 3, 5] and counts.tolist() == [1, 2, 2, 1, 1]
    first_bins = blocks.plan_blocks(bins, counts, block_rows=3)
    assert first_bins.tolist() == [1, 5]  # blocks of 3, 3 and 1 rows
    assert blocks.block_of(np.array([-0.5, 0.99, 1.0, 4.99, 5.0, 9.0]), first_bins).tolist() == [0, 0, 1, 1, 2, 2]
    assert blocks.plan_blocks(bins, counts, block_rows=100).tolist() == []
    assert blocks.plan_blocks(*blocks.merge_histograms([]), block_rows=3).tolist() == []


def test_plan_blocks_refuses_a_bin_larger_than_a_block():
    with pytest.raises(blocks.BlockPlanError, match="raise --block-rows"):
        blocks.plan_blocks(np.array([0, 1]), np.array([2, 5]), block_rows=4)


def test_plan_blocks_never_exceeds_block_rows():
    rng = np.random.default_rng(3)
    for _ in range(50):
        counts = rng.integers(1, 30, size=int(rng.integers(1, 60)))
        bins = np.cumsum(rng.integers(1, 4, size=len(counts)))
        index = blocks.block_of(bins.astype(float), blocks.plan_blocks(bins, counts, block_rows=40))
        per_block = np.bincount(index, weights=counts)
        assert per_block.max() <= 40 and np.all(per_block > 0)
        assert np.all(np.diff(index) >= 0)


def test_a_time_block_reads_its_run_of_a_block_file_alone(tmp_path):
    """Rows spilled in bin order (file order within a bin): each time block's rows are one run of
    the file, found from its histogram and the plan, and read without the rest."""
    rows = Rows(crew=np.ones(6, np.int64), seat=np.zeros(6, np.int64), experiment=np.array(["CA"] * 6, object),
                time=np.array([2.5, 0.5, 1.5, 0.7, 4.0, 2.2]), signals=np.arange(12, dtype=np.float32).reshape(6, 2),
                label=np.zeros(6, np.int64), line=np.arange(2, 8), source=np.zeros(6, np.int64))
    (_, spilled), = blocks.split_by_recording(rows)
    assert spilled.line.tolist() == [3, 5, 4, 2, 7, 6]  # bins 0, 0, 1, 2, 2, 4
    path = str(tmp_path / "f0-l2.block")
    blocks.write_spill(path, spilled)
    bins, counts = blocks.time_histogram(spilled.time)
    first_bins = np.array([1, 2, 3])  # blocks: bin 0 | bin 1 | bin 2 | bins 3-
    found = list(blocks.block_slices(bins, counts, first_bins))
    assert found == [(0, 0, 2), (1, 2, 3), (2, 3, 5), (3, 5, 6)]
    for index, start, stop in found:
        part = blocks.read_spill(path, start, stop)
        assert (blocks.block_of(part.time, first_bins) == index).all()
        assert part.line.tolist() == spilled.line[start:stop].tolist()
        np.testing.assert_array_equal(part.signals, spilled.signals[start:stop])
    assert list(blocks.block_slices(bins, counts, np.array([9]))) == [(0, 0, 6)]  # one block: the whole file
    assert list(blocks.block_slices(np.zeros(0, np.int64), np.zeros(0, np.int64), first_bins)) == []
    assert len(blocks.read_spill(path, 3, 3)) == 0
    with pytest.raises(blocks.SpillFileError, match="records 4-7 asked of a file of 6"):
        blocks.read_spill(path, 4, 7)


def test_a_truncated_block_file_is_refused(tmp_path):
    path = tmp_path / "f0-l2.block"
    blocks.write_spill(str(path), block([0.5, 1.5, 2.5], [2, 3, 4]))
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(blocks.SpillFileError, match="not a spill file"):
        blocks.read_spill(str(path))


def test_sorted_rows_read_whole_or_by_range(tmp_path):
    b = block([0.5, 2.5, 1.5, 0.7], [2, 3, 4, 5])
    rows = b.sorted_by_time()
    path = blocks.sorted_path(str(tmp_path), (1, 0, "CA"), 3)
    blocks.write_rows(path, rows)
    back = blocks.read_rows(path, 2)
    for name in ("time", "signals", "label", "line", "source"):
        np.testing.assert_array_equal(getattr(back, name), getattr(rows, name))
    tail = blocks.read_rows(path, 2, start=2)
    assert tail.line.tolist() == [4, 3] and tail.signals.tolist() == rows.signals[2:].tolist()
    assert blocks.read_rows(path, 2, start=1, stop=3).line.tolist() == [5, 4]
    assert blocks.read_rows(path, 2, start=0, stop=9).line.tolist() == [2, 5, 4, 3]
    assert len(blocks.read_rows(path, 2, start=4)) == 0
    # a recording of two blocks read across their edge
    second = blocks.sorted_path(str(tmp_path), (1, 0, "CA"), 4)
    blocks.write_rows(second, block([3.0, 3.5], [8, 9]))
    recording = [blocks.summarize_sorted((1, 0, "CA"), i, p, blocks.read_rows(p, 2), 1.0)
                 for i, p in enumerate([path, second])]
    assert blocks.recording_rows(recording, 2, 5).line.tolist() == [4, 3, 8]
    assert blocks.recording_rows(recording, 4, 6).line.tolist() == [8, 9]
    summary = blocks.summarize_sorted((1, 0, "CA"), 3, path, rows, max_gap=0.5)
    assert (summary.num_rows, summary.first_time, summary.last_time, summary.gap_starts) == (4, 0.5, 2.5, (2, 3))
