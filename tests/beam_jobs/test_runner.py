"""beam_jobs.runner: the local worker count a run gets when the user does not choose one."""

import pytest

from beam_jobs import runner


@pytest.fixture
def cores(monkeypatch):
    def set_cores(n):
        monkeypatch.setattr(runner, "usable_cores", lambda: n)
    return set_cores


def test_a_large_local_run_gets_one_in_process_worker_per_core(cores):
    cores(2)
    assert runner.with_local_workers([], runner.PARALLEL_INPUT_BYTES) == ["--direct_num_workers", "2"]
    cores(64)
    assert runner.with_local_workers(["--save_main_session"], 1 << 40) == [
        "--save_main_session", "--direct_num_workers", str(runner.MAX_LOCAL_WORKERS)]


@pytest.mark.parametrize("args", [["--direct_num_workers", "1"], ["--direct_num_workers=3"],
                                  ["--direct_running_mode", "multi_processing"], ["--runner", "DataflowRunner"],
                                  ["--environment_type=EXTERNAL", "--environment_config=localhost:5000"]])
def test_a_choice_of_the_user_is_kept(cores, args):
    cores(4)
    assert runner.with_local_workers(args, 1 << 40) == args


def test_a_small_run_or_one_core_stays_on_one_worker(cores):
    cores(4)
    assert runner.with_local_workers([], runner.PARALLEL_INPUT_BYTES - 1) == []
    cores(1)
    assert runner.with_local_workers([], 1 << 40) == []


def test_input_bytes_counts_local_files(tmp_path):
    (tmp_path / "a.csv").write_bytes(b"x" * 10)
    (tmp_path / "b.csv").write_bytes(b"y" * 5)
    assert runner.input_bytes([str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "gs://bucket/c.csv"]) == 15
