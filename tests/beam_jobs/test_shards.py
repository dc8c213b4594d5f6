"""beam_jobs.shards: the shard writer's bytes against TensorFlow's own TFRecord writer and reader."""

import gzip
import hashlib

import numpy as np
import pytest
import tensorflow as tf

from beam_jobs import shards

RECORDS = [b"", b"a", b"x" * 1000, bytes(range(256)) * 300]


def test_frame_is_what_tf_io_tfrecordwriter_writes(tmp_path):
    path = str(tmp_path / "tf.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for record in RECORDS:
            writer.write(record)
    assert b"".join(b"".join(shards.frame(r)) for r in RECORDS) == open(path, "rb").read()


@pytest.mark.parametrize("compression", ["NONE", "GZIP"])
def test_write_shard_reads_back_with_tf_data_and_digests_the_file(tmp_path, compression, monkeypatch):
    monkeypatch.setattr(shards, "WRITE_BLOCK", 1000)  # several blocks, handed to the writing thread
    path = tmp_path / "sub" / "part.tfrecord"
    records = RECORDS * 20
    count, digest = shards.write_shard(str(path), iter(records), compression)
    assert count == len(records)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    read = [r.numpy() for r in tf.data.TFRecordDataset(str(path), compression_type="GZIP" if compression == "GZIP"
                                                       else "")]
    assert read == records
    if compression == "GZIP":  # the same records, compressed: the uncompressed file's bytes inside
        plain = tmp_path / "plain.tfrecord"
        shards.write_shard(str(plain), iter(records), "NONE")
        assert gzip.decompress(path.read_bytes()) == plain.read_bytes()


def _block(n, length, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(n, length), dtype=np.uint8)


@pytest.mark.parametrize("length", [0, 1, 300, 23_568])
def test_frame_block_is_frame_of_every_row(length):
    block = _block(5, length, length)
    framed = shards.frame_block(block)
    assert framed.shape == (5, length + 16)
    assert [row.tobytes() for row in framed] == [b"".join(shards.frame(row.tobytes())) for row in block]


@pytest.mark.parametrize("compression", ["NONE", "GZIP"])
def test_blocks_of_records_write_the_bytes_their_records_would(tmp_path, compression, monkeypatch):
    """Blocks (uint8 rows, as encode_window_block gives them) mixed with single records, across
    several write blocks: the same file, digest and count as the same records one by one, and
    TensorFlow reads them back."""
    monkeypatch.setattr(shards, "WRITE_BLOCK", 5000)
    items = [_block(3, 700, 1), b"a", RECORDS[2], _block(0, 0, 2), _block(40, 128, 3), RECORDS[0], _block(1, 9000, 4)]
    one_by_one = [record for item in items for record in
                  ([row.tobytes() for row in item] if isinstance(item, np.ndarray) else [item])]
    blocks, single = tmp_path / "blocks.tfrecord", tmp_path / "single.tfrecord"
    assert shards.write_shard(str(blocks), iter(items), compression) == \
        shards.write_shard(str(single), iter(one_by_one), compression)
    assert blocks.read_bytes() == single.read_bytes()
    read = [r.numpy() for r in tf.data.TFRecordDataset(str(blocks), compression_type="GZIP"
                                                       if compression == "GZIP" else "")]
    assert read == one_by_one and len(read) == 3 + 2 + 40 + 1 + 1


def test_write_shard_of_nothing_is_an_empty_valid_file(tmp_path):
    path = tmp_path / "empty.tfrecord"
    assert shards.write_shard(str(path), iter([]), "NONE") == (0, hashlib.sha256(b"").hexdigest())
    assert path.read_bytes() == b"" and list(tf.data.TFRecordDataset(str(path))) == []


def test_a_failing_write_is_raised_in_the_caller(tmp_path, monkeypatch):
    """The writing thread's error (a full disk) reaches the job, not a log."""
    class Full(OSError):
        pass

    real_open = shards.file_io.open_file

    class FullFile:
        def __init__(self, f):
            self._f = f

        def write(self, data):
            raise Full(28, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

    monkeypatch.setattr(shards.file_io, "open_file", lambda path, mode="rb": FullFile(real_open(path, mode)))
    with pytest.raises(Full):
        shards.write_shard(str(tmp_path / "x.tfrecord"), iter(RECORDS * 50), "NONE")
