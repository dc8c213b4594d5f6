"""Every PTransform of the preprocess job on a TestPipeline, empty input included."""

import hashlib
import os

import apache_beam as beam
import numpy as np
import tensorflow as tf
from apache_beam.testing.util import assert_that, equal_to

from beam_jobs import preprocess_steps as steps
from tests.helpers import identity_transform, pipeline, rows_of
from tfrecords_schema import parse_examples

FEATURES = ["r", "ecg", "gsr"]


def _params(tmp_path, window=2, stride=1, shards=2, block_rows=1 << 18):
    return steps.WindowParams(window, stride, 1.0, shards, frozenset([2]), str(tmp_path), ("f.csv",), block_rows)


def _read_pieces(folder):
    records = []
    for piece in sorted(folder.iterdir()):
        records += [r.numpy() for r in tf.data.TFRecordDataset(str(piece))]
    return parse_examples(tf.constant(records), 2, 3)


def test_sort_blocks_sorts_counts_groups_rejects_duplicates_and_feeds_the_analyzers(tmp_path):
    first, second = rows_of([1, 1, 1]), rows_of([1, 1], t0=3 / 256, first_line=5)
    dup = rows_of([1], t0=1 / 256, first_line=99)
    with pipeline() as p:
        out = p | beam.Create([first, second, dup], reshuffle=False) | steps.SortBlocks(_params(tmp_path))
        assert_that(out.blocks | beam.Map(lambda b: (b.recording, b.index, b.num_rows, b.gap_starts)),
                    equal_to([((1, 0, "CA"), 0, 5, ())]), label="blocks")
        assert_that(out.block_counts, equal_to([{"split": "train", "crew": 1, "num_rows": 5}]), label="block_counts")
        assert_that(out.rejects | beam.Map(lambda r: (r.line, r.column, r.reason)),
                    equal_to([(99, "time", "duplicate (crew, seat, experiment, time): repeats line 3 of f.csv")]),
                    label="rejects")
        assert_that(out.tally, equal_to([((0, "rows_used"), 5), ((0, "rows_rejected"), 1)]), label="tally")
        assert_that(out[steps.TRAIN_SIGNALS] | beam.Map(lambda batch: batch.num_rows), equal_to([5]), label="train")


def test_a_duplicate_time_names_the_line_and_file_it_repeats():
    from beam_jobs.blocks import RecordingRows

    def block(times, lines, sources):
        k = len(times)
        return RecordingRows(np.array(times, float), np.zeros((k, 1), np.float32), np.zeros(k, np.int8),
                     np.array(lines, np.int64), np.array(sources, np.int32))

    kept = block([0.0, 0.5, 1.0], [7, 8, 9], [1, 0, 1])
    dropped = block([0.5, 1.0, 1.0], [3, 4, 12], [1, 0, 1])
    found = steps.duplicate_time_rejects(kept, dropped, ["a.csv", "b.csv"])
    got = [(r.file, r.line, r.column, r.reason) for r in found]
    why = "duplicate (crew, seat, experiment, time): repeats line "
    assert got == [("b.csv", 3, "time", why + "8 of a.csv"), ("a.csv", 4, "time", why + "9 of b.csv"),
                   ("b.csv", 12, "time", why + "9 of b.csv")]


def test_cut_windows_writes_pieces_of_scaled_windows(tmp_path):
    first, second = rows_of([1, 1, 1]), rows_of([1, 1], t0=3 / 256, first_line=5)
    with pipeline() as p:
        ready = identity_transform(p, str(tmp_path))
        sorted_blocks = p | beam.Create([first, second], reshuffle=False) | steps.SortBlocks(_params(tmp_path))
        pieces = sorted_blocks.blocks | steps.CutWindows(_params(tmp_path), ready)
        assert_that(pieces | beam.Map(lambda m: (m["split"], m["shard"], m["block"], m["num_windows"])),
                    equal_to([("train", 0, 0, 2), ("train", 1, 0, 2)]), label="pieces")
    parsed = _read_pieces(tmp_path / "pieces" / "train")
    order = np.argsort(parsed["end_time"].numpy())
    np.testing.assert_array_equal(parsed["end_time"].numpy()[order], np.float32([1, 2, 3, 4]) / 256)
    signals = np.concatenate([first.signals, second.signals])  # identity scaling, time order
    expected = np.stack([signals[i:i + 2] for i in range(4)])
    np.testing.assert_allclose(parsed["window"].numpy()[order], expected, rtol=1e-6)


def test_cut_windows_across_time_blocks_reads_the_rows_before_the_block(tmp_path):
    rows = rows_of([1] * 6)
    rows.time[:] = [0.1, 0.6, 1.1, 1.6, 2.1, 2.6]  # two rows a second: blocks of 2 rows at block_rows 3
    params = _params(tmp_path, window=3, stride=1, block_rows=3)
    with pipeline() as p:
        ready = identity_transform(p, str(tmp_path))
        sorted_blocks = p | beam.Create([rows], reshuffle=False) | steps.SortBlocks(params)
        pieces = sorted_blocks.blocks | steps.CutWindows(params, ready)
        assert_that(pieces | beam.Map(lambda m: (m["block"], m["num_windows"])) | beam.CombinePerKey(sum),
                    equal_to([(1, 2), (2, 2)]), label="windows per block")
    records = []
    for piece in sorted((tmp_path / "pieces" / "train").iterdir()):
        records += [r.numpy() for r in tf.data.TFRecordDataset(str(piece))]
    parsed = parse_examples(tf.constant(records), 3, 3)
    order = np.argsort(parsed["end_time"].numpy())
    np.testing.assert_allclose(parsed["window"].numpy()[order], np.stack([rows.signals[i:i + 3] for i in range(4)]))


def test_sort_blocks_and_cut_windows_empty(tmp_path):
    with pipeline() as p:
        ready = identity_transform(p, str(tmp_path))
        sorted_blocks = p | beam.Create([]) | steps.SortBlocks(_params(tmp_path))
        pieces = sorted_blocks.blocks | steps.CutWindows(_params(tmp_path), ready)
        assert_that(pieces, equal_to([]), label="pieces")
        assert_that(sorted_blocks.block_counts, equal_to([]), label="block_counts")


def test_write_shards_concatenates_whole_pieces_and_writes_empty_shards(tmp_path):
    from beam_jobs import shards

    pieces = []
    for group, values in (((2, 0, "CA"), [b"c"]), ((1, 1, "SS"), [b"a", b"b"])):
        path = str(tmp_path / f"{group[0]}.tfrecord")
        shards.write_records(path, values)
        pieces.append({"split": "train", "shard": 1, "file": path, "recording": group, "num_windows": len(values),
                       "class_counts": {"A": len(values), "B": 0, "C": 0, "D": 0}})
    staging = str(tmp_path / "staging")
    with pipeline() as p:
        out = p | beam.Create(pieces) | steps.WriteShards(staging, 2, "GZIP")
        assert_that(out | beam.Map(lambda m: (m["file"], m["num_windows"], m["class_counts"]["A"])),
                    equal_to([("train/part-00000-of-00002.tfrecord.gz", 0, 0),
                              ("train/part-00001-of-00002.tfrecord.gz", 3, 3),
                              ("eval/part-00000-of-00002.tfrecord.gz", 0, 0),
                              ("eval/part-00001-of-00002.tfrecord.gz", 0, 0)]))
        # Each shard's digest, taken as it was written, is the sha256 of the file's bytes.
        assert_that(out | beam.Map(lambda m: m["sha256"] == hashlib.sha256(
            open(os.path.join(staging, m["file"]), "rb").read()).hexdigest()), equal_to([True] * 4), label="digests")
    read = [r.numpy() for r in tf.data.TFRecordDataset(
        os.path.join(staging, "train/part-00001-of-00002.tfrecord.gz"), compression_type="GZIP")]
    assert read in ([b"a", b"b", b"c"], [b"c", b"a", b"b"])  # whole pieces, in the shard's own order
    assert list(tf.data.TFRecordDataset(os.path.join(staging, "eval/part-00000-of-00002.tfrecord.gz"),
                                        compression_type="GZIP")) == []


def test_each_shard_orders_its_recordings_differently():
    from beam_jobs import shards

    groups = [(c, s, e) for c in (1, 2, 3) for s in (0, 1) for e in ("CA", "DA", "SS")]
    orders = {tuple(sorted(groups, key=lambda g: (shards.shard_offset(*g, 1 << 30, salt=k), g))) for k in range(4)}
    assert len(orders) == 4


def test_write_shards_empty_input_still_writes_every_shard(tmp_path):
    with pipeline() as p:
        out = p | beam.Create([]) | steps.WriteShards(str(tmp_path), 2, "NONE")
        assert_that(out | beam.Map(lambda m: (m["file"], m["num_windows"])),
                    equal_to([("train/part-00000-of-00002.tfrecord", 0), ("train/part-00001-of-00002.tfrecord", 0),
                              ("eval/part-00000-of-00002.tfrecord", 0), ("eval/part-00001-of-00002.tfrecord", 0)]))
    assert (tmp_path / "eval" / "part-00001-of-00002.tfrecord").read_bytes() == b""


