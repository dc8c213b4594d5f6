"""Outputs stay byte-identical: preprocess (both layouts) and predict (sweep and windows, tcn and
lstm) on a tiny fixed sample with tiny fixed models, against checksums written by crewstream 0.1.0
before its modules were renamed (tests/golden/; how its inputs and models were made:
tests/golden/make_inputs.py).

The submissions are the model's numbers, and TensorFlow's kernels give their last bits by the
CPU's vector instructions (oneDNN picks its code at run time): on the Intel Xeon machines the
checksums were first written on, tcn_sweep.csv and tcn_windows.csv are the same bytes; on AMD EPYC
machines (AVX2, no AVX-512) every submission differs from those in a last digit, and the two tcn
paths are 7e-8 apart. So each submission is compared byte for byte with the bytes of every kind of
CPU seen (its list in checksums.json) and, on a CPU not seen yet, with the copy in
tests/golden/submissions/ (written on the last CPU added): the same text but for probabilities
that agree to SUBMISSION_TOLERANCE.

Refresh the checksums only for a change that means to change outputs (the submissions' lists are
then this machine's alone, and so are the copies):
    python tests/test_golden.py --write
Add this machine's submission bytes to their lists (refused unless everything else is unchanged and
they agree with the copies to SUBMISSION_TOLERANCE):
    python tests/test_golden.py --add-cpu
"""

import csv
import hashlib
import io
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
SUBMISSIONS = ("lstm.csv", "tcn_sweep.csv", "tcn_windows.csv")  # model outputs: a list of sha256 each
SUBMISSION_COPIES = os.path.join(GOLDEN, "submissions")
SUBMISSION_TOLERANCE = 1e-6
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
            sums[rel] = hashlib.sha256(_read(root, rel)).hexdigest()
    return dict(sorted(sums.items()))


def _read(root: str, rel: str) -> bytes:
    with open(os.path.join(root, rel), "rb") as f:
        return f.read().replace(root.encode(), b"{root}")


def submission_differences(got: bytes, golden: bytes, tolerance: float = SUBMISSION_TOLERANCE) -> list:
    """How submission `got` differs from `golden` beyond probabilities within `tolerance` (each
    field compared as text but for A..D, compared as numbers): a list of one-line reasons."""
    rows_got, rows_golden = (list(csv.reader(io.StringIO(b.decode()))) for b in (got, golden))
    if len(rows_got) != len(rows_golden):
        return [f"{len(rows_got)} lines, golden {len(rows_golden)}"]
    found = []
    for line, (a, b) in enumerate(zip(rows_got, rows_golden), 1):
        if line == 1 or len(a) != len(b) or a[0] != b[0]:
            if a != b:
                found.append(f"line {line}: {a} against {b}")
            continue
        far = [(x, y) for x, y in zip(a[1:], b[1:]) if abs(float(x) - float(y)) > tolerance]
        if far:
            found.append(f"line {line} (id {a[0]}): {far[0][0]} against {far[0][1]}")
    return found


def changed_outputs(root: str, got: dict, expected: dict, two_workers: bool = False) -> list:
    """The outputs under `root` (checksums `got`) that differ from the golden ones (`expected`)."""
    changed = []
    for name, golden in expected.items():
        if name in SUBMISSIONS:
            if got[name] in golden:  # the bytes of a CPU seen
                continue
            with open(os.path.join(SUBMISSION_COPIES, name), "rb") as f:
                far = submission_differences(_read(root, name), f.read())
            if far:
                changed.append(f"{name} ({len(far)} line(s); {far[0]})")
        elif got[name] != golden and not (two_workers and name.endswith(COUNTER_NAMED)):
            changed.append(name)
    return changed


@pytest.mark.parametrize("two_workers", [False, True], ids=["one worker", "two in-process workers"])
def test_outputs_are_byte_identical_to_the_golden_ones(tmp_path, two_workers):
    with open(CHECKSUMS) as f:
        expected = json.load(f)
    got = run_all(str(tmp_path), two_workers)
    assert sorted(got) == sorted(expected), "the set of output files changed"
    changed = changed_outputs(str(tmp_path), got, expected, two_workers)
    assert not changed, f"outputs whose bytes changed: {changed}"


def test_a_submission_is_compared_as_text_but_for_its_probabilities():
    golden = b"id,A,B,C,D\n0,0.25,0.25,0.25,0.25\n1,0.1,0.2,0.3,0.4\n"
    assert submission_differences(golden, golden) == []
    assert submission_differences(b"id,A,B,C,D\n0,0.25,0.25,0.25,0.25\n1,0.1000001,0.2,0.3,0.4\n", golden) == []
    assert submission_differences(b"id,A,B,C,D\n0,0.25,0.25,0.25,0.25\n1,0.1001,0.2,0.3,0.4\n", golden) == [
        "line 3 (id 1): 0.1001 against 0.1"]
    assert submission_differences(b"id,A,B,C,D\n1,0.1,0.2,0.3,0.4\n0,0.25,0.25,0.25,0.25\n", golden)  # order
    assert submission_differences(b"id,A,B,C,D\n0,0.25,0.25,0.25,0.25\n", golden) == ["2 lines, golden 3"]
    assert submission_differences(b"id,a,B,C,D\n0,0.25,0.25,0.25,0.25\n1,0.1,0.2,0.3,0.4\n", golden)  # header


def test_a_submission_of_a_cpu_not_seen_is_compared_with_the_copy(tmp_path):
    """A CPU whose submission bytes are not listed: within SUBMISSION_TOLERANCE of the copy is
    unchanged, beyond it is changed; a listed checksum needs no copy."""
    with open(os.path.join(SUBMISSION_COPIES, "lstm.csv"), "rb") as f:
        lines = f.read().decode().splitlines(keepends=True)
    row = lines[1].rstrip("\n").split(",")
    for shift, changed in ((SUBMISSION_TOLERANCE / 10, False), (SUBMISSION_TOLERANCE * 10, True)):
        moved = ",".join(row[:1] + [repr(float(row[1]) + shift)] + row[2:]) + "\n"
        (tmp_path / "lstm.csv").write_text("".join([lines[0], moved] + lines[2:]))
        got = {"lstm.csv": hashlib.sha256((tmp_path / "lstm.csv").read_bytes()).hexdigest()}
        assert bool(changed_outputs(str(tmp_path), got, {"lstm.csv": ["0" * 64]})) is changed
        assert changed_outputs(str(tmp_path), got, {"lstm.csv": [got["lstm.csv"]]}) == []


def _write(add_cpu: bool) -> None:
    import tempfile
    with open(CHECKSUMS) as f:
        expected = json.load(f)
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.realpath(tmp)
        sums = run_all(root)
        if add_cpu:
            changed = changed_outputs(root, sums, expected)
            if changed or sorted(sums) != sorted(expected):
                sys.exit(f"not added: outputs changed beyond the CPU's numbers: {changed}")
            sums = {name: (sorted(set(expected[name]) | {sums[name]}) if name in SUBMISSIONS else expected[name])
                    for name in sums}
        else:
            sums = {name: ([sum_] if name in SUBMISSIONS else sum_) for name, sum_ in sums.items()}
        os.makedirs(SUBMISSION_COPIES, exist_ok=True)
        for name in SUBMISSIONS:
            with open(os.path.join(SUBMISSION_COPIES, name), "wb") as f:
                f.write(_read(root, name))
    with open(CHECKSUMS, "w") as f:
        json.dump(sums, f, indent=1)
        f.write("\n")
    print(f"wrote {CHECKSUMS}: {len(sums)} files, and the submissions' copies in {SUBMISSION_COPIES}")


if __name__ == "__main__" and sys.argv[1:] in (["--write"], ["--add-cpu"]):
    sys.path[0] = os.path.dirname(os.path.dirname(GOLDEN))  # the repo, not tests/ (whose folders shadow packages)
    _write(sys.argv[1:] == ["--add-cpu"])
