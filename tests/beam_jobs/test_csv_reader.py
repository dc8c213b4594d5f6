import gzip
import io

import numpy as np
import pandas as pd
import pytest

from beam_jobs import csv_reader
from tfrecords_schema import csv_layout as cols

FEATURES = ["r", "ecg", "gsr"]
HEADER = ",".join(cols.TRAIN_COLUMNS)


def row(crew=1, experiment="CA", time="0.5", seat=0, value="1.5", event="A", **override):
    values = {name: value for name in cols.SIGNALS}
    values.update(override)
    return ",".join([str(crew), experiment, time, str(seat)] + [values[n] for n in cols.SIGNALS] + [event])


def read_all(text, features=FEATURES, chunk_bytes=1 << 20, labelled=True):
    rows, rejects = [], []
    for r, bad in csv_reader.read_file_chunks(io.BytesIO(text.encode()), "f.csv", features, chunk_bytes,
                                              labelled=labelled):
        rows.append(r)
        rejects += bad
    return csv_reader.Rows.concat(rows) if rows else csv_reader.empty_rows(len(features)), rejects


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
    rows, rejects = read_all(text, chunk_bytes=1000)  # many chunks, boundaries inside lines
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
    with pytest.raises(csv_reader.CsvLayoutError, match="empty file"):
        read_all("")
    with pytest.raises(csv_reader.CsvLayoutError, match="missing column.*gsr"):
        read_all(HEADER.replace(",gsr", "") + "\n")
    test_layout = ",".join(cols.TEST_COLUMNS) + "\n"
    with pytest.raises(csv_reader.CsvLayoutError, match="test-layout"):
        read_all(test_layout)
    rows, rejects = read_all(HEADER + "\n")  # header only: nothing, and no error
    assert len(rows) == 0 and rejects == []


def test_gzip_and_plain_read_the_same(tmp_path):
    text = HEADER + "\n" + "\n".join(row(time=str(i)) for i in range(10)) + "\n"
    with gzip.open(tmp_path / "f.csv.gz", "wt") as f:
        f.write(text)
    with gzip.open(tmp_path / "f.csv.gz", "rb") as f:
        zipped = list(csv_reader.read_file_chunks(f, "f.csv.gz", FEATURES))
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
            for r, bad in csv_reader.read_file_chunks(f, "f.csv", FEATURES, 700, byte_range=(start, end),
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
        with pytest.raises(csv_reader.CsvLayoutError, match=r"f.csv.gz: truncated or damaged compressed file"):
            list(csv_reader.read_file_chunks(f, "f.csv.gz", FEATURES, chunk_bytes=4096))
    with csv_reader.decompressed(io.BytesIO(blob), "f.csv.gz") as f:
        with pytest.raises(csv_reader.CsvLayoutError, match="truncated"):
            csv_reader.check_file(f, "f.csv.gz", FEATURES, read_through=True)


def test_damaged_gzip_checksum_is_a_layout_error():
    _, blob = _gzipped_lines()
    blob = blob[:-8] + bytes([blob[-8] ^ 0xFF]) + blob[-7:]  # the stored CRC32 no longer matches
    with csv_reader.decompressed(io.BytesIO(blob), "f.csv.gz") as f:
        with pytest.raises(csv_reader.CsvLayoutError, match="f.csv.gz: truncated or damaged"):
            csv_reader.check_file(f, "f.csv.gz", FEATURES, read_through=True)


def test_bz2_reads_like_plain_and_unknown_compression_is_refused():
    import bz2

    text, _ = _gzipped_lines(50)
    with csv_reader.decompressed(io.BytesIO(bz2.compress(text.encode())), "f.csv.bz2") as f:
        rows = csv_reader.Rows.concat([r for r, _ in csv_reader.read_file_chunks(f, "f.csv.bz2", FEATURES)])
    np.testing.assert_array_equal(rows.time, read_all(text)[0].time)
    assert csv_reader.is_compressed("x.CSV.GZ") and not csv_reader.is_compressed("x.csv")
    with pytest.raises(csv_reader.CsvLayoutError, match="x.csv.zst: unsupported compression"):
        csv_reader.decompressed(io.BytesIO(b""), "x.csv.zst")


@pytest.mark.parametrize("text, message", [
    ("", "empty file"),
    (HEADER + "\n", "header only"),
    (HEADER, "header only"),
    ("\x89PNG\r\n\x1a\n\xff\xfe", "the first line is not UTF-8 text"),
])
def test_check_file_refuses_files_without_data_rows(text, message):
    with pytest.raises(csv_reader.CsvLayoutError, match=f"f.csv: {message}"):
        csv_reader.check_file(io.BytesIO(text.encode("latin-1")), "f.csv", FEATURES)


def test_check_file_returns_the_columns_it_will_ignore():
    text = "note," + HEADER + ",id\n" + "x," + row() + ",7\n"
    assert csv_reader.check_file(io.BytesIO(text.encode()), "f.csv", FEATURES) == ["note", "id"]
    test_layout = ",".join(cols.TEST_COLUMNS) + ",extra\n0," + row().rsplit(",", 1)[0] + ",1\n"
    assert csv_reader.check_file(io.BytesIO(test_layout.encode()), "t.csv", FEATURES, labelled=False,
                                 with_id=True) == ["extra"]
