"""Benchmark: `crewstream preprocess` (Beam + tf.Transform) against the in-memory pandas/numpy way.

Measures, side by side in one run, on the same CSV and flags:

    inmemory  python -m benchmarks.inmemory_reference ...   (pd.read_csv, numpy windows,
              tf.train.Example built in Python, tf.io.TFRecordWriter; see inmemory_reference.py)
    beam1     python -m beam_jobs.preprocess ...             (FnApiRunner, 1 worker, the default)
    beam2mp   python -m beam_jobs.preprocess ... --direct_num_workers 2 --direct_running_mode multi_processing

and, on request (--variants):

    inmemory-tolist  the reference building each FloatList from `window.ravel().tolist()` rather
              than from the ndarray, the fastest pure-Python way; it shows how much of the
              baseline's time is that one idiom;
    portable1 python -m beam_jobs.preprocess ... --runner PortableRunner --job_endpoint embed
              --environment_type EXTERNAL --environment_config localhost:PORT
              (Beam's portability layer: the job goes through the embedded job service to an
              SDK worker that a worker pool started; that service always asks for one worker);
    portable2 python -m beam_jobs.preprocess ... --environment_type EXTERNAL
              --environment_config localhost:PORT --direct_num_workers 2
              (the FnApiRunner with two SDK workers from the same kind of pool);
    beam1-seq, beam2mp-seq  beam1 and beam2mp with --layout sequence --chunk-rows C (
              each row stored about once; compare with beam1 / beam2mp, the windows layout).

For the portable variants the script starts a worker pool
(`python -m apache_beam.runners.worker.worker_pool_main`, this interpreter first on PATH) before
the run and stops it after; the pool and its workers are measured with the run (their memory in
every sample, their CPU from per-process samples, since the pool never reaps its workers).

Each variant runs as its own subprocess, one after the other (never two at once), with its output
folder under --workdir removed before and after the run. For each run the script records:

- wall time, from process start to exit (imports included), and rows/s = CSV data rows / wall;
- peak tree RSS: every --interval seconds (default 0.2) the sum of RSS over the process and all
  its descendants; the maximum of those sums. RSS counts a shared page in every process that
  maps it, so this sum over-states what several processes really hold together; peak tree PSS (proportional set
  size: shared pages divided among their users, read once a second because it is costly) is
  reported next to it as the fairer total;
- max single RSS: the largest RSS of any one process of the tree (the larger of the sampled value
  and the kernel's own high-water mark, ru_maxrss from wait4);
- CPU s: user + system CPU time of the process and every descendant it waited for (wait4);
- windows per split, read back from the output (stats.json / summary.json): every variant must
  produce the same counts, and the script exits 1 when they differ (a sequence-layout folder's
  stats.json counts the windows of its W and stride, which a reader cuts from its chunks);
- shard bytes: the size of the output's train/ and eval/ shards, and that size over the float32
  size of the input's signals (data rows x features x 4 bytes).

Variants run interleaved (repeat 1 of every variant, then repeat 2, ...) so slow drift in a shared
machine's load hits them alike; the table shows medians over --repeats. The CSV is read once
before the first run, so every run starts with it in the page cache.

Usage (from the repository root, in the project's virtualenv):

    # a generated input: CREWS:SECONDS (seconds per crew, seat and experiment; 256 rows each),
    # or `kaggle` = 1,2,3,4,5,6,7,8,13:352 (about 4.87M rows, the size of Kaggle's train.csv)
    python -m benchmarks.bench_preprocess --generate 1,2,3:60 --check
    python -m benchmarks.bench_preprocess --generate kaggle --repeats 3

    # the two layouts: bytes on disk, wall time, peak memory
    python -m benchmarks.bench_preprocess --generate kaggle --variants beam1,beam1-seq --repeats 3

    # an existing file
    python -m benchmarks.bench_preprocess --input train.csv --features r,ecg,gsr --repeats 3

--check (meant for small inputs: it holds both outputs in memory) keeps each variant's first
output and compares every Beam output with the reference's: same (crew, seat, experiment,
end_time) keys per split, same labels, window values within 1e-5. See benchmarks/README.md.
"""

import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import psutil

from benchmarks.common import GiB, SAMPLE_INTERVAL_S, count_rows, machine_header, measure
from tfrecords_schema import csv_columns, sequence, output_folder

KAGGLE = "1,2,3,4,5,6,7,8,13:352"
VARIANTS = {
    "inmemory": "in-memory pandas/numpy reference",
    "inmemory-tolist": "in-memory reference, FloatList from .tolist()",
    "beam1": "Beam job, 1 worker (default)",
    "beam2mp": "Beam job, 2 workers, multi_processing",
    "portable1": "Beam job, PortableRunner (embedded job service), 1 pool worker",
    "portable2": "Beam job, FnApiRunner, 2 pool workers (EXTERNAL)",
    "beam1-seq": "Beam job, 1 worker, --layout sequence",
    "beam2mp-seq": "Beam job, 2 workers, multi_processing, --layout sequence",
}
DEFAULT_VARIANTS = ("inmemory", "beam1", "beam2mp")
POOL = "{pool}"  # replaced by the worker pool's localhost:PORT
BEAM_EXTRA = {
    "beam1": [],
    "beam2mp": ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"],
    "portable1": ["--runner", "PortableRunner", "--job_endpoint", "embed",
                  "--environment_type", "EXTERNAL", "--environment_config", POOL],
    "portable2": ["--environment_type", "EXTERNAL", "--environment_config", POOL, "--direct_num_workers", "2"],
    "beam1-seq": ["--layout", "sequence"],
    "beam2mp-seq": ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing", "--layout", "sequence"],
}
SEQUENCE_VARIANTS = ("beam1-seq", "beam2mp-seq")
POOL_START_TIMEOUT_S = 120
CHECK_ATOL = 1e-5


@dataclass
class Run:
    """One measured subprocess: common.measure's numbers, then what its output says."""

    variant: str
    repeat: int
    wall_s: float
    peak_tree_rss: int
    peak_tree_pss: int
    max_single_rss: int
    max_procs: int
    cpu_s: float
    returncode: int
    log: str
    started_at: float
    windows: Dict[str, int] = field(default_factory=dict)
    shard_bytes: int = 0
    phases: List[Dict] = field(default_factory=list)
    phases_started_at: float = 0.0


class WorkerPool:
    """`python -m apache_beam.runners.worker.worker_pool_main` on a free port, for the portable
    variants: started (and listening) on entry, stopped with the workers it started on exit. It
    starts workers with a bare `python`, so this interpreter's folder goes first on PATH."""

    def __init__(self, log_path: Path, env: Dict[str, str]):
        self._log_path = log_path
        self._env = dict(env, PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""))
        self.endpoint = ""
        self.process: Optional[psutil.Process] = None
        self._popen: Optional[subprocess.Popen] = None

    def __enter__(self) -> "WorkerPool":
        with socket.socket() as s:
            s.bind(("localhost", 0))
            port = s.getsockname()[1]
        with open(self._log_path, "wb") as log:
            self._popen = subprocess.Popen(
                [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", "--service_port", str(port)],
                stdout=log, stderr=subprocess.STDOUT, cwd=self._log_path.parent, env=self._env,
                start_new_session=True)
        self.process = psutil.Process(self._popen.pid)
        deadline = time.monotonic() + POOL_START_TIMEOUT_S
        while True:
            try:
                socket.create_connection(("localhost", port), timeout=1).close()
                break
            except OSError:
                if self._popen.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise SystemExit(f"the worker pool did not start: see {self._log_path}") from None
                time.sleep(0.2)
        self.endpoint = f"localhost:{port}"
        return self

    def __exit__(self, *exc) -> None:
        # SIGTERM to the pool's own session: the pool and any worker still alive.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self._popen.pid, sig)
                self._popen.wait(timeout=20)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue


# ---------------------------------------------------------------------------------------------
# Input

def parse_spec(spec: str) -> Tuple[List[int], float]:
    """`1,2,3:60` -> ([1, 2, 3], 60.0); `kaggle` -> the nine Kaggle crews, 352 s."""
    text = KAGGLE if spec.strip().lower() == "kaggle" else spec
    try:
        crews_text, seconds_text = text.split(":")
        crews = [int(c) for c in crews_text.split(",") if c.strip()]
        seconds = float(seconds_text)
    except ValueError:
        raise SystemExit(f"--generate {spec!r}: expected CREWS:SECONDS such as 1,2,3:60, or kaggle") from None
    if not crews or seconds <= 0:
        raise SystemExit(f"--generate {spec!r}: need at least one crew and seconds > 0")
    return crews, seconds


def generate_input(spec: str, workdir: Path) -> Path:
    """Write (or reuse) workdir/data/synth-CREWS-SECONDSs/train.csv with crewstream.synth."""
    crews, seconds = parse_spec(spec)
    folder = workdir / "data" / f"synth-{'_'.join(map(str, crews))}-{seconds:g}s"
    done = folder / ".complete"
    if done.exists():
        print(f"reusing {folder / 'train.csv'} (generated earlier)", file=sys.stderr)
        return folder / "train.csv"
    try:
        from crewstream import synth
    except ImportError:
        raise SystemExit("crewstream.synth is not available: pass an existing CSV with --input") from None
    print(f"generating crews {crews} x {seconds:g} s into {folder} ...", file=sys.stderr)
    t0 = time.perf_counter()
    shutil.rmtree(folder, ignore_errors=True)
    # test_seconds is only shortened because the benchmark never reads test.csv.
    result = synth.generate(str(folder), crews=crews, seconds=seconds, seed=0, test_seconds=1.0)
    done.write_text(json.dumps(result) + "\n")
    print(f"generated {result['train']['rows']:,} rows in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return folder / "train.csv"


# ---------------------------------------------------------------------------------------------
# Variants

def variant_command(variant: str, args, csv: Path, out: Path, pool: str = "localhost:PORT") -> List[str]:
    common = ["--input", str(csv), "--output", str(out)]
    if list(args.features) != list(csv_columns.SIGNALS):  # both default to all 23 in file order
        common += ["--features", ",".join(args.features)]
    common += ["--window", str(args.window), "--stride", str(args.stride),
              "--eval-crews", ",".join(map(str, args.eval_crews)), "--num-shards", str(args.num_shards)]
    if variant.startswith("inmemory"):
        extra = ["--tolist"] if variant == "inmemory-tolist" else []
        return [sys.executable, "-m", "benchmarks.inmemory_reference"] + common + extra
    extra = [pool if flag == POOL else flag for flag in BEAM_EXTRA[variant]]
    if variant in SEQUENCE_VARIANTS:
        extra += ["--chunk-rows", str(args.chunk_rows)]
    return [sys.executable, "-m", "beam_jobs.preprocess"] + common + extra


def read_written(variant: str, out: Path) -> Dict:
    """The run's stats.json (Beam) or summary.json (reference); {} when absent."""
    name = "summary.json" if variant.startswith("inmemory") else output_folder.STATS_FILE
    try:
        with open(out / name) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def shard_bytes(out: Path) -> int:
    """Bytes of the shards in OUT/train and OUT/eval."""
    return sum(f.stat().st_size for split in output_folder.SPLITS if (out / split).is_dir()
               for f in (out / split).iterdir() if f.is_file())


def run_variant(variant: str, repeat: int, args, csv: Path, env: Dict[str, str], keep_as: Optional[Path]) -> Run:
    out = args.workdir / "out" / variant
    shutil.rmtree(out, ignore_errors=True)
    log_path = args.workdir / "logs" / f"{variant}-{repeat}.log"
    if POOL in BEAM_EXTRA.get(variant, []):
        with WorkerPool(args.workdir / "logs" / f"{variant}-{repeat}-pool.log", env) as pool:
            cmd = variant_command(variant, args, csv, out, pool.endpoint)
            print(f"[{repeat}/{args.repeats}] {variant}: {shlex.join(cmd)}", file=sys.stderr)
            numbers = measure(cmd, log_path, args.interval, not args.no_pss, env, [pool.process])
    else:
        cmd = variant_command(variant, args, csv, out)
        print(f"[{repeat}/{args.repeats}] {variant}: {shlex.join(cmd)}", file=sys.stderr)
        numbers = measure(cmd, log_path, args.interval, not args.no_pss, env)
    run = Run(variant, repeat, **numbers)
    run.shard_bytes = shard_bytes(out)
    written = read_written(variant, out)
    if written:
        run.windows = {split: written["splits"][split]["num_windows"] for split in output_folder.splits_of(written)}
        run.phases = written.get("phases", [])
        run.phases_started_at = written.get("started_at", run.started_at)
    status = "ok" if run.returncode == 0 else f"FAILED (exit {run.returncode}, see {log_path})"
    print(f"    {run.wall_s:.1f} s, peak tree RSS {run.peak_tree_rss / GiB:.2f} GiB, {status}", file=sys.stderr)
    if keep_as is not None and run.returncode == 0:
        shutil.rmtree(keep_as, ignore_errors=True)
        keep_as.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(out), str(keep_as))
    elif not args.keep_outputs:
        shutil.rmtree(out, ignore_errors=True)
    return run


# ---------------------------------------------------------------------------------------------
# Report

def _gib(n: float) -> str:
    return f"{n / GiB:.2f}"


def summarize(variant: str, runs: List[Run], rows: int, num_features: int) -> List[str]:
    """One table row: medians over the variant's successful runs."""
    ok = [r for r in runs if r.returncode == 0]
    if not ok:
        return [VARIANTS[variant], "failed"] + [""] * (len(HEADER) - 2)

    def med(attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in ok)

    walls = [r.wall_s for r in ok]
    windows = ok[-1].windows
    return [
        VARIANTS[variant] + (f" ({len(runs) - len(ok)} failed)" if len(ok) < len(runs) else ""),
        f"{med('wall_s'):.1f}",
        f"{min(walls):.1f}-{max(walls):.1f}",
        f"{rows / med('wall_s'):,.0f}",
        _gib(med("peak_tree_rss")),
        _gib(med("peak_tree_pss")) if med("peak_tree_pss") else "-",
        _gib(med("max_single_rss")),
        f"{med('max_procs'):.0f}",
        f"{med('cpu_s'):.1f}",
        f"{windows.get(output_folder.TRAIN, '?'):,} / {windows.get(output_folder.EVAL, '?'):,}" if windows else "?",
        _gib(ok[-1].shard_bytes),
        f"{ok[-1].shard_bytes / (rows * num_features * 4):.3f}",
    ]


HEADER = ["variant", "wall s (median)", "wall s (min-max)", "rows/s", "peak tree RSS GiB",
          "peak tree PSS GiB", "max single RSS GiB", "procs", "CPU s", "windows train / eval",
          "shards GiB", "shards / float32 signals"]


def markdown_table(header: List[str], body: List[List[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ (\S+): (.*)$")
_MARKERS = [
    (re.compile(r"^preprocess \d+ file"), "arguments parsed, pipeline starts (after imports)"),
    (re.compile(r": done, [\d,]+ rows read"), "a CSV pass done"),
    (re.compile(r"rows -> [\d,]+ windows"), "group windowed"),
    (re.compile(r"^wrote .*stats\.json"), "stats.json written"),
]


def job_timeline(run: Run) -> List[str]:
    """Milestones of a Beam run from its own log lines, in seconds after the process started."""
    events: List[Tuple[float, str]] = []
    try:
        text = Path(run.log).read_text(errors="replace")
    except OSError:
        return []
    for line in text.splitlines():
        m = _LOG_LINE.match(line)
        if not m:
            continue
        stamp = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        for pattern, label in _MARKERS:
            if pattern.search(m.group(3)):
                events.append((stamp - run.started_at, label))
    lines: List[str] = []
    windowed = [i for i, (_, label) in enumerate(events) if label == "group windowed"]
    for i, (t, label) in enumerate(events):
        if i in windowed[1:-1]:
            continue
        if windowed and i == windowed[0]:
            label = f"first of {len(windowed)} groups windowed"
        elif windowed and i == windowed[-1]:
            label = "last group windowed"
        lines.append(f"{t:7.1f} s  {label}")
    lines.append(f"{run.wall_s:7.1f} s  process exit")
    return lines


def reference_phases(run: Run) -> List[str]:
    """The reference's own phase log (summary.json), with start-up and exit around it."""
    if not run.phases:
        return []
    startup = run.phases_started_at - run.started_at
    lines = [f"{'start-up (python, pandas)':<26} {startup:7.1f} s"]
    for p in run.phases:
        lines.append(f"{p['name']:<26} {p['seconds']:7.1f} s   rss after {p['rss_bytes'] / GiB:5.2f} GiB")
    rest = run.wall_s - startup - sum(p["seconds"] for p in run.phases)
    lines.append(f"{'summary, exit':<26} {rest:7.1f} s")
    return lines


# ---------------------------------------------------------------------------------------------
# Main

def _parse_args(argv: Optional[Sequence[str]]):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_preprocess",
        description="Wall time, rows/s and peak memory of the whole process tree: the in-memory "
                    "pandas/numpy way vs `crewstream preprocess` with 1 and 2 workers.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", type=Path, help="an existing train CSV")
    source.add_argument("--generate", metavar="CREWS:SECONDS",
                        help=f"generate a synth CSV first (cached under WORKDIR/data): e.g. 1,2,3:60, "
                             f"or `kaggle` = {KAGGLE} (about 4.87M rows)")
    parser.add_argument("--features", default="all",
                        help="comma-separated signal columns, or `all` (default: all 23)")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--stride", type=int, default=32)
    parser.add_argument("--eval-crews", default="2", help="comma-separated eval crews (default 2)")
    parser.add_argument("--num-shards", type=int, default=8, help="shards per split, every variant (default 8)")
    parser.add_argument("--chunk-rows", type=int, default=sequence.DEFAULT_CHUNK_ROWS,
                        help=f"--chunk-rows of the sequence-layout variants (default {sequence.DEFAULT_CHUNK_ROWS}, "
                             "preprocess's)")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help=f"comma-separated subset of {','.join(VARIANTS)} "
                             f"(default: {','.join(DEFAULT_VARIANTS)})")
    parser.add_argument("--repeats", type=int, default=1, help="runs per variant; medians are reported")
    parser.add_argument("--interval", type=float, default=SAMPLE_INTERVAL_S,
                        help=f"memory sampling period, s (default {SAMPLE_INTERVAL_S})")
    parser.add_argument("--no-pss", action="store_true", help="sample RSS only (PSS reads smaps_rollup)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-preprocess"),
                        help="outputs, logs and generated data (default /tmp/bench-preprocess)")
    parser.add_argument("--keep-outputs", action="store_true", help="keep the last run's output folders")
    parser.add_argument("--check", action="store_true",
                        help="compare every Beam output with the reference's (small inputs only)")
    args = parser.parse_args(argv)
    args.features = list(csv_columns.SIGNALS) if args.features.strip() == "all" else \
        [f.strip() for f in args.features.split(",") if f.strip()]
    unknown = [f for f in args.features if f not in csv_columns.SIGNALS]
    if unknown or not args.features:
        parser.error(f"--features: unknown {unknown}; choose from {','.join(csv_columns.SIGNALS)} or all")
    args.eval_crews = [int(c) for c in args.eval_crews.split(",") if c.strip()]
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not args.variants or any(v not in VARIANTS for v in args.variants):
        parser.error(f"--variants: choose from {','.join(VARIANTS)}")
    if args.check and "inmemory" not in args.variants:
        parser.error("--check needs the inmemory variant")
    if args.repeats < 1 or args.interval <= 0:
        parser.error("--repeats must be >= 1 and --interval > 0")
    args.workdir = args.workdir.resolve()
    return args


def check_outputs(args, variants: List[str]) -> List[str]:
    """Compare the kept first outputs; returns report lines (and problems, prefixed MISMATCH)."""
    from benchmarks.inmemory_reference import compare_outputs

    reference = args.workdir / "check" / "inmemory"
    lines = []
    for variant in variants:
        if variant not in BEAM_EXTRA:
            continue
        if variant in SEQUENCE_VARIANTS:
            lines.append(f"- {variant}: not compared here (chunk records; tests/beam_jobs/test_sequences.py "
                         "compares the windows cut from them with the windows layout's)")
            continue
        job = args.workdir / "check" / variant
        if not job.exists() or not reference.exists():
            lines.append(f"- {variant}: MISMATCH: no output to compare (a run failed)")
            continue
        problems, details = compare_outputs(str(reference), str(job), atol=CHECK_ATOL)
        found = "; ".join(f"{split} {d['windows']:,} windows, max |diff| {d['max_abs_diff']:.2g}"
                          for split, d in details.items())
        if problems:
            lines += [f"- {variant}: MISMATCH: {p}" for p in problems]
        else:
            lines.append(f"- {variant}: same keys, labels and values (atol {CHECK_ATOL}) as the reference: {found}")
    return lines


def print_report(args, argv: Sequence[str], csv: Path, rows: int, header: List[str],
                 runs: Dict[str, List[Run]]) -> bool:
    """The Markdown report on stdout; returns False when the variants disagree on window counts."""
    command = shlex.join([sys.executable, "-m", "benchmarks.bench_preprocess", *argv])
    print(f"## preprocess benchmark: {csv.name}, {rows:,} rows, {csv.stat().st_size / GiB:.2f} GiB, "
          f"{len(args.features)} feature(s), W={args.window}, stride={args.stride}, "
          f"eval crews {','.join(map(str, args.eval_crews)) or '-'}, {args.num_shards} shard(s)/split\n")
    print("\n".join(header))
    print(f"- benchmark command: {command}")
    print(f"- input: {csv}")
    print(f"- repeats: {args.repeats} per variant, interleaved; memory sampled every {args.interval} s; "
          f"logs in {args.workdir / 'logs'}\n")
    print(markdown_table(HEADER, [summarize(v, runs[v], rows, len(args.features)) for v in args.variants]))
    print("\nCommands (cwd = repository root):")
    for v in args.variants:
        print(f"- {v}: `{shlex.join(variant_command(v, args, csv, args.workdir / 'out' / v))}`")
    if any(POOL in BEAM_EXTRA.get(v, []) for v in args.variants):
        print(f"- worker pool of the portable variants, started before and stopped after each of their runs, "
              f"measured with it: `PATH={os.path.dirname(sys.executable)}:$PATH python -m "
              f"apache_beam.runners.worker.worker_pool_main --service_port PORT`")

    counts = {json.dumps(r.windows, sort_keys=True) for rs in runs.values() for r in rs if r.windows}
    if len(counts) > 1:
        print(f"\nMISMATCH: window counts differ between runs: {sorted(counts)}")

    for v in args.variants:
        if v.startswith("inmemory") and runs[v][-1].phases:
            print(f"\nWhere {v} spends its time (its own phase log, last repeat):")
            print("```\n" + "\n".join(reference_phases(runs[v][-1])) + "\n```")
    for v in args.variants:
        if v in BEAM_EXTRA and runs[v][-1].returncode == 0:
            print(f"\nTimeline of {v} from its log (last repeat):")
            print("```\n" + "\n".join(job_timeline(runs[v][-1])) + "\n```")
    return len(counts) <= 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # for the runs and for --check's own reading
    for sub in ("out", "logs", "check"):
        shutil.rmtree(args.workdir / sub, ignore_errors=True)
    (args.workdir / "logs").mkdir(parents=True, exist_ok=True)
    csv = args.input.resolve() if args.input else generate_input(args.generate, args.workdir)
    if not csv.exists():
        raise SystemExit(f"{csv}: no such file")
    rows = count_rows(csv)
    header = machine_header()  # the load average before our own runs

    runs: Dict[str, List[Run]] = {v: [] for v in args.variants}
    for repeat in range(1, args.repeats + 1):
        for variant in args.variants:
            keep = args.workdir / "check" / variant if args.check and repeat == 1 else None
            runs[variant].append(run_variant(variant, repeat, args, csv, dict(os.environ), keep))

    counts_agree = print_report(args, argv, csv, rows, header, runs)
    check_passed = True
    if args.check:
        lines = check_outputs(args, args.variants)
        print("\nCheck (outputs of repeat 1 parsed with tfrecords_schema.parse_examples):")
        print("\n".join(lines))
        check_passed = not any("MISMATCH" in line for line in lines)
        if not args.keep_outputs:
            shutil.rmtree(args.workdir / "check", ignore_errors=True)
    failed = any(r.returncode != 0 for rs in runs.values() for r in rs)
    return 0 if counts_agree and check_passed and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
