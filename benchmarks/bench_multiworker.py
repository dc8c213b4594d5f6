"""Training throughput on 1 and 2 workers: `crewstream train --strategy multiworker` on loopback.

    .venv/bin/python -m benchmarks.bench_multiworker                  # synth sample, made here
    .venv/bin/python -m benchmarks.bench_multiworker --data OUT       # an existing preprocess output
    .venv/bin/python -m benchmarks.bench_multiworker --seconds 120 --epochs 4 --repeats 2

Variants, each a fresh set of processes running trainer.train (the `crewstream train` path), one
variant after the other, never two at once:

    default   1 process, --strategy default
    mw1       1 process, --strategy multiworker, TF_CONFIG of a 1-worker cluster (the collective
              all-reduce path, nothing to reduce with)
    mw2       2 processes, --strategy multiworker, TF_CONFIG of 2 workers on localhost: the
              shards are split by file, each step trains --batch-size windows over both

Measured: the seconds of epochs 2..E as the chief's epoch callbacks see them (epoch 1 traces the
graphs and is left out); training windows/s = train windows x timed epochs / those seconds. The
benchmark trains on a copy of OUT whose eval split is emptied (hard links, stats.json rewritten),
so no validation pass is timed. "wall s" is each process's whole life: TensorFlow import, the
cluster start, every epoch and the serving export. Repeats are interleaved (every variant once,
then again) and the table shows medians.

All processes share this machine's cores: on a 2-core machine, two workers each get about one
core, so the 2-worker row shows the cost of the collective path, not a speed-up; a real cluster
gives each worker its own machine.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Sequence

from benchmarks.bench_trainer import add_sample_args, make_sample, table
from benchmarks.common import REPO_ROOT, load_average, machine_header, scratch_dir
from tfrecords_schema import read_stats, write_stats, output_folder

VARIANTS = {
    "default": (1, "1 process, --strategy default"),
    "mw1": (1, "1 worker, --strategy multiworker"),
    "mw2": (2, "2 workers, --strategy multiworker (loopback)"),
}


# --- the child: one training process -------------------------------------------------------------

def child(spec: Dict) -> Dict:
    """Train as `crewstream train` would with spec["argv"]; return the epoch timings."""
    from trainer import model as model_lib, task, train

    begins: Dict[int, float] = {}
    ends: Dict[int, float] = {}
    timer = model_lib.epoch_callback(
        on_epoch_begin=lambda epoch, logs: begins.__setitem__(epoch, time.perf_counter()),
        on_epoch_end=lambda epoch, logs: ends.__setitem__(epoch, time.perf_counter()))
    result = train.train(task.config_from_argv(spec["argv"]), extra_callbacks=[timer])
    return {"chief": result["chief"], "epoch_s": [ends[e] - begins[e] for e in sorted(ends)],
            "loss": result["history"]["loss"]}


# --- the parent ----------------------------------------------------------------------------------

def without_eval(out: str, dst: str) -> str:
    """A copy of OUT (train shards hard-linked) whose eval split is empty: fit validates nothing."""
    shutil.rmtree(dst, ignore_errors=True)
    stats = read_stats(out)
    for shard in stats["splits"][output_folder.TRAIN]["shards"]:
        os.makedirs(os.path.dirname(os.path.join(dst, shard["file"])), exist_ok=True)
        os.link(os.path.join(out, shard["file"]), os.path.join(dst, shard["file"]))
    stats["splits"][output_folder.EVAL].update(num_windows=0, shards=[],  # its rows stay counted
                                        class_counts={k: 0 for k in stats["label_vocabulary"]})
    for name in (output_folder.TRANSFORM_FN_DIR, output_folder.TRANSFORMED_METADATA_DIR):
        shutil.copytree(os.path.join(out, name), os.path.join(dst, name))
    write_stats(dst, stats)
    return dst


def free_ports(n: int) -> List[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_variant(variant: str, data: str, model_dir: str, args) -> Dict:
    """Start the variant's processes, wait for them; the chief's timings and every wall time."""
    workers, _ = VARIANTS[variant]
    shutil.rmtree(model_dir, ignore_errors=True)
    argv = ["--data", data, "--model-dir", model_dir, "--epochs", str(args.epochs),
            "--batch-size", str(args.batch_size), "--seed", "0", "--progress", "none",
            "--strategy", "default" if variant == "default" else "multiworker"]
    ports = free_ports(workers)
    procs = []
    start = time.perf_counter()
    for index in range(workers):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        if variant != "default":
            env["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                                           "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench_multiworker", "--child", json.dumps({"argv": argv})],
            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results, walls = [], []
    for p in procs:
        stdout, stderr = p.communicate(timeout=args.timeout)
        walls.append(time.perf_counter() - start)
        if p.returncode != 0:
            raise RuntimeError(f"{variant}: a worker exited with {p.returncode}:\n{stderr[-3000:]}")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    chief = next(r for r in results if r["chief"])
    return {"epoch_s": chief["epoch_s"], "loss": chief["loss"], "wall_s": max(walls)}


def report(runs: Dict[str, List[Dict]], windows: int, args) -> str:
    rows = []
    base = None
    for variant, results in runs.items():
        timed = [r["epoch_s"][1:] for r in results]  # epoch 1 traces: not timed
        rates = sorted(windows * len(t) / sum(t) for t in timed)
        rate = statistics.median(rates)
        base = base or rate
        workers, label = VARIANTS[variant]
        rows.append((label, workers, f"{statistics.median(s for t in timed for s in t):.1f}",
                     f"{statistics.median(r['epoch_s'][0] for r in results):.1f}",
                     f"{rate:,.0f}", f"{rates[0]:,.0f}-{rates[-1]:,.0f}", f"{rate / workers:,.0f}",
                     f"{rate / base:.2f}", f"{statistics.median(r['wall_s'] for r in results):.0f}"))
    return table(f"training windows/s: {windows:,} train windows per epoch, batch {args.batch_size} "
                 f"(global), default LSTM(64), epochs 2-{args.epochs} timed (median of "
                 f"{args.repeats}, repeats interleaved)",
                 ["variant", "processes", "s/epoch", "epoch 1 s", "windows/s", "min-max",
                  "per worker", "x default", "wall s"], rows)


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_sample_args(parser)
    parser.add_argument("--num-shards", type=int, default=8, help="preprocess --num-shards (default 8)")
    parser.add_argument("--batch-size", type=int, default=256, help="global batch (default 256)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run, the first untimed (default 3)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per variant (default 1)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"default {','.join(VARIANTS)}")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds a run may take")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.crews = tuple(int(c) for c in args.crews.split(","))
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = set(args.variants) - set(VARIANTS)
    if unknown or args.epochs < 2:
        parser.error(f"unknown variants {sorted(unknown)}" if unknown else "--epochs must be >= 2")
    return args


def main(argv: Sequence[str] = None) -> int:
    args = _parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    with scratch_dir(args.workdir, "bench_multiworker-") as workdir:
        print("\n".join(machine_header()), flush=True)
        out = args.data or make_sample(workdir, args)
        data = without_eval(out, os.path.join(workdir, "train-only"))
        windows = read_stats(data)["splits"][output_folder.TRAIN]["num_windows"]
        runs: Dict[str, List[Dict]] = {v: [] for v in args.variants}
        for repeat in range(args.repeats):
            for variant in args.variants:
                result = run_variant(variant, data, os.path.join(workdir, f"model-{variant}"), args)
                print(f"repeat {repeat + 1} {variant}: epochs "
                      + ", ".join(f"{s:.1f}" for s in result["epoch_s"])
                      + f" s, wall {result['wall_s']:.0f} s, loss "
                      + ", ".join(f"{x:.4f}" for x in result["loss"]), flush=True)
                runs[variant].append(result)
        print()
        print(report(runs, windows, args))
        print(f"load average at end (1, 5, 15 min): {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
