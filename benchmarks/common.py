"""What the benchmark scripts share beyond their measurements: where they run, how they measure a
command, how they describe the machine, and their scratch folders."""

import contextlib
import os
import platform
import select
import shlex
import shutil
import subprocess
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent  # where `python -m benchmarks.X` runs
GiB = 2**30
SAMPLE_INTERVAL_S = 0.2  # memory sampling period of measure, unless a script's --interval says otherwise
PSS_PERIOD_S = 1.0
# The code a benchmark runs: an uncommitted change here is named in the report's header.
CODE_PATHS = ("beam_jobs", "cli_common", "crewstream", "tfrecords_schema", "trainer", "benchmarks", "setup.py")
VERSIONED = ("tensorflow", "tensorflow-transform", "apache-beam", "tfx-bsl", "pandas", "numpy", "pyarrow")


@contextlib.contextmanager
def scratch_dir(given: Optional[str], prefix: str) -> Iterator[str]:
    """The benchmark's working folder: `given` (created if needed, kept), or a new temporary folder
    removed at the end."""
    path = given or tempfile.mkdtemp(prefix=prefix)
    os.makedirs(path, exist_ok=True)
    try:
        yield path
    finally:
        if not given:
            shutil.rmtree(path, ignore_errors=True)


def run_parts(parts: Sequence[Tuple[str, Callable[[], str]]], skip: Iterable[str]) -> None:
    """Run each (name, function returning its report) not in `skip`, printing the report and how
    long it took under what load."""
    for name, run in parts:
        if name not in skip:
            start = time.perf_counter()
            print(f"\n{run()}\n({name}: {time.perf_counter() - start:.0f} s; load average "
                  f"{os.getloadavg()[0]:.2f})", flush=True)


def count_rows(path: Path) -> int:
    """Data rows of a CSV with a header line (its lines less one; a last line without a newline
    counts). Reading the whole file also leaves it in the page cache for the runs that follow."""
    lines, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(16 << 20):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines - 1 + (last != b"\n")


# ---------------------------------------------------------------------------------------------
# Measuring a command

def _tree(root: psutil.Process) -> List[psutil.Process]:
    try:
        return [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def sample_tree(root: psutil.Process, with_pss: bool, others: Sequence[psutil.Process] = (),
                cpu_seen: Optional[Dict[int, float]] = None) -> Tuple[int, int, int, int]:
    """(sum of RSS, sum of PSS, largest single RSS, number of processes) over root and its
    descendants, plus `others` and theirs, right now. A process that exits while being read is
    skipped. For the processes of `others`' trees, `cpu_seen` gets pid -> user + system CPU s."""
    rss_sum = pss_sum = biggest = count = 0
    trees = [(proc, False) for proc in _tree(root)]
    trees += [(proc, True) for other in others for proc in _tree(other)]
    for proc, outside in trees:
        try:
            if with_pss:
                info = proc.memory_full_info()
                pss_sum += info.pss
            else:
                info = proc.memory_info()
            if outside and cpu_seen is not None:
                times = proc.cpu_times()
                cpu_seen[proc.pid] = times.user + times.system
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
        rss_sum += info.rss
        biggest = max(biggest, info.rss)
        count += 1
    return rss_sum, pss_sum, biggest, count


def measure(cmd: Sequence[str], log_path: Path, interval: float = SAMPLE_INTERVAL_S, with_pss: bool = False,
            env: Optional[Mapping[str, str]] = None, others: Sequence[psutil.Process] = (),
            cwd: Optional[Path] = None) -> Dict:
    """Run `cmd` to completion (in `cwd`, default the repository; `env`, default this one's), its
    output and a first `$ cmd` line in `log_path`, sampling the memory of its process tree, and of
    `others` (processes it uses but did not start: a worker pool), every `interval` s.

    Returns wall_s (start to exit), peak_tree_rss (the largest sum of RSS over the trees),
    peak_tree_pss (likewise, read once a second; 0 unless `with_pss`), max_single_rss (the largest
    RSS of one process: samples or the kernel's ru_maxrss from wait4), max_procs, cpu_s (user +
    system of the process, the descendants it waited for and `others`' processes during the run),
    cpu_user_s and cpu_sys_s (the same split into user and system time; `others`' CPU, sampled as
    user + system together, counts as user), returncode, log (the path) and started_at (time.time()
    at start)."""
    with open(log_path, "wb") as log:
        log.write(("$ " + shlex.join(cmd) + "\n").encode())
        log.flush()
        started_at = time.time()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd or REPO_ROOT,
                                env=None if env is None else dict(env))
        root = psutil.Process(proc.pid)
        # A pidfd turns readable when the child exits: sleeping on it between samples does not
        # add up to one sampling period to the wall time.
        pidfd = os.pidfd_open(proc.pid) if hasattr(os, "pidfd_open") else None
        peak_rss = peak_pss = biggest = procs = 0
        # Reading PSS costs about 15 ms per TensorFlow process (smaps_rollup walks every mapping),
        # so it is read once a second, not at every sample: the sampler must not steal a core.
        pss_every, samples = max(1, round(PSS_PERIOD_S / interval)), 0
        cpu_seen: Dict[int, float] = {}  # CPU s of `others`' processes, which wait4 cannot see
        sample_tree(root, False, others, cpu_seen)
        cpu_before = sum(cpu_seen.values())  # a pool's start-up, before this run
        try:
            while True:
                # wait4 (not Popen.wait) gets the rusage of the child and its reaped descendants.
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                rss, pss, single, count = sample_tree(root, with_pss and samples % pss_every == 0,
                                                      others, cpu_seen)
                samples += 1
                peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
                biggest, procs = max(biggest, single), max(procs, count)
                if pidfd is None:
                    time.sleep(interval)
                else:
                    select.select([pidfd], [], [], interval)
        except BaseException:  # Ctrl-C: do not leave the measured tree running
            for child in reversed(_tree(root)):
                try:
                    child.kill()
                except psutil.Error:
                    pass
            raise
        finally:
            if pidfd is not None:
                os.close(pidfd)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu_user = usage.ru_utime + sum(cpu_seen.values()) - cpu_before  # `others`: user + system, as user
    return dict(wall_s=wall, peak_tree_rss=peak_rss, peak_tree_pss=peak_pss,
                max_single_rss=max(biggest, usage.ru_maxrss * 1024), max_procs=procs,
                cpu_s=cpu_user + usage.ru_stime, cpu_user_s=cpu_user, cpu_sys_s=usage.ru_stime,
                returncode=proc.returncode, log=str(log_path), started_at=started_at)


# ---------------------------------------------------------------------------------------------
# The machine

def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as `1.23, 0.98, 0.75`."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _versions() -> str:
    found = []
    for name in VERSIONED:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} -")
    return ", ".join(found)


def git_state() -> str:
    """The commit measured, and any uncommitted change to the code the benchmarks run."""
    def git(*cmd: str) -> str:
        try:  # --no-optional-locks: a read, which must not take the index lock from a commit
            return subprocess.run(["git", "--no-optional-locks", "-C", str(REPO_ROOT), *cmd], capture_output=True,
                                  text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    changed = [line[3:] for line in git("status", "--porcelain", "--", *CODE_PATHS).splitlines()]
    return commit + (f" + uncommitted changes in {', '.join(changed)}" if changed else " (clean)")


def machine_header() -> List[str]:
    """The lines every benchmark report starts with (Markdown list items): the machine (CPU, cores,
    RAM, OS, Python), the package versions, the commit measured and the load average now."""
    cores = psutil.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    mem = psutil.virtual_memory()
    return [
        f"- machine: {_cpu_model()}; {psutil.cpu_count(logical=False)} physical / {cores} logical cores "
        f"({usable} usable); RAM {mem.total / GiB:.1f} GiB ({mem.available / GiB:.1f} GiB free); "
        f"{platform.system()} {platform.release()}; Python {platform.python_version()}",
        f"- software: {_versions()}",
        f"- code: git {git_state()}",
        f"- load average at start (1, 5, 15 min): {load_average()}",
    ]
