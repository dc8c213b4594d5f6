"""Writing windows to TFRecord shards deterministically, without shuffling window bytes.

Windows are written where they are cut: each (recording, time block, shard) piece goes to its own
temporary TFRecord file. Then each final shard is the concatenation of its pieces, recording after
recording in the shard's own order and a recording's pieces in time-block order (TFRecord framing is
self-delimiting, so concatenated files are a valid file), gzip-compressed on the way when asked.
Only small piece metadata crosses a shuffle, so no runner ever holds the windows of a whole shard
in memory, and the same input and flags give byte-identical shards whatever the number of workers
or the bundle boundaries.
"""

import hashlib
import posixpath
import zlib
from typing import Dict, Iterable, List

import numpy as np

from tfrecords_schema import LABEL_VOCABULARY, file_io

COPY_BLOCK = 16 << 20


def recording_name(crew: int, seat: int, experiment: str) -> str:
    return f"crew{crew}-seat{seat}-{experiment}"


def shard_offset(crew: int, seat: int, experiment: str, num_shards: int, salt: int = 0) -> int:
    """A stable pseudo-random number in [0, num_shards) for a recording: where its round-robin over
    shards starts (and, salted with the shard, its place in that shard). crc32, not hash(),
    which is salted per process."""
    return zlib.crc32(f"{recording_name(crew, seat, experiment)}/{salt}".encode()) % num_shards


def class_counts(labels: np.ndarray) -> Dict[str, int]:
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(LABEL_VOCABULARY))
    return {name: int(counts[i]) for i, name in enumerate(LABEL_VOCABULARY)}


def piece_path(staging: str, split: str, crew: int, seat: int, experiment: str, shard: int, block: int = 0) -> str:
    """The piece of a recording's time block `block` that goes to `shard`."""
    name = f"{recording_name(crew, seat, experiment)}-b{block:05d}-{shard:05d}.tfrecord"
    return file_io.join(staging, "pieces", split, name)


def write_records(path: str, records: Iterable[bytes]) -> int:
    """Write uncompressed TFRecords to `path` (any filesystem TensorFlow knows); return the count."""
    import tensorflow as tf

    tf.io.gfile.makedirs(posixpath.dirname(path))
    n = 0
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)
            n += 1
    return n


def concatenate(pieces: List[str], path: str, compression: str) -> str:
    """Concatenate uncompressed TFRecord files into `path`, gzip-compressing when GZIP; return
    the sha256 (hex) of the bytes written, the shard's digest in stats.json.

    The digest is taken as the bytes go out, so the shard is never read again to get it. Local
    files are read with Python's own I/O, others through TensorFlow's filesystems. GZIP uses
    level 1: these signals compress by under a tenth at any level, and level 6 is several times
    slower.
    """
    digest = hashlib.sha256()
    gz = zlib.compressobj(1, zlib.DEFLATED, 31) if compression == "GZIP" else None
    with file_io.open_file(path, "wb") as out:
        def emit(data: bytes) -> None:
            digest.update(data)
            out.write(data)

        file_io.copy_files(pieces, (lambda block: emit(gz.compress(block))) if gz else emit, COPY_BLOCK)
        if gz:
            emit(gz.flush())
    return digest.hexdigest()
