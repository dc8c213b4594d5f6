import copy

import numpy as np
import pytest

from tfrecords_schema import sequence
from tfrecords_schema.record import LABEL_VOCABULARY


def random_folder(rng, window, chunk_rows, num_shards=3):
    """Random segments with random labels (long runs), cut into chunks dealt to shards at random;
    returns (stats, segments) with segments [(shard of each row's chunk [n], labels [n])]."""
    shards = [{"file": f"train/part-{k:05d}-of-{num_shards:05d}.tfrecord", "num_chunks": 0, "chunks": []}
              for k in range(num_shards)]
    segments = []
    for _ in range(rng.integers(1, 6)):
        n = int(rng.integers(1, 5 * chunk_rows))
        labels = np.repeat(rng.integers(0, 4, size=n), rng.integers(1, 40, size=n))[:n]
        shard_of_row = np.zeros(n, dtype=np.int64)
        for position, stop in sequence.chunk_bounds(n, chunk_rows):
            k = int(rng.integers(num_shards))
            shards[k]["chunks"].append(sequence.chunk_summary(position, labels[position:stop]))
            shard_of_row[position:stop] = k
        segments.append((shard_of_row, labels))
    for shard in shards:
        shard["num_chunks"] = len(shard["chunks"])
    stats = {"layout": "sequence", "window": window, "stride": 8, "chunk_rows": chunk_rows,
             "splits": {"train": {"shards": shards}, "eval": {"shards": []}}}
    return stats, segments


def brute_force(segments, window, stride, num_shards):
    """Every window of every segment, enumerated: starts 0, s, 2s, ... while start + W <= n; its
    label and shard are those of its last row."""
    per_shard = np.zeros((num_shards, 4), dtype=np.int64)
    for shard_of_row, labels in segments:
        for start in range(0, len(labels) - window + 1, stride):
            last = start + window - 1
            per_shard[shard_of_row[last], labels[last]] += 1
    return per_shard


@pytest.mark.parametrize("seed", range(12))
def test_window_counts_equal_a_brute_force_enumeration(seed):
    rng = np.random.default_rng(seed)
    big_window = int(rng.integers(1, 40))
    stats, segments = random_folder(rng, big_window, chunk_rows=int(rng.integers(1, 30)))
    for window in sorted({1, big_window, int(rng.integers(1, big_window + 1))}):
        for stride in (1, 2, 3, 7, int(rng.integers(1, 60))):
            expected = brute_force(segments, window, stride, 3)
            got = sequence.window_counts(stats, "train", window, stride)
            assert [s["num_windows"] for s in got["shards"]] == expected.sum(axis=1).tolist()
            assert got["class_counts"] == dict(zip(LABEL_VOCABULARY, expected.sum(axis=0).tolist()))
            assert got["num_windows"] == int(expected.sum())
            assert [s["file"] for s in got["shards"]] == [s["file"] for s in stats["splits"]["train"]["shards"]]


def test_an_empty_split_has_no_windows():
    stats, _ = random_folder(np.random.default_rng(0), 16, 8)
    assert sequence.window_counts(stats, "eval", 4, 2) == {
        "num_windows": 0, "class_counts": {"A": 0, "B": 0, "C": 0, "D": 0}, "shards": []}


def test_chunk_window_ends_are_the_enumerated_last_rows():
    rng = np.random.default_rng(5)
    for _ in range(200):
        window, stride = int(rng.integers(1, 20)), int(rng.integers(1, 20))
        position, rows = int(rng.integers(0, 100)), int(rng.integers(1, 50))
        ends = [st + window - 1 for st in range(0, position + rows, stride)
                if position <= st + window - 1 < position + rows]
        assert sequence.chunk_window_ends(position, rows, window, stride).tolist() == ends


def test_chunks_and_label_runs():
    assert list(sequence.chunk_bounds(10, 4)) == [(0, 4), (4, 8), (8, 10)]
    assert list(sequence.chunk_bounds(0, 4)) == []
    assert sequence.label_runs([0, 0, 2, 2, 2, 0]) == [[0, 2], [2, 3], [0, 1]]
    assert sequence.chunk_summary(8, [3, 3]) == [8, 2, [[3, 2]]]
    assert [sequence.context_rows(p, 256) for p in (0, 100, 255, 256, 4096)] == [0, 100, 255, 255, 255]


@pytest.mark.parametrize("window, stride", [(0, 1), (17, 1), (4, 0), (4, -1), (True, 1), (4.0, 2)])
def test_sequence_counts_refuse_a_window_or_stride_out_of_range(window, stride):
    stats, _ = random_folder(np.random.default_rng(1), 16, 8)
    with pytest.raises(ValueError, match="window"):
        sequence.window_counts(stats, "train", window, stride)


def test_runs_that_do_not_cover_the_chunk_are_refused():
    stats, _ = random_folder(np.random.default_rng(2), 16, 8)
    bad = copy.deepcopy(stats)
    shard = next(s for s in bad["splits"]["train"]["shards"] if s["chunks"])
    shard["chunks"][0][1] += 1
    with pytest.raises(ValueError, match="label runs cover"):
        sequence.window_counts(bad, "train", 4, 2)


def windows_stats(**extra):
    return {"window": 256, "stride": 32, **extra, "splits": {"train": {
        "num_windows": 5, "class_counts": {"A": 2, "C": 3},
        "shards": [{"file": "train/a", "num_windows": 4, "sha256": "0" * 64}, {"file": "train/b", "num_windows": 1}]}}}


def test_a_windows_folder_answers_its_own_window_and_stride_only():
    stats = windows_stats(layout="windows")
    assert sequence.window_counts(stats, "train", 256, 32) == {
        "num_windows": 5, "class_counts": {"A": 2, "B": 0, "C": 3, "D": 0},
        "shards": [{"file": "train/a", "num_windows": 4}, {"file": "train/b", "num_windows": 1}]}
    for window, stride in [(256, 8), (128, 32)]:
        with pytest.raises(ValueError, match="--layout sequence"):
            sequence.window_counts(stats, "train", window, stride)
    with pytest.raises(ValueError, match="unknown split"):
        sequence.window_counts(stats, "test", 256, 32)
