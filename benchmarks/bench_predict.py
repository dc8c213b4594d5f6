"""Benchmark: `crewstream predict` against the in-memory way of docs/DATA.md, side by side in one run.

    .venv/bin/python -m benchmarks.bench_predict                            # the default set (lstm)
    .venv/bin/python -m benchmarks.bench_predict --sizes one --features 1   # a quick look
    .venv/bin/python -m benchmarks.bench_predict --sizes one,four,kaggle-groups,kaggle
    .venv/bin/python -m benchmarks.bench_predict --models tcn --sizes one,kaggle --features 23
    .venv/bin/python -m benchmarks.bench_predict --models lstm,tcn --sizes one --test-seconds 8   # smoke

Test files (written by `crewstream synth`, seed 0; 256 rows per second per (crew, seat)):

    one            crew 1 x 1077 s: 551,424 rows, the size of docs/DATA.md's one-crew baseline
    four           crews 1-4 x 1077 s: 2,205,696 rows, 4x `one` with groups of the same size
    kaggle-groups  crew 1 x 3899 s: 1,996,288 rows in groups of Kaggle's size (about 1M rows)
    kaggle         crews 1-8, 13 x 3899 s: 17,965,184 rows, the size of Kaggle's test.csv

`--test-seconds S` gives every size S seconds instead (same crews; a smoke run's tiny files).

The models (`--models`, default lstm): trainer.model's network of each kind with train's default
settings (`lstm`: LSTM(64) -> Dense(4); `tcn`: causal dilated Conv1D blocks, as many as fit) on
windows of 256 rows, trained one epoch on a small synth train file (crews 1-3 x 20 s)
preprocessed with the feature set. Its weights feed the in-memory variants, its export
(MODEL/serving) feeds crewstream: one network per (kind, feature set).

Variants, on `one`, for each feature set (1 = `r`; 23 = all signals) and each model:

    inmemory-b32    pd.read_csv, sort by (crew, seat, experiment, time), z-score with stats.json's
    inmemory-b1024  scaling in numpy, every group left-padded and cut into stride-1 windows with
                    numpy, all concatenated (every window materialized), Keras model.predict(X,
                    batch_size=32 or 1024), DataFrame.to_csv. When the windows would not fit in
                    --inmemory-max-gib, only the first windows that do are built and predicted:
                    the row says `subset`, and its windows/s is still a fair rate.
    crewstream      lstm: python -m beam_jobs.predict --model-dir MODEL --input CSV --output SUB
                    (defaults: the windowed path)
    crewstream --concurrent 1   the same with one model call in flight (lstm, first feature set only)
    crewstream --path windows   tcn: serving_default on every row's window, on a time prefix of the
                    file (the earliest --windows-rows rows, spread evenly over the groups: each kept
                    row has the same window as in the whole file); the row says `subset`
    crewstream --path sweep     tcn: the `sequence` signature once over each group (--sweep-rows)

On the other sizes only crewstream runs (all 23 features; the tcn with --path sweep). Every run is
its own subprocess, one at a time: wall time from start to exit (imports and model loading
included), peak RSS of the process tree (0.2 s samples of the RSS summed over the process and its
descendants) and of the largest process (the larger of its samples and the kernel's ru_maxrss
from wait4), and CPU seconds (user + system). Model windows/s is the model phase alone for
in-memory (model.predict) and the model calls for crewstream (its own log: summed over its
workers); end-to-end windows/s is windows / wall time (one window per row: rows/s). Submissions
of one model are compared on their common ids (max |difference| of the probabilities): in-memory
b1024 against crewstream's default (lstm) or sweep (tcn), and the tcn's windowed subset against
its sweep.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from benchmarks.bench_trainer import default_params, table
from benchmarks.common import GiB, REPO_ROOT, count_rows, load_average, machine_header, measure
from tfrecords_schema import csv_columns

WINDOW = 256
SIZES = {  # name: (test crews, test seconds per (crew, seat))
    "one": ("1", 1077.0),
    "four": ("1,2,3,4", 1077.0),
    "kaggle-groups": ("1", 3899.0),
    "kaggle": ("1,2,3,4,5,6,7,8,13", 3899.0),
}
FEATURE_SETS = {"1": ["r"], "23": list(csv_columns.SIGNALS)}
KINDS = ("lstm", "tcn")  # trainer.model.MODELS, named here so the parent need not import TensorFlow
DEFAULT_WINDOWS_ROWS = 131_072  # the tcn's windowed predict: rows of `one` it runs on (0: all)
# beam_jobs.predict's last line: "... in S s (N rows/s; model calls M s, R rows/s)"
SUMMARY = re.compile(r"model calls ([\d.]+) s")


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


def test_file(workdir: Path, size: str, test_seconds: Optional[float] = None) -> Path:
    """WORKDIR/data/SIZE/test.csv (or data/SIZE-Ss with `test_seconds` S), written once."""
    crews, seconds = SIZES[size]
    folder = workdir / "data" / size
    if test_seconds:
        seconds, folder = test_seconds, workdir / "data" / f"{size}-{test_seconds:g}s"
    if not (folder / "test.csv").exists():
        started = time.perf_counter()
        run_quiet(python("-m", "crewstream.synth", "--out", str(folder), "--crews", "1", "--seconds", "1",
                         "--test-crews", crews, "--test-seconds", str(seconds)), workdir / f"synth-{size}.log")
        print(f"wrote {folder / 'test.csv'} in {time.perf_counter() - started:.0f} s", flush=True)
    return folder / "test.csv"


def make_model(workdir: Path, features: str, kind: str = "lstm") -> Path:
    """OUT (preprocess of a small train file) and MODEL (serving + Keras weights) for a feature set
    and a model kind; a model is made again when its keras/model.json (written last) is missing."""
    train = workdir / "data" / "train" / "train.csv"
    if not train.exists():
        run_quiet(python("-m", "crewstream.synth", "--out", str(train.parent), "--crews", "1,2,3",
                         "--seconds", "20", "--test-seconds", "1"), workdir / "synth-train.log")
    out = workdir / f"out-{features}"
    model = workdir / f"model-{kind}-{features}"
    if not (model / "keras" / "model.json").exists():
        if not (out / "stats.json").exists():
            run_quiet(python("-m", "beam_jobs.preprocess", "--input", str(train), "--output", str(out),
                             "--features", ",".join(FEATURE_SETS[features]), "--window", str(WINDOW),
                             "--stride", "32", "--eval-crews", "2", "--num-shards", "2"),
                      workdir / f"preprocess-{features}.log")
        run_quiet(python("-m", "benchmarks.bench_predict", "--child", "model", "--data", str(out),
                         "--model-dir", str(model), "--kind", kind), workdir / f"{model.name}.log")
    return model


def child_model(data: str, model_dir: str, kind: str = "lstm") -> None:
    """Train a `kind` network (train's defaults: default_params) one epoch on OUT `data`; export
    MODEL/serving and keep the Keras weights, stats.json and, last, the settings (keras/model.json)."""
    import dataclasses

    from trainer import data as data_lib, export, model as model_lib
    from tfrecords_schema import read_stats

    stats = read_stats(data)
    params = default_params(kind, stats["window"])
    model_lib.set_seed(0)
    net = model_lib.build_model(stats["window"], len(stats["features"]), params)
    net.fit(data_lib.make_dataset(data, "train", 64, shuffle=True, seed=0), epochs=1, verbose=0)
    export.export_serving(net, data, model_dir, stats, params)
    os.makedirs(os.path.join(model_dir, "keras"), exist_ok=True)
    net.save_weights(os.path.join(model_dir, "keras", "weights"))
    with open(os.path.join(model_dir, "keras", "stats.json"), "w") as f:
        json.dump(stats, f)
    with open(os.path.join(model_dir, "keras", "model.json.tmp"), "w") as f:
        json.dump({"params": dataclasses.asdict(params), "describe": params.describe()}, f)
    os.replace(os.path.join(model_dir, "keras", "model.json.tmp"), os.path.join(model_dir, "keras", "model.json"))


def load_keras(model_dir: str):
    """(network, stats) of a model child_model made: the Keras network, built with the settings
    it was trained with (keras/model.json), with its trained weights."""
    from trainer import model as model_lib

    with open(os.path.join(model_dir, "keras", "stats.json")) as f:
        stats = json.load(f)
    params = model_lib.ModelParams(**described(model_dir)["params"])
    net = model_lib.build_model(stats["window"], len(stats["features"]), params)
    net.load_weights(os.path.join(model_dir, "keras", "weights")).expect_partial()
    return net, stats


def described(model_dir: Path) -> Dict:
    """keras/model.json of a model child_model made: {"params": ModelParams fields, "describe": str}."""
    with open(os.path.join(model_dir, "keras", "model.json")) as f:
        return json.load(f)


def time_prefix(frame, rows: int):
    """Boolean mask of the earliest ceil(rows / groups) rows (by time) of every (crew, seat,
    experiment) group of `frame`, in file order. Every kept row keeps all the rows before it in
    its group, so its window (docs/DESIGN.md, Prediction) is the same in the subset as in the whole file."""
    import numpy as np

    groups = frame.groupby([csv_columns.CREW, csv_columns.SEAT, csv_columns.EXPERIMENT], sort=False)
    per_group = -(-rows // max(1, groups.ngroups))
    rank = groups[csv_columns.TIME].rank(method="first")
    return (rank <= per_group).to_numpy(np.bool_)


def child_subset(csv: str, rows: int, output: str) -> None:
    """Write the rows of `csv` that time_prefix keeps (about `rows`), in file order, to `output`."""
    import pandas as pd

    frame = pd.read_csv(csv, dtype={csv_columns.EXPERIMENT: str}, float_precision="round_trip")
    frame[time_prefix(frame, rows)].to_csv(output, index=False)


def subset_file(workdir: Path, csv: Path, rows: int) -> Path:
    """CSV's time prefix of about `rows` rows (see time_prefix), written once beside it."""
    output = csv.parent / f"test-first-{rows}.csv"
    if not output.exists():
        run_quiet(python("-m", "benchmarks.bench_predict", "--child", "subset", "--csv", str(csv),
                         "--rows", str(rows), "--output", str(output)), workdir / f"subset-{rows}.log")
    return output


# --- the in-memory way ------------------------------------------------------------------------

def sort_and_scale(frame, stats: Dict):
    """(frame sorted by (crew, seat, experiment, time), stable; its features z-scored with
    stats.json's scaling in float64, as float32 [N, F])."""
    import numpy as np

    frame = frame.sort_values([csv_columns.CREW, csv_columns.SEAT, csv_columns.EXPERIMENT, csv_columns.TIME],
                              kind="stable", ignore_index=True)
    features = stats["features"]
    mean = np.array([stats["scaling"][n]["mean"] for n in features])
    std = np.array([stats["scaling"][n]["std"] for n in features])
    return frame, ((frame[features].to_numpy(np.float64) - mean) / std).astype(np.float32)


def stride1_windows(frame, scaled, window: int, limit: int):
    """(X float32 [N, W, F], ids int64 [N]): the window of every row of the sorted `frame` (see
    sort_and_scale), each group left-padded with W-1 copies of its first row, all materialized
    (a copy, not a view); groups in key order, only the first `limit` windows."""
    import numpy as np

    parts, ids, total = [], [], 0
    for _, rows in sorted(frame.groupby([csv_columns.CREW, csv_columns.SEAT, csv_columns.EXPERIMENT]).indices.items()):
        values = scaled[rows]
        padded = np.concatenate([np.repeat(values[:1], window - 1, axis=0), values])
        take = min(len(rows), limit - total)
        parts.append(np.lib.stride_tricks.sliding_window_view(padded, window, axis=0).transpose(0, 2, 1)[:take])
        ids.append(frame[csv_columns.ID].to_numpy()[rows][:take])
        total += take
        if total >= limit:
            break
    return np.concatenate(parts), np.concatenate(ids).astype(np.int64)  # every window: [N, W, F]


def child_inmemory(csv: str, model_dir: str, batch_size: int, max_bytes: int, output: str, report: str) -> None:
    """docs/DATA.md's way, every window in memory at once; writes phase times to `report` (JSON)."""
    import pandas as pd

    marks = [("start", time.perf_counter())]
    net, stats = load_keras(model_dir)
    features, w = stats["features"], stats["window"]
    marks.append(("load model", time.perf_counter()))
    frame = pd.read_csv(csv)
    marks.append(("read_csv", time.perf_counter()))
    frame, scaled = sort_and_scale(frame, stats)
    marks.append(("sort+scale", time.perf_counter()))
    X, ids = stride1_windows(frame, scaled, w, max(1, max_bytes // (w * len(features) * 4)))
    marks.append(("windows", time.perf_counter()))
    probabilities = net.predict(X, batch_size=batch_size, verbose=0)
    marks.append(("model.predict", time.perf_counter()))
    sub = pd.DataFrame(probabilities, columns=list(stats["label_vocabulary"]))
    sub.insert(0, csv_columns.ID, ids)
    sub.to_csv(output, index=False)
    marks.append(("to_csv", time.perf_counter()))
    phases = {name: t - marks[i][1] for i, (name, t) in enumerate(marks[1:])}
    with open(report, "w") as f:
        json.dump({"windows": int(len(X)), "rows": int(len(frame)), "window_bytes": int(X.nbytes),
                   "phases": phases}, f)


# --- measured runs ----------------------------------------------------------------------------

def measured(name: str, cmd: Sequence[str], workdir: Path) -> Dict:
    """common.measure of `cmd` (RSS only), logged to WORKDIR/logs/NAME.log; exits when it fails."""
    log = workdir / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"running {name} ...", flush=True)
    result = measure(cmd, log, env=_env())
    if result["returncode"]:
        raise SystemExit(f"{name} failed (exit {result['returncode']}); see {log}")
    print(f"  {result['wall_s']:.0f} s, peak RSS {result['max_single_rss'] / GiB:.2f} GiB", flush=True)
    return result


def run_inmemory(workdir: Path, csv: Path, model: Path, features: str, kind: str, batch: int,
                 max_gib: float) -> Dict:
    name = f"one-f{features}-{kind}-inmemory-b{batch}"
    report, output = workdir / "logs" / f"{name}.json", workdir / "subs" / f"{name}.csv"
    output.parent.mkdir(parents=True, exist_ok=True)
    result = measured(name, python("-m", "benchmarks.bench_predict", "--child", "inmemory", "--csv", str(csv),
                                   "--model-dir", str(model), "--batch-size", str(batch),
                                   "--max-bytes", str(int(max_gib * GiB)), "--output", str(output),
                                   "--report", str(report)), workdir)
    with open(report) as f:
        child = json.load(f)
    subset = child["windows"] < child["rows"]
    return {**result, "name": name, "size": "one", "features": features, "kind": kind, "role": "inmemory",
            "variant": f"inmemory b{batch}", "batch": batch, "windows": child["windows"], "rows": child["rows"],
            "model_s": child["phases"]["model.predict"],
            "note": (f"subset: all {child['rows']:,} windows need "
                     f"{child['rows'] * WINDOW * int(features) * 4 / GiB:.1f} GiB") if subset else "",
            "output": str(output), "model_dir": str(model)}


def run_crewstream(workdir: Path, size: str, csv: Path, model: Path, features: str, kind: str = "lstm",
                   extra: Sequence[str] = (), role: str = "crewstream", note: str = "") -> Dict:
    """`python -m beam_jobs.predict` on CSV with MODEL and `extra` flags; `role` names the row for
    the ratios: crewstream (defaults), ablation, windows or sweep (the tcn's --path)."""
    name = f"{size}-f{features}-{kind}-{role}"
    output = workdir / "subs" / f"{name}.csv"
    output.parent.mkdir(parents=True, exist_ok=True)
    result = measured(name, python("-m", "beam_jobs.predict", "--model-dir", str(model), "--input", str(csv),
                                   "--output", str(output), "--progress", "log", *extra), workdir)
    found = SUMMARY.search(Path(result["log"]).read_text())
    rows = count_rows(output)
    return {**result, "name": name, "size": size, "features": features, "kind": kind, "role": role,
            "variant": "crewstream" + (" " + " ".join(extra) if extra else ""), "windows": rows, "rows": rows,
            "model_s": float(found.group(1)) if found else float("nan"), "note": note, "output": str(output),
            "model_dir": str(model)}


def sweep_flags(args) -> List[str]:
    return ["--path", "sweep"] + (["--sweep-rows", str(args.sweep_rows)] if args.sweep_rows else [])


def run_one(workdir: Path, features: str, kind: str, args, first: bool) -> Tuple[List[Dict], List[str]]:
    """The one-crew comparison of one model: (results, agreement lines)."""
    model, csv = make_model(workdir, features, kind), test_file(workdir, "one", args.test_seconds)
    results = [run_inmemory(workdir, csv, model, features, kind, batch, args.inmemory_max_gib)
               for batch in ([] if args.skip_b32 else [32]) + [1024]]
    base = results[-1]
    if kind == "lstm":
        results.append(run_crewstream(workdir, "one", csv, model, features, kind))
        checks = [f"- F={features}, lstm: in-memory b1024 vs crewstream: "
                  + agreement(base["output"], results[-1]["output"])]
        if first and not args.skip_ablation:  # what --concurrent buys
            results.append(run_crewstream(workdir, "one", csv, model, features, kind, ["--concurrent", "1"],
                                          role="ablation"))
        return results, checks
    total = count_rows(csv)  # data rows (lines less the header)
    part = csv if not args.windows_rows or args.windows_rows >= total else subset_file(
        workdir, csv, args.windows_rows)
    windows = run_crewstream(workdir, "one", part, model, features, kind, ["--path", "windows"], role="windows")
    if part != csv:
        windows["note"] = (f"subset: the earliest {windows['rows']:,} of {total:,} rows "
                           f"(a time prefix of every group)")
    sweep = run_crewstream(workdir, "one", csv, model, features, kind, sweep_flags(args), role="sweep")
    checks = [f"- F={features}, tcn: in-memory b1024 vs sweep: " + agreement(base["output"], sweep["output"]),
              f"- F={features}, tcn: windowed predict vs sweep: " + agreement(windows["output"], sweep["output"])]
    return results + [windows, sweep], checks


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
        out.append([r["size"], f"{r['rows']:,}", r["features"], r["kind"], r["variant"], f"{r['windows']:,}",
                    f"{r['model_s']:.1f}", f"{r['windows'] / r['model_s']:,.0f}", f"{r['wall_s']:.1f}",
                    f"{r['windows'] / r['wall_s']:,.0f}", f"{r['peak_tree_rss'] / GiB:.2f}",
                    f"{r['max_single_rss'] / GiB:.2f}", f"{r['cpu_s']:.0f}", r["note"]])
    return out


HEADER = ["file", "rows", "F", "model", "variant", "windows", "model s", "model w/s", "wall s",
          "end-to-end w/s", "peak tree RSS GiB", "peak RSS GiB", "CPU s", "note"]


def find(results: List[Dict], **fields) -> Optional[Dict]:
    """The first result whose fields equal `fields` (e.g. features="23", kind="tcn", role="sweep")."""
    return next((r for r in results if all(r.get(k) == v for k, v in fields.items())), None)


def end_to_end(r: Dict) -> float:
    return r["windows"] / r["wall_s"]


def model_rate(r: Dict) -> float:
    return r["windows"] / r["model_s"]


def ratios(results: List[Dict]) -> List[str]:
    lines = []
    for features in FEATURE_SETS:
        for kind in KINDS:
            base = find(results, size="one", features=features, kind=kind, role="inmemory", batch=1024)
            ours = find(results, size="one", features=features, kind=kind,
                        role="sweep" if kind == "tcn" else "crewstream")
            if base and ours:
                rate = model_rate(base)
                label = "the sweep" if kind == "tcn" else "crewstream (windows)"
                lines.append(f"- F={features}, {kind}: {label} end-to-end "
                             f"{end_to_end(ours):,.0f} rows/s = {end_to_end(ours) / rate:.2f}x in-memory "
                             f"model.predict at batch 1024 ({rate:,.0f} w/s, model phase only); its model calls alone "
                             f"{model_rate(ours) / rate:.2f}x"
                             + (" (target: the sweep >= 20x)" if kind == "tcn" else ""))
            windows = find(results, size="one", features=features, kind=kind, role="windows")
            if windows and ours:
                lines.append(f"- F={features}, tcn: sweep model calls {model_rate(ours):,.0f} rows/s = "
                             f"{model_rate(ours) / model_rate(windows):.1f}x the windowed model calls "
                             f"({model_rate(windows):,.0f} windows/s)")
    default = {"lstm": "crewstream", "tcn": "sweep"}
    for kind in KINDS:
        one, four = (find(results, size=s, features="23", kind=kind, role=default[kind]) for s in ("one", "four"))
        if one and four:
            lines.append(f"- {kind}, memory as the file grows 4x (F=23): peak RSS {one['max_single_rss'] / GiB:.2f}"
                         f" -> {four['max_single_rss'] / GiB:.2f} GiB "
                         f"({four['max_single_rss'] / one['max_single_rss']:.2f}x)")
        k = find(results, size="kaggle-groups", features="23", kind=kind, role=default[kind])
        if k and not find(results, size="kaggle", kind=kind):
            lines.append(f"- {kind}, Kaggle size extrapolated from kaggle-groups (same group size, 1/9 of the "
                         f"crews): {17_966_592 / end_to_end(k) / 3600:.2f} h at {end_to_end(k):,.0f} rows/s "
                         f"end-to-end; peak memory bounded by one group, so about "
                         f"{k['max_single_rss'] / GiB:.2f} GiB")
    sweep, lstm = (find(results, size="kaggle", kind=kind, role=default[kind]) for kind in ("tcn", "lstm"))
    if sweep:
        lines.append(f"- tcn sweep, Kaggle size: {sweep['wall_s'] / 60:.1f} min end to end (target <= 10), "
                     f"{end_to_end(sweep):,.0f} rows/s, peak tree RSS {sweep['peak_tree_rss'] / GiB:.2f} GiB "
                     f"(target <= 2)" + (f"; {lstm['wall_s'] / sweep['wall_s']:.1f}x faster than the lstm's "
                                         f"windowed predict in this run" if lstm else ""))
    return lines


# --- command line -----------------------------------------------------------------------------

def _parse_args(argv: Optional[Sequence[str]]):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_predict",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="/tmp/bench-predict", help="data, models, logs, submissions")
    parser.add_argument("--sizes", default="one,four,kaggle-groups",
                        help=f"comma-separated, from {','.join(SIZES)} (default one,four,kaggle-groups)")
    parser.add_argument("--features", default="1,23", help="feature sets on `one`: 1 (r), 23 (all)")
    parser.add_argument("--models", default="lstm",
                        help=f"comma-separated model kinds, from {','.join(KINDS)} (default lstm)")
    parser.add_argument("--skip-b32", action="store_true", help="leave out in-memory batch 32 (slow)")
    parser.add_argument("--skip-ablation", action="store_true",
                        help="leave out crewstream --concurrent 1 (on `one`, the lstm, the first feature set)")
    parser.add_argument("--inmemory-max-gib", type=float, default=3.0,
                        help="largest window array the in-memory variants build (default 3 GiB)")
    parser.add_argument("--windows-rows", type=int, default=DEFAULT_WINDOWS_ROWS,
                        help="the tcn's --path windows run on the earliest this many rows of `one` "
                             f"(a time prefix of every group; 0: all; default {DEFAULT_WINDOWS_ROWS:,})")
    parser.add_argument("--sweep-rows", type=int, default=None,
                        help="predict --sweep-rows for the tcn's sweeps (default: predict's)")
    parser.add_argument("--test-seconds", type=float, default=None,
                        help="seconds per (crew, seat) of every test file instead of its size's (smoke runs)")
    parser.add_argument("--child", choices=("model", "inmemory", "subset"), help=argparse.SUPPRESS)
    for name in ("--data", "--model-dir", "--csv", "--output", "--report"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="lstm", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--max-bytes", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.sizes = [s for s in args.sizes.split(",") if s]
    args.features = [f for f in args.features.split(",") if f]
    args.models = [m for m in args.models.split(",") if m]
    for name, given, known in (("--sizes", args.sizes, SIZES), ("--features", args.features, FEATURE_SETS),
                               ("--models", args.models, KINDS)):
        unknown = sorted(set(given) - set(known))
        if unknown:
            parser.error(f"{name}: unknown {', '.join(unknown)}; known: {', '.join(known)}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parse_args(argv)
    if args.child == "model":
        child_model(args.data, args.model_dir, args.kind)
        return 0
    if args.child == "inmemory":
        child_inmemory(args.csv, args.model_dir, args.batch_size, args.max_bytes, args.output, args.report)
        return 0
    if args.child == "subset":
        child_subset(args.csv, args.rows, args.output)
        return 0
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    header = machine_header()
    started = time.perf_counter()
    results, checks = [], []
    for features in args.features if "one" in args.sizes else []:
        for kind in args.models:
            more, lines = run_one(workdir, features, kind, args, first=features == args.features[0])
            results += more
            checks += lines
    for size in (s for s in args.sizes if s != "one"):
        for kind in args.models:
            results.append(run_crewstream(workdir, size, test_file(workdir, size, args.test_seconds),
                                          make_model(workdir, "23", kind), "23", kind,
                                          sweep_flags(args) if kind == "tcn" else [],
                                          role="sweep" if kind == "tcn" else "crewstream"))
    models = sorted({described(r["model_dir"])["describe"] for r in results})
    report = "\n".join(
        ["# bench_predict", *header, f"- load average at end (1, 5, 15 min): {load_average()}",
         f"- window {WINDOW}, stride 1 (one window per row); models (one epoch on crews 1-3 x 20 s): "
         + "; ".join(models),
         f"- crewstream with its defaults (batch 1024, --concurrent {_concurrency()}"
         + (f", --sweep-rows {args.sweep_rows}" if args.sweep_rows else "") + ")"
         + (f"; test files of {args.test_seconds:g} s per (crew, seat), not the sizes' own"
            if args.test_seconds else "")
         + f"; total {time.perf_counter() - started:.0f} s", "",
         table("predict: in-memory (docs/DATA.md) vs crewstream", HEADER, rows_of(results)), "",
         *ratios(results), *checks])
    print("\n" + report)
    (workdir / "results.md").write_text(report + "\n")
    return 0


def _concurrency() -> int:
    from beam_jobs.inference import default_concurrency

    return default_concurrency()


if __name__ == "__main__":
    sys.exit(main())
