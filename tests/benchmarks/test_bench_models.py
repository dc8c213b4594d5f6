"""The model benchmark's verdicts: the target per run and the means over seeds, from the figures."""

import argparse

from benchmarks import bench_models as bench


def _run(name, seed, f1, recall_b, recall_d):
    return {"name": name, "seed": seed, "model": f"{name} described", "macro_f1": f1,
            "recall": {"A": 0.9, "B": recall_b, "C": 0.8, "D": recall_d}, "log_loss": 0.5 + seed,
            "accuracy": 0.9, "seconds_per_epoch": 10.0 + seed}


def test_the_target_needs_macro_f1_and_the_recall_of_b_and_d():
    assert bench.meets_target(_run("x", 0, 0.80, 0.6, 0.6))
    assert not bench.meets_target(_run("x", 0, 0.79, 0.9, 0.9))
    assert not bench.meets_target(_run("x", 0, 0.95, 0.59, 0.9))
    assert not bench.meets_target(_run("x", 0, 0.95, 0.9, 0.59))


def test_several_seeds_add_a_row_of_means_and_the_seeds_that_met_the_target(prep_dir):
    args = argparse.Namespace(epochs=3, steps_per_epoch=None, batch_size=64, weighting="balanced")
    results = [_run("tcn-a", 0, 0.9, 0.7, 0.8), _run("tcn-a", 1, 0.7, 0.5, 0.8), _run("tcn-b", 0, 0.85, 0.6, 0.6)]
    lines = bench.render(results, prep_dir, args).splitlines()
    mean = next(line.split() for line in lines if line.startswith("tcn-a") and " mean " in line)
    assert mean[:4] == ["tcn-a", "mean", "0.800", "0.900"] and mean[4] == "0.600"
    assert mean[7:] == ["1.000", "0.900", "10.5", "1/2"]  # log loss mean, accuracy, s/epoch median
    verdicts = [line.split()[-1] for line in lines if line.startswith("tcn-")]
    assert verdicts == ["yes", "no", "1/2", "yes"]  # one run of tcn-b: no mean row
    assert "  tcn-b = tcn-b described" in lines
