"""The sequence layout (`preprocess --layout sequence`) end to end: the windows a reader cuts from
its chunks with the contract's arithmetic (spelled out here in numpy, not taken from
tfrecords_schema.sequence) are the windows layout's, byte for byte; stats.json counts them; the
shards do not depend on --block-rows; verify checks them.

The input is test_block_rows' (W=8, stride 3): recordings cut into blocks of 100 rows, some
blocks shorter than W-1, gaps inside and at block edges, duplicate times, a recording shorter
than W. Chunks of 5 rows (< W-1: a chunk's context spans earlier chunks and blocks) and of 16.
"""

import collections
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from beam_jobs import preprocess
from tfrecords_schema.sequence import chunks_ending_in
from tests.helpers import BLOCKED_ROWS as BLOCK_ROWS, BLOCKED_STRIDE as STRIDE, BLOCKED_WINDOW as WINDOW
from tests.helpers import block_frame, blocked_job_args as job_args, write_with_duplicates
from tfrecords_schema import parse_chunks, read_stats, sequence, shard_files
from tfrecords_schema.record import parse_examples
from tfrecords_schema.verify import verify

WHOLE = 1 << 30


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """name -> OUT: the same input through both layouts, blocks of 100 rows and whole recordings."""
    root = tmp_path_factory.mktemp("sequences")
    csv = write_with_duplicates(root / "train.csv", block_frame())
    configs = {
        "windows": (WHOLE, ["--layout", "windows"]),
        "windows-5-2": (WHOLE, ["--window", "5", "--stride", "2"]),  # the default layout, no flag
        "seq5-small": (BLOCK_ROWS, ["--layout", "sequence", "--chunk-rows", "5"]),
        "seq5-whole": (WHOLE, ["--layout", "sequence", "--chunk-rows", "5"]),
        "seq16-small": (BLOCK_ROWS, ["--layout", "sequence", "--chunk-rows", "16"]),
    }
    for name, (block_rows, extra) in configs.items():
        preprocess.run(job_args(csv, root / name, block_rows) + extra)  # later flags win
    return {name: str(root / name) for name in configs}


def read_records(out, split):
    stats = read_stats(out)
    return [[r.numpy() for r in tf.data.TFRecordDataset(path)] for path in shard_files(out, stats, split)]


def layout_windows(out, split):
    """Counter of (crew, seat, experiment, label, window bytes) of a windows-layout folder."""
    stats = read_stats(out)
    found = collections.Counter()
    for records in read_records(out, split):
        if records:
            p = parse_examples(tf.constant(records), stats["window"], len(stats["features"]))
            for i in range(len(records)):
                found[(int(p["crew"][i]), int(p["seat"][i]), p["experiment"][i].numpy().decode(),
                       int(p["label"][i]), p["window"][i].numpy().tobytes())] += 1
    return found


def cut_windows(out, split, window, stride):
    """[Counter per shard] of (crew, seat, experiment, label, window bytes) cut from a sequence
    folder's chunk records with the contract's arithmetic: starts st = 0, s, 2s, ... whose last
    row st + W - 1 is in [position, position + c); rows [st - position + k, ... + W); label
    labels[st + W - 1 - position]."""
    num_features = len(read_stats(out)["features"])
    per_shard = []
    for records in read_records(out, split):
        found = collections.Counter()
        if records:
            p = parse_chunks(tf.constant(records), num_features)
            for i in range(len(records)):
                rows, labels = p["rows"][i].numpy(), p["labels"][i].numpy()
                k, position, c = int(p["context"][i]), int(p["position"][i]), len(labels)
                assert rows.shape == (k + c, num_features)
                key = (int(p["crew"][i]), int(p["seat"][i]), p["experiment"][i].numpy().decode())
                for st in range(0, position + c, stride):
                    last = st + window - 1
                    if position <= last < position + c:
                        a = st - position + k
                        assert a >= 0, "a window reaches before the record's context"
                        found[key + (int(labels[last - position]), rows[a:a + window].tobytes())] += 1
        per_shard.append(found)
    return per_shard


@pytest.mark.parametrize("name", ["seq5-small", "seq16-small"])
@pytest.mark.parametrize("split", ["train", "eval"])
def test_windows_cut_from_chunks_are_the_windows_layouts_byte_for_byte(runs, name, split):
    expected = layout_windows(runs["windows"], split)
    assert sum(expected.values()) > 100
    assert sum(cut_windows(runs[name], split, WINDOW, STRIDE), collections.Counter()) == expected


def test_a_smaller_window_and_another_stride_are_the_windows_layouts_too(runs):
    for split in ("train", "eval"):
        expected = layout_windows(runs["windows-5-2"], split)
        assert sum(cut_windows(runs["seq5-small"], split, 5, 2), collections.Counter()) == expected


@pytest.mark.parametrize("window, stride", [(WINDOW, STRIDE), (WINDOW, 1), (5, 2), (1, 7), (3, 50)])
def test_window_counts_equal_the_windows_in_the_shards(runs, window, stride):
    out = runs["seq16-small"]
    stats = read_stats(out)
    for split in ("train", "eval"):
        per_shard = cut_windows(out, split, window, stride)
        counts = sequence.window_counts(stats, split, window, stride)
        assert [s["num_windows"] for s in counts["shards"]] == [sum(c.values()) for c in per_shard]
        total = sum(per_shard, collections.Counter())
        assert counts["class_counts"] == {name: sum(n for key, n in total.items() if key[3] == i)
                                          for i, name in enumerate("ABCD")}
        assert counts["num_windows"] == sum(total.values()) > 0


def test_stats_json_names_the_layout_and_the_windows_of_its_window_and_stride(runs):
    windows, chunks = read_stats(runs["windows"]), read_stats(runs["seq5-small"])
    assert windows["layout"] == "windows" and "chunk_rows" not in windows
    assert (chunks["layout"], chunks["chunk_rows"], chunks["window"], chunks["stride"]) == ("sequence", 5, 8, 3)
    for split in ("train", "eval"):
        a, b = windows["splits"][split], chunks["splits"][split]
        for key in ("crews", "num_rows", "num_windows", "class_counts", "segments", "short_segments"):
            assert a[key] == b[key], key
        assert b["num_chunks"] == sum(s["num_chunks"] for s in b["shards"]) == sum(map(len, read_records(
            runs["seq5-small"], split)))
        assert sorted(b["shards"][0]) == ["chunks", "file", "num_chunks", "sha256"]
    assert chunks["inputs"] == windows["inputs"] and chunks["scaling"] == windows["scaling"]
    num_chunks = chunks["splits"]["train"]["num_chunks"] + chunks["splits"]["eval"]["num_chunks"]
    assert f"sequence layout: {num_chunks:,} chunk(s) of up to 5 rows" in preprocess.summarize(chunks)
    assert "chunk" not in preprocess.summarize(windows)
    # every row stored once: the chunks' rows are the split's rows
    assert sum(c[1] for split in ("train", "eval") for s in chunks["splits"][split]["shards"] for c in s["chunks"]) \
        == chunks["splits"]["train"]["num_rows"] + chunks["splits"]["eval"]["num_rows"]


def test_block_rows_do_not_change_the_bytes(runs):
    small, whole = runs["seq5-small"], runs["seq5-whole"]
    with open(os.path.join(small, "stats.json"), "rb") as a, open(os.path.join(whole, "stats.json"), "rb") as b:
        assert a.read() == b.read()
    names = [s["file"] for split in ("train", "eval") for s in read_stats(whole)["splits"][split]["shards"]]
    assert len(names) == 6
    for name in names:
        with open(os.path.join(small, name), "rb") as a, open(os.path.join(whole, name), "rb") as b:
            assert a.read() == b.read(), name


def test_verify_passes_a_sequence_folder_and_names_a_tampered_shard(runs, tmp_path):
    report = verify(runs["seq5-small"])
    assert report.ok, report.problems
    splits = read_stats(runs["seq5-small"])["splits"]
    assert report.num_records == sum(splits[s]["num_chunks"] for s in ("train", "eval"))
    out = tmp_path / "out"
    shutil.copytree(runs["seq5-small"], out)
    stats = read_stats(str(out))
    shard = stats["splits"]["train"]["shards"][1]["file"]
    records = read_records(str(out), "train")[1]
    with tf.io.TFRecordWriter(str(out / shard)) as writer:  # valid framing, two records swapped
        for record in [records[1], records[0]] + records[2:]:
            writer.write(record)
    problems = verify(str(out)).problems
    assert any(shard in p and "not the shard stats.json lists" in p for p in problems), problems
    assert any(shard in p and "record 0: chunk" in p for p in problems), problems
    data = bytearray((out / shard).read_bytes())
    data[len(data) // 2] ^= 1
    (out / shard).write_bytes(bytes(data))
    assert any(shard in p and "CRC mismatch" in p for p in verify(str(out)).problems)


@pytest.mark.parametrize("flags, message", [
    (["--layout", "sequence", "--chunk-rows", "0"], "--chunk-rows must be >= 1"),
    (["--chunk-rows", "64"], "--chunk-rows applies to --layout sequence only"),
    (["--layout", "rows"], "invalid choice: 'rows'"),
])
def test_bad_layout_flags_are_one_line(capsys, flags, message):
    with pytest.raises(SystemExit):
        preprocess._parse_args(["--input", "x.csv", "--output", "out", *flags])
    assert message in capsys.readouterr().err
    assert preprocess._parse_args(["--input", "x.csv", "--output", "out", "--layout", "sequence"])[0].chunk_rows == 4096


def brute_force_chunks(lengths, chunk_rows, window):
    """Every chunk of segments of `lengths` rows laid end to end: (start, stop, position, context)."""
    found, a = [], 0
    for n in lengths:
        for position in range(0, n, chunk_rows):
            found.append((a + position, a + min(position + chunk_rows, n), position, min(window - 1, position)))
        a += n
    return found


@pytest.mark.parametrize("seed", range(8))
def test_chunks_ending_in_row_ranges_tile_the_recordings_chunks(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 60, size=rng.integers(1, 6))
    stops = np.cumsum(lengths)
    bounds = np.stack([stops - lengths, stops], axis=1)
    chunk_rows, window = int(rng.integers(1, 20)), int(rng.integers(1, 30))
    expected = brute_force_chunks(lengths.tolist(), chunk_rows, window)
    edges = np.unique(np.concatenate([[0, stops[-1]], rng.integers(0, stops[-1], size=5)]))
    got, index = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        found = chunks_ending_in(bounds, int(lo), int(hi - lo), chunk_rows, window)
        assert np.all((found.stops - 1 >= lo) & (found.stops - 1 < hi))
        got += list(zip(found.starts.tolist(), found.stops.tolist(), found.positions.tolist(), found.contexts.tolist()))
        index += found.index.tolist()
    assert got == expected
    assert index == list(range(len(expected)))
