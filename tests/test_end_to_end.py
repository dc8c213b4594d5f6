"""The commands a user types, end to end on a `crewstream synth` sample."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tests import shard_writers
from tests.reference import read_output, reference_windows

FEATURES = ["r", "ecg", "gsr"]


def crewstream(*args, timeout=900, env=None):
    result = subprocess.run([sys.executable, "-m", "crewstream.cli", *map(str, args)], capture_output=True,
                            text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    crewstream("synth", "--out", root, "--crews", "1,2,3", "--seconds", 60)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_synth_then_preprocess_gives_the_contract_windows(sample, tmp_path, workers):
    out = tmp_path / "out"
    extra = [] if workers == 1 else ["--direct_num_workers", 2, "--direct_running_mode", "multi_processing"]
    log = tmp_path / "shard_writers"
    log.mkdir()
    result = crewstream("preprocess", "--input", sample / "train.csv", "--output", out, "--features",
                        ",".join(FEATURES), "--window", 256, "--stride", 32, "--eval-crews", 2,
                        "--num-shards", 4, *extra, env=dict(os.environ, **shard_writers.environment(log)))
    assert "train" in result.stdout and "eval" in result.stdout  # the printed summary table
    frame = pd.read_csv(sample / "train.csv")
    expected, _ = reference_windows(frame, FEATURES, 256, 32, 1.0, [2])
    stats, found, _ = read_output(str(out))
    assert set(found) == set(expected)
    for key, (split, label, values) in expected.items():
        assert found[key][:2] == (split, label)
        np.testing.assert_allclose(found[key][2], values, rtol=1e-5, atol=1e-5)
    assert stats["splits"]["train"]["num_rows"] + stats["splits"]["eval"]["num_rows"] == len(frame)
    assert sorted(os.listdir(out / "train")) == [f"part-0000{k}-of-00004.tfrecord" for k in range(4)]
    # the shards were written by one process (the command's own) or by two worker processes
    writers = shard_writers.records_by_process(log)
    assert len(writers) == workers and sum(writers.values()) == len(found), writers
