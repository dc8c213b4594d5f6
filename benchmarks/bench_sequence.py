"""Sequence-layout benchmark: windows cut at read time against the windows layout, and dense training.

    .venv/bin/python -m benchmarks.bench_sequence                          # synth sample, made here
    .venv/bin/python -m benchmarks.bench_sequence --windows-data OUT_W --sequence-data OUT_S
    .venv/bin/python -m benchmarks.bench_sequence --seconds 352 --crews 1,2,3,4,5,6,7,8,13 --eval-crews 13

Both folders hold the same input (made here from one synth sample: `preprocess` with the same
flags, `--layout windows` and `--layout sequence --chunk-rows C`). Prints, for the machine it runs on:
1. input windows/s: trainer.data.make_dataset on the sequence folder at the folder's W and
   stride --strides (default 32 and 8), shuffled and not, against the windows layout's bare-read
   bound (TFRecordDataset + batched parse_example, benchmarks.bench_trainer.bound_dataset) and
   its make_dataset (the folder's own W and stride); all repeated, measured in steady state
   (--input-batches batches after a warm-up run), as training reads them;
2. mixing: over the first --mix-batches shuffled batches, the share of a batch that comes from
   its most frequent recording (crew, seat, experiment) and the recordings per batch, windows
   layout against sequence layout at the windows layout's stride;
3. dense against windowed training of the same tcn (train's defaults) for the same training
   time (--train-seconds of steps, input included, evaluation excluded), each then exported and
   scored by trainer.evaluate on the eval split (windows of W at the folder's stride): macro F1,
   log loss, and the windows (rows, for dense) trained on.
Timings are medians of --repeats runs after a warm-up run, rounds alternating the pipelines.
"""

import argparse
import collections
import os
import shutil
import statistics
import sys
import time
from typing import Dict

import numpy as np

from benchmarks.bench_trainer import add_sample_args, bound_dataset, median_rates, spread, table
from benchmarks.common import machine_header, run_parts, scratch_dir
from tfrecords_schema import read_stats, sequence, shard_files, output_folder


def make_folders(workdir: str, args) -> Dict[str, str]:
    """synth -> preprocess twice (windows, sequence) into WORKDIR; {layout: OUT}."""
    from beam_jobs import preprocess
    from crewstream import synth

    sample = os.path.join(workdir, "sample")
    synth.generate(sample, crews=args.crews, seconds=args.seconds, seed=0)
    flags = ["--input", os.path.join(sample, synth.TRAIN_FILE), "--window", str(args.window),
             "--stride", str(args.stride), "--eval-crews", args.eval_crews, "--num-shards", str(args.num_shards)]
    if args.features:
        flags += ["--features", args.features]
    folders = {}
    for name, extra in ((sequence.WINDOWS, []),
                        (sequence.SEQUENCE, ["--layout", "sequence", "--chunk-rows", str(args.chunk_rows)])):
        start = time.perf_counter()
        folders[name] = os.path.join(workdir, name)
        preprocess.run([*flags, "--output", folders[name], *extra])
        print(f"made {folders[name]} in {time.perf_counter() - start:.0f} s", flush=True)
    return folders


# --- 1. input -----------------------------------------------------------------------------------

def steady(ds, batches: int):
    """A run for median_rates: the next `batches` batches of the (repeated) dataset `ds`, one
    iterator throughout, so that its start (shuffle buffers filling, files opening) is in the
    warm-up call only; returns the windows read."""
    iterator = iter(ds)

    def run() -> int:
        return sum(int(next(iterator)[0].shape[0]) for _ in range(batches))

    return run


def bench_input(folders: Dict[str, str], args) -> str:
    from trainer import data

    windows_stats, seq_stats = read_stats(folders[sequence.WINDOWS]), read_stats(folders[sequence.SEQUENCE])
    w = seq_stats["window"]
    pipelines = {
        "windows: bound (TFRecordDataset + parse_example)": bound_dataset(folders[sequence.WINDOWS], windows_stats,
                                                                          args.batch_size).repeat(),
        f"windows: make_dataset, stride {windows_stats['stride']}, shuffle": data.make_dataset(
            folders[sequence.WINDOWS], output_folder.TRAIN, args.batch_size, shuffle=True, repeat=True, seed=0),
    }
    for stride in args.strides:
        for shuffle in (False, True):
            pipelines[f"sequence: make_dataset, stride {stride}{', shuffle' if shuffle else ''}"] = data.make_dataset(
                folders[sequence.SEQUENCE], output_folder.TRAIN, args.batch_size, shuffle=shuffle, repeat=True,
                window=w, stride=stride, seed=0)
    rates = median_rates({name: steady(ds, args.input_batches) for name, ds in pipelines.items()}, args.repeats)
    bound = statistics.median(next(iter(rates.values())))
    window_mib = w * len(seq_stats["features"]) * 4 / 2**20
    rows = [(name, f"{statistics.median(r):,.0f}", spread(r), f"{statistics.median(r) * window_mib:,.0f}",
             f"{statistics.median(r) / bound:.2f}") for name, r in rates.items()]
    counts = ", ".join(f"stride {s}: {data.num_windows(data.windowed_stats(seq_stats, w, s), output_folder.TRAIN):,}"
                       for s in args.strides)
    return table(f"1. input, train split, windows of {w} x {len(seq_stats['features'])} ({counts}), batch "
                 f"{args.batch_size}: {args.input_batches} batches of the repeated pipeline, in steady state "
                 f"(median of {args.repeats})",
                 ["pipeline", "windows/s", "min-max", "MiB/s", "x bound"], rows)


# --- 2. mixing ----------------------------------------------------------------------------------

def recordings_of_rows(seq_out: str, keys: set) -> Dict[bytes, tuple]:
    """{row bytes: (crew, seat, experiment)} for the rows in `keys`, from the sequence folder's
    train chunks (both folders hold the same scaled rows)."""
    import tensorflow as tf

    from tfrecords_schema.record import CREW, EXPERIMENT, ROWS, SEAT, parse_chunks

    stats = read_stats(seq_out)
    owner = {}
    for serialized in tf.data.TFRecordDataset(shard_files(seq_out, stats, output_folder.TRAIN)).batch(16):
        chunk = parse_chunks(serialized, len(stats["features"]))
        for rows, crew, seat, experiment in zip(chunk[ROWS], chunk[CREW].numpy(), chunk[SEAT].numpy(),
                                                chunk[EXPERIMENT].numpy()):
            for row in np.ascontiguousarray(rows.numpy()):
                key = row.tobytes()
                if key in keys:
                    owner[key] = (int(crew), int(seat), experiment.decode())
    return owner


def bench_mixing(folders: Dict[str, str], args) -> str:
    from trainer import data

    stats = read_stats(folders[sequence.WINDOWS])
    sources = {
        "windows layout": data.make_dataset(folders[sequence.WINDOWS], output_folder.TRAIN, args.batch_size,
                                            shuffle=True, seed=0),
        "sequence layout": data.make_dataset(folders[sequence.SEQUENCE], output_folder.TRAIN, args.batch_size,
                                             shuffle=True, window=stats["window"], stride=stats["stride"], seed=0),
    }
    last_rows = {name: [[np.ascontiguousarray(w[-1]).tobytes() for w in x.numpy()]
                        for x, _, _ in ds.take(args.mix_batches)] for name, ds in sources.items()}
    owner = recordings_of_rows(folders[sequence.SEQUENCE], {k for b in last_rows.values() for keys in b for k in keys})
    rows = []
    for name, batches in last_rows.items():
        full = [b for b in batches if len(b) == args.batch_size] or batches
        shares = [max(collections.Counter(owner.get(k) for k in b).values()) / len(b) for b in full]
        distinct = [len({owner.get(k) for k in b}) for b in full]
        rows.append((name, f"{np.mean(shares):.3f}", f"{max(shares):.3f}", f"{np.mean(distinct):.1f}"))
    recordings = len({v for v in owner.values()})
    return table(f"2. mixing: the first {args.mix_batches} shuffled batches of {args.batch_size} windows "
                 f"({stats['window']}, stride {stats['stride']}; shuffle buffer {data.DEFAULT_SHUFFLE_BUFFER}; "
                 f"{recordings} recordings seen, {len(stats['splits'][output_folder.TRAIN]['shards'])} shards)",
                 ["layout", "share of the top recording (mean)", "(max)", "recordings per batch"], rows)


# --- 3. dense against windowed training ---------------------------------------------------------

def budget_callback(seconds: float):
    """A Keras callback stopping `fit` once its batches (input included) have taken `seconds`;
    `.steps` counts them."""
    from trainer import model as model_lib

    class Budget(model_lib.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.spent, self.steps = 0.0, 0

        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.spent += time.perf_counter() - self.start
            self.steps += 1
            if self.spent >= seconds:
                self.model.stop_training = True

    return Budget()


def train_for(seq_out: str, workdir: str, dense: bool, args) -> Dict[str, object]:
    """Train the default tcn for args.train_seconds (dense or windowed), export, evaluate."""
    from benchmarks.bench_trainer import default_params
    from trainer import data, evaluate, export, model as model_lib

    stats = data.windowed_stats(read_stats(seq_out))
    params = default_params(model_lib.TCN, stats["window"])
    model_lib.set_seed(0)
    net = model_lib.build_model(stats["window"], len(stats["features"]), params)
    if dense:
        fitted = model_lib.dense_model(net, params)
        ds = data.make_dense_dataset(seq_out, output_folder.TRAIN, args.dense_batch, shuffle=True, repeat=True,
                                     seed=0, stats=stats)
        per_step = f"{args.dense_batch} chunks"
    else:
        fitted = net
        ds = data.make_dataset(seq_out, output_folder.TRAIN, args.batch_size, shuffle=True, repeat=True, seed=0,
                               stats=stats)
        per_step = f"{args.batch_size} windows"
    budget = budget_callback(args.train_seconds)
    fitted.fit(ds, epochs=1, steps_per_epoch=10**9, callbacks=[budget], verbose=0)
    model_dir = os.path.join(workdir, f"model-{'dense' if dense else 'windows'}")
    shutil.rmtree(model_dir, ignore_errors=True)
    export.export_serving(net, seq_out, model_dir, stats=stats, params=params)
    report = evaluate.evaluate(evaluate.EvalConfig(seq_out, model_dir))
    return {"steps": budget.steps, "seconds": budget.spent, "per_step": per_step, "report": report}


def bench_dense(folders: Dict[str, str], workdir: str, args) -> str:
    seq_out = folders[sequence.SEQUENCE]
    stats = read_stats(seq_out)
    rows = []
    for dense in (False, True):
        run = train_for(seq_out, workdir, dense, args)
        report = run["report"]
        rows.append(("dense (every stride-1 window)" if dense else f"windows (stride {stats['stride']})",
                     f"{run['steps']:,} x {run['per_step']}", f"{run['seconds']:.0f}",
                     f"{report['macro_f1']:.3f}", f"{report['log_loss']:.3f}", f"{report['accuracy']:.3f}"))
    return table(f"3. tcn (train's defaults, balanced weights) trained for {args.train_seconds:g} s of steps, "
                 f"scored on eval ({report['num_windows']:,} windows of {stats['window']}, stride "
                 f"{stats['stride']}) through the export",
                 ["training", "steps", "s", "macro F1", "log loss", "accuracy"], rows)


# --- main ---------------------------------------------------------------------------------------

def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--windows-data", help="an existing windows-layout preprocess output")
    parser.add_argument("--sequence-data", help="the same input preprocessed with --layout sequence")
    add_sample_args(parser, data_flag=False)
    parser.add_argument("--chunk-rows", type=int, default=sequence.DEFAULT_CHUNK_ROWS)
    parser.add_argument("--num-shards", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--strides", default="32,8", help="strides of part 1 (default 32,8)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per pipeline (default 3)")
    parser.add_argument("--input-batches", type=int, default=400, help="batches per timed run of part 1")
    parser.add_argument("--mix-batches", type=int, default=50)
    parser.add_argument("--train-seconds", type=float, default=300.0,
                        help="training time of each of part 3's runs (default 300)")
    parser.add_argument("--dense-batch", type=int, default=4, help="chunks per dense step (default 4)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: input,mixing,dense")
    args = parser.parse_args(argv)
    if bool(args.windows_data) != bool(args.sequence_data):
        parser.error("--windows-data and --sequence-data go together (the same input, both layouts)")
    args.crews = tuple(int(c) for c in args.crews.split(","))
    args.strides = [int(s) for s in args.strides.split(",") if s]
    args.skip = set(filter(None, args.skip.split(",")))
    return args


def main(argv=None) -> int:
    args = _parse_args(argv)
    with scratch_dir(args.workdir, "bench_sequence-") as workdir:
        print("\n".join(machine_header()), flush=True)
        folders = ({sequence.WINDOWS: args.windows_data, sequence.SEQUENCE: args.sequence_data}
                   if args.windows_data else make_folders(workdir, args))
        parts = [("input", lambda: bench_input(folders, args)),
                 ("mixing", lambda: bench_mixing(folders, args)),
                 ("dense", lambda: bench_dense(folders, workdir, args))]
        run_parts(parts, args.skip)
    return 0


if __name__ == "__main__":
    sys.exit(main())
