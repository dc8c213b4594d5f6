"""benchmarks/bench_flight.py's arithmetic: the calibration undone, the target, the flags run."""

import argparse

import numpy as np
import pandas as pd

from benchmarks import bench_flight


def test_uncalibrated_undoes_the_serving_models_temperature(tmp_path):
    from trainer import calibration

    rng = np.random.default_rng(3)
    raw = rng.dirichlet([0.3, 0.5, 2.0, 0.4], size=200)
    tempered = calibration.temper(raw, 2.5)
    frame = pd.DataFrame(tempered, columns=list("ABCD"))
    frame.insert(0, "id", np.arange(200))
    frame.to_csv(tmp_path / "s.csv", index=False)
    back = pd.read_csv(bench_flight.uncalibrated(str(tmp_path / "s.csv"), 2.5, str(tmp_path / "u.csv")))
    assert back["id"].tolist() == list(range(200))
    np.testing.assert_allclose(back[list("ABCD")].to_numpy(), raw, rtol=1e-5, atol=1e-7)


def _run(log_loss, f1, b, d):
    return {"log_loss": log_loss, "macro_f1": f1, "recall": {"A": 1, "B": b, "C": 1, "D": d}}


def test_the_target_is_on_means_and_every_seeds_recall():
    assert bench_flight.meets_target([_run(0.2, 0.9, 0.8, 0.8), _run(0.3, 0.85, 0.7, 0.9)])
    assert not bench_flight.meets_target([_run(0.2, 0.9, 0.8, 0.8), _run(0.31, 0.85, 0.7, 0.9)])  # mean 0.255
    assert not bench_flight.meets_target([_run(0.2, 0.9, 0.69, 0.8), _run(0.2, 0.9, 0.9, 0.9)])  # one seed's B
    assert not bench_flight.meets_target([_run(0.2, 0.84, 0.8, 0.8)])


def test_a_candidate_keeps_its_own_epochs():
    args = argparse.Namespace(epochs=8)
    assert bench_flight._train_flags("center-gain2", args)[:2] == ["--epochs", "8"]
    assert bench_flight._train_flags("center-gain2-e16", args).count("--epochs") == 1
    assert bench_flight._train_flags("default", argparse.Namespace(epochs=None)) == []
