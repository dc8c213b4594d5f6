"""Trainer benchmark: the streaming input against its bound and against in-memory, side by side.

    .venv/bin/python -m benchmarks.bench_trainer                       # synth sample, made here
    .venv/bin/python -m benchmarks.bench_trainer --data OUT            # an existing preprocess output
    .venv/bin/python -m benchmarks.bench_trainer --seconds 352 --crews 1,2,3,4,5,6,7,8,13   # full size

Prints, for the machine it runs on (CPU model, cores, RAM):
1. input windows/s: trainer.data.make_dataset (no shuffle, shuffle) against the bound of this
   machine (a bare TFRecordDataset read + batched parse_example, no weights, no shuffle) and
   against in-memory from_tensor_slices pipelines of the same windows;
2. training windows/s: model.fit on the streaming dataset against the in-memory one;
3. peak RSS of a training process, streaming vs in-memory, as the train split doubles (the
   doubled split lists every train shard twice, so it is exactly 2x);
4. per-class recall and macro-F1 on eval of --weighting none vs balanced (a figure, not a test);
5. training windows/s of each model kind (--models, default lstm,tcn: train's default settings
   of each), on the same streaming input (make_dataset, shuffled, balanced weights) and batch, and
   the seconds per epoch they imply (train windows / windows/s).
Timings are medians of --repeats runs after a warm-up pass.
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Sequence

import numpy as np

from benchmarks.common import REPO_ROOT, machine_header, run_parts, scratch_dir
from tfrecords_schema import LABEL_VOCABULARY, read_stats, write_stats, output_folder
from trainer.choices import LSTM, NORM_NONE
from trainer.config import ModelParams

# The model the training-throughput tables measure (their titles say so): an LSTM of 64 units.
LSTM_64 = ModelParams(kind=LSTM, units=64, normalize=NORM_NONE)

# --- timing and tables --------------------------------------------------------------------------

def table(title: str, header: Sequence[str], rows: List[Sequence[object]]) -> str:
    cells = [[str(h) for h in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([title, line(cells[0]), line(["-" * w for w in widths])] + [line(r) for r in cells[1:]])


def median_rates(runs: Dict[str, Callable[[], int]], repeats: int) -> Dict[str, List[float]]:
    """Items/s of each run (a callable returning the items it processed): one warm-up call each,
    then `repeats` rounds that call every run in turn, so load from other processes on a shared
    machine hits all of them alike. Returns {name: sorted rates}; report the median."""
    for run in runs.values():
        run()
    rates: Dict[str, List[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            n = run()
            rates[name].append(n / (time.perf_counter() - start))
    return {name: sorted(r) for name, r in rates.items()}


def spread(rates: List[float]) -> str:
    return f"{rates[0]:,.0f}-{rates[-1]:,.0f}"


# --- data ---------------------------------------------------------------------------------------

def make_sample(workdir: str, args) -> str:
    """synth -> preprocess into WORKDIR; returns OUT."""
    from beam_jobs import preprocess
    from crewstream import synth

    sample, out = os.path.join(workdir, "sample"), os.path.join(workdir, "out")
    start = time.perf_counter()
    synth.generate(sample, crews=args.crews, seconds=args.seconds, seed=0)
    flags = ["--input", os.path.join(sample, synth.TRAIN_FILE), "--output", out,
             "--window", str(args.window), "--stride", str(args.stride), "--eval-crews", args.eval_crews,
             "--num-shards", str(args.num_shards)]
    if args.features:
        flags += ["--features", args.features]
    preprocess.run(flags)
    print(f"made {out} (synth {args.seconds:g} s x crews {args.crews}, preprocess) in "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    return out


def doubled(out: str, dst: str) -> str:
    """A copy of OUT whose train split lists every train shard twice (hard links: no extra disk)."""
    shutil.rmtree(dst, ignore_errors=True)
    stats = read_stats(out)
    train = stats["splits"][output_folder.TRAIN]
    n = len(train["shards"])
    shards = []
    for copy in range(2):
        for i, shard in enumerate(train["shards"]):
            name = output_folder.shard_path(output_folder.TRAIN, copy * n + i, 2 * n, stats["compression"])
            os.makedirs(os.path.dirname(os.path.join(dst, name)), exist_ok=True)
            os.link(os.path.join(out, shard["file"]), os.path.join(dst, name))
            shards.append({"file": name, "num_windows": shard["num_windows"]})
    train.update(shards=shards, num_windows=2 * train["num_windows"], num_rows=2 * train["num_rows"],
                 class_counts={k: 2 * v for k, v in train["class_counts"].items()})
    for name in (output_folder.EVAL, output_folder.TRANSFORM_FN_DIR, output_folder.TRANSFORMED_METADATA_DIR):
        shutil.copytree(os.path.join(out, name), os.path.join(dst, name))
    write_stats(dst, stats)
    return dst


def bound_dataset(out: str, stats: Dict, batch: int):
    """The cheapest read of the split: TFRecordDataset + batched parse_example, nothing else."""
    import tensorflow as tf

    from tfrecords_schema import LABEL, WINDOW, parse_examples, shard_files

    w, f = stats["window"], len(stats["features"])
    ds = tf.data.TFRecordDataset(shard_files(out, stats, output_folder.TRAIN),
                                 compression_type="GZIP" if stats["compression"] == "GZIP" else "",
                                 num_parallel_reads=tf.data.AUTOTUNE)
    ds = ds.batch(batch).map(lambda s: (lambda p: (p[WINDOW], p[LABEL]))(parse_examples(s, w, f)),
                             num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def load_in_memory(out: str, stats: Dict, weighting: str):
    """The train split as numpy arrays (x [N, W, F], y [N], weight [N])."""
    from trainer import weights

    xs, ys = [], []
    for x, y in bound_dataset(out, stats, 1024):
        xs.append(x.numpy())
        ys.append(y.numpy())
    y = np.concatenate(ys)
    lookup = weights.weight_vector(stats["splits"][output_folder.TRAIN]["class_counts"], weighting)
    return np.concatenate(xs), y, lookup[y]


def in_memory_dataset(arrays, batch: int, shuffle_buffer: int = 0, repeat: bool = False):
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(arrays)
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=0)
    if repeat:
        ds = ds.repeat()
    return ds.batch(batch).prefetch(tf.data.AUTOTUNE)


def count_windows(ds) -> int:
    return sum(int(batch[0].shape[0]) for batch in ds)


# --- 1. input -----------------------------------------------------------------------------------

def bench_input(out: str, stats: Dict, args) -> str:
    from trainer import data

    arrays = load_in_memory(out, stats, "balanced")
    pipelines = [
        ("bound: TFRecordDataset + parse_example", bound_dataset(out, stats, args.batch_size)),
        ("make_dataset (no shuffle)", data.make_dataset(out, output_folder.TRAIN, args.batch_size)),
        ("make_dataset (shuffle)", data.make_dataset(out, output_folder.TRAIN, args.batch_size, shuffle=True, seed=0)),
        ("in memory: from_tensor_slices", in_memory_dataset(arrays, args.batch_size)),
        ("in memory: from_tensor_slices + shuffle",
         in_memory_dataset(arrays, args.batch_size, shuffle_buffer=data.DEFAULT_SHUFFLE_BUFFER)),
    ]
    rates = median_rates({name: (lambda ds=ds: count_windows(ds)) for name, ds in pipelines}, args.repeats)
    bound = statistics.median(rates[pipelines[0][0]])
    rows = []
    for name, r in rates.items():
        rate = statistics.median(r)
        rows.append((name, f"{rate:,.0f}", spread(r), f"{rate * arrays[0][0].nbytes / 2**20:,.0f}",
                     f"{rate / bound:.2f}"))
    return table(f"1. input, train split: {len(arrays[1]):,} windows of {stats['window']} x "
                 f"{len(stats['features'])}, batch {args.batch_size} (median of {args.repeats}, rounds "
                 f"alternate the pipelines)", ["pipeline", "windows/s", "min-max", "MiB/s", "x bound"], rows)


# --- 2. training speed --------------------------------------------------------------------------

def bench_training(out: str, stats: Dict, args) -> str:
    from trainer import data, model as model_lib

    arrays = load_in_memory(out, stats, "balanced")
    sources = {
        "streaming (make_dataset)": data.make_dataset(out, output_folder.TRAIN, args.batch_size, shuffle=True,
                                                      repeat=True, seed=0),
        "in memory (from_tensor_slices)": in_memory_dataset(
            arrays, args.batch_size, shuffle_buffer=data.DEFAULT_SHUFFLE_BUFFER, repeat=True),
    }
    runs = {}
    for name, ds in sources.items():
        model_lib.set_seed(0)
        net = model_lib.build_model(stats["window"], len(stats["features"]), LSTM_64)

        def fit(ds=ds, net=net) -> int:
            net.fit(ds, epochs=1, steps_per_epoch=args.train_steps, verbose=0)
            return args.train_steps * args.batch_size

        runs[name] = fit
    rates = median_rates(runs, args.repeats)
    rows = [(name, f"{statistics.median(r):,.0f}", spread(r)) for name, r in rates.items()]
    return table(f"2. training windows/s: default LSTM(64), {args.train_steps} steps of {args.batch_size} "
                 f"(median of {args.repeats}, rounds alternate the inputs)", ["input", "windows/s", "min-max"], rows)


# --- 3. peak memory -----------------------------------------------------------------------------

def child_peak_memory(out: str, mode: str, batch: int, steps: int) -> Dict:
    """Run in a fresh process: train `steps` steps from `mode` input; report peak RSS."""
    from trainer import data, model as model_lib

    stats = read_stats(out)
    if mode == "streaming":
        ds = data.make_dataset(out, output_folder.TRAIN, batch, shuffle=True, repeat=True, seed=0)
    else:
        ds = in_memory_dataset(load_in_memory(out, stats, "balanced"), batch,
                               shuffle_buffer=data.DEFAULT_SHUFFLE_BUFFER, repeat=True)
    net = model_lib.build_model(stats["window"], len(stats["features"]), LSTM_64)
    net.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
    return {"peak_rss_mib": peak_rss_mib()}


def peak_rss_mib() -> float:
    """This process's peak RSS: VmHWM, which exec resets (getrusage's ru_maxrss keeps the
    parent's peak across fork + exec on Linux, so a child would report the parent's)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_memory(out: str, out2: str, stats: Dict, args) -> str:
    sizes = {"1x": out, "2x": out2}
    split_mib = {k: read_stats(v)["splits"][output_folder.TRAIN]["num_windows"] * stats["window"]
                 * len(stats["features"]) * 4 / 2**20 for k, v in sizes.items()}
    rows = []
    for mode in ("streaming", "in-memory"):
        peaks = {}
        for size, path in sizes.items():
            runs = []
            for _ in range(args.memory_repeats):
                done = subprocess.run(
                    [sys.executable, "-m", "benchmarks.bench_trainer", "--child", json.dumps(
                        {"out": path, "mode": mode, "batch": args.batch_size, "steps": args.train_steps})],
                    capture_output=True, text=True, check=True, cwd=REPO_ROOT)
                runs.append(json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mib"])
            peaks[size] = statistics.median(runs)
        rows.append((mode, f"{peaks['1x']:,.0f}", f"{peaks['2x']:,.0f}", f"{peaks['2x'] - peaks['1x']:+,.0f}"))
    return table(f"3. peak RSS (MiB) of a training process ({args.train_steps} steps), train split "
                 f"{split_mib['1x']:,.0f} MiB (1x) and {split_mib['2x']:,.0f} MiB (2x) of windows "
                 f"(median of {args.memory_repeats})", ["input", "1x", "2x", "growth"], rows)


# --- 4. weighting -------------------------------------------------------------------------------

def bench_weighting(out: str, workdir: str, args) -> str:
    from trainer import evaluate, train

    rows = []
    for method in ("none", "balanced"):
        model_dir = os.path.join(workdir, f"model-{method.replace(':', '-')}")
        start = time.perf_counter()
        train.train(train.TrainConfig(data=out, model_dir=model_dir, epochs=args.weighting_epochs,
                                      batch_size=args.batch_size, weighting=method, seed=0, verbose=0))
        report = evaluate.evaluate(evaluate.EvalConfig(out, model_dir))
        rows.append([method] + [f"{report['per_class'][c]['recall']:.3f}" for c in LABEL_VOCABULARY]
                    + [f"{report['macro_f1']:.3f}", f"{report['accuracy']:.3f}", f"{report['log_loss']:.3f}",
                       f"{time.perf_counter() - start:.0f}"])
    support = read_stats(out)["splits"][output_folder.EVAL]["class_counts"]
    return table(f"4. eval after {args.weighting_epochs} epochs, default model, seed 0 (eval support "
                 + ", ".join(f"{c} {support[c]:,}" for c in LABEL_VOCABULARY) + ")",
                 ["weighting"] + [f"recall {c}" for c in LABEL_VOCABULARY]
                 + ["macro F1", "accuracy", "log loss", "s"], rows)


# --- 5. model kinds -----------------------------------------------------------------------------

def default_params(kind: str, window: int):
    """trainer.model.ModelParams of a `kind` model as `crewstream train --model KIND` builds it with
    no other flag (ModelParams' defaults), filled in for `window` (a tcn's levels: as many as fit)."""
    from trainer import model as model_lib

    return model_lib.ModelParams(kind=kind).for_window(window)


def bench_models(out: str, stats: Dict, args) -> str:
    """Training windows/s of each kind in args.models on the same input and batch (part 5)."""
    from trainer import data, model as model_lib

    runs, described = {}, {}
    for kind in args.models:
        params = default_params(kind, stats["window"])
        model_lib.set_seed(0)
        net = model_lib.build_model(stats["window"], len(stats["features"]), params)
        ds = data.make_dataset(out, output_folder.TRAIN, args.batch_size, shuffle=True, repeat=True, seed=0)

        def fit(ds=ds, net=net) -> int:
            net.fit(ds, epochs=1, steps_per_epoch=args.train_steps, verbose=0)
            return args.train_steps * args.batch_size

        runs[kind], described[kind] = fit, f"{params.describe()}; {net.count_params():,} weights"
    rates = median_rates(runs, args.repeats)
    windows = stats["splits"][output_folder.TRAIN]["num_windows"]
    first = statistics.median(rates[args.models[0]])
    rows = [(kind, f"{statistics.median(r):,.0f}", spread(r), f"{windows / statistics.median(r):,.0f}",
             f"{statistics.median(r) / first:.2f}") for kind, r in rates.items()]
    return (table(f"5. training windows/s by model: {args.train_steps} steps of {args.batch_size}, streaming "
                  f"input (make_dataset, shuffle, balanced weights), train split {windows:,} windows of "
                  f"{stats['window']} x {len(stats['features'])} (median of {args.repeats}, rounds alternate the "
                  f"models); s/epoch = train windows / windows/s",
                  ["model", "windows/s", "min-max", "s/epoch", f"x {args.models[0]}"], rows)
            + "\n" + "\n".join(f"  {text}" for text in described.values()))


# --- main ---------------------------------------------------------------------------------------

def add_sample_args(parser: argparse.ArgumentParser, data_flag: bool = True) -> None:
    """The flags make_sample reads (and, with `data_flag`, --data, which skips it)."""
    if data_flag:
        parser.add_argument("--data", help="an existing preprocess output (default: make a synth sample)")
    parser.add_argument("--workdir", help="where to write the sample and models (default: a temp dir, removed)")
    parser.add_argument("--crews", default="1,2,3", help="synth crews (default 1,2,3)")
    parser.add_argument("--eval-crews", default="2", help="preprocess --eval-crews (default 2)")
    parser.add_argument("--seconds", type=float, default=60.0, help="synth seconds per recording (default 60)")
    parser.add_argument("--features", default="", help="preprocess --features (default: all 23)")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--stride", type=int, default=32)


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_sample_args(parser)
    parser.add_argument("--num-shards", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measure (default 5)")
    parser.add_argument("--train-steps", type=int, default=20, help="steps per timed fit (default 20)")
    parser.add_argument("--memory-repeats", type=int, default=1)
    parser.add_argument("--weighting-epochs", type=int, default=5)
    parser.add_argument("--skip", default="",
                        help="comma-separated parts to skip: input,training,memory,weighting,models")
    parser.add_argument("--models", default="lstm,tcn", help="model kinds of part 5 (default lstm,tcn)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.crews = tuple(int(c) for c in args.crews.split(","))
    args.skip = set(filter(None, args.skip.split(",")))
    args.models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(args.models) - {"lstm", "tcn"})
    if unknown or not args.models:
        parser.error(f"--models: expected lstm and/or tcn, got {args.models}")
    return args


def main(argv=None) -> int:
    args = _parse_args(argv)
    if args.child:
        print(json.dumps(child_peak_memory(**json.loads(args.child))))
        return 0
    with scratch_dir(args.workdir, "bench_trainer-") as workdir:
        print("\n".join(machine_header()), flush=True)
        out = args.data or make_sample(workdir, args)
        stats = read_stats(out)
        parts = [("input", lambda: bench_input(out, stats, args)),
                 ("training", lambda: bench_training(out, stats, args)),
                 ("memory", lambda: bench_memory(out, doubled(out, os.path.join(workdir, "out2x")), stats, args)),
                 ("weighting", lambda: bench_weighting(out, workdir, args)),
                 ("models", lambda: bench_models(out, stats, args))]
        run_parts(parts, args.skip)
    return 0


if __name__ == "__main__":
    sys.exit(main())
