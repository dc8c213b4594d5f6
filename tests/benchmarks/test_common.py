"""The benchmarks' one measuring helper must see what a real command does, or every table built on
it is wrong: the memory of the whole process tree (a grandchild's too), the wall time, the exit code."""

import sys

from benchmarks import common

MiB = 2**20
HOLD_S = 2.0  # longer than the 1 s between PSS reads, so one of them falls while the memory is held

# The measured command starts a grandchild that writes 200 MiB (written, so resident: not calloc's
# untouched zero pages), holds them HOLD_S, and exits; the child then exits 3.
GRANDCHILD = f"import time; block = b'x' * (200 * {MiB}); time.sleep({HOLD_S})"
CHILD = ("import subprocess, sys; print('child here', flush=True); "
         f"subprocess.run([sys.executable, '-c', {GRANDCHILD!r}], check=True); sys.exit(3)")


def test_measure_sees_the_tree_s_peak_memory_wall_time_and_exit_code(tmp_path):
    log = tmp_path / "run.log"
    cmd = [sys.executable, "-c", CHILD]
    found = common.measure(cmd, log, interval=0.1, with_pss=True)

    assert found["returncode"] == 3
    assert found["wall_s"] >= HOLD_S
    assert found["peak_tree_rss"] >= 200 * MiB  # sampled: the grandchild's memory counts
    assert found["peak_tree_pss"] >= 200 * MiB  # private pages: PSS = RSS
    assert found["max_single_rss"] >= 200 * MiB
    assert found["peak_tree_rss"] < 1000 * MiB  # the child's and the grandchild's, no other process's
    assert found["max_procs"] == 2
    assert 0 < found["cpu_s"] < found["wall_s"] * 2
    assert found["cpu_user_s"] > 0 and found["cpu_sys_s"] >= 0
    assert abs(found["cpu_user_s"] + found["cpu_sys_s"] - found["cpu_s"]) < 1e-9
    assert found["log"] == str(log)
    text = log.read_text().splitlines()
    assert text[0].startswith("$ ") and text[1] == "child here"


def test_measure_reads_no_pss_unless_asked(tmp_path):
    found = common.measure([sys.executable, "-c", "pass"], tmp_path / "run.log")
    assert found["returncode"] == 0 and found["peak_tree_pss"] == 0
