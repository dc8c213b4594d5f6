"""The Beam steps both jobs share (docs/DESIGN.md, "The preprocess job, step by step"): reading
crew CSVs in spans of whole lines, accounting for every row, spilling each recording's rows to
spill files, planning its time blocks, writing rejected rows and the run's manifest. Thin shells
over csv_reader, blocks and rejects.

Elements are batches (`Rows` of up to a span of CSV), never one Python object per CSV row.
"""

import collections
import contextlib
import dataclasses
import logging
from typing import BinaryIO, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_jobs import blocks, csv_reader, rejects
from beam_jobs.csv_reader import Rows
from tfrecords_schema import file_io

_LOG = logging.getLogger(__name__)

NAMESPACE = "crewstream"

REJECTS = "rejects"


# The `tally` outputs: ((file index, field), rows) with field one of TALLY_FIELDS. Summed per
# file they give stats.json's `inputs`, where rows read = rows used + rows rejected.
TALLY = "tally"


TALLY_FIELDS = ("rows_read", "rows_used", "rows_rejected")


# SortBlocks' outputs: per recording rows per time bin; kept TRAIN-crew signals for the analyzers.
HISTOGRAM = "histogram"


ROWS_PER_KEY = "rows_per_key"  # distribution: rows one key (a time block) holds at once


@dataclasses.dataclass(frozen=True)
class ByteRange:
    """Lines of file `index` (in the job's sorted list) that start in bytes [start, end);
    `end` None: to the end (compressed files are read whole). `number` orders a file's ranges."""

    index: int
    path: str
    number: int
    start: int
    end: Optional[int]


class PlanRangesFn(beam.DoFn):
    """(file index, path) -> the ByteRanges that tile it (uncompressed files are split)."""

    def __init__(self, split_bytes: int):
        self._split_bytes = split_bytes

    def process(self, element: Tuple[int, str]):
        index, path = element
        splittable = not csv_reader.is_compressed(path)
        # the file's own metadata: `path` names a file, never a glob (`data/[1].csv` is that file)
        size = FileSystems.get_filesystem(path).metadata(path).size_in_bytes if splittable else None
        for number, (start, end) in enumerate(csv_reader.plan_ranges(size, self._split_bytes)):
            yield ByteRange(index, path, number, start, end)


@contextlib.contextmanager
def open_csv(path: str) -> Iterator[BinaryIO]:
    """An input CSV's bytes, decompressed (.gz, .bz2) by csv_reader rather than by Beam, whose
    reader returns a truncated gzip's rows without an error."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        with csv_reader.decompressed(raw, path) as f:
            yield f


def check_file(path: str, features: Sequence[str], with_id: bool = False) -> List[str]:
    """csv_reader.check_file on an input (local or URL): a usable header for a train file (a
    test file with `with_id`), at least one data line, and a compressed file read through to its
    end (a truncated gzip is only noticed there). Returns the columns it does not read
    (ignored); CsvFileError otherwise."""
    with open_csv(path) as f:
        return csv_reader.check_file(f, path, features, labelled=not with_id, with_id=with_id,
                                     read_through=csv_reader.is_compressed(path))


def _tally(index: int, field: str, count: int):
    return beam.pvalue.TaggedOutput(TALLY, ((int(index), field), int(count)))


def tally_sources(field: str, sources: np.ndarray):
    """One TALLY output per file among `sources` (the file index of each row)."""
    for index, count in zip(*np.unique(sources, return_counts=True)):
        yield _tally(index, field, count)


class CountNewlinesFn(beam.DoFn):
    """ByteRange -> ((file index, range number), newlines in the range): line numbers for the
    ranges after it. Cheap next to parsing (a byte count, no decoding)."""

    def process(self, byte_range: ByteRange):
        if byte_range.end is None:
            return
        with open_csv(byte_range.path) as f:
            count = csv_reader.count_newlines(f, byte_range.start, byte_range.end)
        yield (byte_range.index, byte_range.number), count


class ReadCsvSpansFn(beam.DoFn):
    """ByteRange -> `Rows` per span; `Reject`s to the `rejects` output; rows read and rejected
    to the `tally` output. `newline_counts` maps (file index, range number) to the newlines in
    that range. `with_id`: a test file (an `id` column, no `event`): `IdRows`."""

    def __init__(self, features: Sequence[str], span_bytes: int, with_id: bool = False):
        self._features = list(features)
        self._span_bytes = span_bytes
        self._with_id = with_id
        self._rows_read = Metrics.counter(NAMESPACE, "rows_read")
        self._rows_rejected = Metrics.counter(NAMESPACE, "rows_rejected")

    def process(self, byte_range: ByteRange, newline_counts: Dict[Tuple[int, int], int]):
        before = sum(newline_counts.get((byte_range.index, k), 0) for k in range(byte_range.number))
        done = rejected = 0
        with open_csv(byte_range.path) as f:
            for rows, bad in csv_reader.read_file_spans(
                    f, byte_range.path, self._features, self._span_bytes, labelled=not self._with_id,
                    byte_range=(byte_range.start, byte_range.end), newlines_before=before,
                    with_id=self._with_id):
                rows.source[:] = byte_range.index
                done += len(rows) + len(bad)
                rejected += len(bad)
                self._rows_read.inc(len(rows) + len(bad))
                self._rows_rejected.inc(len(bad))
                for reject in bad:
                    yield beam.pvalue.TaggedOutput(REJECTS, reject)
                if len(rows):
                    yield rows
        yield _tally(byte_range.index, "rows_read", done)
        yield _tally(byte_range.index, "rows_rejected", rejected)
        where = "" if byte_range.end is None else f" bytes {byte_range.start:,}-{byte_range.end:,}"
        _LOG.info("%s%s: %s rows read, %s rejected", byte_range.path, where, f"{done:,}", f"{rejected:,}")


class ReadCrewCsv(beam.PTransform):
    """Read crew CSVs (paths, `.csv`, `.csv.gz` or `.csv.bz2`) into `Rows` batches plus a
    `rejects` output and a `tally` output (rows read and rejected per file).

    Uncompressed files are split into byte ranges of `split_bytes` read in parallel; a line
    belongs to the range its first byte is in, and line numbers stay the file's own.
    `with_id`: a test file (predict): `IdRows` batches, rejects carrying their id.
    """

    def __init__(self, files: Sequence[str], features: Sequence[str],
                 span_bytes: int = csv_reader.DEFAULT_SPAN_BYTES,
                 split_bytes: int = csv_reader.DEFAULT_SPLIT_BYTES, with_id: bool = False):
        super().__init__()
        self._files = list(files)
        self._features = list(features)
        self._span_bytes = span_bytes
        self._split_bytes = split_bytes
        self._with_id = with_id

    def expand(self, pbegin):
        ranges = (
            pbegin
            | "ListFiles" >> beam.Create(list(enumerate(self._files)))
            | "PlanRanges" >> beam.ParDo(PlanRangesFn(self._split_bytes))
            | "SpreadRanges" >> beam.Reshuffle()
        )
        counts = ranges | "CountNewlines" >> beam.ParDo(CountNewlinesFn())
        return ranges | "ParseSpans" >> beam.ParDo(
            ReadCsvSpansFn(self._features, self._span_bytes, self._with_id), newline_counts=beam.pvalue.AsDict(counts)
        ).with_outputs(REJECTS, TALLY, main="rows")


class SpillByRecordingFn(beam.DoFn):
    """Rows -> (recording, (spill file path, its bins, its rows per bin)) for each recording in
    the batch, written as one spill file in time-bin order (blocks.split_by_recording); the same
    histogram, (recording, (bins, rows)), goes to the `histogram` output."""

    def __init__(self, staging: str, bin_seconds: float = blocks.BIN_SECONDS):
        self._staging = staging
        self._bin_seconds = bin_seconds

    def process(self, rows: Rows):
        for key, block in blocks.split_by_recording(rows, self._bin_seconds):
            path = blocks.spill_path(self._staging, key, block)
            blocks.write_spill(path, block)
            bins, counts = blocks.time_histogram(block.time, self._bin_seconds)
            yield beam.pvalue.TaggedOutput(HISTOGRAM, (key, (bins, counts)))
            yield key, (path, bins, counts)


class MergeHistogramsFn(beam.CombineFn):
    """(bins, rows) histograms of one recording -> their sum."""

    def create_accumulator(self):
        return blocks.merge_histograms([])

    def add_input(self, accumulator, histogram):
        return blocks.merge_histograms([accumulator, histogram])

    def merge_accumulators(self, accumulators):
        return blocks.merge_histograms(accumulators)

    def extract_output(self, accumulator):
        return accumulator


def plan_recording(element, block_rows: int, bin_seconds: float):
    """(recording, its histogram) -> (recording, first bin of each block after the first)."""
    key, (bins, counts) = element
    return key, blocks.plan_blocks(bins, counts, block_rows, bin_seconds)


class AssignBlocksFn(beam.DoFn):
    """(recording, (block file, its bins, its rows per bin)) -> ((recording, time block),
    blocks.FileRows) for each time block the file has rows in: the run of the file's rows (they
    are in bin order) that the block reads. Nothing is read or written. `plans`: {recording:
    first bins}."""

    def process(self, element, plans):
        key, (path, bins, counts) = element
        for index, start, stop in blocks.block_slices(bins, counts, plans[key]):
            yield (key, index), blocks.FileRows(path, start, stop)


class PlanBlocks(beam.PTransform):
    """Raw `Rows` -> ((recording, time block), [blocks.FileRows]): each recording cut into time
    blocks of at most `block_rows` raw rows, whose rows wait in spill files under `staging`, each
    time block's rows one run of each file it has rows in (both jobs then sort each block on its
    own: SortBlockFn for preprocess, predict's own for predict).

    Block edges are time-bin edges chosen from each recording's rows per time bin (a first pass
    over the spilled rows' histograms), so no recording is ever gathered in one place. Rows
    travel through spill files (beam_jobs.blocks), written once: only paths, row ranges and
    histograms are shuffled.
    """

    def __init__(self, staging: str, block_rows: int, bin_seconds: float = blocks.BIN_SECONDS):
        super().__init__()
        self._staging, self._block_rows, self._bin_seconds = staging, block_rows, bin_seconds

    def expand(self, rows):
        spilled = rows | "SpillByRecording" >> beam.ParDo(
            SpillByRecordingFn(self._staging, self._bin_seconds)).with_outputs(HISTOGRAM, main="files")
        plans = (
            spilled[HISTOGRAM]
            | "SumHistograms" >> beam.CombinePerKey(MergeHistogramsFn())
            | "PlanRecording" >> beam.Map(plan_recording, self._block_rows, self._bin_seconds)
        )
        return (
            spilled.files
            | "AssignBlocks" >> beam.ParDo(AssignBlocksFn(), plans=beam.pvalue.AsDict(plans))
            | "GroupByBlock" >> beam.GroupByKey()
        )


class WriteRejects(beam.PTransform):
    """Dead-letter rows -> the rejects file at `path` (beam_jobs.rejects: one format for both
    jobs), sorted; yields the count."""

    def __init__(self, path: str):
        super().__init__()
        self._path = path

    def expand(self, rejected):
        return (
            rejected
            | "AllRejects" >> beam.combiners.ToList()
            | "WriteRejectsCsv" >> beam.Map(rejects.write_rejects, self._path)
        )


def input_accounting(files: Sequence[str], tallies: Iterable[Tuple[Tuple[int, str], int]]) -> List[Dict]:
    """stats.json's `inputs`: for every file (in the job's order) its rows read, used, rejected."""
    totals = collections.Counter()
    for key, count in tallies:
        totals[key] += count
    return [{"file": path, **{field: totals[(index, field)] for field in TALLY_FIELDS}}
            for index, path in enumerate(files)]


MANIFEST = "manifest.json"


class SumTallies(beam.PTransform):
    """Tally PCollections (((file index, field), rows), see TALLY) -> their sum per key."""

    def expand(self, tallies):
        return tallies | "AllTallies" >> beam.Flatten() | "Sum" >> beam.CombinePerKey(sum)


def write_manifest_last(pipeline, staging: str, make, **side_inputs) -> None:
    """Write STAGING/manifest.json, everything the launcher needs after the run, once every side
    input is complete: `make(**side_inputs)` (their values) -> a JSON-able dict."""
    _ = (
        pipeline
        | "ManifestTrigger" >> beam.Create([file_io.join(staging, MANIFEST)])
        | "WriteManifest" >> beam.Map(lambda path, **values: _write_json(path, make(**values)), **side_inputs)
    )


def _write_json(path: str, content: Dict) -> str:
    import json

    file_io.write_bytes(path, json.dumps(content).encode())
    return path


def read_manifest(staging: str) -> Dict:
    import json

    return json.loads(file_io.read_bytes(file_io.join(staging, MANIFEST)))
