"""The in-memory way: what `crewstream preprocess` does, written the way the TensorFlow tutorials do it.

    pd.read_csv -> sort by (crew, seat, experiment, time) -> split by crew -> z-score with the
    TRAIN rows' mean and population std -> numpy windows per (crew, seat, experiment) group ->
    one tf.train.Example per window, built in Python -> tf.io.TFRecordWriter

Everything is held in memory at once: the whole frame, its scaled copy and every window of a split
(`X_train`, `y_train`), as the tutorials build them. It is the baseline `bench_preprocess.py`
measures the Beam job against, and the independent re-implementation the job's output is checked
against: nothing here calls `beam_jobs`; only the record keys, the CSV column names and the shard
file names come from `tfrecords_schema`, as for every other writer and reader.

What it does not do, unlike the job: validate rows (no dead-letter output; a bad cell fails
`read_csv` or the scaling), drop repeated (crew, seat, experiment, time) rows, compute min-max
scaling, write a tf.Transform graph or stats.json. On a clean file the windows are the same: same
keys, same labels, values equal to float32 rounding (the job scales float32 inputs, this float64).

Output (OUT/summary.json is not a stats.json: the folder is not a complete preprocess output):

    OUT/train/part-SSSSS-of-NNNNN.tfrecord   OUT/eval/part-SSSSS-of-NNNNN.tfrecord
    OUT/summary.json   {"splits": {split: {crews, num_rows, num_windows, class_counts, files}},
                        "scaling", "phases": [{name, seconds, rss_bytes}], "started_at"}

Command line (from the repository root):

    python -m benchmarks.inmemory_reference --input train.csv --output OUT \\
        [--features r,ecg,gsr] [--window 256] [--stride 32] [--max-gap 1.0] [--eval-crews 2] \\
        [--num-shards 1] [--tolist] [--profile OUT.prof]

`compare_outputs(reference_dir, job_dir)` parses both folders with `tfrecords_schema.parse_examples`
and lists every difference; `bench_preprocess.py --check` and the tests use it.
"""

import argparse
import cProfile
import importlib
import json
import logging
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import psutil

from tfrecords_schema import (CREW, END_TIME, EXPERIMENT, LABEL, LABEL_VOCABULARY, SEAT, WINDOW,
                              csv_columns, output_folder, parse_examples, read_stats, shard_files)

_LOG = logging.getLogger("crewstream.inmemory_reference")
SUMMARY_FILE = "summary.json"
GROUP_KEYS = [csv_columns.CREW, csv_columns.SEAT, csv_columns.EXPERIMENT]


class Phases:
    """Wall time and process RSS after each named step, for the summary and the log."""

    def __init__(self):
        self.started_at = time.time()
        self.records: List[Dict] = []
        self._last = time.perf_counter()
        self._process = psutil.Process()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        rss = self._process.memory_info().rss
        self.records.append({"name": name, "seconds": now - self._last, "rss_bytes": rss})
        _LOG.info("%-16s %7.2f s  rss %.2f GiB", name, now - self._last, rss / 2**30)
        self._last = now


def read_rows(path: str) -> pd.DataFrame:
    """The whole CSV as one DataFrame (pandas' default types: float64 signals)."""
    return pd.read_csv(path)


def sort_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows ordered by (crew, seat, experiment, time), time compared as a number."""
    return frame.sort_values(GROUP_KEYS + [csv_columns.TIME], kind="stable", ignore_index=True)


def fit_zscore(train: pd.DataFrame, features: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
    """(mean, std) float64 [F] of the TRAIN rows; population std (ddof 0), a zero std becomes 1."""
    mean = train[list(features)].mean().to_numpy(np.float64)
    std = train[list(features)].std(ddof=0).to_numpy(np.float64)
    return mean, np.where(std == 0, 1.0, std)


def scale(frame: pd.DataFrame, features: Sequence[str], mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """float32 [n, F]: (x - mean) / std."""
    return ((frame[list(features)] - mean) / std).to_numpy(np.float32)


def window_group(time_s: np.ndarray, values: np.ndarray, labels: np.ndarray, window: int, stride: int,
                 max_gap: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The windows of one time-sorted group, split into segments at gaps > max_gap seconds.

    Returns X float32 [N, window, F], y int64 [N] (label of the last row), end_time float64 [N].
    """
    breaks = list(np.flatnonzero(np.diff(time_s) > max_gap) + 1)
    X, y, end = [], [], []
    for a, b in zip([0] + breaks, breaks + [len(time_s)]):
        for start in range(a, b - window + 1, stride):
            last = start + window - 1
            X.append(values[start:start + window])
            y.append(labels[last])
            end.append(time_s[last])
    if not X:
        return np.zeros((0, window, values.shape[1]), np.float32), np.zeros(0, np.int64), np.zeros(0)
    return np.stack(X), np.asarray(y, np.int64), np.asarray(end, np.float64)


def make_windows(frame: pd.DataFrame, scaled: np.ndarray, window: int, stride: int, max_gap: float):
    """All windows of a sorted frame, group after group.

    Returns X float32 [N, window, F], y int64 [N], end_time float64 [N] and keys: a list of
    (crew, seat, experiment, count) per group, in order.
    """
    label_of = {name: i for i, name in enumerate(LABEL_VOCABULARY)}
    labels = frame[csv_columns.EVENT].map(label_of).to_numpy(np.int64)
    times = frame[csv_columns.TIME].to_numpy(np.float64)
    Xs, ys, ends, keys = [], [], [], []
    for (crew, seat, experiment), rows in sorted(frame.groupby(GROUP_KEYS).indices.items()):
        X, y, end = window_group(times[rows], scaled[rows], labels[rows], window, stride, max_gap)
        Xs.append(X), ys.append(y), ends.append(end)
        keys.append((int(crew), int(seat), str(experiment), len(y)))
    if not Xs:
        return np.zeros((0, window, scaled.shape[1]), np.float32), np.zeros(0, np.int64), np.zeros(0), []
    return np.concatenate(Xs), np.concatenate(ys), np.concatenate(ends), keys


def make_example(window_values: np.ndarray, label: int, crew: int, seat: int, experiment: str,
                 end_time: float, as_list: bool = False):
    """One tf.train.Example, built field by field the usual Python way.

    `FloatList(value=window.ravel())` converts numpy scalars one by one; `as_list` hands it a
    Python list instead (`.tolist()`), which is several times faster.
    """
    import tensorflow as tf

    values = window_values.ravel().tolist() if as_list else window_values.ravel()
    return tf.train.Example(features=tf.train.Features(feature={
        WINDOW: tf.train.Feature(float_list=tf.train.FloatList(value=values)),
        LABEL: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
        CREW: tf.train.Feature(int64_list=tf.train.Int64List(value=[crew])),
        SEAT: tf.train.Feature(int64_list=tf.train.Int64List(value=[seat])),
        EXPERIMENT: tf.train.Feature(bytes_list=tf.train.BytesList(value=[experiment.encode()])),
        END_TIME: tf.train.Feature(float_list=tf.train.FloatList(value=[float(end_time)])),
    }))


def write_split(out_dir: str, split: str, X: np.ndarray, y: np.ndarray, end: np.ndarray, keys,
                num_shards: int, as_list: bool = False) -> List[str]:
    """Write window i to shard i % num_shards; returns the shard paths relative to out_dir."""
    import tensorflow as tf

    files = [output_folder.shard_path(split, k, num_shards) for k in range(num_shards)]
    os.makedirs(os.path.join(out_dir, split), exist_ok=True)
    writers = [tf.io.TFRecordWriter(os.path.join(out_dir, f)) for f in files]
    i = 0
    for crew, seat, experiment, count in keys:
        for _ in range(count):
            example = make_example(X[i], y[i], crew, seat, experiment, end[i], as_list)
            writers[i % num_shards].write(example.SerializeToString())
            i += 1
    for writer in writers:
        writer.close()
    return files


def run(input_path: str, out_dir: str, features: Sequence[str] = csv_columns.SIGNALS, window: int = 256,
        stride: int = 32, max_gap: float = 1.0, eval_crews: Sequence[int] = (),
        num_shards: int = 1, as_list: bool = False) -> Dict:
    """Preprocess `input_path` into `out_dir` in memory; returns (and writes) the summary."""
    features = list(features)
    phases = Phases()
    importlib.import_module("tensorflow")  # its import time belongs to start-up, not to a phase
    phases.done("import")
    frame = read_rows(input_path)
    phases.done("read_csv")
    frame = sort_rows(frame)
    phases.done("sort")
    is_eval = frame[csv_columns.CREW].isin(list(eval_crews))
    splits = {output_folder.TRAIN: frame[~is_eval], output_folder.EVAL: frame[is_eval]}
    mean, std = fit_zscore(splits[output_folder.TRAIN], features)
    phases.done("fit_zscore")
    summary = {"input": input_path, "window": window, "stride": stride, "max_gap": max_gap,
               "features": features, "splits": {},
               "scaling": {f: {"mean": float(m), "std": float(s)} for f, m, s in zip(features, mean, std)}}
    for split, rows in splits.items():
        scaled = scale(rows, features, mean, std)
        phases.done(f"scale_{split}")
        X, y, end, keys = make_windows(rows, scaled, window, stride, max_gap)
        phases.done(f"windows_{split}")
        files = write_split(out_dir, split, X, y, end, keys, num_shards, as_list)
        phases.done(f"examples_{split}")
        counts = np.bincount(y, minlength=len(LABEL_VOCABULARY))
        summary["splits"][split] = {
            "crews": sorted(int(c) for c in rows[csv_columns.CREW].unique()),
            "num_rows": len(rows), "num_windows": len(y),
            "class_counts": {name: int(counts[i]) for i, name in enumerate(LABEL_VOCABULARY)},
            "files": files,
        }
        del scaled, X, y, end
    summary["phases"] = phases.records
    summary["started_at"] = phases.started_at
    with open(os.path.join(out_dir, SUMMARY_FILE), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


# ---------------------------------------------------------------------------------------------
# Reading both outputs back and comparing them

def read_records(files: Sequence[str], window: int, num_features: int,
                 compression: str = "NONE") -> Dict[str, np.ndarray]:
    """Every record of `files`, parsed with the schema's spec, sorted by (crew, seat, experiment,
    end_time). window float32 [N, window, F]; experiment str [N]; the rest [N]."""
    import tensorflow as tf

    parts: Dict[str, List[np.ndarray]] = {key: [] for key in (WINDOW, LABEL, CREW, SEAT, EXPERIMENT, END_TIME)}
    if files:
        dataset = tf.data.TFRecordDataset(list(files), compression_type="" if compression == "NONE" else compression)
        for batch in dataset.batch(1024):
            parsed = parse_examples(batch, window, num_features)
            for key in parts:
                parts[key].append(parsed[key].numpy())
    empty = {WINDOW: np.zeros((0, window, num_features), np.float32), EXPERIMENT: np.zeros(0, object)}
    records = {key: np.concatenate(v) if v else empty.get(key, np.zeros(0)) for key, v in parts.items()}
    records[EXPERIMENT] = np.asarray([e.decode() if isinstance(e, bytes) else e for e in records[EXPERIMENT]],
                                     dtype=str)
    order = np.lexsort((records[END_TIME], records[EXPERIMENT], records[SEAT], records[CREW]))
    return {key: v[order] for key, v in records.items()}


def _keys(records: Dict[str, np.ndarray]) -> List[Tuple]:
    return list(zip(records[CREW].tolist(), records[SEAT].tolist(), records[EXPERIMENT].tolist(),
                    records[END_TIME].tolist()))


def compare_records(split: str, ref: Dict[str, np.ndarray], job: Dict[str, np.ndarray],
                    atol: float) -> Tuple[List[str], float]:
    """Differences between two sorted record sets; returns (problems, max |window difference|)."""
    n_ref, n_job = len(ref[LABEL]), len(job[LABEL])
    if n_ref != n_job:
        ref_keys, job_keys = set(_keys(ref)), set(_keys(job))
        only_ref, only_job = sorted(ref_keys - job_keys)[:3], sorted(job_keys - ref_keys)[:3]
        return [f"{split}: {n_ref} windows in the reference, {n_job} in the job "
                f"(only in reference e.g. {only_ref}; only in job e.g. {only_job})"], float("nan")
    problems = []
    same_key = ((ref[CREW] == job[CREW]) & (ref[SEAT] == job[SEAT]) & (ref[EXPERIMENT] == job[EXPERIMENT])
                & (ref[END_TIME] == job[END_TIME]))
    if not same_key.all():
        i = int(np.flatnonzero(~same_key)[0])
        problems.append(f"{split}: {int((~same_key).sum())} keys differ, first at sorted position {i}: "
                        f"reference {_keys(ref)[i]} vs job {_keys(job)[i]}")
        return problems, float("nan")
    if len(set(_keys(ref))) < n_ref:
        problems.append(f"{split}: repeated (crew, seat, experiment, end_time) keys")
    bad_labels = np.flatnonzero(ref[LABEL] != job[LABEL])
    if len(bad_labels):
        problems.append(f"{split}: {len(bad_labels)} labels differ, e.g. at {_keys(ref)[bad_labels[0]]}")
    diff = np.abs(ref[WINDOW].astype(np.float64) - job[WINDOW].astype(np.float64))
    max_diff = float(diff.max()) if diff.size else 0.0
    if max_diff > atol:
        where = np.unravel_index(int(diff.argmax()), diff.shape)
        problems.append(f"{split}: window values differ by up to {max_diff:.3g} > {atol} "
                        f"(window {_keys(ref)[where[0]]}, row {where[1]}, feature {where[2]})")
    return problems, max_diff


def compare_outputs(reference_dir: str, job_dir: str, atol: float = 1e-5) -> Tuple[List[str], Dict]:
    """Compare a reference folder (summary.json) with a job folder (stats.json), split by split.

    Returns (problems, details): an empty `problems` means the same windows, keys and labels, and
    values within `atol`; details is {split: {"windows": n, "max_abs_diff": d}}.
    """
    with open(os.path.join(reference_dir, SUMMARY_FILE)) as f:
        summary = json.load(f)
    stats = read_stats(job_dir)
    window, features = stats["window"], stats["features"]
    problems, details = [], {}
    for key in ("window", "stride", "max_gap", "features"):
        if summary[key] != stats[key]:
            problems.append(f"{key}: reference {summary[key]!r} vs job {stats[key]!r}")
    if problems:
        return problems, details
    for split in output_folder.splits_of(stats):
        ref = read_records([os.path.join(reference_dir, f) for f in summary["splits"][split]["files"]],
                           window, len(features))
        job = read_records(shard_files(job_dir, stats, split), window, len(features), stats["compression"])
        found, max_diff = compare_records(split, ref, job, atol)
        problems += found
        details[split] = {"windows": len(ref[LABEL]), "max_abs_diff": max_diff}
        if summary["splits"][split]["num_rows"] != stats["splits"][split]["num_rows"]:
            problems.append(f"{split}: num_rows {summary['splits'][split]['num_rows']} in the reference, "
                            f"{stats['splits'][split]['num_rows']} in the job")
    return problems, details


# ---------------------------------------------------------------------------------------------
# Command line

def _parse_args(argv: Optional[Sequence[str]]):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.inmemory_reference",
        description="In-memory pandas/numpy version of `crewstream preprocess` (the baseline).")
    parser.add_argument("--input", required=True, help="one train CSV")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--features", default=",".join(csv_columns.SIGNALS),
                        help="comma-separated signal columns (default: all 23)")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--stride", type=int, default=32)
    parser.add_argument("--max-gap", type=float, default=1.0)
    parser.add_argument("--eval-crews", default="", help="comma-separated crews for the eval split")
    parser.add_argument("--num-shards", type=int, default=1, help="files per split (default 1)")
    parser.add_argument("--tolist", action="store_true",
                        help="build FloatList from window.ravel().tolist() instead of the ndarray")
    parser.add_argument("--profile", help="write cProfile statistics of the run to this file")
    args = parser.parse_args(argv)
    args.features = [f.strip() for f in args.features.split(",") if f.strip()]
    unknown = [f for f in args.features if f not in csv_columns.SIGNALS]
    if unknown or not args.features:
        parser.error(f"--features: unknown {unknown}; choose from {','.join(csv_columns.SIGNALS)}")
    args.eval_crews = [int(c) for c in args.eval_crews.split(",") if c.strip()]
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = _parse_args(argv)
    run_args = (args.input, args.output, args.features, args.window, args.stride, args.max_gap,
                args.eval_crews, args.num_shards, args.tolist)
    if args.profile:
        profiler = cProfile.Profile()
        summary = profiler.runcall(run, *run_args)
        profiler.dump_stats(args.profile)
    else:
        summary = run(*run_args)
    for split, s in summary["splits"].items():
        print(f"{split:<6} crews {','.join(map(str, s['crews'])) or '-':<14} rows {s['num_rows']:>11,} "
              f"windows {s['num_windows']:>9,}  {s['class_counts']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
