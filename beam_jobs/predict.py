"""`crewstream predict` / `python -m beam_jobs.predict`: a test CSV -> submission.csv, as a Beam job
beside preprocess, in memory bounded by a time block (docs/DESIGN.md, "Prediction").

This module only wires: the work is in beam_jobs.reading (reading, time blocks, rejects: the
steps both jobs share), beam_jobs.predict_steps (the predict DoFns) and the plain modules they call.

    read CSV spans (a test file: an `id` column) -> validate (rejects) -> every id once
    (beam_jobs.ids: the first usable row keeps an id) -> cut each (crew, seat, experiment) into
    time blocks of at most --block-rows rows -> sort each block by time, leaving out rows that lost
    their id -> per block: the W-1 rows before it + its rows -> the serving model (a sweep of the
    `sequence` signature for a tcn, `serving_default` on every row's window otherwise) -> a piece
    of `id,A,B,C,D` rows -> the launcher concatenates the pieces into the submission

The window of row i is the W rows of its recording ending at row i in time order; a row with fewer
than W-1 earlier rows is left-padded by repeating the recording's first row; rows with equal times
keep their file order. Windows cross time gaps: at prediction every row needs a window. Values go
in RAW: the serving model scales them. W, the features and the classes come from MODEL/serving.

Outputs: the submission (written whole in the run's staging folder `.NAME.staging-XXXX/` beside
it, then renamed over it: complete or absent) and its rejects file `NAME.rejects.csv`
(beam_jobs.rejects: file,line,column,reason,id,text), written when rows were rejected. A rejected
row whose id still reads keeps its id with the uniform distribution. More rejected rows than
--max-bad-fraction of the rows read stops the run before any prediction: no submission, the
rejects file written to show why. A killed run leaves only its staging folder, which the next
run for the same output removes (one run per output at a time).
"""

import argparse
import logging
import os
import sys
import time
import uuid
from typing import Dict, Optional, Sequence

from beam_jobs import csv_reader, inference, rejects, submission
from beam_jobs.runner import (JobError, absolute, input_bytes, make_runner, prefer_legacy_keras,
                              refuse_unknown_flags, runs_in_this_process, with_local_workers,
                              without_type_checks)
from cli_common import console, failure
from tfrecords_schema import file_io, ownership

_LOG = logging.getLogger("crewstream.predict")
DEFAULT_MAX_BAD_FRACTION = 0.001  # as preprocess's --max-bad-fraction


class PredictError(JobError):
    """A problem the user can fix (arguments, the model folder, the input file): one line, no
    traceback."""


def staging_prefix(output: str) -> str:
    """`.NAME.staging-`: the run's private folder beside the output starts with it."""
    return f".{os.path.basename(output.rstrip('/'))}.staging-"


def build_parser() -> argparse.ArgumentParser:
    from beam_jobs import blocks

    parser = argparse.ArgumentParser(
        prog="crewstream predict",
        description="Predict every row of a test CSV (id column, no event) with MODEL/serving "
                    "and write a submission `id,A,B,C,D`, one row per id, as a Beam job: memory stays "
                    "bounded by --block-rows, whatever the file or recording size. Other flags go to Beam's "
                    "PipelineOptions (e.g. --runner DataflowRunner --project P --region R --temp_location "
                    "gs://...; locally --direct_num_workers 2 --direct_running_mode multi_processing); a "
                    "flag neither knows is refused.")
    parser.add_argument("--model-dir", required=True, help="folder of a train run, MODEL (uses MODEL/serving)")
    parser.add_argument("--input", required=True, help="test CSV (.csv, .csv.gz or .csv.bz2; local or gs://)")
    parser.add_argument("--output", required=True,
                        help="submission CSV to write (.csv or .csv.gz; local or gs://); its rejects file "
                             "goes beside it as NAME.rejects.csv")
    parser.add_argument("--batch-size", type=console.int_at_least(1), default=inference.DEFAULT_BATCH_SIZE,
                        help=f"windows per model call (default {inference.DEFAULT_BATCH_SIZE})")
    parser.add_argument("--path", choices=inference.PATHS, default=inference.AUTO,
                        help=f"{inference.SWEEP}: run the model's `sequence` signature once over each block "
                             f"(a tcn); {inference.WINDOWS}: call serving_default on every row's window; "
                             f"{inference.AUTO}: {inference.SWEEP} when the model can (default {inference.AUTO})")
    parser.add_argument("--sweep-rows", type=console.int_at_least(1), default=inference.DEFAULT_SWEEP_ROWS,
                        help="rows predicted per sequence call when sweeping, fed with the W-1 rows "
                             f"before them (default {inference.DEFAULT_SWEEP_ROWS:,})")
    parser.add_argument("--concurrent", type=console.int_at_least(1), default=None,
                        help="model calls in flight at once per worker (default: one per usable core, at "
                             f"most 8; here {inference.default_concurrency()})")
    parser.add_argument("--block-rows", type=console.int_at_least(1), default=blocks.DEFAULT_BLOCK_ROWS,
                        help="most rows of a (crew, seat, experiment) one worker holds at once: longer "
                             "recordings are predicted in time blocks of at most this many rows, each with "
                             "the W-1 rows before it; the output does not depend on it "
                             f"(default {blocks.DEFAULT_BLOCK_ROWS:,})")
    parser.add_argument("--max-bad-fraction", type=console.fraction, default=DEFAULT_MAX_BAD_FRACTION,
                        help="stop (no submission) when more than this fraction of the rows is "
                             f"rejected (default {DEFAULT_MAX_BAD_FRACTION:g})")
    parser.add_argument("--span-bytes", type=console.int_at_least(1), default=csv_reader.DEFAULT_SPAN_BYTES,
                        help=argparse.SUPPRESS)
    parser.add_argument("--split-bytes", type=console.int_at_least(1), default=csv_reader.DEFAULT_SPLIT_BYTES,
                        help="bytes of an uncompressed CSV one worker parses (default 64 MiB)")
    console.add_progress(parser, "rows predicted")
    console.add_verbose(parser)
    return parser


def _parse_args(argv: Optional[Sequence[str]]):
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    if beam_args:  # only then is Beam imported to know its flags
        refuse_unknown_flags(parser, beam_args)
    args.concurrent = args.concurrent or inference.default_concurrency()
    return args, beam_args


def check_input(path: str, features: Sequence[str], model_dir: str = "") -> None:
    """Nothing, once `path` is a test CSV with every feature the model needs and at least
    one data line (a compressed file is read through); PredictError otherwise (a missing feature
    named with what the model in `model_dir` reads). Columns that are not in a test file are
    ignored, with a warning."""
    from beam_jobs.reading import check_file

    try:
        ignored = check_file(path, features, with_id=True)
    except csv_reader.CsvFileError as e:
        model_side = (f"; the model in --model-dir {model_dir} reads {', '.join(features)}"
                      if model_dir and set(e.missing) & set(features) else "")
        raise PredictError(str(e) + model_side) from e  # --verbose shows the cause (a gzip's EOFError, ...)
    except FileNotFoundError:
        raise PredictError(f"{path}: not found") from None
    if ignored:
        _LOG.warning("%s: ignoring column(s) not in a test file: %s", path, ", ".join(ignored))


def build_pipeline(pipeline, files: Sequence[str], args, config: Dict, path: str, staging: str) -> None:
    """Wire the job into `pipeline`; everything it writes goes under `staging` (manifest.json last)."""
    import apache_beam as beam

    from beam_jobs import predict_steps as pr
    from beam_jobs import reading

    features, classes = list(config["features"]), len(config["label_vocabulary"])
    read = pipeline | "ReadCrewCsv" >> reading.ReadCrewCsv(files, features, args.span_bytes, args.split_bytes,
                                                     with_id=True)
    excluded, resolved = (read.rows, read.rejects) | "ResolveIds" >> pr.ResolveIds(staging, files)
    planned = read.rows | "PlanBlocks" >> reading.PlanBlocks(staging, args.block_rows)
    checked = (read.tally, resolved[reading.TALLY]) | "CheckedTallies" >> beam.Flatten()
    verdict = checked | "GoOn" >> beam.CombineGlobally(pr.GoOnFn(args.max_bad_fraction))
    params = pr.PredictParams(config["model_dir"], config["window"], classes, path, staging, args.batch_size,
                              args.sweep_rows, args.concurrent, args.progress)
    predicted = planned | "PredictRecordings" >> pr.PredictRecordings(params, excluded, verdict)
    fallback = (
        resolved[pr.FALLBACK]
        | "AllFallbacks" >> beam.combiners.ToList()
        | "WriteFallback" >> beam.FlatMap(pr.write_fallback_piece, staging, classes)
    )
    pieces = (predicted.pieces, fallback) | "AllPieces" >> beam.Flatten()
    rejected = (
        (read.rejects, resolved[reading.REJECTS])
        | "AllRejects" >> beam.Flatten()
        | "WriteRejects" >> reading.WriteRejects(rejects.in_folder(staging))
    )
    tallies = (checked, predicted[reading.TALLY]) | "SumTallies" >> reading.SumTallies()
    files = list(files)
    reading.write_manifest_last(
        pipeline, staging,
        lambda piece_list, rejected_rows, tally: {"pieces": piece_list, "rejected_rows": rejected_rows,
                                                  "inputs": reading.input_accounting(files, tally)},
        piece_list=beam.pvalue.AsList(pieces), rejected_rows=beam.pvalue.AsSingleton(rejected),
        tally=beam.pvalue.AsList(tallies))


def _check_model(model_dir: str, graph: bool = True) -> Dict:
    """MODEL/serving's config, with `model_dir`; PredictError when there is no usable model."""
    try:
        config = inference.model_config(model_dir, graph)
    except ValueError as e:
        raise PredictError(str(e)) from None
    return {**config, "model_dir": absolute(model_dir)}


def _publish(staging: str, output: str, manifest: Dict, max_bad_fraction: float, input_path: str) -> Dict:
    """Rejects file into place (or an earlier one removed: it does not describe this run); stop if
    too many rows were rejected; else the pieces into the submission. Returns the run's counts."""
    staged_rejects, final_rejects = rejects.in_folder(staging), rejects.beside(output)
    if file_io.exists(staged_rejects):
        file_io.replace(staged_rejects, final_rejects)
    elif file_io.exists(final_rejects):
        file_io.remove(final_rejects)
    read = sum(entry["rows_read"] for entry in manifest["inputs"])
    try:
        rejects.check_bad_fraction(read, manifest["rejected_rows"], max_bad_fraction, final_rejects,
                                   "no submission written; fix the file or raise --max-bad-fraction",
                                   listed_in=final_rejects)
    except rejects.TooManyRejectsError as e:
        raise PredictError(f"{input_path}: {e}") from None
    pieces = manifest["pieces"]
    submission.merge(submission.piece_order(pieces), staging, output)
    return {"rows_read": read, "rejected": manifest["rejected_rows"],
            "predicted": sum(p["rows"] for p in pieces if p["recording"] is not None),
            "uniform": sum(p["rows"] for p in pieces if p["recording"] is None),
            "nonfinite": sum(p["nonfinite"] for p in pieces),
            "rejects_file": final_rejects if file_io.exists(final_rejects) else None}


def run(argv: Optional[Sequence[str]] = None) -> Dict:
    """Run the job; returns its counts {rows_read, rejected, predicted, uniform, nonfinite,
    rejects_file, output, seconds}. Raises PredictError (or OwnershipError) with nothing written
    under --output on bad arguments, model or input; on too many rejects only the rejects file.
    (A test replaces the model with inference.stand_in; the config is read from --model-dir.)
    """
    args, beam_args = _parse_args(argv)
    output = file_io.absolute(args.output)
    with ownership.hold(output, f"--output {args.output}", folder=False):  # one run at a time per submission
        return _run(args, beam_args, output)


def _run(args, beam_args: Sequence[str], output: str) -> Dict:
    started = time.time()
    input_path = file_io.absolute(args.input)  # a usage error answers before Beam or TF loads
    submission.check_outputs(output, input_path)  # before any work
    if not file_io.is_remote(input_path) and not os.path.isfile(input_path):
        raise PredictError(f"{args.input}: not found" if not os.path.exists(input_path)
                           else f"{args.input}: not a file")
    config = _check_model(args.model_dir, graph=not inference.stand_in_active())
    try:
        path = inference.choose_path(args.path, config, args.model_dir)
    except ValueError as e:
        raise PredictError(str(e)) from None
    check_input(input_path, config["features"], args.model_dir)  # a wrong file fails here, before any work
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    folder = os.path.dirname(output) if not file_io.is_remote(output) else output.rsplit("/", 1)[0]
    ownership.remove_leftover_stagings(folder, staging_prefix(output))
    staging = file_io.join(folder, f"{staging_prefix(output)}{uuid.uuid4().hex[:12]}")
    try:
        ownership.write_marker(staging, ownership.STAGING_KIND)  # remove_leftover_stagings knows it by this
        _LOG.info("model %s (%s): windows of %d rows x %d feature(s), %s; input %s", args.model_dir,
                  config["model"], config["window"], len(config["features"]),
                  f"swept {args.sweep_rows:,} rows at a time" if path == inference.SWEEP
                  else f"batches of {args.batch_size:,} windows", args.input)
        from beam_jobs import predict_steps, reading  # noqa: F401  (build_pipeline's, imported before the freeze)

        failure.imports_done()
        options = PipelineOptions(without_type_checks(with_local_workers(beam_args, input_bytes([input_path]))))
        if runs_in_this_process(options):  # loaded while the rows are read; the workers share it
            inference.preload(args.model_dir, path)
        pipeline = beam.Pipeline(runner=make_runner(options), options=options)
        build_pipeline(pipeline, [input_path], args, config, path, staging)
        result = pipeline.run()
        result.wait_until_finish()
        from beam_jobs.reading import read_manifest

        with ownership.uninterrupted():  # an interrupt waits until the submission is whole
            counts = _publish(staging, output, read_manifest(staging), args.max_bad_fraction, args.input)
    finally:  # whatever ended the run (an interrupt included): nothing of it stays
        inference.forget_loaded()
        if file_io.exists(staging):
            ownership.remove_tree(staging)
    from beam_jobs.predict_steps import MODEL_MS

    return {**counts, "output": args.output, "seconds": time.time() - started,
            "model_seconds": _counter(result, MODEL_MS) / 1000.0}


def _counter(result, name: str) -> int:
    """A counter's committed value summed over steps (0 when the runner reports no metrics)."""
    from apache_beam.metrics.metric import MetricsFilter

    try:
        found = result.metrics().query(MetricsFilter().with_name(name))["counters"]
    except (NotImplementedError, KeyError):
        return 0
    return sum(c.committed or 0 for c in found)


@failure.command("predict")
def main(argv: Optional[Sequence[str]] = None) -> int:
    prefer_legacy_keras()  # before anything imports TensorFlow
    console.setup(console.verbose_requested(argv))
    counts = run(argv)
    rate = counts["predicted"] / counts["seconds"] if counts["seconds"] else 0.0
    model_rate = counts["predicted"] / counts["model_seconds"] if counts["model_seconds"] else 0.0
    print(f"wrote {counts['output']}: {counts['predicted'] + counts['uniform']:,} rows ({counts['predicted']:,} "
          f"predicted from their window, {counts['uniform']:,} rejected rows given uniform probabilities) "
          f"in {counts['seconds']:.1f} s ({rate:,.0f} rows/s; model calls {counts['model_seconds']:.1f} s, "
          f"{model_rate:,.0f} rows/s)")
    if counts["rejects_file"]:
        print(f"rejected rows ({counts['rejected']:,} of {counts['rows_read']:,}): {counts['rejects_file']}")
    if counts["nonfinite"]:
        print(f"warning: the model gave {counts['nonfinite']:,} row(s) a probability that is not finite; "
              "they were written as uniform rows", file=sys.stderr)
    return 0


if __name__ == "__main__":
    failure.run_process(main)
