"""Model benchmark: the candidate models and input normalizations, trained alike, scored on a new crew.

    .venv/bin/python -m benchmarks.bench_models                        # demo-size synth sample, made here
    .venv/bin/python -m benchmarks.bench_models --data OUT             # an existing preprocess output
    .venv/bin/python -m benchmarks.bench_models --candidates lstm,tcn-zscore --epochs 3

Every candidate is trained by trainer.train (the code `crewstream train` runs) on the same
preprocess output (by default synth crews 1,2,3 x 60 s, all 23 signals, W 256, stride 32, crew 2
held out as the eval split), with the same epochs, batch size, seed and per-sample weighting, and
scored by trainer.evaluate on the held-out crew through its exported serving model. Prints, for
the machine it runs on, one row per candidate and seed (`--seeds`; training is not
bit-reproducible, and one run of a candidate says little): macro F1, per-class recall, log loss,
accuracy, seconds per epoch (the median over the run's epochs; a shared machine's load moves it)
and whether the run meets the target (macro F1 >= 0.8, recall of B and D >= 0.6); with several
seeds, a row of the means and how many seeds met it.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from typing import Dict, List

from benchmarks.bench_trainer import add_sample_args, make_sample, table
from benchmarks.common import machine_header, scratch_dir
from tfrecords_schema import LABEL_VOCABULARY, read_stats, output_folder

# name -> trainer.model.ModelParams fields (the rest are train's defaults). norm_rows None: half W.
CANDIDATES: Dict[str, Dict[str, object]] = {
    "lstm": {"kind": "lstm", "normalize": "none"},
    "lstm-center": {"kind": "lstm", "normalize": "center"},
    "lstm-zscore": {"kind": "lstm", "normalize": "zscore"},
    "tcn": {"kind": "tcn", "normalize": "none"},
    "tcn-center": {"kind": "tcn", "normalize": "center"},
    "tcn-zscore": {"kind": "tcn", "normalize": "zscore"},
    "lstm-center-gain2": {"kind": "lstm", "normalize": "center", "augment_gain": 2.0},
    "tcn-center-gain2": {"kind": "tcn", "normalize": "center", "augment_gain": 2.0},
    "tcn-center-gain1.5": {"kind": "tcn", "normalize": "center", "augment_gain": 1.5},
    "tcn-center-gain3": {"kind": "tcn", "normalize": "center", "augment_gain": 3.0},
}


def run_candidate(name: str, out: str, workdir: str, args, seed: int) -> Dict[str, object]:
    """Train candidate `name` with `seed` into WORKDIR/model-NAME-sSEED, evaluate it on the eval
    split; its figures."""
    from trainer import evaluate, model as model_lib, train

    fields = dict(CANDIDATES[name])
    if fields.get("normalize") and args.norm_rows:
        fields["norm_rows"] = args.norm_rows
    params = model_lib.ModelParams(**fields)
    model_dir = os.path.join(workdir, f"model-{name}-s{seed}")
    shutil.rmtree(model_dir, ignore_errors=True)
    seconds: List[float] = []
    clock = {}
    timer = model_lib.epoch_callback(lambda epoch, logs: clock.update(start=time.perf_counter()),
                                     lambda epoch, logs: seconds.append(time.perf_counter() - clock["start"]))
    result = train.train(train.TrainConfig(data=out, model_dir=model_dir, epochs=args.epochs,
                                           batch_size=args.batch_size, weighting=args.weighting,
                                           steps_per_epoch=args.steps_per_epoch,
                                           seed=seed, model=params, verbose=0), extra_callbacks=[timer])
    report = evaluate.evaluate(evaluate.EvalConfig(out, model_dir))
    with open(os.path.join(model_dir, "train_config.json")) as f:
        described = model_lib.ModelParams(**{k: v for k, v in json.load(f)["model"].items()
                                             if k != "receptive_field"}).describe()
    return {"name": name, "seed": seed, "model": described, "macro_f1": report["macro_f1"],
            "recall": {c: report["per_class"][c]["recall"] for c in LABEL_VOCABULARY},
            "log_loss": report["log_loss"], "accuracy": report["accuracy"],
            "seconds_per_epoch": statistics.median(seconds), "epochs": len(result["history"]["epoch"])}


def meets_target(r: Dict[str, object]) -> bool:
    """The issue's target on a new crew: macro F1 >= 0.8, recall of B and D >= 0.6."""
    return r["macro_f1"] >= 0.8 and r["recall"]["B"] >= 0.6 and r["recall"]["D"] >= 0.6


def _mean(runs: List[Dict[str, object]]) -> Dict[str, object]:
    """One row of the runs' means (a candidate over its seeds)."""
    mean = lambda key: statistics.mean(r[key] for r in runs)  # noqa: E731
    return {"name": runs[0]["name"], "seed": "mean", "macro_f1": mean("macro_f1"),
            "recall": {c: statistics.mean(r["recall"][c] for r in runs) for c in LABEL_VOCABULARY},
            "log_loss": mean("log_loss"), "accuracy": mean("accuracy"),
            "seconds_per_epoch": statistics.median(r["seconds_per_epoch"] for r in runs),
            "target": f"{sum(meets_target(r) for r in runs)}/{len(runs)}"}


def render(results: List[Dict[str, object]], out: str, args) -> str:
    stats = read_stats(out)
    ev, tr = stats["splits"][output_folder.EVAL], stats["splits"][output_folder.TRAIN]
    rows = []
    for name in dict.fromkeys(r["name"] for r in results):
        runs = [r for r in results if r["name"] == name]
        shown = runs + ([_mean(runs)] if len(runs) > 1 else [])
        rows += [[r["name"], str(r["seed"]), f"{r['macro_f1']:.3f}"]
                 + [f"{r['recall'][c]:.3f}" for c in LABEL_VOCABULARY]
                 + [f"{r['log_loss']:.3f}", f"{r['accuracy']:.3f}", f"{r['seconds_per_epoch']:.1f}",
                    r.get("target") or ("yes" if meets_target(r) else "no")] for r in shown]
    steps = f" of {args.steps_per_epoch} steps" if args.steps_per_epoch else ""
    title = (f"held-out eval split after {args.epochs} epochs{steps}, batch {args.batch_size}, --weighting "
             f"{args.weighting}; {len(stats['features'])} features, W {stats['window']}; "
             f"train {tr['num_windows']:,} windows, eval {ev['num_windows']:,} ("
             + ", ".join(f"{c} {ev['class_counts'][c]:,}" for c in LABEL_VOCABULARY) + "); target: "
             "macro F1 >= 0.8 and recall B, D >= 0.6")
    legend = "\n".join(f"  {name} = {model}" for name, model in
                       dict.fromkeys((r["name"], r["model"]) for r in results))
    return table(title, ["candidate", "seed", "macro F1"] + [f"recall {c}" for c in LABEL_VOCABULARY]
                 + ["log loss", "accuracy", "s/epoch", "target"], rows) + "\n" + legend


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_sample_args(parser)
    parser.add_argument("--num-shards", type=int, default=8)
    parser.add_argument("--candidates", default=",".join(CANDIDATES),
                        help=f"comma-separated, of {', '.join(CANDIDATES)} (default: all)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="batches per epoch (default: one pass over the train split); bounds "
                             "the time on a large output (the Kaggle-size one)")
    parser.add_argument("--weighting", default="balanced")
    parser.add_argument("--seeds", "--seed", default="0",
                        help="comma-separated: every candidate is trained once per seed, and with "
                             "more than one a row of the means follows (default 0)")
    parser.add_argument("--norm-rows", type=int, default=None,
                        help="rows of the candidates' normalization (default: train's, half the window)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    args.crews = tuple(int(c) for c in args.crews.split(","))
    args.candidates = [c for c in args.candidates.split(",") if c]
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    unknown = sorted(set(args.candidates) - set(CANDIDATES))
    if unknown:
        parser.error(f"unknown candidates {unknown}; known: {', '.join(CANDIDATES)}")
    return args


def main(argv=None) -> int:
    args = _parse_args(argv)
    with scratch_dir(args.workdir, "bench_models-") as workdir:
        print("\n".join(machine_header()), flush=True)
        out = args.data or make_sample(workdir, args)
        results = []
        for name, seed in ((n, s) for n in args.candidates for s in args.seeds):
            start = time.perf_counter()
            results.append(run_candidate(name, out, workdir, args, seed))
            r = results[-1]
            print(f"{name} seed {seed}: macro F1 {r['macro_f1']:.3f}, {r['seconds_per_epoch']:.1f} s/epoch "
                  f"({time.perf_counter() - start:.0f} s; load average {os.getloadavg()[0]:.2f})", flush=True)
        print("\n" + render(results, out, args), flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
