"""`crewstream predict` / `python -m trainer.predict`: a test CSV -> submission.csv, in bounded memory.

    pass 1  read the CSV (.csv, .csv.gz or .csv.bz2) in line-aligned chunks, parsed and validated
            by beam_jobs.csv_reader (pyarrow); append each (crew, seat, experiment) group's rows
            (id, line, time, raw signals) to a spill file of its own in a temporary folder, and
            every readable id to an id ledger; then give each id one row (duplicates rejected)
    pass 2  one group at a time: load it, stable-sort by time, left-pad it with W-1 copies of its
            first row, view its stride-1 windows (a numpy view, no copy), copy --batch-size of them
            at a time into a [B, W, F] batch, call MODEL/serving's `serving_default` (--concurrent
            calls in flight, on threads: one LSTM call leaves cores idle), append `id,A,B,C,D` rows.
            A model with the `sequence` signature (a tcn) is swept instead (--path auto): the padded
            group is fed once, in chunks of --sweep-rows rows plus the W-1 rows before them, and
            every output step after those W-1 is a row's prediction (the output of the window
            ending at that row: docs/DESIGN.md, "Models"); --path windows forces the windowed calls
    end     the submission is written under a hidden temporary name and renamed into place, so a
            killed run leaves no partial file under the final name

The prediction contract (docs/DESIGN.md, "Prediction"): the window of row i is the W rows of its group
ending at row i in time order; a row with fewer than W-1 earlier rows is left-padded by repeating
the group's first row. Rows with equal times keep their file order (a stable sort). Windows cross
time gaps: at prediction every row needs a window. Values go in RAW; the serving model scales them.
W, the feature list and the class order come from MODEL/serving (export.read_serving_config).

Memory: one group at a time (n rows take about n * (17 + 4F) bytes), one bucket of the id ledger
(rows / 64 x 17 bytes), --concurrent + 2 batch buffers of B * W * F * 4 bytes (allocated once;
sweeping: chunks of (--sweep-rows + W - 1) * F * 4 bytes), and TensorFlow with --concurrent calls'
working sets (sweeping: a few activations of --sweep-rows x filters floats per call); never all
windows, never the whole file. The spill folder needs 24 + 4F bytes per row of disk,
plus 17 per row for the id ledger.

Bad input. File-level problems (no such file, empty file, header only, a missing column, a
train-layout file, a truncated or damaged .gz / .bz2 stream) raise `BadInputError` or csv_reader's
`CsvLayoutError`, and nothing is written under OUTPUT. Row-level problems (bad cell, wrong
column count, seat not 0/1, negative time, a number outside its field's range, a line that is not
CSV text: csv_reader.find_defects) leave the row out of every window and list it in
OUTPUT's rejects file (`NAME.rejects.csv`: file,line,column,reason,id,text): every other id's window
is the one it would have without that row. Each id gets exactly one submission row: ids are
checked after pass 1 (IdLedger: hashed into buckets on disk, so one bucket at a time is in memory),
an id is kept by its first usable row (its first row when none is usable), and every other row with
that id is rejected as a duplicate. A rejected row that keeps its id gets the uniform distribution.
More rejected rows than --max-bad-fraction of the rows read stops the run after pass 1
(`TooManyRejectsError`): no submission, the rejects file is written to show why.

Faults. Temporary names carry this host's name and the pid (`.NAME.tmp-HOST-PID-XXXX` beside
OUTPUT, `crewstream-predict-HOST-PID-...` spill folders): the next run removes what a killed run on
this machine left behind. SIGTERM ends a run like Ctrl-C does, cleaning up on the way out.

Scaling out: groups are independent. `--shard K/N` predicts only the groups whose stable hash
(crc32 of "crew/seat/experiment") is K mod N, plus (worker 0) the rejected rows; N workers each
write a part, and the parts concatenated (one header) are the submission.
"""

import argparse
import collections
import contextlib
import csv
import dataclasses
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO, Deque, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from crewstream import console
from crewstream.console import Progress
from tfrecords_schema import csv_layout as cols

_LOG = logging.getLogger("crewstream.predict")

DEFAULT_BATCH_SIZE = 1024
DEFAULT_CHUNK_BYTES = 16 << 20  # CSV bytes parsed at once (csv_reader's own default)
DEFAULT_MAX_BAD_FRACTION = 0.001  # as preprocess's --max-bad-fraction
DEFAULT_SWEEP_ROWS = 1 << 16  # rows predicted per sequence call (plus W-1 rows of context); 32k-128k
# measured alike on 2 cores (a small tcn, W = 256, 23 features)
AUTO, WINDOWS, SWEEP = "auto", "windows", "sweep"
PATHS = (AUTO, WINDOWS, SWEEP)
REJECT_HEADER = ("file", "line", "column", "reason", "id", "text")
SPILL_PREFIX = "crewstream-predict-"

GroupKey = Tuple[int, int, str]  # (crew, seat, experiment)


def default_concurrency() -> int:
    """Model calls in flight: one per usable core, at most 8 (measured on 2 cores: 2 calls predict
    about twice the windows/s of 1, with byte-identical output; 3 were no faster than 2)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 8))


@dataclasses.dataclass(frozen=True)
class PredictConfig:
    model_dir: str
    input: str
    output: str
    batch_size: int = DEFAULT_BATCH_SIZE
    shard: Tuple[int, int] = (0, 1)  # (K, N): this worker predicts the groups hashing to K mod N
    temp_dir: Optional[str] = None  # where the spill folder is made (default: the system's)
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    concurrent: int = dataclasses.field(default_factory=default_concurrency)  # model calls in flight
    progress: str = "auto"  # auto (a bar on a terminal, log lines otherwise), bar, log, none
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION  # rejected / read above this stops the run
    path: str = AUTO  # windows, sweep, or auto: sweep when the model has a `sequence` signature
    sweep_rows: int = DEFAULT_SWEEP_ROWS  # rows predicted per sequence call when sweeping


class BadInputError(ValueError):
    """A file-level problem with predict's input: the run stops, nothing is written under OUTPUT."""


class TooManyRejectsError(BadInputError):
    """More rows rejected than --max-bad-fraction allows (the rejects file is written, to show why)."""


@dataclasses.dataclass
class PredictSummary:
    """What a run did: counts, and seconds spent reading (pass 1) and predicting (pass 2)."""

    rows_read: int = 0  # data lines of the file, rejected ones included
    rows_rejected: int = 0  # duplicate-id rows included
    duplicate_id_rows: int = 0  # usable rows rejected because an earlier row has their id
    rows_without_id: int = 0  # rejected rows whose id could not be read: not in the submission
    groups: int = 0  # groups predicted by this worker
    largest_group: int = 0
    windows: int = 0  # rows predicted from their window
    fallback_rows: int = 0  # rejected rows given the uniform distribution
    nonfinite_rows: int = 0  # windows whose model output was not finite (given uniform too)
    read_seconds: float = 0.0
    predict_seconds: float = 0.0
    output: str = ""
    rejects_file: Optional[str] = None


# ---------------------------------------------------------------------------------------------
# Pass 1: read, validate, spill each group to its own file

def record_dtype(num_features: int) -> np.dtype:
    """One spilled row: id int64, its file line int64, time float64, signals float32 [F] (raw,
    serving feature order). The line tells a row apart from a later row with the same id."""
    return np.dtype([("id", "<i8"), ("line", "<i8"), ("time", "<f8"), ("signals", "<f4", (num_features,))])


def group_of(key: GroupKey, num_shards: int) -> int:
    """The worker (0..num_shards-1) that predicts group `key`: stable across runs and machines."""
    crew, seat, experiment = key
    return zlib.crc32(f"{crew}/{seat}/{experiment}".encode()) % num_shards


def split_by_group(crew: np.ndarray, seat: np.ndarray, experiment: np.ndarray
                   ) -> Iterator[Tuple[GroupKey, np.ndarray]]:
    """(key, row indices in file order) for each (crew, seat, experiment) present in a chunk.

    crew, seat: int64 [n]; experiment: object [n], each one of csv_layout.EXPERIMENTS (validated).
    """
    codes = np.full(len(crew), -1, np.int64)
    for i, name in enumerate(cols.EXPERIMENTS):
        codes[experiment == name] = i
    order = np.lexsort((codes, seat, crew))  # lexsort is stable: file order within a group
    keys = np.stack([crew[order], seat[order], codes[order]], axis=1)
    starts = np.flatnonzero(np.r_[True, (keys[1:] != keys[:-1]).any(axis=1)]) if len(order) else []
    for a, b in zip(starts, list(starts[1:]) + [len(order)]):
        yield (int(keys[a, 0]), int(keys[a, 1]), cols.EXPERIMENTS[keys[a, 2]]), order[a:b]


def _append(path: str, records: np.ndarray) -> None:
    # opened for each append and closed again: any number of files needs one descriptor
    with open(path, "ab") as f:
        records.tofile(f)


class Spill:
    """Per-group append-only files of `record_dtype` rows in `folder`, in arrival (file) order."""

    def __init__(self, folder: str, num_features: int):
        self.folder, self.dtype = folder, record_dtype(num_features)
        self.rows: Dict[GroupKey, int] = {}

    def path(self, key: GroupKey) -> str:
        crew, seat, experiment = key
        return os.path.join(self.folder, f"crew{crew}-seat{seat}-{experiment}.rows")

    def append(self, key: GroupKey, ids: np.ndarray, lines: np.ndarray, times: np.ndarray,
               signals: np.ndarray) -> None:
        records = np.empty(len(ids), self.dtype)
        records["id"], records["line"], records["time"], records["signals"] = ids, lines, times, signals
        _append(self.path(key), records)
        self.rows[key] = self.rows.get(key, 0) + len(ids)


class IdLedger:
    """Every readable id of the input with its line, in `buckets` files by a hash of the id.

    Finding the ids that occur more than once then holds one bucket at a time in memory (about
    rows / buckets x 17 bytes: 4.8 MB for the 17.9M rows of the real test.csv), never all ids.
    `rejected` marks rows the reader rejected (their id could still be read).
    """

    dtype = np.dtype([("id", "<i8"), ("line", "<i8"), ("rejected", "u1")])

    def __init__(self, folder: str, buckets: int = 64):
        if buckets < 1 or buckets & (buckets - 1):
            raise ValueError(f"buckets must be a power of 2, got {buckets}")
        self.folder, self.buckets = folder, buckets
        self._shift = np.uint64(64 - (buckets - 1).bit_length())  # the hash's top bits pick the bucket
        os.makedirs(folder, exist_ok=True)

    def path(self, bucket: int) -> str:
        return os.path.join(self.folder, f"ids-{bucket:04d}.bin")

    def bucket_of(self, ids: np.ndarray) -> np.ndarray:
        """Fibonacci hashing: consecutive ids (the real file's) spread evenly over the buckets."""
        if self.buckets == 1:
            return np.zeros(len(ids), np.int64)
        mixed = np.asarray(ids, np.int64).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        return (mixed >> self._shift).astype(np.int64)

    def append(self, ids: np.ndarray, lines: np.ndarray, rejected: bool) -> None:
        records = np.empty(len(ids), self.dtype)
        records["id"], records["line"], records["rejected"] = ids, lines, rejected
        bucket = self.bucket_of(records["id"])
        order = np.argsort(bucket, kind="stable")
        values, starts = np.unique(bucket[order], return_index=True)
        for value, a, b in zip(values, starts, list(starts[1:]) + [len(order)]):
            _append(self.path(int(value)), records[order[a:b]])

    def read(self) -> Iterator[np.ndarray]:
        """Each non-empty bucket's records (IdLedger.dtype), bucket after bucket."""
        for bucket in range(self.buckets):
            if os.path.exists(self.path(bucket)):
                yield np.fromfile(self.path(bucket), dtype=self.dtype)


def one_row_per_id(records: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which row keeps each id: its first usable row, else its first row.

    records: IdLedger.dtype [n]. Returns (fallback, duplicates, kept_line): `fallback`, the records
    of rejected rows that keep their id (they get the uniform distribution); `duplicates`, every
    record that does not keep its id; kept_line int64 [len(duplicates)], the line that keeps it.
    """
    ordered = records[np.lexsort((records["line"], records["rejected"], records["id"]))]
    first = np.ones(len(ordered), bool)
    first[1:] = ordered["id"][1:] != ordered["id"][:-1]
    keeper = np.flatnonzero(first)[np.cumsum(first) - 1]  # per record: index of its id's keeper
    kept_line = ordered["line"][keeper]
    return ordered[first & (ordered["rejected"] == 1)], ordered[~first], kept_line[~first]


@contextlib.contextmanager
def open_input(path: str) -> Iterator[Tuple[BinaryIO, BinaryIO]]:
    """(stream to read CSV text from, raw file whose position measures progress); `.gz` / `.bz2`
    are decompressed by csv_reader, which turns a truncated or damaged stream into CsvLayoutError."""
    from beam_jobs import csv_reader

    with open(path, "rb") as raw, csv_reader.decompressed(raw, path) as f:
        yield f, raw


def check_input(path: str, features: Sequence[str]) -> None:
    """Nothing, once `path` is a test-layout CSV with every feature the model needs and at least
    one data line; BadInputError or CsvLayoutError otherwise. Columns that are not in the test
    layout are ignored, with a warning.

    A compressed file is not read through here: damage further on stops pass 1, and nothing is
    written under OUTPUT before the end anyway.
    """
    from beam_jobs import csv_reader

    if not os.path.isfile(path):
        raise BadInputError(f"{path}: not found" if not os.path.exists(path) else f"{path}: not a file")
    with open_input(path) as (f, _):
        unknown = csv_reader.check_file(f, path, features, labelled=False, with_id=True)
    if unknown:
        _LOG.warning("%s: ignoring column(s) not in the test layout: %s", path, ", ".join(unknown))


def reject_id(text: str, id_column: int) -> Optional[int]:
    """The id in a rejected line's text, when its `id` cell still reads as an int64 (as the reader
    reads ids: `12` or `12.0`); None otherwise."""
    cells = text.split(",")
    if id_column >= len(cells):
        return None
    try:
        value = int(cells[id_column])
    except ValueError:
        try:
            number = float(cells[id_column])
        except ValueError:
            return None
        if not number.is_integer():
            return None
        value = int(number)
    return value if -2**63 <= value < 2**63 else None


class RejectsFile:
    """Rejected rows -> `path` (file,line,column,reason,id,text), written through a temporary name;
    nothing is written when there are none."""

    def __init__(self, path: str):
        self.path, self.count = path, 0
        self._tmp = _temporary_name(path)
        self._file = None
        self._writer = None

    def write(self, reject, row_id: Optional[int]) -> None:
        if self._writer is None:
            self._file = open(self._tmp, "w", newline="")
            self._writer = csv.writer(self._file, lineterminator="\n")
            self._writer.writerow(REJECT_HEADER)
        self._writer.writerow([reject.file, reject.line, reject.column, reject.reason,
                               "" if row_id is None else row_id, reject.text])
        self.count += 1

    def finish(self, commit: bool) -> Optional[str]:
        """Close; move into place on `commit` (removing a stale file when there were no rejects)."""
        if self._file is not None:
            self._file.close()
            if commit:
                os.replace(self._tmp, self.path)
                return self.path
            os.remove(self._tmp)
        elif commit and os.path.exists(self.path):
            os.remove(self.path)  # from an earlier run: it does not describe this one
        return None


def spill_groups(config: PredictConfig, features: Sequence[str], spill: Spill, ledger: IdLedger,
                 rejects: Optional[RejectsFile], summary: PredictSummary) -> None:
    """Pass 1: every row of the input to its group's spill file (this worker's groups only), and
    every readable id (all groups: a duplicate may sit in another worker's group) to `ledger`.

    Rejected rows go to `rejects` (None: not this worker's job).
    """
    from beam_jobs import csv_reader

    shard, num_shards = config.shard
    progress = Progress("read", os.path.getsize(config.input), "MB", config.progress, scale=1e6, logger=_LOG)
    with open_input(config.input) as (f, raw):
        with csv_reader.stream_errors_as_layout_errors(config.input):
            id_column = csv_reader.read_header(f, config.input).index(cols.ID)  # checked: it is there
        f.seek(0)
        position = 0
        for rows, bad in csv_reader.read_file_chunks(f, config.input, features, config.chunk_bytes,
                                                     labelled=False, with_id=True):
            summary.rows_read += len(rows) + len(bad)
            ledger.append(rows.id, rows.line, rejected=False)
            for key, idx in split_by_group(rows.crew, rows.seat, rows.experiment):
                if group_of(key, num_shards) == shard:
                    spill.append(key, rows.id[idx], rows.line[idx], rows.time[idx], rows.signals[idx])
            _reject(bad, id_column, ledger, rejects, summary)
            progress.update(raw.tell() - position)
            position = raw.tell()
    progress.close()


def _reject(bad, id_column: int, ledger: IdLedger, rejects: Optional[RejectsFile],
            summary: PredictSummary) -> None:
    summary.rows_rejected += len(bad)
    ids = [reject_id(r.text, id_column) for r in bad]
    if rejects is not None:
        for r, row_id in zip(bad, ids):
            rejects.write(r, row_id)
    readable = [(row_id, r.line) for r, row_id in zip(bad, ids) if row_id is not None]
    summary.rows_without_id += len(ids) - len(readable)
    if readable:
        row_ids, lines = zip(*readable)
        ledger.append(np.asarray(row_ids, np.int64), np.asarray(lines, np.int64), rejected=True)


def check_rejects(summary: PredictSummary, max_bad_fraction: float, path: str, partial: bool = False) -> None:
    """TooManyRejectsError when more than `max_bad_fraction` of the rows read were rejected
    (`partial`: the count so far, more may follow)."""
    if summary.rows_rejected > max_bad_fraction * summary.rows_read:
        count = f"{'at least ' if partial else ''}{summary.rows_rejected:,} of {summary.rows_read:,}"
        raise TooManyRejectsError(
            f"{path}: {count} rows rejected "
            f"({summary.rows_rejected / max(summary.rows_read, 1):.2%}), more than --max-bad-fraction "
            f"{max_bad_fraction:g}: no submission written; fix the file or raise --max-bad-fraction")


def resolve_ids(config: PredictConfig, ledger: IdLedger, writer: "SubmissionWriter",
                rejects: Optional[RejectsFile], summary: PredictSummary) -> np.ndarray:
    """After pass 1: one row per id (see `one_row_per_id`), bucket by bucket.

    Usable rows that lose their id to another row are rejected ("duplicate id") and counted; worker
    0 lists them in `rejects` and writes the uniform rows of rejected rows that keep their id to
    `writer`. Returns the sorted lines of the rows to leave out of every window.
    TooManyRejectsError as soon as the count passes --max-bad-fraction (the duplicates found so far
    are listed), so what is held here stays within that fraction of the rows.
    """
    fallbacks, duplicates, kept_lines = [], [], []
    too_many = None
    for records in ledger.read():
        fallback, dups, kept_line = one_row_per_id(records)
        usable = dups["rejected"] == 0  # a rejected duplicate is listed and counted already
        summary.rows_rejected += int(usable.sum())
        summary.duplicate_id_rows += int(usable.sum())
        fallbacks.append(fallback)
        duplicates.append(dups[usable])
        kept_lines.append(kept_line[usable])
        try:
            check_rejects(summary, config.max_bad_fraction, config.input, partial=True)
        except TooManyRejectsError as e:
            too_many = e
            break
    duplicates_all = np.concatenate(duplicates) if duplicates else np.empty(0, IdLedger.dtype)
    kept = np.concatenate(kept_lines) if kept_lines else np.empty(0, np.int64)
    if rejects is not None:
        _list_duplicates(config.input, duplicates_all, kept, rejects)
    if too_many is not None:
        raise too_many
    if rejects is not None:
        fallback_all = np.concatenate(fallbacks) if fallbacks else np.empty(0, IdLedger.dtype)
        fallback_all = fallback_all[np.argsort(fallback_all["line"], kind="stable")]
        writer.write(fallback_all["id"], uniform(len(fallback_all), writer.num_classes))
        summary.fallback_rows += len(fallback_all)
    return np.sort(duplicates_all["line"])


def _list_duplicates(path: str, duplicates: np.ndarray, kept_line: np.ndarray, rejects: RejectsFile) -> None:
    from beam_jobs.csv_reader import Reject

    order = np.argsort(duplicates["line"], kind="stable")
    for record, line in zip(duplicates[order], kept_line[order]):
        # the row's text is not kept for usable rows: the line numbers point to both
        rejects.write(Reject(path, int(record["line"]), cols.ID,
                             f"duplicate id: line {int(line)} of {path} has it too and keeps it", ""),
                      int(record["id"]))


# ---------------------------------------------------------------------------------------------
# Pass 2: one group at a time, windows as views, batches through the serving model

def load_group(path: str, num_features: int, window: int, excluded: Optional[np.ndarray] = None,
               block_rows: int = 1 << 16) -> Tuple[np.ndarray, np.ndarray]:
    """A spilled group in time order: (ids int64 [n], padded float32 [n + W - 1, F]).

    `padded` is the group's signals after a stable sort by time, preceded by W-1 copies of its
    first row, so that `window_view(padded, W)[i]` is row i's window. Rows whose line is in
    `excluded` (sorted int64: rows that lost their id to another row) are left out, as if the
    file did not have them.

    The file is read twice, `block_rows` at a time: ids and times first (to sort), then the signals,
    each block scattered straight to its sorted place. Peak: n * (17 + 4F) bytes, where reading the
    whole file and then sorting its signals would hold them twice, n * (32 + 8F).
    """
    dtype = record_dtype(num_features)
    n = os.path.getsize(path) // dtype.itemsize
    times, ids = np.empty(n, np.float64), np.empty(n, np.int64)
    keep = np.ones(n, bool)
    for start, block in _blocks(path, dtype, block_rows):
        rows = slice(start, start + len(block))
        times[rows], ids[rows] = block["time"], block["id"]
        if excluded is not None and len(excluded):
            keep[rows] = ~np.isin(block["line"], excluded)
    everything = bool(keep.all())
    if not everything:
        times, ids = times[keep], ids[keep]
    order = np.argsort(times, kind="stable")  # equal times keep file order
    del times
    ids = ids[order]
    rank = np.full(n, -1, np.int64)  # the file's row j goes to sorted place rank[j]; -1: left out
    rank[order if everything else np.flatnonzero(keep)[order]] = np.arange(len(ids))
    del order, keep
    padded = np.empty((len(ids) + window - 1, num_features), np.float32)
    for start, block in _blocks(path, dtype, block_rows):
        place = rank[start:start + len(block)]
        if everything:
            padded[window - 1 + place] = block["signals"]
        else:
            padded[window - 1 + place[place >= 0]] = block["signals"][place >= 0]
    if len(ids):
        padded[:window - 1] = padded[window - 1]
    return ids, padded


def _blocks(path: str, dtype: np.dtype, block_rows: int) -> Iterator[Tuple[int, np.ndarray]]:
    """(first row, records) blocks of a spill file, in file order."""
    n = os.path.getsize(path) // dtype.itemsize
    with open(path, "rb") as f:
        for start in range(0, n, block_rows):
            # an exact count: np.fromfile allocates `count` rows before it reads
            yield start, np.fromfile(f, dtype=dtype, count=min(block_rows, n - start))


def window_view(padded: np.ndarray, window: int) -> np.ndarray:
    """float32 [n, W, F] read-only view: element i is padded[i : i + W]. Nothing is copied."""
    views = np.lib.stride_tricks.sliding_window_view(padded, window, axis=0)  # [n, F, W]
    return views.transpose(0, 2, 1)


def uniform(n: int, num_classes: int) -> np.ndarray:
    return np.full((n, num_classes), 1.0 / num_classes, np.float32)


class ServingModel:
    """MODEL/serving's `serving_default`: raw windows float32 [B, W, F] -> float32 [B, K].

    One call of the signature's concrete function per batch: no retracing for any batch size.
    """

    def __init__(self, model_dir: str):
        import tensorflow as tf

        from tfrecords_schema import WINDOW
        from trainer import export

        self.config = export.read_serving_config(model_dir)
        self._loaded = export.load_serving(model_dir)  # keep it alive: the signature needs its variables
        self._fn = self._loaded.signatures[export.SERVING_SIGNATURE]
        self._constant, self._input, self._output = tf.constant, WINDOW, export.PROBABILITIES
        shape = self._fn.structured_input_signature[1][WINDOW].shape.as_list()
        expected = [None, self.config["window"], len(self.config["features"])]
        if shape != expected:
            raise ValueError(f"{model_dir}: serving input {shape} disagrees with its config {expected}")

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        return self._fn(**{self._input: self._constant(windows)})[self._output].numpy()


class SweepModel:
    """MODEL/serving's `sequence` signature as predict sweeps it: a chunk of padded rows float32
    [W - 1 + c, F] (RAW) -> float32 [c, K], the outputs of the c windows ending at its last c rows
    (the first W-1 output steps, the context's, are dropped).

    `sequence` (tests only) replaces the signature: rows [T, F] -> per-step outputs [T, K].
    """

    def __init__(self, model_dir: str, sequence=None):
        from trainer import export

        self.config = export.read_serving_config(model_dir)
        self.window = self.config["window"]
        self._sequence = sequence
        if sequence is None:
            import tensorflow as tf

            if export.SEQUENCE_SIGNATURE not in self.config["signatures"]:
                raise ValueError(f"{model_dir}: a {self.config['model']} model has no "
                                 f"`{export.SEQUENCE_SIGNATURE}` signature to sweep with")
            self._loaded = export.load_serving(model_dir)  # keep it alive for its variables
            fn = self._loaded.signatures[export.SEQUENCE_SIGNATURE]
            self._sequence = lambda rows: fn(**{export.SEQUENCE_INPUT: tf.constant(rows[None])})[
                export.PROBABILITIES].numpy()[0]

    def __call__(self, chunk: np.ndarray) -> np.ndarray:
        return self._sequence(chunk)[self.window - 1:]


def choose_path(requested: str, serving: dict, model_dir: str) -> str:
    """WINDOWS or SWEEP for `--path requested` and the model's serving config; ValueError for
    `sweep` with a model that has no `sequence` signature."""
    from trainer import export

    can_sweep = export.SEQUENCE_SIGNATURE in serving["signatures"]
    if requested == SWEEP and not can_sweep:
        raise ValueError(f"{model_dir}: --path {SWEEP} needs a model with the `{export.SEQUENCE_SIGNATURE}` "
                         f"signature (train --model tcn); this one is a {serving['model']} "
                         f"(use --path {WINDOWS} or {AUTO})")
    return SWEEP if can_sweep and requested != WINDOWS else WINDOWS


def loaded_groups(spill: Spill, keys: Sequence[GroupKey], window: int,
                  excluded: Optional[np.ndarray] = None) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """(ids, padded) of each group with rows left (see load_group), one at a time; each spill file
    is removed once loaded (in memory now: the disk space goes back early)."""
    features = spill.dtype["signals"].shape[0]
    for key in keys:
        ids, padded = load_group(spill.path(key), features, window, excluded)
        os.remove(spill.path(key))
        if len(ids):  # else every row of the group lost its id to another row
            yield ids, padded
        del ids, padded  # before the next group loads, not after: one group at a time


def group_batches(spill: Spill, keys: Sequence[GroupKey], window: int, batch_size: int, buffers: int = 1,
                  excluded: Optional[np.ndarray] = None) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """(ids int64 [b], windows float32 [b, W, F] contiguous) batches, b <= batch_size, group after
    group. One group is in memory at a time; a batch is the only copy of its windows. Rows whose
    line is in `excluded` (sorted) are left out (see load_group).

    Batches are written into `buffers` arrays taken in turn (allocated once: no 24 MB allocation
    per batch to fragment the heap), so a yielded batch is overwritten `buffers` yields later: the
    consumer must be done with it by then (predict_batches keeps at most `concurrent` pending).
    """
    features = spill.dtype["signals"].shape[0]
    ring = [np.empty((batch_size, window, features), np.float32) for _ in range(buffers)]
    turn = 0
    for ids, padded in loaded_groups(spill, keys, window, excluded):
        windows = window_view(padded, window)
        for start in range(0, len(ids), batch_size):
            part = windows[start:start + batch_size]
            batch = ring[turn % buffers][:len(part)]
            np.copyto(batch, part)
            turn += 1
            yield ids[start:start + batch_size], batch


def group_chunks(spill: Spill, keys: Sequence[GroupKey], window: int, sweep_rows: int, buffers: int = 1,
                 excluded: Optional[np.ndarray] = None) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """(ids int64 [c], chunk float32 [W - 1 + c, F] contiguous), c <= sweep_rows, group after group:
    the padded group (see load_group) cut into runs of rows that overlap by W-1, so that the last c
    rows of a chunk are rows ids and the W-1 before them are the context their windows need. Row
    i of a group is padded row W-1+i; its chunk ends at or after it, and starts W-1 rows earlier
    than the first row it predicts. Buffers are reused as in group_batches.
    """
    features = spill.dtype["signals"].shape[0]
    ring = [np.empty((window - 1 + sweep_rows, features), np.float32) for _ in range(buffers)]
    turn = 0
    for ids, padded in loaded_groups(spill, keys, window, excluded):
        for start in range(0, len(ids), sweep_rows):
            part = padded[start:start + window - 1 + sweep_rows]
            chunk = ring[turn % buffers][:len(part)]
            np.copyto(chunk, part)
            turn += 1
            yield ids[start:start + sweep_rows], chunk


def predict_batches(batches: Iterator[Tuple[np.ndarray, np.ndarray]], model, writer: "SubmissionWriter",
                    progress: Progress, summary: PredictSummary, concurrent: int = 1) -> None:
    """Run `model` on every batch and write the rows, with `concurrent` model calls in flight.

    TensorFlow runs a call without the GIL, and one LSTM call (a loop of small ops) does not keep
    every core busy: a second call in flight fills the gaps, and the next batch is cut meanwhile.
    At most `concurrent` results are pending when the next batch is cut. Rows are written in
    batch order.
    """
    with ThreadPoolExecutor(max_workers=concurrent, thread_name_prefix="predict") as pool:
        pending: Deque[Tuple[np.ndarray, Future]] = collections.deque()
        for ids, windows in batches:
            pending.append((ids, pool.submit(model, windows)))
            while len(pending) > concurrent:
                _write_batch(*pending.popleft(), writer, progress, summary)
        while pending:
            _write_batch(*pending.popleft(), writer, progress, summary)


def _write_batch(ids: np.ndarray, future: Future, writer: "SubmissionWriter", progress: Progress,
                 summary: PredictSummary) -> None:
    probabilities = future.result()
    bad = ~np.isfinite(probabilities).all(axis=1)
    if bad.any():  # never write a non-finite probability
        probabilities[bad] = 1.0 / probabilities.shape[1]
        summary.nonfinite_rows += int(bad.sum())
    writer.write(ids, probabilities)
    summary.windows += len(ids)
    progress.update(len(ids))


# ---------------------------------------------------------------------------------------------
# Output

def _owner() -> str:
    """`HOST-PID` of this process, carried by every temporary name so a later run can tell the
    leftovers of a dead run from the files of a live one."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _temporary_name(path: str) -> str:
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.tmp-{_owner()}-{uuid.uuid4().hex[:8]}")


def _left_by_dead_process(entry: str, prefix: str) -> bool:
    """True for `PREFIX` + `HOST-PID-...` when HOST is this machine and no process PID runs."""
    head = f"{prefix}{socket.gethostname()}-"
    pid = entry[len(head):].split("-", 1)[0] if entry.startswith(head) else ""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):  # another user's live process; not a pid at all
        return False
    return False


def remove_leftovers(output: str, temp_dir: Optional[str]) -> List[str]:
    """Remove what killed runs on this machine left: temporary outputs beside `output` (and its
    rejects file) and spill folders in `temp_dir` (default: the system's). Returns their paths."""
    removed = []
    folder = os.path.dirname(os.path.abspath(output))
    for target in (output, rejects_path(output)):
        prefix = f".{os.path.basename(target)}.tmp-"
        for entry in sorted(os.listdir(folder)):
            if _left_by_dead_process(entry, prefix):
                os.remove(os.path.join(folder, entry))
                removed.append(os.path.join(folder, entry))
    temp = temp_dir or tempfile.gettempdir()
    for entry in sorted(os.listdir(temp)) if os.path.isdir(temp) else []:
        if _left_by_dead_process(entry, SPILL_PREFIX):
            shutil.rmtree(os.path.join(temp, entry), ignore_errors=True)
            removed.append(os.path.join(temp, entry))
    if removed:
        _LOG.info("removed %d leftover(s) of killed runs: %s", len(removed), ", ".join(removed))
    return removed


def check_outputs(config: PredictConfig) -> None:
    """OwnershipError (tfrecords_schema.ownership) unless the submission and its rejects file may
    be written: neither is the input, and each is absent or a file crewstream wrote, known by its
    exact first line (`id,A,B,C,D`; REJECT_HEADER), never a folder or a symbolic link."""
    from tfrecords_schema import LABEL_VOCABULARY, ownership

    label = f"--output {config.output}"
    ownership.check_output_file(config.output, ",".join([cols.ID, *LABEL_VOCABULARY]), [config.input], label)
    rejects = rejects_path(config.output)
    ownership.check_output_file(rejects, ",".join(REJECT_HEADER), [config.input],
                                f"{label}: its rejects file {rejects}")


def rejects_path(output: str) -> str:
    """`sub.csv` -> `sub.rejects.csv` (also for `sub.csv.gz` and names without `.csv`)."""
    base = output[:-3] if output.endswith(".gz") else output
    base = base[:-4] if base.endswith(".csv") else base
    return base + ".rejects.csv"


class SubmissionWriter:
    """`id,A,B,C,D` rows to a temporary file beside `path`; `commit()` renames it to `path`.

    Probabilities are written as Arrow writes a float32: the shortest text that reads back as the
    same float32 (so a row's four values still sum to 1 within float32 rounding). A `.gz` path is
    gzip-compressed.
    """

    def __init__(self, path: str, labels: Sequence[str]):
        import pyarrow as pa
        import pyarrow.csv as pa_csv

        self._pa, self._csv = pa, pa_csv
        self.path, self.labels, self.num_classes, self.rows = path, list(labels), len(labels), 0
        self.tmp = _temporary_name(path)
        sink = pa.OSFile(self.tmp, "wb")
        self._sink = pa.CompressedOutputStream(sink, "gzip") if path.endswith(".gz") else sink
        self._sink.write(",".join([cols.ID] + self.labels).encode() + b"\n")
        self._options = pa_csv.WriteOptions(include_header=False, quoting_style="none")

    def write(self, ids: np.ndarray, probabilities: np.ndarray) -> None:
        """ids int64 [n]; probabilities float32 [n, K] in label order."""
        if len(ids) == 0:
            return
        columns = [self._pa.array(np.asarray(ids, np.int64))]
        columns += [self._pa.array(probabilities[:, k].astype(np.float32)) for k in range(self.num_classes)]
        table = self._pa.Table.from_arrays(columns, names=[cols.ID] + self.labels)
        self._csv.write_csv(table, self._sink, self._options)
        self.rows += len(ids)

    def commit(self) -> None:
        self._sink.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self._sink.close()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)


# ---------------------------------------------------------------------------------------------
# The run

def predict(config: PredictConfig, model=None, sequence=None) -> PredictSummary:
    """Predict `config.input` into `config.output`; return what was done.

    Tests only: `model` replaces MODEL/serving's `serving_default` on the windowed path (a callable
    float32 [B, W, F] -> [B, K]), `sequence` its `sequence` signature on the sweep (rows [T, F] ->
    [T, K]); the serving config, and with it the path, is read from `config.model_dir` either way.

    Raises (nothing written under config.output): OwnershipError (the output or its rejects file
    is not crewstream's to write), FileNotFoundError (no model), CsvLayoutError or BadInputError
    (the input file), TooManyRejectsError (the rejects file is written).
    """
    check_outputs(config)  # before any work
    from trainer import export

    serving = export.read_serving_config(config.model_dir)
    window, features = serving["window"], list(serving["features"])
    path = choose_path(config.path, serving, config.model_dir)
    check_input(config.input, features)  # a wrong file fails here, before the model loads
    remove_leftovers(config.output, config.temp_dir)
    if path == SWEEP:
        model = SweepModel(config.model_dir, sequence)
    else:
        model = model or ServingModel(config.model_dir)
    summary = PredictSummary(output=config.output)
    _LOG.info("model %s (%s): windows of %d rows x %d feature(s) (%s), %s; input %s (%.1f MB); "
              "worker %d of %d", config.model_dir, serving["model"], window, len(features),
              ",".join(features), f"one sweep per group in chunks of {config.sweep_rows:,} rows"
              if path == SWEEP else f"batches of {config.batch_size:,} windows", config.input,
              os.path.getsize(config.input) / 1e6, config.shard[0], config.shard[1])
    writer = SubmissionWriter(config.output, serving["label_vocabulary"])
    rejects = RejectsFile(rejects_path(config.output))
    outcome = "failed"  # or "rejects" (the rejects file explains a stop) or "done"
    try:
        with tempfile.TemporaryDirectory(prefix=f"{SPILL_PREFIX}{_owner()}-", dir=config.temp_dir) as folder:
            spill, ledger = Spill(folder, len(features)), IdLedger(os.path.join(folder, "ids"))
            own_rejects = rejects if config.shard[0] == 0 else None
            started = time.perf_counter()
            spill_groups(config, features, spill, ledger, own_rejects, summary)
            try:
                check_rejects(summary, config.max_bad_fraction, config.input)
                excluded = resolve_ids(config, ledger, writer, own_rejects, summary)
            except TooManyRejectsError as e:
                outcome = "rejects"
                if own_rejects is None:
                    raise
                raise TooManyRejectsError(f"{e} (they are listed in {rejects.path})") from None
            summary.read_seconds = time.perf_counter() - started
            _log_pass1(spill, summary)
            started = time.perf_counter()
            windows = sum(spill.rows.values()) - (len(excluded) if config.shard[1] == 1 else 0)
            progress = Progress("predict", windows, "windows", config.progress, logger=_LOG)
            # concurrent + 2 buffers: a batch is overwritten only after its result was written
            if path == SWEEP:
                batches = group_chunks(spill, sorted(spill.rows), window, config.sweep_rows,
                                       buffers=config.concurrent + 2, excluded=excluded)
            else:
                batches = group_batches(spill, sorted(spill.rows), window, config.batch_size,
                                        buffers=config.concurrent + 2, excluded=excluded)
            predict_batches(batches, model, writer, progress, summary, config.concurrent)
            progress.close()
            summary.predict_seconds = time.perf_counter() - started
        writer.commit()
        outcome = "done"
    finally:
        if outcome != "done":
            writer.abort()
        summary.rejects_file = rejects.finish(commit=outcome != "failed")
    return summary


def _log_pass1(spill: Spill, summary: PredictSummary) -> None:
    summary.groups = len(spill.rows)
    summary.largest_group = max(spill.rows.values(), default=0)
    _LOG.info("read %s rows in %.1f s: %s rejected; %d group(s) to predict here, largest %s rows",
              f"{summary.rows_read:,}", summary.read_seconds, f"{summary.rows_rejected:,}",
              summary.groups, f"{summary.largest_group:,}")
    if summary.rows_rejected:
        _LOG.warning("%s row(s) rejected (listed in the rejects file), %s of them for a duplicate id; "
                     "%s rejected row(s) keep their id with uniform probabilities, %s had no readable "
                     "id", f"{summary.rows_rejected:,}", f"{summary.duplicate_id_rows:,}",
                     f"{summary.fallback_rows:,}", f"{summary.rows_without_id:,}")


# ---------------------------------------------------------------------------------------------
# Command line

def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text}")
    return value


def _shard(text: str) -> Tuple[int, int]:
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N (e.g. 0/4), got {text!r}") from None
    if not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"K/N needs 0 <= K < N, got {text!r}")
    return k, n


def _parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="crewstream predict",
        description="Predict every row of a test-layout CSV (id column, no event) with MODEL/serving "
                    "and write a submission `id,A,B,C,D`, one row per id. Memory stays bounded by "
                    "the largest (crew, seat, experiment) group, whatever the file size.")
    parser.add_argument("--model-dir", required=True, help="folder of a train run, MODEL (uses MODEL/serving)")
    parser.add_argument("--input", required=True, help="test CSV (.csv or .csv.gz)")
    parser.add_argument("--output", required=True, help="submission CSV to write (.csv or .csv.gz)")
    parser.add_argument("--batch-size", type=_positive_int, default=DEFAULT_BATCH_SIZE,
                        help=f"windows per model call (default {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--path", choices=PATHS, default=AUTO,
                        help=f"{SWEEP}: run the model's `sequence` signature once over each group "
                             f"(a tcn); {WINDOWS}: call serving_default on every row's window; "
                             f"{AUTO}: {SWEEP} when the model can (default {AUTO})")
    parser.add_argument("--sweep-rows", type=_positive_int, default=DEFAULT_SWEEP_ROWS,
                        help="rows predicted per sequence call when sweeping, fed with the W-1 rows "
                             f"before them (default {DEFAULT_SWEEP_ROWS:,})")
    parser.add_argument("--concurrent", type=_positive_int, default=None,
                        help=f"model calls in flight at once (default: one per usable core, at most 8; "
                             f"here {default_concurrency()})")
    parser.add_argument("--shard", type=_shard, default=(0, 1), metavar="K/N",
                        help="predict only the groups of worker K of N (default 0/1: all); "
                             "concatenate the N outputs' rows for the submission")
    parser.add_argument("--temp-dir", default=None,
                        help="where to spill the groups' rows (default: the system temp folder); "
                             "needs about rows x (41 + 4 x features) bytes")
    console.add_progress(parser, "rows read and windows predicted")
    parser.add_argument("--max-bad-fraction", type=_fraction, default=DEFAULT_MAX_BAD_FRACTION,
                        help="stop (no submission) when more than this fraction of the rows is "
                             f"rejected (default {DEFAULT_MAX_BAD_FRACTION:g})")
    console.add_verbose(parser)
    return parser.parse_args(argv)


def _stop_on_sigterm(signum, frame) -> None:
    # SIGTERM (a preempted VM, `kill`, a scheduler's timeout) unwinds like Ctrl-C: the temporary
    # submission and the spill folder are removed on the way out
    raise SystemExit(128 + signum)


def main(argv: Optional[List[str]] = None) -> int:
    args = _parse_args(argv)
    console.setup(args.verbose)
    try:  # before TensorFlow is imported (--model-dir is checked after the outputs, by predict)
        console.check_exists(args.input, "--input")
    except console.UsageError as e:
        print(f"crewstream predict: error: {e}", file=sys.stderr)
        return 1
    from beam_jobs.csv_reader import CsvLayoutError

    config = PredictConfig(model_dir=args.model_dir, input=args.input, output=args.output,
                           batch_size=args.batch_size, shard=args.shard, temp_dir=args.temp_dir,
                           progress=args.progress, max_bad_fraction=args.max_bad_fraction,
                           concurrent=args.concurrent or default_concurrency(), path=args.path,
                           sweep_rows=args.sweep_rows)
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        summary = predict(config)
    except (CsvLayoutError, ValueError, OSError) as e:  # FileNotFoundError, BadInputError included
        if args.verbose:
            raise
        print(f"crewstream predict: error: {e}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    rate = summary.windows / summary.predict_seconds if summary.predict_seconds else 0.0
    print(f"wrote {summary.output}: {summary.windows + summary.fallback_rows:,} rows "
          f"({summary.windows:,} predicted from their window, {summary.fallback_rows:,} rejected rows "
          f"given uniform probabilities); read {summary.read_seconds:.1f} s, predict "
          f"{summary.predict_seconds:.1f} s ({rate:,.0f} windows/s)")
    if summary.rejects_file:
        print(f"rejected rows: {summary.rejects_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
