"""Reading crew CSVs in line-aligned byte chunks, parsed by pyarrow into validated row batches.

Plain functions, no Beam: `ReadCrewCsv` (beam_jobs.transforms) is a thin shell around them.

A chunk is parsed with column types given (the fast path). Rows that cannot be used go to the
dead-letter output as `Reject`s naming file, line, column and reason; every other row of the chunk
is kept. Rows read = rows kept + rows rejected, line by line: empty lines are rows too.

`with_id=True` reads the test layout (crewstream predict): the `id` column must be in the header,
a row without an integer id is rejected, and the rows come as `IdRows` (`Rows` plus `id`).

Compressed files (`.gz`, `.bz2`) are decompressed with the standard library, which raises on a
stream that ends early or fails its checksum: Beam's decompressing reader returns the rows of a
truncated gzip without complaint. Such a file is a `CsvLayoutError`, never a silently short read.
"""

import bz2
import contextlib
import dataclasses
import gzip
import io
import zlib
from typing import BinaryIO, ContextManager, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from beam_jobs.columns import Columns
from tfrecords_schema import LABEL_VOCABULARY
from tfrecords_schema import csv_layout as cols

DEFAULT_CHUNK_BYTES = 16 << 20  # bytes parsed at once: one Beam element of rows
DEFAULT_SPLIT_BYTES = 64 << 20  # bytes of an uncompressed file one worker reads: the unit of parallelism
_INT_COLUMNS = (cols.CREW, cols.SEAT)
_STR_COLUMNS = (cols.EXPERIMENT, cols.EVENT)
_DECOMPRESSORS = {".gz": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
                  ".bz2": lambda raw: bz2.BZ2File(raw, mode="rb")}
_UNSUPPORTED_SUFFIXES = (".deflate", ".zst", ".zstd", ".xz", ".lzma")  # Beam knows them; we do not
# What a damaged compressed stream raises: EOFError (ends early), BadGzipFile / OSError (bad
# header or checksum), zlib.error (bad data).
_STREAM_ERRORS = (EOFError, OSError, zlib.error)


class CsvLayoutError(ValueError):
    """A file-level problem: the file cannot be read as a crew CSV at all."""


@dataclasses.dataclass(frozen=True)
class Reject:
    """One unusable input row: where it is and why it was not used."""

    file: str
    line: int
    column: str
    reason: str
    text: str


@dataclasses.dataclass
class Rows(Columns):
    """Validated rows of one chunk, columnar.

    crew, seat, label, line: int64 [n]; experiment: object (str) [n]; time: float64 [n];
    signals: float32 [n, F] in the order of `features`; source: int64 [n], the index of the
    row's file in the job's sorted file list (set by the reader; 0 from `parse_chunk`).
    """

    crew: np.ndarray
    seat: np.ndarray
    experiment: np.ndarray
    time: np.ndarray
    signals: np.ndarray
    label: np.ndarray
    line: np.ndarray
    source: np.ndarray


@dataclasses.dataclass
class IdRows(Rows):
    """Validated rows of a test-layout chunk: `Rows` plus id int64 [n], the file's `id` column."""

    id: np.ndarray


def is_compressed(path: str) -> bool:
    """True for `.gz` / `.bz2`: read whole by one worker, never split into byte ranges."""
    return path.lower().endswith(tuple(_DECOMPRESSORS))


def decompressed(raw: BinaryIO, path: str) -> ContextManager[BinaryIO]:
    """The decompressed stream of an open raw file (`raw` itself when uncompressed); closing it
    leaves `raw` open. CsvLayoutError for a compression we do not read."""
    lower = path.lower()
    for suffix, opener in _DECOMPRESSORS.items():
        if lower.endswith(suffix):
            return opener(raw)
    if lower.endswith(_UNSUPPORTED_SUFFIXES):
        raise CsvLayoutError(f"{path}: unsupported compression; use .csv, .csv.gz or .csv.bz2")
    return contextlib.nullcontext(raw)


@contextlib.contextmanager
def stream_errors_as_layout_errors(file: str) -> Iterator[None]:
    """A truncated or damaged compressed file is a file-level problem naming the file."""
    try:
        yield
    except _STREAM_ERRORS as e:
        if not is_compressed(file):
            raise
        raise CsvLayoutError(f"{file}: truncated or damaged compressed file ({e})") from e


def check_file(f: BinaryIO, file: str, features: Sequence[str], labelled: bool = True,
               with_id: bool = False, read_through: bool = False) -> List[str]:
    """The file-level checks, before any row is parsed: a usable header (`check_header`), at least
    one line after it, and with `read_through` (for compressed files) a stream that decompresses
    to its end. `f` is the decompressed stream. Returns the header's columns that are not part of
    the layout (ignored by the reader). CsvLayoutError otherwise."""
    with stream_errors_as_layout_errors(file):
        header = read_header(f, file)
        check_header(header, features, file, labelled, with_id)
        if not f.read(1):
            raise CsvLayoutError(f"{file}: header only, no data rows")
        while read_through and f.read(1 << 20):
            pass
    known = set(cols.KEY_COLUMNS + cols.SIGNALS) | ({cols.EVENT} if labelled else set()) | (
        {cols.ID} if with_id else set())
    return [name for name in header if name not in known]


def read_header(f: BinaryIO, file: str) -> List[str]:
    """Column names of the header line (UTF-8 BOM and CRLF tolerated)."""
    line = f.readline()
    if not line:
        raise CsvLayoutError(f"{file}: empty file (no header line)")
    try:
        text = line.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError:
        raise CsvLayoutError(f"{file}: the first line is not UTF-8 text (a binary or compressed file?)") from None
    return [name.strip() for name in text.split(",")]


def check_header(header: Sequence[str], features: Sequence[str], file: str, labelled: bool = True,
                 with_id: bool = False) -> None:
    """CsvLayoutError naming the missing columns, or the wrong layout, before anything is read."""
    needed = ([cols.ID] if with_id else []) + list(cols.KEY_COLUMNS) + list(features) + (
        [cols.EVENT] if labelled else [])
    missing = [name for name in needed if name not in header]
    if labelled and missing == [cols.EVENT] and cols.ID in header:
        raise CsvLayoutError(f"{file}: this is a test-layout file (an `id` column, no `event`); "
                             "preprocess needs labelled rows in the train layout")
    if with_id and missing == [cols.ID] and cols.EVENT in header:
        raise CsvLayoutError(f"{file}: this is a train-layout file (an `event` column, no `id`); "
                             "predict needs the test layout")
    if missing:
        raise CsvLayoutError(f"{file}: missing column(s) {', '.join(missing)} in header")
    dupes = sorted({name for name in header if header.count(name) > 1})
    if dupes:
        raise CsvLayoutError(f"{file}: duplicate column(s) {', '.join(dupes)} in header")


def iter_line_chunks(f: BinaryIO, chunk_bytes: int = DEFAULT_CHUNK_BYTES, first_line: int = 2,
                     start: int = 0, end: Optional[int] = None) -> Iterator[Tuple[int, bytes]]:
    """Yield (line number of the chunk's first line, bytes of whole lines).

    `f` is positioned at byte `start`, the start of line `first_line` (lines are 1-based as an
    editor shows them; the header is line 1). Only lines that START before byte `end` are
    yielded (all when `end` is None), so byte ranges that tile a file yield every line once.
    A last line without a newline is yielded as it is.
    """
    line, pos, rest = first_line, start, b""  # pos: the file offset of rest[0]
    if end is not None and start >= end:
        return
    while True:
        data = f.read(chunk_bytes)
        buf = rest + data
        if end is not None and pos + len(buf) >= end:
            # The buffer holds byte end-1: the range's last line ends at the next newline.
            newline = buf.find(b"\n", end - 1 - pos)
            if newline == -1 and data:
                rest = buf
                continue
            last = buf if newline == -1 else buf[:newline + 1]
            if last:
                yield line, last
            return
        if not data:
            if buf:
                yield line, buf
            return
        cut = buf.rfind(b"\n") + 1
        if cut == 0:
            rest = buf
            continue
        chunk, rest = buf[:cut], buf[cut:]
        yield line, chunk
        line += chunk.count(b"\n")
        pos += cut


def plan_ranges(size: Optional[int], split_bytes: int) -> List[Tuple[int, Optional[int]]]:
    """[start, end) byte ranges that tile a file of `size` bytes; one open range when the size
    is unknown or the file cannot be split (compressed)."""
    if size is None:
        return [(0, None)]
    return [(a, min(a + split_bytes, size)) for a in range(0, max(size, 1), split_bytes)]


def count_newlines(f: BinaryIO, start: int, end: int, block: int = 8 << 20) -> int:
    """Newlines in bytes [start, end) of a seekable file."""
    f.seek(start)
    count, remaining = 0, end - start
    while remaining > 0:
        data = f.read(min(block, remaining))
        if not data:
            break
        count += data.count(b"\n")
        remaining -= len(data)
    return count


def seek_first_line(f: BinaryIO, start: int, newlines_before: int) -> Tuple[int, int]:
    """Position `f` at the first line starting at or after byte `start` (> 0); return (its
    offset, its line number), given the number of newlines in bytes [0, start)."""
    f.seek(start - 1)
    skipped = f.readline()  # the rest of the line holding byte start-1, newline included
    offset = start - 1 + len(skipped)
    return offset, 1 + newlines_before + (1 if offset > start else 0)


def _column_types(header: Sequence[str], features: Sequence[str],
                  with_id: bool = False) -> Dict[str, pa.DataType]:
    types = {cols.ID: pa.int64()} if with_id else {}
    types.update({cols.CREW: pa.int64(), cols.SEAT: pa.int64(), cols.TIME: pa.float64(),
                  cols.EXPERIMENT: pa.string(), cols.EVENT: pa.string()})
    types.update({name: pa.float64() for name in features})
    return {k: v for k, v in types.items() if k in header}


def _read_table(chunk: bytes, header: Sequence[str], types: Dict[str, pa.DataType]):
    """Parse with the given types; returns (table, {chunk row index: reason}) for bad-shape rows."""
    bad_shape: Dict[int, str] = {}

    def on_invalid(row) -> str:
        bad_shape[row.number - 1] = f"expected {row.expected_columns} columns, found {row.actual_columns}"
        return "skip"

    table = pacsv.read_csv(
        io.BytesIO(chunk),
        read_options=pacsv.ReadOptions(column_names=list(header), use_threads=False),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid, ignore_empty_lines=False,
                                          newlines_in_values=False),
        convert_options=pacsv.ConvertOptions(column_types=types, include_columns=list(types),
                                             null_values=[""], strings_can_be_null=False),
    )
    return table, bad_shape


def _to_numeric(table: pa.Table, types: Dict[str, pa.DataType]) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """Columns as numpy; for a column that was read as text (slow path), a mask of unparsable cells."""
    values, unparsable = {}, {}
    for name, kind in types.items():
        column = table.column(name)
        if name in _STR_COLUMNS:
            values[name] = np.asarray(column.to_pylist(), dtype=object)
            continue
        if pa.types.is_string(column.type):  # slow path: this chunk had a non-numeric cell
            text = pd.Series(column.to_pylist(), dtype=object)
            parsed = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
            stripped = text.str.strip().str.lower()
            unparsable[name] = np.isnan(parsed) & (stripped != "nan").to_numpy() & (stripped != "").to_numpy()
            values[name] = parsed
            continue
        array = column.to_numpy(zero_copy_only=False)
        values[name] = array.astype(np.float64) if kind == pa.float64() else array
    return values, unparsable


def _first_problems(values, unparsable, features, labelled,
                    with_id: bool = False) -> List[Tuple[np.ndarray, str, str]]:
    """(bad-row mask, column, reason) in the order a row is checked; the first hit is reported."""
    n = len(values[cols.TIME])
    checks: List[Tuple[np.ndarray, str, str]] = []
    for name in unparsable:
        checks.append((unparsable[name], name, "not a number"))
    for name in ((cols.ID,) if with_id else ()) + _INT_COLUMNS:
        column = np.asarray(values[name], dtype=np.float64)
        checks.append((np.isnan(column), name, "missing value"))
        checks.append((~np.isnan(column) & (column != np.round(column)), name, "not an integer"))
    if with_id:  # a 20-digit id parses as a float on the slow path; int64 cannot hold it
        ids = np.asarray(values[cols.ID], dtype=np.float64)
        checks.append((np.abs(ids) >= 2.0**63, cols.ID, "outside the int64 range"))
    seat = np.asarray(values[cols.SEAT], dtype=np.float64)
    checks.append((~np.isin(seat, cols.SEATS) & ~np.isnan(seat), cols.SEAT, f"seat must be one of {cols.SEATS}"))
    checks.append((~np.isin(values[cols.EXPERIMENT], cols.EXPERIMENTS), cols.EXPERIMENT,
                   f"unknown experiment; expected one of {cols.EXPERIMENTS}"))
    time = values[cols.TIME]
    checks.append((~np.isfinite(time), cols.TIME, "missing or not finite"))
    checks.append((time < 0, cols.TIME, "negative time"))
    for name in features:
        column = values[name]
        with np.errstate(over="ignore"):  # 1e39 is finite in float64, inf in float32: rejected
            checks.append((~np.isfinite(column.astype(np.float32)), name, "missing or not finite (float32)"))
    if labelled:
        checks.append((~np.isin(values[cols.EVENT], LABEL_VOCABULARY), cols.EVENT,
                       f"unknown label; expected one of {LABEL_VOCABULARY}"))
    return [(np.asarray(mask, dtype=bool).reshape(n), column, reason) for mask, column, reason in checks]


def parse_chunk(
    chunk: bytes,
    header: Sequence[str],
    features: Sequence[str],
    file: str,
    first_line: int,
    labelled: bool = True,
    with_id: bool = False,
) -> Tuple[Rows, List[Reject]]:
    """Parse whole CSV lines into validated `Rows` plus a `Reject` for every unusable line.

    Args:
      chunk: bytes of whole lines (no header), as from `iter_line_chunks`.
      header: the file's column names (columns are found by name; extra ones are ignored).
      features: signal columns to keep, in this order.
      first_line: the file line number of the chunk's first line.
      labelled: True for the train layout (an `event` column is required).
      with_id: the test layout: also read the `id` column, and return `IdRows`.
    """
    types = _column_types(header, features, with_id)
    try:
        table, bad_shape = _read_table(chunk, header, types)
    except pa.ArrowInvalid:
        text_types = {k: (pa.string() if v != pa.string() else v) for k, v in types.items()}
        table, bad_shape = _read_table(chunk, header, text_types)
    values, unparsable = _to_numeric(table, types)

    n_lines = chunk.count(b"\n") + (0 if chunk.endswith(b"\n") else 1)
    kept = np.ones(n_lines, dtype=bool)
    kept[list(bad_shape)] = False
    lines = first_line + np.flatnonzero(kept)
    reason = np.full(len(lines), None, dtype=object)
    column = np.full(len(lines), None, dtype=object)
    for mask, name, why in _first_problems(values, unparsable, features, labelled, with_id):
        hit = mask & (reason == None)  # noqa: E711 (elementwise on an object array)
        reason[hit], column[hit] = why, name
    good = reason == None  # noqa: E711

    rejects = [Reject(file, first_line + i, "", why, "") for i, why in bad_shape.items()]
    rejects += [Reject(file, int(lines[i]), column[i], reason[i], "") for i in np.flatnonzero(~good)]
    rejects = _with_text(sorted(rejects, key=lambda r: r.line), chunk, first_line)

    rows = (IdRows if with_id else Rows)(
        crew=np.asarray(values[cols.CREW], dtype=np.float64)[good].astype(np.int64),
        seat=np.asarray(values[cols.SEAT], dtype=np.float64)[good].astype(np.int64),
        experiment=values[cols.EXPERIMENT][good],
        time=values[cols.TIME][good],
        signals=np.stack([values[name][good] for name in features], axis=1).astype(np.float32)
        if len(features) else np.zeros((int(good.sum()), 0), np.float32),
        label=(np.searchsorted(LABEL_VOCABULARY, values[cols.EVENT][good]).astype(np.int64)
               if labelled else np.full(int(good.sum()), -1, np.int64)),
        line=lines[good].astype(np.int64),
        source=np.zeros(int(good.sum()), np.int64),
        **({"id": _ids(table.column(cols.ID), good)} if with_id else {}),
    )
    return rows, rejects


def _ids(column: pa.ChunkedArray, good: np.ndarray) -> np.ndarray:
    """Exact int64 ids of the good rows (checked to hold integers). Never through float64, which
    would round ids above 2**53: int64 cells as they are, text cells (the slow path) by int()."""
    if pa.types.is_integer(column.type):
        return pc.fill_null(column, 0).to_numpy()[good].astype(np.int64)
    return np.array([_exact_int(text) for text in np.asarray(column.to_pylist(), dtype=object)[good]],
                    dtype=np.int64)


def _exact_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # `12.0`, `1e3`: integral values written as floats
        return int(float(text))


def _with_text(rejects: List[Reject], chunk: bytes, first_line: int) -> List[Reject]:
    """Attach each rejected line's text (rare, so splitting the chunk here is cheap enough)."""
    if not rejects:
        return rejects
    lines = chunk.split(b"\n")
    out = []
    for r in rejects:
        text = lines[r.line - first_line].decode("utf-8", "replace").rstrip("\r")
        out.append(dataclasses.replace(r, text=text) if text.strip()
                   else dataclasses.replace(r, column="", reason="empty line", text=""))
    return out


def empty_rows(num_features: int) -> Rows:
    return Rows(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, object), np.zeros(0),
                np.zeros((0, num_features), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64),
                np.zeros(0, np.int64))


def read_file_chunks(
    f: BinaryIO,
    file: str,
    features: Sequence[str],
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    labelled: bool = True,
    byte_range: Tuple[int, Optional[int]] = (0, None),
    newlines_before: int = 0,
    with_id: bool = False,
) -> Iterator[Tuple[Rows, List[Reject]]]:
    """Read the lines of an open file that start in `byte_range`, chunk by chunk.

    The header is read from the file's start whatever the range; `newlines_before` is the
    number of newlines before the range's start (so that line numbers are the file's own).
    `with_id` reads the test layout and yields `IdRows`.
    A range other than the first needs a seekable (uncompressed) file. A compressed stream that
    ends early or is damaged raises CsvLayoutError (after the rows before the damage were yielded).
    """
    with stream_errors_as_layout_errors(file):
        header = read_header(f, file)
    check_header(header, features, file, labelled, with_id)
    start, end = byte_range
    offset, line = f.tell(), 2
    if start > offset:
        offset, line = seek_first_line(f, start, newlines_before)
    elif start > 0:
        raise ValueError(f"{file}: byte range {byte_range} starts inside the header")
    chunks = iter_line_chunks(f, chunk_bytes, line, offset, end)
    while True:
        with stream_errors_as_layout_errors(file):  # around the read only, not the parse
            item = next(chunks, None)
        if item is None:
            return
        first_line, chunk = item
        yield parse_chunk(chunk, header, features, file, first_line, labelled, with_id)
