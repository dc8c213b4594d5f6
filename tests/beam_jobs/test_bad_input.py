"""Bad input to `crewstream preprocess`, case by case (docs/DESIGN.md, "The input CSV").

Row-level problems: the row goes to OUT/rejects/rejects.csv with file, line, column and reason,
every other row is used (the output equals tests/reference.py on the good rows alone), and
stats.json accounts for every file (rows read = rows used + rows rejected).
File-level problems: one line naming the file and the problem, nothing written, a traceback only
with --verbose.

The row-level cases share one run (two seconds of work, tens of seconds of start-up): one input
holds every bad row, other inputs each carry one harmless quirk, and each case is its own test.
"""

import csv
import gzip
import logging
import re

import pandas as pd
import pytest

from beam_jobs import preprocess
from tests.helpers import SMALL_FEATURES as FEATURES
from tests.reference import assert_matches_reference
from tests.helpers import kaggle_order, make_frame
from tests.reference import read_output

WINDOW, STRIDE = 8, 2
ROWS = 40  # rows per (crew, seat, experiment)
BIG = "1000000"  # the other signals of a bad row: had it reached the analyzer, scaling would show it

# (case, cells changed in a copy of a good train row, column, reason) -> a row-level reject.
CELL_CASES = [
    ("non-numeric", {"r": "abc"}, "r", "not a number"),
    ("nan", {"ecg": "nan"}, "ecg", "missing or not finite"),
    ("inf", {"ecg": "inf"}, "ecg", "missing or not finite"),
    ("-inf", {"gsr": "-inf"}, "gsr", "missing or not finite"),
    ("1e309", {"r": "1e309"}, "r", "missing or not finite"),
    ("label-E", {"event": "E"}, "event", "unknown label"),
    ("label-lower-case-a", {"event": "a"}, "event", "unknown label"),
    ("empty-label", {"event": ""}, "event", "unknown label"),
    ("seat-2", {"seat": "2"}, "seat", "seat must be one of (0, 1)"),
    ("seat-minus-1", {"seat": "-1"}, "seat", "seat must be one of (0, 1)"),
    ("negative-time", {"time": "-0.5"}, "time", "negative time"),
    # Lines that are not CSV text, and numbers outside what their field holds; the
    # shared run reads with small chunks and byte ranges (READ_FLAGS), so these sit at and
    # across their boundaries too.
    ("not-utf8", {"r": "1.\udcff5"}, "r", "not UTF-8 text (byte 0xff)"),
    ("nul", {"ecg": "1\x005"}, "ecg", "NUL byte"),
    ("lone-cr", {"gsr": "1\r5"}, "gsr", "carriage return inside the line"),
    ("quoted-cell", {"experiment": '"CA"'}, "experiment", 'quote character (")'),
    ("unbalanced-quote", {"r": '"1.5'}, "r", 'quote character (")'),
    ("over-long-line", {"r": "1" * (2 << 20)}, "", "line of 2,097,152 bytes or more"),
    ("crew-1e19", {"crew": "1e19"}, "crew", "outside the int64 range"),
    ("seat-1e19", {"seat": "1e19"}, "seat", "outside the int64 range"),
    ("crew-inf", {"crew": "inf"}, "crew", "not an integer"),
    ("time-1e19", {"time": "1e19"}, "time", "too large: times must be below 2**32 s"),
]
READ_FLAGS = ("--span-bytes", "65536", "--split-bytes", "300000")  # several chunks and ranges per file


def shown(text):
    """A reject's text for a line as written: undecodable bytes (lone surrogates here), NUL and CR
    escaped, an over-long line cut to 1,000 characters."""
    text = text.replace("\udcff", "\\xff").replace("\x00", "\\x00").replace("\r", "\\r")
    return text if len(text) <= 1000 else text[:1000] + "..."


def write_lines(path, lines, end=""):
    path.write_bytes(("\n".join(lines) + end).encode("utf-8", "surrogateescape"))


def crew_frame(crew):
    return make_frame(crews=(crew,), experiments=("CA",), rows_per_recording=ROWS, seed=crew, features=FEATURES)


def csv_text(frame, columns=None, lineterminator="\n"):
    ordered = kaggle_order(frame)
    return ordered[columns or list(frame.columns)].to_csv(index=False, lineterminator=lineterminator)


def with_cells(line, header, cells):
    values = dict(zip(header, line.split(",")))
    values.update(cells)
    return ",".join(values[name] for name in header)


def write_bad_file(path):
    """Crews 1 (train) and 2 (eval) with every row-level case added. Returns the good frame and
    {case: (line number, column, reason, line text)}."""
    frame = pd.concat([crew_frame(1), crew_frame(2)], ignore_index=True)
    header_line, *lines = csv_text(frame).splitlines()
    header = header_line.split(",")
    template = next(line for line in lines if line.startswith("1,"))
    bad = {}
    for k, (case, cells, column, reason) in enumerate(CELL_CASES):
        text = with_cells(template, header, {**{name: BIG for name in FEATURES}, "time": f"{50 + k}.5", **cells})
        lines.insert(7 * (k + 1), text)
        bad[case] = (column, reason, text)
    # An exact copy of an eval-crew row, right after it (eval rows do not feed the scaling
    # statistics: see test_a_rejected_duplicate_train_row_leaves_the_scaling_alone for train rows).
    original = next(i for i, line in enumerate(lines) if line.startswith("2,") and i > 40)
    lines.insert(original + 1, lines[original])
    truncated = lines[3][:len(lines[3]) // 3]  # the last line, cut: no newline after it either
    assert truncated.count(",") < len(header) - 1
    lines.append(truncated)
    write_lines(path, [header_line] + lines)
    where = {case: (lines.index(text) + 2, column, reason, shown(text)) for case, (column, reason, text) in bad.items()}
    where["duplicate"] = (original + 3, "time",
                          f"duplicate (crew, seat, experiment, time): repeats line {original + 2} of {path}",
                          lines[original])
    where["truncated-last-line"] = (len(lines) + 1, "", f"expected {len(header)} columns, found", truncated)
    return frame, where


def write_repeat_file(path, main_path):
    """One row repeating a crew-2 (eval) row of `main_path`, in a file that sorts after it: the
    repeat is rejected, naming the line AND the file it repeats. Returns (line, column, reason)."""
    header_line, *lines = main_path.read_bytes().decode("utf-8", "surrogateescape").split("\n")
    original = [i for i, line in enumerate(lines) if line.startswith("2,") and lines.count(line) == 1][-1]
    write_lines(path, [header_line, lines[original]], end="\n")
    return 2, "time", f"duplicate (crew, seat, experiment, time): repeats line {original + 2} of {main_path}"


def write_quirk_files(root):
    """One file per harmless quirk, each its own crew: {quirk: (path, frame)}."""
    files = {}
    frame = crew_frame(3)
    files["utf8-bom"] = root / "bom.csv", frame
    (root / "bom.csv").write_bytes(b"\xef\xbb\xbf" + csv_text(frame).encode())
    frame = crew_frame(4)
    files["crlf"] = root / "crlf.csv", frame
    (root / "crlf.csv").write_bytes(csv_text(frame, lineterminator="\r\n").encode())
    frame = crew_frame(5)
    files["columns-reordered"] = root / "reordered.csv", frame
    (root / "reordered.csv").write_text(csv_text(frame, columns=list(reversed(frame.columns))))
    frame = crew_frame(6)
    files["extra-column"] = root / "extra.csv", frame
    (root / "extra.csv").write_text(csv_text(frame.assign(note="x")[["crew", "note"] + list(frame.columns[1:])]))
    frame = crew_frame(7)
    files["gzip"] = root / "good.csv.gz", frame
    (root / "good.csv.gz").write_bytes(gzip.compress(csv_text(frame).encode()))
    frame = crew_frame(8)
    files["trailing-blank-lines"] = root / "blank-end.csv", frame  # blank lines at the end are not rows
    (root / "blank-end.csv").write_text(csv_text(frame) + "\n\r\n  \n")
    return files


class _Messages(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def job_args(inputs, out, *extra):
    args = ["--output", str(out), "--features", ",".join(FEATURES), "--eval-crews", "2",
            "--window", str(WINDOW), "--stride", str(STRIDE), "--num-shards", "2", *READ_FLAGS, *map(str, extra)]
    for path in inputs:
        args += ["--input", str(path)]
    return args


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory):
    """One run over the bad file and the quirk files, accepting exactly its share of rejects."""
    root = tmp_path_factory.mktemp("bad_input")
    bad_frame, where = write_bad_file(root / "main.csv")
    repeat = write_repeat_file(root / "zz-repeat.csv", root / "main.csv")
    quirks = write_quirk_files(root)
    inputs = [root / "main.csv", root / "zz-repeat.csv"] + [path for path, _ in quirks.values()]
    rows_read = len(bad_frame) + len(where) + 1 + sum(len(frame) for _, frame in quirks.values())
    n_bad = len(where) + 1
    fraction = n_bad / rows_read
    log = _Messages()
    logger = logging.getLogger("crewstream.preprocess")
    logger.addHandler(log)
    try:
        stats = preprocess.run(job_args(inputs, root / "out", "--max-bad-fraction", repr(fraction)))
    finally:
        logger.removeHandler(log)
    with open(root / "out" / "rejects" / "rejects.csv", newline="") as f:
        rejects = list(csv.DictReader(f))
    good = pd.concat([bad_frame] + [frame for _, frame in quirks.values()], ignore_index=True)
    return {"root": root, "stats": stats, "where": where, "quirks": quirks, "rejects": rejects, "good": good,
            "inputs": inputs, "fraction": fraction, "log": log.messages, "out": root / "out", "repeat": repeat,
            "n_bad": n_bad, "n_read": rows_read}


@pytest.mark.parametrize("case", [c[0] for c in CELL_CASES] + ["duplicate", "truncated-last-line"])
def test_bad_row_goes_to_rejects_with_file_line_column_reason(bad_run, case):
    line, column, reason, text = bad_run["where"][case]
    main = str(bad_run["root"] / "main.csv")
    found = [r for r in bad_run["rejects"] if r["file"] == main and r["line"] == str(line)]
    assert len(found) == 1, f"line {line} of main.csv not in rejects.csv"
    assert found[0]["column"] == column
    assert reason in found[0]["reason"]
    assert found[0]["text"] == ("" if case == "duplicate" else text)


def test_a_repeat_of_a_row_in_another_file_names_that_file(bad_run):
    line, column, reason = bad_run["repeat"]
    found = [r for r in bad_run["rejects"] if r["file"] == str(bad_run["root"] / "zz-repeat.csv")]
    assert [(r["line"], r["column"], r["reason"], r["text"]) for r in found] == [(str(line), column, reason, "")]
    entry = next(e for e in bad_run["stats"]["inputs"] if e["file"] == str(bad_run["root"] / "zz-repeat.csv"))
    assert (entry["rows_read"], entry["rows_used"], entry["rows_rejected"]) == (1, 0, 1)


def test_every_reject_is_one_of_the_bad_rows(bad_run):
    main = str(bad_run["root"] / "main.csv")
    expected = sorted([(main, w[0]) for w in bad_run["where"].values()]
                      + [(str(bad_run["root"] / "zz-repeat.csv"), bad_run["repeat"][0])])
    assert sorted((r["file"], int(r["line"])) for r in bad_run["rejects"]) == expected
    assert {r["id"] for r in bad_run["rejects"]} == {""}  # the rejects file's id column: empty in a train file
    assert bad_run["stats"]["rejected_rows"] == bad_run["n_bad"]


def test_no_good_row_is_lost_and_no_bad_row_reaches_windows_or_scaling(bad_run):
    # Windows, labels and scaling equal the reference computed on the good rows alone; a bad
    # row (their other signals are 1e6) in the scaling statistics would move them far.
    stats = assert_matches_reference(bad_run["good"], bad_run["out"], WINDOW, STRIDE)
    used = stats["splits"]["train"]["num_rows"] + stats["splits"]["eval"]["num_rows"]
    assert used == len(bad_run["good"])


def test_each_input_file_accounts_for_every_row(bad_run):
    inputs = {entry["file"]: entry for entry in bad_run["stats"]["inputs"]}
    assert sorted(inputs) == sorted(str(p) for p in bad_run["inputs"])
    main = inputs.pop(str(bad_run["root"] / "main.csv"))
    inputs.pop(str(bad_run["root"] / "zz-repeat.csv"))  # test_a_repeat_of_a_row_in_another_file_names_that_file
    n_bad = len(bad_run["where"])
    n_good = 4 * ROWS
    assert main == {"file": main["file"], "rows_read": n_good + n_bad, "rows_used": n_good, "rows_rejected": n_bad}
    for entry in inputs.values():
        assert (entry["rows_read"], entry["rows_used"], entry["rows_rejected"]) == (2 * ROWS, 2 * ROWS, 0)
    assert (bad_run["out"] / "stats.json").read_text().count('"rows_read"') == len(bad_run["inputs"])


@pytest.mark.parametrize("quirk", ["utf8-bom", "crlf", "columns-reordered", "extra-column", "gzip",
                                   "trailing-blank-lines"])
def test_harmless_quirk_file_is_read_whole(bad_run, quirk):
    path, frame = bad_run["quirks"][quirk]
    crew = int(frame["crew"].iloc[0])
    entry = next(e for e in bad_run["stats"]["inputs"] if e["file"] == str(path))
    assert (entry["rows_read"], entry["rows_used"], entry["rows_rejected"]) == (len(frame), len(frame), 0)
    _, found, _ = read_output(str(bad_run["out"]))
    per_seat = (ROWS - WINDOW) // STRIDE + 1
    assert sum(1 for key in found if key[0] == crew) == 2 * per_seat  # both seats; values: test above
    assert not [r for r in bad_run["rejects"] if r["file"] == str(path)]


def test_extra_column_is_noted_in_the_log(bad_run):
    extra = str(bad_run["quirks"]["extra-column"][0])
    noted = [m for m in bad_run["log"] if extra in m and "note" in m and "ignored" in m]
    assert len(noted) == 1, bad_run["log"]
    assert not [m for m in bad_run["log"] if "ignored" in m and extra not in m]


def test_max_bad_fraction_exceeded_fails_and_publishes_nothing(bad_run, tmp_path):
    just_below = (bad_run["n_bad"] - 1) / bad_run["n_read"]
    out = tmp_path / "out"
    with pytest.raises(preprocess.PreprocessError) as error:
        preprocess.run(job_args(bad_run["inputs"], out, "--max-bad-fraction", repr(just_below)))
    message = str(error.value)
    n_bad, n_read = bad_run["n_bad"], bad_run["n_read"]
    assert f"{n_bad} of {n_read} rows rejected" in message and "--max-bad-fraction" in message
    assert "nothing was published" in message and "\n" not in message
    first = min(w[0] for w in bad_run["where"].values())
    assert f"main.csv line {first} " in message  # the first reject is quoted
    assert not out.exists()  # no staging folder, no stats.json, no shards
    # The other side: exactly at the fraction the run passed (the module's run, bad_run).
    assert bad_run["stats"]["rejected_rows"] / sum(e["rows_read"] for e in bad_run["stats"]["inputs"]) == \
        bad_run["fraction"]


def test_max_bad_fraction_defaults_to_one_in_a_thousand_and_is_checked():
    args, _ = preprocess._parse_args(["--input", "x.csv", "--output", "o"])
    assert args.max_bad_fraction == 0.001
    with pytest.raises(SystemExit):
        preprocess._parse_args(["--input", "x.csv", "--output", "o", "--max-bad-fraction", "1.5"])


def test_a_rejected_duplicate_train_row_leaves_the_scaling_alone(tmp_path):
    # Scaling is analyzed on the rows kept after duplicate times are rejected, so the output
    # (statistics included) equals the reference on the good rows alone.
    frame = pd.concat([crew_frame(1), crew_frame(2)], ignore_index=True)
    header_line, *lines = csv_text(frame).splitlines()
    lines.insert(11, lines[10])  # a crew-1 (train) row, twice
    (tmp_path / "dup.csv").write_text("\n".join([header_line] + lines) + "\n")
    preprocess.run(job_args([tmp_path / "dup.csv"], tmp_path / "out", "--max-bad-fraction", "0.01"))
    assert_matches_reference(frame, tmp_path / "out", WINDOW, STRIDE)


# File-level cases: (case, writes the input under root and returns the --input argument, message).
def _write(root, text, name="f.csv"):
    (root / name).write_text(text)
    return root / name


def _test_layout(root):
    frame = crew_frame(1).drop(columns="event")
    return _write(root, csv_text(frame.assign(id=range(len(frame))), columns=["id"] + list(frame.columns)))


def _gzip_cut(root, cut):
    blob = gzip.compress(csv_text(crew_frame(1)).encode())
    (root / "cut.csv.gz").write_bytes(blob[:-8] if cut == "trailer" else blob[:len(blob) // 2])
    return root / "cut.csv.gz"


FILE_CASES = [
    ("no-file-matches", lambda root: root / "nothing*.csv", "no file matches"),
    ("empty-file", lambda root: _write(root, ""), "empty file"),
    ("header-only", lambda root: _write(root, ",".join(crew_frame(1).columns) + "\n"), "header only"),
    ("header-and-blank-lines", lambda root: _write(root, ",".join(crew_frame(1).columns) + "\n\n \n"), "header only"),
    ("missing-column", lambda root: _write(root, csv_text(crew_frame(1).drop(columns="gsr"))),
     "missing column(s) gsr"),
    ("test-file", _test_layout, "test file"),
    ("truncated-gzip-trailer", lambda root: _gzip_cut(root, "trailer"), "truncated or damaged compressed file"),
    ("truncated-gzip-half", lambda root: _gzip_cut(root, "half"), "truncated or damaged compressed file"),
]


@pytest.mark.parametrize("case, make, message", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_file_level_problem_is_one_line_naming_the_file_and_writes_nothing(tmp_path, capsys, case, make, message):
    path = make(tmp_path)
    out = tmp_path / "out"
    argv = job_args([path], out)
    assert preprocess.main(argv) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("crewstream preprocess: error: ") and str(path) in err and message in err
    assert "Traceback" not in err
    assert not out.exists()
    assert preprocess.main(argv + ["--verbose"]) == 1  # --verbose: the traceback, then the same line
    verbose = capsys.readouterr().err
    assert "Traceback (most recent call last):" in verbose
    assert re.search(r"^beam_jobs\.preprocess\.PreprocessError: .*" + re.escape(message), verbose, re.M), verbose
    assert verbose.splitlines()[-1] == err.strip()
    assert not out.exists()


def test_reader_inside_the_pipeline_fails_on_a_truncated_gzip_too(tmp_path):
    # The launcher reads compressed inputs through before the run; the pipeline's own reader
    # must not fall back to Beam's, which returns the rows before the cut without an error.
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    from beam_jobs import reading

    path = str(_gzip_cut(tmp_path, "half"))
    with pytest.raises(Exception, match="cut.csv.gz: truncated or damaged compressed file"):
        with beam.Pipeline(runner=fn_runner.FnApiRunner()) as p:
            _ = p | reading.ReadCrewCsv([path], FEATURES)
