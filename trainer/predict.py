"""`crewstream predict` / `python -m trainer.predict`: a test CSV -> submission.csv, in bounded memory.

    pass 1  read the CSV (.csv or .csv.gz) in line-aligned chunks, parsed and validated by
            beam_jobs.csv_reader (pyarrow); append each (crew, seat, experiment) group's rows
            (id, time, raw signals) to a spill file of its own in a temporary folder
    pass 2  one group at a time: load it, stable-sort by time, left-pad it with W-1 copies of its
            first row, view its stride-1 windows (a numpy view, no copy), copy --batch-size of them
            at a time into a [B, W, F] batch, call MODEL/serving's `serving_default` (--concurrent
            calls in flight, on threads: one LSTM call leaves cores idle), append `id,A,B,C,D` rows
    end     the submission is written under a hidden temporary name and renamed into place, so a
            killed run leaves no partial file under the final name

The prediction contract (DESIGN.md, "Prediction"): the window of row i is the W rows of its group
ending at row i in time order; a row with fewer than W-1 earlier rows is left-padded by repeating
the group's first row. Rows with equal times keep their file order (a stable sort). Windows cross
time gaps: at prediction every row needs a window. Values go in RAW; the serving model scales them.
W, the feature list and the class order come from MODEL/serving (export.read_serving_config).

Memory: one group at a time (n rows take about n * (16 + 4F) bytes), --concurrent + 2 batch
buffers of B * W * F * 4 bytes (allocated once), and TensorFlow with --concurrent calls' working
sets; never all windows, never the whole file. The spill folder needs 16 + 4F bytes per row of disk.

Rows the reader rejects (bad cell, wrong column count, ...) are left out of every window and listed
in OUTPUT's rejects file (`NAME.rejects.csv`: file,line,column,reason,id,text); a rejected row whose
id can still be read gets the uniform distribution, so the submission still has every id once. Ids
travel with their rows, so a dropped row can never attach one id's probabilities to another.

Scaling out: groups are independent. `--shard K/N` predicts only the groups whose stable hash
(crc32 of "crew/seat/experiment") is K mod N, plus (worker 0) the rejected rows; N workers each
write a part, and the parts concatenated (one header) are the submission.
"""

import argparse
import collections
import csv
import dataclasses
import gzip
import logging
import os
import sys
import tempfile
import time
import uuid
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO, Deque, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from tfrecords_schema import csv_layout as cols

_LOG = logging.getLogger("crewstream.predict")

DEFAULT_BATCH_SIZE = 1024
DEFAULT_CHUNK_BYTES = 16 << 20  # CSV bytes parsed at once (csv_reader's own default)
REJECT_HEADER = ("file", "line", "column", "reason", "id", "text")

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


@dataclasses.dataclass
class PredictSummary:
    """What a run did: counts, and seconds spent reading (pass 1) and predicting (pass 2)."""

    rows_read: int = 0  # data lines of the file, rejected ones included
    rows_rejected: int = 0
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
# Progress

class Progress:
    """Work done toward a known total: a one-line bar on a terminal, periodic log lines otherwise.

    mode: "bar", "log" or "none" ("auto" picks bar or log by whether `stream` is a terminal).
    """

    def __init__(self, label: str, total: float, unit: str, mode: str = "auto", stream=None,
                 log_every: float = 30.0, scale: float = 1.0, width: int = 24):
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if getattr(self.stream, "isatty", lambda: False)() else "log"
        self.label, self.total, self.unit, self.mode = label, max(float(total), 0.0), unit, mode
        self.scale, self.width, self.log_every = scale, width, log_every
        self.done = 0.0
        self.started = self._last = time.monotonic()

    def update(self, amount: float) -> None:
        self.done += amount
        now = time.monotonic()
        if self.mode == "bar" and now - self._last >= 0.2:
            self._last = now
            self.stream.write("\r" + self.line())
            self.stream.flush()
        elif self.mode == "log" and now - self._last >= self.log_every:
            self._last = now
            _LOG.info("%s", self.line(bar=False))

    def close(self) -> None:
        if self.mode == "bar":
            self.stream.write("\r" + self.line() + "\n")
            self.stream.flush()
        elif self.mode == "log":
            _LOG.info("%s", self.line(bar=False))

    def line(self, bar: bool = True) -> str:
        """`LABEL [####......]  41%  226,304/551,424 windows  3,210 windows/s  1:41 left` (no bar: no [...])."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        fraction = min(self.done / self.total, 1.0) if self.total else 1.0
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        filled = int(round(fraction * self.width))
        parts = [self.label]
        if bar:
            parts.append("[" + "#" * filled + "." * (self.width - filled) + "]")
        parts += [f"{fraction:4.0%}", f"{self._n(self.done)}/{self._n(self.total)} {self.unit}",
                  f"{self._n(rate)} {self.unit}/s", f"{_clock(left)} left" if self.done < self.total
                  else f"in {_clock(elapsed)}"]
        return "  ".join(parts)

    def _n(self, value: float) -> str:
        value /= self.scale
        return f"{value:,.0f}" if self.scale == 1 else f"{value:,.1f}"


def _clock(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?:??"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


# ---------------------------------------------------------------------------------------------
# Pass 1: read, validate, spill each group to its own file

def record_dtype(num_features: int) -> np.dtype:
    """One spilled row: id int64, time float64, signals float32 [F] (raw, serving feature order)."""
    return np.dtype([("id", "<i8"), ("time", "<f8"), ("signals", "<f4", (num_features,))])


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


class Spill:
    """Per-group append-only files of `record_dtype` rows in `folder`, in arrival (file) order.

    A file is opened for each append and closed again, so any number of groups needs no more than
    one open descriptor.
    """

    def __init__(self, folder: str, num_features: int):
        self.folder, self.dtype = folder, record_dtype(num_features)
        self.rows: Dict[GroupKey, int] = {}

    def path(self, key: GroupKey) -> str:
        crew, seat, experiment = key
        return os.path.join(self.folder, f"crew{crew}-seat{seat}-{experiment}.rows")

    def append(self, key: GroupKey, ids: np.ndarray, times: np.ndarray, signals: np.ndarray) -> None:
        records = np.empty(len(ids), self.dtype)
        records["id"], records["time"], records["signals"] = ids, times, signals
        with open(self.path(key), "ab") as f:
            records.tofile(f)
        self.rows[key] = self.rows.get(key, 0) + len(ids)


def open_input(path: str) -> Tuple[BinaryIO, BinaryIO]:
    """(file to read CSV text from, raw file whose position measures progress); `.gz` is gunzipped."""
    raw = open(path, "rb")
    return (gzip.GzipFile(fileobj=raw, mode="rb") if path.endswith(".gz") else raw), raw


def check_input(path: str, features: Sequence[str]) -> None:
    """CsvLayoutError unless `path` has a test-layout header with every feature the model needs."""
    from beam_jobs import csv_reader

    f, raw = open_input(path)
    with raw, f:
        csv_reader.check_header(csv_reader.read_header(f, path), features, path, labelled=False,
                                with_id=True)


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


def spill_groups(config: PredictConfig, features: Sequence[str], spill: Spill, writer: "SubmissionWriter",
                 rejects: RejectsFile, summary: PredictSummary) -> None:
    """Pass 1: every row of the input to its group's spill file (this worker's groups only).

    Rejected rows go to `rejects`; worker 0 also writes their uniform fallback rows to `writer`.
    """
    from beam_jobs import csv_reader

    shard, num_shards = config.shard
    f, raw = open_input(config.input)
    progress = Progress("read", os.path.getsize(config.input), "MB", config.progress, scale=1e6)
    try:
        header = csv_reader.read_header(f, config.input)
        f.seek(0)
        id_column = header.index(cols.ID)  # check_input made sure it is there
        position = 0
        for rows, bad in csv_reader.read_file_chunks(f, config.input, features, config.chunk_bytes,
                                                     labelled=False, with_id=True):
            summary.rows_read += len(rows) + len(bad)
            for key, idx in split_by_group(rows.crew, rows.seat, rows.experiment):
                if group_of(key, num_shards) == shard:
                    spill.append(key, rows.id[idx], rows.time[idx], rows.signals[idx])
            _reject(bad, id_column, shard, writer, rejects, summary)
            progress.update(raw.tell() - position)
            position = raw.tell()
    finally:
        f.close()
        raw.close()
    progress.close()


def _reject(bad, id_column: int, shard: int, writer: "SubmissionWriter", rejects: RejectsFile,
            summary: PredictSummary) -> None:
    summary.rows_rejected += len(bad)
    if not bad or shard != 0:
        return
    ids = [reject_id(r.text, id_column) for r in bad]
    for r, row_id in zip(bad, ids):
        rejects.write(r, row_id)
    readable = np.asarray([i for i in ids if i is not None], np.int64)
    summary.rows_without_id += len(ids) - len(readable)
    summary.fallback_rows += len(readable)
    writer.write(readable, uniform(len(readable), writer.num_classes))


# ---------------------------------------------------------------------------------------------
# Pass 2: one group at a time, windows as views, batches through the serving model

def load_group(path: str, num_features: int, window: int, block_rows: int = 1 << 16
               ) -> Tuple[np.ndarray, np.ndarray]:
    """A spilled group in time order: (ids int64 [n], padded float32 [n + W - 1, F]).

    `padded` is the group's signals after a stable sort by time, preceded by W-1 copies of its
    first row, so that `window_view(padded, W)[i]` is row i's window.

    The file is read twice, `block_rows` at a time: ids and times first (to sort), then the signals,
    each block scattered straight to its sorted place. Peak: n * (16 + 4F) bytes, where reading the
    whole file and then sorting its signals would hold them twice, n * (32 + 8F).
    """
    dtype = record_dtype(num_features)
    n = os.path.getsize(path) // dtype.itemsize
    times, ids = np.empty(n, np.float64), np.empty(n, np.int64)
    for start, block in _blocks(path, dtype, block_rows):
        times[start:start + len(block)], ids[start:start + len(block)] = block["time"], block["id"]
    order = np.argsort(times, kind="stable")  # equal times keep file order
    del times
    ids = ids[order]
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)  # the file's row j goes to sorted place rank[j]
    del order
    padded = np.empty((n + window - 1, num_features), np.float32)
    for start, block in _blocks(path, dtype, block_rows):
        padded[window - 1 + rank[start:start + len(block)]] = block["signals"]
    if n:
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


def group_batches(spill: Spill, keys: Sequence[GroupKey], window: int, batch_size: int, buffers: int = 1
                  ) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """(ids int64 [b], windows float32 [b, W, F] contiguous) batches, b <= batch_size, group after
    group. One group is in memory at a time; a batch is the only copy of its windows.

    Batches are written into `buffers` arrays taken in turn (allocated once: no 24 MB allocation
    per batch to fragment the heap), so a yielded batch is overwritten `buffers` yields later: the
    consumer must be done with it by then (predict_batches keeps at most `concurrent` pending).
    """
    features = spill.dtype["signals"].shape[0]
    ring = [np.empty((batch_size, window, features), np.float32) for _ in range(buffers)]
    turn = 0
    for key in keys:
        ids, padded = load_group(spill.path(key), features, window)
        os.remove(spill.path(key))  # in memory now: give the disk space back early
        windows = window_view(padded, window)
        for start in range(0, len(ids), batch_size):
            part = windows[start:start + batch_size]
            batch = ring[turn % buffers][:len(part)]
            np.copyto(batch, part)
            turn += 1
            yield ids[start:start + batch_size], batch
        del ids, padded, windows  # before the next group loads, not after: one group at a time


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

def _temporary_name(path: str) -> str:
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.tmp-{uuid.uuid4().hex[:8]}")


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

def predict(config: PredictConfig, model=None) -> PredictSummary:
    """Predict `config.input` into `config.output`; return what was done.

    `model` (tests only) replaces MODEL/serving's signature: a callable float32 [B, W, F] ->
    [B, K]; the serving config is read from `config.model_dir` either way.
    """
    from trainer import export

    serving = export.read_serving_config(config.model_dir)
    window, features = serving["window"], list(serving["features"])
    check_input(config.input, features)  # a wrong file fails here, before the model loads
    model = model or ServingModel(config.model_dir)
    summary = PredictSummary(output=config.output)
    _LOG.info("model %s: windows of %d rows x %d feature(s) (%s); input %s (%.1f MB); worker %d of %d",
              config.model_dir, window, len(features), ",".join(features), config.input,
              os.path.getsize(config.input) / 1e6, config.shard[0], config.shard[1])
    writer = SubmissionWriter(config.output, serving["label_vocabulary"])
    rejects = RejectsFile(rejects_path(config.output))
    committed = False
    try:
        with tempfile.TemporaryDirectory(prefix="crewstream-predict-", dir=config.temp_dir) as folder:
            spill = Spill(folder, len(features))
            started = time.perf_counter()
            spill_groups(config, features, spill, writer, rejects, summary)
            summary.read_seconds = time.perf_counter() - started
            _log_pass1(spill, summary)
            started = time.perf_counter()
            progress = Progress("predict", sum(spill.rows.values()), "windows", config.progress)
            # concurrent + 2 buffers: a batch is overwritten only after its result was written
            batches = group_batches(spill, sorted(spill.rows), window, config.batch_size,
                                    buffers=config.concurrent + 2)
            predict_batches(batches, model, writer, progress, summary, config.concurrent)
            progress.close()
            summary.predict_seconds = time.perf_counter() - started
        writer.commit()
        committed = True
    finally:
        if not committed:
            writer.abort()
        summary.rejects_file = rejects.finish(commit=committed)
    return summary


def _log_pass1(spill: Spill, summary: PredictSummary) -> None:
    summary.groups = len(spill.rows)
    summary.largest_group = max(spill.rows.values(), default=0)
    _LOG.info("read %s rows in %.1f s: %s rejected; %d group(s) to predict here, largest %s rows",
              f"{summary.rows_read:,}", summary.read_seconds, f"{summary.rows_rejected:,}",
              summary.groups, f"{summary.largest_group:,}")
    if summary.rows_rejected:
        _LOG.warning("%s row(s) rejected (listed in the rejects file); %s of them got uniform "
                     "probabilities, %s had no readable id and are not in the submission",
                     f"{summary.rows_rejected:,}", f"{summary.fallback_rows:,}",
                     f"{summary.rows_without_id:,}")
    if summary.rows_read == 0:
        _LOG.warning("the input has no data rows: the submission will hold only its header")


# ---------------------------------------------------------------------------------------------
# Command line

def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
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
    parser.add_argument("--concurrent", type=_positive_int, default=None,
                        help=f"model calls in flight at once (default: one per usable core, at most 8; "
                             f"here {default_concurrency()})")
    parser.add_argument("--shard", type=_shard, default=(0, 1), metavar="K/N",
                        help="predict only the groups of worker K of N (default 0/1: all); "
                             "concatenate the N outputs' rows for the submission")
    parser.add_argument("--temp-dir", default=None,
                        help="where to spill the groups' rows (default: the system temp folder); "
                             "needs about rows x (16 + 4 x features) bytes")
    parser.add_argument("--progress", choices=("auto", "bar", "log", "none"), default="auto",
                        help="a progress bar on a terminal, log lines otherwise (default auto)")
    parser.add_argument("--verbose", action="store_true", help="debug logging and full tracebacks")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from beam_jobs.csv_reader import CsvLayoutError

    config = PredictConfig(model_dir=args.model_dir, input=args.input, output=args.output,
                           batch_size=args.batch_size, shard=args.shard, temp_dir=args.temp_dir,
                           progress=args.progress,
                           concurrent=args.concurrent or default_concurrency())
    if not os.path.exists(config.input):
        print(f"crewstream predict: error: {config.input} not found", file=sys.stderr)
        return 1
    try:
        summary = predict(config)
    except (FileNotFoundError, CsvLayoutError, ValueError) as e:
        if args.verbose:
            raise
        print(f"crewstream predict: error: {e}", file=sys.stderr)
        return 1
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
