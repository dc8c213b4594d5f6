"""Benchmark: predict as a Beam job (beam_jobs.predict) against the single-process engine it replaced
(trainer.predict at an earlier commit), side by side in one run, same model, same files.

    .venv/bin/python -m benchmarks.bench_predict_engines                      # one + kaggle-groups, tcn
    .venv/bin/python -m benchmarks.bench_predict_engines --sizes one,kaggle --models tcn --repeats 1
    .venv/bin/python -m benchmarks.bench_predict_engines --models lstm --lstm-rows 131072
    .venv/bin/python -m benchmarks.bench_predict_engines --test-seconds 8 --repeats 1   # smoke

The old engine runs from a `git worktree` of `--old` (default b846f50, the last commit with
trainer/predict.py) with this venv; the Beam job from this tree with its defaults (the local
runner: one SDK worker in this process). Test files and models are bench_predict's (its workdir
is shared: files made once). The tcn runs its sweep (--path auto), the lstm its windows; the
lstm runs on a time prefix of `--lstm-rows` rows of each file (every kept row keeps its window:
bench_predict.time_prefix), since its windowed predict of a Kaggle-size file takes hours.

Each (size, model) runs old, new, old, new, ... `--repeats` times; the table gives medians of wall
time (start to exit, imports and model loading included), rows/s (rows / wall) and peak RSS of
the whole process tree (0.2 s samples), and whether the two submissions are byte-identical.
Memory against group size: `one` has groups of about 92k rows, `kaggle-groups` of about 1M; the
Beam job holds a time block (--block-rows, 262,144 by default), the old engine a whole group.
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from benchmarks.bench_predict import SIZES, _env, make_model, python, subset_file, test_file
from benchmarks.bench_trainer import table
from benchmarks.common import GiB, REPO_ROOT, count_rows, load_average, machine_header, measure

DEFAULT_OLD = "b846f50"
HEADER = ["size", "model", "engine", "rows", "wall s (median)", "rows/s", "peak tree RSS GiB", "runs", "same bytes"]


def old_tree(workdir: Path, commit: str) -> Path:
    """A checkout of `commit` (git worktree, made once) to run the old engine from."""
    tree = workdir / f"engine-{commit}"
    if not (tree / "trainer" / "predict.py").exists():
        subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "add", "--force", "--detach", str(tree), commit],
                       check=True, stdout=subprocess.DEVNULL)
    return tree


def run_engine(engine: str, tree: Optional[Path], model: Path, csv: Path, output: Path, log: Path) -> Dict:
    module = "trainer.predict" if engine == "old" else "beam_jobs.predict"
    env = _env() if tree is None else {**_env(), "PYTHONPATH": str(tree)}
    cmd = python("-m", module, "--model-dir", str(model), "--input", str(csv), "--output", str(output),
                 "--progress", "none")
    result = measure(cmd, log, env=env, cwd=tree)  # the old tree's packages, not this one's
    if result["returncode"]:
        raise SystemExit(f"{engine} failed (exit {result['returncode']}); see {log}")
    return result


def compare(workdir: Path, size: str, kind: str, csv: Path, tree: Path, repeats: int) -> List[List[str]]:
    model = make_model(workdir, "23", kind)
    rows = count_rows(csv)
    runs: Dict[str, List[Dict]] = {"old": [], "new": []}
    outputs = {e: workdir / "subs" / f"engines-{size}-{kind}-{e}.csv" for e in runs}
    outputs["old"].parent.mkdir(parents=True, exist_ok=True)
    for turn in range(repeats):
        for engine in runs:
            log = workdir / "logs" / f"engines-{size}-{kind}-{engine}-{turn}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            print(f"running {size} {kind} {engine} ({turn + 1}/{repeats}) ...", flush=True)
            runs[engine].append(run_engine(engine, tree if engine == "old" else None, model, csv,
                                           outputs[engine], log))
            print(f"  {runs[engine][-1]['wall_s']:.1f} s", flush=True)
    same = outputs["old"].read_bytes() == outputs["new"].read_bytes()
    lines = []
    for engine, label in (("old", f"trainer.predict ({tree.name.split('-', 1)[1]})"), ("new", "beam_jobs.predict")):
        wall = statistics.median(r["wall_s"] for r in runs[engine])
        rss = statistics.median(r["peak_tree_rss"] for r in runs[engine])
        lines.append([size, kind, label, f"{rows:,}", f"{wall:.1f}", f"{rows / wall:,.0f}", f"{rss / GiB:.2f}",
                      str(len(runs[engine])), "yes" if same else "NO"])
    return lines


def _parse_args(argv: Optional[Sequence[str]]):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_predict_engines",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="/tmp/bench-predict", help="bench_predict's workdir (shared)")
    parser.add_argument("--old", default=DEFAULT_OLD, help=f"commit of the old engine (default {DEFAULT_OLD})")
    parser.add_argument("--sizes", default="one,kaggle-groups", help=f"from {','.join(SIZES)}")
    parser.add_argument("--models", default="tcn", help="tcn (sweep) and/or lstm (windows)")
    parser.add_argument("--lstm-rows", type=int, default=131_072,
                        help="the lstm runs on a time prefix of this many rows of each file (0: all)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each engine, alternated (default 3)")
    parser.add_argument("--test-seconds", type=float, default=None, help="tiny files (smoke runs)")
    args = parser.parse_args(argv)
    args.sizes = [s for s in args.sizes.split(",") if s]
    args.models = [m for m in args.models.split(",") if m]
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    header, started = machine_header(), time.perf_counter()
    tree = old_tree(workdir, args.old)
    rows = []
    for size in args.sizes:
        csv = test_file(workdir, size, args.test_seconds)
        for kind in args.models:
            part = subset_file(workdir, csv, args.lstm_rows) if kind == "lstm" and args.lstm_rows else csv
            rows += compare(workdir, size, kind, part, tree, args.repeats)
    report = "\n".join(["# bench_predict_engines", *header, f"- load average at end (1, 5, 15 min): {load_average()}",
                        f"- models: bench_predict's (23 signals, W=256, one epoch); total "
                        f"{time.perf_counter() - started:.0f} s", "",
                        table("predict: the single-process engine vs the Beam job", HEADER, rows)])
    print("\n" + report)
    (workdir / "results-engines.md").write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
