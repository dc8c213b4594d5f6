"""The floor benchmark's anchor must do the work crewstream does, or its ratios mean nothing.

- The polars anchor (benchmarks/bench_floor.py, `--child polars`), run as the benchmark runs it,
  writes every row of every (crew, seat, experiment) once, sorted by time, z-scored with the TRAIN
  crews' mean and population std: equal to an independent pandas/numpy computation to 1e-5, the
  eval crew's rows scaled with the train statistics (not their own).
- The report's ratios: preprocess rows over polars-anchor's median wall, predict rows over the
  floor (polars-read's wall + model-pass's model calls), failed runs left out of the medians.
"""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from benchmarks import bench_floor as bench
from benchmarks.common import REPO_ROOT
from tests.helpers import make_frame, write_crew_csv
from tfrecords_schema import LABEL_VOCABULARY, csv_columns as cols

EVAL_CREW = 2
KEYS = [cols.CREW, cols.SEAT, cols.EXPERIMENT]


def _expected(csv):
    """{split: {(crew, seat, experiment): (scaled float32 [n, F], labels)}} and the train scaling,
    computed here with pandas: float32 signals, float64 statistics of the train crews."""
    frame = pd.read_csv(csv, dtype={name: np.float32 for name in cols.SIGNALS})
    signals = list(cols.SIGNALS)
    train = frame[frame[cols.CREW] != EVAL_CREW][signals].to_numpy(np.float64)
    mean, std = train.mean(axis=0), train.std(axis=0, ddof=0)
    found = {"train": {}, "eval": {}}
    for key, rows in frame.groupby(KEYS):
        rows = rows.sort_values(cols.TIME, kind="stable")
        scaled = ((rows[signals].to_numpy(np.float64) - mean) / std).astype(np.float32)
        labels = rows[cols.EVENT].map({name: i for i, name in enumerate(LABEL_VOCABULARY)}).to_numpy()
        found["eval" if key[0] == EVAL_CREW else "train"][tuple(key)] = (scaled, labels)
    return found, mean, std


def test_polars_anchor_scales_every_row_with_the_train_statistics(tmp_path):
    pytest.importorskip("polars")  # the anchor's library, not one of crewstream's dependencies
    # 3 crews x 2 seats x 3 experiments of 300 rows, times ordered as TEXT in the file (10.5 before 2.0)
    csv = write_crew_csv(tmp_path / "train.csv", make_frame(crews=(1, 2, 3), rows_per_recording=300))
    out = tmp_path / "anchor"
    subprocess.run([sys.executable, "-m", "benchmarks.bench_floor", "--child", "polars", "--csv", csv,
                    "--output", str(out), "--eval-crews", str(EVAL_CREW)], cwd=REPO_ROOT, check=True,
                   capture_output=True)
    expected, mean, std = _expected(csv)

    scaling = json.loads((out / "scaling.json").read_text())
    assert scaling["features"] == list(cols.SIGNALS)
    np.testing.assert_allclose([scaling["scaling"][n]["mean"] for n in cols.SIGNALS], mean, rtol=1e-9)
    np.testing.assert_allclose([scaling["scaling"][n]["std"] for n in cols.SIGNALS], std, rtol=1e-9)
    for split, recordings in expected.items():
        signals = np.load(out / split / "signals.npy")
        labels = np.load(out / split / "labels.npy")
        index = json.loads((out / split / "recordings.json").read_text())
        assert signals.dtype == np.float32 and signals.shape == (sum(len(v[0]) for v in recordings.values()), 23)
        assert labels.dtype == np.uint8 and len(labels) == len(signals)
        assert sorted(tuple(r[:3]) for r in index) == sorted(recordings)  # every recording once
        assert sum(r[4] for r in index) == len(signals)  # every row once
        for crew, seat, experiment, first, n in index:
            want, want_labels = recordings[(crew, seat, experiment)]
            np.testing.assert_allclose(signals[first:first + n], want, atol=1e-5, rtol=0)
            np.testing.assert_array_equal(labels[first:first + n], want_labels)
    # the eval crew was scaled with the train crews' statistics, not its own: its rows are not z-scores
    eval_signals = np.load(out / "eval" / "signals.npy")
    assert {r[0] for r in json.loads((out / "eval" / "recordings.json").read_text())} == {EVAL_CREW}
    assert np.abs(eval_signals.mean(axis=0)).max() > 0.1 or np.abs(eval_signals.std(axis=0) - 1).max() > 0.1


def test_tft_floor_scales_the_train_rows_with_tf_transform(tmp_path):
    """The tft-floor child runs tf.Transform's whole analysis and writes a graph that z-scores with
    the train crews' statistics (an independent numpy computation), having scaled every train row."""
    pytest.importorskip("polars")
    csv = write_crew_csv(tmp_path / "train.csv", make_frame(crews=(1, 2, 3), rows_per_recording=200))
    out = tmp_path / "floor"
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_floor", "--child", "tft-floor", "--csv", csv,
                           "--output", str(out), "--eval-crews", str(EVAL_CREW)], cwd=REPO_ROOT, check=True,
                          capture_output=True, text=True)
    reported = json.loads(next(line for line in done.stdout.splitlines()
                               if line.startswith(bench.CHILD_TAG))[len(bench.CHILD_TAG):])
    frame = pd.read_csv(csv, dtype={name: np.float32 for name in cols.SIGNALS})
    train = frame[frame[cols.CREW] != EVAL_CREW][list(cols.SIGNALS)].to_numpy(np.float32)
    assert reported["rows"] == reported["rows_scaled"] == len(train) and reported["pipeline_s"] > 0

    import tensorflow as tf
    import tensorflow_transform as tft

    from tfrecords_schema import RAW_SIGNALS, SCALED_SIGNALS

    scaled = tft.TFTransformOutput(str(out)).transform_raw_features({RAW_SIGNALS: tf.constant(train)})
    mean, std = train.astype(np.float64).mean(axis=0), train.astype(np.float64).std(axis=0, ddof=0)
    np.testing.assert_allclose(scaled[SCALED_SIGNALS].numpy(), (train - mean) / std, atol=1e-5, rtol=0)


def _run(wall, ok=True, calls=None, **more):
    result = {"wall_s": wall, "cpu_user_s": wall / 2, "cpu_sys_s": 0.1, "peak_tree_rss": 2**30,
              "max_single_rss": 2**29, "ok": ok, **more}
    if calls is not None:
        result["child"] = {"model_calls_s": calls}
    return result


def test_ratios_are_walls_over_the_anchor_and_the_floor():
    runs = {
        "polars-anchor": [_run(2.0), _run(4.0), _run(3.0)],  # median 3
        "sequence": [_run(6.0), _run(100.0, ok=False), _run(6.0)],  # the failed run is left out
        "windows": [_run(9.0)],
        "import-preprocess": [_run(1.5)],
        "polars-read": [_run(1.0), _run(2.0)],  # median 1.5
        "model-pass": [_run(10.0, calls=0.4), _run(12.0, calls=0.6)],  # model calls: median 0.5
        "predict": [_run(8.0)],
        "import-predict": [_run(4.0)],
    }
    summaries = {variant: bench.summarize(r) for variant, r in runs.items()}
    assert summaries["sequence"]["failed"] == 1 and summaries["sequence"]["wall_s"] == 6.0
    assert bench.floor_s(summaries) == 2.0
    found = bench.ratios(summaries)
    assert found["polars-anchor"] == 1.0
    assert found["sequence"] == 2.0 and found["windows"] == 3.0 and found["import-preprocess"] == 0.5
    assert found["predict"] == 4.0 and found["import-predict"] == 2.0 and found["polars-read"] == 0.75
    assert found["model-pass"] == 5.5 and found[bench.MODEL_CALLS] == 0.25 and found[bench.FLOOR] == 1.0

    rows = {row[0]: row for row in bench.table_rows(summaries, list(runs), train_rows=600, test_rows=1000)}
    assert rows["polars-anchor"][1] == "3.00" and rows["polars-anchor"][-2:] == ["1.00x", "200"]
    assert rows["sequence (1 of 3 failed)"][-2:] == ["2.00x", "100"]
    assert rows["import-preprocess"][-2:] == ["0.50x", "-"]
    assert rows[bench.MODEL_CALLS][1] == "0.50" and rows[bench.MODEL_CALLS][-2:] == ["0.25x", "2,000"]
    assert rows[bench.FLOOR][1] == "2.00" and rows[bench.FLOOR][-2:] == ["1.00x", "500"]
    assert rows["predict"][-2:] == ["4.00x", "125"]
    order = list(rows)
    assert order.index("model-pass") < order.index(bench.MODEL_CALLS) < order.index(bench.FLOOR) < order.index(
        "predict")


def test_without_an_anchor_there_is_no_ratio():
    summaries = {"sequence": bench.summarize([_run(6.0)]), "polars-anchor": bench.summarize([_run(1.0, ok=False)]),
                 "predict": bench.summarize([_run(8.0)])}
    assert summaries["polars-anchor"] is None
    assert bench.ratios(summaries) == {} and bench.floor_s(summaries) is None
    rows = bench.table_rows(summaries, ["polars-anchor", "sequence", "predict"], 10, 10)
    assert rows[0][:2] == ["polars-anchor", "failed"] and rows[1][-2] == "-" and rows[2][-2] == "-"


def _flag(argv, flag):
    return argv[argv.index(flag) + 1]


def test_the_model_is_made_from_the_demos_own_sample_and_flags(tmp_path):
    """The benchmark's model steps are the demo's: every crew the preprocess step names for a split
    is one the synth step writes (a sample of other crews failed: `--val-crews 4` on crews 1, 2),
    and each step writes under the workdir, the preprocess reading what synth wrote."""
    synth, preprocess, train = bench.model_commands(tmp_path)
    assert [synth[1], preprocess[1], train[1]] == ["synth", "preprocess", "train"]
    written = set(_flag(synth, "--crews").split(","))
    named = {crew for flag in ("--eval-crews", "--val-crews") if flag in preprocess
             for crew in _flag(preprocess, flag).split(",")}
    assert named and named < written  # some crews are left to train on
    sample = _flag(synth, "--output")
    assert _flag(preprocess, "--input") == f"{sample}/train.csv"
    assert _flag(train, "--data") == _flag(preprocess, "--output")
    assert _flag(train, "--model-dir") == str(tmp_path / "model")
    assert all(_flag(cmd, flag).startswith(str(tmp_path)) for cmd, flag in
               ((synth, "--output"), (preprocess, "--output"), (train, "--data")))


def test_the_tft_floor_runs_on_the_tiny_size_alone_and_is_reported_beside_the_imports():
    assert bench.variants_of(["sequence", "import-preprocess", "tft-floor"], "kaggle") == [
        "sequence", "import-preprocess"]
    assert bench.variants_of(["sequence", "tft-floor"], "tiny") == ["sequence", "tft-floor"]
    summaries = {"tft-floor": bench.summarize([_run(7.0, child={"pipeline_s": 2.0}), _run(9.0, ok=False)]),
                 "import-preprocess": bench.summarize([_run(4.5)])}
    assert summaries["tft-floor"]["pipeline_s"] == 2.0  # the failed run left out
    line = next(x for x in bench.small_run_lines(summaries, {}) if x.startswith("- tft-floor"))
    assert "took 2.00 s after its imports" in line and "2.50 s above import-preprocess" in line
