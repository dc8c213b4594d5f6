"""The sequence layout's Beam step (`crewstream preprocess --layout sequence`, docs/DESIGN.md
"Layouts"): each segment's chunks written once, scaled, with the W-1 rows before them.

It replaces CutWindows after SortBlocks and the tf.Transform analysis, and feeds the same
WriteShards: per SortedBlock, the chunks whose LAST row is in the block (their rows and context
read from the block and the tails of the blocks before it) are scaled, encoded
(tfrecords_schema.encode_chunks) and written as shard pieces; chunk j of a recording goes to shard
(offset + j) % N, as window j does in the windows layout. A chunk's cut depends only on its
segment (tfrecords_schema.sequence.chunks_ending_in), so the shards do not depend on --block-rows.
Each piece's metadata carries its chunks' summaries ([position, c, label runs], in file order)
and the windows of the folder's (window, stride) among them, for stats.json.
"""

from typing import Dict, Iterator

import numpy as np
from apache_beam.metrics import Metrics

from beam_jobs import blocks, shards, windows
from beam_jobs.blocks import RecordingRows
from beam_jobs.reading import NAMESPACE
from beam_jobs.preprocess_steps import CutSortedBlockFn, CutSortedBlocks, WindowParams, split_of
from tfrecords_schema import LABEL_VOCABULARY, encode_chunks, sequence

ENCODE_CHUNKS = 16  # chunks encoded at once: about 6 MB of floats at the default size


class CutBlockChunksFn(CutSortedBlockFn):
    """SortedBlock -> the chunks of its recording whose LAST row is in it, scaled, encoded and
    written as pieces per shard (`shards.piece_path`); yields piece metadata: {split, shard, file,
    recording, block, chunks ([position, c, label runs] per record, in file order), num_windows and
    class_counts (the windows of params' window and stride ending in those chunks)}.

    `recordings`, `transform_ready` and the scaling: preprocess_steps.CutSortedBlockFn.
    """

    def __init__(self, params: WindowParams, chunk_rows: int):
        super().__init__(params)
        self._chunk_rows = chunk_rows
        self._chunks = Metrics.counter(NAMESPACE, "chunks_written")

    def process(self, block: blocks.SortedBlock, recordings, transform_ready=None):
        p = self._p
        recording = self.recording_of(block, recordings)
        first_row = int(sum(b.num_rows for b in recording[:block.index]))
        found = sequence.chunks_ending_in(windows.recording_segments(recording, p.max_gap), first_row, block.num_rows,
                                 self._chunk_rows, p.window)
        if not len(found):
            return
        context = max(0, first_row - int((found.starts - found.contexts).min()))
        rows = self.scaled_rows(recording, block, context)
        yield from self._write_pieces(found, rows, first_row - context, block)
        self._chunks.inc(len(found))

    def _write_pieces(self, found: sequence.Chunks, rows: RecordingRows, base: int,
                      block: blocks.SortedBlock) -> Iterator[Dict]:
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
            yield {"split": split, "shard": shard, "file": path, "recording": key, "block": block.index,
                   "chunks": summaries, "num_windows": int(counts.sum()),
                   "class_counts": dict(zip(LABEL_VOCABULARY, counts.tolist()))}

    @staticmethod
    def _encode(found: sequence.Chunks, rows: RecordingRows, base: int, idx: np.ndarray, key) -> Iterator[bytes]:
        for a, b in windows.batch_bounds(len(idx), ENCODE_CHUNKS):
            part = idx[a:b]
            lo = found.starts[part] - found.contexts[part] - base
            first, last = found.starts[part] - base, found.stops[part] - base
            yield from encode_chunks(
                [rows.signals[x:y] for x, y in zip(lo, last)], found.contexts[part], found.positions[part],
                [rows.label[x:y] for x, y in zip(first, last)], *key,
                rows.time[first], rows.time[last - 1])


class CutChunks(CutSortedBlocks):
    """SortedBlocks (`SortBlocks`' main output) -> scaled chunk records written as shard pieces;
    yields piece metadata (CutBlockChunksFn's) for preprocess_steps.WriteShards."""

    def __init__(self, params: WindowParams, chunk_rows: int, transform_ready):
        super().__init__(CutBlockChunksFn(params, chunk_rows), transform_ready)
