"""beam_jobs.predict: every id once, windows per docs/DESIGN.md's Prediction contract, blocks of at
most --block-rows rows, kill and rerun byte-identical, the same submission on the portable path.

The reference windows are rebuilt independently from the CSV with pandas (tests/predict_reference.py:
per recording, stable sort by time, an explicit per-row slice with the padding spelled out), never
with predict's code. Most checks use a fingerprint model (a numpy function of the window that
predict cannot fake without the right window) on every id; the serving model itself is checked on
a sample of ids. The plain numpy/TF part is tests/beam_jobs/test_inference.py's.
"""

import gzip
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from beam_jobs import blocks, ids, inference, predict, rejects
from beam_jobs import predict_steps as pr
from tests.predict_reference import GROUP, fingerprint, loop_windows, reference_windows, sequence_fingerprint
from tests.worker_pool import workers_started
from tfrecords_schema import serving
from tfrecords_schema import WINDOW, csv_columns as cols

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEADER = ["id", "A", "B", "C", "D"]
OLD = "id,A,B,C,D\n0,0.25,0.25,0.25,0.25\n"  # an earlier submission crewstream wrote


def argv(model_dir, csv_path, out_path, **flags):
    """predict's command line; flags as keywords (batch_size=500 -> --batch-size 500)."""
    flags.setdefault("progress", "none")
    found = ["--model-dir", str(model_dir), "--input", str(csv_path), "--output", str(out_path)]
    for name, value in flags.items():
        found += [f"--{name.replace('_', '-')}", str(value)]
    return found


def run(model_dir, csv_path, out_path, model=None, sequence=None, **flags):
    """(predict.run's counts, the submission as a DataFrame)."""
    if model is None and sequence is None:
        summary = predict.run(argv(model_dir, csv_path, out_path, **flags))
    else:
        with inference.stand_in(inference.StandIn(model, sequence)):
            summary = predict.run(argv(model_dir, csv_path, out_path, **flags))
    return summary, pd.read_csv(out_path)


@pytest.fixture(scope="module")
def serving_config(exported):
    return serving.read_config(exported.model_dir)


@pytest.fixture(scope="module")
def test_csv(sample_dir):
    return sample_dir / "test.csv"


# --- the input really is laid out like the real test.csv -------------------------------------


# --- every id once, and the windows of the contract ------------------------------------------

@pytest.fixture(scope="module")
def fingerprinted(tmp_path_factory, exported, test_csv):
    """(counts, submission DataFrame, its path): the fingerprint on every window of the sample."""
    out = tmp_path_factory.mktemp("fp") / "submission.csv"
    summary, sub = run(exported.model_dir, test_csv, out, model=fingerprint, batch_size=500)
    return summary, sub, out


def test_a_predict_freezes_once_after_everything_it_runs_on_is_imported(exported, test_csv, tmp_path, monkeypatch):
    """failure.imports_done (gc.freeze in a command's own process) after TensorFlow, Beam and the
    job's steps are imported, before the pipeline is built."""
    from cli_common import failure

    events = []
    monkeypatch.setattr(failure, "_OWN_PROCESS", True)
    monkeypatch.setattr("gc.freeze", lambda: events.append(
        ("freeze", all(m in sys.modules for m in ("tensorflow", "apache_beam", "beam_jobs.predict_steps",
                                                  "beam_jobs.reading")))))
    build = predict.build_pipeline
    monkeypatch.setattr(predict, "build_pipeline", lambda *a: (events.append(("build", None)), build(*a))[1])
    run(exported.model_dir, test_csv, tmp_path / "submission.csv", model=fingerprint, batch_size=500)
    assert events == [("freeze", True), ("build", None)]


def test_every_id_exactly_once(fingerprinted, test_csv):
    summary, sub, out = fingerprinted
    ids = pd.read_csv(test_csv, usecols=[cols.ID])[cols.ID]
    assert list(sub.columns) == HEADER
    assert len(sub) == len(ids) and sub[cols.ID].is_unique
    assert set(sub[cols.ID]) == set(ids)
    assert (summary["rows_read"], summary["predicted"], summary["rejected"], summary["uniform"]) == (
        len(ids), len(ids), 0, 0)
    assert summary["rejects_file"] is None and summary["nonfinite"] == 0
    assert sorted(os.listdir(out.parent)) == ["submission.csv"]  # the staging folder went


def test_every_window_is_the_contract_window(fingerprinted, test_csv, serving_config):
    _, sub, _ = fingerprinted
    ref = reference_windows(test_csv, serving_config["features"], serving_config["window"])
    ids = np.array(sorted(ref))
    expected = fingerprint(np.stack([ref[i] for i in ids]))
    got = sub.set_index(cols.ID).loc[ids, HEADER[1:]].to_numpy(np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-4)


def nan_when_even(windows):
    """The fingerprint, NaN for every window whose last row's first feature has an even integer part."""
    out = fingerprint(windows)
    out[np.floor(np.asarray(windows)[:, -1, 0]) % 2 == 0] = np.nan
    return out


def test_rows_the_model_gives_no_finite_output_get_the_uniform_row_and_are_counted(
        tmp_path, exported, test_csv, serving_config, capsys):
    ref = reference_windows(test_csv, serving_config["features"], serving_config["window"])
    nan_ids = {i for i, w in ref.items() if np.floor(w[-1, 0]) % 2 == 0}
    assert 0 < len(nan_ids) < len(ref)
    summary, sub = run(exported.model_dir, test_csv, tmp_path / "s.csv", model=nan_when_even, batch_size=500)
    assert summary["nonfinite"] == len(nan_ids) and summary["predicted"] == len(ref)
    values = sub.set_index(cols.ID)[HEADER[1:]]
    assert np.isfinite(values.to_numpy()).all()
    assert (values.loc[sorted(nan_ids)].to_numpy() == 0.25).all()
    assert not (values.drop(index=sorted(nan_ids)).to_numpy() == 0.25).all(axis=1).any()


def test_serving_model_probabilities_on_a_sample_of_ids_padding_included(
        tmp_path, exported, test_csv, serving_config):
    """The real model: submission rows equal serving_default applied to the reference windows."""
    import tensorflow as tf

    _, sub = run(exported.model_dir, test_csv, tmp_path / "s.csv", batch_size=300)
    w = serving_config["window"]
    df = pd.read_csv(test_csv)
    rng = np.random.default_rng(0)
    sample = []
    for _, group in df.groupby(GROUP):
        ordered = group.sort_values(cols.TIME, kind="stable")[cols.ID].to_numpy()
        sample += list(ordered[:w + 1])  # rows 0..W: padded (W-1 of them), exact, one past
        sample += list(rng.choice(ordered[w + 1:], 20, replace=False))
    ref = reference_windows(test_csv, serving_config["features"], w, sample)
    signature = serving.load(exported.model_dir).signatures[serving.SERVING_SIGNATURE]
    windows = np.stack([ref[i] for i in sample])
    expected = signature(**{WINDOW: tf.constant(windows)})[serving.PROBABILITIES].numpy()
    got = sub.set_index(cols.ID).loc[sample, HEADER[1:]].to_numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert expected.std(axis=0).max() > 1e-3  # outputs vary between windows: the check has teeth
    probabilities = sub[HEADER[1:]].to_numpy()
    assert np.isfinite(probabilities).all() and len(sub) == sub[cols.ID].nunique() == len(df)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_a_recording_is_predicted_block_after_block_in_time_order(tmp_path):
    """PredictRecordingFn on one recording's time blocks (given out of order, each a run of rows of
    two chunks' block files, one block shorter than W-1): every kept row gets the fingerprint of its
    window over the whole recording, rows in (time, file, line) order (equal times keep file
    order), rows whose (file, line) key lost its id left out as if the file did not have them."""
    w = 4
    times = [0.3, 0.1, 0.2, 0.1, 0.9, 1.2, 1.5, 2.0, 2.1, 2.1, 2.4, 2.6, 2.2, 2.8, 3.5, 3.1, 3.3, 3.0]
    source = np.arange(len(times)) % 2
    line = 10 + np.arange(len(times)) // 2
    row_id = 100 + np.arange(len(times))
    signals = np.stack([np.arange(len(times)) * 1.5, -np.arange(len(times)) ** 2.0], axis=1).astype(np.float32)
    index = np.searchsorted([1.0, 2.0, 3.0], times, side="right")  # blocks 0-3; block 1 has 2 rows
    files = {b: [] for b in (2, 0, 3, 1)}
    for src in (1, 0):
        at = np.flatnonzero(source == src)
        at = at[np.argsort(index[at], kind="stable")]  # a chunk's block file: its rows in block order
        path = str(tmp_path / "blocks" / f"f{src}.block")
        blocks.write_spill(path, blocks.RecordingRows(np.array(times)[at], signals[at], np.full(len(at), -1, np.int8),
                                              line[at], source[at].astype(np.int32), row_id[at]))
        for b in files:
            run_ = np.flatnonzero(index[at] == b)
            files[b].append(blocks.FileRows(path, int(run_[0]), int(run_[-1]) + 1))
    parts = list(files.items())
    for lost in ([], [(1, 12)], [(0, 10), (1, 13), (0, 13)]):
        excluded = np.sort(ids.row_keys(*np.array(lost, np.int64).reshape(-1, 2).T))
        kept = [i for i in range(len(times)) if (source[i], line[i]) not in lost]
        order = sorted(kept, key=lambda i: (times[i], source[i], line[i]))
        params = pr.PredictParams("unused", w, 4, inference.WINDOWS, str(tmp_path / f"staging{len(lost)}"),
                                  batch_size=3, progress="none")
        fn = pr.PredictRecordingFn(params)
        fn.setup()
        with inference.stand_in(inference.StandIn(fingerprint)):
            out = list(fn.process(((1, 0, "LOFT"), parts), excluded, {"go": True, "rows": len(kept)}))
        pieces = [x for x in out if isinstance(x, dict)]
        tallies = [x.value for x in out if not isinstance(x, dict)]
        assert [p["block"] for p in pieces] == [0, 1, 2, 3] and sum(p["rows"] for p in pieces) == len(kept)
        sub = pd.concat([pd.read_csv(p["path"], header=None, names=HEADER) for p in pieces], ignore_index=True)
        assert sub[cols.ID].tolist() == row_id[order].tolist()
        expected = fingerprint(loop_windows(signals[order], w))
        np.testing.assert_array_equal(sub[HEADER[1:]].to_numpy(np.float32), expected)
        assert sum(count for _, count in tallies) == len(kept)
        assert list(fn.process(((1, 0, "LOFT"), parts), excluded, {"go": False, "rows": len(kept)})) == []


# --- rejected rows ----------------------------------------------------------------------------

def corrupt(test_csv, path):
    """Copy of the sample with bad rows; returns {line number: (kind, the row's original id)}."""
    lines = test_csv.read_text().splitlines()
    header = lines[0].split(",")
    at = {name: header.index(name) for name in header}
    bad = {}

    def edit(line_no, column, value, kind):
        cells = lines[line_no - 1].split(",")
        bad[line_no] = (kind, int(cells[at[cols.ID]]))
        cells[at[column]] = value
        lines[line_no - 1] = ",".join(cells)

    edit(300, "r", "abc", "signal")          # a feature the model reads: rejected, uniform
    edit(301, cols.SEAT, "7", "seat")        # no group for it: rejected, uniform
    edit(5000, cols.ID, "x12", "id")         # no readable id: rejected, not in the submission
    edit(7000, "eeg_fp1", "oops", "unused")  # a column the model does not read: kept
    path.write_text("\n".join(lines) + "\n")
    return bad


def test_rejected_rows_are_listed_and_never_shift_another_window(tmp_path, exported, test_csv, serving_config):
    path = tmp_path / "bad.csv"
    bad = corrupt(test_csv, path)
    summary, sub = run(exported.model_dir, path, tmp_path / "sub.csv", model=fingerprint)
    all_ids = set(pd.read_csv(test_csv, usecols=[cols.ID])[cols.ID])
    no_id = bad[5000][1]
    assert set(sub[cols.ID]) == all_ids - {no_id} and sub[cols.ID].is_unique
    assert (summary["rejected"], summary["uniform"], summary["predicted"]) == (3, 2, len(all_ids) - 3)

    by_id = sub.set_index(cols.ID)
    for line in (300, 301):
        np.testing.assert_array_equal(by_id.loc[bad[line][1], HEADER[1:]].to_numpy(), [0.25] * 4)
    ref = reference_windows(path, serving_config["features"], serving_config["window"])
    kept = np.array(sorted(ref))
    assert len(kept) == len(all_ids) - 3
    np.testing.assert_allclose(by_id.loc[kept, HEADER[1:]].to_numpy(np.float32),
                               fingerprint(np.stack([ref[i] for i in kept])), rtol=1e-6, atol=1e-4)

    table = pd.read_csv(summary["rejects_file"], dtype=str, keep_default_na=False)
    assert summary["rejects_file"] == str(tmp_path / "sub.rejects.csv")
    assert list(table.columns) == list(rejects.HEADER)
    assert table["line"].astype(int).tolist() == [300, 301, 5000]
    assert table["column"].tolist() == ["r", cols.SEAT, cols.ID]
    assert table["id"].tolist() == [str(bad[300][1]), str(bad[301][1]), ""]


def test_a_clean_rerun_removes_a_stale_rejects_file(tmp_path, exported, test_csv):
    (tmp_path / "sub.rejects.csv").write_text(",".join(rejects.HEADER) + "\nt.csv,2,r,not a number,0,x\n")
    summary, _ = run(exported.model_dir, test_csv, tmp_path / "sub.csv", model=fingerprint)
    assert summary["rejects_file"] is None and not (tmp_path / "sub.rejects.csv").exists()


# --- files: gzip, a failed run ------------------------------------------------------------------

def test_gzip_input_and_output_give_the_same_bytes(tmp_path, exported, test_csv, fingerprinted):
    with open(test_csv, "rb") as src, gzip.open(tmp_path / "test.csv.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    run(exported.model_dir, tmp_path / "test.csv.gz", tmp_path / "sub.csv.gz", model=fingerprint, batch_size=500)
    with gzip.open(tmp_path / "sub.csv.gz", "rb") as f:
        assert f.read() == fingerprinted[2].read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["sub.csv.gz", "test.csv.gz"]


_FAILING_CALLS = []


def failing_fingerprint(windows):
    """The fingerprint for three calls, then a failure (as a model that runs out of memory)."""
    _FAILING_CALLS.append(len(windows))
    if len(_FAILING_CALLS) > 3:
        raise RuntimeError("the model failed")
    return fingerprint(windows)


def test_a_failed_run_leaves_the_earlier_submission_and_nothing_else(tmp_path, exported, test_csv):
    out = tmp_path / "sub.csv"
    out.write_text(OLD)
    _FAILING_CALLS.clear()
    with pytest.raises(Exception, match="the model failed"):
        run(exported.model_dir, test_csv, out, model=failing_fingerprint, batch_size=100, concurrent=1)
    assert len(_FAILING_CALLS) > 3
    assert out.read_text() == OLD
    assert sorted(os.listdir(tmp_path)) == ["sub.csv"]


# --- command line and progress -----------------------------------------------------------------


def test_a_preloaded_model_is_shared_until_its_files_change_or_the_run_ends(exported_tcn):
    """inference.preload (the launcher, while the job reads) and load_model (each in-process
    worker) give one model object; a model trained again into the folder is loaded again."""
    model_dir = str(exported_tcn.model_dir)
    inference.forget_loaded()
    try:
        inference.preload(model_dir, inference.SWEEP)
        first = inference.load_model(model_dir, inference.SWEEP)
        assert inference.load_model(model_dir, inference.SWEEP) is first
        assert isinstance(first, inference.SweepModel)
        assert inference.load_model(model_dir, inference.WINDOWS) is not first  # another signature
        pb = os.path.join(model_dir, serving.SERVING_DIR, "saved_model.pb")
        stat = os.stat(pb)
        os.utime(pb, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        assert inference.load_model(model_dir, inference.SWEEP) is not first
        again = inference.load_model(model_dir, inference.SWEEP)
        inference.forget_loaded()
        assert inference.load_model(model_dir, inference.SWEEP) is not again
    finally:
        inference.forget_loaded()



def test_two_in_process_workers_share_one_progress_and_write_the_same_submission(tmp_path, exported_tcn, test_csv,
                                                                                 capsys, caplog):
    """--direct_num_workers 2 (what a local run on a large file gets by default): Beam's two
    in-process workers predict the recordings between them; the progress is one display that
    ends at every row once, and the submission is byte for byte the one-worker one."""
    n = len(pd.read_csv(test_csv, usecols=[cols.ID]))
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    assert predict.main(argv(exported_tcn.model_dir, test_csv, one, block_rows=300)) == 0
    with caplog.at_level("INFO", logger="crewstream"):
        assert predict.main(argv(exported_tcn.model_dir, test_csv, two, progress="log", block_rows=300)
                            + ["--direct_num_workers", "2"]) == 0
    logged = caplog.text + capsys.readouterr().err
    assert logged.count("100%") == 1 and f"100%  {n:,}/{n:,} rows" in logged, logged[-2000:]
    assert two.read_bytes() == one.read_bytes()


def test_main_predicts_reports_progress_and_errors(tmp_path, exported_tcn, test_csv, sample_dir, capsys, caplog):
    """A run a person can follow: the progress line ends at every row, 100%; errors are one line."""
    out = tmp_path / "sub.csv"
    n = len(pd.read_csv(test_csv, usecols=[cols.ID]))
    with caplog.at_level("INFO", logger="crewstream"):
        assert predict.main(argv(exported_tcn.model_dir, test_csv, out, progress="log")) == 0
    captured = capsys.readouterr()
    assert f"wrote {out}: {n:,} rows ({n:,} predicted from their window" in captured.out
    logged = caplog.text + captured.err
    assert f"100%  {n:,}/{n:,} rows" in logged, logged[-2000:]
    assert len(pd.read_csv(out)) == n

    assert predict.main(argv(exported_tcn.model_dir, test_csv, tmp_path / "bar.csv", progress="bar")) == 0
    err = capsys.readouterr().err
    assert "\rpredict  [" + "#" * 24 + "]  100%  " + f"{n:,}/{n:,} rows" in err, err[-2000:]

    assert predict.main(argv(exported_tcn.model_dir, sample_dir / "train.csv", tmp_path / "x.csv")) == 1
    err = capsys.readouterr().err
    assert "train file" in err and err.count("\n") == 1 and "Traceback" not in err
    assert predict.main(argv(tmp_path / "nope", test_csv, tmp_path / "x.csv")) == 1
    err = capsys.readouterr().err
    assert "not found" in err and err.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == ["bar.csv", "sub.csv"]


def test_sweeping_an_lstm_is_a_one_line_error(tmp_path, exported, test_csv, capsys):
    assert predict.main(argv(exported.model_dir, test_csv, tmp_path / "s.csv", path="sweep")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "this one is a lstm" in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []


# --- the sweep (a model with the `sequence` signature) -----------------------------------------

@pytest.mark.parametrize("sweep_rows", [63, 1 << 20])
def test_sweep_chunks_give_every_row_its_window(tmp_path, exported_tcn, test_csv, fingerprinted, sweep_rows):
    """Chunks of W-1 rows and whole blocks through the job (other sizes: test_predict_padded_...):
    every row gets exactly its window's fingerprint, padding rows included."""
    w = serving.read_config(exported_tcn.model_dir)["window"]
    summary, sub = run(exported_tcn.model_dir, test_csv, tmp_path / "sub.csv", path="sweep",
                       sequence=sequence_fingerprint(w), sweep_rows=sweep_rows, concurrent=2)
    assert summary["nonfinite"] == 0 and summary["predicted"] == len(sub)
    pd.testing.assert_frame_equal(sub.sort_values(cols.ID, ignore_index=True),
                                  fingerprinted[1].sort_values(cols.ID, ignore_index=True))


TCN_FLAGS = {"sweep_rows": 1001, "block_rows": 2048}  # chunk and block edges at odd places


@pytest.fixture(scope="module")
def tcn_swept(tmp_path_factory, exported_tcn, test_csv):
    """(counts, submission path): the real tcn swept (auto picks it), blocks of 2,048 rows: the
    reference of the portable runs."""
    out = tmp_path_factory.mktemp("tcn_swept") / "sub.csv"
    summary, _ = run(exported_tcn.model_dir, test_csv, out, **TCN_FLAGS)
    return summary, out


@pytest.fixture(scope="module")
def tcn_windowed(tmp_path_factory, exported_tcn, test_csv):
    """The tcn's submission through serving_default on every row's window (the reference)."""
    out = tmp_path_factory.mktemp("tcn_windows") / "sub.csv"
    return run(exported_tcn.model_dir, test_csv, out, path="windows", batch_size=512)


def test_sweep_submission_equals_the_windowed_one(tcn_swept, tcn_windowed):
    """The real tcn: the sweep gives every id the windowed path's probabilities to 1e-5, the
    padded rows at each recording's start and the rows after each block edge included."""
    summary, out = tcn_swept
    windowed = tcn_windowed[1].set_index(cols.ID).sort_index()
    swept = pd.read_csv(out).set_index(cols.ID).sort_index()
    assert swept.index.equals(windowed.index) and summary["predicted"] == tcn_windowed[0]["predicted"]
    np.testing.assert_allclose(swept.to_numpy(), windowed.to_numpy(), atol=1e-5)
    assert windowed.to_numpy().std(axis=0).max() > 1e-3  # outputs vary between rows: the check has teeth


def test_sweep_beside_rejected_and_duplicate_rows_equals_the_windowed_path(tmp_path, exported_tcn, test_csv):
    path = tmp_path / "bad.csv"
    bad = corrupt(test_csv, path)
    lines = path.read_text().splitlines()
    lines.append(lines[1234])  # a duplicate of line 1235's id, appended: rejected, no window moves
    path.write_text("\n".join(lines) + "\n")
    windowed_summary, windowed = run(exported_tcn.model_dir, path, tmp_path / "w.csv", path="windows")
    summary, swept = run(exported_tcn.model_dir, path, tmp_path / "s.csv", sweep_rows=777)
    assert (summary["rejected"], summary["uniform"]) == (4, 2)
    reasons = pd.read_csv(summary["rejects_file"], dtype=str, keep_default_na=False)["reason"]
    assert reasons.str.startswith("duplicate id").sum() == 1
    assert summary["predicted"] == windowed_summary["predicted"]
    windowed, swept = (df.set_index(cols.ID).sort_index() for df in (windowed, swept))
    assert swept.index.equals(windowed.index) and bad[5000][1] not in swept.index
    np.testing.assert_allclose(swept.to_numpy(), windowed.to_numpy(), atol=1e-5)


# --- --block-rows: the output does not depend on it, and no block holds more ---------------------

BLOCK_HZ, SMALL_BLOCK_ROWS = 20, 50  # 20 rows a second: blocks of 2 one-second bins (40 rows)


def write_block_test_csv(path, seed=4):
    """A test CSV in the real file's order (text-ordered times, seats interleaved), 20 rows
    a second: crew 1's recordings 30 s, crew 2's 60 s (a recording twice as long), each with a
    2 s gap; ids 0.. in file order. Returns (path, rows per recording)."""
    from tests.helpers import kaggle_order

    rng = np.random.default_rng(seed)
    frames = []
    for crew, seconds in ((1, 30), (2, 60)):
        for seat in cols.SEATS:
            n = seconds * BLOCK_HZ
            times = np.arange(n) / BLOCK_HZ
            times[n // 3:] += 2.0
            frame = pd.DataFrame(rng.normal(size=(n, len(cols.SIGNALS))) * 10 + 100 * seat, columns=list(cols.SIGNALS))
            frame.insert(0, cols.CREW, crew)
            frame.insert(1, cols.EXPERIMENT, "LOFT")
            frame.insert(2, cols.TIME, times)
            frame.insert(3, cols.SEAT, seat)
            frames.append(frame)
    ordered = kaggle_order(pd.concat(frames, ignore_index=True))
    ordered.insert(0, cols.ID, np.arange(len(ordered)))
    ordered[list(cols.TEST_COLUMNS)].to_csv(path, index=False)
    return path, [len(f) for f in frames]


def _measured(monkeypatch, found):
    """Fill `found` as the job runs (in this process: FnApiRunner), measured from outside the
    DoFns: "block reads", the rows read from block files (blocks.read_spill, counted as it
    returns) for each time block (each call of PredictRecordingFn._sorted_block); "model
    passes", the rows of every padded array inference.predict_padded was given (a block's rows
    and the W-1 before them)."""
    read_spill, sorted_block = blocks.read_spill, pr.PredictRecordingFn._sorted_block
    predict_padded = inference.predict_padded
    found.update({"block reads": [], "model passes": []})
    reading = []  # the rows read so far for the time block being sorted

    def read(*args, **kwargs):
        rows = read_spill(*args, **kwargs)
        if reading:
            reading[-1] += len(rows)
        return rows

    def counted_block(*args, **kwargs):
        reading.append(0)
        try:
            return sorted_block(*args, **kwargs)
        finally:
            found["block reads"].append(reading.pop())

    def passed(model, padded, *args, **kwargs):
        found["model passes"].append(len(padded))
        return predict_padded(model, padded, *args, **kwargs)

    monkeypatch.setattr(blocks, "read_spill", read)
    monkeypatch.setattr(pr.PredictRecordingFn, "_sorted_block", staticmethod(counted_block))
    monkeypatch.setattr(inference, "predict_padded", passed)


@pytest.fixture(scope="module")
def block_runs(tmp_path_factory, exported, exported_tcn):
    """The 20 Hz file through the job with --block-rows 50 and the default, on the windows path
    (the fingerprint) and the sweep (sequence_fingerprint, sweeps of 30 rows), each measured
    (_measured)."""
    root = tmp_path_factory.mktemp("block_rows")
    csv_path, recordings = write_block_test_csv(root / "test.csv")
    w = serving.read_config(exported_tcn.model_dir)["window"]
    found = {"csv": csv_path, "recordings": recordings}
    for name, model_dir, model in (("windows", exported.model_dir, inference.StandIn(windows=fingerprint)),
                                   ("sweep", exported_tcn.model_dir,
                                    inference.StandIn(sequence=sequence_fingerprint(w)))):
        for size, block_rows in (("small", SMALL_BLOCK_ROWS), ("whole", blocks.DEFAULT_BLOCK_ROWS)):
            out = root / f"{name}-{size}.csv"
            run_found = {"out": out}
            with pytest.MonkeyPatch.context() as monkeypatch, inference.stand_in(model):
                _measured(monkeypatch, run_found)
                run_found["summary"] = predict.run(
                    argv(model_dir, csv_path, out, block_rows=block_rows, sweep_rows=30, path=name))
            found[name, size] = run_found
    return found


def test_small_blocks_give_byte_identical_submissions(block_runs, serving_config):
    for path in ("windows", "sweep"):
        small, whole = block_runs[path, "small"]["out"], block_runs[path, "whole"]["out"]
        assert small.read_bytes() == whole.read_bytes(), path
    sub = pd.read_csv(block_runs["windows", "small"]["out"])
    assert len(sub) == sum(block_runs["recordings"]) and sub[cols.ID].is_unique
    ref = reference_windows(block_runs["csv"], serving_config["features"], serving_config["window"])
    ids_ = np.array(sorted(ref))
    np.testing.assert_allclose(sub.set_index(cols.ID).loc[ids_, HEADER[1:]].to_numpy(np.float32),
                               fingerprint(np.stack([ref[i] for i in ids_])), rtol=1e-6, atol=1e-4)
    pd.testing.assert_frame_equal(pd.read_csv(block_runs["sweep", "small"]["out"]), sub)


def test_no_block_holds_more_than_block_rows(block_runs, serving_config):
    """Time blocks that read at most --block-rows rows from the block files, many per recording;
    each model pass holds one block and the W-1 rows before it, however long the recording:
    per-worker memory follows --block-rows. With one block per recording, it follows the
    recording instead."""
    w, total, recordings = serving_config["window"], sum(block_runs["recordings"]), block_runs["recordings"]
    for path in ("windows", "sweep"):
        small, whole = block_runs[path, "small"], block_runs[path, "whole"]
        for run_ in (small, whole):
            assert sum(n - (w - 1) for n in run_["model passes"]) == total == run_["summary"]["predicted"]
            assert sum(run_["block reads"]) == total  # every row read once, by one time block
        assert max(small["block reads"]) <= SMALL_BLOCK_ROWS
        assert len(small["block reads"]) >= total // SMALL_BLOCK_ROWS
        assert max(small["model passes"]) <= SMALL_BLOCK_ROWS + w - 1
        assert sorted(whole["block reads"]) == sorted(recordings)  # one time block per recording
        assert sorted(n - (w - 1) for n in whole["model passes"]) == sorted(recordings)
        assert max(recordings) == 2 * min(recordings)


# --- killed runs: the earlier submission stays, and a rerun gives the same bytes -----------------

KILL_FLAGS = {"block_rows": 8192, "progress": "none"}  # 10 blocks: pieces appear one by one


@pytest.fixture(scope="module")
def long_test_csv(tmp_path_factory):
    """One crew, 150 s per seat (76,800 rows, 20 MB): reading and predicting (the LSTM on every
    window) each take seconds, so that a kill can land inside each."""
    from crewstream import synth

    root = tmp_path_factory.mktemp("long")
    synth.generate(str(root), crews=(1,), seconds=1.0, test_seconds=150.0)
    return root / "test.csv"


def _start(model_dir, csv_path, out, log):
    return subprocess.Popen([sys.executable, "-m", "beam_jobs.predict", *argv(model_dir, csv_path, out, **KILL_FLAGS)],
                            stdout=log, stderr=log, cwd=REPO)


def _wait_for(process, condition, what, seconds=600.0):
    """Poll (10 ms) until `condition()`; fail if the process ends first. The deadline only guards
    against a hang: it is not a timing assertion."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, f"predict ended (exit {process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} after {seconds} s"
        time.sleep(0.01)


def _stagings(out, but=()):
    """The staging folders beside `out`, those in `but` (left by earlier runs) left out."""
    return sorted(s for s in out.parent.glob(predict.staging_prefix(str(out)) + "*") if s not in but)


def _reading(out, but=()):
    """Spill files written, no submission piece yet: the job is reading and sorting."""
    return any(list(s.glob("spills/*/*.spill")) and not (s / "pieces").exists() for s in _stagings(out, but))


def _predicting(out, but=()):
    """A submission piece written: the job is predicting."""
    return any(list(s.glob("pieces/*.csv")) for s in _stagings(out, but))


@pytest.mark.slow  # 40-65 s on the shared 2-core machine: a reference run, three killed runs, a rerun
def test_a_killed_run_leaves_the_earlier_submission_and_a_rerun_gives_the_same_bytes(
        tmp_path, exported, long_test_csv):
    reference = tmp_path / "reference" / "sub.csv"
    reference.parent.mkdir()
    predict.run(argv(exported.model_dir, long_test_csv, reference, **KILL_FLAGS))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "sub.csv"
    out.write_text(OLD)

    kill_points = {  # name: (what to wait for, the signal), in this order
        "predicting, SIGTERM": (_predicting, signal.SIGTERM),
        "reading": (_reading, signal.SIGKILL),
        "predicting": (_predicting, signal.SIGKILL),
    }
    left_by_kills = []
    for name, (reached, sig) in kill_points.items():
        log_path = tmp_path / f"{name}.log"
        with open(log_path, "wb") as log:
            process = _start(exported.model_dir, long_test_csv, out, log)
            try:
                _wait_for(process, lambda: reached(out, left_by_kills), name)
                process.send_signal(signal.SIGSTOP)  # frozen where it is while we look
                stagings = _stagings(out)
                at_reading, at_predicting = _reading(out), _predicting(out)
                process.send_signal(sig)
                process.send_signal(signal.SIGCONT)
                code = process.wait(timeout=600)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        assert (at_reading, at_predicting) == (name == "reading", name != "reading"), name
        assert len(stagings) == 1 and stagings[0] not in left_by_kills, name  # the last kill's went at start
        assert out.read_text() == OLD, name
        assert not (out_dir / "sub.rejects.csv").exists()
        if sig == signal.SIGKILL:
            assert code == -signal.SIGKILL
            assert _stagings(out) == stagings, name  # left behind, for the next run to remove
            left_by_kills += stagings
        else:  # SIGTERM unwinds: nothing is left behind
            assert code == 128 + signal.SIGTERM, log_path.read_text(errors="replace")[-2000:]
            assert sorted(os.listdir(out_dir)) == ["sub.csv"]
    assert len(left_by_kills) == 2 and _stagings(out) == left_by_kills[-1:]

    # the rerun removes the last kill's staging folder and writes the uninterrupted run's bytes
    with open(tmp_path / "rerun.log", "wb") as log:
        assert _start(exported.model_dir, long_test_csv, out, log).wait(timeout=900) == 0
    assert out.read_bytes() == reference.read_bytes()
    assert sorted(os.listdir(out_dir)) == ["sub.csv"]


# --- the portable path: SDK workers from a worker pool (tests/beam_jobs/conftest.py) -------------

def _run_on_pool(model_dir, csv_path, out, *beam_flags):
    """The real tcn (workers load it from the model folder: no test hook crosses a process)."""
    return predict.run(argv(model_dir, csv_path, out, **TCN_FLAGS) + list(beam_flags))


@pytest.mark.slow  # worker processes: 10-20 s here (the pool starts once per session)
def test_portable_runner_on_a_worker_pool_writes_the_local_submission(
        tmp_path, worker_pool, exported_tcn, test_csv, tcn_swept):
    endpoint, log_path = worker_pool
    before = workers_started(log_path)
    out = tmp_path / "sub.csv"
    _run_on_pool(exported_tcn.model_dir, test_csv, out, "--runner", "PortableRunner", "--job_endpoint", "embed",
                 "--environment_type", "EXTERNAL", "--environment_config", endpoint)
    assert out.read_bytes() == tcn_swept[1].read_bytes()
    assert workers_started(log_path) > before  # the work ran in the pool's processes
    assert sorted(os.listdir(tmp_path)) == ["sub.csv"]


@pytest.mark.slow  # worker processes: 10-20 s here (the pool starts once per session)
def test_two_pool_workers_write_the_local_submission(tmp_path, worker_pool, exported_tcn, test_csv, tcn_swept):
    # Beam's embedded job service asks the pool for one worker whatever --sdk_worker_parallelism
    # says; the local runner asks for --direct_num_workers of them (tests/beam_jobs/test_portable.py)
    endpoint, log_path = worker_pool
    before = workers_started(log_path)
    out = tmp_path / "sub.csv"
    _run_on_pool(exported_tcn.model_dir, test_csv, out, "--environment_type", "EXTERNAL",
                 "--environment_config", endpoint, "--direct_num_workers", "2")
    assert out.read_bytes() == tcn_swept[1].read_bytes()
    assert workers_started(log_path) - before == 2
    assert sorted(os.listdir(tmp_path)) == ["sub.csv"]


_MODULES_AFTER_MAIN = """
import os, sys
from beam_jobs import predict
code = predict.main(sys.argv[1:])
print(code, os.environ.get("TF_USE_LEGACY_KERAS"), *(name in sys.modules for name in ("tensorflow", "keras")))
"""


@pytest.mark.parametrize("preset, expected", [(None, "1"), ("0", "0")])
def test_the_command_imports_tensorflow_without_keras_3(tmp_path, preset, expected):
    """`crewstream predict` never uses Keras 3, which TensorFlow imports with itself (about a second)
    unless TF_USE_LEGACY_KERAS says tf.keras is tf_keras: main sets it before TensorFlow loads (here
    the model's graph is damaged, found once TensorFlow parsed it); a value the user set is kept."""
    (tmp_path / "test.csv").write_text(",".join(cols.TEST_COLUMNS) + "\n")
    model = str(tmp_path / "damaged")
    serving.write_config(serving.serving_dir(model), serving.make_config(
        {"window": 8, "features": list(cols.SIGNALS), "label_vocabulary": list("ABCD")}, serving.LSTM, 8,
        [serving.SERVING_SIGNATURE], serving.NORM_NONE, None))
    (tmp_path / "damaged" / "serving" / "saved_model.pb").write_bytes(b"\xff" * 64)
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env.update({"TF_USE_LEGACY_KERAS": preset} if preset else {})
    done = subprocess.run([sys.executable, "-c", _MODULES_AFTER_MAIN, "--model-dir", model,
                           "--input", str(tmp_path / "test.csv"), "--output", str(tmp_path / "s.csv")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert "saved_model.pb is damaged" in done.stderr
    assert done.stdout.split() == ["1", expected, "True", "False" if expected == "1" else "True"]
