"""Defaults benchmark: train's candidates scored end to end on a LOFT flight of a crew in no split.

    .venv/bin/python -m benchmarks.bench_flight                       # every candidate, seeds 0,1,2
    .venv/bin/python -m benchmarks.bench_flight --candidates default --seeds 0 --epochs 2

For each seed, a synth sample drawn with that seed (so the people differ from seed to seed, not
only the weights' initialization): train crews, a val crew, an eval crew, and a test file (LOFT:
A, B, C and D stretches alternating) of a crew in none of them. The flight is 600 s per seat by
default: a LOFT holds a B burst about every 60 s, so a shorter one scores B's recall on one or two
bursts, a coin toss per burst rather than a rate. Each candidate is a set of
`crewstream train` flags, run as a user runs them, in order: `synth` -> `preprocess`
(`--val-crews`, `--eval-crews`; the sequence layout too when a candidate trains `--dense`) ->
`train` (early stopping and calibration look at val only) -> `predict` -> `score` (Kaggle's log
loss: clip 1e-15, rows renormalized). The flight's log loss without calibration comes from the same
submission, its temperature undone (p = softmax(T log p'), the serving config's T): calibration
on/off costs no second training.

Prints one row per candidate and seed, and per candidate the means over seeds and whether it meets
the target (log loss <= 0.25 and macro F1 >= 0.85 as means, recall of B and D >= 0.7 in every seed).
"""

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import sys
import time
from typing import Dict, List, Sequence

import numpy as np

from benchmarks.bench_trainer import table
from benchmarks.common import machine_header, scratch_dir
from tfrecords_schema import LABEL_VOCABULARY

# name -> extra `crewstream train` flags (the rest are train's defaults). Each pins the flags its
# figures in benchmarks/README.md were measured with, so that a default changed since (gains 1 -> 2,
# filters 32 -> 64) does not change what the name runs; "default" is whatever train's defaults are.
CANDIDATES: Dict[str, List[str]] = {
    "default": [],
    "center": ["--normalize", "center", "--augment-gain", "1", "--filters", "32"],
    "center-gain2": ["--normalize", "center", "--augment-gain", "2", "--filters", "32"],
    "center-gain2-e16": ["--normalize", "center", "--augment-gain", "2", "--epochs", "16", "--filters", "32"],
    "zscore": ["--normalize", "zscore", "--augment-gain", "1", "--filters", "32"],
    "zscore-gain2": ["--normalize", "zscore", "--augment-gain", "2", "--filters", "32"],
    "dense": ["--dense", "--batch-size", "4", "--augment-gain", "1", "--filters", "32"],
    "early24": ["--epochs", "24", "--early-stopping", "4", "--filters", "32"],
    "gain3": ["--augment-gain", "3", "--filters", "32"],
    "filters32": ["--filters", "32"],
    "filters64": ["--filters", "64"],
    "norm64": ["--norm-rows", "64", "--filters", "64"],
}
TARGET_LOG_LOSS, TARGET_F1, TARGET_RECALL = 0.25, 0.85, 0.7
DEFAULT_EPOCHS_TEXT = "train's default"


def _run(subcommand: str, argv: Sequence[str]) -> float:
    """`crewstream SUBCOMMAND ARGV` in this process, its output kept off the table; seconds."""
    from crewstream import cli

    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli.command(subcommand)(list(argv))
    if code:
        sys.exit(f"crewstream {subcommand} {' '.join(argv)} failed ({code})")
    return time.perf_counter() - started


# The flags that make a seed's sample and preprocess outputs, recorded beside them (MADE_WITH)
DATA_FLAGS = ("crews", "seconds", "test_crew", "test_seconds", "window", "stride", "eval_crew", "val_crew")
MADE_WITH = "made_with.json"


def _check_made_with(base: str, args) -> None:
    """Record the DATA_FLAGS of ROOT/seed-S the first time; later, refuse (one line) to reuse it
    for other ones, which would score another flight than the one asked for."""
    made = {flag: list(v) if isinstance(v := getattr(args, flag), tuple) else v for flag in DATA_FLAGS}
    record = os.path.join(base, MADE_WITH)
    if os.path.exists(record):
        with open(record) as f:
            found = json.load(f)
        if found != made:
            sys.exit(f"{base} was made with {found}, not {made}: use another --workdir")
    elif os.path.exists(base):
        sys.exit(f"{base} has no {MADE_WITH} (made by an older bench_flight or by hand): use another --workdir")
    else:
        os.makedirs(base)
        with open(record, "w") as f:
            json.dump(made, f)


def _load_result(path: str, name: str, args) -> Dict[str, object]:
    """A (candidate, seed) result of an earlier invocation; one line if it ran other train flags."""
    with open(path) as f:
        result = json.load(f)
    if result.get("flags") != _train_flags(name, args):
        sys.exit(f"{path} ran crewstream train {result.get('flags')}, not {_train_flags(name, args)}: "
                 "use another --workdir, or run without --reuse")
    return result


def make_data(root: str, seed: int, args, sequence: bool) -> Dict[str, str]:
    """The seed's sample and its preprocess output(s) under ROOT/seed-S (made once, reused for the
    same DATA_FLAGS only)."""
    base = os.path.join(root, f"seed-{seed}")
    _check_made_with(base, args)
    paths = {"sample": os.path.join(base, "sample"), "windows": os.path.join(base, "windows"),
             "sequence": os.path.join(base, "sequence")}
    if not os.path.exists(os.path.join(paths["sample"], "test_truth.csv")):
        _run("synth", ["--output", paths["sample"], "--crews", ",".join(map(str, args.crews)),
                       "--seconds", str(args.seconds), "--test-crews", str(args.test_crew),
                       "--test-seconds", str(args.test_seconds), "--seed", str(seed)])
    common = ["--input", os.path.join(paths["sample"], "train.csv"), "--window", str(args.window),
              "--stride", str(args.stride), "--eval-crews", str(args.eval_crew),
              "--val-crews", str(args.val_crew), "--num-shards", "4"]
    for layout in ("windows", "sequence") if sequence else ("windows",):
        if not os.path.exists(os.path.join(paths[layout], "stats.json")):
            _run("preprocess", [*common, "--output", paths[layout], "--layout", layout])
    return paths


def uncalibrated(submission: str, temperature: float, out: str) -> str:
    """The submission with the temperature undone: softmax(T * log p) per row, the serving map at
    1 / T (its exact inverse up to float rounding, as evaluate undoes it)."""
    import pandas as pd

    from trainer import calibration

    frame = pd.read_csv(submission)
    p = frame[list(LABEL_VOCABULARY)].to_numpy(np.float64)
    frame[list(LABEL_VOCABULARY)] = calibration.temper(p, 1.0 / temperature)
    frame.to_csv(out, index=False, float_format="%.9g")
    return out


def _train_flags(name: str, args) -> List[str]:
    """The candidate's flags, with --epochs from the command line unless it sets its own."""
    flags = CANDIDATES[name]
    return flags if "--epochs" in flags or args.epochs is None else ["--epochs", str(args.epochs), *flags]


def run_candidate(name: str, seed: int, paths: Dict[str, str], workdir: str, args) -> Dict[str, object]:
    from tfrecords_schema import serving
    from trainer import score

    flags = CANDIDATES[name]
    data = paths["sequence"] if "--dense" in flags else paths["windows"]
    model = os.path.join(workdir, f"model-{name}-s{seed}")
    done = os.path.join(workdir, f"result-{name}-s{seed}.json")
    if args.reuse and os.path.exists(done):  # a finished run of an earlier invocation
        return _load_result(done, name, args)
    submission = os.path.join(workdir, f"submission-{name}-s{seed}.csv")
    for path in (model, submission):
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
    seconds = _run("train", ["--data", data, "--model-dir", model, "--seed", str(seed), "--progress", "none",
                             *_train_flags(name, args)])
    seconds += _run("predict", ["--model-dir", model, "--input", os.path.join(paths["sample"], "test.csv"),
                                "--output", submission, "--progress", "none"])
    truth = os.path.join(paths["sample"], "test_truth.csv")
    report = score.score(submission, truth)
    temperature = float(serving.read_config(model).get("temperature", 1.0))
    before = score.score(uncalibrated(submission, temperature, submission + ".uncalibrated.csv"), truth)
    with open(os.path.join(model, "history.json")) as f:
        history = json.load(f)
    result = {"name": name, "seed": seed, "flags": _train_flags(name, args), "log_loss": report["log_loss"],
              "log_loss_uncalibrated": before["log_loss"], "macro_f1": report["macro_f1"],
              "recall": {c: report["per_class"][c]["recall"] for c in LABEL_VOCABULARY},
              "temperature": temperature, "epochs": history.get("best_epoch") or len(history["epoch"]),
              "val_log_loss": history.get("calibration", {}).get("log_loss_before"), "seconds": seconds}
    with open(done, "w") as f:
        json.dump(result, f)
    return result


def meets_target(runs: List[Dict[str, object]]) -> bool:
    return (statistics.mean(r["log_loss"] for r in runs) <= TARGET_LOG_LOSS
            and statistics.mean(r["macro_f1"] for r in runs) >= TARGET_F1
            and all(min(r["recall"]["B"], r["recall"]["D"]) >= TARGET_RECALL for r in runs))


def render(results: List[Dict[str, object]], args) -> str:
    rows = []
    for name in dict.fromkeys(r["name"] for r in results):
        runs = [r for r in results if r["name"] == name]
        for r in runs:
            rows.append([name, str(r["seed"]), f"{r['log_loss']:.3f}", f"{r['log_loss_uncalibrated']:.3f}",
                         f"{r['macro_f1']:.3f}", *(f"{r['recall'][c]:.3f}" for c in LABEL_VOCABULARY),
                         f"{r['temperature']:.2f}", str(r["epochs"]), f"{r['seconds']:.0f}", ""])
        mean = lambda key: statistics.mean(r[key] for r in runs)  # noqa: E731
        rows.append([f"**{name}**", "mean", f"{mean('log_loss'):.3f}", f"{mean('log_loss_uncalibrated'):.3f}",
                     f"{mean('macro_f1'):.3f}",
                     *(f"{statistics.mean(r['recall'][c] for r in runs):.3f}" for c in LABEL_VOCABULARY),
                     "", "", f"{mean('seconds'):.0f}", "yes" if meets_target(runs) else "no"])
    title = (f"LOFT flight of crew {args.test_crew} ({args.test_seconds:g} s per seat), after training on crews "
             f"{','.join(str(c) for c in args.crews if c not in (args.val_crew, args.eval_crew))} "
             f"({args.seconds:g} s per recording), val crew {args.val_crew}, eval crew {args.eval_crew}; W "
             f"{args.window}, stride {args.stride}, {args.epochs or DEFAULT_EPOCHS_TEXT} epochs unless the "
             "candidate says; target: "
             f"mean log loss <= {TARGET_LOG_LOSS}, mean macro F1 >= {TARGET_F1}, recall B and D >= "
             f"{TARGET_RECALL} in every seed")
    legend = "\n".join(f"  {name} = crewstream train {' '.join(_train_flags(name, args))} (its defaults otherwise)"
                       for name in dict.fromkeys(r["name"] for r in results))
    return table(title, ["candidate", "seed", "log loss", "uncalibrated", "macro F1",
                         *(f"recall {c}" for c in LABEL_VOCABULARY), "T", "epochs", "s", "target"], rows) + \
        "\n" + legend


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=None, help="keep everything here (default: a temporary folder)")
    parser.add_argument("--candidates", default=",".join(CANDIDATES),
                        help=f"comma-separated, of {', '.join(CANDIDATES)} (default: all)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated sample and training seeds")
    parser.add_argument("--crews", default="1,2,3,4,5,6", help="synth's train.csv crews (default 1,2,3,4,5,6)")
    parser.add_argument("--val-crew", type=int, default=6)
    parser.add_argument("--eval-crew", type=int, default=2)
    parser.add_argument("--test-crew", type=int, default=7, help="the flight's crew, in no split (default 7)")
    parser.add_argument("--seconds", type=float, default=60.0, help="train.csv seconds per recording (default 60)")
    parser.add_argument("--test-seconds", type=float, default=600.0,
                        help="LOFT seconds per seat (default 600: about 10 B bursts and 15 D bursts per seat)")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--stride", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=0,
                        help="train's --epochs for the candidates that set none (default 0: train's own default)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--reuse", action="store_true",
                        help="take a (candidate, seed) that --workdir already holds the result of from there")
    parser.add_argument("--table-only", action="store_true",
                        help="with --reuse: print the table of the results --workdir holds, run nothing")
    args = parser.parse_args(argv)
    args.crews = tuple(int(c) for c in args.crews.split(","))
    args.candidates = [c for c in args.candidates.split(",") if c]
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    args.epochs = args.epochs or None
    unknown = sorted(set(args.candidates) - set(CANDIDATES))
    if unknown:
        parser.error(f"unknown candidates {unknown}; known: {', '.join(CANDIDATES)}")
    if args.test_crew in args.crews or {args.val_crew, args.eval_crew} - set(args.crews):
        parser.error("--val-crew and --eval-crew must be among --crews, --test-crew not")
    return args


def main(argv=None) -> int:
    args = _parse_args(argv)
    print("\n".join(machine_header()), flush=True)
    results = []
    if args.table_only:
        found = [(os.path.join(args.workdir, f"result-{name}-s{seed}.json"), name) for name in args.candidates
                 for seed in args.seeds]
        for seed in args.seeds:  # the title says which flight: the one the results were scored on
            if os.path.exists(os.path.join(args.workdir, f"seed-{seed}")):
                _check_made_with(os.path.join(args.workdir, f"seed-{seed}"), args)
        results = [_load_result(path, name, args) for path, name in found if os.path.exists(path)]
        print(render(results, args))
        return 0
    with scratch_dir(args.workdir, "crewstream-bench-flight-") as root:
        for seed in args.seeds:
            paths = make_data(root, seed, args, sequence=any("--dense" in CANDIDATES[c] for c in args.candidates))
            for name in args.candidates:
                results.append(run_candidate(name, seed, paths, root, args))
                r = results[-1]
                print(f"{name} seed {seed}: log loss {r['log_loss']:.3f} (uncalibrated "
                      f"{r['log_loss_uncalibrated']:.3f}), macro F1 {r['macro_f1']:.3f}, "
                      f"{r['seconds']:.0f} s", flush=True)
    print(render(results, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
