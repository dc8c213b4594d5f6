"""The sequence layout's arithmetic (docs/DESIGN.md "Layouts"): chunks of a segment, the windows
a reader cuts from them, and how many there are, per class and per shard, from stats.json alone.

A segment of n rows (a recording's rows in time order, cut at gaps > max_gap) is cut into chunks:
chunk j holds the segment's rows [j*C, min((j+1)*C, n)), C = `chunk_rows`. A chunk's record also
holds k = min(W-1, position) rows of the same segment before it (W = stats.json `window`).

The windows of (W', s), W' <= W, whose LAST row is in a chunk at `position` with c rows: starts
st = 0, s, 2s, ... (segment rows) with st + W' - 1 in [position, position + c); the window's rows
are the record's rows [st - position + k, st - position + k + W'), its label the chunk's
labels[st + W' - 1 - position]. Over a segment's chunks these are the windows of the Windows
contract, each once.

stats.json of a sequence folder describes each shard's records, in file order, as
`chunks`: [[position, c, [[label index, rows], ...]], ...] (the label runs of the chunk's rows in
order). Pure python/numpy: no TensorFlow import.
"""

from typing import Any, Dict, Iterator, List, NamedTuple, Sequence, Tuple

import numpy as np

from tfrecords_schema.record import LABEL_VOCABULARY, NUM_CLASSES

WINDOWS = "windows"
SEQUENCE = "sequence"
LAYOUTS = (WINDOWS, SEQUENCE)
# --chunk-rows: at W=256, F=23 a chunk's record is 1.07x the float32 size of its scaled rows (the
# 255 context rows are stored once more per chunk); 2,048 would be 1.14x, too close to the 1.15x
# that the sequence layout was built to stay under.
DEFAULT_CHUNK_ROWS = 4096


def layout_of(stats: Dict[str, Any]) -> str:
    """A stats.json's layout (`windows` or `sequence`)."""
    return stats["layout"]


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

    `bounds`: the recording's segments, int64 [K, 2] (beam_jobs.windows.recording_segments). Chunk i of a
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
    seg = np.concatenate([np.full(max(h - low, 0), k, dtype=np.int64) for k, (low, h) in enumerate(zip(lo, hi))]
                         + [np.zeros(0, np.int64)])
    i = np.concatenate([np.arange(low, h, dtype=np.int64) for low, h in zip(lo, hi)] + [np.zeros(0, np.int64)])
    positions = i * chunk_rows
    starts = a[seg] + positions
    return Chunks(starts, np.minimum(starts + chunk_rows, e[seg]), positions,
                  np.minimum(window - 1, positions), before[seg] + i)


def chunk_bounds(n: int, chunk_rows: int) -> Iterator[Tuple[int, int]]:
    """The chunks of one segment of n rows: [(position, stop)], chunk j = rows [j*C, min((j+1)*C, n))
    (`chunks_ending_in` over the whole segment)."""
    found = chunks_ending_in(np.array([[0, n]], np.int64), 0, n, chunk_rows, 1)
    return [(int(a), int(b)) for a, b in zip(found.starts, found.stops)]


def context_rows(position: int, window: int) -> int:
    """k = min(W-1, position): the rows of the same segment a chunk's record holds before it."""
    return min(window - 1, position)


def label_runs(labels: Sequence[int]) -> List[List[int]]:
    """[[label, rows], ...]: the runs of equal labels in order (labels change rarely)."""
    labels = np.asarray(labels, dtype=np.int64)
    if not len(labels):
        return []
    edges = np.flatnonzero(np.diff(labels)) + 1
    starts = np.concatenate([[0], edges])
    stops = np.append(edges, len(labels))
    return [[int(labels[a]), int(b - a)] for a, b in zip(starts, stops)]


def chunk_summary(position: int, labels: Sequence[int]) -> List[Any]:
    """A chunk as stats.json lists it: [position, c, label runs]."""
    return [int(position), len(labels), label_runs(labels)]


def _ends_below(x: np.ndarray, window: int, stride: int) -> np.ndarray:
    """How many window ends (segment rows W'-1 + i*s, i >= 0) are < x."""
    return np.maximum(0, -((window - 1 - x) // stride))


def chunk_window_ends(position: int, rows: int, window: int, stride: int) -> np.ndarray:
    """The segment rows (int64, ascending) that end a window of (window, stride) inside the chunk
    [position, position + rows); the window starting at st ends at st + window - 1."""
    first = _ends_below(np.int64(position), window, stride)
    last = _ends_below(np.int64(position + rows), window, stride)
    return window - 1 + stride * np.arange(first, last, dtype=np.int64)


def chunks_class_counts(chunks: Sequence[Sequence[Any]], window: int, stride: int) -> np.ndarray:
    """int64 [NUM_CLASSES]: the windows of (window, stride) ending in `chunks` (stats.json's
    [position, c, runs] entries) per label index."""
    starts, stops, labels = [], [], []
    for position, rows, runs in chunks:
        at = position
        for label, length in runs:
            starts.append(at)
            stops.append(at + length)
            labels.append(label)
            at += length
        if at != position + rows:
            raise ValueError(f"chunk at position {position}: label runs cover {at - position} rows, not {rows}")
    per_run = (_ends_below(np.asarray(stops, dtype=np.int64), window, stride)
               - _ends_below(np.asarray(starts, dtype=np.int64), window, stride))
    return np.bincount(np.asarray(labels, dtype=np.int64), weights=per_run,
                       minlength=NUM_CLASSES).astype(np.int64)


def _count_dict(counts: np.ndarray) -> Dict[str, int]:
    return {name: int(counts[i]) for i, name in enumerate(LABEL_VOCABULARY)}


def _positive_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1


def window_counts(stats: Dict[str, Any], split: str, window: int, stride: int) -> Dict[str, Any]:
    """The windows of (window, stride) a reader gets from `split` of the folder `stats` describes:
    {"num_windows": n, "class_counts": {"A": n, ...}, "shards": [{"file": f, "num_windows": n}, ...]}
    (shards in stats.json's order; every class of LABEL_VOCABULARY named).

    A windows-layout folder holds one (window, stride): its own numbers for those, ValueError for
    any other. A sequence folder: exact counts for any 1 <= window <= stats["window"] and
    stride >= 1, from stats.json alone; ValueError otherwise.
    """
    if split not in stats["splits"]:
        raise ValueError(f"unknown split {split!r}; stats.json has {sorted(stats['splits'])}")
    entry = stats["splits"][split]
    if layout_of(stats) == WINDOWS:
        if (window, stride) != (stats["window"], stats["stride"]):
            raise ValueError(f"a windows-layout folder holds only window {stats['window']}, stride "
                             f"{stats['stride']}; asked for window {window}, stride {stride} (preprocess "
                             "with --layout sequence to choose them at read time)")
        return {"num_windows": entry["num_windows"],
                "class_counts": {name: entry["class_counts"].get(name, 0) for name in LABEL_VOCABULARY},
                "shards": [{"file": s["file"], "num_windows": s["num_windows"]} for s in entry["shards"]]}
    if layout_of(stats) != SEQUENCE:
        raise ValueError(f"unknown layout {layout_of(stats)!r}; expected one of {LAYOUTS}")
    if not (_positive_int(window) and _positive_int(stride) and window <= stats["window"]):
        raise ValueError(f"window ({window}) must be in 1..{stats['window']} (the folder's --window) and "
                         f"stride ({stride}) >= 1")
    total = np.zeros(NUM_CLASSES, dtype=np.int64)
    shard_list = []
    for shard in entry["shards"]:
        counts = chunks_class_counts(shard["chunks"], window, stride)
        total += counts
        shard_list.append({"file": shard["file"], "num_windows": int(counts.sum())})
    return {"num_windows": int(total.sum()), "class_counts": _count_dict(total), "shards": shard_list}
