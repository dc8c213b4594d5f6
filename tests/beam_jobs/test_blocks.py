import numpy as np

from beam_jobs import blocks
from beam_jobs.csv_reader import Rows


def block(time, line, source=None):
    n = len(time)
    return blocks.Block(np.array(time, float), np.arange(n * 2, dtype=np.float32).reshape(n, 2),
                        np.zeros(n, np.int8), np.array(line), np.zeros(n, np.int32) if source is None else np.array(source))


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
    path = blocks.block_path(str(tmp_path), (1, 1, "CA"), parts[(1, 1, "CA")])
    assert path.endswith("crew1-seat1-CA/f2-l11.block")
    blocks.write_block(path, parts[(1, 1, "CA")])
    back = blocks.read_block(path)
    np.testing.assert_array_equal(back.signals, [[3, 4]])
    assert back.time.tolist() == [0.25]
