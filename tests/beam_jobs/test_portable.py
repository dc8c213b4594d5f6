"""The preprocess job through Beam's portability layer, on loopback.

A worker pool (`python -m apache_beam.runners.worker.worker_pool_main`) starts SDK worker
processes on request; the job reaches them as Flink, Spark and Dataflow jobs do: serialized into
a pipeline proto, run by separate Python processes that import the package themselves, in another
working directory than the launcher's. The shards and stats.json must be byte-identical to a
DirectRunner run's.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs import preprocess, runner
from tests.crew_csv import make_frame, write_crew_csv
from tests.reference import read_output

FEATURES = "r,ecg,gsr"
JOB_FLAGS = ["--features", FEATURES, "--eval-crews", "2", "--window", "8", "--stride", "2", "--num-shards", "2"]
POOL_START_TIMEOUT_S = 120
STARTING_WORKER = "Starting worker with command"  # worker_pool_main logs this once per worker it starts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _wait_until_listening(proc: subprocess.Popen, port: int, log_path) -> None:
    deadline = time.monotonic() + POOL_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker pool exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            socket.create_connection(("localhost", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"worker pool not listening on {port} after {POOL_START_TIMEOUT_S} s")


def _stop(proc: subprocess.Popen) -> None:
    """Stop the pool and any worker still running: they are the process group of the session the
    pool was started in. (SIGTERM, not SIGINT: a background shell starts children ignoring SIGINT.)"""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=20)
            break
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def worker_pool(tmp_path_factory):
    """(`localhost:PORT` of a running worker pool, its log file). The pool starts each worker with
    a bare `python`, so this interpreter's bin folder goes first on PATH; it runs in an empty
    folder, so workers import the installed package, not the checkout in their working directory."""
    folder = tmp_path_factory.mktemp("pool")
    log_path = folder / "pool.log"
    port = _free_port()
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", "--service_port", str(port)],
            cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_until_listening(proc, port, log_path)
        yield f"localhost:{port}", log_path
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def job_input(tmp_path_factory):
    """(folder, csv name, a DirectRunner run's output folder): the reference for every portable run."""
    folder = tmp_path_factory.mktemp("portable")
    write_crew_csv(folder / "train.csv", make_frame(rows_per_group=120, gap_at=(50, 2.0), seed=5))
    preprocess.run(["--input", str(folder / "train.csv"), "--output", str(folder / "direct"), *JOB_FLAGS])
    return folder, "train.csv", folder / "direct"


def _workers_started(log_path) -> int:
    return log_path.read_text(errors="replace").count(STARTING_WORKER)


def _run_in(monkeypatch, folder, csv_name, out_name, *beam_flags):
    """Run with paths relative to `folder`, as a user would: workers, in another directory, must
    still find them."""
    monkeypatch.chdir(folder)
    return preprocess.run(["--input", csv_name, "--output", out_name, *JOB_FLAGS, *beam_flags])


def assert_same_output(expected, found):
    """stats.json and every shard byte-identical (the transform graph's ids differ by design)."""
    assert (found / "stats.json").read_bytes() == (expected / "stats.json").read_bytes()
    stats, records, _ = read_output(str(expected))
    assert {split for split, _, _ in records.values()} == {"train", "eval"}
    for split in ("train", "eval"):
        for shard in stats["splits"][split]["shards"]:
            assert (found / shard["file"]).read_bytes() == (expected / shard["file"]).read_bytes(), shard["file"]
    assert not [name for name in os.listdir(found) if name.startswith(".staging")]


@pytest.mark.slow  # 65-85 s, plus 35 s for the DirectRunner reference, on the shared 2-core machine
def test_portable_runner_on_worker_pool_writes_what_the_direct_runner_writes(worker_pool, job_input, monkeypatch):
    endpoint, log_path = worker_pool
    folder, csv_name, direct = job_input
    before = _workers_started(log_path)
    _run_in(monkeypatch, folder, csv_name, "portable", "--runner", "PortableRunner", "--job_endpoint", "embed",
            "--environment_type", "EXTERNAL", "--environment_config", endpoint)
    assert_same_output(direct, folder / "portable")
    assert _workers_started(log_path) > before  # the work ran in the pool's processes


@pytest.mark.slow  # 90-110 s on the shared 2-core machine
def test_two_pool_workers_write_what_the_direct_runner_writes(worker_pool, job_input, monkeypatch):
    # Beam's embedded job service asks the pool for one worker whatever --sdk_worker_parallelism
    # says (only Flink's and Spark's job servers read it); the local runner asks for
    # --direct_num_workers of them.
    endpoint, log_path = worker_pool
    folder, csv_name, direct = job_input
    before = _workers_started(log_path)
    _run_in(monkeypatch, folder, csv_name, "two", "--environment_type", "EXTERNAL", "--environment_config", endpoint,
            "--direct_num_workers", "2")
    assert_same_output(direct, folder / "two")
    assert _workers_started(log_path) - before == 2


@pytest.mark.parametrize("flags, message", [
    (["--runner", "PortableRunner", "--job_endpoint", "embed"], "DOCKER"),
    (["--runner", "PortableRunner", "--job_endpoint", "embed", "--environment_type", "DOCKER"], "DOCKER"),
    (["--environment_type", "PROCESS"], "EXTERNAL"),
    (["--environment_type", "EXTERNAL", "--environment_config", "localhost:1",
      "--direct_running_mode", "multi_processing"], "EXTERNAL"),
])
def test_runner_choices_that_would_pull_a_container_or_conflict_are_refused(flags, message):
    with pytest.raises(runner.JobError, match=message):
        runner.make_runner(PipelineOptions(flags))


def test_runners_built_by_beam_are_left_to_beam():
    assert runner.make_runner(PipelineOptions(["--runner", "PortableRunner", "--job_endpoint", "embed",
                                                   "--environment_type", "LOOPBACK"])) is None
    assert runner.make_runner(PipelineOptions(["--runner", "FlinkRunner", "--flink_master", "h:8081"])) is None


def test_local_paths_become_absolute_and_urls_stay(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert runner.absolute("data/train.csv") == str(tmp_path / "data" / "train.csv")
    assert runner.absolute("gs://bucket/crew/*.csv") == "gs://bucket/crew/*.csv"
