"""The predict benchmark's baseline and subset must do the work they claim, or its ratios mean nothing.

- The in-memory way (benchmarks/bench_predict.py: sort_and_scale, stride1_windows, then the Keras
  classifier on every materialized window) and crewstream's sweep (the Beam job beam_jobs.predict,
  --path sweep) give every id the same tcn probabilities to 1e-5. The sweep runs the tcn's
  per-step network through the job's `sequence` hook with the z-score spelled out here; that the
  exported signature scales the same way is tests/trainer's concern.
- The tcn's windowed run on a subset (time_prefix) keeps, in every group, the earliest rows only,
  so each kept row has the same window as in the whole file.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import bench_predict as bench
from tfrecords_schema import serving
from tfrecords_schema import LABEL_VOCABULARY, csv_columns as cols

W = 16
FEATURES = ["r", "ecg", "gsr", "eeg_fp1"]


def test_time_prefix_keeps_the_earliest_rows_of_every_group():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({cols.CREW: [1] * 10 + [2] * 6, cols.SEAT: [0] * 16, cols.EXPERIMENT: ["LOFT"] * 16,
                          cols.TIME: np.concatenate([rng.permutation(10), rng.permutation(6)]) / 256})
    frame = frame.sample(frac=1.0, random_state=1, ignore_index=True)  # file order is not time order
    kept = frame[bench.time_prefix(frame, 7)]  # ceil(7 / 2 groups) = 4 rows per group
    for crew, n in ((1, 10), (2, 6)):
        times = np.sort(frame.loc[frame[cols.CREW] == crew, cols.TIME].to_numpy())
        assert sorted(kept.loc[kept[cols.CREW] == crew, cols.TIME]) == list(times[:4])
    assert len(bench.time_prefix(frame, 100)) == 16 and bench.time_prefix(frame, 100).all()


def _serving_config(model_dir: Path, receptive_field: int) -> None:
    """MODEL/serving's config as predict reads it: a tcn with the `sequence` signature."""

    stats = {"window": W, "features": FEATURES, "label_vocabulary": list(LABEL_VOCABULARY)}
    serving.write_config(serving.serving_dir(str(model_dir)), serving.make_config(
        stats, serving.TCN, receptive_field,
        [serving.SCALED_SIGNATURE, serving.SEQUENCE_SIGNATURE, serving.SERVING_SIGNATURE], serving.NORM_NONE, None))


def test_inmemory_tcn_equals_the_sweep(tmp_path):
    from crewstream import synth
    from beam_jobs import inference, predict
    from trainer import model as model_lib

    # 2 groups (crew 1, seats 0 and 1) of 96 rows in a test file, text-ordered like Kaggle's
    csv = synth.generate(str(tmp_path / "data"), crews=(1,), seconds=0.1, test_seconds=96 / 256)["test"]["path"]
    frame = pd.read_csv(csv)
    mean, std = frame[FEATURES].mean(), frame[FEATURES].std(ddof=0)
    stats = {"features": FEATURES, "window": W,
             "scaling": {n: {"mean": float(mean[n]), "std": float(std[n])} for n in FEATURES}}
    params = model_lib.ModelParams(kind=model_lib.TCN, filters=8, normalize=model_lib.NORM_NONE).for_window(W)
    model_lib.set_seed(0)
    net = model_lib.build_model(W, len(FEATURES), params)

    # the benchmark's in-memory way: every window materialized, the windows' classifier
    X, ids = bench.stride1_windows(*bench.sort_and_scale(frame, stats), W, limit=10**9)
    assert X.shape == (len(frame), W, len(FEATURES)) and sorted(ids) == sorted(frame[cols.ID])
    inmemory = pd.DataFrame(net.predict(X, batch_size=1024, verbose=0), columns=list(LABEL_VOCABULARY), index=ids)

    # crewstream's sweep over each padded group, in sweeps of 37 rows (+ W-1 of context)
    per_step = model_lib.step_network(net)
    scale = lambda rows: ((rows - mean.to_numpy()) / std.to_numpy()).astype(np.float32)  # noqa: E731
    sequence = lambda rows: per_step(scale(rows)[None], training=False).numpy()[0]  # noqa: E731
    model_dir = tmp_path / "model"
    _serving_config(model_dir, params.receptive_field)
    with inference.stand_in(inference.StandIn(sequence=sequence)):
        counts = predict.run(["--model-dir", str(model_dir), "--input", csv, "--output", str(tmp_path / "sub.csv"),
                              "--path", "sweep", "--sweep-rows", "37", "--progress", "none"])
    swept = pd.read_csv(tmp_path / "sub.csv").set_index(cols.ID)

    assert counts["predicted"] == len(frame) and sorted(swept.index) == sorted(ids)
    difference = (inmemory - swept.loc[inmemory.index, list(LABEL_VOCABULARY)]).abs().to_numpy()
    assert difference.max() <= 1e-5
    assert inmemory.to_numpy().std(axis=0).min() > 1e-3  # the rows differ: a constant model would pass
