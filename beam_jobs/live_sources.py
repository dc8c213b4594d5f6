"""Where the live job's rows come from: deliveries of CSV lines (live_steps.Delivery).

- A folder that CSV files land in (`--input-folder`, a local run): files are read once each, in
  name order, as they appear; a file counts once it is there under a name ending in `.csv` (a
  recorder writes it under another name, `.part` or hidden, and renames it: a rename is atomic,
  so no file is read half-written). Each file has a header line (the test layout's columns) and
  is cut into spans of whole lines (csv_reader.iter_line_spans), each span one delivery.
  Beam's local runner has no unbounded file source (MatchContinuously and PeriodicImpulse are
  refused by the Python DirectRunner in streaming mode, and Beam's Prism runner is a download), so
  the folder is served to the job as a TestStream event stream, through Beam's own
  TestStreamService (`FolderEvents`): the job's watermark stays at the start until the folder is
  done (`--stop-after-idle`), then jumps to the end, which flushes every recording.
- Beam's TestStream in tests (`replay_events`): a file's spans as deliveries, in order or not.
- A Pub/Sub subscription on Dataflow (`--input-subscription`): each message is a delivery of CSV
  lines in the test layout's column order, no header (live.py wires it).
"""

import logging
import os
import threading
import time
from typing import Iterable, Iterator, List, Optional

from beam_jobs import csv_reader
from beam_jobs.live_steps import Delivery

_LOG = logging.getLogger("crewstream.live")
POLL_SECONDS = 0.1
# The most bytes of lines in one delivery from the folder: each travels as one gRPC message to
# the runner, and gRPC refuses a message over 4 MiB (the stream then breaks off).
FOLDER_SPAN_BYTES = 3 << 20


def is_landed(name: str) -> bool:
    """A file of the folder to read: a visible `.csv` name (not one being written)."""
    return name.endswith(".csv") and not name.startswith(".")


def file_deliveries(path: str, name: str, source: int, span_bytes: int = csv_reader.DEFAULT_SPAN_BYTES
                    ) -> Iterator[Delivery]:
    """The deliveries of one landed file: its lines in spans, each with the file's header. A file
    with no header line gives nothing; one whose header lacks columns is still delivered (its
    lines are then rejected with the header's problem, live_steps.parse_delivery)."""
    with open(path, "rb") as f:
        first = f.readline()
        if not first.strip():
            return
        header = tuple(c.strip() for c in first.decode("utf-8", "replace").rstrip("\r\n").split(","))
        for first_line, span, _ in csv_reader.iter_line_spans(f, span_bytes, first_line=2):
            yield Delivery(name, source, first_line, header, span)


class FolderEvents:
    """The reader behind Beam's TestStreamServiceController for a folder: `read_multiple` yields
    TestStream events (an element per delivery, stamped with the wall clock when it is read; while
    the folder is quiet, every POLL_SECONDS, the watermark moved to the wall clock: the arrival
    time no later delivery can be stamped before, which also keeps the runner's 30 s timeout
    away) until `stop()` is called or no file has landed for `stop_after_idle` seconds; then the
    watermark goes to the end, which ends the job after the last rows are flushed."""

    def __init__(self, folder: str, stop_after_idle: Optional[float] = None,
                 span_bytes: int = FOLDER_SPAN_BYTES):
        self._folder = folder
        self._stop_after_idle = stop_after_idle
        self._span_bytes = min(span_bytes, FOLDER_SPAN_BYTES)
        self._stopped = threading.Event()
        self.files_read: List[str] = []
        self.ended = False  # the stream's end was sent: the job ended because its input did

    def stop(self) -> None:
        self._stopped.set()

    def new_files(self) -> List[str]:
        seen = set(self.files_read)
        try:
            names = os.listdir(self._folder)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if is_landed(n) and n not in seen)

    def deliveries(self) -> Iterator[Optional[Delivery]]:
        """Deliveries as files land; None when a poll found nothing (a heartbeat)."""
        quiet_since = time.monotonic()
        while not self._stopped.is_set():
            names = self.new_files()
            for name in names:
                source = len(self.files_read)
                self.files_read.append(name)
                _LOG.debug("reading %s", name)
                path = os.path.join(self._folder, name)
                try:
                    yield from file_deliveries(path, path, source, self._span_bytes)
                except OSError as e:  # gone, a folder, unreadable: the run goes on without it
                    _LOG.warning("%s: not read: %s", path, e.strerror or e)
            if names:
                quiet_since = time.monotonic()
                continue
            if self._stop_after_idle is not None and time.monotonic() - quiet_since >= self._stop_after_idle:
                return
            self._stopped.wait(POLL_SECONDS)
            yield None

    def read_multiple(self, labels) -> Iterator:
        from apache_beam.coders import PickleCoder
        from apache_beam.portability.api import beam_runner_api_pb2 as api
        from apache_beam.utils.timestamp import MAX_TIMESTAMP

        event, coder = api.TestStreamPayload.Event, PickleCoder()
        watermark = 0
        for delivery in self.deliveries():
            now = int(time.time() * 1e6)
            if delivery is None:  # a heartbeat: the watermark follows the wall clock, up to now
                if now > watermark:
                    watermark = now
                    yield event(watermark_event=event.AdvanceWatermark(new_watermark=now))
                continue
            if now - watermark >= POLL_SECONDS * 1e6:  # busy: the watermark still follows the clock
                watermark = now
                yield event(watermark_event=event.AdvanceWatermark(new_watermark=now))
            element = api.TestStreamPayload.TimestampedElement(encoded_element=coder.encode(delivery),
                                                                timestamp=max(now, watermark))
            yield event(element_event=event.AddElements(elements=[element]))
        self.ended = True
        yield event(watermark_event=event.AdvanceWatermark(new_watermark=MAX_TIMESTAMP.micros))


def replay_events(deliveries: Iterable[Delivery]):
    """A TestStream of `deliveries` (in the order given) ending at the end of time: what tests
    replay a file with."""
    from apache_beam.coders import PickleCoder
    from apache_beam.testing.test_stream import TestStream

    stream = TestStream(coder=PickleCoder())
    for delivery in deliveries:
        stream = stream.add_elements([delivery])
    return stream.advance_watermark_to_infinity()


def recorded_deliveries(path: str, seconds: float = 1.0, delay: float = 0.0, seed: int = 0) -> List[Delivery]:
    """A test CSV replayed as recorders would deliver it (tests, benchmarks): every recording's
    rows in time order, all recordings side by side, cut into deliveries of `seconds` of time;
    with `delay`, each row arrives at a random moment up to `delay` seconds after its time
    (uniform; in arrival order), so rows come out of order but within the bound. Each line keeps
    its line number in `path` (Delivery.lines): rejects and the order of equal times are the batch
    job's. A line whose time does not read goes with the line before it."""
    import numpy as np

    with open(path, "rb") as f:
        header = tuple(c.strip() for c in f.readline().decode().rstrip("\r\n").split(","))
        lines = f.read().split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    at = header.index("time")
    times = np.full(len(lines), np.nan)
    for i, line in enumerate(lines):
        try:
            times[i] = float(line.split(b",")[at])
        except (IndexError, ValueError):
            pass
    valid = np.isfinite(times)
    times = np.where(valid, times, np.nan)
    filled = np.maximum.accumulate(np.where(valid, np.arange(len(times)), 0))
    times = np.nan_to_num(times[filled], nan=0.0)
    arrival = times + (np.random.default_rng(seed).uniform(0, delay, len(times)) if delay else 0.0)
    order = np.lexsort((np.arange(len(times)), arrival))
    bins = np.floor(arrival[order] / seconds).astype(np.int64)
    cuts = np.flatnonzero(np.diff(bins)) + 1
    out = []
    for part in np.split(order, cuts):
        if len(part):
            out.append(Delivery(path, 0, int(part[0]) + 2, header,
                                b"\n".join(lines[i] for i in part) + b"\n", (part + 2).astype(np.int64)))
    return out


def spans_of(path: str, name: str, span_bytes: int, source: int = 0) -> List[Delivery]:
    """A whole CSV file's deliveries (tests, benchmarks)."""
    return list(file_deliveries(path, name, source, span_bytes))
