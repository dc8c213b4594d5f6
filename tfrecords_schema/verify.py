"""Is OUT a complete, intact preprocess output? (`verify(OUT) -> Report`; the command line,
`crewstream verify OUT` / `python -m crewstream.verify`, is crewstream/verify.py.)

Checks, against OUT/stats.json (which must be present and valid):
  - every listed shard exists and reads to its end: each record's TFRecord framing (length,
    masked CRC32C of the length, data, masked CRC32C of the data), no bytes after the last record,
    and for `.gz` shards an intact gzip stream;
  - every listed shard's bytes have the sha256 stats.json lists for it (a shard of another run,
    or two shards swapped, pass every other check);
  - `tft.TFTransformOutput(OUT)` loads and its graph runs; it takes as many signals as stats.json
    has `features` and applies, feature by feature in that order, exactly stats.json's `scaling`
    (read back from the graph by tfrecords_schema.transform_graph);
  - `tft.TFTransformOutput(OUT).raw_feature_spec()` loads (OUT/metadata) and is the raw spec the
    job analyzed (tfrecords_schema.raw_signals_spec of stats.json's features); an output written
    before OUT/metadata existed gets a note instead;
  - every record parses with the schema's spec (tfrecords_schema.record), its label is in the
    vocabulary and its crew belongs to the split;
  - records per shard, and per class per split, equal the counts stats.json gives;
  - a sequence folder (docs/DESIGN.md "Layouts"): each chunk record parses with the chunk spec,
    holds k = min(W-1, position) context rows and is, in position, rows and labels, the chunk
    stats.json lists at its place; the per-class counts are those of the windows of the folder's
    window and stride cut from the records;
  - no shard file sits in train/ or eval/ without being listed (a reader would never see it).
Every problem names the shard and, for a bad record, its index (0-based, in file order) and
its byte offset (in the uncompressed stream).

The framing is read here rather than through tf.data: TFRecordDataset reports a CRC failure
without the record's index, and reads a shard cut inside a record header as a shorter, valid one.
CRC32C comes from google-crc32c, installed with apache-beam[gcp] (google-cloud-storage needs it).
"""

import dataclasses
import gzip
import hashlib
import posixpath
import struct
import zlib
from typing import Any, BinaryIO, Dict, Iterator, List

import google_crc32c

from tfrecords_schema import file_io, output_folder
from tfrecords_schema import sequence
from tfrecords_schema.record import (CONTEXT, CREW, LABEL, LABEL_VOCABULARY, LABELS, POSITION, ROWS, parse_chunks,
                                     parse_examples)
from tfrecords_schema.stats import SCALE_PARAMS, StatsError, read_stats

PARSE_BATCH = 1024  # records parsed at once
COPY_BLOCK = 16 << 20  # bytes read at once to finish a shard's digest
_HEADER = 12  # uint64 length + uint32 masked CRC32C of the length
_FOOTER = 4  # uint32 masked CRC32C of the data


class CorruptRecord(Exception):
    """Record `index` of a shard, starting at byte `offset`, is unreadable."""

    def __init__(self, index: int, offset: int, reason: str):
        super().__init__(f"record {index} (byte {offset:,}): {reason}")
        self.index, self.offset, self.reason = index, offset, reason


def mask_crc32c(crc):
    """TFRecord's mask of a CRC32C: rotated right by 15 plus a constant, as uint32 (a Python int, or
    element-wise a numpy uint64 array of them)."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The checksum TFRecord framing stores for `data`."""
    return mask_crc32c(google_crc32c.value(data))


def _read_exact(f: BinaryIO, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        part = f.read(n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def read_records(f: BinaryIO) -> Iterator[bytes]:
    """The records of an uncompressed TFRecord stream, every CRC checked.

    Raises CorruptRecord at the first bad record; a stream that ends inside a record (its header
    included) is a truncation, never a shorter valid file.
    """
    index = offset = 0
    while True:
        header = _read_exact(f, _HEADER)
        if not header:
            return
        if len(header) < _HEADER:
            raise CorruptRecord(index, offset, f"truncated: {len(header)} byte(s) of a record header at the end")
        length, length_crc = struct.unpack("<QI", header)
        if masked_crc32c(header[:8]) != length_crc:
            raise CorruptRecord(index, offset, "length CRC mismatch (corrupted record header)")
        body = _read_exact(f, length + _FOOTER)
        if len(body) < length + _FOOTER:
            raise CorruptRecord(index, offset, f"truncated: the record needs {length + _FOOTER:,} byte(s) "
                                               f"after its header, {len(body):,} remain")
        data, (data_crc,) = body[:length], struct.unpack("<I", body[length:])
        if masked_crc32c(data) != data_crc:
            raise CorruptRecord(index, offset, "data CRC mismatch (corrupted record)")
        yield data
        index += 1
        offset += _HEADER + length + _FOOTER


@dataclasses.dataclass
class ShardResult:
    file: str  # as listed in stats.json, relative to OUT
    num_records: int = 0
    class_counts: List[int] = dataclasses.field(default_factory=lambda: [0] * len(LABEL_VOCABULARY))
    problems: List[str] = dataclasses.field(default_factory=list)


class _Hashing:
    """A binary file whose bytes, as they are read, go into a sha256 too."""

    def __init__(self, f: BinaryIO):
        self._f, self.digest = f, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.digest.update(data)
        return data

    def hexdigest(self) -> str:
        """The digest of the whole file: what was not read yet is read first."""
        while self.read(COPY_BLOCK):
            pass
        return self.digest.hexdigest()

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _open_records(path: str, compression: str):
    import tensorflow as tf

    raw = _Hashing(tf.io.gfile.GFile(path, "rb"))
    return raw, (gzip.GzipFile(fileobj=raw, mode="rb") if compression == "GZIP" else raw)


class _Batch:
    """Serialized records waiting to be parsed, with the index of the first."""

    def __init__(self):
        self.first, self.records = 0, []


def check_shard(out_dir: str, entry: Dict[str, Any], split: str, stats: Dict[str, Any]) -> ShardResult:
    """Read one listed shard to its end; count its records and labels; collect its problems."""
    import tensorflow as tf

    result = ShardResult(entry["file"])
    path = file_io.join(out_dir, entry["file"])
    if not tf.io.gfile.exists(path):
        result.problems.append(f"{entry['file']}: listed in stats.json but missing")
        return result
    crews = frozenset(stats["splits"][split]["crews"])
    batch = _Batch()
    raw, records = _open_records(path, stats["compression"])
    try:
        with raw:
            for data in read_records(records):
                batch.records.append(data)
                if len(batch.records) == PARSE_BATCH:
                    _parse_batch(batch, stats, crews, result, entry)
            digest = raw.hexdigest()
        if "sha256" in entry and digest != entry["sha256"]:
            result.problems.append(f"{entry['file']}: its bytes are not the shard stats.json lists (sha256 "
                                   f"{digest[:16]}..., listed {entry['sha256'][:16]}...): replaced or moved")
    except CorruptRecord as e:
        result.problems.append(f"{entry['file']}: {e}")
    except (EOFError, OSError, zlib.error) as e:  # gzip: truncated stream, bad data or CRC
        result.problems.append(f"{entry['file']}: record {result.num_records + len(batch.records)}: "
                               f"unreadable gzip stream ({e})")
    _parse_batch(batch, stats, crews, result, entry)
    count_key = "num_chunks" if sequence.layout_of(stats) == sequence.SEQUENCE else "num_windows"
    if not result.problems and result.num_records != entry[count_key]:
        result.problems.append(f"{entry['file']}: {result.num_records:,} record(s), stats.json lists "
                               f"{entry[count_key]:,}")
    return result


def _parser(stats: Dict[str, Any]):
    """serialized records (a list of bytes) -> the schema's parse of them, for the folder's layout."""
    import tensorflow as tf

    window, num_features = stats["window"], len(stats["features"])
    if sequence.layout_of(stats) == sequence.SEQUENCE:
        return lambda records: parse_chunks(tf.constant(records), num_features)
    return lambda records: parse_examples(tf.constant(records), window, num_features)


def _chunk_labels(parsed: Dict[str, Any], batch: _Batch, stats: Dict[str, Any], entry: Dict[str, Any],
                  result: ShardResult):
    """A batch of chunk records -> (every row's label, the record of each, the labels of the
    windows of the folder's window and stride); a record that is not the chunk stats.json lists at
    its place, or whose context is not min(W-1, position) rows, is a problem."""
    import numpy as np

    window, stride = stats["window"], stats["stride"]
    labels = parsed[LABELS]
    positions, contexts = parsed[POSITION].numpy(), parsed[CONTEXT].numpy()
    rows = parsed[ROWS].row_lengths().numpy()
    windows = []
    for i, chunk_labels in enumerate(labels.numpy()):
        index, position, c = batch.first + i, int(positions[i]), len(chunk_labels)
        found = [position, c, sequence.label_runs(chunk_labels)]
        listed = entry["chunks"][index] if index < len(entry["chunks"]) else None
        if found != listed:
            result.problems.append(f"{result.file}: record {index}: chunk {found} is not the one stats.json lists "
                                   f"there ({listed})")
        if contexts[i] != sequence.context_rows(position, window) or rows[i] != contexts[i] + c:
            result.problems.append(f"{result.file}: record {index}: {rows[i]} row(s) with context {contexts[i]} for "
                                   f"{c} label(s) at position {position} (expected context "
                                   f"{sequence.context_rows(position, window)})")
        windows.append(chunk_labels[sequence.chunk_window_ends(position, c, window, stride) - position])
    return labels.flat_values.numpy(), labels.value_rowids().numpy(), np.concatenate(windows)


def _parse_batch(batch: _Batch, stats: Dict[str, Any], crews: frozenset, result: ShardResult,
                 entry: Dict[str, Any]) -> None:
    """Parse the pending records with the schema; count labels (of windows, for a sequence
    folder: those of its window and stride); name any record that fails."""
    import numpy as np
    import tensorflow as tf

    if not batch.records:
        return
    parse = _parser(stats)
    try:
        parsed = parse(batch.records)
    except tf.errors.InvalidArgumentError:
        parsed = None
    if parsed is None:  # find the first record that does not parse
        for i, record in enumerate(batch.records):
            try:
                parse([record])
            except tf.errors.InvalidArgumentError as e:
                result.problems.append(f"{result.file}: record {batch.first + i}: does not parse with "
                                       f"the schema ({e.message.splitlines()[0]})")
                break
    else:
        record_crews = parsed[CREW].numpy()
        if sequence.layout_of(stats) == sequence.SEQUENCE:
            labels, record_of, counted = _chunk_labels(parsed, batch, stats, entry, result)
        else:
            labels = counted = parsed[LABEL].numpy()
            record_of = np.arange(len(labels))
        bad = np.flatnonzero((labels < 0) | (labels >= len(LABEL_VOCABULARY)))
        if len(bad):
            result.problems.append(f"{result.file}: record {batch.first + record_of[bad[0]]}: label "
                                   f"{labels[bad[0]]} is not in {list(LABEL_VOCABULARY)}")
        foreign = np.flatnonzero(~np.isin(record_crews, list(crews)))
        if len(foreign):
            result.problems.append(f"{result.file}: record {batch.first + foreign[0]}: crew "
                                   f"{record_crews[foreign[0]]} is not one of this split's crews {sorted(crews)}")
        counts = np.bincount(counted[(counted >= 0) & (counted < len(LABEL_VOCABULARY))],
                             minlength=len(LABEL_VOCABULARY))
        result.class_counts = [a + int(b) for a, b in zip(result.class_counts, counts)]
    result.num_records += len(batch.records)
    batch.first += len(batch.records)
    batch.records = []


def check_transform(out_dir: str, stats: Dict[str, Any]) -> List[str]:
    """Problems with OUT's transform graph: it does not load or run (`tft.TFTransformOutput(OUT)`
    and a transform of two probe rows), it takes another number of signals than stats.json's
    `features`, or what it applies to a feature is not that feature's `scaling` in stats.json
    (the shift to 1e-6 of the divisor, the divisor to 1e-6 of itself)."""
    import numpy as np
    import tensorflow_transform as tft

    from tfrecords_schema import transform_graph

    features, (shift_name, divisor_name) = stats["features"], SCALE_PARAMS[stats["scale"]]
    try:
        output = tft.TFTransformOutput(out_dir)
        width = transform_graph.num_features(output)
        if width != len(features):
            return [f"features: stats.json lists {len(features)}, the transform graph takes {width} signal(s)"]
        applied = transform_graph.scaling_stats(output, features, stats["scale"])
    except Exception as e:  # whatever stops the graph loading or running is the finding
        reason = (str(e).strip().splitlines() or [""])[0][:300]
        return [f"{output_folder.TRANSFORM_FN_DIR}/: tft.TFTransformOutput(OUT) does not load or run "
                f"({type(e).__name__}: {reason})"]
    problems = []
    for i, name in enumerate(features):
        listed, graph = stats["scaling"][name], applied[name]
        divisor = abs(graph[divisor_name])
        if not (np.isclose(listed[shift_name], graph[shift_name], rtol=0, atol=1e-6 * divisor)
                and np.isclose(listed[divisor_name], graph[divisor_name], rtol=1e-6, atol=0)):
            problems.append(
                f"scaling.{name}: stats.json says {shift_name} {listed[shift_name]:.9g}, {divisor_name} "
                f"{listed[divisor_name]:.9g}; the transform graph applies {graph[shift_name]:.9g}, "
                f"{graph[divisor_name]:.9g} to signal {i} (`features` lists {name} there)")
    return problems


def check_raw_metadata(out_dir: str, stats: Dict[str, Any]) -> List[str]:
    """Problems with OUT/metadata: `tft.TFTransformOutput(OUT).raw_feature_spec()` does not load,
    or is not raw_signals_spec of stats.json's features (the graph's input)."""
    import tensorflow_transform as tft

    from tfrecords_schema.record import raw_signals_spec

    try:
        found = tft.TFTransformOutput(out_dir).raw_feature_spec()
    except Exception as e:  # whatever stops it loading is the finding
        reason = (str(e).strip().splitlines() or [""])[0][:300]
        return [f"{output_folder.RAW_METADATA_DIR}/: tft.TFTransformOutput(OUT).raw_feature_spec() does not load "
                f"({type(e).__name__}: {reason})"]
    expected = raw_signals_spec(len(stats["features"]))
    if found != expected:
        return [f"{output_folder.RAW_METADATA_DIR}/: the raw feature spec is {found}, expected {expected} "
                "(the graph's input for stats.json's features)"]
    return []


def unlisted_files(out_dir: str, stats: Dict[str, Any]) -> List[str]:
    """Files in OUT/train and OUT/eval that stats.json does not list (relative to OUT)."""
    import tensorflow as tf

    listed = {s["file"] for split in output_folder.splits_of(stats) for s in stats["splits"][split]["shards"]}
    found = []
    for split in output_folder.splits_of(stats):
        split_dir = file_io.join(out_dir, split)
        if tf.io.gfile.isdir(split_dir):
            found += [posixpath.join(split, name.rstrip("/")) for name in tf.io.gfile.listdir(split_dir)]
    return sorted(set(found) - listed)


def staging_folders(out_dir: str) -> List[str]:
    """`.staging-*` folders a killed preprocess run left in OUT (the next completed run removes them)."""
    import tensorflow as tf

    if not tf.io.gfile.isdir(out_dir):
        return []
    names = tf.io.gfile.listdir(out_dir)
    return sorted(name.rstrip("/") for name in names if name.startswith(output_folder.STAGING_PREFIX))


@dataclasses.dataclass
class Report:
    problems: List[str]
    notes: List[str]
    num_shards: int = 0
    num_records: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(out_dir: str) -> Report:
    """Check OUT against its stats.json (see the module docstring); never raises for bad data."""
    import tensorflow as tf

    try:
        stats = read_stats(out_dir)
    except StatsError as e:
        return Report([str(e)], [])
    report = Report([], [f"{name}: left by a killed run; not part of the output" for name in staging_folders(out_dir)])
    for name in (output_folder.TRANSFORM_FN_DIR, output_folder.TRANSFORMED_METADATA_DIR):
        if not tf.io.gfile.isdir(file_io.join(out_dir, name)):
            report.problems.append(f"{name}/: missing (tf.Transform's output)")
    if not report.problems:
        report.problems += check_transform(out_dir, stats)
    if not tf.io.gfile.isdir(file_io.join(out_dir, output_folder.RAW_METADATA_DIR)):
        report.notes.append(f"{output_folder.RAW_METADATA_DIR}/: absent (a run before it was written): "
                            "tft.TFTransformOutput(OUT).raw_feature_spec() is unavailable")
    else:
        report.problems += check_raw_metadata(out_dir, stats)
    if not any("sha256" in s for split in output_folder.splits_of(stats) for s in stats["splits"][split]["shards"]):
        report.notes.append("stats.json lists no shard digests (a run before they existed): shard contents "
                            "are checked by CRCs and counts only")
    for split in output_folder.splits_of(stats):
        counts = [0] * len(LABEL_VOCABULARY)
        complete = True
        for entry in stats["splits"][split]["shards"]:
            shard = check_shard(out_dir, entry, split, stats)
            report.problems += shard.problems
            report.num_shards += 1
            report.num_records += shard.num_records
            complete &= not shard.problems
            counts = [a + b for a, b in zip(counts, shard.class_counts)]
        expected = [stats["splits"][split]["class_counts"].get(c, 0) for c in LABEL_VOCABULARY]
        if complete and counts != expected:
            report.problems.append(f"{split}: class counts {dict(zip(LABEL_VOCABULARY, counts))} in the shards, "
                                   f"stats.json says {dict(zip(LABEL_VOCABULARY, expected))}")
    report.problems += [f"{name}: not listed in stats.json (no reader will read it)"
                        for name in unlisted_files(out_dir, stats)]
    return report
