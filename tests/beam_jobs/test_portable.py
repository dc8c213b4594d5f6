"""The preprocess job through Beam's portability layer, on loopback.

A worker pool (`python -m apache_beam.runners.worker.worker_pool_main`) starts SDK worker
processes on request; the job reaches them as Flink, Spark and Dataflow jobs do: serialized into
a pipeline proto, run by separate Python processes that import the package themselves, in another
working directory than the launcher's. The shards and stats.json must be byte-identical to a
DirectRunner run's. The pool is tests/beam_jobs/conftest.py's `worker_pool`.
"""

import os

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs import preprocess, runner
from tests.helpers import make_frame, write_crew_csv
from tests.reference import read_output
from tests.worker_pool import workers_started

FEATURES = "r,ecg,gsr"
JOB_FLAGS = ["--features", FEATURES, "--eval-crews", "2", "--window", "8", "--stride", "2", "--num-shards", "2"]


@pytest.fixture(scope="module")
def job_input(tmp_path_factory):
    """(folder, csv name, a DirectRunner run's output folder): the reference for every portable run."""
    folder = tmp_path_factory.mktemp("portable")
    write_crew_csv(folder / "train.csv", make_frame(rows_per_recording=120, gap_at=(50, 2.0), seed=5))
    preprocess.run(["--input", str(folder / "train.csv"), "--output", str(folder / "direct"), *JOB_FLAGS])
    return folder, "train.csv", folder / "direct"


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
    before = workers_started(log_path)
    _run_in(monkeypatch, folder, csv_name, "portable", "--runner", "PortableRunner", "--job_endpoint", "embed",
            "--environment_type", "EXTERNAL", "--environment_config", endpoint)
    assert_same_output(direct, folder / "portable")
    assert workers_started(log_path) > before  # the work ran in the pool's processes


@pytest.mark.slow  # 90-110 s on the shared 2-core machine
def test_two_pool_workers_write_what_the_direct_runner_writes(worker_pool, job_input, monkeypatch):
    # Beam's embedded job service asks the pool for one worker whatever --sdk_worker_parallelism
    # says (only Flink's and Spark's job servers read it); the local runner asks for
    # --direct_num_workers of them.
    endpoint, log_path = worker_pool
    folder, csv_name, direct = job_input
    before = workers_started(log_path)
    _run_in(monkeypatch, folder, csv_name, "two", "--environment_type", "EXTERNAL", "--environment_config", endpoint,
            "--direct_num_workers", "2")
    assert_same_output(direct, folder / "two")
    assert workers_started(log_path) - before == 2


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
