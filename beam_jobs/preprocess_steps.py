"""The preprocess job's own Beam steps (docs/DESIGN.md, "The preprocess job, step by step"):
sort each time block, cut its windows with the W-1 rows before it, write them to shards. Thin
shells over blocks, windows and shards; the reading is beam_jobs.reading's.
"""

import collections
import dataclasses
from typing import Dict, FrozenSet, Iterable, Iterator, List, Sequence, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from beam_jobs import blocks, shards, windows
from beam_jobs.blocks import RecordingRows
from beam_jobs.csv_reader import Reject
from beam_jobs.reading import NAMESPACE, REJECTS, ROWS_PER_KEY, TALLY, PlanBlocks, tally_sources
from tfrecords_schema import encode_windows, file_io, output_folder

BLOCK_COUNTS = "block_counts"  # per time block: {split, crew, num_rows}

TRAIN_SIGNALS = "train_signals"

ENCODE_BATCH = 512  # windows encoded at once: bounds the copy a long recording needs


def split_of(crew: int, eval_crews: FrozenSet[int]) -> str:
    return output_folder.EVAL if crew in eval_crews else output_folder.TRAIN


@dataclasses.dataclass(frozen=True)
class WindowParams:
    """What the windowing steps need: the Windows contract's W, stride and max_gap, the shards,
    the split, where to write, the input files (for rejects) and the time blocks' size."""

    window: int
    stride: int
    max_gap: float
    num_shards: int
    eval_crews: FrozenSet[int]
    staging: str
    files: Tuple[str, ...]
    block_rows: int = blocks.DEFAULT_BLOCK_ROWS
    bin_seconds: float = blocks.BIN_SECONDS


class SortBlockFn(beam.DoFn):
    """((recording, time block), its blocks.FileRows) -> the block's rows sorted by (time, file,
    line) and written as a sorted block file (beam_jobs.blocks.write_rows); yields its
    `SortedBlock`.

    A row repeating the (crew, seat, experiment, time) of an earlier one goes to `rejects` (all
    rows of one time share a block); rows kept and rejected are counted per input file on
    `tally`; `block_counts` gets {split, crew, num_rows} of the block; for a TRAIN crew the kept
    signals go to `train_signals` as a record batch for tf.Transform's analyzers. The rows held
    are recorded in the `rows_per_key` distribution.
    """

    def __init__(self, params: "WindowParams"):
        self._p = params
        self._rows_per_key = Metrics.distribution(NAMESPACE, ROWS_PER_KEY)

    def process(self, element):
        from beam_jobs import scaling

        (key, index), parts = element
        p = self._p
        raw = RecordingRows.concat([blocks.read_spill(*part) for part in sorted(parts)])
        self._rows_per_key.update(len(raw))
        rows, dropped, _ = blocks.drop_duplicate_times(raw.sorted_by_time())
        del raw
        for reject in duplicate_time_rejects(rows, dropped, p.files):
            yield beam.pvalue.TaggedOutput(REJECTS, reject)
        yield from tally_sources("rows_rejected", dropped.source)
        yield from tally_sources("rows_used", rows.source)
        split = split_of(key[0], p.eval_crews)
        yield beam.pvalue.TaggedOutput(BLOCK_COUNTS, {"split": split, "crew": key[0], "num_rows": len(rows)})
        if split == output_folder.TRAIN:
            yield beam.pvalue.TaggedOutput(TRAIN_SIGNALS, scaling.signals_record_batch(rows.signals))
        path = blocks.sorted_path(p.staging, key, index)
        blocks.write_rows(path, rows)
        yield blocks.summarize_sorted(key, index, path, rows, p.max_gap)


def duplicate_time_rejects(kept: RecordingRows, dropped: RecordingRows, files: Sequence[str]) -> Iterator[Reject]:
    """A reject for each dropped row, naming the kept row it repeats by line AND file (the two
    may come from different inputs). `kept` is sorted by time with no time twice, so each
    dropped row's twin is where its time falls in `kept`."""
    twin = np.searchsorted(kept.time, dropped.time)
    for source, line, twin_source, twin_line in zip(dropped.source.tolist(), dropped.line.tolist(),
                                                    kept.source[twin].tolist(), kept.line[twin].tolist()):
        yield Reject(files[source], line, "time", "duplicate (crew, seat, experiment, time): "
                     f"repeats line {twin_line} of {files[twin_source]}", "")


class SortBlocks(beam.PTransform):
    """Raw `Rows` -> each recording cut into time blocks of at most `params.block_rows` raw rows,
    each sorted, deduplicated and written once (`SortedBlock`s, the main output): `PlanBlocks`,
    then `SortBlockFn`, whose other outputs it has: `rejects`, `tally`, `block_counts`, `train_signals`.
    """

    def __init__(self, params: WindowParams):
        super().__init__()
        self._params = params

    def expand(self, rows):
        return (
            rows
            | "PlanBlocks" >> PlanBlocks(self._params.staging, self._params.block_rows, self._params.bin_seconds)
            | "SortBlock" >> beam.ParDo(SortBlockFn(self._params)).with_outputs(
                REJECTS, BLOCK_COUNTS, TALLY, TRAIN_SIGNALS, main="blocks")
        )


class CutSortedBlockFn(beam.DoFn):
    """What the layouts' cutting steps share (CutBlockWindowsFn, sequences.CutBlockChunksFn): per
    SortedBlock, its recording's blocks in order from the `recordings` side input (each recording
    to its SortedBlocks in block order), and its rows with the `context` rows before it (read from
    the tails of the preceding blocks), scaled with the tf.Transform graph written under
    `params.staging` (the `transform_ready` side input orders this after it is written)."""

    def __init__(self, params: WindowParams):
        self._p = params
        self._scaler = None
        self._rows_per_key = Metrics.distribution(NAMESPACE, ROWS_PER_KEY)

    @staticmethod
    def recording_of(block: blocks.SortedBlock, recordings) -> List[blocks.SortedBlock]:
        recording = recordings[block.recording]
        assert [b.index for b in recording] == list(range(len(recording))), "time blocks are numbered 0..K-1"
        return recording

    def scaled_rows(self, recording: Sequence[blocks.SortedBlock], block: blocks.SortedBlock,
                    context: int) -> RecordingRows:
        """The block's rows preceded by the `context` rows before it, signals scaled."""
        from beam_jobs.scaling import Scaler

        if self._scaler is None:
            self._scaler = Scaler(self._p.staging)
        rows = RecordingRows.concat(_tail_rows(recording[:block.index], context)
                            + [blocks.read_rows(block.path, block.num_features)])
        self._rows_per_key.update(len(rows))
        rows.signals = self._scaler.scale(rows.signals)
        return rows


class CutBlockWindowsFn(CutSortedBlockFn):
    """SortedBlock -> the windows of its recording whose LAST row is in it, scaled and written as
    pieces per shard (`shards.piece_path`); yields piece metadata.

    From the sizes, edge times and gaps of its recording's blocks the block learns its rows' place
    in the recording, the segments and the global index j of each of its windows (window j goes
    to shard (offset + j) % N, as if the recording were cut whole).
    """

    def __init__(self, params: WindowParams):
        super().__init__(params)
        self._windows = Metrics.counter(NAMESPACE, "windows_written")

    def process(self, block: blocks.SortedBlock, recordings, transform_ready=None):
        p = self._p
        recording = self.recording_of(block, recordings)
        found = windows.block_windows(recording, block.index, p.max_gap, p.window, p.stride)
        if not len(found.index):
            return
        rows = self.scaled_rows(recording, block, found.context)
        cut = windows.windows_at(found.starts - (found.first_row - found.context), rows.label, rows.time, p.window)
        split = split_of(block.recording[0], p.eval_crews)
        yield from self._write_pieces(cut, rows, found.index, split, block)
        self._windows.inc(len(cut))

    def _write_pieces(self, cut: windows.Windows, rows: RecordingRows, index: np.ndarray, split: str,
                      block: blocks.SortedBlock):
        """Window j of the recording goes to shard (offset + j) % N; one piece file per shard."""
        p = self._p
        key = block.recording
        shard_of = (shards.shard_offset(*key, p.num_shards) + index) % p.num_shards
        for shard in range(p.num_shards):
            idx = np.flatnonzero(shard_of == shard)
            if not len(idx):
                continue
            path = shards.piece_path(p.staging, split, *key, shard, block=block.index)
            shards.write_records(path, self._encode(cut, rows, idx, *key))
            yield {"split": split, "shard": shard, "file": path, "recording": key, "block": block.index,
                   "num_windows": len(idx), "class_counts": shards.class_counts(cut.labels[idx])}

    @staticmethod
    def _encode(cut: windows.Windows, rows: RecordingRows, idx: np.ndarray, crew, seat, experiment):
        for a, b in windows.batch_bounds(len(idx), ENCODE_BATCH):
            part = idx[a:b]
            yield from encode_windows(cut.take(rows.signals, part), cut.labels[part], crew, seat,
                                      experiment, cut.end_times[part])


def _tail_rows(preceding: Sequence[blocks.SortedBlock], needed: int) -> List[RecordingRows]:
    """The last `needed` rows of the blocks `preceding`, in time order, read from their tails
    (several blocks when the last ones are short)."""
    parts = []
    for block in reversed(preceding):
        if needed <= 0:
            break
        take = min(needed, block.num_rows)
        parts.insert(0, blocks.read_rows(block.path, block.num_features, last=take))
        needed -= take
    return parts


def _by_recording(block: blocks.SortedBlock):
    return block.recording, block


def _in_block_order(key: blocks.RecordingKey, sorted_blocks):
    return key, sorted(sorted_blocks, key=lambda b: b.index)


class CutSortedBlocks(beam.PTransform):
    """SortedBlocks (`SortBlocks`' main output) -> `fn` (a CutSortedBlockFn) on each, given every
    recording's blocks in order; yields its piece metadata. `transform_ready` is a PCollection
    that has an element once the transform graph is written to the staging folder
    (tft_beam.WriteTransformFn's output)."""

    def __init__(self, fn: CutSortedBlockFn, transform_ready):
        super().__init__()
        self._fn = fn
        self._ready = transform_ready

    def expand(self, sorted_blocks):
        recordings = (
            sorted_blocks
            | "KeyByRecording" >> beam.Map(_by_recording)
            | "GroupByRecording" >> beam.GroupByKey()
            | "InBlockOrder" >> beam.MapTuple(_in_block_order)
        )
        return sorted_blocks | "CutAndWrite" >> beam.ParDo(
            self._fn, recordings=beam.pvalue.AsDict(recordings), transform_ready=beam.pvalue.AsSingleton(self._ready))


class CutWindows(CutSortedBlocks):
    """SortedBlocks -> scaled windows written as shard pieces (CutBlockWindowsFn); yields piece
    metadata."""

    def __init__(self, params: WindowParams, transform_ready):
        super().__init__(CutBlockWindowsFn(params), transform_ready)


class ConcatShardFn(beam.DoFn):
    """((split, shard), [piece metadata]) -> the final shard file and its metadata: {split, file
    (relative to OUT), num_windows, class_counts, sha256 (of the file's bytes)}."""

    def __init__(self, staging: str, num_shards: int, compression: str):
        self._staging = staging
        self._num_shards = num_shards
        self._compression = compression

    def process(self, element):
        (split, shard), pieces = element
        # Each shard holds its recordings in its own fixed order, so a reader interleaving the
        # shards mixes as many recordings as it has shards open, not the same one from each; a
        # recording's pieces follow its time blocks, so the bytes do not depend on --block-rows.
        pieces = sorted((p for p in pieces if p is not None),
                        key=lambda p: (shards.shard_offset(*p["recording"], 1 << 30, salt=shard), tuple(p["recording"]),
                                       p.get("block", 0)))
        relative = output_folder.shard_path(split, shard, self._num_shards, self._compression)
        digest = shards.concatenate([p["file"] for p in pieces], file_io.join(self._staging, relative),
                                    self._compression)
        counts = {name: sum(p["class_counts"][name] for p in pieces) for name in shards.class_counts([])}
        meta = {"split": split, "file": relative, "num_windows": sum(p["num_windows"] for p in pieces),
                "class_counts": counts, "sha256": digest}
        if any("chunks" in p for p in pieces):  # the sequence layout: its records' summaries, in file order
            meta["chunks"] = [chunk for p in pieces for chunk in p["chunks"]]
        yield meta


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
                [((split, k), None) for split in output_folder.SPLITS for k in range(self._num_shards)])
        )
        keyed = pieces | "KeyByShard" >> beam.Map(lambda p: ((p["split"], p["shard"]), p))
        return (
            (keyed, every_shard)
            | "WithEmptyShards" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "Concatenate" >> beam.ParDo(ConcatShardFn(self._staging, self._num_shards, self._compression))
        )


def segment_counts(sorted_blocks: Iterable[blocks.SortedBlock], params: WindowParams) -> List[Dict]:
    """Per recording, in key order: {split, crew, seat, experiment, segments, short_segments,
    longest_segment}: its time segments (docs/DESIGN.md, "Windows"), how many are shorter than the
    window (they give no window) and the rows of the longest. From the blocks' summaries alone
    (`SortBlocks`' main output), as CutBlockWindowsFn finds the segments."""
    by_recording = collections.defaultdict(list)
    for block in sorted_blocks:
        by_recording[block.recording].append(block)
    counts = []
    for key in sorted(by_recording):
        recording = sorted(by_recording[key], key=lambda b: b.index)
        bounds = windows.recording_segments(recording, params.max_gap)
        lengths = bounds[:, 1] - bounds[:, 0]
        counts.append({"split": split_of(key[0], params.eval_crews), "crew": key[0], "seat": key[1],
                       "experiment": key[2], "segments": len(lengths),
                       "short_segments": int(np.sum(lengths < params.window)),
                       "longest_segment": int(lengths.max(initial=0))})
    return counts
