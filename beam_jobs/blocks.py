"""Blocks: the rows of one recording (crew, seat, experiment) found in one chunk of CSV.

The preprocess job groups rows by recording through files, not through the runner's shuffle:
each chunk's rows of a recording are written as one block file, and only block paths are grouped.
Beam's local runner holds a shuffled PCollection in memory two to three times over (decoded,
re-encoded, copied); block files keep memory bounded by one recording, whatever the data size, and
on a cluster they are ordinary files on the job's filesystem (gs://, hdfs://, local).

A block's name is derived from where its rows came from (file index, first line), so a retried
bundle rewrites the same file with the same bytes.
"""

import dataclasses
import pickle
import posixpath
from typing import Iterator, Tuple

import numpy as np

from beam_jobs.columns import Columns
from beam_jobs.csv_reader import Rows
from tfrecords_schema import layout

RecordingKey = Tuple[int, int, str]


@dataclasses.dataclass
class Block(Columns):
    """Rows of one recording: time float64 [n]; signals float32 [n, F]; label int8 [n];
    line int64 [n] and source int32 [n] say where each row came from."""

    time: np.ndarray
    signals: np.ndarray
    label: np.ndarray
    line: np.ndarray
    source: np.ndarray

    def sorted_by_time(self) -> "Block":
        """Rows in (time, file, line) order: never dependent on the order blocks arrived in."""
        return self.take(np.lexsort((self.line, self.source, self.time)))


def drop_duplicate_times(block: Block) -> Tuple[Block, Block, np.ndarray]:
    """For rows sorted by time: (rows kept, rows whose time repeats the previous row's, and for
    each of those the line of the row it repeats)."""
    dup = np.zeros(len(block), dtype=bool)
    dup[1:] = block.time[1:] == block.time[:-1]
    kept_index = np.maximum.accumulate(np.where(dup, 0, np.arange(len(block))))
    return block.take(~dup), block.take(dup), block.line[kept_index[dup]]


def split_by_recording(rows: Rows) -> Iterator[Tuple[RecordingKey, Block]]:
    """One Block per recording present in `rows`, in key order."""
    frame_keys = np.rec.fromarrays([rows.crew, rows.seat, rows.experiment.astype(str)])
    unique, inverse = np.unique(frame_keys, return_inverse=True)
    inverse = inverse.ravel()
    for i, (crew, seat, experiment) in enumerate(unique):
        mask = inverse == i
        yield (int(crew), int(seat), str(experiment)), Block(
            rows.time[mask], np.ascontiguousarray(rows.signals[mask], dtype=np.float32),
            rows.label[mask].astype(np.int8), rows.line[mask], rows.source[mask].astype(np.int32))


def block_path(staging: str, key: RecordingKey, block: Block) -> str:
    crew, seat, experiment = key
    first = int(np.argmin(block.line))
    name = f"crew{crew}-seat{seat}-{experiment}/f{int(block.source[first])}-l{int(block.line[first])}.block"
    return layout.join(staging, "blocks", name)


def write_block(path: str, block: Block) -> None:
    import tensorflow as tf

    tf.io.gfile.makedirs(posixpath.dirname(path))
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(pickle.dumps(block, protocol=5))


def read_block(path: str) -> Block:
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "rb") as f:
        return pickle.loads(f.read())
