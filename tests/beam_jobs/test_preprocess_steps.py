"""Every PTransform of the preprocess job on a TestPipeline, empty input included."""

import gzip
import hashlib
import os

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.testing.util import assert_that, equal_to

from beam_jobs import preprocess_steps as steps
from tests.helpers import identity_transform, pipeline, rows_of, zscore_transform
from tfrecords_schema import parse_examples

FEATURES = ["r", "ecg", "gsr"]


def _params(tmp_path, window=2, stride=1, shards=2, block_rows=1 << 18):
    return steps.WindowParams(window, stride, 1.0, shards, frozenset([2]), str(tmp_path), ("f.csv",), block_rows)


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


def _write_shards(p, sorted_blocks, params, ready, compression="NONE"):
    return sorted_blocks | steps.WriteShards(params, compression, steps.cut_block_windows, ready)


def _read_shards(folder, window=2):
    records = []
    for shard in sorted(folder.iterdir()):
        records += [r.numpy() for r in tf.data.TFRecordDataset(str(shard))]
    return parse_examples(tf.constant(records), window, 3)


def test_write_shards_writes_scaled_windows_where_they_end_up(tmp_path):
    first, second = rows_of([1, 1, 1]), rows_of([1, 1], t0=3 / 256, first_line=5)
    with pipeline() as p:
        ready = identity_transform(p, str(tmp_path))
        sorted_blocks = p | beam.Create([first, second], reshuffle=False) | steps.SortBlocks(_params(tmp_path))
        shard_meta = _write_shards(p, sorted_blocks.blocks, _params(tmp_path), ready)
        assert_that(shard_meta | beam.Map(lambda m: (m["file"], m["num_windows"])),
                    equal_to([("train/part-00000-of-00002.tfrecord", 2), ("train/part-00001-of-00002.tfrecord", 2),
                              ("eval/part-00000-of-00002.tfrecord", 0), ("eval/part-00001-of-00002.tfrecord", 0)]))
    assert not (tmp_path / "pieces").exists()  # nothing is written twice
    parsed = _read_shards(tmp_path / "train")
    order = np.argsort(parsed["end_time"].numpy())
    np.testing.assert_array_equal(parsed["end_time"].numpy()[order], np.float32([1, 2, 3, 4]) / 256)
    signals = np.concatenate([first.signals, second.signals])  # identity scaling, time order
    expected = np.stack([signals[i:i + 2] for i in range(4)])
    np.testing.assert_allclose(parsed["window"].numpy()[order], expected, rtol=1e-6)


def test_write_shards_across_time_blocks_reads_the_rows_before_the_block(tmp_path):
    rows = rows_of([1] * 6)
    rows.time[:] = [0.1, 0.6, 1.1, 1.6, 2.1, 2.6]  # two rows a second: blocks of 2 rows at block_rows 3
    params = _params(tmp_path, window=3, stride=1, block_rows=3)
    with pipeline() as p:
        ready = identity_transform(p, str(tmp_path))
        sorted_blocks = p | beam.Create([rows], reshuffle=False) | steps.SortBlocks(params)
        assert_that(sorted_blocks.blocks | beam.Map(lambda b: b.index), equal_to([0, 1, 2]), label="blocks")
        shard_meta = _write_shards(p, sorted_blocks.blocks, params, ready)
        assert_that(shard_meta | beam.Map(lambda m: m["num_windows"]) | beam.combiners.ToList()
                    | beam.Map(sum), equal_to([4]), label="windows")
    parsed = _read_shards(tmp_path / "train", window=3)
    order = np.argsort(parsed["end_time"].numpy())
    np.testing.assert_allclose(parsed["window"].numpy()[order], np.stack([rows.signals[i:i + 3] for i in range(4)]))


def _shards_scaled(staging, cut, scale_in_shards, rows, params):
    """Run SortBlocks + WriteShards(cut) on `rows` with a zscore of mean 2, std 2 into `staging`;
    {shard file: bytes}."""
    with pipeline() as p:
        ready = zscore_transform(p, str(staging), 0, 4)
        sorted_blocks = p | beam.Create([rows], reshuffle=False) | steps.SortBlocks(params)
        _ = sorted_blocks.blocks | steps.WriteShards(params, "NONE", cut, ready, scale_in_shards=scale_in_shards)
    return {str(f.relative_to(staging)): f.read_bytes() for f in sorted(staging.glob("*/part-*"))}


@pytest.mark.parametrize("layout", ["windows", "sequence"])
def test_scaling_in_the_shards_gives_the_bytes_of_scaling_each_block_once(tmp_path, layout):
    """scale_in_shards (the sequence layout's): the shards read the sorted blocks and scale what they
    read, writing no scaled block file, and hold the bytes of the blocks scaled once and written
    again; across time blocks (the W-1 rows of context scaled as the shard reads them too)."""
    from beam_jobs.sequences import chunk_cutter

    rows = rows_of([1] * 40)
    rows.time[:] = np.arange(40) / 4  # four rows a second: time blocks of 4 rows at block_rows 6
    cut = chunk_cutter(8) if layout == "sequence" else steps.cut_block_windows
    written = {}
    for scale_in_shards in (False, True):
        staging = tmp_path / str(scale_in_shards)
        params = _params(staging, window=5, stride=2, shards=3, block_rows=6)
        written[scale_in_shards] = _shards_scaled(staging, cut, scale_in_shards, rows, params)
        assert (staging / "scaled").exists() is not scale_in_shards  # where each block is written again
        assert len(list((staging / "sorted").rglob("*.rows"))) == 10
    assert written[True] == written[False] and any(written[True].values())
    if layout == "windows":  # the values: (raw - 2) / 2, each window as cut from the sorted rows
        parsed = _read_shards(tmp_path / "True" / "train", window=5)
        order = np.argsort(parsed["end_time"].numpy())
        expected = np.stack([(rows.signals[i:i + 5] - 2) / 2 for i in range(0, 36, 2)])
        np.testing.assert_allclose(parsed["window"].numpy()[order], expected, rtol=1e-6)


def test_sort_blocks_and_write_shards_empty(tmp_path):
    with pipeline() as p:
        ready = identity_transform(p, str(tmp_path))
        sorted_blocks = p | beam.Create([]) | steps.SortBlocks(_params(tmp_path))
        shard_meta = _write_shards(p, sorted_blocks.blocks, _params(tmp_path), ready)
        assert_that(shard_meta | beam.Map(lambda m: (m["file"], m["num_windows"])),
                    equal_to([("train/part-00000-of-00002.tfrecord", 0), ("train/part-00001-of-00002.tfrecord", 0),
                              ("eval/part-00000-of-00002.tfrecord", 0), ("eval/part-00001-of-00002.tfrecord", 0)]),
                    label="shards")
        assert_that(sorted_blocks.block_counts, equal_to([]), label="block_counts")
    assert (tmp_path / "eval" / "part-00001-of-00002.tfrecord").read_bytes() == b""


def test_write_shards_gzip_digests_and_each_shard_s_own_recording_order(tmp_path):
    """Three recordings in one shard: GZIP shards decompress to the NONE shards' bytes, each digest
    is the sha256 of the file as written, and the shard holds its recordings in shard_order, each
    recording's windows in time order."""
    recordings = []
    for crew, seat in ((1, 0), (1, 1), (3, 0)):
        rows = rows_of([crew] * 4)
        rows.seat[:] = seat
        recordings.append(rows)
    params = {c: _params(tmp_path / c, window=2, stride=1, shards=1) for c in ("NONE", "GZIP")}
    for compression, prm in params.items():
        with pipeline() as p:
            ready = identity_transform(p, prm.staging)
            sorted_blocks = p | beam.Create(recordings, reshuffle=False) | steps.SortBlocks(prm)
            shard_meta = _write_shards(p, sorted_blocks.blocks, prm, ready, compression)
            assert_that(shard_meta | beam.Map(lambda m, root=prm.staging: m["sha256"] == hashlib.sha256(
                open(os.path.join(root, m["file"]), "rb").read()).hexdigest()), equal_to([True, True]))
    plain = (tmp_path / "NONE" / "train" / "part-00000-of-00001.tfrecord").read_bytes()
    packed = (tmp_path / "GZIP" / "train" / "part-00000-of-00001.tfrecord.gz").read_bytes()
    assert gzip.decompress(packed) == plain
    parsed = parse_examples(tf.constant([r.numpy() for r in tf.data.TFRecordDataset(
        str(tmp_path / "NONE" / "train" / "part-00000-of-00001.tfrecord"))]), 2, 3)
    keys = list(zip(parsed["crew"].numpy().ravel().tolist(), parsed["seat"].numpy().ravel().tolist()))
    expected = [k[:2] for k in steps.shard_order([(1, 0, "CA"), (1, 1, "CA"), (3, 0, "CA")], 0)]
    assert [k for i, k in enumerate(keys) if i % 3 == 0] == expected  # 3 windows per recording, recordings in order
    end_times = parsed["end_time"].numpy().reshape(3, 3)
    assert (np.diff(end_times, axis=1) > 0).all()


def test_each_shard_orders_its_recordings_differently():
    groups = [(c, s, e) for c in (1, 2, 3) for s in (0, 1) for e in ("CA", "DA", "SS")]
    orders = {tuple(steps.shard_order(groups, k)) for k in range(4)}
    assert len(orders) == 4


