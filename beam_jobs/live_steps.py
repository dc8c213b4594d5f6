"""The live job's steps (beam_jobs/live.py wires them): thin Beam shells over csv_reader (parsing),
live_state (per-recording state, when a row is final) and inference (the model).

    Delivery (some CSV lines that arrived together)
      -> ParseDeliveryFn: rows per recording; rejects; the uniform rows of rejected rows with an id
      -> FollowRecordingFn (stateful, keyed by recording): admit, take the final rows, predict
      -> Predicted rows -> live output lines (`format_lines`) -> a sink
"""

import collections
import dataclasses
import itertools
import logging
import time
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.window import GlobalWindow

from beam_jobs import blocks, csv_reader, inference, live_state, submission
from beam_jobs.blocks import RecordingRows
from beam_jobs.csv_reader import Reject
from tfrecords_schema import live as live_output

NAMESPACE = "crewstream_live"
REJECTS = "rejects"
UNIFORM = "uniform"  # the uniform rows of rejected rows that keep their id


class Delivery(NamedTuple):
    """CSV lines that arrived together: `data` whole lines (no header) of the file or stream
    `name`, the `source`-th one the job has seen (rows of equal time keep (source, line) order),
    its first line being line `first_line` of `name`; `header`: the column names of the lines.
    `lines` (a replay): int64 [lines], the line of `name` each line is, when they are not one run."""

    name: str
    source: int
    first_line: int
    header: Tuple[str, ...]
    data: bytes
    lines: Optional[np.ndarray] = None


class Predicted(NamedTuple):
    """Rows given their probabilities: ids int64 [n], probabilities float32 [n, K], where they
    belong (recording key, None for a rejected row's uniform row) and their times float64 [n]."""

    recording: Optional[blocks.RecordingKey]
    ids: np.ndarray
    probabilities: np.ndarray
    time: np.ndarray


@dataclasses.dataclass(frozen=True)
class LiveParams:
    """What the steps need: the model folder, its window, class count, features and path (windows
    or sweep), the delay bound in seconds, how long a recording may send nothing before its
    waiting rows are predicted (None: until the input ends)."""

    model_dir: str
    window: int
    num_classes: int
    features: Tuple[str, ...]
    path: str
    max_delay: float
    quiet_seconds: Optional[float] = None
    batch_size: int = inference.DEFAULT_BATCH_SIZE
    sweep_rows: int = inference.DEFAULT_SWEEP_ROWS


def parse_delivery(delivery: Delivery, features: Sequence[str]
                   ) -> Tuple[List[Tuple[blocks.RecordingKey, RecordingRows]], List[Reject]]:
    """(rows per recording, rejects) of a delivery, read exactly as the batch job reads a span
    (csv_reader.parse_span: the same checks, file, line, column and reason)."""
    if not delivery.data:
        return [], []
    try:
        csv_reader.check_header(delivery.header, features, delivery.name, labelled=False, with_id=True)
    except csv_reader.CsvFileError as e:  # every line refused for the header's problem
        lines = delivery.data.splitlines()
        at = delivery.lines if delivery.lines is not None else delivery.first_line + np.arange(len(lines))
        return [], [Reject(delivery.name, int(at[i]), "", str(e), line.decode("utf-8", "replace")[:1000])
                    for i, line in enumerate(lines)]
    rows, rejects = csv_reader.parse_span(delivery.data, delivery.header, features, delivery.name,
                                          delivery.first_line, labelled=False, with_id=True)
    rows.source[:] = delivery.source
    if delivery.lines is not None:
        at = delivery.lines
        rows.line = at[rows.line - delivery.first_line]
        rejects = [dataclasses.replace(r, line=int(at[r.line - delivery.first_line])) for r in rejects]
    return list(blocks.split_by_recording(rows)), rejects


class ParseDeliveryFn(beam.DoFn):
    """Delivery -> (recording, (file name, RecordingRows)); rejects to REJECTS; a rejected row
    whose id reads gets the uniform row (Predicted with no recording), as in the batch job."""

    def __init__(self, params: LiveParams):
        self._p = params
        self._rows = Metrics.counter(NAMESPACE, "rows_read")
        self._rejected = Metrics.counter(NAMESPACE, "rows_rejected")
        self._uniform = Metrics.counter(NAMESPACE, "rows_uniform")

    def process(self, delivery: Delivery):
        per_recording, rejects = parse_delivery(delivery, self._p.features)
        for key, rows in per_recording:
            self._rows.inc(len(rows))
            yield key, (delivery.name, rows)
        if not rejects:
            return
        self._rejected.inc(len(rejects))
        for r in rejects:
            yield beam.pvalue.TaggedOutput(REJECTS, r)
        with_id = np.array([r.id for r in rejects if r.id is not None], np.int64)
        if len(with_id):
            self._uniform.inc(len(with_id))
            yield beam.pvalue.TaggedOutput(UNIFORM, Predicted(
                None, with_id, inference.uniform(len(with_id), self._p.num_classes), np.full(len(with_id), np.nan)))


class FollowRecordingFn(beam.DoFn):
    """Keyed by recording: (key, (file name, RecordingRows)) -> Predicted rows as they become final
    (beam_jobs/live_state.py says when), late rows to REJECTS.

    Deliveries carry the moment they arrived as their timestamp (the folder source: the wall
    clock; Pub/Sub: the publish time), and the input's watermark follows arrival time. When the
    watermark passes a recording's last delivery plus `quiet_seconds` (it has sent nothing for that
    long: the flight ended or its recorder stopped), or the input ends (the watermark reaches the
    end of the global window), every pending row of it is final."""

    STATE = userstate.ReadModifyWriteStateSpec("recording", PickleCoder())
    QUIET = userstate.TimerSpec("quiet", TimeDomain.WATERMARK)

    def __init__(self, params: LiveParams):
        self._p = params
        self._model = None
        self._late = Metrics.counter(NAMESPACE, "rows_late")
        self._predicted = Metrics.counter(NAMESPACE, "rows_predicted")

    def _loaded(self):
        if self._model is None:
            self._model = inference.load_model(self._p.model_dir, self._p.path)
        return self._model

    def process(self, element, state=beam.DoFn.StateParam(STATE), quiet=beam.DoFn.TimerParam(QUIET),
                arrived=beam.DoFn.TimestampParam):
        key, (name, rows) = element
        recording = state.read() or live_state.RecordingState()
        end = GlobalWindow().max_timestamp()
        quiet.set(end if self._p.quiet_seconds is None else min(end, arrived + self._p.quiet_seconds))
        late, codes = live_state.admit(recording, rows, self._p.max_delay)
        if len(late):  # rejected, and given the uniform row, as the batch job's rejected rows
            self._late.inc(len(late))
            for i in range(len(late)):
                yield beam.pvalue.TaggedOutput(REJECTS, Reject(
                    name, int(late.line[i]), "time", live_state.late_reason(int(codes[i]), self._p.max_delay),
                    "", int(late.id[i])))
            yield Predicted(None, late.id, inference.uniform(len(late), self._p.num_classes),
                            np.full(len(late), np.nan))
        yield from self._final(key, recording, flush=False)
        state.write(recording)

    @userstate.on_timer(QUIET)
    def went_quiet(self, key=beam.DoFn.KeyParam, state=beam.DoFn.StateParam(STATE)):
        """No delivery for `quiet_seconds`, or the input ended: every pending row is final. The
        state stays (its context and last row): a later delivery goes on from there."""
        recording = state.read()
        if recording is not None and recording.pending is not None:
            yield from self._final(key, recording, flush=True)
            state.write(recording)

    def _final(self, key, recording: live_state.RecordingState, flush: bool):
        p = self._p
        rows, padded = live_state.take_final(recording, p.window, p.max_delay, flush)
        if rows is None:
            return
        probabilities, _ = inference.predict_padded(self._loaded(), padded, p.window, p.num_classes, p.path,
                                                    p.batch_size, p.sweep_rows)
        self._predicted.inc(len(rows))
        yield Predicted(tuple(key), rows.id, probabilities, rows.time)


def format_lines(predicted: Sequence[Predicted]) -> bytes:
    """Headerless live output lines (tfrecords_schema/live.py's COLUMNS), each column cast to text
    by pyarrow (probabilities as the batch submission writes them: shortest float32 text)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    predicted = [p for p in predicted if len(p.ids)]
    if not predicted:
        return b""
    n = [len(p.ids) for p in predicted]
    ids = np.concatenate([p.ids for p in predicted])
    probabilities = np.concatenate([p.probabilities for p in predicted])
    times = np.concatenate([p.time for p in predicted])

    def text(values, mask=None):
        return pc.fill_null(pc.cast(pa.array(values, mask=mask), pa.string()), "")

    def keys(i):
        return np.repeat([("" if p.recording is None else str(p.recording[i])) for p in predicted], n)

    cells = [text(np.asarray(ids, np.int64))]
    cells += [text(np.asarray(probabilities[:, k], np.float32)) for k in range(probabilities.shape[1])]
    cells += [pa.array(keys(i).astype(object), pa.string()) for i in range(3)]
    cells.append(text(times, mask=np.isnan(times)))
    return submission.joined_lines(cells)


# What this process's WriteTicksFn wrote, by output folder: {"rows", "rejects", "files"} (a
# local run's summary; Beam's streaming DirectRunner does not report committed metrics).
WRITTEN: Dict[str, Dict[str, int]] = collections.defaultdict(lambda: {"rows": 0, "rejects": 0, "files": 0})
_TICKS = itertools.count()
STATUS_SECONDS = 10.0  # between a running job's status lines
_LOG = logging.getLogger("crewstream.live")  # this process's ticks: no two files of a run share a name


class WriteTicksFn(beam.DoFn):
    """Predicted rows and rejects -> one live output file per bundle (about one tick of the job's
    work) in `folder`, written under a hidden name and renamed into place
    (tfrecords_schema/live.py). Yields nothing."""

    def __init__(self, folder: str):
        self._folder = folder

    def start_bundle(self):
        self._predicted, self._rejects = [], []
        self._started = time.time()

    def process(self, element):
        (self._rejects if isinstance(element, Reject) else self._predicted).append(element)

    def finish_bundle(self):
        from beam_jobs import rejects as rejects_csv
        from tfrecords_schema import file_io

        tick_ms, tick = int(self._started * 1000), next(_TICKS)  # the runner may make a DoFn per bundle
        written = WRITTEN[self._folder]
        written["rows"] += sum(len(p.ids) for p in self._predicted)
        written["rejects"] += len(self._rejects)
        for is_rejects, body in ((False, format_lines(self._predicted)),
                                 (True, "".join(rejects_csv.format_reject(r) + "\n"
                                                for r in self._rejects).encode())):
            if not body:
                continue
            header = ",".join(rejects_csv.HEADER if is_rejects else live_output.COLUMNS) + "\n"
            name = live_output.part_name(tick_ms, tick % 1_000_000, rejects=is_rejects)
            hidden = file_io.join(self._folder, "." + name)
            with file_io.open_file(hidden, "wb") as f:
                f.write(header.encode() + body)
            file_io.replace(hidden, file_io.join(self._folder, name))
            written["files"] += 1
        now = time.monotonic()
        if now - written.setdefault("reported", now) >= STATUS_SECONDS:  # a running job's status line
            written["reported"] = now
            _LOG.info("%s: %s rows written, %s rejected, in %s files", self._folder, f"{written['rows']:,}",
                      f"{written['rejects']:,}", f"{written['files']:,}")
