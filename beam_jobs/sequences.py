"""The sequence layout's Beam step (`crewstream preprocess --layout sequence`, docs/DESIGN.md
"Layouts"): each segment's chunks written once, scaled, with the W-1 rows before them.

It replaces CutWindows after SortBlocks and the tf.Transform analysis, and feeds the same
WriteShards: per SortedBlock, the chunks whose LAST row is in the block (their rows and context
read from the block and the tails of the blocks before it) are scaled, encoded
(tfrecords_schema.encode_chunks) and written as shard pieces; chunk j of a recording goes to shard
(offset + j) % N, as window j does in the windows layout. A chunk's cut depends only on its
segment (tfrecords_schema.sequence.chunk_bounds), so the shards do not depend on --block-rows.
Each piece's metadata carries its chunks' summaries ([position, c, label runs], in file order)
and the windows of the folder's (window, stride) among them, for stats.json.
"""

from typing import Dict, Iterator, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from beam_jobs import blocks, shards, windows
from beam_jobs.blocks import Block
from beam_jobs.transforms import (NAMESPACE, ROWS_PER_KEY, WindowParams, _by_recording, _in_block_order,
                                  _tail_rows, split_of)
from tfrecords_schema import LABEL_VOCABULARY, encode_chunks, sequence

ENCODE_CHUNKS = 16  # chunks encoded at once: about 6 MB of floats at the default size


class Chunks(NamedTuple):
    """Chunks of a recording, rows global (its rows in time order, segment after segment).

    `starts`, `stops` int64 [m]: each chunk's rows [start, stop); `positions` int64 [m]: its first
    row's index in its segment; `contexts` int64 [m]: k = min(W-1, position), the rows before it
    its record holds; `index` int64 [m]: its index among the recording's chunks.
    """

    starts: np.ndarray
    stops: np.ndarray
    positions: np.ndarray
    contexts: np.ndarray
    index: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)


def chunks_ending_in(bounds: np.ndarray, first_row: int, num_rows: int, chunk_rows: int, window: int) -> Chunks:
    """The chunks of a recording whose LAST row is in rows [first_row, first_row + num_rows).

    `bounds`: the recording's segments, int64 [K, 2] (windows.recording_segments). Chunk i of a
    segment [a, e) holds rows [a + i*C, min(a + (i+1)*C, e)). Over consecutive row ranges that
    tile the recording these tile its chunks.
    """
    if chunk_rows < 1 or window < 1:
        raise ValueError(f"chunk_rows ({chunk_rows}) and window ({window}) must be >= 1")
    a, e = bounds[:, 0].astype(np.int64), bounds[:, 1].astype(np.int64)
    count = -(-(e - a) // chunk_rows)
    before = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
    end = first_row + num_rows
    # chunk i's last row, a + min((i+1)*C, n) - 1, grows with i: keep first_row <= it < end
    lo = np.where(e - 1 < first_row, count, np.clip(-(-(first_row - a + 1) // chunk_rows) - 1, 0, count))
    hi = np.where(e <= end, count, np.clip((end - a) // chunk_rows, 0, count))
    seg = np.concatenate([np.full(max(h - l, 0), k, dtype=np.int64) for k, (l, h) in enumerate(zip(lo, hi))]
                         + [np.zeros(0, np.int64)])
    i = np.concatenate([np.arange(l, h, dtype=np.int64) for l, h in zip(lo, hi)] + [np.zeros(0, np.int64)])
    positions = i * chunk_rows
    starts = a[seg] + positions
    return Chunks(starts, np.minimum(starts + chunk_rows, e[seg]), positions,
                  np.minimum(window - 1, positions), before[seg] + i)


class CutBlockChunksFn(beam.DoFn):
    """SortedBlock -> the chunks of its recording whose LAST row is in it, scaled, encoded and
    written as pieces per shard (`shards.piece_path`); yields piece metadata: {split, shard, file,
    group, block, chunks ([position, c, label runs] per record, in file order), num_windows and
    class_counts (the windows of params' window and stride ending in those chunks)}.

    `recordings`, `transform_ready` and the scaling as transforms.CutBlockWindowsFn's.
    """

    def __init__(self, params: WindowParams, chunk_rows: int):
        self._p = params
        self._chunk_rows = chunk_rows
        self._scaler = None
        self._chunks = Metrics.counter(NAMESPACE, "chunks_written")
        self._rows_per_key = Metrics.distribution(NAMESPACE, ROWS_PER_KEY)

    def process(self, block: blocks.SortedBlock, recordings, transform_ready=None):
        from beam_jobs.scaling import Scaler

        p = self._p
        recording = recordings[block.recording]
        assert [b.index for b in recording] == list(range(len(recording))), "time blocks are numbered 0..K-1"
        first_row = int(sum(b.num_rows for b in recording[:block.index]))
        found = chunks_ending_in(windows.recording_segments(recording, p.max_gap), first_row, block.num_rows,
                                 self._chunk_rows, p.window)
        if not len(found):
            return
        if self._scaler is None:
            self._scaler = Scaler(p.staging)
        context = max(0, first_row - int((found.starts - found.contexts).min()))
        rows = Block.concat(_tail_rows(recording[:block.index], context)
                            + [blocks.read_rows(block.path, block.num_features)])
        self._rows_per_key.update(len(rows))
        rows.signals = self._scaler.scale(rows.signals)
        yield from self._write_pieces(found, rows, first_row - context, block)
        self._chunks.inc(len(found))

    def _write_pieces(self, found: Chunks, rows: Block, base: int, block: blocks.SortedBlock) -> Iterator[Dict]:
        """Chunk j of the recording goes to shard (offset + j) % N; one piece file per shard.
        `base`: the recording row that rows[0] is."""
        p = self._p
        key = block.recording
        split = split_of(key[0], p.eval_crews)
        shard_of = (shards.shard_offset(*key, p.num_shards) + found.index) % p.num_shards
        for shard in range(p.num_shards):
            idx = np.flatnonzero(shard_of == shard)
            if not len(idx):
                continue
            summaries = [sequence.chunk_summary(found.positions[i], rows.label[found.starts[i] - base:
                                                                               found.stops[i] - base])
                         for i in idx]
            counts = sequence.chunks_class_counts(summaries, p.window, p.stride)
            path = shards.piece_path(p.staging, split, *key, shard, block=block.index)
            shards.write_records(path, self._encode(found, rows, base, idx, key))
            yield {"split": split, "shard": shard, "file": path, "group": key, "block": block.index,
                   "chunks": summaries, "num_windows": int(counts.sum()),
                   "class_counts": dict(zip(LABEL_VOCABULARY, counts.tolist()))}

    @staticmethod
    def _encode(found: Chunks, rows: Block, base: int, idx: np.ndarray, key) -> Iterator[bytes]:
        for a, b in windows.chunks(len(idx), ENCODE_CHUNKS):
            part = idx[a:b]
            lo = found.starts[part] - found.contexts[part] - base
            first, last = found.starts[part] - base, found.stops[part] - base
            yield from encode_chunks(
                [rows.signals[x:y] for x, y in zip(lo, last)], found.contexts[part], found.positions[part],
                [rows.label[x:y] for x, y in zip(first, last)], *key,
                rows.time[first], rows.time[last - 1])


class CutChunks(beam.PTransform):
    """SortedBlocks (`SortBlocks`' main output) -> scaled chunk records written as shard pieces;
    yields piece metadata (CutBlockChunksFn's) for transforms.WriteShards. `transform_ready` as
    transforms.CutWindows'."""

    def __init__(self, params: WindowParams, chunk_rows: int, transform_ready):
        super().__init__()
        self._params = params
        self._chunk_rows = chunk_rows
        self._ready = transform_ready

    def expand(self, sorted_blocks):
        recordings = (
            sorted_blocks
            | "KeyByRecording" >> beam.Map(_by_recording)
            | "GroupByRecording" >> beam.GroupByKey()
            | "InBlockOrder" >> beam.MapTuple(_in_block_order)
        )
        return sorted_blocks | "CutAndWrite" >> beam.ParDo(
            CutBlockChunksFn(self._params, self._chunk_rows), recordings=beam.pvalue.AsDict(recordings),
            transform_ready=beam.pvalue.AsSingleton(self._ready))
