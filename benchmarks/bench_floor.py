"""Benchmark: crewstream against its floor, the strongest fair in-memory anchor, side by side in one run.

    .venv/bin/python -m benchmarks.bench_floor                                   # tiny: a smoke run
    .venv/bin/python -m benchmarks.bench_floor --sizes kaggle --repeats 3        # the Kaggle size
    .venv/bin/python -m benchmarks.bench_floor --sizes kaggle --data-dir kaggle=/work/big/kaggle \\
        --variants polars-anchor,sequence --repeats 3                            # an existing synth folder

Sizes (`--sizes`, written once by `crewstream synth` into WORKDIR/data/SIZE, or `--data-dir SIZE=DIR`):

    tiny    --crews 1,2 --seconds 2 --test-seconds 2: 6,144 train rows, 2,048 test rows
    kaggle  --crews 1,2,3,4,5,6,7,8,13 --seconds 352 --test-seconds 3899: 4,866,048 train rows,
            17,965,184 test rows (the sizes of Kaggle's files; a few minutes to write, about 6 GB)

Variants (`--variants`, default all but polars-anchor-1t), each its own subprocess measured with
benchmarks.common.measure; runs never overlap; repeats interleave (every variant once, then again):

  preprocess (the train CSV, eval crews --eval-crews, default 2):
    polars-anchor      what a skilled user writes today, in memory (this module's --child polars):
                       pl.read_csv (23 signals Float32, crew/seat Int64, experiment and event String,
                       time Float64), every (crew, seat, experiment) sorted by time (stable), every
                       signal z-scored with the TRAIN crews' mean and population std (float64), every
                       row written once as float32: OUT/{train,eval}/signals.npy [N, 23] (row-major),
                       labels.npy (uint8), recordings.json (crew, seat, experiment, first row, rows)
    polars-anchor-1t   the same with POLARS_MAX_THREADS=1 (optional); polars-anchor leaves it unset
    sequence           crewstream preprocess --input CSV --output OUT --eval-crews E --layout sequence
    windows            the same without --layout (the windows layout, W=256, stride 32)
    sequence-2w,       the same two with --direct_num_workers 2 (Beam's in-process workers, threads:
    windows-2w         preprocess's default is one; predict takes one per core on a large input)
    import-preprocess  python -c "import beam_jobs.preprocess, apache_beam, tensorflow_transform.beam"
                       then gc.freeze() (ending as crewstream's failure.end_process does), with
                       TF_USE_LEGACY_KERAS=1, as preprocess's main sets it
    tft-floor          tiny size only (--child tft-floor): tf.Transform's own least pipeline on Beam's
                       local runner, run as crewstream runs its jobs (FnApiRunner, type checks off,
                       imports frozen): the train crews' signals (read with polars, in memory, not
                       timed) as record batches, AnalyzeAndTransformDataset with crewstream's z-score
                       (beam_jobs.scaling), tft_beam.WriteTransformFn, the scaled rows counted. Its
                       pipeline's seconds (built and run, its own timing) are what any preprocess that
                       scales with tf.Transform on Beam pays after its imports
  predict (the test CSV and a tcn serving model):
    polars-read        pl.read_csv of the test CSV, every column (--child polars-read)
    model-pass         --child model-pass: the test CSV read with polars (not timed), every recording
                       sorted by time and left-padded with W-1 copies of its first row, then
                       MODEL/serving's `sequence` signature (RAW rows in: the model scales and
                       normalizes itself) in sweeps of --sweep-rows rows plus the W-1 before them,
                       as predict's sweep (beam_jobs.inference.SweepModel, .sweeps); only the model
                       calls are timed (a JSON line in its log). floor = polars-read wall + model calls
    predict            crewstream predict --model-dir MODEL --input CSV --output SUB (its defaults)
    import-predict     python -c "import beam_jobs.predict, beam_jobs.predict_steps, apache_beam,
                       apache_beam.runners.portability.fn_api_runner, tensorflow" then gc.freeze(),
                       with TF_USE_LEGACY_KERAS=1: what a predict run imports (all but a few small
                       modules)
  small runs (once per repeat, whatever the sizes):
    help-preprocess    crewstream preprocess --help
    help-predict       crewstream predict --help
    usage-error        crewstream preprocess (no arguments: exit 2)

The model (unless `--model DIR`): the demo's tcn (crewstream.demo's sample of 2 s per crew, its
preprocess and train flags: train's defaults) trained 1 epoch, once, into WORKDIR/model; predict's speed depends on the
architecture, not on the weights. Each run writes to a fresh folder under WORKDIR/out/, removed
after it; logs in WORKDIR/logs/. `--check` keeps the last predict submission of each size and
compares it byte for byte with the next repeat's, and compares model-pass's probabilities (written
by its child after the timed part) with predict's submission (max |difference| on the ids).

The report (printed and written to WORKDIR/results.md): the machine, one Markdown table per size
(medians: wall s, CPU user and system s, peak RSS of the process tree, largest single RSS, the
ratio to the anchor: preprocess rows to polars-anchor, predict rows to the floor, and rows/s), then
the small runs' overhead above their imports (target <= 1.5 s) and the --help and usage-error walls
(target < 1 s), and the command that reproduces the run. Exit 1 when a run fails (or --check finds
a difference).
"""

import argparse
import itertools
import json
import os
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

SIZES = {  # name: (crews, train seconds, test seconds) per (crew, seat, experiment), for crewstream synth
    "tiny": ("1,2", 2, 2),
    "kaggle": ("1,2,3,4,5,6,7,8,13", 352, 3899),
}
PREPROCESS = ("polars-anchor", "polars-anchor-1t", "sequence", "windows", "sequence-2w", "windows-2w",
              "import-preprocess", "tft-floor")
PREDICT = ("polars-read", "model-pass", "predict", "import-predict")
SMALL = ("help-preprocess", "help-predict", "usage-error")
VARIANTS = PREPROCESS + PREDICT + SMALL
OPTIONAL = ("polars-anchor-1t",)  # run only when listed in --variants
GROUPS = {"help": SMALL}  # --variants help = the three small runs
TINY_ONLY = ("tft-floor",)  # its input is held in memory and built into the pipeline
# An import's run ends as crewstream's do (cli_common.failure.end_process freezes every object,
# so the interpreter's last collections skip them): the exit costs both sides the same.
END_AS_CREWSTREAM = "; import gc; gc.freeze()"
IMPORT_PREPROCESS = "import beam_jobs.preprocess, apache_beam, tensorflow_transform.beam" + END_AS_CREWSTREAM
# What a predict run imports (compared with sys.modules at the end of a tiny run: these give all
# but a few small modules): the job, its DoFns, Beam and its local runner, and TensorFlow
# (serving.check, then the model), with TF_USE_LEGACY_KERAS=1 as predict's main sets it.
IMPORT_PREDICT = ("import beam_jobs.predict, beam_jobs.predict_steps, apache_beam, "
                  "apache_beam.runners.portability.fn_api_runner, tensorflow" + END_AS_CREWSTREAM)
LEGACY_KERAS = "TF_USE_LEGACY_KERAS"  # beam_jobs.runner.prefer_legacy_keras sets it to 1
SMALL_TARGET_S = 1.5  # a tiny run's wall above its imports
HELP_TARGET_S = 1.0
CHILD_TAG = "BENCH_FLOOR "  # a child's result: this, then one JSON object, on one line of its log
LABELS = ("A", "B", "C", "D")


# --- the children: keep them light (no benchmarks.common, no tfrecords_schema package) --------

def columns():
    """tfrecords_schema/csv_columns.py, the one place column names are spelled, loaded from its
    file: importing the package would import pyarrow (0.2 s), which a polars user does not pay."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "tfrecords_schema" / "csv_columns.py"
    spec = importlib.util.spec_from_file_location("_bench_floor_csv_columns", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _schema(cols, test: bool) -> Dict:
    import polars as pl

    schema = {cols.CREW: pl.Int64, cols.SEAT: pl.Int64, cols.EXPERIMENT: pl.String, cols.TIME: pl.Float64,
              **{name: pl.Float32 for name in cols.SIGNALS}}
    return {**schema, cols.ID: pl.Int64} if test else {**schema, cols.EVENT: pl.String}


def _report(payload: Dict) -> None:
    print(CHILD_TAG + json.dumps(payload), flush=True)


def child_polars(csv: str, output: str, eval_crews: Sequence[int]) -> Dict:
    """The anchor: read, sort each recording by time, z-score with the train crews' statistics,
    write every row once as float32 (see the module's docstring). Returns what it reports."""
    import numpy as np
    import polars as pl

    cols = columns()
    marks = [time.perf_counter()]
    frame = pl.read_csv(csv, schema_overrides=_schema(cols, test=False))
    marks.append(time.perf_counter())
    signals, keys = list(cols.SIGNALS), [cols.CREW, cols.SEAT, cols.EXPERIMENT]
    is_eval = pl.col(cols.CREW).is_in(list(eval_crews))
    moments = frame.lazy().filter(~is_eval).select(
        [pl.col(n).cast(pl.Float64).mean().alias(f"mean:{n}") for n in signals]
        + [pl.col(n).cast(pl.Float64).std(ddof=0).alias(f"std:{n}") for n in signals]
        + [pl.len().alias("rows")]).collect().row(0, named=True)
    if not moments["rows"]:
        raise SystemExit(f"{csv}: no train rows (every crew is an eval crew: {list(eval_crews)})")
    scaling = {n: {"mean": moments[f"mean:{n}"], "std": moments[f"std:{n}"] or 1.0} for n in signals}
    scaled = [((pl.col(n).cast(pl.Float64) - scaling[n]["mean"]) / scaling[n]["std"]).cast(pl.Float32)
              for n in signals]
    label = pl.col(cols.EVENT).replace_strict({name: i for i, name in enumerate(LABELS)}, return_dtype=pl.UInt8)
    marks.append(time.perf_counter())
    written = {}
    for split, rows in (("train", ~is_eval), ("eval", is_eval)):
        part = frame.lazy().filter(rows).sort(keys + [cols.TIME], maintain_order=True).collect()
        folder = os.path.join(output, split)
        os.makedirs(folder, exist_ok=True)
        np.save(os.path.join(folder, "signals.npy"), part.select(scaled).to_numpy(order="c"))
        np.save(os.path.join(folder, "labels.npy"), part.select(label).to_series().to_numpy())
        counts = part.group_by(keys, maintain_order=True).len()
        starts = [0, *itertools.accumulate(counts["len"].to_list())][:-1]
        with open(os.path.join(folder, "recordings.json"), "w") as f:
            json.dump([[c, s, e, first, n] for (c, s, e, n), first in zip(counts.iter_rows(), starts)], f)
        written[split] = len(part)
    with open(os.path.join(output, "scaling.json"), "w") as f:
        json.dump({"features": signals, "scaling": scaling}, f)
    marks.append(time.perf_counter())
    result = {"rows": written, "phases": {"read_csv": marks[1] - marks[0], "statistics": marks[2] - marks[1],
                                          "sort+scale+write": marks[3] - marks[2]}}
    _report(result)
    return result


def child_tft_floor(csv: str, output: str, eval_crews: Sequence[int]) -> None:
    """tf.Transform's own least pipeline on Beam (see the module's docstring); reports the
    pipeline's seconds, built and run, after the imports, and the rows it scaled."""
    os.environ.setdefault(LEGACY_KERAS, "1")  # as preprocess's main
    import gc

    import numpy as np
    import polars as pl

    import apache_beam as beam
    import beam_jobs.preprocess  # noqa: F401  (what import-preprocess imports)
    import tensorflow_transform.beam as tft_beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from beam_jobs import scaling
    from beam_jobs.runner import without_type_checks

    cols = columns()
    frame = pl.read_csv(csv, schema_overrides=_schema(cols, test=False))
    signals = frame.filter(~pl.col(cols.CREW).is_in(list(eval_crews))).select(list(cols.SIGNALS)).to_numpy()
    signals = signals.astype(np.float32)
    step = scaling.SCALE_BATCH_ROWS
    batches = [scaling.signals_record_batch(signals[a:a + step]) for a in range(0, len(signals), step)]
    counted = os.path.join(output, "rows_scaled")
    gc.freeze()  # as crewstream's jobs do once imported (cli_common.failure.imports_done)
    started = time.perf_counter()
    options = PipelineOptions(without_type_checks([]))
    with beam.Pipeline(runner=fn_runner.FnApiRunner(), options=options) as pipeline:
        with tft_beam.Context(temp_dir=os.path.join(output, "tmp")):
            raw = pipeline | "Batches" >> beam.Create(batches)
            (scaled, _), transform_fn = (
                (raw, scaling.tensor_adapter_config(len(cols.SIGNALS)))
                | "Scale" >> tft_beam.AnalyzeAndTransformDataset(scaling.zscore_preprocessing_fn,
                                                                 output_record_batches=True))
            _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(output)
            _ = (scaled
                 | "Rows" >> beam.Map(lambda batch: batch[0].num_rows)
                 | "Sum" >> beam.CombineGlobally(sum)
                 | "Write" >> beam.Map(lambda n: open(counted, "w").write(str(n))))
    pipeline_s = time.perf_counter() - started
    with open(counted) as f:
        rows_scaled = int(f.read())
    if rows_scaled != len(signals):
        raise SystemExit(f"tft-floor: {rows_scaled} rows scaled of {len(signals)}")
    _report({"rows": len(signals), "rows_scaled": rows_scaled, "pipeline_s": pipeline_s})


def child_polars_read(csv: str) -> None:
    """The test CSV, every column, read by polars: the floor's reading half."""
    import polars as pl

    started = time.perf_counter()
    frame = pl.read_csv(csv, schema_overrides=_schema(columns(), test=True))
    _report({"rows": len(frame), "read_s": time.perf_counter() - started})


def child_model_pass(csv: str, model_dir: str, sweep_rows: int, output: Optional[str]) -> None:
    """One causal pass of the serving model over the test file in memory; times the model calls
    only. With `output`, writes {id, probabilities} (npz) after the timed part, for --check."""
    import numpy as np
    import polars as pl

    os.environ.setdefault(LEGACY_KERAS, "1")  # as predict's main: tf.keras is tf_keras
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from beam_jobs import inference
    from tfrecords_schema import serving

    cols, marks = columns(), [time.perf_counter()]
    config = serving.read_config(model_dir)
    window, features = config["window"], list(config["features"])
    frame = pl.read_csv(csv, schema_overrides=_schema(cols, test=True))
    marks.append(time.perf_counter())
    keys = [cols.CREW, cols.SEAT, cols.EXPERIMENT]
    frame = frame.sort(keys + [cols.TIME], maintain_order=True)  # equal times keep file order
    counts = frame.group_by(keys, maintain_order=True).len()["len"].to_list()
    values = frame.select(features).to_numpy(order="c").astype(np.float32, copy=False)
    marks.append(time.perf_counter())
    model = inference.SweepModel(model_dir)  # imports TensorFlow, loads MODEL/serving
    marks.append(time.perf_counter())
    calls_s, first_call_s, calls = 0.0, None, 0
    out = np.empty((len(frame), len(config["label_vocabulary"])), np.float32) if output else None
    start = 0
    for count in counts:
        rows = values[start:start + count]
        padded = np.concatenate([np.repeat(rows[:1], window - 1, axis=0), rows])
        for first, sweep in inference.sweeps(padded, window, sweep_rows or count, buffers=1):
            t0 = time.perf_counter()
            probabilities = model(sweep)
            spent = time.perf_counter() - t0
            calls_s, calls = calls_s + spent, calls + 1
            first_call_s = spent if first_call_s is None else first_call_s
            if out is not None:
                out[start + first:start + first + len(probabilities)] = probabilities
        start += count
    marks.append(time.perf_counter())
    _report({"rows": len(frame), "recordings": len(counts), "calls": calls, "model_calls_s": calls_s,
             "first_call_s": first_call_s, "sweep_rows": sweep_rows,
             "phases": {"read_csv": marks[1] - marks[0], "sort+arrays": marks[2] - marks[1],
                        "load model": marks[3] - marks[2], "pass": marks[4] - marks[3]}})
    if output:
        np.savez(output, id=frame[cols.ID].to_numpy(), probabilities=out, labels=np.array(config["label_vocabulary"]))


# --- data and model ---------------------------------------------------------------------------

def crewstream_bin() -> str:
    """The crewstream console script of this interpreter's environment (the project's .venv)."""
    here = Path(sys.executable).parent / "crewstream"
    if here.exists():
        return str(here)
    from benchmarks.common import REPO_ROOT

    return str(REPO_ROOT / ".venv" / "bin" / "crewstream")


def run_setup(cmd: Sequence[str], log: Path) -> None:
    """A set-up command (not measured), its output in `log`; exits when it fails."""
    import subprocess

    from benchmarks.common import REPO_ROOT

    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(f"set-up: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    with open(log, "w") as f:
        code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    if code:
        raise SystemExit(f"failed (exit {code}): {shlex.join(cmd)}; see {log}")
    print(f"  done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)


def synth_command(size: str, folder: Path) -> List[str]:
    crews, seconds, test_seconds = SIZES[size]
    return [crewstream_bin(), "synth", "--output", str(folder), "--crews", crews, "--seconds", str(seconds),
            "--test-seconds", str(test_seconds)]


def ensure_data(workdir: Path, size: str, given: Dict[str, str]) -> Path:
    """The synth folder of `size`: --data-dir's, or WORKDIR/data/SIZE written once (a SIZE.done
    beside it says the write finished)."""
    if size in given:
        folder = Path(given[size]).resolve()
    else:
        folder, done = workdir / "data" / size, workdir / "data" / f"{size}.done"
        if not done.exists():
            run_setup(synth_command(size, folder), workdir / "logs" / f"synth-{size}.log")
            done.write_text(shlex.join(synth_command(size, folder)) + "\n")
    for name in ("train.csv", "test.csv"):
        if not (folder / name).is_file():
            raise SystemExit(f"{folder / name}: not found (a size's folder is a crewstream synth output)")
    return folder


def _with_flag(argv: List[str], flag: str, value: str) -> List[str]:
    argv = list(argv)
    argv[argv.index(flag) + 1] = value
    return argv


def model_commands(workdir: Path) -> List[List[str]]:
    """The demo's own synth, preprocess and train steps (crewstream.demo.steps: its sample of 2 s
    per crew, its crews and splits, its flags) with 1 epoch, writing under `workdir`: the
    benchmark's model is made the way the demo makes one, whatever the demo's flags become."""
    from crewstream import demo

    sample, prep, model = workdir / "model-sample", workdir / "model-data", workdir / "model"
    steps = {subcommand: argv for _, subcommand, argv in demo.steps(str(workdir / "demo"), 2.0, 1)}
    synth = _with_flag(steps["synth"], "--output", str(sample))
    preprocess = _with_flag(_with_flag(steps["preprocess"], "--input", str(sample / "train.csv")), "--output",
                            str(prep))
    train = _with_flag(_with_flag(steps["train"], "--data", str(prep)), "--model-dir", str(model))
    cs = crewstream_bin()
    return [[cs, "synth", *synth], [cs, "preprocess", *preprocess], [cs, "train", *train, "--progress", "log"]]


def ensure_model(workdir: Path, given: Optional[str]) -> Path:
    """--model, or WORKDIR/model made once by model_commands (a finished model has its serving
    config); the sample and the records it was trained on are removed after."""
    if given:
        return Path(given).resolve()
    from tfrecords_schema import serving

    model = workdir / "model"
    if (model / serving.SERVING_DIR / serving.CONFIG_FILE).exists():
        return model
    scratch = (workdir / "model-sample", workdir / "model-data")
    for folder in scratch:
        shutil.rmtree(folder, ignore_errors=True)
    for cmd in model_commands(workdir):
        run_setup(cmd, workdir / "logs" / f"model-{cmd[1]}.log")
    for folder in scratch:
        shutil.rmtree(folder, ignore_errors=True)
    return model


# --- the runs ---------------------------------------------------------------------------------

def variant_command(variant: str, data: Optional[Path], model: Optional[Path], out: Path, args
                    ) -> Tuple[List[str], Dict[str, str], int]:
    """(command, environment, expected exit code) of one run of `variant`, writing under `out`."""
    py, cs = sys.executable, crewstream_bin()
    env = dict(os.environ)
    env.pop("POLARS_MAX_THREADS", None)  # polars on every core, unless the variant says otherwise
    eval_crews = ",".join(map(str, args.eval_crews))
    train, test = (str(data / "train.csv"), str(data / "test.csv")) if data else ("TRAIN.csv", "TEST.csv")
    child = [py, "-m", "benchmarks.bench_floor", "--child"]
    if variant in ("polars-anchor", "polars-anchor-1t"):
        if variant.endswith("-1t"):
            env["POLARS_MAX_THREADS"] = "1"
        return child + ["polars", "--csv", train, "--output", str(out), "--eval-crews", eval_crews], env, 0
    if variant in ("sequence", "windows", "sequence-2w", "windows-2w"):
        layout = ["--layout", "sequence"] if variant.startswith("sequence") else []
        workers = ["--direct_num_workers", "2"] if variant.endswith("-2w") else []
        return [cs, "preprocess", "--input", train, "--output", str(out), "--eval-crews", eval_crews, *layout,
                *workers], env, 0
    if variant == "import-preprocess":
        env.setdefault(LEGACY_KERAS, "1")  # as preprocess's main sets it
        return [py, "-c", IMPORT_PREPROCESS], env, 0
    if variant == "tft-floor":
        return child + ["tft-floor", "--csv", train, "--output", str(out), "--eval-crews", eval_crews], env, 0
    if variant == "polars-read":
        return child + ["polars-read", "--csv", test], env, 0
    if variant == "model-pass":
        keep = ["--output", str(out / "probabilities.npz")] if args.check else []
        return child + ["model-pass", "--csv", test, "--model-dir", str(model), "--sweep-rows",
                        str(args.sweep_rows), *keep], env, 0
    if variant == "predict":
        return [cs, "predict", "--model-dir", str(model), "--input", test, "--output",
                str(out / "submission.csv")], env, 0
    if variant == "import-predict":
        env.setdefault(LEGACY_KERAS, "1")
        return [py, "-c", IMPORT_PREDICT], env, 0
    if variant == "help-preprocess":
        return [cs, "preprocess", "--help"], env, 0
    if variant == "help-predict":
        return [cs, "predict", "--help"], env, 0
    if variant == "usage-error":
        return [cs, "preprocess"], env, 2
    raise ValueError(variant)


def child_result(log: Path) -> Optional[Dict]:
    """The JSON a child printed (its last CHILD_TAG line), or None."""
    found = None
    with open(log, errors="replace") as f:
        for line in f:
            if line.startswith(CHILD_TAG):
                found = json.loads(line[len(CHILD_TAG):])
    return found


def predict_model_calls(log: Path) -> Optional[float]:
    """The `model calls S s` predict prints in its last line (its own measure), or None."""
    import re

    found = re.search(r"model calls ([\d.]+) s", log.read_text(errors="replace"))
    return float(found.group(1)) if found else None


def run_variant(variant: str, size: str, repeat: int, data: Optional[Path], model: Optional[Path], args,
                checks: Dict) -> Dict:
    """One measured run; its output folder removed after it (--check keeps what it compares)."""
    from benchmarks.common import GiB, measure

    workdir = args.workdir
    name = f"{size}-{variant}-{repeat}" if size else f"{variant}-{repeat}"
    out = workdir / "out" / name
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    if variant in ("model-pass", "predict"):
        out.mkdir()
    cmd, env, expected = variant_command(variant, data, model, out, args)
    log = workdir / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    result = measure(cmd, log, env=env)
    result.update(variant=variant, size=size, repeat=repeat, ok=result["returncode"] == expected,
                  command=shlex.join(cmd))
    if result["ok"] and variant in ("polars-anchor", "polars-anchor-1t", "polars-read", "model-pass", "tft-floor"):
        result["child"] = child_result(log)
        result["ok"] = result["child"] is not None
    if result["ok"] and variant == "predict":
        result["own_model_calls_s"] = predict_model_calls(log)
    if result["ok"] and args.check and variant in ("predict", "model-pass"):
        keep_for_check(variant, size, out, workdir, checks)
    shutil.rmtree(out, ignore_errors=True)
    print(f"[{repeat}/{args.repeats}] {size or '-'} {variant}: {result['wall_s']:.2f} s, exit {result['returncode']}"
          + ("" if result["ok"] else f" (FAILED, expected {expected}; see {log})")
          + f", max RSS {result['max_single_rss'] / GiB:.2f} GiB", file=sys.stderr, flush=True)
    return result


def keep_for_check(variant: str, size: str, out: Path, workdir: Path, checks: Dict) -> None:
    """--check: predict's submission against the previous repeat's, byte for byte (then kept as the
    last one); model-pass's probabilities kept for the comparison with predict's."""
    import filecmp

    folder = workdir / "check"
    folder.mkdir(parents=True, exist_ok=True)
    if variant == "model-pass":
        shutil.move(out / "probabilities.npz", folder / f"{size}-model-pass.npz")
        return
    kept, new = folder / f"{size}-submission.csv", out / "submission.csv"
    if kept.exists():
        checks.setdefault(size, []).append(filecmp.cmp(kept, new, shallow=False))
    shutil.move(new, kept)


def compare_model_pass(workdir: Path, size: str) -> Optional[str]:
    """Max |difference| between model-pass's probabilities and predict's submission on their ids."""
    import numpy as np
    import polars as pl

    npz, sub = workdir / "check" / f"{size}-model-pass.npz", workdir / "check" / f"{size}-submission.csv"
    if not (npz.exists() and sub.exists()):
        return None
    mine = np.load(npz)
    labels = [str(x) for x in mine["labels"]]
    theirs = pl.read_csv(sub).sort("id")
    order = np.argsort(mine["id"], kind="stable")
    if not np.array_equal(mine["id"][order], theirs["id"].to_numpy()):
        return "MISMATCH: the ids differ"
    diff = float(np.abs(mine["probabilities"][order] - theirs.select(labels).to_numpy()).max())
    return f"{len(order):,} ids, max |difference| {diff:.2g}" + ("" if diff <= 1e-5 else " MISMATCH (> 1e-5)")


# --- the report -------------------------------------------------------------------------------

MEDIANS = ("wall_s", "cpu_user_s", "cpu_sys_s", "peak_tree_rss", "max_single_rss")


def summarize(runs: List[Dict]) -> Optional[Dict]:
    """Medians over the successful runs of one variant (None if none succeeded), with `runs` and
    `failed` counts; model_calls_s and first_call_s (model-pass) and own_model_calls_s (predict)
    when reported."""
    ok = [r for r in runs if r["ok"]]
    if not ok:
        return None
    summary = {key: statistics.median(r[key] for r in ok) for key in MEDIANS}
    for key in ("model_calls_s", "first_call_s", "pipeline_s"):
        found = [r["child"][key] for r in ok if (r.get("child") or {}).get(key) is not None]
        if found:
            summary[key] = statistics.median(found)
    own = [r["own_model_calls_s"] for r in ok if r.get("own_model_calls_s") is not None]
    if own:
        summary["own_model_calls_s"] = statistics.median(own)
    return {**summary, "runs": len(runs), "failed": len(runs) - len(ok)}


def floor_s(summaries: Dict[str, Optional[Dict]]) -> Optional[float]:
    """The predict floor: polars-read's wall + model-pass's model calls (medians), or None."""
    read, model = summaries.get("polars-read"), summaries.get("model-pass")
    if read and model and "model_calls_s" in model:
        return read["wall_s"] + model["model_calls_s"]
    return None


MODEL_CALLS, FLOOR = "model-pass: model calls only", "floor = polars-read + model calls"


def ratios(summaries: Dict[str, Optional[Dict]]) -> Dict[str, float]:
    """Row name -> wall / its anchor: preprocess variants over polars-anchor's wall, predict
    variants (and the model calls, the floor itself) over the floor. Missing anchors: no entry."""
    out: Dict[str, float] = {}
    anchor = summaries.get("polars-anchor")
    for variant in PREPROCESS:
        if anchor and summaries.get(variant):
            out[variant] = summaries[variant]["wall_s"] / anchor["wall_s"]
    floor = floor_s(summaries)
    if floor:
        for variant in PREDICT:
            if summaries.get(variant):
                out[variant] = summaries[variant]["wall_s"] / floor
        out[MODEL_CALLS] = summaries["model-pass"]["model_calls_s"] / floor
        out[FLOOR] = 1.0
    return out


HEADER = ["variant", "wall s (median)", "CPU user s", "CPU sys s", "peak tree RSS GiB", "max single RSS GiB",
          "vs anchor", "rows/s"]


def table_rows(summaries: Dict[str, Optional[Dict]], variants: Sequence[str], train_rows: int,
               test_rows: int) -> List[List[str]]:
    """The rows of a size's table, in `variants` order; the model calls and the floor after model-pass."""
    from benchmarks.common import GiB

    found, rows = ratios(summaries), []

    def rate(n: int, seconds: float, variant: str) -> str:
        return "-" if variant.startswith("import") or variant in TINY_ONLY else f"{n / seconds:,.0f}"

    for variant in variants:
        s = summaries.get(variant)
        label = variant if not s or not s["failed"] else f"{variant} ({s['failed']} of {s['runs']} failed)"
        if s is None:
            rows.append([label, "failed"] + [""] * (len(HEADER) - 2))
            continue
        n = train_rows if variant in PREPROCESS else test_rows
        rows.append([label, f"{s['wall_s']:.2f}", f"{s['cpu_user_s']:.2f}", f"{s['cpu_sys_s']:.2f}",
                     f"{s['peak_tree_rss'] / GiB:.2f}", f"{s['max_single_rss'] / GiB:.2f}",
                     f"{found[variant]:.2f}x" if variant in found else "-", rate(n, s["wall_s"], variant)])
        if variant == "model-pass" and "model_calls_s" in s:
            calls = s["model_calls_s"]
            rows.append([MODEL_CALLS, f"{calls:.2f}", "-", "-", "-", "-",
                         f"{found[MODEL_CALLS]:.2f}x" if MODEL_CALLS in found else "-", f"{test_rows / calls:,.0f}"])
    floor = floor_s(summaries)
    if floor:
        where = next((i for i, r in enumerate(rows) if r[0] == MODEL_CALLS), len(rows) - 1) + 1
        rows.insert(where, [FLOOR, f"{floor:.2f}", "-", "-", "-", "-", "1.00x", f"{test_rows / floor:,.0f}"])
    return rows


def markdown_table(header: Sequence[str], body: List[List[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])


def small_run_lines(summaries: Dict[str, Optional[Dict]], small: Dict[str, Optional[Dict]]) -> List[str]:
    """The tiny size's overhead above imports, and the --help / usage-error walls, against targets."""
    lines = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    for variant, imports, what in (("sequence", "import-preprocess", "preprocess --layout sequence"),
                                   ("windows", "import-preprocess", "preprocess (windows layout)"),
                                   ("predict", "import-predict", "predict")):
        run, base = summaries.get(variant), summaries.get(imports)
        if run and base:
            above = run["wall_s"] - base["wall_s"]
            lines.append(f"- tiny {what}: {run['wall_s']:.2f} s = {imports} {base['wall_s']:.2f} s + {above:.2f} s "
                         f"(target <= {SMALL_TARGET_S} s above import: {verdict(above <= SMALL_TARGET_S)})")
    floor, base = summaries.get("tft-floor"), summaries.get("import-preprocess")
    if floor and "pipeline_s" in floor:
        lines.append(f"- tft-floor: tf.Transform's own least pipeline on Beam took {floor['pipeline_s']:.2f} s after "
                     f"its imports (its own timing; its whole run {floor['wall_s']:.2f} s"
                     + (f", {floor['wall_s'] - base['wall_s']:.2f} s above import-preprocess" if base else "")
                     + "): the part of a tiny preprocess's time above its imports that any job scaling with "
                       "tf.Transform on Beam pays")
    for variant, what in (("help-preprocess", "`crewstream preprocess --help`"),
                          ("help-predict", "`crewstream predict --help`"),
                          ("usage-error", "`crewstream preprocess` (usage error, exit 2)")):
        s = small.get(variant)
        if s:
            lines.append(f"- {what}: {s['wall_s']:.2f} s, CPU {s['cpu_user_s'] + s['cpu_sys_s']:.2f} s "
                         f"(target < {HELP_TARGET_S:g} s: {verdict(s['wall_s'] < HELP_TARGET_S)})")
        elif variant in small:
            lines.append(f"- {what}: FAILED")
    return lines


def _model_line(model: Path) -> str:
    from tfrecords_schema import serving

    try:
        c = serving.read_config(str(model))
    except (OSError, ValueError) as e:
        return f"- model: {model} ({e})"
    return (f"- model: {model} ({c['model']}, window {c['window']}, receptive field {c['receptive_field']}, "
            f"{len(c['features'])} features, normalize {c['normalize']}"
            + (f" over {c['norm_rows']} rows" if c["norm_rows"] else "")
            + f"; signatures {', '.join(c['signatures'])})")


def report(args, argv: Sequence[str], header: List[str], started: float, data: Dict[str, Path],
           counts: Dict[str, Tuple[int, int]], model: Optional[Path], runs: Dict, checks: Dict) -> str:
    from benchmarks.common import GiB, REPO_ROOT, load_average

    python = os.path.relpath(sys.executable, REPO_ROOT) if sys.executable.startswith(str(REPO_ROOT)) \
        else sys.executable
    lines = ["# bench_floor: crewstream against the floor", *header,
             f"- load average at end (1, 5, 15 min): {load_average()}",
             f"- repeats: {args.repeats} per variant, interleaved; medians; eval crews "
             f"{','.join(map(str, args.eval_crews))}; total {time.perf_counter() - started:.0f} s"]
    if model:
        lines.append(_model_line(model))
    lines.append(f"- reproduce: `cd {REPO_ROOT} && {shlex.join([python, '-m', 'benchmarks.bench_floor', *argv])}`")
    size_variants = [v for v in args.variants if v not in SMALL]
    for size in data:
        train_rows, test_rows = counts[size]
        folder = data[size]
        here = variants_of(size_variants, size)
        summaries = {v: summarize(runs[(size, v)]) for v in here}
        lines += ["", f"## {size}: train {train_rows:,} rows ({(folder / 'train.csv').stat().st_size / GiB:.2f} GiB), "
                  f"test {test_rows:,} rows ({(folder / 'test.csv').stat().st_size / GiB:.2f} GiB), {folder}", "",
                  markdown_table(HEADER, table_rows(summaries, here, train_rows, test_rows))]
        notes = size_notes(summaries, size, args, checks)
        lines += ["", *notes] if notes else []
        if size == "tiny":
            small = {v: summarize(runs[("", v)]) for v in args.variants if v in SMALL}
            found = small_run_lines(summaries, small)
            lines += ["", "Small runs:", *found] if found else []
        lines += ["", f"Commands ({size}, cwd = repository root):"]
        lines += [f"- {v}: `{runs[(size, v)][-1]['command']}`" for v in here]
    small_only = [v for v in args.variants if v in SMALL]
    if small_only and "tiny" not in data:
        small = {v: summarize(runs[("", v)]) for v in small_only}
        lines += ["", "Small runs:", *small_run_lines({}, small)]
    if small_only:
        lines += ["", "Commands (small runs):"] + [f"- {v}: `{runs[('', v)][-1]['command']}`" for v in small_only]
    return "\n".join(lines)


def size_notes(summaries: Dict[str, Optional[Dict]], size: str, args, checks: Dict) -> List[str]:
    lines = []
    anchor, model_pass, predict = (summaries.get(v) for v in ("polars-anchor", "model-pass", "predict"))
    if anchor:
        lines.append(f"- polars-anchor: POLARS_MAX_THREADS unset (polars on every core); CPU "
                     f"{anchor['cpu_user_s'] + anchor['cpu_sys_s']:.1f} s over {anchor['wall_s']:.1f} s wall")
    if model_pass and "model_calls_s" in model_pass:
        lines.append(f"- model-pass: the `sequence` signature in sweeps of {args.sweep_rows:,} rows + W-1 of "
                     f"context, one call at a time; model calls {model_pass['model_calls_s']:.2f} s "
                     f"(the first {model_pass.get('first_call_s', 0):.2f} s) of a "
                     f"{model_pass['wall_s']:.2f} s child (reading, sorting, TensorFlow import and model load "
                     "not in the floor)")
    if predict and predict.get("own_model_calls_s") is not None:
        lines.append(f"- predict's own figure for its model phase (its last line, predict_padded with its "
                     f"writing, summed over blocks): {predict['own_model_calls_s']:.2f} s")
    if args.check:
        same = checks.get(size, [])
        lines.append("- check, predict submission byte for byte between repeats: "
                     + (f"{sum(same)} of {len(same)} identical to the repeat before" if same
                        else "one repeat, nothing to compare"))
        found = compare_model_pass(args.workdir, size)
        if found:
            lines.append(f"- check, model-pass probabilities vs predict's submission: {found}")
    return lines


# --- command line -----------------------------------------------------------------------------

def _data_dirs(values: Sequence[str], parser) -> Dict[str, str]:
    found = {}
    for value in values:
        size, sep, folder = value.partition("=")
        if not sep or size not in SIZES or not folder:
            parser.error(f"--data-dir {value!r}: expected SIZE=DIR with SIZE one of {', '.join(SIZES)}")
        found[size] = folder
    return found


def _parse_args(argv: Optional[Sequence[str]]):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="tiny", help=f"comma-separated, from {','.join(SIZES)} (default tiny)")
    parser.add_argument("--variants", default=",".join(v for v in VARIANTS if v not in OPTIONAL),
                        help=f"comma-separated, from {','.join(VARIANTS)} (`help`: the three small runs; "
                             f"default all but {','.join(OPTIONAL)})")
    parser.add_argument("--repeats", type=int, default=1, help="runs per variant, interleaved; medians reported")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-floor"),
                        help="data, model, outputs, logs (default /tmp/bench-floor)")
    parser.add_argument("--model", help="a train run's MODEL folder (a tcn) instead of WORKDIR/model")
    parser.add_argument("--data-dir", action="append", default=[], metavar="SIZE=DIR",
                        help="a crewstream synth output folder (train.csv, test.csv) for SIZE; repeatable")
    parser.add_argument("--eval-crews", default="2", help="eval crews, comma-separated (default 2)")
    parser.add_argument("--sweep-rows", type=int, default=None,
                        help="model-pass: rows per sequence call (default: predict's; 0: a recording at once)")
    parser.add_argument("--check", action="store_true",
                        help="compare predict's submissions byte for byte between repeats, and model-pass's "
                             "probabilities with predict's")
    parser.add_argument("--child", choices=("polars", "polars-read", "model-pass", "tft-floor"), help=argparse.SUPPRESS)
    for name in ("--csv", "--output", "--model-dir"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.eval_crews = [int(c) for c in args.eval_crews.split(",") if c.strip()]
    if args.child:
        return args
    if args.sweep_rows is None:
        from beam_jobs.inference import DEFAULT_SWEEP_ROWS

        args.sweep_rows = DEFAULT_SWEEP_ROWS
    args.sizes = [s for s in args.sizes.split(",") if s]
    wanted = [v for v in args.variants.split(",") if v]
    unknown = sorted({s for s in args.sizes if s not in SIZES} | {v for v in wanted if v not in (*VARIANTS, *GROUPS)})
    if unknown:
        parser.error(f"unknown {', '.join(unknown)}; sizes: {', '.join(SIZES)}; variants: "
                     f"{', '.join((*VARIANTS, *GROUPS))}")
    if not args.sizes or args.repeats < 1:
        parser.error("--sizes must name a size and --repeats be >= 1")
    expanded = {x for v in wanted for x in GROUPS.get(v, (v,))}
    args.variants = [v for v in VARIANTS if v in expanded]  # the order of VARIANTS
    args.data_dir = _data_dirs(args.data_dir, parser)
    args.workdir = args.workdir.resolve()
    return args


def variants_of(size_variants: Sequence[str], size: str) -> List[str]:
    """The variants a size runs: TINY_ONLY ones on the tiny size alone."""
    return [v for v in size_variants if size == "tiny" or v not in TINY_ONLY]


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse_args(argv)
    if args.child == "polars":
        child_polars(args.csv, args.output, args.eval_crews)
        return 0
    if args.child == "tft-floor":
        child_tft_floor(args.csv, args.output, args.eval_crews)
        return 0
    if args.child == "polars-read":
        child_polars_read(args.csv)
        return 0
    if args.child == "model-pass":
        child_model_pass(args.csv, args.model_dir, args.sweep_rows or 0, args.output)
        return 0
    from benchmarks.common import count_rows, machine_header

    started = time.perf_counter()
    workdir = args.workdir
    for sub in ("out", "logs", "check"):
        shutil.rmtree(workdir / sub, ignore_errors=True)
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    size_variants = [v for v in args.variants if v not in SMALL]
    data = {size: ensure_data(workdir, size, args.data_dir) for size in args.sizes} if size_variants else {}
    model = ensure_model(workdir, args.model) if set(size_variants) & {"model-pass", "predict"} else None
    # Counting reads each CSV whole: every run then finds it in the page cache.
    counts = {size: (count_rows(folder / "train.csv"), count_rows(folder / "test.csv"))
              for size, folder in data.items()}
    header = machine_header()  # the load average before our own runs
    runs: Dict[Tuple[str, str], List[Dict]] = {}
    checks: Dict[str, List[bool]] = {}
    for repeat in range(1, args.repeats + 1):
        for size in data:
            for variant in variants_of(size_variants, size):
                runs.setdefault((size, variant), []).append(
                    run_variant(variant, size, repeat, data[size], model, args, checks))
        for variant in (v for v in args.variants if v in SMALL):
            runs.setdefault(("", variant), []).append(run_variant(variant, "", repeat, None, None, args, checks))
    text = report(args, argv, header, started, data, counts, model, runs, checks)
    print("\n" + text)
    (workdir / "results.md").write_text(text + "\n")
    failed = any(not r["ok"] for rs in runs.values() for r in rs)
    mismatch = not all(all(v) for v in checks.values()) or "MISMATCH" in text
    return 1 if failed or mismatch else 0


if __name__ == "__main__":
    sys.exit(main())
