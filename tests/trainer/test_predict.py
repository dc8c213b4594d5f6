"""trainer.predict: every id once, windows per docs/DESIGN.md's Prediction contract, bounded memory.

The reference windows here are rebuilt independently from the CSV with pandas (group, stable sort
by time) and an explicit per-row slice with the padding spelled out, never with predict's code.
Most checks use a fingerprint model (a numpy function of the window that predict cannot fake
without the right window) on every id; the serving model itself is checked on a sample of ids.
"""

import gzip
import io
import os
import shutil
import time
import tracemalloc
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from beam_jobs import csv_reader
from tfrecords_schema import WINDOW, csv_layout as cols
from trainer import export, predict

GROUP = [cols.CREW, cols.SEAT, cols.EXPERIMENT]
HEADER = ["id", "A", "B", "C", "D"]


# --- the independent reference ---------------------------------------------------------------

def reference_windows(csv_path, features, window, ids=None):
    """{id: float32 [W, F]} by the contract: group, stable sort by time, the W rows ending at the
    row, the first row repeated in front of rows with fewer than W-1 predecessors. Rows of
    `csv_path` that cannot be read as numbers are dropped first (as rejected rows are)."""
    df = pd.read_csv(csv_path, dtype={cols.EXPERIMENT: str}, low_memory=False)
    for name in [cols.ID, cols.CREW, cols.SEAT, cols.TIME] + list(features):
        df[name] = pd.to_numeric(df[name], errors="coerce")
    df = df.dropna(subset=[cols.ID, cols.CREW, cols.SEAT, cols.TIME] + list(features))
    df = df[df[cols.SEAT].isin(cols.SEATS)]
    wanted = None if ids is None else set(int(i) for i in ids)
    out = {}
    for _, group in df.groupby(GROUP, sort=False):
        group = group.sort_values(cols.TIME, kind="stable")
        values = group[list(features)].to_numpy(np.float32)
        for pos, row_id in enumerate(group[cols.ID].astype(np.int64)):
            if wanted is not None and row_id not in wanted:
                continue
            start = pos - window + 1
            rows = values[max(start, 0):pos + 1]
            if start < 0:
                rows = np.concatenate([np.repeat(values[:1], -start, axis=0), rows])
            out[int(row_id)] = rows
    return out


def fingerprint(windows):
    """float32 [B, 4] from windows [B, W, F]: the first row's first feature, the last row's last
    feature, the middle row's first feature, and a position-weighted sum (order-sensitive)."""
    w = np.asarray(windows, np.float64)
    weights = np.arange(1, w.shape[1] + 1, dtype=np.float64)
    return np.stack([w[:, 0, 0], w[:, -1, -1], w[:, w.shape[1] // 2, 0],
                     np.einsum("bwf,w->b", w, weights) / weights.sum()], axis=1).astype(np.float32)


def run(model_dir, csv_path, out_path, model=None, sequence=None, **kwargs):
    kwargs.setdefault("progress", "none")
    config = predict.PredictConfig(model_dir=str(model_dir), input=str(csv_path), output=str(out_path), **kwargs)
    summary = predict.predict(config, model=model, sequence=sequence)
    return summary, pd.read_csv(out_path)


@pytest.fixture(scope="module")
def serving_config(exported):
    return export.read_serving_config(exported.model_dir)


@pytest.fixture(scope="module")
def test_csv(sample_dir):
    return sample_dir / "test.csv"


# --- the input really is laid out like the real test.csv -------------------------------------

def test_the_sample_is_text_ordered_and_seat_interleaved(test_csv):
    df = pd.read_csv(test_csv, dtype={cols.TIME: str})
    one = df[df[cols.CREW] == df[cols.CREW].iloc[0]]
    assert (one[cols.SEAT].to_numpy()[:6] == [0, 1, 0, 1, 0, 1]).all()
    times = one[cols.TIME].astype(float).to_numpy()
    assert (np.diff(times) < 0).any()  # not in numeric order...
    assert list(one[cols.TIME]) == sorted(one[cols.TIME], key=lambda t: t)  # ...but in text order


# --- every id once, and the windows of the contract ------------------------------------------

@pytest.fixture(scope="module")
def fingerprinted(tmp_path_factory, exported, test_csv):
    out = tmp_path_factory.mktemp("fp") / "submission.csv"
    return run(exported.model_dir, test_csv, out, model=fingerprint, batch_size=500)


def test_every_id_exactly_once(fingerprinted, test_csv):
    summary, sub = fingerprinted
    ids = pd.read_csv(test_csv, usecols=[cols.ID])[cols.ID]
    assert list(sub.columns) == HEADER
    assert len(sub) == len(ids) and sub[cols.ID].is_unique
    assert set(sub[cols.ID]) == set(ids)
    assert summary.windows == len(ids) and summary.rows_rejected == 0 and summary.rejects_file is None


def test_every_window_is_the_contract_window(fingerprinted, test_csv, serving_config):
    _, sub = fingerprinted
    ref = reference_windows(test_csv, serving_config["features"], serving_config["window"])
    ids = np.array(sorted(ref))
    expected = fingerprint(np.stack([ref[i] for i in ids]))
    got = sub.set_index(cols.ID).loc[ids, HEADER[1:]].to_numpy(np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-4)


def test_serving_model_probabilities_on_a_sample_of_ids_padding_included(
        tmp_path, exported, test_csv, serving_config):
    """The real model: submission rows equal serving_default applied to the reference windows."""
    import tensorflow as tf

    summary, sub = run(exported.model_dir, test_csv, tmp_path / "s.csv", batch_size=300)
    w = serving_config["window"]
    df = pd.read_csv(test_csv)
    rng = np.random.default_rng(0)
    sample = []
    for _, group in df.groupby(GROUP):
        ordered = group.sort_values(cols.TIME, kind="stable")[cols.ID].to_numpy()
        sample += list(ordered[:w + 1])  # rows 0..W: padded (W-1 of them), exact, one past
        sample += list(rng.choice(ordered[w + 1:], 20, replace=False))
    ref = reference_windows(test_csv, serving_config["features"], w, sample)
    signature = export.load_serving(exported.model_dir).signatures[export.SERVING_SIGNATURE]
    windows = np.stack([ref[i] for i in sample])
    expected = signature(**{WINDOW: tf.constant(windows)})[export.PROBABILITIES].numpy()
    got = sub.set_index(cols.ID).loc[sample, HEADER[1:]].to_numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert expected.std(axis=0).max() > 1e-3  # outputs vary between windows: the check has teeth
    probabilities = sub[HEADER[1:]].to_numpy()
    assert np.isfinite(probabilities).all() and len(sub) == sub[cols.ID].nunique() == len(df)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_windows_are_views_and_padding_repeats_the_first_row(tmp_path):
    features, w = 2, 5
    times = np.array([0.3, 0.1, 0.2, 0.1])  # a tie at 0.1: file order (rows 1 then 3) is kept
    signals = np.arange(8, dtype=np.float32).reshape(4, 2)
    spill = predict.Spill(str(tmp_path), features)
    spill.append((1, 0, "LOFT"), np.array([10, 11, 12, 13]), np.array([2, 3, 4, 5]), times, signals)
    ids, padded = predict.load_group(spill.path((1, 0, "LOFT")), features, w, block_rows=3)
    views = predict.window_view(padded, w)
    assert ids.tolist() == [11, 13, 12, 10]
    assert views.shape == (4, w, features) and np.shares_memory(views, padded)
    s0, s1, s2, s3 = signals  # time order: s1, s3, s2, s0
    np.testing.assert_array_equal(views[0], np.stack([s1, s1, s1, s1, s1]))
    np.testing.assert_array_equal(views[1], np.stack([s1, s1, s1, s1, s3]))
    np.testing.assert_array_equal(views[3], np.stack([s1, s1, s3, s2, s0]))

    # leaving out line 3 (id 11, the group's first row in time order): as if it was never there
    ids, padded = predict.load_group(spill.path((1, 0, "LOFT")), features, w, np.array([3]), block_rows=3)
    views = predict.window_view(padded, w)
    assert ids.tolist() == [13, 12, 10]
    np.testing.assert_array_equal(views[0], np.stack([s3] * 5))
    np.testing.assert_array_equal(views[2], np.stack([s3, s3, s3, s2, s0]))


# --- bounded memory ---------------------------------------------------------------------------

def traced_peak(model_dir, csv_path, out_path, sequence=None, **kwargs):
    """Peak bytes of Python/numpy allocations (tracemalloc) during one predict run."""
    config = predict.PredictConfig(model_dir=str(model_dir), input=str(csv_path), output=str(out_path),
                                   batch_size=256, concurrent=1, chunk_bytes=1 << 18, progress="none",
                                   **kwargs)
    tracemalloc.start()
    try:
        predict.predict(config, model=fingerprint, sequence=sequence)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def one_and_four_crews(tmp_path_factory):
    from crewstream import synth

    root = tmp_path_factory.mktemp("sizes")
    for name, crews in (("one", (1,)), ("four", (1, 2, 3, 4))):
        synth.generate(str(root / name), crews=crews, seconds=1.0, test_seconds=30.0)
    return root


def test_peak_memory_does_not_grow_with_the_file(tmp_path, exported, serving_config, one_and_four_crews):
    small = traced_peak(exported.model_dir, one_and_four_crews / "one" / "test.csv", tmp_path / "1.csv")
    large = traced_peak(exported.model_dir, one_and_four_crews / "four" / "test.csv", tmp_path / "4.csv")
    assert len(pd.read_csv(tmp_path / "4.csv")) == 4 * len(pd.read_csv(tmp_path / "1.csv"))
    assert large < small * 1.25 + (256 << 10), (small, large)


def test_peak_memory_would_catch_all_windows_of_a_group_at_once(
        tmp_path, exported, serving_config, one_and_four_crews, monkeypatch):
    """Bound: well under the windows of one group. Materializing them (the monkeypatched
    window_view) breaks it, so the bound is one a regression would hit."""
    csv_path = one_and_four_crews / "one" / "test.csv"
    rows_per_group = 30 * cols.SAMPLE_RATE_HZ
    group_windows = rows_per_group * serving_config["window"] * len(serving_config["features"]) * 4
    bound = group_windows // 3
    lazy = traced_peak(exported.model_dir, csv_path, tmp_path / "lazy.csv")
    assert lazy < bound, (lazy, bound)

    viewed = predict.window_view
    monkeypatch.setattr(predict, "window_view", lambda padded, w: np.ascontiguousarray(viewed(padded, w)))
    eager = traced_peak(exported.model_dir, csv_path, tmp_path / "eager.csv")
    assert eager > group_windows > bound, (eager, group_windows)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "lazy.csv"), pd.read_csv(tmp_path / "eager.csv"))


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
    ids = set(pd.read_csv(test_csv, usecols=[cols.ID])[cols.ID])
    no_id = bad[5000][1]
    assert set(sub[cols.ID]) == ids - {no_id} and sub[cols.ID].is_unique
    assert (summary.rows_rejected, summary.fallback_rows, summary.rows_without_id) == (3, 2, 1)

    by_id = sub.set_index(cols.ID)
    for line in (300, 301):
        np.testing.assert_array_equal(by_id.loc[bad[line][1], HEADER[1:]].to_numpy(), [0.25] * 4)
    ref = reference_windows(path, serving_config["features"], serving_config["window"])
    kept = np.array(sorted(ref))
    assert len(kept) == len(ids) - 3
    np.testing.assert_allclose(by_id.loc[kept, HEADER[1:]].to_numpy(np.float32),
                               fingerprint(np.stack([ref[i] for i in kept])), rtol=1e-6, atol=1e-4)

    rejects = pd.read_csv(summary.rejects_file, dtype=str, keep_default_na=False)
    assert summary.rejects_file == str(tmp_path / "sub.rejects.csv")
    assert list(rejects.columns) == list(predict.REJECT_HEADER)
    assert rejects["line"].astype(int).tolist() == [300, 301, 5000]
    assert rejects["column"].tolist() == ["r", cols.SEAT, cols.ID]
    assert rejects["id"].tolist() == [str(bad[300][1]), str(bad[301][1]), ""]


def test_a_clean_rerun_removes_a_stale_rejects_file(tmp_path, exported, test_csv):
    (tmp_path / "sub.rejects.csv").write_text(",".join(predict.REJECT_HEADER) + "\nt.csv,2,r,not a number,0,x\n")
    summary, _ = run(exported.model_dir, test_csv, tmp_path / "sub.csv", model=fingerprint)
    assert summary.rejects_file is None and not (tmp_path / "sub.rejects.csv").exists()


def test_reader_keeps_exact_ids_and_rejects_rows_without_one():
    header = list(cols.TEST_COLUMNS)
    good = ["9007199254740993", "1", "LOFT", "0.5", "0"] + ["1.5"] * len(cols.SIGNALS)
    lines = [good, ["abc"] + good[1:], [""] + good[1:], ["1.5"] + good[1:], ["12"] + good[1:],
             ["7.0"] + good[1:]]
    chunk = ("\n".join(",".join(line) for line in lines) + "\n").encode()
    rows, rejects = csv_reader.parse_chunk(chunk, header, ["r"], "t.csv", 2, labelled=False, with_id=True)
    assert isinstance(rows, csv_reader.IdRows)
    # 2**53 + 1 stays exact although this chunk, with bad ids in it, is parsed as text
    assert rows.id.dtype == np.int64 and rows.id.tolist() == [9007199254740993, 12, 7]
    assert [(r.line, r.column) for r in rejects] == [(3, cols.ID), (4, cols.ID), (5, cols.ID)]
    train_header = ",".join(cols.TRAIN_COLUMNS) + "\n"
    with pytest.raises(csv_reader.CsvLayoutError, match="train-layout"):
        list(csv_reader.read_file_chunks(io.BytesIO(train_header.encode()), "t.csv", ["r"],
                                         labelled=False, with_id=True))


@pytest.mark.parametrize("text, expected", [
    ("12,1,LOFT", 12), ("12.0,1,LOFT", 12), ("-3,1", -3), ("x12,1", None), ("1.5,1", None), (",1", None),
    ("nan,1", None), ("99999999999999999999,1", None), ("", None),
])
def test_the_id_of_a_rejected_line_reads_as_the_reader_reads_ids(text, expected):
    assert predict.reject_id(text, 0) == expected


# --- files: gzip, sharding, atomic output ------------------------------------------------------

def test_gzip_input_and_output_give_the_same_rows(tmp_path, exported, test_csv, fingerprinted):
    with open(test_csv, "rb") as src, gzip.open(tmp_path / "test.csv.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    _, sub = run(exported.model_dir, tmp_path / "test.csv.gz", tmp_path / "sub.csv.gz", model=fingerprint,
                 batch_size=500)
    pd.testing.assert_frame_equal(sub, fingerprinted[1])


def test_shards_together_are_the_whole_submission(tmp_path, exported, test_csv, fingerprinted):
    parts = [run(exported.model_dir, test_csv, tmp_path / f"part{k}.csv", model=fingerprint, shard=(k, 3))
             for k in range(3)]
    assert sum(summary.groups for summary, _ in parts) == 6  # 3 crews x 2 seats, each predicted once
    whole = pd.concat([sub for _, sub in parts]).sort_values(cols.ID, ignore_index=True)
    expected = fingerprinted[1].sort_values(cols.ID, ignore_index=True)
    pd.testing.assert_frame_equal(whole, expected)


def test_batch_buffers_are_reused_only_once_their_results_are_written(tmp_path, exported, test_csv, fingerprinted):
    """Many small batches, three model calls in flight and a slow model: a buffer overwritten too
    early would give some id another window's fingerprint."""
    def slow(windows):
        time.sleep(0.002 * (len(windows) % 3))  # calls finish out of order
        return fingerprint(windows)

    _, sub = run(exported.model_dir, test_csv, tmp_path / "sub.csv", model=slow, batch_size=37, concurrent=3)
    by_id = sub.set_index(cols.ID).sort_index()
    pd.testing.assert_frame_equal(by_id, fingerprinted[1].set_index(cols.ID).sort_index())


def test_a_failed_run_leaves_no_partial_submission(tmp_path, exported, test_csv):
    out = tmp_path / "sub.csv"
    out.write_text("id,A,B,C,D\n0,0.25,0.25,0.25,0.25\n")
    calls = []

    def failing(windows):
        calls.append(len(windows))
        if len(calls) > 3:
            raise RuntimeError("killed")
        return fingerprint(windows)

    with pytest.raises(RuntimeError, match="killed"):
        run(exported.model_dir, test_csv, out, model=failing, batch_size=100)
    assert out.read_text() == "id,A,B,C,D\n0,0.25,0.25,0.25,0.25\n"
    assert sorted(os.listdir(tmp_path)) == ["sub.csv"]


# --- command line and progress -----------------------------------------------------------------

def test_main_predicts_and_reports_errors(tmp_path, exported, test_csv, sample_dir, capsys):
    out = tmp_path / "sub.csv"
    assert predict.main(["--model-dir", exported.model_dir, "--input", str(test_csv), "--output", str(out),
                         "--progress", "none"]) == 0
    assert "wrote" in capsys.readouterr().out and len(pd.read_csv(out)) == len(pd.read_csv(test_csv))
    assert predict.main(["--model-dir", exported.model_dir, "--input", str(sample_dir / "train.csv"),
                         "--output", str(tmp_path / "x.csv")]) == 1
    assert "train-layout" in capsys.readouterr().err
    assert predict.main(["--model-dir", str(tmp_path / "nope"), "--input", str(test_csv),
                         "--output", str(tmp_path / "x.csv")]) == 1
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


# --- killed runs: complete or absent, and a rerun gives the same bytes ---------------------------

def _start(model_dir, csv_path, out, temp_dir, log):
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "trainer.predict", "--model-dir", model_dir, "--input",
                             str(csv_path), "--output", str(out), "--temp-dir", str(temp_dir), "--progress", "none"],
                            stdout=log, stderr=log, cwd=os.path.dirname(os.path.dirname(predict.__file__)))


def _wait_for(process, condition, what, seconds=600.0):
    """Poll (10 ms) until `condition()`; fail if the process ends first. The deadline only guards
    against a hang: it is not a timing assertion."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, f"predict ended (exit {process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} after {seconds} s"
        time.sleep(0.01)


def _spilled(temp_dir):
    return [f for d in temp_dir.glob(predict.SPILL_PREFIX + "*") for f in d.glob("*.rows")]


def _partial_rows(out):
    """Bytes of rows in the hidden temporary submission beside `out` (0 while only the header)."""
    header = len("id,A,B,C,D\n")
    return max([f.stat().st_size - header for f in out.parent.glob(f".{out.name}.tmp-*")], default=0)


def _pass1_done(log_path):
    return " rows in " in log_path.read_text(errors="replace")  # _log_pass1's "read N rows in S s"


@pytest.fixture(scope="module")
def long_test_csv(tmp_path_factory):
    """One crew, 4 minutes per seat (122,880 rows, 33 MB): pass 1 spans two 16 MB chunks and pass 2
    several seconds, so that a kill can land inside each."""
    from crewstream import synth

    root = tmp_path_factory.mktemp("long")
    synth.generate(str(root), crews=(1,), seconds=1.0, test_seconds=240.0)
    return root / "test.csv"


@pytest.mark.slow
def test_a_killed_run_leaves_no_submission_and_a_rerun_gives_the_same_bytes(tmp_path, exported, long_test_csv):
    import signal

    reference = tmp_path / "reference.csv"
    predict.predict(predict.PredictConfig(model_dir=exported.model_dir, input=str(long_test_csv),
                                          output=str(reference), progress="none"))
    out_dir, temp_dir = tmp_path / "out", tmp_path / "spill"
    out_dir.mkdir()
    temp_dir.mkdir()
    out = out_dir / "sub.csv"
    out.write_text("id,A,B,C,D\n0,0.25,0.25,0.25,0.25\n")

    kill_points = {  # name: (what to wait for, the signal)
        "pass 1": (lambda log: _spilled(temp_dir) and not _pass1_done(log), signal.SIGKILL),
        "pass 2": (lambda log: _pass1_done(log) and _partial_rows(out) > 0, signal.SIGKILL),
        "pass 2, SIGTERM": (lambda log: _pass1_done(log) and _partial_rows(out) > 0, signal.SIGTERM),
    }
    for name, (reached, sig) in kill_points.items():
        log_path = tmp_path / f"{name}.log"
        with open(log_path, "wb") as log:
            process = _start(exported.model_dir, long_test_csv, out, temp_dir, log)
            try:
                _wait_for(process, lambda: reached(log_path), name)
                process.send_signal(signal.SIGSTOP)  # frozen where it is while we look
                at_pass1 = not _pass1_done(log_path)
                leftovers = len(list(temp_dir.iterdir()))
                process.send_signal(sig)
                process.send_signal(signal.SIGCONT)
                code = process.wait(timeout=600)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        assert at_pass1 == (name == "pass 1"), name
        assert leftovers == 1, name  # the last kill's spill folder went when this run started
        assert out.read_text() == "id,A,B,C,D\n0,0.25,0.25,0.25,0.25\n", name
        assert not (out_dir / "sub.rejects.csv").exists()
        if sig == signal.SIGKILL:
            assert code == -signal.SIGKILL
            assert list(temp_dir.iterdir()) and list(out_dir.glob(".sub.csv.tmp-*")), name  # left behind
        else:  # SIGTERM unwinds: nothing is left behind
            assert code == 128 + signal.SIGTERM, log_path.read_text(errors="replace")[-2000:]
            assert list(temp_dir.iterdir()) == [] and sorted(os.listdir(out_dir)) == ["sub.csv"]

    with open(tmp_path / "rerun.log", "wb") as log:
        assert _start(exported.model_dir, long_test_csv, out, temp_dir, log).wait(timeout=900) == 0
    assert out.read_bytes() == reference.read_bytes()
    assert sorted(os.listdir(out_dir)) == ["sub.csv"] and list(temp_dir.iterdir()) == []


# --- the sweep (a model with the `sequence` signature) -----------------------------------------

def sequence_fingerprint(window):
    """A causal stand-in for the `sequence` signature: rows [T, F] -> [T, 4], step t the
    fingerprint of rows t-W+1..t, NaN at the first W-1 steps (a context step ever written would
    come out as the uniform row, unlike its window's fingerprint)."""
    def sequence(rows):
        out = np.full((len(rows), 4), np.nan, np.float32)
        if len(rows) >= window:
            out[window - 1:] = fingerprint(np.lib.stride_tricks.sliding_window_view(
                rows, window, axis=0).transpose(0, 2, 1))
        return out
    return sequence


@pytest.mark.parametrize("sweep_rows", [3, 63, 64, 1000, 1 << 20])
def test_sweep_chunks_give_every_row_its_window(tmp_path, exported_tcn, test_csv, fingerprinted, sweep_rows):
    """Chunks of 3 rows (W-1 context each), W-1, W, a size that leaves a short last chunk, and
    whole groups: every row gets exactly its window's fingerprint, padding rows included."""
    w = export.read_serving_config(exported_tcn.model_dir)["window"]
    summary, sub = run(exported_tcn.model_dir, test_csv, tmp_path / "sub.csv", path=predict.SWEEP,
                       sequence=sequence_fingerprint(w), sweep_rows=sweep_rows, concurrent=2)
    assert summary.nonfinite_rows == 0 and summary.windows == len(sub)
    pd.testing.assert_frame_equal(sub.sort_values(cols.ID, ignore_index=True),
                                  fingerprinted[1].sort_values(cols.ID, ignore_index=True))


@pytest.fixture(scope="module")
def tcn_windowed(tmp_path_factory, exported_tcn, test_csv):
    """The tcn's submission through serving_default on every row's window (the reference)."""
    out = tmp_path_factory.mktemp("tcn_windows") / "sub.csv"
    return run(exported_tcn.model_dir, test_csv, out, path=predict.WINDOWS, batch_size=512)


def test_sweep_submission_equals_the_windowed_one(tmp_path, exported_tcn, test_csv, tcn_windowed):
    """The real tcn: the sweep (auto picks it; chunk boundaries at odd places) gives every id the
    windowed path's probabilities to 1e-5, the padded rows at each group's start included."""
    summary, sub = run(exported_tcn.model_dir, test_csv, tmp_path / "sub.csv", sweep_rows=1001)
    windowed = tcn_windowed[1].set_index(cols.ID).sort_index()
    swept = sub.set_index(cols.ID).sort_index()
    assert swept.index.equals(windowed.index) and summary.windows == tcn_windowed[0].windows
    np.testing.assert_allclose(swept.to_numpy(), windowed.to_numpy(), atol=1e-5)
    assert windowed.to_numpy().std(axis=0).max() > 1e-3  # outputs vary between rows: the check has teeth


def test_sweep_beside_rejected_and_duplicate_rows_equals_the_windowed_path(tmp_path, exported_tcn, test_csv):
    path = tmp_path / "bad.csv"
    bad = corrupt(test_csv, path)
    lines = path.read_text().splitlines()
    lines.append(lines[1234])  # a duplicate of line 1235's id, appended: rejected, no window moves
    path.write_text("\n".join(lines) + "\n")
    windowed_summary, windowed = run(exported_tcn.model_dir, path, tmp_path / "w.csv", path=predict.WINDOWS)
    summary, swept = run(exported_tcn.model_dir, path, tmp_path / "s.csv", sweep_rows=777)
    assert (summary.rows_rejected, summary.duplicate_id_rows, summary.fallback_rows) == (4, 1, 2)
    assert summary.windows == windowed_summary.windows
    windowed, swept = (df.set_index(cols.ID).sort_index() for df in (windowed, swept))
    assert swept.index.equals(windowed.index) and bad[5000][1] not in swept.index
    np.testing.assert_allclose(swept.to_numpy(), windowed.to_numpy(), atol=1e-5)


def test_the_path_follows_the_model(exported, exported_tcn):
    lstm = export.read_serving_config(exported.model_dir)
    tcn = export.read_serving_config(exported_tcn.model_dir)
    assert predict.choose_path(predict.AUTO, lstm, "m") == predict.WINDOWS
    assert predict.choose_path(predict.AUTO, tcn, "m") == predict.SWEEP
    assert predict.choose_path(predict.WINDOWS, tcn, "m") == predict.WINDOWS
    with pytest.raises(ValueError, match="--path sweep needs a model with the `sequence` signature"):
        predict.choose_path(predict.SWEEP, lstm, "m")


def test_sweeping_an_lstm_is_a_one_line_error(tmp_path, exported, test_csv, capsys):
    assert predict.main(["--model-dir", exported.model_dir, "--input", str(test_csv), "--output",
                         str(tmp_path / "s.csv"), "--path", "sweep"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "this one is a lstm" in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []


def test_sweep_chunks_overlap_by_w_minus_1(tmp_path):
    features, w = 1, 4
    signals = np.arange(10, dtype=np.float32).reshape(10, 1)
    spill = predict.Spill(str(tmp_path), features)
    spill.append((1, 0, "LOFT"), np.arange(100, 110), np.arange(2, 12), np.arange(10.0), signals)
    chunks = [(ids.copy(), chunk.copy()) for ids, chunk in
              predict.group_chunks(spill, [(1, 0, "LOFT")], w, sweep_rows=4, buffers=3)]
    assert [ids.tolist() for ids, _ in chunks] == [[100, 101, 102, 103], [104, 105, 106, 107], [108, 109]]
    assert [chunk[:, 0].tolist() for _, chunk in chunks] == [
        [0, 0, 0, 0, 1, 2, 3], [1, 2, 3, 4, 5, 6, 7], [5, 6, 7, 8, 9]]


def test_sweep_peak_memory_does_not_grow_with_the_file(tmp_path, exported_tcn, one_and_four_crews):
    w = export.read_serving_config(exported_tcn.model_dir)["window"]
    kwargs = dict(path=predict.SWEEP, sequence=sequence_fingerprint(w), sweep_rows=2000)
    small = traced_peak(exported_tcn.model_dir, one_and_four_crews / "one" / "test.csv", tmp_path / "1.csv", **kwargs)
    large = traced_peak(exported_tcn.model_dir, one_and_four_crews / "four" / "test.csv", tmp_path / "4.csv", **kwargs)
    assert len(pd.read_csv(tmp_path / "4.csv")) == 4 * len(pd.read_csv(tmp_path / "1.csv"))
    assert large < small * 1.25 + (256 << 10), (small, large)
