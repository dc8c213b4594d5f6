import copy
import json

import pytest

from tests.helpers import good_stats

from tfrecords_schema import StatsError, read_stats, shard_files, validate_stats, write_stats


def test_valid_stats_pass():
    assert validate_stats(good_stats()) == good_stats()


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s.pop("window"), "missing field 'window'"),
    (lambda s: s.update(window="256"), "window"),
    (lambda s: s.update(scale="robust"), "scale"),
    (lambda s: s.update(label_vocabulary=["A", "B"]), "label_vocabulary"),
    (lambda s: s["scaling"].pop("gsr"), "scaling.gsr"),
    (lambda s: s["splits"]["train"]["class_counts"].update(A=3), "sum 6 != num_windows 5"),
    (lambda s: s["splits"]["train"]["shards"][0].update(num_windows=3), "shard counts sum to 4"),
    (lambda s: s["splits"]["train"]["shards"][0].update(file="eval/part-00000-of-00002.tfrecord"), "not a train"),
    (lambda s: s["splits"].pop("eval"), "splits"),
    (lambda s: s["splits"]["train"]["class_counts"].update(E=0), "unknown labels"),
    (lambda s: s.update(compression="ZLIB"), "compression"),
])
def test_invalid_stats_name_the_field(mutate, message):
    stats = copy.deepcopy(good_stats())
    mutate(stats)
    with pytest.raises(StatsError, match=message):
        validate_stats(stats)


def test_write_then_read(tmp_path):
    write_stats(str(tmp_path), good_stats())
    assert read_stats(str(tmp_path)) == good_stats()
    assert not (tmp_path / "stats.json.tmp").exists()
    assert shard_files(str(tmp_path), good_stats(), "train") == [
        f"{tmp_path}/train/part-00000-of-00002.tfrecord", f"{tmp_path}/train/part-00001-of-00002.tfrecord"]


def test_read_refuses_missing_or_broken(tmp_path):
    with pytest.raises(StatsError, match="not the output of a completed preprocess run"):
        read_stats(str(tmp_path))
    (tmp_path / "stats.json").write_text("{")
    with pytest.raises(StatsError, match="not valid JSON"):
        read_stats(str(tmp_path))
    bad = good_stats()
    bad["splits"]["train"]["num_windows"] = 6
    (tmp_path / "stats.json").write_text(json.dumps(bad))
    with pytest.raises(StatsError):
        read_stats(str(tmp_path))


def test_write_refuses_invalid(tmp_path):
    bad = good_stats()
    bad["rejected_rows"] = -0.5
    with pytest.raises(StatsError):
        write_stats(str(tmp_path), bad)
    assert not (tmp_path / "stats.json").exists()


def stats_with_inputs():
    stats = good_stats()
    stats["rejected_rows"] = 3
    stats["inputs"] = [{"file": "a.csv", "rows_read": 62, "rows_used": 60, "rows_rejected": 2},
                       {"file": "b.csv.gz", "rows_read": 41, "rows_used": 40, "rows_rejected": 1}]
    return stats


def test_inputs_are_optional_and_checked_when_present(tmp_path):
    assert "inputs" not in good_stats()  # a stats.json written before `inputs` existed stays readable
    write_stats(str(tmp_path), stats_with_inputs())
    assert read_stats(str(tmp_path))["inputs"] == stats_with_inputs()["inputs"]


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s["inputs"][0].update(rows_used=59), r"a.csv: rows_read 62 != rows_used 59 \+ rows_rejected 2"),
    (lambda s: s["inputs"][1].pop("rows_read"), r"inputs\[1\]: missing field 'rows_read'"),
    (lambda s: s["inputs"][1].update(rows_rejected=-1, rows_used=42), "non-negative"),
    (lambda s: s.update(rejected_rows=4), "rows_rejected sum to 3, rejected_rows is 4"),
    (lambda s: s["inputs"][0].update(rows_read=63, rows_used=61), "rows_used sum to 101, the splits hold 100"),
    (lambda s: s["inputs"][1].update(file="a.csv"), "listed twice"),
    (lambda s: s.update(inputs={"a.csv": 1}), "expected a list"),
])
def test_invalid_inputs_name_the_problem(mutate, message):
    stats = stats_with_inputs()
    mutate(stats)
    with pytest.raises(StatsError, match=message):
        validate_stats(stats)


def stats_with_digests_and_segments():
    stats = good_stats()
    for i, shard in enumerate(stats["splits"]["train"]["shards"]):
        shard["sha256"] = f"{i:064x}"
    stats["splits"]["train"].update(segments=4, short_segments=1)
    stats["splits"]["eval"].update(segments=0, short_segments=0)
    return stats


def test_digests_and_segments_are_optional_and_checked_when_present(tmp_path):
    write_stats(str(tmp_path), stats_with_digests_and_segments())
    assert read_stats(str(tmp_path)) == stats_with_digests_and_segments()
    every_short = stats_with_digests_and_segments()  # rows but no window: valid, every segment is short
    every_short["splits"]["eval"].update(num_rows=30, segments=2, short_segments=2)
    assert validate_stats(every_short)


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s["splits"]["train"]["shards"][0].update(sha256="ABC"),
     r"shards\[0\].sha256: expected 64 lowercase hex"),
    (lambda s: s["splits"]["train"]["shards"][0].update(sha256="F" * 64), "lowercase hex"),
    (lambda s: s["splits"]["train"]["shards"][1].pop("sha256"), "listed for some shards and not for others"),
    (lambda s: s["splits"]["train"].pop("short_segments"), r"splits.train: missing field 'short_segments'"),
    (lambda s: s["splits"]["train"].update(short_segments=5), r"5 is not within 0..segments \(4\)"),
    (lambda s: s["splits"]["train"].update(short_segments=4), r"4 of 4 segment\(s\) shorter than the window, yet 5"),
    (lambda s: s["splits"]["eval"].update(segments=1, short_segments=1), r"1 segment\(s\) for 0 row\(s\)"),
    (lambda s: s["splits"]["train"].update(segments=1.5), "expected"),
])
def test_invalid_digests_or_segments_name_the_problem(mutate, message):
    stats = stats_with_digests_and_segments()
    mutate(stats)
    with pytest.raises(StatsError, match=message):
        validate_stats(stats)


def good_sequence_stats():
    """Two segments of 10 and 3 rows, chunks of 4, window 3, stride 2: windows end at rows
    2, 4, 6, 8 of the first (labels A, A, C, C) and at row 2 of the second (D)."""
    stats = good_stats()
    stats.update(layout="sequence", window=3, stride=2, chunk_rows=4)
    stats["splits"]["train"].update(num_windows=5, class_counts={"A": 2, "B": 0, "C": 2, "D": 1}, num_chunks=4, shards=[
        {"file": "train/part-00000-of-00002.tfrecord", "num_chunks": 2,
         "chunks": [[0, 4, [[0, 4]]], [8, 2, [[2, 2]]]]},
        {"file": "train/part-00001-of-00002.tfrecord", "num_chunks": 2,
         "chunks": [[4, 4, [[0, 1], [2, 3]]], [0, 3, [[3, 3]]]]}])
    stats["splits"]["eval"]["num_chunks"] = 0
    return stats


def test_valid_sequence_stats_pass_and_an_unnamed_layout_is_windows():
    assert validate_stats(good_sequence_stats()) == good_sequence_stats()
    assert validate_stats({**good_stats(), "layout": "windows"})


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s.update(layout="rows"), "layout"),
    (lambda s: s.pop("chunk_rows"), "missing field 'chunk_rows'"),
    (lambda s: s["splits"]["eval"].pop("num_chunks"), "missing field 'num_chunks'"),
    (lambda s: s["splits"]["train"].update(num_chunks=5), "shard counts sum to 4, num_chunks is 5"),
    (lambda s: s["splits"]["train"]["shards"][0].pop("chunks"), "missing field 'chunks'"),
    (lambda s: s["splits"]["train"]["shards"][0].update(num_chunks=1, chunks=[[0, 4, [[0, 4]]]]) or
     s["splits"]["train"].update(num_chunks=3), "differ from the windows its chunks give"),
    (lambda s: s["splits"]["train"]["shards"][0]["chunks"][1].__setitem__(0, 6), "multiple of chunk_rows"),
    (lambda s: s["splits"]["train"]["shards"][0]["chunks"][1].__setitem__(1, 5), r"in 1\.\.4"),
    (lambda s: s["splits"]["train"]["shards"][1]["chunks"][0].__setitem__(2, [[0, 1], [2, 2]]), "cover its 4 rows"),
    (lambda s: s["splits"]["train"]["shards"][1]["chunks"][1].__setitem__(2, [[4, 3]]), "labels 0..3"),
    (lambda s: s["splits"]["train"]["shards"][1]["chunks"][1].__setitem__(2, [3, 3]), "of integers"),
    (lambda s: s["splits"]["train"]["shards"][1].update(num_chunks=3) or s["splits"]["train"].update(num_chunks=5),
     "3 for 2 listed"),
    (lambda s: s["splits"]["train"]["class_counts"].update(A=1, B=1), "differ from the windows its chunks give"),
])
def test_invalid_sequence_stats_name_the_field(mutate, message):
    stats = copy.deepcopy(good_sequence_stats())
    mutate(stats)
    with pytest.raises(StatsError, match=message):
        validate_stats(stats)


def test_a_sequence_stats_json_lists_one_chunk_a_line_and_reads_back_the_same(tmp_path):
    write_stats(str(tmp_path), good_sequence_stats())
    text = (tmp_path / "stats.json").read_text()
    assert '          [4,4,[[0,1],[2,3]]],\n' in text
    assert read_stats(str(tmp_path)) == good_sequence_stats()
    write_stats(str(tmp_path), good_stats())  # a windows folder's: indented JSON as before
    assert (tmp_path / "stats.json").read_text() == json.dumps(good_stats(), indent=2) + "\n"


def test_a_stats_json_of_an_older_crewstream_is_refused():
    stats = good_stats()
    del stats["layout"]  # written before the sequence layout existed
    with pytest.raises(StatsError, match="layout: missing: written by an older crewstream; run preprocess again"):
        validate_stats(stats)
