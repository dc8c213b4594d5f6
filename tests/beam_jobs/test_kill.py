"""`kill -9` of the preprocess job at several points: OUT is never readable as complete (or still
holds the previous complete run, untouched), and a rerun into the same folder gives the records
and the stats.json of an uninterrupted run, byte for byte.

The test drives the kills: it starts `python -m beam_jobs.preprocess` and sends SIGKILL when a
log line or a staging file shows the job has reached the point. The points inside publishing
are too short to hit by polling, so there the job runs through a wrapper that replaces
beam_jobs.publish's write_stats with one that SIGKILLs its own process before (or right after)
writing stats.json: a real kill at an exact instant.
"""

import glob
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from beam_jobs import preprocess
from tests.helpers import make_frame, write_crew_csv
from tests.reference import read_output
from tfrecords_schema import StatsError, ownership, read_stats, verify

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLAGS = ["--features", "r,ecg,gsr", "--window", "16", "--stride", "4", "--eval-crews", "2",
         "--num-shards", "2", "--split-bytes", "1000000"]
PREVIOUS_FLAGS = [*FLAGS[:-4], "--num-shards", "3"]  # an earlier run with other shards

# Runs the job with write_stats replaced: SIGKILL before it, or right after it.
KILL_IN_PUBLISH = textwrap.dedent("""
    import os, signal, sys
    from beam_jobs import preprocess, publish
    write_stats, when = publish.write_stats, sys.argv[1]

    def kill_around_write_stats(out, stats):
        if when == "after":
            write_stats(out, stats)
        os.kill(os.getpid(), signal.SIGKILL)

    publish.write_stats = kill_around_write_stats
    sys.exit(preprocess.main(sys.argv[2:]))
""")


def argv(csv, out, flags=FLAGS):
    return ["--input", str(csv), "--output", str(out), *flags]


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    """36,000 rows of all 23 signals (9 MB): reading and cutting take seconds, not milliseconds."""
    root = tmp_path_factory.mktemp("kill")
    return write_crew_csv(root / "train.csv", make_frame(crews=(1, 2, 3), rows_per_recording=2000, seed=11))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, csv):
    out = tmp_path_factory.mktemp("uninterrupted") / "out"
    preprocess.run(argv(csv, out))
    return out


@pytest.fixture(scope="module")
def previous(tmp_path_factory, csv):
    """A complete output of an earlier run (3 shards per split) to rerun over."""
    out = tmp_path_factory.mktemp("previous") / "out"
    preprocess.run(argv(csv, out, PREVIOUS_FLAGS))
    return out


def files_of(out, graph=False):
    """{path relative to OUT: bytes} of the output, staging folders and the lock file a killed run
    leaves (the next run takes it over and removes it) left out, and the transform graph too
    unless `graph`: TensorFlow numbers a SavedModel's functions per process, so the graph's bytes
    differ between runs (same_scaling compares what it computes)."""
    found = {}
    for root, dirs, names in os.walk(out):
        dirs[:] = [d for d in dirs if not d.startswith(".staging-") and (graph or d != "transform_fn")]
        for name in names:
            path = os.path.join(root, name)
            if path != ownership.lock_path(str(out)):
                found[os.path.relpath(path, out)] = open(path, "rb").read()
    return found


def same_scaling(out, other):
    from beam_jobs.scaling import Scaler

    raw = np.random.default_rng(0).normal(0, 100, size=(50, 3)).astype(np.float32)
    np.testing.assert_array_equal(Scaler(str(out)).scale(raw), Scaler(str(other)).scale(raw))


def staged(out, *parts):
    return lambda: bool(glob.glob(os.path.join(str(out), ".staging-*", *parts)))


def logged(stderr_path, text):
    return lambda: text in open(stderr_path).read()


def run_and_kill(command, stderr_path, condition=None):
    """Start `command`; SIGKILL it as soon as `condition()` holds (None: it kills itself); fail
    if it ends any other way."""
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        while condition is not None and not condition():
            assert proc.poll() is None, f"the job ended before the kill point:\n{open(stderr_path).read()[-3000:]}"
            time.sleep(0.01)
        if condition is not None:
            os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, open(stderr_path).read()[-3000:]


def job(*args):
    return [sys.executable, "-m", "beam_jobs.preprocess", *args]


def wrapped(when):
    return lambda *args: [sys.executable, "-c", KILL_IN_PUBLISH, when, *args]


def assert_refused(out):
    from trainer import data

    with pytest.raises(StatsError):
        read_stats(str(out))
    with pytest.raises(StatsError):
        data.make_dataset(str(out), "train", 8)
    assert not verify.verify(str(out)).ok


# name -> (OUT holds a previous complete run, the kill, what OUT must be after it)
KILL_POINTS = {
    "starting": (False, lambda out, err: (job, logged(err, "crewstream.preprocess")), "refused"),
    "reading": (True, lambda out, err: (job, staged(out, "spills", "*", "*.spill")), "previous"),
    "writing shards": (False, lambda out, err: (job, staged(out, "train", "part-*")), "refused"),
    "publishing: outputs moved, no stats.json yet": (True, lambda out, err: (wrapped("before"), None), "refused"),
    "published: stats.json written, staging not removed": (False, lambda out, err: (wrapped("after"), None),
                                                            "complete"),
}


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_then_rerun(tmp_path, csv, uninterrupted, previous, point):
    has_previous, kill, after = KILL_POINTS[point]
    out, stderr = tmp_path / "out", str(tmp_path / "stderr")
    if has_previous:
        shutil.copytree(previous, out)
    before = files_of(out, graph=True)

    command, condition = kill(out, stderr)
    run_and_kill(command(*argv(csv, out)), stderr, condition)
    print(f"killed at {point!r}; OUT held:", sorted(  # shown with pytest -s
        os.path.relpath(path, out) for path in glob.glob(f"{out}/*") + glob.glob(f"{out}/.*/*")))
    if after == "refused":
        assert_refused(out)
    elif after == "previous":
        assert files_of(out, graph=True) == before  # the earlier run, byte for byte
        assert verify.verify(str(out)).ok
    else:
        report = verify.verify(str(out))
        assert report.ok and report.notes  # complete, with the killed run's staging left over
        assert (out / "stats.json").read_bytes() == (uninterrupted / "stats.json").read_bytes()

    preprocess.run(argv(csv, out))
    assert files_of(out) == files_of(uninterrupted)  # no stale shard, same bytes everywhere
    same_scaling(out, uninterrupted)
    assert not glob.glob(str(out / ".staging-*")) and not os.path.exists(ownership.lock_path(str(out)))
    assert read_output(str(out))[1].keys() == read_output(str(uninterrupted))[1].keys()
