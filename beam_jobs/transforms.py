"""The Beam building blocks of the preprocess job: thin shells over the plain modules.

Elements are batches (`Rows` of up to a chunk of CSV, Arrow record batches for tf.Transform),
never one Python object per CSV row.
"""

import dataclasses
import logging
import posixpath
from typing import Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_jobs import blocks, csv_reader, shards, windows
from beam_jobs.blocks import Block
from beam_jobs.csv_reader import Reject, Rows
from tfrecords_schema import encode_windows, layout

_LOG = logging.getLogger(__name__)
NAMESPACE = "crewstream"
REJECTS = "rejects"
GROUPS = "groups"
ENCODE_CHUNK = 512  # windows encoded at once: bounds the copy a large group needs


def split_of(crew: int, eval_crews: FrozenSet[int]) -> str:
    return layout.EVAL if crew in eval_crews else layout.TRAIN


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
        splittable = CompressionTypes.detect_compression_type(path) == CompressionTypes.UNCOMPRESSED
        size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes if splittable else None
        for number, (start, end) in enumerate(csv_reader.plan_ranges(size, self._split_bytes)):
            yield ByteRange(index, path, number, start, end)


def _open(byte_range: ByteRange):
    if byte_range.end is None:
        return FileSystems.open(byte_range.path)  # compression from the extension (.gz)
    return FileSystems.open(byte_range.path, compression_type=CompressionTypes.UNCOMPRESSED)


class CountNewlinesFn(beam.DoFn):
    """ByteRange -> ((file index, range number), newlines in the range): line numbers for the
    ranges after it. Cheap next to parsing (a byte count, no decoding)."""

    def process(self, byte_range: ByteRange):
        if byte_range.end is None:
            return
        with _open(byte_range) as f:
            count = csv_reader.count_newlines(f, byte_range.start, byte_range.end)
        yield (byte_range.index, byte_range.number), count


class ReadCsvChunksFn(beam.DoFn):
    """ByteRange -> `Rows` per chunk; `Reject`s to the `rejects` output. `newline_counts` maps
    (file index, range number) to the newlines in that range."""

    def __init__(self, features: Sequence[str], chunk_bytes: int):
        self._features = list(features)
        self._chunk_bytes = chunk_bytes
        self._rows_read = Metrics.counter(NAMESPACE, "rows_read")
        self._rows_rejected = Metrics.counter(NAMESPACE, "rows_rejected")

    def process(self, byte_range: ByteRange, newline_counts: Dict[Tuple[int, int], int]):
        before = sum(newline_counts.get((byte_range.index, k), 0) for k in range(byte_range.number))
        done = rejected = 0
        with _open(byte_range) as f:
            for rows, rejects in csv_reader.read_file_chunks(
                    f, byte_range.path, self._features, self._chunk_bytes,
                    byte_range=(byte_range.start, byte_range.end), newlines_before=before):
                rows.source[:] = byte_range.index
                done += len(rows) + len(rejects)
                rejected += len(rejects)
                self._rows_read.inc(len(rows) + len(rejects))
                self._rows_rejected.inc(len(rejects))
                for reject in rejects:
                    yield beam.pvalue.TaggedOutput(REJECTS, reject)
                if len(rows):
                    yield rows
        where = "" if byte_range.end is None else f" bytes {byte_range.start:,}-{byte_range.end:,}"
        _LOG.info("%s%s: %s rows read, %s rejected", byte_range.path, where, f"{done:,}", f"{rejected:,}")


class ReadCrewCsv(beam.PTransform):
    """Read crew CSVs (paths, `.csv` or `.csv.gz`) into `Rows` batches plus a `rejects` output.

    Uncompressed files are split into byte ranges of `split_bytes` read in parallel; a line
    belongs to the range its first byte is in, and line numbers stay the file's own.
    """

    def __init__(self, files: Sequence[str], features: Sequence[str],
                 chunk_bytes: int = csv_reader.DEFAULT_CHUNK_BYTES,
                 split_bytes: int = csv_reader.DEFAULT_SPLIT_BYTES):
        super().__init__()
        self._files = list(files)
        self._features = list(features)
        self._chunk_bytes = chunk_bytes
        self._split_bytes = split_bytes

    def expand(self, pbegin):
        ranges = (
            pbegin
            | "ListFiles" >> beam.Create(list(enumerate(self._files)))
            | "PlanRanges" >> beam.ParDo(PlanRangesFn(self._split_bytes))
            | "SpreadRanges" >> beam.Reshuffle()
        )
        counts = ranges | "CountNewlines" >> beam.ParDo(CountNewlinesFn())
        return ranges | "ParseChunks" >> beam.ParDo(
            ReadCsvChunksFn(self._features, self._chunk_bytes), newline_counts=beam.pvalue.AsDict(counts)
        ).with_outputs(REJECTS, main="rows")


class SelectSplitFn(beam.DoFn):
    """Keep the rows of one split (crews in `eval_crews` are eval, the rest train)."""

    def __init__(self, split: str, eval_crews: Iterable[int]):
        self._split = split
        self._eval = frozenset(eval_crews)

    def process(self, rows: Rows):
        in_eval = np.isin(rows.crew, list(self._eval))
        keep = in_eval if self._split == layout.EVAL else ~in_eval
        if keep.any():
            yield rows.take(keep)


class SpillByRecordingFn(beam.DoFn):
    """Rows -> ((crew, seat, experiment), block file path) for each recording in the batch."""

    def __init__(self, staging: str):
        self._staging = staging

    def process(self, rows: Rows):
        for key, block in blocks.split_by_recording(rows):
            path = blocks.block_path(self._staging, key, block)
            blocks.write_block(path, block)
            yield key, path


@dataclasses.dataclass(frozen=True)
class WindowParams:
    window: int
    stride: int
    max_gap: float
    num_shards: int
    eval_crews: FrozenSet[int]
    staging: str
    files: Tuple[str, ...]


class CutAndWriteWindowsFn(beam.DoFn):
    """One recording's raw rows -> scaled -> its windows written as per-shard pieces; yields piece
    metadata.

    Rows are sorted by (time, file, line), so the order never depends on how bundles arrived.
    A row repeating the (crew, seat, experiment, time) of an earlier one goes to `rejects`.
    Scaling applies the tf.Transform graph written under `params.staging` (the `transform_ready`
    side input orders this after it is written), loaded once per DoFn instance.
    """

    def __init__(self, params: WindowParams):
        self._p = params
        self._scaler = None
        self._windows = Metrics.counter(NAMESPACE, "windows_written")

    def process(self, element, transform_ready=None):
        from beam_jobs.scaling import Scaler

        (crew, seat, experiment), paths = element
        p = self._p
        if self._scaler is None:
            self._scaler = Scaler(p.staging)
        rows, dropped, twin_lines = blocks.drop_duplicate_times(
            Block.concat([blocks.read_block(path) for path in sorted(paths)]).sorted_by_time())
        for source, line, twin in zip(dropped.source, dropped.line, twin_lines):
            yield beam.pvalue.TaggedOutput(REJECTS, Reject(
                p.files[source], int(line), "time", f"duplicate (crew, seat, experiment, time) of line {twin}", ""))
        split = split_of(crew, p.eval_crews)
        yield beam.pvalue.TaggedOutput(GROUPS, {"split": split, "crew": crew, "num_rows": len(rows)})
        rows.signals = self._scaler.scale(rows.signals)
        cut = windows.cut_windows(rows.time, rows.label, p.window, p.stride, p.max_gap)
        yield from self._write_pieces(cut, rows, split, (crew, seat, experiment))
        self._windows.inc(len(cut))
        _LOG.info("crew %d seat %d %s: %s rows -> %s windows (%s)", crew, seat, experiment,
                  f"{len(rows):,}", f"{len(cut):,}", split)

    def _write_pieces(self, cut: windows.Windows, rows: Block, split: str, key: blocks.RecordingKey):
        """Window j of the recording goes to shard (offset + j) % N; one piece file per shard."""
        p = self._p
        offset = shards.shard_offset(*key, p.num_shards)
        for shard in range(p.num_shards):
            idx = shards.windows_of_shard(len(cut), offset, shard, p.num_shards)
            if not len(idx):
                continue
            path = shards.piece_path(p.staging, split, *key, shard)
            shards.write_records(path, self._encode(cut, rows, idx, *key))
            yield {"split": split, "shard": shard, "file": path, "group": key,
                   "num_windows": len(idx), "class_counts": shards.class_counts(cut.labels[idx])}

    @staticmethod
    def _encode(cut: windows.Windows, rows: Block, idx: np.ndarray, crew, seat, experiment):
        for a, b in windows.chunks(len(idx), ENCODE_CHUNK):
            part = idx[a:b]
            yield from encode_windows(cut.take(rows.signals, part), cut.labels[part], crew, seat,
                                      experiment, cut.end_times[part])


class CutWindows(beam.PTransform):
    """Raw `Rows` -> scaled windows written as shard pieces. Outputs: piece metadata (main),
    `groups` ({split, crew, num_rows} per recording) and `rejects` (duplicate rows).

    Rows reach their recording through block files (beam_jobs.blocks): only paths are shuffled.
    `transform_ready` is a PCollection that has an element once the transform graph is written
    to `params.staging` (tft_beam.WriteTransformFn's output).
    """

    def __init__(self, params: WindowParams, transform_ready):
        super().__init__()
        self._params = params
        self._ready = transform_ready

    def expand(self, rows):
        return (
            rows
            | "SpillByRecording" >> beam.ParDo(SpillByRecordingFn(self._params.staging))
            | "GroupByRecording" >> beam.GroupByKey()
            | "CutAndWrite" >> beam.ParDo(
                CutAndWriteWindowsFn(self._params), transform_ready=beam.pvalue.AsSingleton(self._ready))
            .with_outputs(REJECTS, GROUPS, main="pieces")
        )


class ConcatShardFn(beam.DoFn):
    """((split, shard), [piece metadata]) -> the final shard file and its metadata."""

    def __init__(self, staging: str, num_shards: int, compression: str):
        self._staging = staging
        self._num_shards = num_shards
        self._compression = compression

    def process(self, element):
        (split, shard), pieces = element
        # Each shard holds its recordings in its own fixed order, so a reader interleaving the
        # shards mixes as many recordings as it has shards open, not the same one from each.
        pieces = sorted((p for p in pieces if p is not None),
                        key=lambda p: (shards.shard_offset(*p["group"], 1 << 30, salt=shard), p["group"]))
        relative = layout.shard_path(split, shard, self._num_shards, self._compression)
        shards.concatenate([p["file"] for p in pieces], layout.join(self._staging, relative), self._compression)
        counts = {name: sum(p["class_counts"][name] for p in pieces) for name in shards.class_counts([])}
        yield {"split": split, "file": relative, "num_windows": sum(p["num_windows"] for p in pieces),
               "class_counts": counts}


class WriteShards(beam.PTransform):
    """Piece metadata -> `num_shards` final shards per split (empty ones included); yields shard
    metadata."""

    def __init__(self, staging: str, num_shards: int, compression: str):
        super().__init__()
        self._staging = staging
        self._num_shards = num_shards
        self._compression = compression

    def expand(self, pieces):
        every_shard = (
            pieces.pipeline
            | "EveryShard" >> beam.Create(
                [((split, k), None) for split in layout.SPLITS for k in range(self._num_shards)])
        )
        keyed = pieces | "KeyByShard" >> beam.Map(lambda p: ((p["split"], p["shard"]), p))
        return (
            (keyed, every_shard)
            | "WithEmptyShards" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "Concatenate" >> beam.ParDo(ConcatShardFn(self._staging, self._num_shards, self._compression))
        )


REJECT_HEADER = "file,line,column,reason,text"


def format_reject(r: Reject) -> str:
    def quote(s: str) -> str:
        return '"' + s.replace('"', '""') + '"' if any(c in s for c in ',"\n') else s

    return ",".join([quote(r.file), str(r.line), quote(r.column), quote(r.reason), quote(r.text)])


class WriteRejects(beam.PTransform):
    """Dead-letter rows -> OUT/rejects/rejects.csv (file,line,column,reason,text), sorted; yields
    the count."""

    def __init__(self, staging: str):
        super().__init__()
        self._staging = staging

    def expand(self, rejects):
        path = layout.join(self._staging, layout.REJECTS_DIR, layout.REJECTS_FILE)
        return (
            rejects
            | "AllRejects" >> beam.combiners.ToList()
            | "WriteRejectsCsv" >> beam.Map(_write_rejects, path)
        )


def _write_rejects(rejects: List[Reject], path: str) -> int:
    import tensorflow as tf

    if not rejects:
        return 0
    tf.io.gfile.makedirs(posixpath.dirname(path))
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(REJECT_HEADER + "\n")
        for r in sorted(rejects, key=lambda r: (r.file, r.line)):
            f.write(format_reject(r) + "\n")
    return len(rejects)


def write_manifest(shard_meta: List[Dict], groups: List[Dict], rejected: int, path: str) -> str:
    """Everything the launcher needs for stats.json, as one small JSON file."""
    import json

    import tensorflow as tf

    manifest = {"shards": sorted(shard_meta, key=lambda s: s["file"]), "groups": groups,
                "rejected_rows": rejected}
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(manifest, f)
    return path
