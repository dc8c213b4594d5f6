"""Every test id once: which row keeps an id that several rows carry (predict).

The prediction contract gives every input id exactly one submission row. Ids are checked across
the whole file (a duplicate may sit in another recording), without holding all ids in one place:
each span's ids are written to one id file in the order of their bucket, one of `BUCKETS` by a
hash of the id (`in_bucket_order`), and each bucket is then resolved on its own from its run of
every span's file (`one_row_per_id`), so a worker holds one bucket of the file's ids (about rows /
BUCKETS x 21 bytes: 6 MB for the 17.9M rows of the real test.csv).

The row that keeps an id is its first usable row (by file, then line), else its first row; every
other row with that id is rejected as a duplicate (`duplicate_rejects`). A rejected row that keeps
its id gets the uniform distribution. Id files hold data only (numpy's .npy, never a pickle).
"""

from typing import List, Optional, Sequence, Tuple

import numpy as np

from beam_jobs import blocks
from beam_jobs.csv_reader import Reject
from tfrecords_schema import csv_columns as cols
from tfrecords_schema import file_io

BUCKETS = 16
# One row's id, where the row is (file index, line) and whether the reader rejected it.
ID_DTYPE = np.dtype([("id", "<i8"), ("source", "<i4"), ("line", "<i8"), ("rejected", "u1")])
_SHIFT = np.uint64(64 - (BUCKETS - 1).bit_length())


def bucket_of(ids: np.ndarray) -> np.ndarray:
    """int64 [n] in [0, BUCKETS): Fibonacci hashing, so consecutive ids (the real file's) spread
    evenly; stable across runs and machines."""
    mixed = np.asarray(ids, np.int64).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    return (mixed >> _SHIFT).astype(np.int64)


def id_records(ids: np.ndarray, source: np.ndarray, line: np.ndarray, rejected: bool) -> np.ndarray:
    records = np.empty(len(ids), ID_DTYPE)
    records["id"], records["source"], records["line"], records["rejected"] = ids, source, line, rejected
    return records


def rejected_records(rejects: Sequence[Reject], files: Sequence[str]) -> np.ndarray:
    """ID_DTYPE records of the rejected rows whose id could be read (`Reject.id`)."""
    index = {path: i for i, path in enumerate(files)}
    kept = [r for r in rejects if r.id is not None]
    return id_records(np.array([r.id for r in kept], np.int64), np.array([index[r.file] for r in kept], np.int32),
                      np.array([r.line for r in kept], np.int64), rejected=True)


def in_bucket_order(records: np.ndarray) -> Tuple[np.ndarray, List[Tuple[int, int, int]]]:
    """(the records by bucket, stable; [(bucket, first record, end record)] for each bucket present)."""
    bucket = bucket_of(records["id"])
    ordered = records[np.argsort(bucket.astype(np.uint8), kind="stable")]  # uint8: numpy's radix sort
    counts = np.bincount(bucket, minlength=BUCKETS)
    ends = np.cumsum(counts)
    return ordered, [(b, int(ends[b] - counts[b]), int(ends[b])) for b in np.flatnonzero(counts).tolist()]


def id_file_path(staging: str, source: int, first_line: int) -> str:
    """Named by where the span's rows came from: a retried bundle rewrites the same file."""
    return file_io.join(staging, "ids", f"f{source}-l{first_line}.npy")


def read_ids(path: str, start: int = 0, stop: Optional[int] = None) -> np.ndarray:
    """The ID_DTYPE records of an id file (blocks.write_npy), or records [start, stop) alone;
    ValueError for anything else (a pickle is never loaded)."""
    try:
        records = blocks.read_npy(path, start, stop)
    except ValueError as e:
        raise ValueError(f"{path}: not an id file ({e})") from None
    if records.dtype != ID_DTYPE:
        raise ValueError(f"{path}: not an id file (records {records.dtype})")
    return records


def one_row_per_id(records: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which row keeps each id: its first usable row, else its first row (by file, then line).

    records: ID_DTYPE [n]. Returns (fallback, duplicates, keeper): `fallback`, the records of
    rejected rows that keep their id (they get the uniform distribution), in no particular order;
    `duplicates`, every record that does not keep its id; `keeper` ID_DTYPE [len(duplicates)], the
    row that keeps it.
    """
    sorted_ids = np.sort(records["id"])
    if not (sorted_ids[1:] == sorted_ids[:-1]).any():  # every id once (the usual file): one sort
        return records[records["rejected"] == 1], records[:0], records[:0]
    ordered = records[np.lexsort((records["line"], records["source"], records["rejected"], records["id"]))]
    first = np.ones(len(ordered), bool)
    first[1:] = ordered["id"][1:] != ordered["id"][:-1]
    keeper = ordered[np.flatnonzero(first)[np.cumsum(first) - 1]]  # per record: its id's keeper
    return ordered[first & (ordered["rejected"] == 1)], ordered[~first], keeper[~first]


def duplicate_rejects(duplicates: np.ndarray, keeper: np.ndarray, files: Sequence[str]) -> List[Reject]:
    """A reject for each usable row that lost its id (rows the reader rejected are listed
    already), naming the file and line that keeps it. The row's text is not kept: the line
    numbers point to both."""
    usable = duplicates["rejected"] == 0
    return [Reject(files[int(d["source"])], int(d["line"]), cols.ID,
                   f"duplicate id: line {int(k['line'])} of {files[int(k['source'])]} has it too and keeps it",
                   "", id=int(d["id"]))
            for d, k in zip(duplicates[usable], keeper[usable])]


def row_keys(source: np.ndarray, line: np.ndarray) -> np.ndarray:
    """int64 [n]: one number per input row (file index, line), to look rows up with np.isin."""
    return (np.asarray(source, np.int64) << 40) | np.asarray(line, np.int64)
