"""Writing windows to TFRecord shards deterministically, without shuffling window bytes.

Each final shard is written once, where it ends up, by one worker (`write_shard`): its
recordings one after another in the shard's own order (`shard_offset` salted with the shard), a
recording's records in time order, gzip-compressed on the way when asked, its sha256 taken as the
bytes go out. Only small metadata crosses a shuffle, so no runner ever holds the windows of a whole
shard in memory, and the same input and flags give byte-identical shards whatever the number of
workers or the bundle boundaries.
"""

import collections
import concurrent.futures
import hashlib
import struct
import zlib
from typing import Dict, Iterable, List, Tuple, Union

import google_crc32c
import numpy as np

from tfrecords_schema import LABEL_VOCABULARY, file_io
from tfrecords_schema.verify import mask_crc32c, masked_crc32c

WRITE_BLOCK = 16 << 20


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


def _masked_crc(data: bytes) -> bytes:
    """TFRecord's masked crc32c of `data`, little-endian (the format's own definition)."""
    return struct.pack("<I", masked_crc32c(data))


def frame(record: bytes) -> Tuple[bytes, bytes, bytes, bytes]:
    """One TFRecord as its four parts: length (uint64), its masked crc32c, the bytes, their masked
    crc32c: joined, the bytes tf.io.TFRecordWriter writes for it."""
    length = struct.pack("<Q", len(record))
    return length, _masked_crc(length), record, _masked_crc(record)


def frame_block(records: np.ndarray) -> np.ndarray:
    """Records of one length, the rows of uint8 [N, L], framed as TFRecords: uint8 [N, L + 16],
    row i the bytes `frame` gives record i (the length and its crc are the same for every row;
    only the data's crc32c is computed per record, on the row in place)."""
    n, length = records.shape
    framed = np.empty((n, length + 16), dtype=np.uint8)
    header = struct.pack("<Q", length)
    framed[:, :8] = np.frombuffer(header, dtype=np.uint8)
    framed[:, 8:12] = np.frombuffer(_masked_crc(header), dtype=np.uint8)
    framed[:, 12:12 + length] = records
    crc = np.fromiter(map(google_crc32c.value, records), dtype=np.uint64, count=n)
    framed[:, 12 + length:] = mask_crc32c(crc).astype("<u4").view(np.uint8).reshape(n, 4)
    return framed


def write_shard(path: str, records: Iterable[Union[bytes, np.ndarray]], compression: str) -> Tuple[int, str]:
    """Write `records` as one TFRecord file at `path` (any filesystem crewstream writes to),
    gzip-compressed when GZIP; return (records written, sha256 hex of the file's bytes: the
    shard's digest in stats.json, taken as the bytes go out, so the file is never read again).
    An item of `records` is one record (bytes) or a block of records of one length (the rows of a
    uint8 array, as tfrecords_schema.encode_window_block gives them), framed at once.

    The records are framed here in blocks of about WRITE_BLOCK bytes, and each block goes down a
    pipeline of two more threads, each taking the blocks in order: one compresses (GZIP) and
    hashes it, the other writes it (zlib, hashlib and file writes release the GIL). So framing,
    hashing and writing overlap, each on a different block; at most three blocks wait. A local
    shard is written through to the disk as it goes (file_io.open_written: nothing reads it back
    here, and gigabytes of page cache cost more than the disk writes). GZIP uses level 1: these
    signals compress by under a tenth at any level, and level 6 is several times slower.
    """
    digest = hashlib.sha256()
    gz = zlib.compressobj(1, zlib.DEFLATED, 31) if compression == "GZIP" else None
    count, pending, size = 0, [], 0
    with file_io.open_written(path) as out, concurrent.futures.ThreadPoolExecutor(1) as hasher, \
            concurrent.futures.ThreadPoolExecutor(1) as writer:
        as_is = not file_io.is_remote(path)  # a local file takes a buffer; GFile wants bytes

        def hashed(parts: List[Union[bytes, np.ndarray]], last: bool) -> List:
            """A block's bytes as they go to the file (compressed when GZIP), hashed."""
            datas = []
            for part in parts:  # a framed record, or a framed block written from its buffer
                data = memoryview(part).cast("B") if isinstance(part, np.ndarray) else part
                datas.append(gz.compress(data) if gz else data)
            if gz and last:
                datas.append(gz.flush())
            for data in datas:
                digest.update(data)
            return datas

        def written(hashing: concurrent.futures.Future) -> None:
            for data in hashing.result():
                out.write(data if as_is or isinstance(data, bytes) else bytes(data))

        in_flight: collections.deque = collections.deque()

        def emit(parts: List[Union[bytes, np.ndarray]], last: bool = False) -> None:
            in_flight.append(writer.submit(written, hasher.submit(hashed, parts, last)))
            while len(in_flight) > (0 if last else 2):  # at most three blocks held
                in_flight.popleft().result()

        for item in records:
            if isinstance(item, np.ndarray):
                if not len(item):
                    continue
                pending.append(frame_block(item))
                size += pending[-1].nbytes
                count += len(item)
            else:
                pending.append(b"".join(frame(item)))
                size += len(item) + 16
                count += 1
            if size >= WRITE_BLOCK:
                emit(pending)
                pending, size = [], 0
        emit(pending, last=True)
    return count, digest.hexdigest()
