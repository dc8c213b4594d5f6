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


def test_a_workdir_is_reused_only_for_the_flags_that_made_it(tmp_path, capsys):
    """A seed's data made with one flight length, or a result of other train flags, is refused in
    one line rather than scored as if it were what was asked for."""
    import json
    import os

    import pytest

    made = bench_flight._parse_args(["--workdir", str(tmp_path), "--test-seconds", "60"])
    base = str(tmp_path / "seed-0")
    bench_flight._check_made_with(base, made)  # first use: recorded
    bench_flight._check_made_with(base, made)  # the same flags: reused
    with pytest.raises(SystemExit, match="was made with .*'test_seconds': 60.0.*not .*'test_seconds': 600.0"):
        bench_flight._check_made_with(base, bench_flight._parse_args(["--workdir", str(tmp_path)]))
    os.makedirs(tmp_path / "seed-1")
    with pytest.raises(SystemExit, match="has no made_with.json"):
        bench_flight._check_made_with(str(tmp_path / "seed-1"), made)

    path = tmp_path / "result-center-gain2-s0.json"
    path.write_text(json.dumps({"name": "center-gain2", "flags": bench_flight._train_flags("center-gain2", made)}))
    assert bench_flight._load_result(str(path), "center-gain2", made)["name"] == "center-gain2"
    eight = bench_flight._parse_args(["--workdir", str(tmp_path), "--epochs", "8"])
    with pytest.raises(SystemExit, match="ran crewstream train .* not .*'--epochs', '8'"):
        bench_flight._load_result(str(path), "center-gain2", eight)
