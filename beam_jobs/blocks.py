"""Time blocks: a recording's rows (crew, seat, experiment) moved through files, never through the
runner's shuffle.

The jobs move rows through files: each span's rows of a recording are written as one spill file,
and only spill paths are shuffled. Beam's local runner holds a shuffled PCollection in memory two
to three times over (decoded, re-encoded, copied); spill files keep memory bounded whatever the
data size, and on a cluster they are ordinary files on the job's filesystem (gs://, hdfs://, local).

A recording is never gathered whole: it is cut into time blocks of at most `block_rows` raw rows
at the edges of time bins (`plan_blocks`, from its rows per bin). A spill file holds its rows in
time-bin order, so a time block's rows are one run of it (`FileRows`, `block_slices`), read alone
(`read_spill(path, start, stop)`). Each time block is sorted on its own and written as a sorted
block file of fixed-size records (`write_rows`), whose tail a following block reads for the W-1
rows of context its first windows need (`read_rows(path, start, stop)`, `recording_rows`). Once the
scaling is known, in the windows layout, each sorted block is written once more with its signals
scaled (`scaled_path`) and the shards are cut from those; in the sequence layout the shards cut
from the sorted blocks and scale what they read.

A spill file's name is derived from where its rows came from (file index, first line), so a
retried bundle rewrites the same file with the same bytes. Spill and sorted block files hold data
only (numpy's .npy format of `row_dtype` records, never a pickle): a file planted where one is
expected (whoever can write into OUT while a job runs) is refused with SpillFileError, never
executed.
"""

import dataclasses
from typing import Iterable, Iterator, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from beam_jobs.columns import Columns
from beam_jobs.csv_reader import IdRows, Rows
from tfrecords_schema import csv_columns as cols
from tfrecords_schema import file_io

RecordingKey = Tuple[int, int, str]
BIN_SECONDS = 1.0  # a time bin: time blocks start at bin edges


@dataclasses.dataclass
class RecordingRows(Columns):
    """Rows of one recording: time float64 [n]; signals float32 [n, F]; label int8 [n] (-1: a
    test file has none); line int64 [n] and source int32 [n] say where each row came from;
    id int64 [n], a test file's `id` column (None for a train file: written as -1)."""

    time: np.ndarray
    signals: np.ndarray
    label: np.ndarray
    line: np.ndarray
    source: np.ndarray
    id: Optional[np.ndarray] = None

    def sorted_by_time(self) -> "RecordingRows":
        """Rows in (time, file, line) order: never dependent on the order blocks arrived in."""
        return self.take(np.lexsort((self.line, self.source, self.time)))


def drop_duplicate_times(block: RecordingRows) -> Tuple[RecordingRows, RecordingRows, np.ndarray]:
    """For rows sorted by time: (rows kept, rows whose time repeats the previous row's, and for
    each of those the line of the row it repeats)."""
    dup = np.zeros(len(block), dtype=bool)
    dup[1:] = block.time[1:] == block.time[:-1]
    kept_index = np.maximum.accumulate(np.where(dup, 0, np.arange(len(block))))
    return block.take(~dup), block.take(dup), block.line[kept_index[dup]]


def split_by_recording(rows: Rows, bin_seconds: float = BIN_SECONDS) -> Iterator[Tuple[RecordingKey, RecordingRows]]:
    """One RecordingRows per recording present in `rows`, in key order, its rows by time bin (`time_bins`;
    file order within a bin): a time block's rows are then one run of the spill file
    (`block_slices`), whatever time order the file has.

    Integer keys and one stable lexsort (experiments by name: sorted(EXPERIMENTS)), then a slice
    per recording: sorting structured keys with strings cost ten times more on a 16 MiB span.
    """
    names = sorted(cols.EXPERIMENTS)
    codes = np.zeros(len(rows), np.int64)
    for i, name in enumerate(names[1:], 1):
        codes[rows.experiment == name] = i
    bins = time_bins(rows.time, bin_seconds)
    order = np.lexsort((bins, codes, rows.seat, rows.crew))
    keys = np.stack([rows.crew[order], rows.seat[order], codes[order]], axis=1)
    starts = np.flatnonzero(np.r_[True, (keys[1:] != keys[:-1]).any(axis=1)]) if len(order) else []
    with_id = isinstance(rows, IdRows)
    for a, b in zip(starts, list(starts[1:]) + [len(order)]):
        idx = order[a:b]
        yield (int(keys[a, 0]), int(keys[a, 1]), names[keys[a, 2]]), RecordingRows(
            rows.time[idx], np.ascontiguousarray(rows.signals[idx], dtype=np.float32),
            rows.label[idx].astype(np.int8), rows.line[idx], rows.source[idx].astype(np.int32),
            rows.id[idx] if with_id else None)


def spill_path(staging: str, key: RecordingKey, block: RecordingRows) -> str:
    crew, seat, experiment = key
    first = int(np.argmin(block.line))
    name = f"crew{crew}-seat{seat}-{experiment}/f{int(block.source[first])}-l{int(block.line[first])}.spill"
    return file_io.join(staging, "spills", name)


class SpillFileError(ValueError):
    """A file where a spill file is expected is not one (refused, never unpickled)."""


class FileRows(NamedTuple):
    """Records [start, stop) of the records file at `path` (`write_npy`): a time block's run
    of a span's spill file, an id bucket's run of a span's id file."""

    path: str
    start: int
    stop: int


def write_npy(path: str, records: np.ndarray) -> None:
    """Write a 1-D array of records as one .npy file (numpy's format: a fixed magic string, then a
    header giving dtype and shape, then the fixed-size records). Data only, never a pickle."""
    with file_io.open_file(path, "wb") as f:
        np.lib.format.write_array(f, records, allow_pickle=False)


_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def read_npy(path: str, start: int = 0, stop: Optional[int] = None) -> np.ndarray:
    """Records [start, stop) (all by default) of a file `write_npy` wrote: only they are read.
    ValueError if the file is anything else (a pickle included: nothing in it is executed), not
    1-D, or has fewer than `stop` records; the caller checks their dtype."""
    with file_io.open_file(path, "rb") as f:
        try:
            read_header = _HEADER_READERS.get(np.lib.format.read_magic(f))
            if read_header is None:
                raise ValueError("an .npy format version write_npy does not write")
            shape, _, dtype = read_header(f)
        except EOFError as e:
            raise ValueError(str(e) or "the file ends in its header") from None
        if len(shape) != 1 or dtype.hasobject:
            raise ValueError(f"records {dtype}, shape {shape}")
        stop = shape[0] if stop is None else stop
        if not 0 <= start <= stop <= shape[0]:
            raise ValueError(f"records {start}-{stop} asked of a file of {shape[0]}")
        f.seek(f.tell() + start * dtype.itemsize)
        data = f.read((stop - start) * dtype.itemsize)
    if len(data) != (stop - start) * dtype.itemsize:
        raise ValueError(f"the file ends before its record {stop}")
    return np.frombuffer(data, dtype=dtype)


def write_spill(path: str, block: RecordingRows) -> None:
    """Write `block` as a spill file: `write_npy` of `row_dtype` records; `read_spill` reads it
    back."""
    write_npy(path, _records(block))


def read_spill(path: str, start: int = 0, stop: Optional[int] = None) -> RecordingRows:
    """The RecordingRows `write_spill` wrote at `path`, or its rows [start, stop) alone (only they are
    read). SpillFileError if the file is anything else (a pickle included: nothing in it is
    executed), its records are not `row_dtype`'s, or it has fewer than `stop` rows."""
    try:
        records = read_npy(path, start, stop)
    except ValueError as e:
        raise SpillFileError(f"{path}: not a spill file ({e})") from None
    signals = (records.dtype.fields or {}).get("signals")
    if signals is None or len(signals[0].shape) != 1 or records.dtype != row_dtype(signals[0].shape[0]):
        raise SpillFileError(f"{path}: not a spill file (records {records.dtype})")
    return _block(records)


# Time blocks: a recording cut at time-bin edges into blocks of at most `block_rows` raw rows.
# Every row of one time falls in one bin (BIN_SECONDS, above), so duplicates of a time always
# meet in one block.
DEFAULT_BLOCK_ROWS = 1 << 18  # --block-rows: 262,144 rows, about 17 min at 256 Hz


class BlockPlanError(ValueError):
    """A recording cannot be cut into blocks of the requested size."""


def time_bins(time: np.ndarray, bin_seconds: float = BIN_SECONDS) -> np.ndarray:
    """int64 [n]: the bin of each time, floor(time / bin_seconds)."""
    return np.floor(np.asarray(time, dtype=np.float64) / bin_seconds).astype(np.int64)


def time_histogram(time: np.ndarray, bin_seconds: float = BIN_SECONDS) -> Tuple[np.ndarray, np.ndarray]:
    """(bins int64 [k] ascending, rows int64 [k]) of one batch of a recording's times."""
    bins, counts = np.unique(time_bins(time, bin_seconds), return_counts=True)
    return bins, counts.astype(np.int64)


def merge_histograms(parts: Iterable[Tuple[np.ndarray, np.ndarray]]) -> Tuple[np.ndarray, np.ndarray]:
    """Histograms of several batches of one recording -> one, bins ascending."""
    parts = list(parts)
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    bins, inverse = np.unique(np.concatenate([b for b, _ in parts]), return_inverse=True)
    counts = np.bincount(inverse.ravel(), weights=np.concatenate([c for _, c in parts]), minlength=len(bins))
    return bins, counts.astype(np.int64)


def plan_blocks(bins: np.ndarray, counts: np.ndarray, block_rows: int, bin_seconds: float = BIN_SECONDS) -> np.ndarray:
    """Cut a recording's time histogram greedily into blocks of at most `block_rows` rows.

    Returns int64 [K-1]: the first bin of blocks 1..K-1 (block 0 starts at the first row);
    `block_of` maps times to block indices with it. BlockPlanError if one bin alone holds more
    than `block_rows` rows.
    """
    if block_rows < 1:
        raise BlockPlanError(f"block_rows must be >= 1, not {block_rows}")
    too_big = np.flatnonzero(counts > block_rows)
    if len(too_big):
        b = int(bins[too_big[0]])
        raise BlockPlanError(
            f"{int(counts[too_big[0]]):,} rows in the {bin_seconds:g} s from time {b * bin_seconds:g}: more than "
            f"--block-rows {block_rows:,} (rows of one such time bin always share a block); raise --block-rows")
    firsts, filled = [], 0
    for b, c in zip(bins.tolist(), counts.tolist()):
        if filled + c > block_rows:
            firsts.append(b)
            filled = 0
        filled += c
    return np.array(firsts, dtype=np.int64)


def block_of_bins(bins: np.ndarray, first_bins: np.ndarray) -> np.ndarray:
    """int64 [n]: the block index of each time bin under a plan from `plan_blocks`."""
    return np.searchsorted(first_bins, bins, side="right").astype(np.int64)


def block_of(time: np.ndarray, first_bins: np.ndarray, bin_seconds: float = BIN_SECONDS) -> np.ndarray:
    """int64 [n]: the block index of each time under a plan from `plan_blocks`."""
    return block_of_bins(time_bins(time, bin_seconds), first_bins)


def block_slices(bins: np.ndarray, counts: np.ndarray, first_bins: np.ndarray) -> Iterator[Tuple[int, int, int]]:
    """(time block, first row, end row) of each time block a spill file has rows in, in block
    order, from the file's histogram (`time_histogram`: its rows are in bin order,
    `split_by_recording`) and its recording's plan (`plan_blocks`)."""
    index = block_of_bins(bins, first_bins)
    ends = np.cumsum(counts)
    firsts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]]) if len(bins) else np.zeros(0, np.int64)
    lasts = np.r_[firsts[1:], len(bins)] - 1
    for first, last in zip(firsts.tolist(), lasts.tolist()):
        yield int(index[first]), int(ends[first] - counts[first]), int(ends[last])


# Sorted blocks: a block's kept rows in time order as raw fixed-size records, so that the rows
# another block needs as context (its last W-1) are read from the tail without the rest.
def row_dtype(num_features: int) -> np.dtype:
    """One row of a spill file or sorted block file, for both jobs (`id` is -1 in a train file)."""
    return np.dtype([("time", "<f8"), ("line", "<i8"), ("id", "<i8"), ("source", "<i4"), ("label", "i1"),
                     ("signals", "<f4", (num_features,))])


def sorted_path(staging: str, key: RecordingKey, block_index: int) -> str:
    crew, seat, experiment = key
    return file_io.join(staging, "sorted", f"crew{crew}-seat{seat}-{experiment}", f"b{block_index:05d}.rows")


def write_rows(path: str, block: RecordingRows) -> None:
    file_io.write_bytes(path, _records(block).tobytes())


def read_rows(path: str, num_features: int, start: int = 0, stop: Optional[int] = None) -> RecordingRows:
    """The rows of a sorted block file: rows [start, stop) (default all). Only the rows asked for
    are read (a local file's are mapped: file_io.read_range)."""
    dtype = row_dtype(num_features)
    start = max(0, start)
    data = file_io.read_range(path, start * dtype.itemsize, None if stop is None else (stop - start) * dtype.itemsize)
    return _block(np.frombuffer(data, dtype=dtype, count=len(data) // dtype.itemsize))


def recording_rows(recording: Sequence["SortedBlock"], start: int, stop: int) -> RecordingRows:
    """Rows [start, stop) of a recording known by its sorted blocks (in time order), rows global:
    read from the blocks that hold them, each only for its part of the range."""
    parts, first = [], 0
    for block in recording:
        lo, hi = max(start, first), min(stop, first + block.num_rows)
        if lo < hi:
            parts.append(read_rows(block.path, block.num_features, start=lo - first, stop=hi - first))
        first += block.num_rows
    if not parts:
        raise ValueError(f"rows [{start}, {stop}) are outside the recording's {first} rows")
    return parts[0] if len(parts) == 1 else RecordingRows.concat(parts)


def scaled_path(staging: str, key: RecordingKey, block_index: int) -> str:
    """Where a sorted block's rows are written again with their signals scaled."""
    crew, seat, experiment = key
    return file_io.join(staging, "scaled", f"crew{crew}-seat{seat}-{experiment}", f"b{block_index:05d}.rows")


def _records(block: RecordingRows) -> np.ndarray:
    """A block's rows as `row_dtype` records (the record of spill and sorted block files)."""
    records = np.empty(len(block), dtype=row_dtype(block.signals.shape[1]))
    for name in records.dtype.names:
        value = getattr(block, name)
        records[name] = -1 if value is None else value
    return records


def _block(records: np.ndarray) -> RecordingRows:
    """Views of the records' fields (read-only when the records are bytes read): nothing is copied
    until a caller selects, sorts or scales."""
    return RecordingRows(records["time"], records["signals"], records["label"], records["line"], records["source"],
                         records["id"])


@dataclasses.dataclass(frozen=True)
class SortedBlock:
    """What windowing needs to know of a sorted block without reading it: where it is, its rows
    (`num_rows`, `first_time`, `last_time`) and `gap_starts`, its local rows whose time is more
    than max_gap after the previous row's (each starts a segment)."""

    recording: RecordingKey
    index: int
    path: str
    num_rows: int
    num_features: int
    first_time: float
    last_time: float
    gap_starts: Tuple[int, ...]


def summarize_sorted(recording: RecordingKey, index: int, path: str, block: RecordingRows,
                     max_gap: float) -> SortedBlock:
    gaps = np.flatnonzero(np.diff(block.time) > max_gap) + 1
    return SortedBlock(recording, index, path, len(block), block.signals.shape[1], float(block.time[0]),
                       float(block.time[-1]), tuple(gaps.tolist()))
