"""The sequence layout's cutting (`crewstream preprocess --layout sequence`, docs/DESIGN.md
"Layouts"): each segment's chunks written once, scaled, with the W-1 rows before them.

It replaces the windows layout's cut_block_windows in preprocess_steps.WriteShards: per time block
and shard, the chunks whose LAST row is in the block and whose number j goes to the shard
((offset + j) % N, as window j does in the windows layout) are encoded (tfrecords_schema.encode_chunks)
with their rows and context read from the block and the tails of the blocks before it: the sorted
blocks, scaled as they are read (each chunk goes to one shard, so each row is scaled about once:
preprocess_steps.WriteShards' `scale_in_shards`). A chunk's cut depends only on its segment
(tfrecords_schema.sequence.chunks_ending_in), so the shards do not depend on --block-rows. Each
part's metadata carries its chunks' summaries ([position, c, label runs], in file order) and the
windows of the folder's (window, stride) among them, for stats.json.
"""

import functools
from typing import Iterator, Optional, Sequence

import numpy as np

from beam_jobs import blocks, shards, windows
from beam_jobs.blocks import RecordingRows
from beam_jobs.preprocess_steps import Scale, ShardPart, WindowParams
from tfrecords_schema import LABEL_VOCABULARY, encode_chunks, sequence

ENCODE_CHUNKS = 16  # chunks encoded at once: about 6 MB of floats at the default size


def chunk_cutter(chunk_rows: int):
    """The `cut` of preprocess_steps.WriteShards for the sequence layout with `chunk_rows`."""
    return functools.partial(cut_block_chunks, chunk_rows=chunk_rows)


def cut_block_chunks(params: WindowParams, recording: Sequence[blocks.SortedBlock], block: blocks.SortedBlock,
                     shard: int, scale: Scale, chunk_rows: int) -> Optional[ShardPart]:
    """The sequence layout's part of `shard` in a block: the recording's chunks whose LAST row is
    in the block and whose index goes to this shard, read with their context, only their rows
    through `scale` (the shard's chunks are spread over the block: the rows between them go to
    other shards); None if none.
    Its metadata: {chunks ([position, c, label runs] per record, in file order), num_windows and
    class_counts (the windows of params' window and stride ending in those chunks)}."""
    first_row = int(sum(b.num_rows for b in recording[:block.index]))
    found = sequence.chunks_ending_in(windows.recording_segments(recording, params.max_gap), first_row,
                                      block.num_rows, chunk_rows, params.window)
    key = block.recording
    idx = np.flatnonzero((shards.shard_offset(*key, params.num_shards) + found.index) % params.num_shards == shard)
    if not len(idx):
        return None
    base = int((found.starts[idx] - found.contexts[idx]).min())
    rows = blocks.recording_rows(recording, base, int(found.stops[idx].max()))
    summaries = [sequence.chunk_summary(found.positions[i], rows.label[found.starts[i] - base:found.stops[i] - base])
                 for i in idx]
    counts = sequence.chunks_class_counts(summaries, params.window, params.stride)
    return ShardPart(_encode(found, rows, base, idx, key, scale),
                     {"chunks": summaries, "num_windows": int(counts.sum()),
                      "class_counts": dict(zip(LABEL_VOCABULARY, counts.tolist()))})


def _encode(found: sequence.Chunks, rows: RecordingRows, base: int, idx: np.ndarray, key,
            scale: Scale) -> Iterator[bytes]:
    for a, b in windows.batch_bounds(len(idx), ENCODE_CHUNKS):
        part = idx[a:b]
        lo = found.starts[part] - found.contexts[part] - base
        first, last = found.starts[part] - base, found.stops[part] - base
        scaled = scale(np.concatenate([rows.signals[x:y] for x, y in zip(lo, last)]))  # at once
        yield from encode_chunks(
            np.split(scaled, np.cumsum(last - lo)[:-1]), found.contexts[part], found.positions[part],
            [rows.label[x:y] for x, y in zip(first, last)], *key,
            rows.time[first], rows.time[last - 1])
