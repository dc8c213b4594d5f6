"""Reading crew CSVs in line-aligned byte spans, parsed by pyarrow into validated row batches.

Plain functions, no Beam: `ReadCrewCsv` (beam_jobs.reading) is a thin shell around them.

A span is parsed with column types given (the fast path). Rows that cannot be used go to the
dead-letter output as `Reject`s naming file, line, column and reason; every other row of the span
is kept. Rows read = rows kept + rows rejected, line by line: empty lines are rows too, except
blank lines at the end of a file, which are not rows at all.

What a row can get wrong, and costs only that row wherever it sits (any place in a span, across
span and byte-range boundaries): text that is not CSV (bytes that are not UTF-8, NUL, a lone
CR, a quote character: quoted cells are not read, a line of MAX_LINE_BYTES or more), the wrong
number of cells, a value that is not a number, not finite, not an integer or outside what its
field holds (crew, seat, id: int64, read exactly; time: below MAX_TIME), an unknown experiment,
seat or label. A clean span pays only a few scans at memory speed for the text checks.

`with_id=True` reads a test file (crewstream predict): the `id` column must be in the header,
a row without an integer id is rejected, and the rows come as `IdRows` (`Rows` plus `id`).

Compressed files (`.gz`, `.bz2`) are decompressed with the standard library, which raises on a
stream that ends early or fails its checksum: Beam's decompressing reader returns the rows of a
truncated gzip without complaint. Such a file is a `CsvFileError`, never a silently short read.
"""

import bz2
import collections
import concurrent.futures
import contextlib
import dataclasses
import gzip
import io
import itertools
import zlib
from typing import BinaryIO, ContextManager, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from beam_jobs.columns import Columns
from tfrecords_schema import LABEL_VOCABULARY
from tfrecords_schema import csv_columns as cols

DEFAULT_SPAN_BYTES = 16 << 20  # bytes parsed at once: one Beam element of rows
PARSE_AHEAD = 2  # spans of a file parsed at once (read_file_spans), in threads
DEFAULT_SPLIT_BYTES = 64 << 20  # bytes of an uncompressed file one worker reads: the unit of parallelism
# A line this long or longer (its newline not counted) is rejected. pyarrow's parser needs each
# line within two of its blocks: a span with a line of _BLOCK_BYTES or more is parsed in blocks
# of MAX_LINE_BYTES (measured: the larger block parses clean spans about 10% slower).
MAX_LINE_BYTES = 2 << 20
_BLOCK_BYTES = 1 << 20  # pyarrow's default block size
# Times must be below 2**32 s (136 years). Below it float64's spacing is at most 2**-21 s
# (< 0.5 us), so times written with up to 6 decimals stay distinct and in order (sorting and the
# duplicate-time check see the file's times), and a time bin, floor(time / 1 s), is an exact int64
# (and float64).
# Above it a 1e19 cast to a bin overflowed, and the output depended on --block-rows.
MAX_TIME = 2.0 ** 32
_NEWLINE = ord("\n")
_TEXT_LIMIT = 1000  # characters of a defective line shown as its reject text
_INT_COLUMNS = (cols.CREW, cols.SEAT)
_STR_COLUMNS = (cols.EXPERIMENT, cols.EVENT)
_DECOMPRESSORS = {".gz": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
                  ".bz2": lambda raw: bz2.BZ2File(raw, mode="rb")}
_UNSUPPORTED_SUFFIXES = (".deflate", ".zst", ".zstd", ".xz", ".lzma")  # Beam knows them; we do not
# What a damaged compressed stream raises: EOFError (ends early), BadGzipFile / OSError (bad
# header or checksum), zlib.error (bad data).
_STREAM_ERRORS = (EOFError, OSError, zlib.error)


class CsvFileError(ValueError):
    """A file-level problem: the file cannot be read as a crew CSV at all. `missing`: the columns
    its header lacks, when that is the problem."""

    def __init__(self, message: str, missing: Sequence[str] = ()):
        super().__init__(message)
        self.missing = tuple(missing)


@dataclasses.dataclass(frozen=True)
class Reject:
    """One unusable input row: where it is and why it was not used. `text` is the line as written
    (at most 1,000 characters, then "..."; a line that is not text: with backslash escapes).
    `id`: in a test file, the row's id when its `id` cell still reads as an int64
    (`reject_id`); None otherwise."""

    file: str
    line: int
    column: str
    reason: str
    text: str
    id: Optional[int] = None


@dataclasses.dataclass
class Rows(Columns):
    """Validated rows of one span, columnar.

    crew, seat, label, line: int64 [n]; experiment: object (str) [n]; time: float64 [n];
    signals: float32 [n, F] in the order of `features`; source: int64 [n], the index of the
    row's file in the job's sorted file list (set by the reader; 0 from `parse_span`).
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
    """Validated rows of a test-file span: `Rows` plus id int64 [n], the file's `id` column."""

    id: np.ndarray


def is_compressed(path: str) -> bool:
    """True for `.gz` / `.bz2`: read whole by one worker, never split into byte ranges."""
    return path.lower().endswith(tuple(_DECOMPRESSORS))


def decompressed(raw: BinaryIO, path: str) -> ContextManager[BinaryIO]:
    """The decompressed stream of an open raw file (`raw` itself when uncompressed); closing it
    leaves `raw` open. CsvFileError for a compression we do not read."""
    lower = path.lower()
    for suffix, opener in _DECOMPRESSORS.items():
        if lower.endswith(suffix):
            return opener(raw)
    if lower.endswith(_UNSUPPORTED_SUFFIXES):
        raise CsvFileError(f"{path}: unsupported compression; use .csv, .csv.gz or .csv.bz2")
    return contextlib.nullcontext(raw)


@contextlib.contextmanager
def stream_errors_as_layout_errors(file: str) -> Iterator[None]:
    """A truncated or damaged compressed file, or a read that fails, is a file-level problem
    naming the file."""
    try:
        yield
    except _STREAM_ERRORS as e:
        if not is_compressed(file):
            if isinstance(e, OSError):
                raise CsvFileError(f"{file}: cannot be read ({e.strerror or e})") from e
            raise
        raise CsvFileError(f"{file}: truncated or damaged compressed file ({e})") from e


def check_file(f: BinaryIO, file: str, features: Sequence[str], labelled: bool = True,
               with_id: bool = False, read_through: bool = False) -> List[str]:
    """The file-level checks, before any row is parsed: a usable header (`check_header`), at least
    one line after it, and with `read_through` (for compressed files) a stream that decompresses
    to its end. `f` is the decompressed stream. Returns the header's columns that are not part of
    the layout (ignored by the reader). CsvFileError otherwise."""
    with stream_errors_as_layout_errors(file):
        header = read_header(f, file)
        check_header(header, features, file, labelled, with_id)
        while True:  # blank lines after the header are not rows
            data = f.read(1 << 16)
            if not data:
                raise CsvFileError(f"{file}: header only, no data rows")
            if data.strip():
                break
        while read_through and f.read(1 << 20):
            pass
    known = set(cols.KEY_COLUMNS + cols.SIGNALS) | ({cols.EVENT} if labelled else set()) | (
        {cols.ID} if with_id else set())
    return [name for name in header if name not in known]


def read_header(f: BinaryIO, file: str) -> List[str]:
    """Column names of the header line (UTF-8 BOM and CRLF tolerated)."""
    line = f.readline(MAX_LINE_BYTES)
    if not line:
        raise CsvFileError(f"{file}: empty file (no header line)")
    if len(line) == MAX_LINE_BYTES and not line.endswith(b"\n"):
        raise CsvFileError(f"{file}: no newline in the first {MAX_LINE_BYTES:,} bytes: not a CSV header")
    try:
        text = line.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError:
        raise CsvFileError(f"{file}: the first line is not UTF-8 text (a binary or compressed file?)") from None
    if "\r" in text:
        raise CsvFileError(f"{file}: a carriage return inside the header line (lines ending in CR "
                             "alone?); crewstream reads LF or CRLF line ends")
    return [name.strip() for name in text.split(",")]


def check_header(header: Sequence[str], features: Sequence[str], file: str, labelled: bool = True,
                 with_id: bool = False) -> None:
    """CsvFileError naming the missing columns, or the wrong layout, before anything is read."""
    quoted = [name for name in header if '"' in name]
    if quoted:
        raise CsvFileError(f"{file}: quoted column name(s) in the header ({', '.join(quoted[:3])}); "
                             "crewstream reads CSV without quotes (write the file without quoting)")
    needed = ([cols.ID] if with_id else []) + list(cols.KEY_COLUMNS) + list(features) + (
        [cols.EVENT] if labelled else [])
    missing = [name for name in needed if name not in header]
    if labelled and missing == [cols.EVENT] and cols.ID in header:
        raise CsvFileError(f"{file}: this is a test file (an `id` column, no `event`); "
                             "preprocess needs labelled rows in a train file")
    if with_id and missing == [cols.ID] and cols.EVENT in header:
        raise CsvFileError(f"{file}: this is a train file (an `event` column, no `id`); "
                             "predict needs a test file")
    if missing:
        raise CsvFileError(f"{file}: missing column(s) {', '.join(missing)} in header", missing)
    dupes = sorted({name for name in header if header.count(name) > 1})
    if dupes:
        raise CsvFileError(f"{file}: duplicate column(s) {', '.join(dupes)} in header")


def iter_line_spans(f: BinaryIO, span_bytes: int = DEFAULT_SPAN_BYTES, first_line: int = 2,
                     start: int = 0, end: Optional[int] = None,
                     max_line: int = MAX_LINE_BYTES) -> Iterator[Tuple[int, bytes, int]]:
    """Yield (line number of the span's first line, bytes of whole lines, the lines: newlines, plus
    one for a last line without its newline).

    `f` is positioned at byte `start`, the start of line `first_line` (lines are 1-based as an
    editor shows them; the header is line 1). Only lines that START before byte `end` are
    yielded (all when `end` is None), so byte ranges that tile a file yield every line once.
    A last line without a newline is yielded as it is.

    Blank lines (ASCII whitespace only) after the file's last other line are not yielded: they
    are not rows. A range that ends in blank lines reads on to tell whether a row follows.
    A line of `max_line` bytes or more (newline not counted) that does not end within one read
    is yielded cut to its first `max_line` bytes and a newline (`parse_span` rejects it), so
    memory stays within a few span_bytes + max_line whatever the file holds.
    """
    if end is not None and start >= end:
        return
    limit = None if end is None else end - start  # lines starting before this offset are ours
    pieces = _whole_line_pieces(f, span_bytes, max_line)
    line, held, beyond = first_line, b"", None  # held: blank lines no row has followed yet
    for offset, data, length in pieces:
        if limit is not None and offset >= limit:
            beyond = itertools.chain([data], (rest for _, rest, _ in pieces))
            break
        if limit is not None and offset + length > limit and length == len(data):
            newline = data.find(b"\n", limit - 1 - offset)  # ends the line holding byte end-1
            if newline != -1:
                data, after = data[:newline + 1], data[newline + 1:]
                beyond = itertools.chain([after], (rest for _, rest, _ in pieces))
        buf = held + data if held else data
        keep = _through_last_row(buf)
        if keep:
            newlines = newlines_in(buf, 0, keep)
            yield line, buf if keep == len(buf) else buf[:keep], newlines + (buf[keep - 1] != ord("\n"))
            line += newlines
        held = buf[keep:]
        if beyond is not None:
            break
    if held and beyond is not None and any(rest.strip() for rest in beyond):
        # blank lines with a row after them (in the next range): rows, rejected
        yield line, held, held.count(b"\n") + (not held.endswith(b"\n"))


def _whole_line_pieces(f: BinaryIO, span_bytes: int, max_line: int) -> Iterator[Tuple[int, bytes, int]]:
    """(offset from where `f` was, bytes, their length in the file) for consecutive pieces of
    whole lines of `f`: the file's own bytes, except that a line of `max_line` bytes or more
    that does not end within one read comes alone, as its first `max_line` bytes and a newline
    (its length: the line's in the file). The file's last line may lack its newline."""
    offset, pending, pending_bytes, carry = 0, [], 0, b""  # pending: a line's start, no newline yet
    while True:
        data, carry = (carry, b"") if carry else (f.read(span_bytes), b"")
        if not data:
            if pending:
                yield offset, b"".join(pending), pending_bytes
            return
        cut = data.rfind(b"\n") + 1
        if cut:
            piece = data if cut == len(data) and not pending else b"".join(pending + [memoryview(data)[:cut]])
            yield offset, piece, len(piece)
            offset += len(piece)
            pending, pending_bytes = [], 0
        if cut < len(data):
            pending.append(data[cut:])
            pending_bytes += len(data) - cut
        if pending_bytes >= max_line:  # a line whose end is not in sight: keep its head, skip the rest
            head, length = b"".join(pending)[:max_line], pending_bytes
            pending, pending_bytes = [], 0
            while True:
                data = f.read(span_bytes)
                newline = data.find(b"\n")
                length += len(data) if newline == -1 else newline + 1
                if newline != -1 or not data:
                    carry = data[newline + 1:] if newline != -1 else b""
                    break
            yield offset, head + b"\n", length
            offset += length


def _through_last_row(buf: bytes) -> int:
    """Bytes of `buf` up to the end of its last line that is not blank (0: every line is blank)."""
    tail = 256  # look at the end first: a span rarely ends in more than one blank line
    while True:
        piece = buf[-tail:]
        content = len(piece.rstrip())
        if content or tail >= len(buf):
            break
        tail *= 16
    if not content:
        return 0
    newline = buf.find(b"\n", len(buf) - len(piece) + content)
    return len(buf) if newline == -1 else newline + 1


def plan_ranges(size: Optional[int], split_bytes: int) -> List[Tuple[int, Optional[int]]]:
    """[start, end) byte ranges that tile a file of `size` bytes; one open range when the size
    is unknown or the file cannot be split (compressed)."""
    if size is None:
        return [(0, None)]
    return [(a, min(a + split_bytes, size)) for a in range(0, max(size, 1), split_bytes)]


def newlines_in(buf, start: int = 0, stop: Optional[int] = None) -> int:
    """Newlines in buf[start:stop] (bytes-like), counted by numpy (several times faster than
    bytes.count on a long buffer)."""
    view = np.frombuffer(buf, np.uint8)[start:stop]
    return int(np.count_nonzero(view == _NEWLINE))


def count_newlines(f: BinaryIO, start: int, end: int, block: int = 8 << 20) -> int:
    """Newlines in bytes [start, end) of a seekable file, read into one reused buffer."""
    f.seek(start)
    count, remaining = 0, end - start
    buffer = bytearray(min(block, max(remaining, 0)))
    readinto = getattr(f, "readinto", None)
    while remaining > 0:
        want = min(block, remaining)
        if readinto is not None:
            got = readinto(memoryview(buffer)[:want])
            data = memoryview(buffer)[:got]
        else:  # a file object without readinto (some remote file systems')
            data = f.read(want)
            got = len(data)
        if not got:
            break
        count += newlines_in(data)
        remaining -= got
    return count


def seek_first_line(f: BinaryIO, start: int, newlines_before: int) -> Tuple[int, int]:
    """Position `f` at the first line starting at or after byte `start` (> 0); return (its
    offset, its line number), given the number of newlines in bytes [0, start)."""
    f.seek(start - 1)
    skipped = _skip_line(f)  # the rest of the line holding byte start-1, newline included
    offset = start - 1 + skipped
    return offset, 1 + newlines_before + (1 if offset > start else 0)


def _skip_line(f: BinaryIO, block: int = 1 << 16) -> int:
    """Read past the next newline (or to the end), never holding more than `block` bytes of an
    over-long line; returns the bytes read."""
    skipped = 0
    while True:
        part = f.readline(block)
        skipped += len(part)
        if not part or part.endswith(b"\n"):
            return skipped


def _column_types(header: Sequence[str], features: Sequence[str],
                  with_id: bool = False) -> Dict[str, pa.DataType]:
    types = {cols.ID: pa.int64()} if with_id else {}
    types.update({cols.CREW: pa.int64(), cols.SEAT: pa.int64(), cols.TIME: pa.float64(),
                  cols.EXPERIMENT: pa.string(), cols.EVENT: pa.string()})
    types.update({name: pa.float64() for name in features})
    return {k: v for k, v in types.items() if k in header}


# Defects that make a line unreadable as CSV text, found before pyarrow sees the span. The rank
# orders two defects at one byte (an over-long line's is its first byte).
_LONG, _BAD_BYTE, _NUL, _LONE_CR, _QUOTE = range(5)


def find_defects(span: bytes, header: Sequence[str], max_line: int = MAX_LINE_BYTES) -> Dict[int, Tuple[str, str]]:
    """{index of a line in `span`: (column, reason)} for each line that cannot be read as CSV
    text: bytes that are not UTF-8, a NUL byte, a carriage return not followed by a newline (a
    lone CR; CRLF line ends are fine), a quote character, or `max_line` bytes or more.

    Quotes are not CSV syntax here (the header is read without them, and the Kaggle files have
    none): a line holding one is rejected rather than split differently from how its text reads.
    The column is the header's name for the cell holding the line's first defect ("" for an
    over-long line, or a cell beyond the header's). A clean span costs a few scans at memory
    speed; the line-by-line search runs only in a span that has one of these.
    """
    return {} if _looks_clean(span, max_line) else _locate_defects(span, header, max_line)


def _looks_clean(span: bytes, max_line: int, lone_cr: bool = True) -> bool:
    """No line of `span` has a defect (find_defects), by scans of the whole span at memory
    speed. `lone_cr=False` skips the slowest, the lone-CR scan (a fifth of a parse's time in a
    CRLF file): parse_span finds a lone CR by pyarrow's row count instead, as pyarrow ends a
    line at one."""
    if lone_cr and b"\r" in span and span.count(b"\r") != span.count(b"\r\n") + span.endswith(b"\r"):
        return False
    return not (b"\0" in span or b'"' in span or not _is_utf8(span) or _has_long_line(span, max_line))


def _is_utf8(data: bytes) -> bool:
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _has_long_line(span: bytes, max_line: int) -> bool:
    """Whether a line of `span` has `max_line` bytes or more before its newline, in one pass:
    the last newline within max_line bytes of a line's start bounds every line started before."""
    start = 0
    while len(span) - start >= max_line:
        newline = span.rfind(b"\n", start, start + max_line)
        if newline == -1:
            return True
        start = newline + 1
    return False


def _locate_defects(span: bytes, header: Sequence[str], max_line: int) -> Dict[int, Tuple[str, str]]:
    """find_defects' answer, line by line: every defect's byte, then each line's first."""
    data = np.frombuffer(span, np.uint8)
    newlines = np.flatnonzero(data == ord("\n"))
    starts = np.r_[0, newlines + 1]
    ends = np.r_[newlines, len(span)]
    cr = np.flatnonzero(data == ord("\r"))
    cr = cr[cr + 1 < len(span)]  # a CR ending the file's last line ends it
    found = [(starts[ends - starts >= max_line], _LONG),
             (np.flatnonzero(data == 0), _NUL),
             (cr[data[cr + 1] != ord("\n")], _LONE_CR),
             (np.flatnonzero(data == ord('"')), _QUOTE),
             (_bad_utf8(span, starts, ends, newlines, np.flatnonzero(data >= 0x80)), _BAD_BYTE)]
    where = np.concatenate([positions for positions, _ in found]).astype(np.int64)
    kind = np.concatenate([np.full(len(positions), k) for positions, k in found])
    line = np.searchsorted(newlines, where)  # newlines before the byte
    order = np.lexsort((kind, where, line))
    lines, first = np.unique(line[order], return_index=True)
    defects = {}
    for i, at, k in zip(lines.tolist(), where[order][first].tolist(), kind[order][first].tolist()):
        cell = span.count(b",", int(starts[i]), at)
        column = header[cell] if k != _LONG and cell < len(header) else ""
        defects[i] = (column, _defect_reason(k, span[at], max_line))
    return defects


def _bad_utf8(span: bytes, starts, ends, newlines, high) -> np.ndarray:
    """The first undecodable byte of each line holding a non-ASCII byte that is not UTF-8."""
    bad = []
    for i in np.unique(np.searchsorted(newlines, high)).tolist():
        try:
            span[starts[i]:ends[i]].decode("utf-8")
        except UnicodeDecodeError as e:
            bad.append(int(starts[i]) + e.start)
    return np.asarray(bad, np.int64)


def _defect_reason(kind: int, byte: int, max_line: int) -> str:
    return {_LONG: f"line of {max_line:,} bytes or more",
            _BAD_BYTE: f"not UTF-8 text (byte 0x{byte:02x})",
            _NUL: "NUL byte",
            _LONE_CR: "carriage return inside the line (a CR not followed by LF)",
            _QUOTE: 'quote character (") in a cell: quoted cells are not read'}[kind]


def _blanked(span: bytes, lines: Sequence[int]) -> bytes:
    """`span` with the given lines replaced by one space (a row of one cell, which pyarrow counts
    as a row of the wrong shape): pyarrow never sees their text, line numbers stay."""
    parts = span.split(b"\n")
    for i in lines:
        parts[i] = b" "
    return b"\n".join(parts)


def _parse_lines(span: bytes, n_lines: int, defects: Dict[int, Tuple[str, str]], header: Sequence[str],
                 types: Dict[str, pa.DataType]):
    """(table, bad-shape rows) of the span's lines, `defects` emptied first: typed (the fast
    path), or as text if a cell refuses its type (the slow path)."""
    readable = _blanked(span, list(defects)) if defects else span
    if not _through_last_row(readable):  # blank lines only: pyarrow would see an empty file
        readable = b" \n" * n_lines
    block_size = MAX_LINE_BYTES if _has_long_line(readable, _BLOCK_BYTES) else _BLOCK_BYTES
    try:
        return _read_table(readable, header, types, block_size)
    except pa.ArrowInvalid:
        text_types = {k: (pa.string() if v != pa.string() else v) for k, v in types.items()}
        return _read_table(readable, header, text_types, block_size)


def _read_table(span: bytes, header: Sequence[str], types: Dict[str, pa.DataType], block_size: int):
    """Parse with the given types; returns (table, {span row index: reason}) for bad-shape rows.

    The span's blocks are parsed on pyarrow's threads (every core at once); a span with a row of
    the wrong shape is parsed again on one thread, where pyarrow tells which row it skipped."""
    table, bad_shape = _read_csv(span, header, types, block_size, use_threads=True)
    if bad_shape is None:
        table, bad_shape = _read_csv(span, header, types, block_size, use_threads=False)
    return table, bad_shape


def _read_csv(span: bytes, header: Sequence[str], types: Dict[str, pa.DataType], block_size: int,
              use_threads: bool):
    """_read_table's parse; its bad-shape rows None when a skipped row came without its number
    (pyarrow numbers rows only when parsing on one thread)."""
    bad_shape: Optional[Dict[int, str]] = {}

    def on_invalid(row) -> str:
        nonlocal bad_shape
        if row.number is None or bad_shape is None:
            bad_shape = None
        else:
            bad_shape[row.number - 1] = f"expected {row.expected_columns} columns, found {row.actual_columns}"
        return "skip"

    table = pacsv.read_csv(
        io.BytesIO(span),
        read_options=pacsv.ReadOptions(column_names=list(header), use_threads=use_threads, block_size=block_size),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid, ignore_empty_lines=False,
                                          newlines_in_values=False, quote_char=False),
        convert_options=pacsv.ConvertOptions(column_types=types, include_columns=list(types),
                                             null_values=[""], strings_can_be_null=False),
    )
    return table, bad_shape


@dataclasses.dataclass
class _Cells:
    """A span's cells as numpy: `values` per column (float64 for numbers, object for text),
    `ints` exact int64 of the integer columns, and masks of cells that are not numbers
    (`unparsable`, slow path only) or integers outside int64 (`outside`)."""

    values: Dict[str, np.ndarray]
    ints: Dict[str, np.ndarray]
    unparsable: Dict[str, np.ndarray]
    outside: Dict[str, np.ndarray]


def _to_numeric(table: pa.Table, types: Dict[str, pa.DataType]) -> _Cells:
    """Columns as numpy. A column read as text (the slow path: this span had a cell the typed
    parse refused) is parsed here, integers exactly: never through float64 above 2**53, never
    cast with overflow."""
    cells = _Cells({}, {}, {}, {})
    for name, kind in types.items():
        column = table.column(name)
        if name in _STR_COLUMNS:
            cells.values[name] = np.asarray(column.to_pylist(), dtype=object)
            continue
        if pa.types.is_string(column.type):  # slow path
            text = pd.Series(column.to_pylist(), dtype=object)
            parsed = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
            stripped = text.str.strip().str.lower()
            cells.unparsable[name] = np.isnan(parsed) & (stripped != "nan").to_numpy() & (stripped != "").to_numpy()
            cells.values[name] = parsed
            if kind == pa.int64():
                cells.ints[name], cells.outside[name] = _exact_ints(text, parsed)
            continue
        if kind == pa.int64():  # typed: pyarrow parsed these exactly, or refused the span
            cells.ints[name] = pc.fill_null(column, 0).to_numpy()
            cells.outside[name] = np.zeros(len(table), bool)
        array = column.to_numpy(zero_copy_only=False)
        cells.values[name] = array.astype(np.float64) if kind == pa.float64() else array
    return cells


def _exact_ints(text: pd.Series, parsed: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(int64 values, mask of cells outside int64) of integral cells; 0 elsewhere. float64 is
    exact below 2**53; larger cells are read again from their text (`12`, `1e19`)."""
    integral = np.isfinite(parsed) & (parsed == np.round(parsed))
    small = integral & (np.abs(parsed) < 2.0**53)
    values = np.where(small, parsed, 0).astype(np.int64)
    outside = np.zeros(len(parsed), bool)
    for i in np.flatnonzero(integral & ~small).tolist():
        value = _exact_int(text.iloc[i].strip())
        if -2**63 <= value < 2**63:
            values[i] = value
        else:
            outside[i] = True
    return values, outside


def _exact_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # `12.0`, `1e3`: integral values written as floats
        return int(float(text))


def _first_problems(cells: _Cells, features, labelled, with_id: bool = False) -> List[Tuple[np.ndarray, str, str]]:
    """(bad-row mask, column, reason) in the order a row is checked; the first hit is reported."""
    values = cells.values
    n = len(values[cols.TIME])
    checks: List[Tuple[np.ndarray, str, str]] = []
    for name in cells.unparsable:
        checks.append((cells.unparsable[name], name, "not a number"))
    for name in ((cols.ID,) if with_id else ()) + _INT_COLUMNS:
        column = np.asarray(values[name], dtype=np.float64)
        checks.append((np.isnan(column), name, "missing value"))
        integral = np.isfinite(column) & (column == np.round(column))
        checks.append((~np.isnan(column) & ~integral, name, "not an integer"))  # inf included
        checks.append((cells.outside[name], name, "outside the int64 range"))
    seat = np.asarray(values[cols.SEAT], dtype=np.float64)
    checks.append((~np.isin(seat, cols.SEATS) & ~np.isnan(seat), cols.SEAT, f"seat must be one of {cols.SEATS}"))
    checks.append((~np.isin(values[cols.EXPERIMENT], cols.EXPERIMENTS), cols.EXPERIMENT,
                   f"unknown experiment; expected one of {cols.EXPERIMENTS}"))
    time = values[cols.TIME]
    checks.append((~np.isfinite(time), cols.TIME, "missing or not finite"))
    checks.append((time < 0, cols.TIME, "negative time"))
    checks.append((time >= MAX_TIME, cols.TIME, "too large: times must be below 2**32 s"))
    for name in features:
        column = values[name]
        with np.errstate(over="ignore"):  # 1e39 is finite in float64, inf in float32: rejected
            checks.append((~np.isfinite(column.astype(np.float32)), name, "missing or not finite (float32)"))
    if labelled:
        checks.append((~np.isin(values[cols.EVENT], LABEL_VOCABULARY), cols.EVENT,
                       f"unknown label; expected one of {LABEL_VOCABULARY}"))
    return [(np.asarray(mask, dtype=bool).reshape(n), column, reason) for mask, column, reason in checks]


def parse_span(
    span: bytes,
    header: Sequence[str],
    features: Sequence[str],
    file: str,
    first_line: int,
    labelled: bool = True,
    with_id: bool = False,
    n_lines: Optional[int] = None,
) -> Tuple[Rows, List[Reject]]:
    """Parse whole CSV lines into validated `Rows` plus a `Reject` for every unusable line.

    Every line is a row: kept, or rejected with its file, line, column (where one applies) and
    reason. First the lines that are not readable CSV text (`find_defects`; a lone CR is found
    only if pyarrow's rows and the lines disagree, then the span is parsed again without it);
    pyarrow parses the rest with column types given (the fast path), or, if a cell refuses its
    type, as text (the slow path, this span only); then every value is checked
    (`_first_problems`). A rejected line never changes how another line is read.

    Args:
      span: bytes of whole lines (no header), as from `iter_line_spans`.
      header: the file's column names (columns are found by name; extra ones are ignored).
      features: signal columns to keep, in this order.
      first_line: the file line number of the span's first line.
      labelled: True for a train file (an `event` column is required).
      with_id: a test file: also read the `id` column, and return `IdRows`.
      n_lines: the span's lines, when the caller counted them (`iter_line_spans`); else counted.
    """
    if n_lines is None:
        n_lines = newlines_in(span) + (0 if span.endswith(b"\n") else 1)
    types = _column_types(header, features, with_id)
    located = not _looks_clean(span, MAX_LINE_BYTES, lone_cr=False) or not _through_last_row(span)
    defects = _locate_defects(span, header, MAX_LINE_BYTES) if located else {}
    table, bad_shape = _parse_lines(span, n_lines, defects, header, types)
    if len(table) + len(bad_shape) != n_lines and not located:  # a lone CR: pyarrow ended a line there
        defects = _locate_defects(span, header, MAX_LINE_BYTES)
        table, bad_shape = _parse_lines(span, n_lines, defects, header, types)
    if len(table) + len(bad_shape) != n_lines:  # not seen once the defects are out
        raise CsvFileError(f"{file}: lines {first_line}-{first_line + n_lines - 1}: the CSV parser "
                             f"found {len(table) + len(bad_shape)} rows in {n_lines} lines")
    cells = _to_numeric(table, types)
    kept = np.ones(n_lines, dtype=bool)
    kept[list(bad_shape)] = False
    lines = first_line + np.flatnonzero(kept)
    reason = np.full(len(lines), None, dtype=object)
    column = np.full(len(lines), None, dtype=object)
    # no problem found yet: a bool mask (`reason == None` on the object array was slow)
    good = np.ones(len(lines), dtype=bool)
    for mask, name, why in _first_problems(cells, features, labelled, with_id):
        hit = mask & good
        if hit.any():
            reason[hit], column[hit] = why, name
            good &= ~hit

    rejects = [Reject(file, first_line + i, "", why, "") for i, why in bad_shape.items()]
    rejects += [Reject(file, int(lines[i]), column[i], reason[i], "") for i in np.flatnonzero(~good)]
    rejects = _with_text(sorted(rejects, key=lambda r: r.line), span, first_line, defects)
    if with_id:
        id_column = list(header).index(cols.ID)
        rejects = [dataclasses.replace(r, id=reject_id(r.text, id_column)) for r in rejects]

    values = cells.values
    rows = (IdRows if with_id else Rows)(
        crew=cells.ints[cols.CREW][good],
        seat=cells.ints[cols.SEAT][good],
        experiment=values[cols.EXPERIMENT][good],
        time=values[cols.TIME][good],
        signals=_float32_columns([values[name] for name in features], good),
        label=(np.searchsorted(LABEL_VOCABULARY, values[cols.EVENT][good]).astype(np.int64)
               if labelled else np.full(int(good.sum()), -1, np.int64)),
        line=lines[good].astype(np.int64),
        source=np.zeros(int(good.sum()), np.int64),
        **({"id": cells.ints[cols.ID][good]} if with_id else {}),
    )
    return rows, rejects


def _float32_columns(columns: Sequence[np.ndarray], good: np.ndarray) -> np.ndarray:
    """float32 [good rows, len(columns)]: the `good` rows of float64 columns, cast once, in place."""
    out = np.empty((int(good.sum()), len(columns)), np.float32)
    everything = bool(good.all())
    for j, column in enumerate(columns):
        out[:, j] = column if everything else column[good]
    return out


def _with_text(rejects: List[Reject], span: bytes, first_line: int,
               defects: Dict[int, Tuple[str, str]]) -> List[Reject]:
    """Attach each rejected line's text (rare, so splitting the span here is cheap enough). A
    line in `defects` (emptied before parsing) gets its column and reason from there."""
    if not rejects:
        return rejects
    lines = span.split(b"\n")
    out = []
    for r in rejects:
        raw = lines[r.line - first_line]
        if r.line - first_line in defects:
            column, reason = defects[r.line - first_line]
            out.append(dataclasses.replace(r, column=column, reason=reason, text=_shown(raw)))
            continue
        text = raw.decode("utf-8").rstrip("\r")  # UTF-8: checked by find_defects
        out.append(dataclasses.replace(r, text=_clipped(text)) if text.strip()
                   else dataclasses.replace(r, column="", reason="empty line", text=""))
    return out


def reject_id(text: str, id_column: int) -> Optional[int]:
    """The id in a rejected line's text, when its `id` cell still reads as an int64 (as the reader
    reads ids: `12` or `12.0`); None otherwise."""
    cells = text.split(",")
    if id_column >= len(cells):
        return None
    try:
        value = int(cells[id_column])
    except ValueError:
        try:
            number = float(cells[id_column])
        except ValueError:
            return None
        if not number.is_integer():
            return None
        value = int(number)
    return value if -2**63 <= value < 2**63 else None


def _shown(raw: bytes) -> str:
    """A defective line as reject text, one line of valid text: bytes that are not UTF-8, NUL and
    CR as backslash escapes; at most _TEXT_LIMIT characters (then "...")."""
    raw = raw[:-1] if raw.endswith(b"\r") else raw
    cut = raw[:4 * _TEXT_LIMIT]
    text = cut.decode("utf-8", "backslashreplace").replace("\0", "\\x00").replace("\r", "\\r")
    return _clipped(text + ("..." if len(cut) < len(raw) else ""))


def _clipped(text: str) -> str:
    """At most _TEXT_LIMIT characters of a reject's text, then "...": a rejects file stays
    readable by csv readers (Python's refuses a field over 131,072 characters)."""
    return text if len(text) <= _TEXT_LIMIT else text[:_TEXT_LIMIT] + "..."


def read_file_spans(
    f: BinaryIO,
    file: str,
    features: Sequence[str],
    span_bytes: int = DEFAULT_SPAN_BYTES,
    labelled: bool = True,
    byte_range: Tuple[int, Optional[int]] = (0, None),
    newlines_before: int = 0,
    with_id: bool = False,
) -> Iterator[Tuple[Rows, List[Reject]]]:
    """Read the lines of an open file that start in `byte_range`, span by span.

    The header is read from the file's start whatever the range; `newlines_before` is the
    number of newlines before the range's start (so that line numbers are the file's own).
    `with_id` reads a test file and yields `IdRows`.
    A range other than the first needs a seekable (uncompressed) file. A compressed stream that
    ends early or is damaged raises CsvFileError (after the rows before the damage were yielded).
    """
    with stream_errors_as_layout_errors(file):
        header = read_header(f, file)
    check_header(header, features, file, labelled, with_id)
    start, end = byte_range
    offset, line = f.tell(), 2
    if start > offset:
        offset, line = seek_first_line(f, start, newlines_before)
    # else: the range starts in the header; its lines are those after it (none if it ends there)
    spans = iter_line_spans(f, span_bytes, line, offset, end)
    # PARSE_AHEAD spans are parsed at once, each on a thread of its own: while one is in numpy's
    # validation (mostly one core), another is in pyarrow's parse (every core). Results come in
    # span order, and a read error is raised only after every span before it was yielded.
    with concurrent.futures.ThreadPoolExecutor(PARSE_AHEAD) as pool:
        parsing: collections.deque = collections.deque()
        while True:
            try:
                with stream_errors_as_layout_errors(file):  # around the read only, not the parse
                    item = next(spans, None)
            except CsvFileError:
                for first_line, parsed in parsing:
                    yield _parsed(file, first_line, parsed)
                raise
            if item is not None:
                first_line, span, n_lines = item
                parsing.append((first_line, pool.submit(parse_span, span, header, features, file, first_line,
                                                        labelled, with_id, n_lines)))
            while parsing and (item is None or len(parsing) > PARSE_AHEAD):
                yield _parsed(file, *parsing.popleft())
            if item is None:
                return


def _parsed(file: str, first_line: int, parsed: concurrent.futures.Future) -> Tuple[Rows, List[Reject]]:
    try:
        return parsed.result()
    except pa.ArrowException as e:  # not seen once find_defects runs; if it is, name the file
        raise CsvFileError(f"{file}: from line {first_line}: the CSV parser failed ({e})") from e
