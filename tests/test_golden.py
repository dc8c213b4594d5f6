"""Outputs stay byte-identical: preprocess (both layouts) and predict (sweep and windows, tcn and
lstm) on a tiny fixed sample with tiny fixed models, against checksums written by crewstream 0.1.0
before its modules were renamed (tests/golden/; how its inputs and models were made:
tests/golden/make_inputs.py).

Refresh the checksums only for a change that means to change outputs:
    python tests/test_golden.py --write
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
CHECKSUMS = os.path.join(GOLDEN, "checksums.json")
# fingerprint.pb is a SavedModel's random id (tf.saved_model writes a new one every time)
UNSTABLE = ("fingerprint.pb",)

COMMANDS = [
    ["preprocess", "--input", "inputs/train.csv.gz", "--output", "windows", "--window", "16",
     "--stride", "16", "--eval-crews", "2", "--num-shards", "2", "--block-rows", "300"],
    ["preprocess", "--input", "inputs/train.csv.gz", "--output", "sequence", "--layout", "sequence",
     "--window", "16", "--eval-crews", "2", "--num-shards", "2", "--chunk-rows", "64", "--block-rows", "300"],
    ["predict", "--model-dir", "models/tcn", "--input", "inputs/test.csv.gz", "--output", "tcn_sweep.csv",
     "--block-rows", "300", "--progress", "none"],
    ["predict", "--model-dir", "models/tcn", "--input", "inputs/test.csv.gz", "--output", "tcn_windows.csv",
     "--path", "windows", "--block-rows", "300", "--progress", "none"],
    ["predict", "--model-dir", "models/lstm", "--input", "inputs/test.csv.gz", "--output", "lstm.csv",
     "--progress", "none"],
]
INPUTS = ("inputs", "models")
# Beam's in-process workers (what a local predict on a large input gets by default): the same
# bytes, but for the transform graph's function names, which carry TensorFlow's process-wide
# counters (more workers in one process trace more functions before the graph is written).
TWO_WORKERS = ["--direct_num_workers", "2"]
COUNTER_NAMED = "transform_fn/saved_model.pb"


def _run_commands(two_workers: bool = False) -> None:
    """In a fresh process, in the current folder: a graph's bytes (transform_fn/saved_model.pb)
    depend on what else the process built before (TensorFlow's name counters)."""
    from crewstream import cli

    for argv in COMMANDS:
        if cli.main(list(argv) + (TWO_WORKERS if two_workers else [])) != 0:
            sys.exit(f"failed: crewstream {' '.join(argv)}")


def run_all(root: str, two_workers: bool = False) -> dict:
    """Run COMMANDS in ROOT (with the golden inputs and models copied in); {output file: sha256},
    with ROOT spelled `{root}` inside the files (rejects name their input by its full path)."""
    for name in INPUTS:
        shutil.copytree(os.path.join(GOLDEN, name), os.path.join(root, name))
    repo = os.path.dirname(os.path.dirname(GOLDEN))
    code = f"from tests.test_golden import _run_commands; _run_commands({two_workers})"
    subprocess.run([sys.executable, "-c", code], cwd=root, env={**os.environ, "PYTHONPATH": repo}, check=True)
    sums = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)
            if rel.split(os.sep)[0] in INPUTS or name in UNSTABLE:
                continue
            with open(path, "rb") as f:
                data = f.read().replace(root.encode(), b"{root}")
            sums[rel] = hashlib.sha256(data).hexdigest()
    return dict(sorted(sums.items()))


@pytest.mark.parametrize("two_workers", [False, True], ids=["one worker", "two in-process workers"])
def test_outputs_are_byte_identical_to_the_golden_ones(tmp_path, two_workers):
    with open(CHECKSUMS) as f:
        expected = json.load(f)
    got = run_all(str(tmp_path), two_workers)
    assert sorted(got) == sorted(expected), "the set of output files changed"
    changed = [name for name in expected if got[name] != expected[name]
               and not (two_workers and name.endswith(COUNTER_NAMED))]
    assert not changed, f"outputs whose bytes changed: {changed}"


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    import tempfile
    sys.path[0] = os.path.dirname(os.path.dirname(GOLDEN))  # the repo, not tests/ (whose folders shadow packages)
    with tempfile.TemporaryDirectory() as tmp:
        sums = run_all(os.path.realpath(tmp))
    with open(CHECKSUMS, "w") as f:
        json.dump(sums, f, indent=1)
        f.write("\n")
    print(f"wrote {CHECKSUMS}: {len(sums)} files")
