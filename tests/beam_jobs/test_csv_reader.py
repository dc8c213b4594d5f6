import gzip
import io
import re

import numpy as np
import pandas as pd
import pytest

from beam_jobs import csv_reader
from tfrecords_schema import csv_columns as cols

FEATURES = ["r", "ecg", "gsr"]
HEADER = ",".join(cols.TRAIN_COLUMNS)



def _empty_rows(num_features: int) -> csv_reader.Rows:
    return csv_reader.Rows(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, object), np.zeros(0),
                           np.zeros((0, num_features), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64),
                           np.zeros(0, np.int64))

def row(crew=1, experiment="CA", time="0.5", seat=0, value="1.5", event="A", **override):
    values = {name: value for name in cols.SIGNALS}
    values.update(override)
    return ",".join([str(crew), experiment, time, str(seat)] + [values[n] for n in cols.SIGNALS] + [event])


def read_all(text, features=FEATURES, span_bytes=1 << 20, labelled=True):
    rows, rejects = [], []
    for r, bad in csv_reader.read_file_spans(io.BytesIO(text.encode()), "f.csv", features, span_bytes,
                                              labelled=labelled):
        rows.append(r)
        rejects += bad
    return csv_reader.Rows.concat(rows) if rows else _empty_rows(len(features)), rejects


def test_good_rows_parse_to_typed_columns_in_feature_order():
    text = HEADER + "\n" + row(crew=13, seat=1, time="109.98828125", r="-6.6958699999999975",
                               ecg="-4520.0", gsr="388.829987", event="D") + "\n"
    rows, rejects = read_all(text)
    assert rejects == []
    assert rows.crew.tolist() == [13] and rows.seat.tolist() == [1]
    assert rows.experiment.tolist() == ["CA"] and rows.time.tolist() == [109.98828125]
    np.testing.assert_array_equal(rows.signals, np.float32([[-6.6958699999999975, -4520.0, 388.829987]]))
    assert rows.signals.dtype == np.float32
    assert rows.label.tolist() == [3] and rows.line.tolist() == [2]


@pytest.mark.parametrize("bad_line, column, reason", [
    (row(r="abc"), "r", "not a number"),
    (row(ecg="nan"), "ecg", "not finite"),
    (row(gsr="inf"), "gsr", "not finite"),
    (row(gsr="-inf"), "gsr", "not finite"),
    (row(r="1e309"), "r", "not finite"),
    (row(r="1e39"), "r", "not finite (float32)"),
    (row(r=""), "r", "missing"),
    (row(event="E"), "event", "unknown label"),
    (row(event="a"), "event", "unknown label"),
    (row(event=""), "event", "unknown label"),
    (row(seat=2), "seat", "seat must be one of"),
    (row(time="-0.5"), "time", "negative time"),
    (row(experiment="XX"), "experiment", "unknown experiment"),
    (row(crew="x"), "crew", "not a number"),
    ("1,CA,0.5,0", "", "expected 28 columns, found 4"),
    ("", "", "empty line"),
])
def test_bad_row_is_rejected_with_line_column_reason_and_neighbours_kept(bad_line, column, reason):
    text = "\n".join([HEADER, row(time="0.1"), bad_line, row(time="0.2")]) + "\n"
    rows, rejects = read_all(text)
    assert rows.time.tolist() == [0.1, 0.2] and rows.line.tolist() == [2, 4]
    assert len(rejects) == 1
    assert (rejects[0].file, rejects[0].line, rejects[0].column) == ("f.csv", 3, column)
    assert reason in rejects[0].reason
    assert rejects[0].text == bad_line


def test_line_numbers_survive_chunking_and_truncated_last_line():
    lines = [row(time=str(i / 256)) for i in range(200)]
    lines[57] = row(r="oops")
    lines[133] = "1,CA"
    text = HEADER + "\n" + "\n".join(lines) + "\n" + "1,CA,9"  # last line cut, no newline
    rows, rejects = read_all(text, span_bytes=1000)  # many chunks, boundaries inside lines
    assert [r.line for r in rejects] == [59, 135, 202]
    assert len(rows) == 198
    expected_lines = [i + 2 for i in range(200) if i not in (57, 133)]
    assert rows.line.tolist() == expected_lines
    np.testing.assert_array_equal(rows.time, [i / 256 for i in range(200) if i not in (57, 133)])


def test_bom_crlf_reordered_and_extra_columns():
    names = list(reversed(cols.TRAIN_COLUMNS)) + ["note"]
    frame = pd.DataFrame([{**{n: 1.25 for n in cols.SIGNALS}, cols.CREW: 2, cols.EXPERIMENT: "SS",
                           cols.TIME: 0.75, cols.SEAT: 1, cols.EVENT: "B", "note": "x"}])[names]
    text = "\ufeff" + frame.to_csv(index=False, lineterminator="\r\n")
    rows, rejects = read_all(text)
    assert rejects == []
    assert (rows.crew.tolist(), rows.seat.tolist(), rows.time.tolist(), rows.label.tolist()) == ([2], [1], [0.75], [1])


def test_file_level_problems_raise():
    with pytest.raises(csv_reader.CsvFileError, match="empty file"):
        read_all("")
    with pytest.raises(csv_reader.CsvFileError, match="missing column.*gsr"):
        read_all(HEADER.replace(",gsr", "") + "\n")
    test_layout = ",".join(cols.TEST_COLUMNS) + "\n"
    with pytest.raises(csv_reader.CsvFileError, match="test file"):
        read_all(test_layout)
    rows, rejects = read_all(HEADER + "\n")  # header only: nothing, and no error
    assert len(rows) == 0 and rejects == []


def test_gzip_and_plain_read_the_same(tmp_path):
    text = HEADER + "\n" + "\n".join(row(time=str(i)) for i in range(10)) + "\n"
    with gzip.open(tmp_path / "f.csv.gz", "wt") as f:
        f.write(text)
    with gzip.open(tmp_path / "f.csv.gz", "rb") as f:
        zipped = list(csv_reader.read_file_spans(f, "f.csv.gz", FEATURES))
    plain, _ = read_all(text)
    np.testing.assert_array_equal(csv_reader.Rows.concat([r for r, _ in zipped]).time, plain.time)


@pytest.mark.parametrize("split_bytes", [1000, 997, 1234, 5000, 100000])
def test_byte_ranges_tile_the_file_with_the_files_own_line_numbers(tmp_path, split_bytes):
    lines = [row(time=str(i / 256), r=str(i)) for i in range(300)]
    lines[57] = row(r="oops")
    text = HEADER + "\n" + "\n".join(lines) + "\n"
    path = tmp_path / "f.csv"
    path.write_text(text)
    size = path.stat().st_size
    ranges = csv_reader.plan_ranges(size, split_bytes)
    assert ranges[0][0] == 0 and ranges[-1][1] == size
    rows, rejects, before = [], [], 0
    for start, end in ranges:
        with open(path, "rb") as f:
            for r, bad in csv_reader.read_file_spans(f, "f.csv", FEATURES, 700, byte_range=(start, end),
                                                      newlines_before=before):
                rows.append(r)
                rejects += bad
        with open(path, "rb") as f:
            before += csv_reader.count_newlines(f, start, end)
    got = csv_reader.Rows.concat(rows)
    expected_lines = [i + 2 for i in range(300) if i != 57]
    assert got.line.tolist() == expected_lines  # each line once, in order
    np.testing.assert_array_equal(got.signals[:, 0], [float(i) for i in range(300) if i != 57])
    assert [(r.line, r.column) for r in rejects] == [(59, "r")]


def _gzipped_lines(n=2000):
    text = HEADER + "\n" + "\n".join(row(time=str(i / 256)) for i in range(n)) + "\n"
    return text, gzip.compress(text.encode())


@pytest.mark.parametrize("cut", ["trailer", "half"])
def test_truncated_gzip_raises_a_layout_error_naming_the_file(cut):
    _, blob = _gzipped_lines()
    blob = blob[:-8] if cut == "trailer" else blob[:len(blob) // 2]  # trailer: CRC32 and size
    with csv_reader.decompressed(io.BytesIO(blob), "f.csv.gz") as f:
        with pytest.raises(csv_reader.CsvFileError, match=r"f.csv.gz: truncated or damaged compressed file"):
            list(csv_reader.read_file_spans(f, "f.csv.gz", FEATURES, span_bytes=4096))
    with csv_reader.decompressed(io.BytesIO(blob), "f.csv.gz") as f:
        with pytest.raises(csv_reader.CsvFileError, match="truncated"):
            csv_reader.check_file(f, "f.csv.gz", FEATURES, read_through=True)


@pytest.mark.parametrize("ahead", [2, 3])
def test_spans_parsed_ahead_on_threads_come_out_as_one_at_a_time_would(monkeypatch, ahead):
    """read_file_spans parses PARSE_AHEAD spans at once: the same spans, rows and rejects, in
    the same order, as parsing them one after another."""
    lines = [row(time=str(i / 256), r=str(i)) for i in range(3000)]
    for bad in (5, 700, 701, 1999, 2998):
        lines[bad] = row(time=str(bad / 256), ecg="x") if bad % 2 else "1,CA"
    text = HEADER + "\n" + "\n".join(lines) + "\n"

    def spans():
        out = []
        for rows, bad in csv_reader.read_file_spans(io.BytesIO(text.encode()), "f.csv", FEATURES, 4096):
            out.append((rows.line.tolist(), rows.signals.tolist(), [(r.line, r.column, r.reason) for r in bad]))
        return out

    monkeypatch.setattr(csv_reader, "PARSE_AHEAD", 1)
    one_at_a_time = spans()
    monkeypatch.setattr(csv_reader, "PARSE_AHEAD", ahead)
    assert spans() == one_at_a_time and len(one_at_a_time) > 10
    assert sum(len(bad) for _, _, bad in one_at_a_time) == 5


def test_rows_before_a_damaged_stream_are_all_yielded_before_its_error(monkeypatch):
    """With spans parsed ahead, a read that fails still comes after every span read before it:
    the same rows as parsing one span at a time."""
    _, blob = _gzipped_lines()

    def lines_before_the_error():
        got = []
        with csv_reader.decompressed(io.BytesIO(blob[:len(blob) // 2]), "f.csv.gz") as f:
            with pytest.raises(csv_reader.CsvFileError, match="truncated"):
                for rows, _ in csv_reader.read_file_spans(f, "f.csv.gz", FEATURES, span_bytes=4096):
                    got += rows.line.tolist()
        return got

    monkeypatch.setattr(csv_reader, "PARSE_AHEAD", 1)
    one_at_a_time = lines_before_the_error()
    monkeypatch.setattr(csv_reader, "PARSE_AHEAD", 3)
    assert lines_before_the_error() == one_at_a_time == list(range(2, 2 + len(one_at_a_time)))
    assert len(one_at_a_time) > 100


def test_damaged_gzip_checksum_is_a_layout_error():
    _, blob = _gzipped_lines()
    blob = blob[:-8] + bytes([blob[-8] ^ 0xFF]) + blob[-7:]  # the stored CRC32 no longer matches
    with csv_reader.decompressed(io.BytesIO(blob), "f.csv.gz") as f:
        with pytest.raises(csv_reader.CsvFileError, match="f.csv.gz: truncated or damaged"):
            csv_reader.check_file(f, "f.csv.gz", FEATURES, read_through=True)


def test_bz2_reads_like_plain_and_unknown_compression_is_refused():
    import bz2

    text, _ = _gzipped_lines(50)
    with csv_reader.decompressed(io.BytesIO(bz2.compress(text.encode())), "f.csv.bz2") as f:
        rows = csv_reader.Rows.concat([r for r, _ in csv_reader.read_file_spans(f, "f.csv.bz2", FEATURES)])
    np.testing.assert_array_equal(rows.time, read_all(text)[0].time)
    assert csv_reader.is_compressed("x.CSV.GZ") and not csv_reader.is_compressed("x.csv")
    with pytest.raises(csv_reader.CsvFileError, match="x.csv.zst: unsupported compression"):
        csv_reader.decompressed(io.BytesIO(b""), "x.csv.zst")


@pytest.mark.parametrize("text, message", [
    ("", "empty file"),
    (HEADER + "\n", "header only"),
    (HEADER, "header only"),
    ("\x89PNG\r\n\x1a\n\xff\xfe", "the first line is not UTF-8 text"),
])
def test_check_file_refuses_files_without_data_rows(text, message):
    with pytest.raises(csv_reader.CsvFileError, match=f"f.csv: {message}"):
        csv_reader.check_file(io.BytesIO(text.encode("latin-1")), "f.csv", FEATURES)


def test_check_file_returns_the_columns_it_will_ignore():
    text = "note," + HEADER + ",id\n" + "x," + row() + ",7\n"
    assert csv_reader.check_file(io.BytesIO(text.encode()), "f.csv", FEATURES) == ["note", "id"]
    test_layout = ",".join(cols.TEST_COLUMNS) + ",extra\n0," + row().rsplit(",", 1)[0] + ",1\n"
    assert csv_reader.check_file(io.BytesIO(test_layout.encode()), "t.csv", FEATURES, labelled=False,
                                 with_id=True) == ["extra"]


# --- every row-level defect costs its row alone, wherever it sits ---------------------------------

MAX_LINE = csv_reader.MAX_LINE_BYTES

# (case, cells of a row that make it a reject, column, reason): one case per defect.
DEFECT_CASES = [
    ("not-utf8", {"r": "1.\udcff5"}, "r", "not UTF-8 text (byte 0xff)"),
    ("latin1-label", {"event": "\udce9"}, "event", "not UTF-8 text (byte 0xe9)"),
    ("nul", {"ecg": "1\x005"}, "ecg", "NUL byte"),
    ("lone-cr", {"gsr": "1\r5"}, "gsr", "carriage return inside the line"),
    ("quoted-cell", {"experiment": '"CA"'}, "experiment", 'quote character (")'),
    ("unbalanced-quote", {"r": '"1.5'}, "r", 'quote character (")'),
    ("quoted-comma", {"r": '"1,5"'}, "r", 'quote character (")'),
    ("over-long-line", {"r": "1" * MAX_LINE}, "", f"line of {MAX_LINE:,} bytes or more"),
    ("crew-1e19", {"crew": "1e19"}, "crew", "outside the int64 range"),
    ("crew-2**63", {"crew": str(2**63)}, "crew", "outside the int64 range"),
    ("seat-1e19", {"seat": "1e19"}, "seat", "outside the int64 range"),
    ("crew-inf", {"crew": "inf"}, "crew", "not an integer"),
    ("time-1e19", {"time": "1e19"}, "time", "too large"),
    ("time-2**32", {"time": str(2**32)}, "time", "too large"),
]
GOOD_LINES = 40


def raw(line: str) -> bytes:
    """A line's bytes; lone surrogates (\\udcXX) stand for the undecodable byte XX."""
    return line.encode("utf-8", "surrogateescape")


def file_with(bad: bytes, at: int, final_newline: bool = True):
    """(file bytes, the bad line's number, the good lines' numbers, their r values): GOOD_LINES
    good rows (r = 0, 1, ...) with `bad` inserted as data line `at` (0-based)."""
    lines = [raw(row(time=str(i / 256), r=str(i))) for i in range(GOOD_LINES)]
    lines.insert(at, bad)
    data = raw(HEADER) + b"\n" + b"\n".join(lines) + (b"\n" if final_newline else b"")
    good_numbers = [n + 2 for n in range(len(lines)) if n != at]
    return data, at + 2, good_numbers, [float(i) for i in range(GOOD_LINES)]


def read_bytes(data: bytes, span_bytes: int, features=FEATURES, **kwargs):
    rows, rejects = [], []
    for r, bad in csv_reader.read_file_spans(io.BytesIO(data), "f.csv", features, span_bytes, **kwargs):
        rows.append(r)
        rejects += bad
    return type(rows[0]).concat(rows) if rows else _empty_rows(len(features)), rejects


def read_ranges(path, cut: int, span_bytes: int):
    """Read `path` the way ReadCrewCsv does, each byte range on its own: [0, cut) and [cut, end)."""
    rows, rejects, before = [], [], 0
    size = path.stat().st_size
    for start, end in [(0, min(cut, size)), (min(cut, size), size)]:
        with open(path, "rb") as f:
            for r, bad in csv_reader.read_file_spans(f, "f.csv", FEATURES, span_bytes, byte_range=(start, end),
                                                      newlines_before=before):
                rows.append(r)
                rejects += bad
        with open(path, "rb") as f:
            before += csv_reader.count_newlines(f, start, end)
    return csv_reader.Rows.concat(rows) if rows else _empty_rows(len(FEATURES)), rejects


def boundaries_around(data: bytes, line_no: int):
    """(chunk sizes, range cuts) that put a read or range boundary just before, inside and just
    after data line `line_no` (reads count from the end of the header); plus one beyond the file."""
    header_end = data.index(b"\n") + 1
    start = header_end
    for _ in range(line_no - 2):
        start = data.index(b"\n", start) + 1
    end = data.find(b"\n", start)
    end = len(data) if end == -1 else end + 1
    reads = {max(start - header_end, 1), (start + end) // 2 - header_end, end - header_end + 1, len(data) * 2}
    ranges = {start, (start + end) // 2, end, len(data) * 2}
    return sorted(reads), sorted(ranges)


def assert_only(rows, rejects, bad_no, good_numbers, values, column, reason, how):
    assert rows.line.tolist() == good_numbers, how
    np.testing.assert_array_equal(rows.signals[:, 0], values, err_msg=how)
    assert [(r.file, r.line, r.column) for r in rejects] == [("f.csv", bad_no, column)], how
    assert reason in rejects[0].reason, how


@pytest.mark.parametrize("where", ["first", "middle", "last", "last-no-newline"])
@pytest.mark.parametrize("case, cells, column, reason", DEFECT_CASES, ids=[c[0] for c in DEFECT_CASES])
def test_a_defect_costs_its_row_alone_at_any_chunk_or_range_boundary(tmp_path, case, cells, column, reason, where):
    at = {"first": 0, "middle": GOOD_LINES // 2}.get(where, GOOD_LINES)
    bad = raw(row(**{"time": "9.5", **cells}))
    data, bad_no, good_numbers, values = file_with(bad, at, final_newline=where != "last-no-newline")
    reads, ranges = boundaries_around(data, bad_no)
    for span_bytes in reads:  # the bad line starts, ends, straddles or sits inside a read
        rows, rejects = read_bytes(data, span_bytes)
        assert_only(rows, rejects, bad_no, good_numbers, values, column, reason, f"span_bytes={span_bytes}")
    (tmp_path / "f.csv").write_bytes(data)
    for cut in ranges:  # ... or a byte range, read with small and large chunks
        for span_bytes in (700, 1 << 20):
            rows, rejects = read_ranges(tmp_path / "f.csv", cut, span_bytes)
            assert_only(rows, rejects, bad_no, good_numbers, values, column, reason,
                        f"range cut at {cut}, span_bytes={span_bytes}")


@pytest.mark.parametrize("case, cells, column, reason", DEFECT_CASES, ids=[c[0] for c in DEFECT_CASES])
def test_a_defective_line_is_shown_as_one_line_of_text(case, cells, column, reason):
    line = row(**{"time": "9.5", **cells})
    _, rejects = read_bytes(raw("\n".join([HEADER, row(), line, row(time="1")]) + "\n"), 1 << 20)
    text = rejects[0].text
    assert not any(c in text for c in "\r\n\x00\ufffd") and len(text) <= 1003
    if case == "over-long-line":
        assert text == line[:1000] + "..."
    else:  # the line as written; bytes that are not text, NUL and CR as escapes
        assert text == line.replace("\udcff", "\\xff").replace("\udce9", "\\xe9").replace(
            "\x00", "\\x00").replace("\r", "\\r")


def test_a_line_just_under_the_limit_is_read_and_one_at_it_is_rejected():
    # pyarrow needs a line within two of its blocks: a line of MAX_LINE - 1 bytes after others
    # straddles block edges and must still parse (r = 1.000...0).
    def padded(length):
        line = row(time="9.5", r="1.")
        return line.replace(",1.,", ",1." + "0" * (length - len(line)) + ",", 1)

    lines = [row(time=str(i / 256)) for i in range(3000)]
    text = "\n".join([HEADER] + lines[:1500] + [padded(MAX_LINE - 1)] + lines[1500:] + [padded(MAX_LINE)]) + "\n"
    assert len(padded(MAX_LINE - 1)) == MAX_LINE - 1
    rows, rejects = read_bytes(raw(text), 16 << 20)
    assert len(rows) == 3001 and rows.line.tolist()[1500] == 1502 and rows.signals[1500, 0] == 1.0
    assert [(r.line, r.reason) for r in rejects] == [(3003, f"line of {MAX_LINE:,} bytes or more")]


def test_a_line_far_beyond_the_limit_is_skipped_in_small_reads():
    huge = row(r="1" * (5 * MAX_LINE))  # read 4 KiB at a time: never held whole
    data = raw("\n".join([HEADER, row(time="0.1"), huge, row(time="0.2")]) + "\n")
    chunks = list(csv_reader.iter_line_spans(io.BytesIO(data[len(HEADER) + 1:]), 4096))
    assert max(len(chunk) for _, chunk, _ in chunks) <= MAX_LINE + 1 + 4096
    assert [n for _, _, n in chunks] == [c.count(b"\n") + (not c.endswith(b"\n")) for _, c, _ in chunks]
    rows, rejects = read_bytes(data, 4096)
    assert rows.line.tolist() == [2, 4] and [(r.line, r.column) for r in rejects] == [(3, "")]


@pytest.mark.parametrize("ending", ["\n", "\n\n", "\n\n\n\n", "\r\n\r\n", "\n \n\t\n", "\n\n  "])
def test_blank_lines_at_the_end_of_a_file_are_not_rows(tmp_path, ending):
    lines = [row(time=str(i / 256), r=str(i)) for i in range(GOOD_LINES)]
    data = raw(HEADER + "\n" + "\n".join(lines) + ending)
    (tmp_path / "f.csv").write_bytes(data)
    size = len(data)
    for span_bytes in (50, 333, 1 << 20):
        rows, rejects = read_bytes(data, span_bytes)
        assert rejects == [] and len(rows) == GOOD_LINES, span_bytes
    for cut in (size - 1, size - 2, size - len(ending), 997):  # a range of blank lines only, too
        rows, rejects = read_ranges(tmp_path / "f.csv", cut, 700)
        assert rejects == [] and rows.line.tolist() == list(range(2, GOOD_LINES + 2)), cut


def test_blank_lines_followed_by_a_row_are_rejected_even_across_boundaries(tmp_path):
    lines = [row(time=str(i / 256), r=str(i)) for i in range(GOOD_LINES)]
    data = raw(HEADER + "\n" + "\n".join(lines[:20] + ["", " ", "", "\r", ""] + lines[20:]) + "\n\n")
    (tmp_path / "f.csv").write_bytes(data)
    blank_start = data.index(b"\n\n") + 1
    expected = [(line, "empty line") for line in range(22, 27)]
    for span_bytes in (blank_start - len(HEADER), blank_start - len(HEADER) + 3, 1 << 20):
        rows, rejects = read_bytes(data, span_bytes)
        assert [(r.line, r.reason) for r in rejects] == expected and len(rows) == GOOD_LINES, span_bytes
    for cut in (blank_start, blank_start + 2, blank_start + 5):  # a range ends in the blank run
        rows, rejects = read_ranges(tmp_path / "f.csv", cut, 700)
        assert [(r.line, r.reason) for r in rejects] == expected and len(rows) == GOOD_LINES, cut


@pytest.mark.parametrize("slow_path", [False, True], ids=["typed", "text"])
def test_integers_are_read_exactly_and_never_wrap(slow_path):
    # The text path (a chunk with a non-numeric cell) reads via float64, exact only below 2**53.
    header = ",".join(cols.TEST_COLUMNS)
    lines = {str(2**63 - 1): "kept", str(-2**63): "kept", str(2**63): "outside", "1e19": "outside",
             str(2**53 + 1): "kept", "99999999999999999999": "outside"}
    text = [header]
    for number in lines:
        text.append(number + "," + row(crew=number if number != str(-2**63) else 3).rsplit(",", 1)[0])
    if slow_path:
        text.append("5," + row(r="oops").rsplit(",", 1)[0])
    rows, rejects = read_bytes(raw("\n".join(text) + "\n"), 1 << 20, labelled=False, with_id=True)
    kept = [int(n) for n, fate in lines.items() if fate == "kept"]
    assert rows.id.tolist() == kept
    assert rows.crew.tolist() == [n if n != -2**63 else 3 for n in kept]
    outside = [(r.line, r.column, r.reason) for r in rejects if r.column != "r"]
    assert outside == [(i + 2, "id", "outside the int64 range") for i, fate in enumerate(lines.values())
                       if fate == "outside"]


def test_times_below_2_to_the_32_are_kept_exactly():
    below = 2.0**32 - 2.0**-21
    assert below == np.nextafter(2.0**32, 0)  # the largest float64 below the bound
    rows, rejects = read_all("\n".join([HEADER, row(time=repr(below)), row(time="4294967295.999999"),
                                        row(time="4294967295.999998"), row(time="4294967296.0")]) + "\n")
    assert rows.time.tolist() == [below, 4294967295.999999, 4294967295.999998]
    assert rows.time[1] > rows.time[2]  # 1 us apart at the bound: still distinct, still in order
    assert [(r.line, r.column) for r in rejects] == [(5, "time")]


@pytest.mark.parametrize("text, message", [
    (HEADER + "\n\n\r\n  \n", "header only, no data rows"),
    ('"crew","experiment","time"\n1,CA,0.5\n', 'quoted column name(s) in the header ("crew"'),
    ("x" * (MAX_LINE + 10), f"no newline in the first {MAX_LINE:,} bytes"),
    (HEADER + "\r" + row() + "\r", "a carriage return inside the header line"),
])
def test_check_file_refuses_blank_rows_quoted_headers_and_endless_first_lines(text, message):
    with pytest.raises(csv_reader.CsvFileError, match=re.escape(f"f.csv: {message}")):
        csv_reader.check_file(io.BytesIO(text.encode()), "f.csv", FEATURES)


def test_find_defects_is_empty_for_clean_text_and_crlf():
    clean = raw("\r\n".join(row(time=str(i)) for i in range(100)) + "\r\n")
    assert csv_reader.find_defects(clean, cols.TRAIN_COLUMNS) == {}
    assert csv_reader.find_defects(raw(row() + ",é\n"), list(cols.TRAIN_COLUMNS) + ["note"]) == {}  # UTF-8
    assert cols.SIGNALS.index("ecg") < cols.SIGNALS.index("r")
    two = raw("\n".join([row(r='"1"', ecg="\x00"), row(), row(gsr="\udcff") + "\r"]))  # last: CR ends the file
    assert csv_reader.find_defects(two, cols.TRAIN_COLUMNS) == {0: ("ecg", "NUL byte"),  # the line's first
                                                                2: ("gsr", "not UTF-8 text (byte 0xff)")}
    assert csv_reader.find_defects(raw(row() + ',"x"\n'), cols.TRAIN_COLUMNS) == {  # a cell beyond the header's
        0: ("", 'quote character (") in a cell: quoted cells are not read')}


def test_a_read_that_fails_is_a_layout_error_naming_the_file():
    class Failing(io.BytesIO):
        def read(self, *args):
            raise OSError(5, "Input/output error")

    with pytest.raises(csv_reader.CsvFileError, match="f.csv: cannot be read \\(Input/output error\\)"):
        list(csv_reader.read_file_spans(Failing(raw(HEADER + "\n" + row() + "\n")), "f.csv", FEATURES))


def test_a_reject_text_is_at_most_1000_characters():
    wide = row(r="x" * 200_000)  # a bad cell in a long line (under the limit): its text is cut
    _, rejects = read_all("\n".join([HEADER, wide, row()]) + "\n")
    assert [(r.line, r.column, r.reason) for r in rejects] == [(2, "r", "not a number")]
    assert rejects[0].text == wide[:1000] + "..."


def test_reader_keeps_exact_ids_and_rejects_rows_without_one():
    header = list(cols.TEST_COLUMNS)
    good = ["9007199254740993", "1", "LOFT", "0.5", "0"] + ["1.5"] * len(cols.SIGNALS)
    lines = [good, ["abc"] + good[1:], [""] + good[1:], ["1.5"] + good[1:], ["12"] + good[1:],
             ["7.0"] + good[1:]]
    span = ("\n".join(",".join(line) for line in lines) + "\n").encode()
    rows, rejected = csv_reader.parse_span(span, header, ["r"], "t.csv", 2, labelled=False, with_id=True)
    assert isinstance(rows, csv_reader.IdRows)
    # 2**53 + 1 stays exact although this span, with bad ids in it, is parsed as text
    assert rows.id.dtype == np.int64 and rows.id.tolist() == [9007199254740993, 12, 7]
    assert [(r.line, r.column) for r in rejected] == [(3, cols.ID), (4, cols.ID), (5, cols.ID)]
    train_header = ",".join(cols.TRAIN_COLUMNS) + "\n"
    with pytest.raises(csv_reader.CsvFileError, match="train file"):
        list(csv_reader.read_file_spans(io.BytesIO(train_header.encode()), "t.csv", ["r"],
                                         labelled=False, with_id=True))


@pytest.mark.parametrize("text, expected", [
    ("12,1,LOFT", 12), ("12.0,1,LOFT", 12), ("-3,1", -3), ("x12,1", None), ("1.5,1", None), (",1", None),
    ("nan,1", None), ("99999999999999999999,1", None), ("", None),
])
def test_the_id_of_a_rejected_line_reads_as_the_reader_reads_ids(text, expected):
    assert csv_reader.reject_id(text, 0) == expected
