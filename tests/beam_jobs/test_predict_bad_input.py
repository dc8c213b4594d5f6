"""beam_jobs.predict on bad input: file-level problems stop the run cleanly, bad rows never shift a window.

Every case builds a small test file here (2 crews x 2 seats x 40 rows, in the real file's
order: text-ordered times, seats interleaved). The model is a stand-in: a serving config of windows
of W=4 rows (no SavedModel) and tests/predict_reference.py's fingerprint, a numpy function of the
window that changes as soon as a window is off by one row. A bad row's effect is checked against
the independent pandas reference (reference_windows) of the same file WITHOUT that row: every
other id must get its window there; the clean files are checked against the same reference.
"""

import bz2
import csv
import gzip
import os
import re
import uuid
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from beam_jobs import inference, predict
from tests.predict_reference import fingerprint, reference_windows
from tfrecords_schema import csv_columns as cols
from tfrecords_schema import serving

W = 4
FEATURES = ["r", "ecg", "gsr"]
PROBS = ["A", "B", "C", "D"]
UNIFORM = [0.25] * 4
OLD = "id,A,B,C,D\n0,0.25,0.25,0.25,0.25\n"  # a submission crewstream wrote: replaceable
ROWS_PER_GROUP = 40
REJECTS_HEADER = ["file", "line", "column", "reason", "id", "text"]
MODEL_CALLS = "CREWSTREAM_TEST_MODEL_CALLS"  # a folder: noted_fingerprint leaves a file there per call


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """MODEL with only what predict reads before the model loads: serving's config."""
    root = str(tmp_path_factory.mktemp("model"))
    stats = {"window": W, "features": FEATURES, "label_vocabulary": PROBS}
    serving.write_config(serving.serving_dir(root), serving.make_config(
        stats, serving.LSTM, W, [serving.SCALED_SIGNATURE, serving.SERVING_SIGNATURE], serving.NORM_NONE, None))
    return root


def noted_fingerprint(windows):
    """The fingerprint; each call leaves an empty file in $CREWSTREAM_TEST_MODEL_CALLS when set,
    to show from outside the job whether the model ran at all. (Module level: the job pickles it.)"""
    folder = os.environ.get(MODEL_CALLS)
    if folder:
        open(os.path.join(folder, uuid.uuid4().hex), "w").close()
    return fingerprint(windows)


@pytest.fixture
def served(monkeypatch):
    """main() runs the job with the fingerprint in place of MODEL/serving's signature."""
    with inference.stand_in(inference.StandIn(noted_fingerprint)):
        yield


def make_lines(crews=(1, 2), seed=0):
    """Header + data lines of a test file laid out like the real one; ids 0.. in file order."""
    rng = np.random.default_rng(seed)
    frames = []
    for crew in crews:
        for seat in cols.SEATS:
            frame = pd.DataFrame(rng.normal(size=(ROWS_PER_GROUP, len(cols.SIGNALS))) * 10 + 100 * seat,
                                 columns=list(cols.SIGNALS))
            frame.insert(0, cols.CREW, crew)
            frame.insert(1, cols.EXPERIMENT, "LOFT")
            frame.insert(2, cols.TIME, [str(float(t)) for t in np.arange(ROWS_PER_GROUP) / 8])
            frame.insert(3, cols.SEAT, seat)
            frames.append(frame)
    frame = pd.concat(frames).sort_values([cols.CREW, cols.TIME, cols.SEAT], kind="stable")  # TIME is text
    frame.insert(0, cols.ID, np.arange(len(frame)))
    return frame.to_csv(index=False).splitlines()


@pytest.fixture(scope="module")
def lines():
    return make_lines()


def write(path, lines, newline="\n", final_newline=True, bom=False):
    """Lines to `path`; a lone surrogate \\udcXX in them stands for the undecodable byte XX."""
    text = newline.join(lines) + (newline if final_newline else "")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8", "surrogateescape"))
    return path


def edit(lines, line_no, column, value):
    """Copy of `lines` with one cell of file line `line_no` (header = line 1) replaced."""
    header = lines[0].split(",")
    cells = lines[line_no - 1].split(",")
    cells[header.index(column)] = value
    return lines[:line_no - 1] + [",".join(cells)] + lines[line_no:]


def without(lines, *line_nos):
    return [line for no, line in enumerate(lines, 1) if no not in line_nos]


def id_of(lines, line_no):
    return int(lines[line_no - 1].split(",")[0])


def all_but(lines, *line_nos):
    """The ids of every data line of `lines` but those at `line_nos`."""
    return {id_of(lines, no) for no in range(2, len(lines) + 1) if no not in line_nos}


def run(model_dir, path, out, *flags, max_bad_fraction=0.05):
    """The job's counts and its submission indexed by id. These files are small: one bad row is
    0.6% of the rows, hence --max-bad-fraction 0.05 unless told."""
    argv = ["--model-dir", model_dir, "--input", str(path), "--output", str(out), "--progress", "none",
            "--max-bad-fraction", str(max_bad_fraction), *map(str, flags)]
    with inference.stand_in(inference.StandIn(fingerprint)):
        counts = predict.run(argv)
    return counts, pd.read_csv(out).set_index(cols.ID)


def read_rejects(path):
    """The rejects file read with a CSV reader (every cell text), after checking its header."""
    with open(path, newline="") as f:
        header, *rows = list(csv.reader(f))
    assert header == REJECTS_HEADER
    return pd.DataFrame(rows, columns=header)


def rejects_of(counts):
    return read_rejects(counts["rejects_file"])


def duplicate_rejects(counts):
    return int(rejects_of(counts)["reason"].str.startswith("duplicate id").sum())


def assert_contract_windows(sub, path, ids=None):
    """Every id of `path` (a file without bad rows; `ids`: those only) has the fingerprint of its
    contract window (and with `ids` None, the submission holds exactly the ids of `path`)."""
    ref = reference_windows(path, FEATURES, W)
    if ids is None:
        assert sorted(sub.index) == sorted(ref)
    ids = np.array(sorted(ref if ids is None else ids))
    np.testing.assert_allclose(sub.loc[ids, PROBS].to_numpy(np.float32),
                               fingerprint(np.stack([ref[i] for i in ids])), rtol=1e-6, atol=1e-4)


# --- file-level problems: one line, nothing written ---------------------------------------------

def fails_cleanly(capsys, model_dir, path, tmp_path, *flags):
    """Run main on `path` over an older submission; return its one error line after checking that
    nothing was written, nothing is left behind, and there is no traceback."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "sub.csv").write_text(OLD)
    code = predict.main(["--model-dir", model_dir, "--input", str(path), "--output", str(out_dir / "sub.csv"),
                         "--progress", "none", *flags])
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" not in err
    errors = err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("crewstream predict: error: "), err
    assert str(path) in errors[0]
    assert (out_dir / "sub.csv").read_text() == OLD
    assert os.listdir(out_dir) == ["sub.csv"]  # no rejects file, no staging folder beside it
    return errors[0]


def _gzip(path, lines):
    data = gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)
    path.write_bytes(data)
    return path


def _truncated_gzip(tmp_path, lines):
    path = _gzip(tmp_path / "test.csv.gz", lines)
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * 0.6)])  # header and first rows still decompress
    return path


def _corrupt_gzip(tmp_path, lines):
    path = _gzip(tmp_path / "test.csv.gz", lines)
    data = bytearray(path.read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = bytes(64)
    path.write_bytes(bytes(data))
    return path


def _train_layout(tmp_path, lines):
    rows = [line.split(",")[1:] + ["A"] for line in lines[1:]]
    return write(tmp_path / "train.csv", [",".join(cols.TRAIN_COLUMNS)] + [",".join(r) for r in rows])


def _drop_column(name):
    def make(tmp_path, lines):
        at = lines[0].split(",").index(name)
        return write(tmp_path / "test.csv", [",".join(c for i, c in enumerate(line.split(",")) if i != at)
                                             for line in lines])
    return make


def _folder(tmp_path, lines):
    (tmp_path / "test.csv").mkdir()
    return tmp_path / "test.csv"


def _not_utf8_header(tmp_path, lines):
    path = tmp_path / "test.csv"
    path.write_bytes(b"id,\xff" + "\n".join(lines).encode())
    return path


FILE_CASES = {  # name: (make the file, what the one error line says)
    "no file matches": (lambda tmp_path, lines: tmp_path / "missing.csv", "not found"),
    "a folder": (_folder, "not a file"),
    "empty file": (lambda tmp_path, lines: write(tmp_path / "test.csv", [], final_newline=False), "empty file"),
    "header only": (lambda tmp_path, lines: write(tmp_path / "test.csv", lines[:1]), "header only"),
    "header and blank lines": (lambda tmp_path, lines: write(tmp_path / "test.csv", lines[:1] + ["", " "]),
                               "header only"),
    "header only, no newline": (
        lambda tmp_path, lines: write(tmp_path / "test.csv", lines[:1], final_newline=False), "header only"),
    "a missing feature column": (_drop_column("ecg"), "missing column(s) ecg"),
    "no id column": (_drop_column(cols.ID), "missing column(s) id"),
    "a missing key column": (_drop_column(cols.TIME), "missing column(s) time"),
    "a duplicate column": (
        lambda tmp_path, lines: write(tmp_path / "test.csv", [lines[0].replace("eeg_o2", "r")] + lines[1:]),
        "duplicate column(s) r"),
    "a train file": (_train_layout, "train file"),
    "a truncated .csv.gz": (_truncated_gzip, "truncated or damaged compressed file"),
    "a corrupt .csv.gz": (_corrupt_gzip, "truncated or damaged compressed file"),
    "plain text named .csv.gz": (lambda tmp_path, lines: write(tmp_path / "test.csv.gz", lines),
                                 "truncated or damaged compressed file"),
    "gzip data named .csv": (lambda tmp_path, lines: _gzip(tmp_path / "test.csv", lines), "not UTF-8"),
    "a header that is not UTF-8": (_not_utf8_header, "not UTF-8"),
}


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_a_file_level_problem_stops_with_one_line_and_writes_nothing(case, tmp_path, model_dir, lines, served,
                                                                      capsys):
    make, message = FILE_CASES[case]
    path = make(tmp_path, lines)
    line = fails_cleanly(capsys, model_dir, path, tmp_path)
    assert message in line, line


def test_verbose_shows_the_traceback(tmp_path, model_dir, lines, served, capsys):
    path = _truncated_gzip(tmp_path, lines)
    assert predict.main(["--model-dir", model_dir, "--input", str(path), "--output", str(tmp_path / "sub.csv"),
                         "--progress", "none", "--verbose"]) == 1
    err = capsys.readouterr().err
    # the traceback, the original error (a gzip's EOFError) travelling with it, then the one line
    assert err.startswith("Traceback (most recent call last):") and "\nEOFError" in err, err
    assert re.search(r"^beam_jobs\.predict\.PredictError: .*truncated", err, re.M), err
    last = err.splitlines()[-1]
    assert last.startswith(f"crewstream predict: error: {path}: ") and "truncated" in last
    assert sorted(os.listdir(tmp_path)) == ["test.csv.gz"]


def test_a_truncated_gzip_is_never_a_short_read(tmp_path, model_dir, lines):
    """Python's gzip module raises on a truncated stream; a reader that swallowed that would predict
    the rows before the cut and stop, so this pins it for the job itself, not only main."""
    path = _truncated_gzip(tmp_path, lines)
    with pytest.raises(predict.PredictError, match=re.escape(f"{path}: truncated")):
        run(model_dir, path, tmp_path / "sub.csv")
    assert sorted(os.listdir(tmp_path)) == ["test.csv.gz"]


# --- layouts that work: read by name, the same numbers -------------------------------------------

@pytest.fixture(scope="module")
def clean(tmp_path_factory, model_dir, lines):
    """(path, submission) of the unaltered file; its windows checked against the reference."""
    root = tmp_path_factory.mktemp("clean")
    path = write(root / "test.csv", lines)
    counts, sub = run(model_dir, path, root / "sub.csv")
    assert (counts["rows_read"], counts["rejected"], counts["rejects_file"]) == (len(lines) - 1, 0, None)
    assert_contract_windows(sub, path)
    return path, sub


def _reorder(lines, order):
    table = [line.split(",") for line in lines]
    return [",".join(row[i] for i in order) for row in table]


def test_columns_in_another_order_are_read_by_name(tmp_path, model_dir, lines, clean):
    n = len(lines[0].split(","))
    order = list(range(n))[::-1]  # id last, signals reversed, gsr first
    _, sub = run(model_dir, write(tmp_path / "t.csv", _reorder(lines, order)), tmp_path / "sub.csv")
    pd.testing.assert_frame_equal(sub.sort_index(), clean[1].sort_index())


def test_an_unknown_column_is_ignored_and_noted(tmp_path, model_dir, lines, clean, caplog):
    extra = [lines[0] + ",note,event"] + [line + ",x y,A" for line in lines[1:]]
    with caplog.at_level("WARNING", logger="crewstream.predict"):
        counts, sub = run(model_dir, write(tmp_path / "t.csv", extra), tmp_path / "sub.csv")
    pd.testing.assert_frame_equal(sub.sort_index(), clean[1].sort_index())
    assert counts["rejected"] == 0
    assert any("note, event" in r.getMessage() and "ignoring" in r.getMessage() for r in caplog.records)


def test_a_bad_cell_in_a_column_the_model_does_not_read_keeps_the_row(tmp_path, model_dir, lines, clean):
    counts, sub = run(model_dir, write(tmp_path / "t.csv", edit(lines, 20, "eeg_fp1", "oops")),
                      tmp_path / "sub.csv")
    assert counts["rejected"] == 0
    pd.testing.assert_frame_equal(sub.sort_index(), clean[1].sort_index())


@pytest.mark.parametrize("bom, newline", [(True, "\n"), (False, "\r\n"), (True, "\r\n")],
                         ids=["bom", "crlf", "bom+crlf"])
def test_bom_and_crlf_give_the_same_rows(tmp_path, model_dir, lines, clean, bom, newline):
    path = write(tmp_path / "t.csv", lines, newline=newline, bom=bom)
    counts, sub = run(model_dir, path, tmp_path / "sub.csv")
    assert counts["rejected"] == 0
    pd.testing.assert_frame_equal(sub.sort_index(), clean[1].sort_index())


@pytest.mark.parametrize("suffix, compress", [(".gz", gzip.compress), (".bz2", bz2.compress)])
def test_compressed_input_gives_the_same_rows(tmp_path, model_dir, lines, clean, suffix, compress):
    path = tmp_path / f"test.csv{suffix}"
    path.write_bytes(compress(("\n".join(lines) + "\n").encode()))
    _, sub = run(model_dir, path, tmp_path / "sub.csv")
    pd.testing.assert_frame_equal(sub.sort_index(), clean[1].sort_index())


# --- bad rows: rejected, listed, and no other id's window moves ---------------------------------

BAD = 23  # a file line in the middle of crew 1, seat 0 (rows after it in time have it in their window)

ROW_CASES = {  # name: (column, bad value, what its id gets, reason in the rejects file)
    "non-numeric feature": ("r", "abc", "uniform", "not a number"),
    "nan": ("ecg", "nan", "uniform", "not finite"),
    "inf": ("gsr", "inf", "uniform", "not finite"),
    "-inf": ("r", "-inf", "uniform", "not finite"),
    "1e309": ("r", "1e309", "uniform", "not finite"),
    "1e39 (finite in float64, not float32)": ("r", "1e39", "uniform", "not finite (float32)"),
    "empty feature": ("ecg", "", "uniform", "not finite"),
    "nan time": (cols.TIME, "nan", "uniform", "not finite"),
    "1e309 time": (cols.TIME, "1e309", "uniform", "not finite"),
    "negative time": (cols.TIME, "-0.5", "uniform", "negative time"),
    "seat 2": (cols.SEAT, "2", "uniform", "seat must be one of"),
    "seat -1": (cols.SEAT, "-1", "uniform", "seat must be one of"),
    "non-numeric crew": (cols.CREW, "one", "uniform", "not a number"),
    "unknown experiment": (cols.EXPERIMENT, "XX", "uniform", "unknown experiment"),
    "empty id": (cols.ID, "", "absent", "missing value"),
    "non-integer id": (cols.ID, "12.5", "absent", "not an integer"),
    "non-numeric id": (cols.ID, "x12", "absent", "not a number"),
    "an extra cell": (None, ",1.0", "uniform", "expected 28 columns, found 29"),
    "a missing cell": (None, "drop", "uniform", "expected 28 columns, found 27"),
    # Lines that are not CSV text, numbers outside their field's range; the test reads
    # in small spans (ROW_SPAN_BYTES), so a bad line can sit on a span boundary too.
    "a byte that is not UTF-8": ("r", "1.\udcff5", "uniform", "not UTF-8 text (byte 0xff)"),
    "a NUL byte": ("ecg", "1\x005", "uniform", "NUL byte"),
    "a lone CR": ("gsr", "1\r5", "uniform", "carriage return inside the line"),
    "a quoted cell": (cols.EXPERIMENT, '"LOFT"', "uniform", 'quote character (")'),
    "an unbalanced quote": ("r", '"1.5', "uniform", 'quote character (")'),
    "a line of 2 MiB": (None, "1" * (2 << 20), "uniform", "line of 2,097,152 bytes or more"),
    "crew 1e19": (cols.CREW, "1e19", "uniform", "outside the int64 range"),
    "seat 1e19": (cols.SEAT, "1e19", "uniform", "outside the int64 range"),
    "time 1e19": (cols.TIME, "1e19", "uniform", "too large: times must be below 2**32 s"),
    "id 1e19": (cols.ID, "1e19", "absent", "outside the int64 range"),
    "id 2**63": (cols.ID, str(2**63), "absent", "outside the int64 range"),
    "id inf": (cols.ID, "inf", "absent", "not an integer"),
}
ROW_SPAN_BYTES = 4000  # about 8 lines: the file is read in many chunks (--span-bytes)


def _bad_line(lines, case, line_no):
    column, value, _, _ = ROW_CASES[case]
    if column is not None:
        return edit(lines, line_no, column, value)
    text = lines[line_no - 1] + value if value != "drop" else lines[line_no - 1].rsplit(",", 1)[0]
    return lines[:line_no - 1] + [text] + lines[line_no:]


@pytest.fixture(scope="module")
def bad_rows(tmp_path_factory, model_dir):
    """One run over a file of 4 crews (320 rows) holding every ROW_CASES defect, each on its own
    line, 10 lines apart (5 rows of one recording: no window holds two), read in chunks of about
    8 lines. Returns its lines (clean and bad), the bad line of each case, the file, the counts,
    the submission and the rejects."""
    root = tmp_path_factory.mktemp("bad_rows")
    lines = make_lines(crews=(1, 2, 3, 4), seed=1)
    where = {case: 3 + 10 * k for k, case in enumerate(ROW_CASES)}
    bad = lines
    for case, line_no in where.items():
        bad = _bad_line(bad, case, line_no)
    path = write(root / "bad.csv", bad)
    counts, sub = run(model_dir, path, root / "sub.csv", "--span-bytes", ROW_SPAN_BYTES, max_bad_fraction=0.2)
    return SimpleNamespace(lines=lines, bad=bad, where=where, path=path, counts=counts, sub=sub,
                           rejects=rejects_of(counts).set_index("line"), root=root)


@pytest.mark.parametrize("case", list(ROW_CASES))
def test_a_bad_row_is_listed_with_its_line_column_reason_and_id(case, bad_rows):
    column, _, fate, reason = ROW_CASES[case]
    line_no = bad_rows.where[case]
    bad_id = id_of(bad_rows.lines, line_no)
    reject = bad_rows.rejects.loc[str(line_no)]
    assert (reject["file"], reject["column"]) == (str(bad_rows.path), column or "")
    assert reason in reject["reason"]
    assert reject["id"] == (str(bad_id) if fate == "uniform" else "")
    text = bad_rows.bad[line_no - 1]
    if text.isprintable() and len(text) < 1000:  # else escaped or cut (csv_reader.Reject)
        assert reject["text"] == text
    if fate == "uniform":  # its id still reads: kept, with the uniform distribution
        assert bad_rows.sub.loc[bad_id, PROBS].tolist() == UNIFORM
    else:
        assert bad_id not in bad_rows.sub.index


def test_bad_rows_shift_no_other_window(bad_rows):
    lines, bad_lines = bad_rows.lines, sorted(bad_rows.where.values())
    assert bad_rows.rejects.index.tolist() == [str(no) for no in bad_lines]  # these, no others, in line order
    uniform = [case for case, (_, _, fate, _) in ROW_CASES.items() if fate == "uniform"]
    others = all_but(lines, *bad_lines)
    assert bad_rows.sub.index.is_unique
    assert set(bad_rows.sub.index) == others | {id_of(lines, bad_rows.where[case]) for case in uniform}
    # not one other id's window moved: each is its window in the file without the bad lines
    assert_contract_windows(bad_rows.sub, write(bad_rows.root / "clean.csv", without(lines, *bad_lines)), others)
    counts = bad_rows.counts
    assert (counts["rows_read"], counts["rejected"], counts["uniform"]) == (len(lines) - 1, len(ROW_CASES),
                                                                            len(uniform))
    assert counts["predicted"] + counts["rejected"] == counts["rows_read"]


def test_a_truncated_last_line_is_rejected_and_the_rest_kept(tmp_path, model_dir, lines):
    last = len(lines)
    cut = lines[:-1] + [lines[-1][:len(lines[-1]) // 2]]  # mid-row, no newline: a cut-off download
    counts, sub = run(model_dir, write(tmp_path / "bad.csv", cut, final_newline=False), tmp_path / "sub.csv")
    rejects = rejects_of(counts)
    assert rejects["line"].tolist() == [str(last)] and "columns" in rejects["reason"][0]
    assert rejects["id"].tolist() == [str(id_of(lines, last))]
    assert set(sub.index) == all_but(lines)
    assert_contract_windows(sub, write(tmp_path / "clean.csv", lines[:-1]), all_but(lines, last))
    assert sub.loc[id_of(lines, last), PROBS].tolist() == UNIFORM  # its id still reads: kept, uniform


@pytest.mark.parametrize("ending", ["\n\n", "\n\n\n", "\n\r\n \n"], ids=["one", "two", "crlf-and-space"])
def test_blank_lines_at_the_end_are_not_rows(tmp_path, model_dir, lines, clean, ending):
    # A file of 160 rows: one rejected row would be over the default --max-bad-fraction 0.001.
    path = tmp_path / "t.csv"
    path.write_text("\n".join(lines) + ending)
    counts, sub = run(model_dir, path, tmp_path / "sub.csv", max_bad_fraction=predict.DEFAULT_MAX_BAD_FRACTION)
    assert (counts["rows_read"], counts["rejected"], counts["rejects_file"]) == (len(lines) - 1, 0, None)
    pd.testing.assert_frame_equal(sub.sort_index(), clean[1].sort_index())


def test_an_empty_line_in_the_middle_is_rejected_without_an_id(tmp_path, model_dir, lines, clean):
    counts, sub = run(model_dir, write(tmp_path / "bad.csv", lines[:30] + [""] + lines[30:]),
                      tmp_path / "sub.csv")
    pd.testing.assert_frame_equal(sub.sort_index(), clean[1].sort_index())
    assert rejects_of(counts)[["line", "reason", "id"]].values.tolist() == [["31", "empty line", ""]]


def test_rows_with_the_same_key_and_time_are_both_kept_in_file_order(tmp_path, model_dir, lines):
    """The contract sorts stably: two rows of one group at one time keep their file order, each
    id gets its own window, and the later row's window ends with both."""
    twin = lines[BAD - 1].split(",")
    twin[0] = "1000"
    twin[cols.TEST_COLUMNS.index("r")] = "555.5"
    path = write(tmp_path / "t.csv", lines[:BAD] + [",".join(twin)] + lines[BAD:])
    counts, sub = run(model_dir, path, tmp_path / "sub.csv")
    assert counts["rejected"] == 0 and sub.index.is_unique and len(sub) == len(lines)
    assert_contract_windows(sub, path)  # the reference sorts stably too

    swapped = write(tmp_path / "s.csv", lines[:BAD - 1] + [",".join(twin), lines[BAD - 1]] + lines[BAD:])
    other_order = fingerprint(reference_windows(swapped, FEATURES, W, [1000])[1000][None])
    assert not np.allclose(sub.loc[1000, PROBS].to_numpy(np.float32), other_order[0])  # the check has teeth


# --- duplicate ids: each id exactly once ---------------------------------------------------------

def _with_id(lines, line_no, new_id):
    return edit(lines, line_no, cols.ID, str(new_id))


def test_a_repeated_line_is_a_duplicate_id_and_leaves_every_window_alone(tmp_path, model_dir, lines, clean):
    copy_at = 120
    repeated = lines[:copy_at - 1] + [lines[BAD - 1]] + lines[copy_at - 1:]  # line BAD again, at line 120
    counts, sub = run(model_dir, write(tmp_path / "t.csv", repeated), tmp_path / "sub.csv")
    pd.testing.assert_frame_equal(sub.sort_index(), clean[1].sort_index())
    rejects = rejects_of(counts)
    assert rejects[["line", "column", "id"]].values.tolist() == [[str(copy_at), cols.ID, str(id_of(lines, BAD))]]
    assert rejects["reason"][0] == f"duplicate id: line {BAD} of {tmp_path / 't.csv'} has it too and keeps it"
    assert rejects["text"][0] == ""
    assert (counts["rejected"], duplicate_rejects(counts), counts["uniform"]) == (1, 1, 0)


@pytest.fixture(scope="module")
def duplicated(tmp_path_factory, lines):
    """(lines, the file) where a row of crew 2 (line 100) carries the id of line BAD (crew 1)."""
    root = tmp_path_factory.mktemp("duplicated")
    dup_lines = _with_id(lines, 100, id_of(lines, BAD))
    return dup_lines, write(root / "t.csv", dup_lines)


def test_the_first_row_keeps_a_duplicate_id_across_recordings_and_the_second_leaves_every_window(
        tmp_path, model_dir, lines, duplicated):
    other = 100  # another recording's row (crew 2) gets the id of line BAD (crew 1)
    dup_id = id_of(lines, BAD)
    counts, sub = run(model_dir, duplicated[1], tmp_path / "sub.csv")
    assert sub.index.is_unique
    assert set(sub.index) == all_but(lines, other)
    # dup_id has line BAD's window; nothing else moved: the file as if line 100 was never there
    assert_contract_windows(sub, write(tmp_path / "c.csv", without(lines, other)))
    assert rejects_of(counts)[["line", "id"]].values.tolist() == [[str(other), str(dup_id)]]
    assert (counts["rejected"], counts["uniform"], counts["predicted"]) == (1, 0, len(lines) - 2)


def test_time_blocks_give_the_same_submission_with_a_duplicate_across_recordings(tmp_path, model_dir, duplicated):
    """Recordings cut in time blocks of 8 rows (5 blocks each), each block predicted with the rows
    before it: the same bytes as whole recordings, the duplicate id still resolved once."""
    _, path = duplicated
    run(model_dir, path, tmp_path / "whole.csv")
    counts, sub = run(model_dir, path, tmp_path / "blocks.csv", "--block-rows", 8)
    assert sub.index.is_unique and counts["rejected"] == 1
    assert (tmp_path / "blocks.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()


def test_a_usable_row_keeps_the_id_of_an_earlier_rejected_row(tmp_path, model_dir, lines):
    """Line BAD is rejected (bad r); a later usable row with its id gets a real window instead of
    the uniform fallback, and the id is still there once."""
    later = 100
    dup_id = id_of(lines, BAD)
    bad = _with_id(edit(lines, BAD, "r", "abc"), later, dup_id)
    counts, sub = run(model_dir, write(tmp_path / "t.csv", bad), tmp_path / "sub.csv")
    assert sub.index.is_unique and sub.loc[dup_id, PROBS].tolist() != UNIFORM
    # the file without line BAD, line `later` (one line up) carrying dup_id: every id's window
    assert_contract_windows(sub, write(tmp_path / "c.csv", _with_id(without(lines, BAD), later - 1, dup_id)))
    rejects = rejects_of(counts)
    assert rejects[["line", "column", "id"]].values.tolist() == [[str(BAD), "r", str(dup_id)]]  # no duplicate
    assert (counts["rejected"], counts["uniform"]) == (1, 0)


def test_two_rejected_rows_with_one_id_give_it_one_uniform_row(tmp_path, model_dir, lines):
    later = 100
    dup_id = id_of(lines, BAD)
    bad = _with_id(edit(edit(lines, BAD, "r", "abc"), later, cols.SEAT, "9"), later, dup_id)
    counts, sub = run(model_dir, write(tmp_path / "t.csv", bad), tmp_path / "sub.csv")
    assert sub.index.is_unique and sub.loc[dup_id, PROBS].tolist() == UNIFORM
    assert set(sub.index) == all_but(lines, later)
    assert_contract_windows(sub, write(tmp_path / "c.csv", without(lines, BAD, later)), all_but(lines, BAD, later))
    assert rejects_of(counts)[["line", "id"]].values.tolist() == [[str(BAD), str(dup_id)], [str(later), str(dup_id)]]
    assert (counts["rejected"], counts["uniform"], counts["predicted"]) == (2, 1, len(lines) - 3)


# --- too many bad rows --------------------------------------------------------------------------

def test_more_rejects_than_max_bad_fraction_stop_the_run_before_any_prediction(
        tmp_path, model_dir, lines, served, capsys, monkeypatch):
    calls = tmp_path / "calls"
    calls.mkdir()
    monkeypatch.setenv(MODEL_CALLS, str(calls))
    bad = edit(edit(lines, BAD, "r", "abc"), 50, cols.SEAT, "3")
    path = write(tmp_path / "t.csv", bad)
    out = tmp_path / "sub.csv"
    out.write_text(OLD)
    args = ["--model-dir", model_dir, "--input", str(path), "--output", str(out), "--progress", "none"]
    assert predict.main(args) == 1  # default 0.001: 2 of 160 rows is too many
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and "2 of 160 rows rejected" in errors[0] and "--max-bad-fraction 0.001" in errors[0]
    assert errors[0].startswith(f"crewstream predict: error: {path}: ")
    assert str(tmp_path / "sub.rejects.csv") in errors[0] and "no submission written" in errors[0]
    assert out.read_text() == OLD
    assert sorted(os.listdir(tmp_path)) == ["calls", "sub.csv", "sub.rejects.csv", "t.csv"]  # no staging left
    assert os.listdir(calls) == []  # the model never ran
    rejects = read_rejects(tmp_path / "sub.rejects.csv")
    assert rejects[["line", "column", "id"]].values.tolist() == [
        [str(BAD), "r", str(id_of(lines, BAD))], ["50", cols.SEAT, str(id_of(lines, 50))]]

    assert predict.main(args + ["--max-bad-fraction", "0.02"]) == 0
    assert len(pd.read_csv(out)) == len(lines) - 1
    assert os.listdir(calls)  # the check has teeth: this run called the model


def test_duplicate_ids_count_toward_max_bad_fraction(tmp_path, model_dir, lines):
    doubled = lines + lines[1:]  # the file's rows twice over: every id twice
    with pytest.raises(predict.PredictError, match=r"160 of 320 rows rejected \(50\.000%\)"):
        run(model_dir, write(tmp_path / "t.csv", doubled), tmp_path / "sub.csv")
    assert not (tmp_path / "sub.csv").exists()
    rejects = read_rejects(tmp_path / "sub.rejects.csv")
    assert len(rejects) == len(lines) - 1
    assert rejects["line"].astype(int).min() > len(lines) and (rejects["column"] == cols.ID).all()  # the second copies
    assert sorted(rejects["id"].astype(int)) == sorted(all_but(lines))


@pytest.mark.parametrize("text", ["-0.1", "1.5", "x"])
def test_max_bad_fraction_must_be_a_fraction(text, capsys):
    with pytest.raises(SystemExit):
        predict._parse_args(["--model-dir", "m", "--input", "i", "--output", "o", "--max-bad-fraction", text])
    assert "max-bad-fraction" in capsys.readouterr().err
