"""Benchmark: `crewstream predict` against the in-memory way of docs/DATA.md, side by side in one run.

    .venv/bin/python -m benchmarks.bench_predict                            # the default set
    .venv/bin/python -m benchmarks.bench_predict --sizes one --features 1   # a quick look
    .venv/bin/python -m benchmarks.bench_predict --sizes one,four,kaggle-groups,kaggle

Test files (written by `crewstream synth`, seed 0; 256 rows per second per (crew, seat)):

    one            crew 1 x 1077 s: 551,424 rows, the size of docs/DATA.md's one-crew baseline
    four           crews 1-4 x 1077 s: 2,205,696 rows, 4x `one` with groups of the same size
    kaggle-groups  crew 1 x 3899 s: 1,996,288 rows in groups of Kaggle's size (about 1M rows)
    kaggle         crews 1-8, 13 x 3899 s: 17,965,184 rows, the size of Kaggle's test.csv

The model: trainer.model's default network (LSTM(64) -> Dense(4)) on windows of 256 rows, trained
one epoch on a small synth train file (crews 1-3 x 20 s) preprocessed with the feature set. Its
weights feed the in-memory variants, its export (MODEL/serving) feeds crewstream: one network.

Variants, on `one`, for each feature set (1 = `r`; 23 = all signals):

    inmemory-b32    pd.read_csv, sort by (crew, seat, experiment, time), z-score with stats.json's
    inmemory-b1024  scaling in numpy, every group left-padded and cut into stride-1 windows with
                    numpy, all concatenated (every window materialized), Keras model.predict(X,
                    batch_size=32 or 1024), DataFrame.to_csv. When the windows would not fit in
                    --inmemory-max-gib, only the first windows that do are built and predicted:
                    the row says `subset`, and its windows/s is still a fair rate.
    crewstream      python -m trainer.predict --model-dir MODEL --input CSV --output SUB (defaults)
    crewstream --concurrent 1   the same with one model call in flight (first feature set only)

On the other sizes only crewstream runs (all 23 features). Every run is its own subprocess, one at
a time: wall time from start to exit (imports and model loading included), peak RSS (the larger of
the 0.2 s samples and the kernel's ru_maxrss from wait4) and CPU seconds (user + system). Model
windows/s is the model phase alone for in-memory (model.predict) and pass 2 for crewstream (its
own log); end-to-end windows/s is windows / wall time. The in-memory and crewstream submissions of
a feature set are compared on their common ids (max |difference| of the probabilities).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a file: `python benchmarks/bench_predict.py`
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.bench_preprocess import machine_header, measure  # noqa: E402
from benchmarks.bench_trainer import table  # noqa: E402
from tfrecords_schema import csv_layout  # noqa: E402

GiB = 2**30
WINDOW = 256
SIZES = {  # name: (test crews, test seconds per (crew, seat))
    "one": ("1", 1077.0),
    "four": ("1,2,3,4", 1077.0),
    "kaggle-groups": ("1", 3899.0),
    "kaggle": ("1,2,3,4,5,6,7,8,13", 3899.0),
}
FEATURE_SETS = {"1": ["r"], "23": list(csv_layout.SIGNALS)}
SUMMARY = re.compile(r"read ([\d.]+) s, predict ([\d.]+) s \(([\d,]+) windows/s\)")


# --- setup: data and model, each made by a subprocess (this process stays small) ---------------

def python(*args: str) -> List[str]:
    return [sys.executable, *args]


def run_quiet(cmd: Sequence[str], log: Path) -> None:
    with open(log, "w") as f:
        code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=_env())
    if code:
        raise SystemExit(f"failed (exit {code}): {' '.join(cmd)}; see {log}")


def _env() -> Dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT)}


def test_file(workdir: Path, size: str) -> Path:
    crews, seconds = SIZES[size]
    folder = workdir / "data" / size
    if not (folder / "test.csv").exists():
        started = time.perf_counter()
        run_quiet(python("-m", "crewstream.synth", "--out", str(folder), "--crews", "1", "--seconds", "1",
                         "--test-crews", crews, "--test-seconds", str(seconds)), workdir / f"synth-{size}.log")
        print(f"wrote {folder / 'test.csv'} in {time.perf_counter() - started:.0f} s", flush=True)
    return folder / "test.csv"


def make_model(workdir: Path, features: str) -> Path:
    """OUT (preprocess of a small train file) and MODEL (serving + Keras weights) for a feature set."""
    train = workdir / "data" / "train" / "train.csv"
    if not train.exists():
        run_quiet(python("-m", "crewstream.synth", "--out", str(train.parent), "--crews", "1,2,3",
                         "--seconds", "20", "--test-seconds", "1"), workdir / "synth-train.log")
    out, model = workdir / f"out-{features}", workdir / f"model-{features}"
    if not (model / "keras" / "done").exists():
        run_quiet(python("-m", "beam_jobs.preprocess", "--input", str(train), "--output", str(out),
                         "--features", ",".join(FEATURE_SETS[features]), "--window", str(WINDOW),
                         "--stride", "32", "--eval-crews", "2", "--num-shards", "2"),
                  workdir / f"preprocess-{features}.log")
        run_quiet(python("-m", "benchmarks.bench_predict", "--child", "model", "--data", str(out),
                         "--model-dir", str(model)), workdir / f"model-{features}.log")
    return model


def child_model(data: str, model_dir: str) -> None:
    from trainer import data as data_lib, export, model as model_lib
    from tfrecords_schema import read_stats

    stats = read_stats(data)
    model_lib.set_seed(0)
    net = model_lib.build_model(stats["window"], len(stats["features"]))
    net.fit(data_lib.make_dataset(data, "train", 64, shuffle=True, seed=0), epochs=1, verbose=0)
    export.export_serving(net, data, model_dir, stats)
    os.makedirs(os.path.join(model_dir, "keras"), exist_ok=True)
    net.save_weights(os.path.join(model_dir, "keras", "weights"))
    with open(os.path.join(model_dir, "keras", "stats.json"), "w") as f:
        json.dump(stats, f)
    open(os.path.join(model_dir, "keras", "done"), "w").close()


# --- the in-memory way ------------------------------------------------------------------------

def child_inmemory(csv: str, model_dir: str, batch_size: int, max_bytes: int, output: str, report: str) -> None:
    """docs/DATA.md's way, every window in memory at once; writes phase times to `report` (JSON)."""
    import numpy as np
    import pandas as pd

    from trainer import model as model_lib

    marks = [("start", time.perf_counter())]
    with open(os.path.join(model_dir, "keras", "stats.json")) as f:
        stats = json.load(f)
    features, w = stats["features"], stats["window"]
    net = model_lib.build_model(w, len(features))
    net.load_weights(os.path.join(model_dir, "keras", "weights")).expect_partial()
    marks.append(("load model", time.perf_counter()))
    frame = pd.read_csv(csv)
    marks.append(("read_csv", time.perf_counter()))
    frame = frame.sort_values([csv_layout.CREW, csv_layout.SEAT, csv_layout.EXPERIMENT, csv_layout.TIME],
                              kind="stable", ignore_index=True)
    mean = np.array([stats["scaling"][n]["mean"] for n in features])
    std = np.array([stats["scaling"][n]["std"] for n in features])
    scaled = ((frame[features].to_numpy(np.float64) - mean) / std).astype(np.float32)
    marks.append(("sort+scale", time.perf_counter()))
    limit = max(1, max_bytes // (w * len(features) * 4))
    parts, ids, total = [], [], 0
    for _, rows in sorted(frame.groupby([csv_layout.CREW, csv_layout.SEAT, csv_layout.EXPERIMENT]).indices.items()):
        values = scaled[rows]
        padded = np.concatenate([np.repeat(values[:1], w - 1, axis=0), values])
        take = min(len(rows), limit - total)
        parts.append(np.lib.stride_tricks.sliding_window_view(padded, w, axis=0).transpose(0, 2, 1)[:take])
        ids.append(frame[csv_layout.ID].to_numpy()[rows][:take])
        total += take
        if total >= limit:
            break
    X = np.concatenate(parts)  # every window, materialized: [N, W, F]
    ids = np.concatenate(ids)
    marks.append(("windows", time.perf_counter()))
    probabilities = net.predict(X, batch_size=batch_size, verbose=0)
    marks.append(("model.predict", time.perf_counter()))
    sub = pd.DataFrame(probabilities, columns=list(stats["label_vocabulary"]))
    sub.insert(0, csv_layout.ID, ids)
    sub.to_csv(output, index=False)
    marks.append(("to_csv", time.perf_counter()))
    phases = {name: t - marks[i][1] for i, (name, t) in enumerate(marks[1:])}
    with open(report, "w") as f:
        json.dump({"windows": int(len(X)), "rows": int(len(frame)), "window_bytes": int(X.nbytes),
                   "phases": phases}, f)


# --- measured runs ----------------------------------------------------------------------------

def measured(name: str, cmd: Sequence[str], workdir: Path) -> Dict:
    log = workdir / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"running {name} ...", flush=True)
    result = measure(cmd, log, 0.2, False, _env())
    if result["returncode"]:
        raise SystemExit(f"{name} failed (exit {result['returncode']}); see {log}")
    print(f"  {result['wall_s']:.0f} s, peak RSS {result['max_single_rss'] / GiB:.2f} GiB", flush=True)
    return result


def run_inmemory(workdir: Path, csv: Path, model: Path, features: str, batch: int, max_gib: float) -> Dict:
    name = f"one-f{features}-inmemory-b{batch}"
    report, output = workdir / "logs" / f"{name}.json", workdir / "subs" / f"{name}.csv"
    output.parent.mkdir(parents=True, exist_ok=True)
    result = measured(name, python("-m", "benchmarks.bench_predict", "--child", "inmemory", "--csv", str(csv),
                                   "--model-dir", str(model), "--batch-size", str(batch),
                                   "--max-bytes", str(int(max_gib * GiB)), "--output", str(output),
                                   "--report", str(report)), workdir)
    with open(report) as f:
        child = json.load(f)
    subset = child["windows"] < child["rows"]
    return {**result, "name": name, "size": "one", "features": features, "variant": f"inmemory b{batch}",
            "windows": child["windows"], "rows": child["rows"], "model_s": child["phases"]["model.predict"],
            "note": (f"subset: all {child['rows']:,} windows need "
                     f"{child['rows'] * WINDOW * int(features) * 4 / GiB:.1f} GiB") if subset else "",
            "output": str(output)}


def run_crewstream(workdir: Path, size: str, csv: Path, model: Path, features: str,
                   extra: Sequence[str] = ()) -> Dict:
    name = f"{size}-f{features}-crewstream" + "".join(extra).replace("--", "-")
    output = workdir / "subs" / f"{name}.csv"
    output.parent.mkdir(parents=True, exist_ok=True)
    result = measured(name, python("-m", "trainer.predict", "--model-dir", str(model), "--input", str(csv),
                                   "--output", str(output), "--progress", "log", *extra), workdir)
    found = SUMMARY.search(Path(result["log"]).read_text())
    rows = count_rows(output)
    return {**result, "name": name, "size": size, "features": features,
            "variant": "crewstream" + (" " + " ".join(extra) if extra else ""), "windows": rows, "rows": rows,
            "model_s": float(found.group(2)) if found else float("nan"), "note": "", "output": str(output)}


def count_rows(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 24), b"")) - 1


def agreement(a: str, b: str) -> str:
    """Max |difference| of two submissions' probabilities on their common ids (small files)."""
    import pandas as pd

    left, right = pd.read_csv(a).set_index("id"), pd.read_csv(b).set_index("id")
    common = left.index.intersection(right.index)
    diff = (left.loc[common] - right.loc[common][left.columns]).abs().to_numpy().max()
    return f"{len(common):,} common ids, max |difference| {diff:.2g}"


# --- the report -------------------------------------------------------------------------------

def rows_of(results: List[Dict]) -> List[List[str]]:
    out = []
    for r in results:
        out.append([r["size"], f"{r['rows']:,}", r["features"], r["variant"], f"{r['windows']:,}",
                    f"{r['model_s']:.1f}", f"{r['windows'] / r['model_s']:,.0f}", f"{r['wall_s']:.1f}",
                    f"{r['windows'] / r['wall_s']:,.0f}", f"{r['max_single_rss'] / GiB:.2f}",
                    f"{r['cpu_s']:.0f}", r["note"]])
    return out


HEADER = ["file", "rows", "F", "variant", "windows", "model s", "model w/s", "wall s", "end-to-end w/s",
          "peak RSS GiB", "CPU s", "note"]


def ratios(results: List[Dict]) -> List[str]:
    lines = []
    for features in FEATURE_SETS:
        base = next((r for r in results if r["features"] == features and r["variant"] == "inmemory b1024"), None)
        ours = next((r for r in results if r["features"] == features and r["size"] == "one"
                     and r["variant"] == "crewstream"), None)
        if base and ours:
            rate = base["windows"] / base["model_s"]
            lines.append(f"- F={features}: crewstream end-to-end {ours['windows'] / ours['wall_s']:,.0f} w/s "
                         f"= {ours['windows'] / ours['wall_s'] / rate:.2f}x in-memory model.predict at batch "
                         f"1024 ({rate:,.0f} w/s, model phase only); crewstream pass 2 alone "
                         f"{ours['windows'] / ours['model_s'] / rate:.2f}x")
    by_size = {r["size"]: r for r in results if r["variant"] == "crewstream" and r["features"] == "23"}
    if "one" in by_size and "four" in by_size:
        one, four = by_size["one"], by_size["four"]
        lines.append(f"- memory as the file grows 4x (F=23): peak RSS {one['max_single_rss'] / GiB:.2f} -> "
                     f"{four['max_single_rss'] / GiB:.2f} GiB ({four['max_single_rss'] / one['max_single_rss']:.2f}x)")
    if "kaggle-groups" in by_size and "kaggle" not in by_size:
        k = by_size["kaggle-groups"]
        rows = 17_965_143
        lines.append(f"- Kaggle size extrapolated from kaggle-groups (same group size, 1/9 of the crews): "
                     f"{rows / (k['windows'] / k['wall_s']) / 3600:.1f} h at {k['windows'] / k['wall_s']:,.0f} "
                     f"w/s end-to-end; peak memory bounded by one group, so about "
                     f"{k['max_single_rss'] / GiB:.2f} GiB")
    return lines


# --- command line -----------------------------------------------------------------------------

def _parse_args(argv: Optional[Sequence[str]]):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_predict",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="/tmp/bench-predict", help="data, models, logs, submissions")
    parser.add_argument("--sizes", default="one,four,kaggle-groups",
                        help=f"comma-separated, from {','.join(SIZES)} (default one,four,kaggle-groups)")
    parser.add_argument("--features", default="1,23", help="feature sets on `one`: 1 (r), 23 (all)")
    parser.add_argument("--skip-b32", action="store_true", help="leave out in-memory batch 32 (slow)")
    parser.add_argument("--skip-ablation", action="store_true",
                        help="leave out crewstream --concurrent 1 (on `one`, the first feature set)")
    parser.add_argument("--inmemory-max-gib", type=float, default=3.0,
                        help="largest window array the in-memory variants build (default 3 GiB)")
    parser.add_argument("--child", choices=("model", "inmemory"), help=argparse.SUPPRESS)
    for name in ("--data", "--model-dir", "--csv", "--output", "--report"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--max-bytes", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parse_args(argv)
    if args.child == "model":
        child_model(args.data, args.model_dir)
        return 0
    if args.child == "inmemory":
        child_inmemory(args.csv, args.model_dir, args.batch_size, args.max_bytes, args.output, args.report)
        return 0
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    sizes = [s for s in args.sizes.split(",") if s]
    feature_sets = [f for f in args.features.split(",") if f]
    header = machine_header()
    started = time.perf_counter()
    results, checks = [], []
    for features in feature_sets if "one" in sizes else []:
        model, csv = make_model(workdir, features), test_file(workdir, "one")
        for batch in ([] if args.skip_b32 else [32]) + [1024]:
            results.append(run_inmemory(workdir, csv, model, features, batch, args.inmemory_max_gib))
        results.append(run_crewstream(workdir, "one", csv, model, features))
        checks.append(f"- F={features}: in-memory b1024 vs crewstream: "
                      + agreement(results[-2]["output"], results[-1]["output"]))
        if features == feature_sets[0] and not args.skip_ablation:  # what --concurrent buys
            results.append(run_crewstream(workdir, "one", csv, model, features, ["--concurrent", "1"]))
    for size in (s for s in sizes if s != "one"):
        results.append(run_crewstream(workdir, size, test_file(workdir, size), make_model(workdir, "23"), "23"))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    report = "\n".join(
        ["# bench_predict", *header, f"- load average at end (1, 5, 15 min): {load}",
         f"- window {WINDOW}, stride 1 (one window per row), model LSTM(64) -> Dense(4); crewstream with its "
         f"defaults (batch 1024, --concurrent {_concurrency()}); total {time.perf_counter() - started:.0f} s", "",
         table("predict: in-memory (docs/DATA.md) vs crewstream", HEADER, rows_of(results)), "",
         *ratios(results), *checks])
    print("\n" + report)
    (workdir / "results.md").write_text(report + "\n")
    return 0


def _concurrency() -> int:
    from trainer.predict import default_concurrency

    return default_concurrency()


if __name__ == "__main__":
    sys.exit(main())
