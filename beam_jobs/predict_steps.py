"""The predict job's own Beam steps: thin shells over beam_jobs.ids, blocks, inference and
submission. Reading, time blocks and the rejects output are the steps both jobs share
(beam_jobs.reading).

    ResolveIds          every id once: each span's ids to an id file in bucket order, each bucket
                        resolved on its own from its runs of those files
    PredictRecordingFn  a recording's time blocks in time order: each sorted, the rows that lost
                        their id left out, fed with the W-1 rows before it to the model -> a piece
"""

import dataclasses
import logging
import threading
import time
from typing import Dict, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from beam_jobs import blocks, ids, inference, submission, windows
from beam_jobs.blocks import RecordingRows
from beam_jobs.csv_reader import IdRows
from beam_jobs.reading import NAMESPACE, REJECTS, TALLY, tally_sources

_LOG = logging.getLogger("crewstream.predict")
FALLBACK = "fallback"
ROWS_PREDICTED = "rows_predicted"
MODEL_MS = "model_ms"  # milliseconds in model calls (all workers' summed): the model phase alone


class SpillIdsFn(beam.DoFn):
    """IdRows -> the span's ids as one id file in bucket order (beam_jobs.ids); yields (bucket,
    blocks.FileRows) for each bucket its ids fall in."""

    def __init__(self, staging: str):
        self._staging = staging

    def process(self, rows: IdRows):
        if not len(rows):
            return
        records, buckets = ids.in_bucket_order(ids.id_records(rows.id, rows.source, rows.line, rejected=False))
        first = int(np.argmin(rows.line))
        path = ids.id_file_path(self._staging, int(rows.source[first]), int(rows.line[first]))
        blocks.write_npy(path, records)
        for bucket, start, stop in buckets:
            yield bucket, blocks.FileRows(path, start, stop)


def _reject_by_bucket(reject):
    return int(ids.bucket_of(np.array([reject.id]))[0]), reject


class ResolveIdsFn(beam.DoFn):
    """(bucket, {"files": [its blocks.FileRows of id files], "rejected": [Rejects with an id]}) -> the row keys
    (ids.row_keys) of usable rows that lost their id (main output, int64 array); a Reject for
    each (`rejects`), counted per file (`tally`); the records of rejected rows that keep their
    id (`fallback`: they get the uniform distribution)."""

    def __init__(self, files: Sequence[str]):
        self._files = list(files)

    def process(self, element):
        _, grouped = element
        parts = [ids.read_ids(*part) for part in sorted(grouped["files"])]
        parts.append(ids.rejected_records(list(grouped["rejected"]), self._files))
        fallback, duplicates, keeper = ids.one_row_per_id(np.concatenate(parts))
        for reject in ids.duplicate_rejects(duplicates, keeper, self._files):
            yield beam.pvalue.TaggedOutput(REJECTS, reject)
        lost = duplicates[duplicates["rejected"] == 0]
        yield from tally_sources("rows_rejected", lost["source"])
        if len(fallback):
            yield beam.pvalue.TaggedOutput(FALLBACK, fallback)
        if len(lost):
            yield ids.row_keys(lost["source"], lost["line"])


def _sorted_keys(arrays) -> np.ndarray:
    arrays = list(arrays)
    return np.sort(np.concatenate(arrays)) if arrays else np.zeros(0, np.int64)


class ResolveIds(beam.PTransform):
    """(IdRows, rejects) -> the row keys to leave out of every window, as ONE sorted int64 array
    (main output); `rejects` (duplicate ids), `tally`, `fallback` as ResolveIdsFn's."""

    def __init__(self, staging: str, files: Sequence[str]):
        super().__init__()
        self._staging, self._files = staging, list(files)

    def expand(self, inputs):
        rows, rejected = inputs
        id_files = rows | "SpillIds" >> beam.ParDo(SpillIdsFn(self._staging))
        readable = (
            rejected
            | "WithId" >> beam.Filter(lambda r: r.id is not None)
            | "ByBucket" >> beam.Map(_reject_by_bucket)
        )
        resolved = (
            {"files": id_files, "rejected": readable}
            | "GroupByBucket" >> beam.CoGroupByKey()
            | "Resolve" >> beam.ParDo(ResolveIdsFn(self._files)).with_outputs(REJECTS, TALLY, FALLBACK, main="lost")
        )
        excluded = resolved.lost | "AllLost" >> beam.CombineGlobally(_sorted_keys)
        return excluded, resolved


@dataclasses.dataclass(frozen=True)
class PredictParams:
    """What PredictRecordingFn needs: the model folder, its window and class count, the path (windows
    or sweep) and its batch sizes, where to write, how to report progress."""

    model_dir: str
    window: int
    num_classes: int
    path: str
    staging: str
    batch_size: int = inference.DEFAULT_BATCH_SIZE
    sweep_rows: int = inference.DEFAULT_SWEEP_ROWS
    concurrent: int = 1
    progress: str = "log"


class PredictRecordingFn(beam.DoFn):
    """(recording, [(time block, its blocks.FileRows)]) -> the model's probabilities for each of its
    rows, block after block in time order, each written as a submission piece (`id,A,B,C,D`
    lines); yields each piece's metadata {recording, block, path, rows, nonfinite}, and tallies the
    rows used per file (`tally`).

    A block's rows are sorted by (time, file, line) (equal times keep file order: every row
    needs its window); rows whose key is in `excluded` (sorted row keys: rows that lost their id)
    are left out as if the file did not have them. Each block is fed with the W-1 rows before it,
    the tail of the block before, kept in memory: a worker holds one time block (--block-rows rows)
    plus W-1 rows, whatever the recording's length. The model is loaded once per worker.
    `verdict` (GoOnFn's) says whether the run goes on and how many rows it predicts in all.
    """

    def __init__(self, params: PredictParams):
        self._p = params
        self._model = None
        self._progress = None
        self._rows = Metrics.counter(NAMESPACE, ROWS_PREDICTED)
        self._model_ms = Metrics.counter(NAMESPACE, MODEL_MS)

    def _loaded(self):
        """The model, asked for at the worker's first block (never when the run stops for its
        rejects): inference.load_model, which hands in-process workers the one model the launcher
        started loading (inference.preload)."""
        p = self._p
        if self._model is None:
            self._model = inference.load_model(p.model_dir, p.path)
        return self._model

    def process(self, element, excluded: np.ndarray, verdict: dict):
        if not verdict["go"]:
            return
        key, parts = element
        tail = None  # float32 [W - 1, F]: the padded rows before the next block
        for index, files in sorted(parts):
            rows = self._sorted_block(files, excluded)
            if not len(rows):
                continue
            yield from tally_sources("rows_used", rows.source)
            padded = windows.pad_front(rows.signals, rows.signals[:0] if tail is None else tail, self._p.window)
            tail = padded[len(padded) - (self._p.window - 1):].copy()  # not a view: the block can go
            yield self._predict(key, index, rows, padded, verdict["rows"])

    @staticmethod
    def _sorted_block(files, excluded: np.ndarray) -> RecordingRows:
        rows = RecordingRows.concat([blocks.read_spill(*part) for part in sorted(files)])
        if len(excluded):
            rows = rows.take(~np.isin(ids.row_keys(rows.source, rows.line), excluded))
        return rows.sorted_by_time()

    def _predict(self, key, index: int, rows: RecordingRows, padded: np.ndarray, total: int) -> dict:
        p = self._p
        crew, seat, experiment = key
        path = submission.piece_path(p.staging, f"crew{crew}-seat{seat}-{experiment}-b{index:05d}.csv")
        model = self._loaded()
        started = time.perf_counter()
        with submission.piece_writer(path) as write:  # each batch's rows written while the next runs
            _, nonfinite = inference.predict_padded(
                model, padded, p.window, p.num_classes, p.path, p.batch_size, p.sweep_rows, p.concurrent,
                on_rows=lambda start, part: write(rows.id[start:start + len(part)], part))
        self._model_ms.inc(int(round((time.perf_counter() - started) * 1000)))
        self._rows.inc(len(rows))
        self._progress_over(total).update(len(rows))
        return {"recording": list(key), "block": index, "path": path, "rows": len(rows), "nonfinite": nonfinite}

    def _progress_over(self, total: int):
        """This process's progress toward every usable row of the input (all a local run does),
        one display shared by the in-process workers."""
        if self._progress is None:
            self._progress = _SharedProgress.acquire((self._p.staging, total), self._p.progress)
        return self._progress

    def teardown(self):
        if self._progress is not None:
            self._progress.release()
            self._progress = None


class _SharedProgress:
    """One console.Progress per process and run for every PredictRecordingFn in it (Beam's
    in-process workers are threads, each with its own DoFn): updates add up under a lock, and the
    display closes when the last user releases it."""

    _lock = threading.Lock()
    _open: Dict[tuple, "_SharedProgress"] = {}

    def __init__(self, key: tuple, progress):
        self._key, self._progress, self._users = key, progress, 0

    @classmethod
    def acquire(cls, run: tuple, mode: str) -> "_SharedProgress":
        """The display of `run` (the run's staging folder, its rows in all), made by its first user."""
        from cli_common.console import Progress

        with cls._lock:
            key = (*run, mode)
            if key not in cls._open:
                cls._open[key] = cls(key, Progress("predict", run[1], "rows", mode, logger=_LOG))
            shared = cls._open[key]
            shared._users += 1
            return shared

    def update(self, rows: int) -> None:
        with self._lock:
            self._progress.update(rows)

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                self._progress.close()
                self._open.pop(self._key, None)


class GoOnFn(beam.CombineFn):
    """Tallies ((file index, field), rows) of reading and id checks -> {"go": False when more rows
    were rejected than `max_bad_fraction` of the rows read (beam_jobs.rejects.rejects_over),
    "rows": the rows left to predict}."""

    def __init__(self, max_bad_fraction: float):
        self._max = max_bad_fraction

    def create_accumulator(self):
        return 0, 0

    def add_input(self, accumulator, element):
        (_, field), count = element
        read, rejected = accumulator
        return read + (count if field == "rows_read" else 0), rejected + (count if field == "rows_rejected" else 0)

    def merge_accumulators(self, accumulators):
        reads, rejects_ = zip(*accumulators)
        return sum(reads), sum(rejects_)

    def extract_output(self, accumulator):
        from beam_jobs.rejects import rejects_over

        read, rejected = accumulator
        return {"go": not rejects_over(read, rejected, self._max), "rows": read - rejected}


def _by_recording(element):
    (key, index), files = element
    return key, (index, list(files))


class PredictRecordings(beam.PTransform):
    """((recording, time block), [blocks.FileRows]) (PlanBlocks' output) -> submission pieces' metadata
    (PredictRecordingFn, one recording per element), plus its `tally` output."""

    def __init__(self, params: PredictParams, excluded, verdict):
        super().__init__()
        self._params, self._excluded, self._verdict = params, excluded, verdict

    def expand(self, planned):
        return (
            planned
            | "KeyByRecording" >> beam.Map(_by_recording)
            | "GroupByRecording" >> beam.GroupByKey()
            | "Predict" >> beam.ParDo(PredictRecordingFn(self._params),
                                      excluded=beam.pvalue.AsSingleton(self._excluded),
                                      verdict=beam.pvalue.AsSingleton(self._verdict)).with_outputs(TALLY, main="pieces")
        )


def write_fallback_piece(fallbacks, staging: str, num_classes: int):
    """The uniform rows of rejected rows that keep their id, in file and line order, as one piece;
    yields its metadata (nothing when there are none)."""
    fallbacks = list(fallbacks)
    if not fallbacks:
        return
    records = np.concatenate(fallbacks)
    records = records[np.lexsort((records["line"], records["source"]))]
    path = submission.piece_path(staging, "rejected-rows.csv")
    submission.write_piece(path, records["id"], inference.uniform(len(records), num_classes))
    yield {"recording": None, "block": 0, "path": path, "rows": len(records), "nonfinite": 0}
