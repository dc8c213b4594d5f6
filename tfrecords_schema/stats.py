"""`OUT/stats.json`: what a preprocess run produced, read by every consumer of its output.

It is written last (atomically: a temporary name, then a rename), so its presence means the run
completed. Readers learn window size, features, scaling and class counts from it rather than from
constants. `validate_stats` checks every field and the arithmetic between them.

`inputs` accounts for every input file: rows read = rows used + rows rejected. Runs before it
existed wrote none; such a stats.json is still valid. The same holds for two later additions:
  - each shard's `sha256`, the digest of the shard file's bytes (`crewstream verify` checks it);
    a stats.json lists it for every shard or for none;
  - each split's `segments` (time segments of its recordings, docs/DESIGN.md "Windows") and
    `short_segments` (those shorter than `window`, which give no window): the split has windows
    exactly when some segment is not short, and rows exactly when it has segments.
And `layout` (docs/DESIGN.md "Layouts"): `windows` or `sequence` (required: a stats.json without it
was written by an older crewstream and is refused). `splits` holds train and eval, and val when
preprocess was given `--val-crews` (output_folder.splits_of).
A sequence folder also has `chunk_rows`, per split `num_chunks`, and per shard {file, num_chunks,
sha256, chunks} instead of {file, num_windows, sha256}: `chunks` lists each record, in file order,
as [position, c, [[label index, rows], ...]] (tfrecords_schema.sequence, whose window_counts counts
the windows of any W' <= window and stride from it); the split's `num_windows` and `class_counts`
are those of the folder's `window` and `stride`.
"""

import json
import re
from typing import Any, Dict, List

from tfrecords_schema import sequence, file_io, output_folder
from tfrecords_schema.record import LABEL_VOCABULARY

SCALES = ("zscore", "minmax")
SCALE_PARAMS = {"zscore": ("mean", "std"), "minmax": ("min", "range")}

_TOP_LEVEL = {
    "window": int, "stride": int, "max_gap": (int, float), "features": list,
    "label_vocabulary": list, "scale": str, "scaling": dict, "compression": str,
    "rejected_rows": int, "splits": dict,
}
_SPLIT_FIELDS = {
    "crews": list, "num_rows": int, "num_windows": int, "class_counts": dict, "shards": list,
}
_INPUT_FIELDS = {"file": str, "rows_read": int, "rows_used": int, "rows_rejected": int}
_SEGMENT_FIELDS = {"segments": int, "short_segments": int}
_SHA256 = re.compile(r"[0-9a-f]{64}")


class StatsError(ValueError):
    """stats.json is missing, unreadable or inconsistent."""


def _check(cond: bool, where: str, message: str) -> None:
    if not cond:
        raise StatsError(f"stats.json: {where}: {message}")


def _check_fields(obj: Dict[str, Any], fields: Dict[str, Any], where: str) -> None:
    for key, kind in fields.items():
        _check(key in obj, where, f"missing field {key!r}")
        _check(isinstance(obj[key], kind) and not isinstance(obj[key], bool), f"{where}.{key}",
               f"expected {kind}, got {type(obj[key]).__name__}")


def _validate_split(name: str, split: Dict[str, Any], compression: str, count_key: str = "num_windows") -> None:
    """`count_key`: what a shard counts, `num_windows` (windows layout) or `num_chunks` (sequence)."""
    where = f"splits.{name}"
    _check_fields(split, _SPLIT_FIELDS, where)
    counts = split["class_counts"]
    _check(set(counts) <= set(LABEL_VOCABULARY), f"{where}.class_counts",
           f"unknown labels {sorted(set(counts) - set(LABEL_VOCABULARY))}")
    _check(all(isinstance(v, int) and v >= 0 for v in counts.values()), f"{where}.class_counts",
           "counts must be non-negative integers")
    _check(sum(counts.values()) == split["num_windows"], f"{where}.class_counts",
           f"sum {sum(counts.values())} != num_windows {split['num_windows']}")
    total = 0
    suffix = output_folder.COMPRESSIONS[compression]
    for i, shard in enumerate(split["shards"]):
        _check(isinstance(shard, dict) and {"file", count_key} <= set(shard),
               f"{where}.shards[{i}]", f"expected {{file, {count_key}}}")
        _check(shard["file"].startswith(name + "/") and shard["file"].endswith(suffix),
               f"{where}.shards[{i}].file", f"{shard['file']!r} is not a {name}/*{suffix} shard")
        _check("sha256" not in shard or (isinstance(shard["sha256"], str) and _SHA256.fullmatch(shard["sha256"])),
               f"{where}.shards[{i}].sha256", "expected 64 lowercase hex digits")
        total += shard[count_key]
    _check_fields(split, {count_key: int}, where)
    _check(total == split[count_key], f"{where}.shards",
           f"shard counts sum to {total}, {count_key} is {split[count_key]}")
    if any(key in split for key in _SEGMENT_FIELDS):
        _validate_segments(where, split)


def _validate_segments(where: str, split: Dict[str, Any]) -> None:
    """0 <= short_segments <= segments; windows exactly when a segment is not short; rows
    exactly when there are segments."""
    _check_fields(split, _SEGMENT_FIELDS, where)
    segments, short = split["segments"], split["short_segments"]
    _check(0 <= short <= segments, f"{where}.short_segments", f"{short} is not within 0..segments ({segments})")
    _check((split["num_windows"] > 0) == (segments > short), f"{where}.short_segments",
           f"{short} of {segments} segment(s) shorter than the window, yet {split['num_windows']} window(s)")
    _check((split["num_rows"] > 0) == (segments > 0), f"{where}.segments",
           f"{segments} segment(s) for {split['num_rows']} row(s)")


def _validate_chunks(where: str, chunks: Any, chunk_rows: int) -> None:
    """[[position, c, [[label, rows], ...]], ...]: position a multiple of chunk_rows, 1 <= c <=
    chunk_rows, runs of known labels covering the c rows."""
    _check(isinstance(chunks, list), where, "expected a list of [position, c, label runs]")
    labels = range(len(LABEL_VOCABULARY))
    for j, chunk in enumerate(chunks):
        here = f"{where}[{j}]"
        ok = isinstance(chunk, list) and len(chunk) == 3 and all(_is_int(v) for v in chunk[:2]) \
            and isinstance(chunk[2], list) and all(isinstance(r, list) and len(r) == 2 and all(map(_is_int, r))
                                                   for r in chunk[2])
        _check(ok, here, "expected [position, c, [[label, rows], ...]] of integers")
        position, rows, runs = chunk
        _check(position >= 0 and position % chunk_rows == 0 and 1 <= rows <= chunk_rows, here,
               f"position {position} must be a multiple of chunk_rows ({chunk_rows}) and c ({rows}) in 1..{chunk_rows}")
        _check(all(label in labels and length >= 1 for label, length in runs) and sum(r[1] for r in runs) == rows,
               here, f"label runs {runs} must be of labels 0..{len(labels) - 1} and cover its {rows} rows")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate_sequence(stats: Dict[str, Any]) -> None:
    """A sequence folder's chunk summaries are well formed and count, at the folder's window and
    stride, the windows each split's `class_counts` give."""
    _check_fields(stats, {"chunk_rows": int}, "top level")
    _check(stats["chunk_rows"] >= 1, "chunk_rows", "must be >= 1")
    for name in output_folder.splits_of(stats):
        split = stats["splits"][name]
        for i, shard in enumerate(split["shards"]):
            where = f"splits.{name}.shards[{i}]"
            _check("chunks" in shard, where, "missing field 'chunks'")
            _validate_chunks(f"{where}.chunks", shard["chunks"], stats["chunk_rows"])
            _check(len(shard["chunks"]) == shard["num_chunks"], f"{where}.num_chunks",
                   f"{shard['num_chunks']} for {len(shard['chunks'])} listed chunk(s)")
        counted = sequence.window_counts(stats, name, stats["window"], stats["stride"])
        listed = {label: split["class_counts"].get(label, 0) for label in LABEL_VOCABULARY}
        _check(counted["class_counts"] == listed, f"splits.{name}.class_counts",
               f"{listed} differ from the windows its chunks give at window {stats['window']}, stride "
               f"{stats['stride']}: {counted['class_counts']}")


def _validate_inputs(stats: Dict[str, Any]) -> None:
    """Per input file rows read = used + rejected; over all files, used rows are the splits' rows
    and rejected rows are `rejected_rows`."""
    inputs = stats["inputs"]
    _check(isinstance(inputs, list), "inputs", "expected a list")
    for i, entry in enumerate(inputs):
        where = f"inputs[{i}]"
        _check(isinstance(entry, dict), where, "expected {file, rows_read, rows_used, rows_rejected}")
        _check_fields(entry, _INPUT_FIELDS, where)
        _check(min(entry["rows_read"], entry["rows_used"], entry["rows_rejected"]) >= 0, where,
               "counts must be non-negative")
        _check(entry["rows_read"] == entry["rows_used"] + entry["rows_rejected"], where,
               f"{entry['file']}: rows_read {entry['rows_read']} != rows_used {entry['rows_used']} + "
               f"rows_rejected {entry['rows_rejected']}")
    files = [entry["file"] for entry in inputs]
    _check(len(set(files)) == len(files), "inputs", "a file is listed twice")
    used = sum(stats["splits"][name]["num_rows"] for name in output_folder.splits_of(stats))
    _check(sum(e["rows_used"] for e in inputs) == used, "inputs",
           f"rows_used sum to {sum(e['rows_used'] for e in inputs)}, the splits hold {used} rows")
    _check(sum(e["rows_rejected"] for e in inputs) == stats["rejected_rows"], "inputs",
           f"rows_rejected sum to {sum(e['rows_rejected'] for e in inputs)}, "
           f"rejected_rows is {stats['rejected_rows']}")


def validate_stats(stats: Dict[str, Any]) -> Dict[str, Any]:
    """Raise StatsError naming the first bad field; return `stats` unchanged when valid."""
    _check(isinstance(stats, dict), "top level", "expected an object")
    _check_fields(stats, _TOP_LEVEL, "top level")
    _check(stats["window"] >= 1 and stats["stride"] >= 1, "window/stride", "must be >= 1")
    _check(list(stats["label_vocabulary"]) == list(LABEL_VOCABULARY), "label_vocabulary",
           f"expected {list(LABEL_VOCABULARY)}")
    _check(stats["scale"] in SCALES, "scale", f"expected one of {SCALES}")
    _check(stats["compression"] in output_folder.COMPRESSIONS, "compression",
           f"expected one of {sorted(output_folder.COMPRESSIONS)}")
    features = stats["features"]
    _check(len(features) >= 1 and len(set(features)) == len(features), "features",
           "must be a non-empty list of distinct names")
    params = SCALE_PARAMS[stats["scale"]]
    for name in features:
        entry = stats["scaling"].get(name)
        _check(isinstance(entry, dict) and set(params) <= set(entry), f"scaling.{name}",
               f"expected {{{', '.join(params)}}}")
    _check("layout" in stats, "layout",
           "missing: written by an older crewstream; run preprocess again into a new folder")
    _check(sequence.layout_of(stats) in sequence.LAYOUTS, "layout", f"expected one of {sequence.LAYOUTS}")
    _check(set(output_folder.REQUIRED_SPLITS) <= set(stats["splits"]) <= set(output_folder.SPLITS), "splits",
           f"expected {list(output_folder.REQUIRED_SPLITS)} and optionally {output_folder.VAL!r}")
    count_key = "num_chunks" if sequence.layout_of(stats) == sequence.SEQUENCE else "num_windows"
    for name in output_folder.splits_of(stats):
        _validate_split(name, stats["splits"][name], stats["compression"], count_key)
    if sequence.layout_of(stats) == sequence.SEQUENCE:
        _validate_sequence(stats)
    listed = [("sha256" in shard) for name in output_folder.splits_of(stats)
              for shard in stats["splits"][name]["shards"]]
    _check(all(listed) or not any(listed), "shards", "sha256 is listed for some shards and not for others")
    if "inputs" in stats:
        _validate_inputs(stats)
    return stats


def read_stats(out_dir: str) -> Dict[str, Any]:
    """Load and validate OUT/stats.json; StatsError if absent (the run did not complete) or bad."""
    import tensorflow as tf

    path = file_io.join(out_dir, output_folder.STATS_FILE)
    if not tf.io.gfile.exists(path):
        raise StatsError(f"{path} not found: {out_dir} is not the output of a completed preprocess run")
    with tf.io.gfile.GFile(path, "r") as f:
        try:
            stats = json.load(f)
        except json.JSONDecodeError as e:
            raise StatsError(f"{path}: not valid JSON ({e})") from None
    return validate_stats(stats)


def write_stats(out_dir: str, stats: Dict[str, Any]) -> str:
    """Validate, then write OUT/stats.json atomically; return its path."""
    validate_stats(stats)
    path = file_io.join(out_dir, output_folder.STATS_FILE)
    file_io.write_atomic(path, dumps(stats))
    return path


def dumps(stats: Dict[str, Any]) -> str:
    """stats.json's text: indented JSON, but a sequence folder's chunk summaries one per line
    ([position, c, runs] indented would take a dozen lines each)."""
    compact, placeholders = json.loads(json.dumps(stats)), {}
    for split in compact.get("splits", {}).values():
        for shard in split.get("shards", []):
            if isinstance(shard, dict) and "chunks" in shard:
                for j, chunk in enumerate(shard["chunks"]):
                    key = f"@chunk-{len(placeholders)}@"
                    placeholders[json.dumps(key)] = json.dumps(chunk, separators=(",", ":"))
                    shard["chunks"][j] = key
    text = json.dumps(compact, indent=2, sort_keys=False)
    if placeholders:
        text = re.sub(r'"@chunk-\d+@"', lambda m: placeholders[m.group(0)], text)
    return text + "\n"


def shard_files(out_dir: str, stats: Dict[str, Any], split: str) -> List[str]:
    """Full paths of the split's shards, exactly those stats.json lists (never a glob)."""
    return [file_io.join(out_dir, s["file"]) for s in stats["splits"][split]["shards"]]
