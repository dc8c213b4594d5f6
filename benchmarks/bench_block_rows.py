"""Benchmark: peak memory of the preprocess job's worker against `--block-rows`.

A recording (crew, seat, experiment) is cut into time blocks of at most `--block-rows` rows, so
memory per worker must follow the block size, not the recording's size. This
runs `python -m beam_jobs.preprocess` (beam1: the FnApiRunner, one worker, in one process) on the
same CSV once per --block-rows value, one run after the other, and records for each:

- wall time (process start to exit) and rows/s;
- peak RSS of the process tree: every --interval seconds the sum of RSS over the process and its
  descendants (beam1 is one process, so this is the worker's), and the RSS of the largest process
  (the larger of its samples and the kernel's high-water mark, ru_maxrss from wait4);
- the windows per split from stats.json, and whether the shards and stats.json are byte-identical
  to the first run's (they must be: the output does not depend on --block-rows). Each output is
  hashed and removed after its run, so only one is on disk at a time.

Usage (from the repository root, in the project's virtualenv):

    # groups of ~1M rows like Kaggle's test flights: 1 crew x 3,899 s x 256 Hz per (seat, experiment)
    python -m benchmarks.bench_block_rows --generate 1:3899 --block-rows 1073741824,262144,65536

    python -m benchmarks.bench_block_rows --input train.csv --features r,ecg,gsr

A --block-rows larger than any group (1073741824) keeps each group in one block: the job as it
was before blocks, for comparison.
"""

import argparse
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from benchmarks.common import GiB, REPO_ROOT, SAMPLE_INTERVAL_S, count_rows, load_average, machine_header, measure

DEFAULT_BLOCK_ROWS = 1 << 18


def generate(spec: str, workdir: Path) -> Path:
    """CREWS:SECONDS -> a `crewstream synth` train.csv under workdir (reused when present)."""
    crews, seconds = spec.split(":")
    out = workdir / f"synth-{crews.replace(',', '_')}-{seconds}"
    if not (out / "train.csv").exists():
        subprocess.run([sys.executable, "-m", "crewstream.cli", "synth", "--out", str(out), "--crews", crews,
                        "--seconds", seconds, "--test-seconds", "1"], check=True, cwd=REPO_ROOT)
    return out / "train.csv"


def fingerprint(out: Path) -> Dict[str, str]:
    """sha256 of stats.json and every shard under out."""
    found = {}
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out).as_posix()
        if path.is_file() and (rel == "stats.json" or rel.split("/")[0] in ("train", "eval")):
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def windows_of(out: Path) -> str:
    import json

    stats = json.loads((out / "stats.json").read_text())
    return " / ".join(f"{stats['splits'][s]['num_windows']:,}" for s in ("train", "eval"))


def _parse_args(argv: Optional[Sequence[str]]):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_block_rows", description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="an existing train CSV")
    source.add_argument("--generate", help="CREWS:SECONDS for `crewstream synth` (e.g. 1:3899)")
    parser.add_argument("--block-rows", default=f"{DEFAULT_BLOCK_ROWS},{DEFAULT_BLOCK_ROWS // 4}",
                        help="comma-separated --block-rows values, one run each (default: the job's default "
                             "and 4x smaller)")
    parser.add_argument("--features", default=None, help="--features for the job (default: all 23)")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--stride", type=int, default=32)
    parser.add_argument("--num-shards", type=int, default=8)
    parser.add_argument("--interval", type=float, default=SAMPLE_INTERVAL_S, help="seconds between memory samples")
    parser.add_argument("--workdir", default="/tmp/bench_block_rows")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parse_args(argv)
    workdir = Path(args.workdir).resolve()
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    csv = Path(args.input).resolve() if args.input else generate(args.generate, workdir)
    rows = count_rows(csv)
    header = machine_header()  # the load average before our own runs
    body: List[str] = []
    first: Optional[Dict[str, str]] = None
    ok = True
    for block_rows in [int(x) for x in args.block_rows.split(",")]:
        out = workdir / f"out-{block_rows}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "beam_jobs.preprocess", "--input", str(csv), "--output", str(out),
               "--window", str(args.window), "--stride", str(args.stride), "--eval-crews", "2",
               "--num-shards", str(args.num_shards), "--block-rows", str(block_rows)]
        if args.features:
            cmd += ["--features", args.features]
        print("$ " + " ".join(cmd), file=sys.stderr)
        run = measure(cmd, workdir / "logs" / f"block-rows-{block_rows}.log", args.interval)
        if run["returncode"] != 0:
            print(f"  failed ({run['returncode']}): see {workdir / 'logs'}", file=sys.stderr)
            ok = False
            continue
        prints = fingerprint(out)
        first = first if first is not None else prints
        same = "yes" if prints == first else "NO"
        ok &= prints == first
        body.append(f"| {block_rows:,} | {run['wall_s']:.1f} | {rows / run['wall_s']:,.0f} | "
                    f"{run['peak_tree_rss'] / GiB:.2f} | {run['max_single_rss'] / GiB:.2f} | {windows_of(out)} | "
                    f"{same} |")
        shutil.rmtree(out, ignore_errors=True)
        print("  " + body[-1], file=sys.stderr)
    print(f"## --block-rows and peak memory: {csv.name}, {rows:,} rows, {csv.stat().st_size / GiB:.2f} GiB, "
          f"W={args.window}, stride={args.stride}, beam1 (FnApiRunner, 1 worker)\n")
    print("\n".join(header))
    print(f"- load average at end (1, 5, 15 min): {load_average()}")
    print("\n| --block-rows | wall s | rows/s | peak tree RSS GiB | max single RSS GiB | windows train / eval "
          "| shards + stats.json identical to the first run |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(body))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
