"""The preprocess job's own Beam steps (docs/DESIGN.md, "The preprocess job, step by step"):
sort each time block, scale it, write each shard once with the windows cut from the blocks (each
with the W-1 rows before it). Thin shells over blocks, windows and shards; the reading is
beam_jobs.reading's.
"""

import collections
import dataclasses
import functools
from typing import Callable, Dict, FrozenSet, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from beam_jobs import blocks, shards, windows
from beam_jobs.blocks import RecordingRows
from beam_jobs.csv_reader import Reject
from beam_jobs.reading import NAMESPACE, REJECTS, ROWS_PER_KEY, TALLY, PlanBlocks, tally_sources
from tfrecords_schema import encode_window_block, file_io, output_folder

BLOCK_COUNTS = "block_counts"  # per time block: {split, crew, num_rows}

TRAIN_SIGNALS = "train_signals"

ENCODE_BATCH = 512  # windows encoded at once: bounds the copy a long recording needs


@dataclasses.dataclass(frozen=True)
class WindowParams:
    """What the windowing steps need: the Windows contract's W, stride and max_gap, the shards,
    the splits' crews, where to write, the input files (for rejects) and the time blocks' size."""

    window: int
    stride: int
    max_gap: float
    num_shards: int
    eval_crews: FrozenSet[int]
    staging: str
    files: Tuple[str, ...]
    block_rows: int = blocks.DEFAULT_BLOCK_ROWS
    bin_seconds: float = blocks.BIN_SECONDS
    val_crews: FrozenSet[int] = frozenset()

    def splits(self) -> Tuple[str, ...]:
        """The splits written: train and eval, and val when it has crews."""
        return output_folder.SPLITS if self.val_crews else output_folder.REQUIRED_SPLITS

    def split_of(self, crew: int) -> str:
        """The split of a crew's rows: eval (--eval-crews), val (--val-crews), or train (the rest)."""
        if crew in self.eval_crews:
            return output_folder.EVAL
        return output_folder.VAL if crew in self.val_crews else output_folder.TRAIN


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
        split = p.split_of(key[0])
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


class ScaleBlockFn(beam.DoFn):
    """SortedBlock -> the same block written once more with its signals scaled by the
    tf.Transform graph written under `params.staging` (the graph serving applies; the
    `transform_ready` side input orders this after it is written), at blocks.scaled_path; yields
    the SortedBlock of that file. Every block is scaled once, whatever the shards cut from it."""

    def __init__(self, params: WindowParams):
        self._p = params
        self._scaler = None
        self._rows_per_key = Metrics.distribution(NAMESPACE, ROWS_PER_KEY)

    def process(self, block: blocks.SortedBlock, transform_ready=None):
        from beam_jobs.scaling import Scaler

        if self._scaler is None:
            self._scaler = Scaler(self._p.staging)
        rows = blocks.read_rows(block.path, block.num_features)
        self._rows_per_key.update(len(rows))
        rows.signals = self._scaler.scale(rows.signals)
        path = blocks.scaled_path(self._p.staging, block.recording, block.index)
        blocks.write_rows(path, rows)
        yield dataclasses.replace(block, path=path)


class ShardPart(NamedTuple):
    """What one time block of a recording gives one shard: its records (lazily: each a record's
    bytes, or a block of equal-length records as the rows of a uint8 array, as shards.write_shard
    takes them) and their metadata (num_windows, class_counts and, in the sequence layout, chunks)."""

    records: Iterable[Union[bytes, np.ndarray]]
    meta: Dict


def cut_block_windows(params: WindowParams, recording: Sequence[blocks.SortedBlock], block: blocks.SortedBlock,
                      shard: int, scale: "Scale") -> Optional[ShardPart]:
    """The windows layout's part of `shard` in a block: the windows of the recording whose LAST
    row is in the block and whose index j goes to this shard ((offset + j) % N, as if the
    recording were cut whole), read with the rows before the block they need (the whole range
    through `scale`: shards cut from scaled blocks, where it is the identity); None if none."""
    found = _block_windows(tuple(recording), block.index, params.max_gap, params.window, params.stride)
    key = block.recording
    idx = np.flatnonzero((shards.shard_offset(*key, params.num_shards) + found.index) % params.num_shards == shard)
    if not len(idx):
        return None
    starts = found.starts[idx]
    base = int(starts.min())
    rows = blocks.recording_rows(recording, base, found.first_row + block.num_rows)
    rows.signals = scale(rows.signals)
    cut = windows.windows_at(starts - base, rows.label, rows.time, params.window)
    return ShardPart(_encode_windows(cut, rows, key),
                     {"num_windows": len(cut), "class_counts": shards.class_counts(cut.labels)})


# Every shard of a split asks for the same blocks' windows: found once per worker and kept, for up
# to 256 blocks (each entry two int64 per window of a block: at most about 32 MB in all).
_block_windows = functools.lru_cache(maxsize=256)(windows.block_windows)


def _encode_windows(cut: windows.Windows, rows: RecordingRows, key: blocks.RecordingKey) -> Iterator[np.ndarray]:
    """The windows' records, ENCODE_BATCH at a time, each batch the rows of one array (shards.write_shard
    frames them at once)."""
    for a, b in windows.batch_bounds(len(cut), ENCODE_BATCH):
        part = np.arange(a, b)
        yield encode_window_block(cut.take(rows.signals, part), cut.labels[part], *key, cut.end_times[part])


def shard_order(keys: Iterable[blocks.RecordingKey], shard: int) -> List[blocks.RecordingKey]:
    """The order of recordings in `shard`: each shard holds them in its own fixed order, so a
    reader interleaving the shards mixes as many recordings as it has shards open, not the same
    one from each."""
    return sorted(keys, key=lambda k: (shards.shard_offset(*k, 1 << 30, salt=shard), tuple(k)))


# scale(signals): float32 [n, F] as read from a recording's blocks -> the same rows scaled, as the
# shards hold them (each row on its own: the result does not depend on which rows go together).
Scale = Callable[[np.ndarray], np.ndarray]


class WriteShardFn(beam.DoFn):
    """(split, shard) -> the final shard file, written once where it ends up (shards.write_shard),
    and its metadata: {split, file (relative to OUT), num_windows, class_counts, sha256 (of the
    file's bytes)}, plus `chunks` in the sequence layout.

    The shard's recordings come in `shard_order`, each recording's blocks in time order (the
    `recordings` side input); `cut(params, recording, block, shard, scale)` gives each block's part
    (a ShardPart or None), passing the signals it encodes through `scale` (Scale). With
    `scale_in_shards` the blocks are the sorted ones and `scale` applies the transform graph under
    `params.staging` (the `transform_ready` side input orders this after it is written); without,
    they are already scaled (ScaleBlockFn) and `scale` is the identity. A shard's bytes depend on
    neither --block-rows nor the workers.
    """

    def __init__(self, params: WindowParams, compression: str, cut, scale_in_shards: bool = False):
        self._p = params
        self._compression = compression
        self._cut = cut
        self._scale_in_shards = scale_in_shards
        self._scaler = None
        self._records = Metrics.counter(NAMESPACE, "records_written")

    def _scaled(self, signals: np.ndarray) -> np.ndarray:
        if not self._scale_in_shards:
            return signals
        if self._scaler is None:
            from beam_jobs.scaling import Scaler

            self._scaler = Scaler(self._p.staging)
        return self._scaler.scale(signals)

    def process(self, element, recordings, transform_ready=None):
        split, shard = element
        p = self._p
        metas = []

        def records():
            for key in shard_order([k for k in recordings if p.split_of(k[0]) == split], shard):
                recording = recordings[key]
                assert [b.index for b in recording] == list(range(len(recording))), "time blocks are numbered 0..K-1"
                for block in recording:
                    part = self._cut(p, recording, block, shard, self._scaled)
                    if part is not None:
                        metas.append(part.meta)
                        yield from part.records

        relative = output_folder.shard_path(split, shard, p.num_shards, self._compression)
        count, digest = shards.write_shard(file_io.join(p.staging, relative), records(), self._compression)
        self._records.inc(count)
        meta = {"split": split, "file": relative, "num_windows": sum(m["num_windows"] for m in metas),
                "class_counts": {name: sum(m["class_counts"][name] for m in metas)
                                 for name in shards.class_counts([])},
                "sha256": digest}
        if any("chunks" in m for m in metas):  # the sequence layout: its records' summaries, in file order
            meta["chunks"] = [chunk for m in metas for chunk in m["chunks"]]
        yield meta


def _by_recording(block: blocks.SortedBlock):
    return block.recording, block


def _in_block_order(key: blocks.RecordingKey, sorted_blocks):
    return key, sorted(sorted_blocks, key=lambda b: b.index)


class WriteShards(beam.PTransform):
    """SortedBlocks (`SortBlocks`' main output) -> `num_shards` final shards per split (empty ones
    included), each written where it ends up by WriteShardFn with the layout's `cut`
    (cut_block_windows, sequences.cut_block_chunks); yields shard metadata. `transform_ready` is a
    PCollection that has an element once the transform graph is written to the staging folder
    (tf.Transform's WriteTransformFn output).

    Where the rows are scaled depends on how often the shards read them. By default every block
    is scaled once (ScaleBlockFn) and written again, and the shards cut from those: in the windows
    layout every shard reads nearly every block (window j goes to shard j mod N), so scaling as
    they read would scale each row N times. With `scale_in_shards` (the sequence layout, whose
    chunks each go to one shard: each row is read about once, its W-1 rows of context again) the
    shards read the sorted blocks and scale what they read: the same rows through the same graph,
    without writing and reading every block once more."""

    def __init__(self, params: WindowParams, compression: str, cut, transform_ready, scale_in_shards: bool = False):
        super().__init__()
        self._params = params
        self._compression = compression
        self._cut = cut
        self._ready = transform_ready
        self._scale_in_shards = scale_in_shards

    def expand(self, sorted_blocks):
        p = self._params
        ready = beam.pvalue.AsSingleton(self._ready)
        if not self._scale_in_shards:
            sorted_blocks = sorted_blocks | "ScaleBlock" >> beam.ParDo(ScaleBlockFn(p), transform_ready=ready)
        recordings = (
            sorted_blocks
            | "KeyByRecording" >> beam.Map(_by_recording)
            | "GroupByRecording" >> beam.GroupByKey()
            | "InBlockOrder" >> beam.MapTuple(_in_block_order)
        )
        write = WriteShardFn(p, self._compression, self._cut, scale_in_shards=self._scale_in_shards)
        return (
            sorted_blocks.pipeline
            | "EveryShard" >> beam.Create([(split, k) for split in p.splits() for k in range(p.num_shards)])
            | "WriteShard" >> beam.ParDo(write, recordings=beam.pvalue.AsDict(recordings), transform_ready=ready)
        )


def segment_counts(sorted_blocks: Iterable[blocks.SortedBlock], params: WindowParams) -> List[Dict]:
    """Per recording, in key order: {split, crew, seat, experiment, segments, short_segments,
    longest_segment}: its time segments (docs/DESIGN.md, "Windows"), how many are shorter than the
    window (they give no window) and the rows of the longest. From the blocks' summaries alone
    (`SortBlocks`' main output), as cut_block_windows finds the segments."""
    by_recording = collections.defaultdict(list)
    for block in sorted_blocks:
        by_recording[block.recording].append(block)
    counts = []
    for key in sorted(by_recording):
        recording = sorted(by_recording[key], key=lambda b: b.index)
        bounds = windows.recording_segments(recording, params.max_gap)
        lengths = bounds[:, 1] - bounds[:, 0]
        counts.append({"split": params.split_of(key[0]), "crew": key[0], "seat": key[1],
                       "experiment": key[2], "segments": len(lengths),
                       "short_segments": int(np.sum(lengths < params.window)),
                       "longest_segment": int(lengths.max(initial=0))})
    return counts
