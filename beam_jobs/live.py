"""`crewstream live` / `python -m beam_jobs.live`: the streaming predict. Rows of the test layout
arrive as they are recorded; each row's `id,A,B,C,D` is written as soon as it is final, and it is
the number the batch `crewstream predict` gives that row (docs/DESIGN.md, "Live").

This module only wires: the steps are in beam_jobs.live_steps, the state in beam_jobs.live_state,
the sources in beam_jobs.live_sources.

    deliveries of CSV lines (a folder files land in; Pub/Sub on Dataflow; TestStream in tests)
      -> parse and validate as the batch job does (rejects; a rejected row with an id: uniform)
      -> per recording (crew, seat, experiment), in Beam state: the rows not yet final and the
         W-1 rows before them; a row is final once its recording's latest time is more than
         --max-delay past it (or the recording sent nothing for --quiet-seconds, or the input
         ended); final rows in time order -> the serving model
      -> live output: a file per tick in --output (or a Pub/Sub topic)

Locally the job runs on Beam's streaming DirectRunner (BundleBasedDirectRunner, in this process);
`--runner DataflowRunner` with `--input-subscription` / `--output-topic` runs it on Dataflow.
"""

import argparse
import logging
import os
import time
from typing import Any, Dict, Optional, Sequence, Tuple

from beam_jobs import csv_reader, inference
from beam_jobs.runner import JobError, prefer_legacy_keras, refuse_unknown_flags
from cli_common import console, failure
from tfrecords_schema import csv_columns as cols
from tfrecords_schema import file_io, ownership

_LOG = logging.getLogger("crewstream.live")
OUTPUT = ownership.Kind("live", ())  # part-*.csv and rejects-*.csv files (tfrecords_schema/live.py)
DEFAULT_MAX_DELAY = 2.0
DEFAULT_QUIET_SECONDS = 10.0
LOCAL_RUNNER = "BundleBasedDirectRunner"


class LiveError(JobError):
    """A problem the user can fix (arguments, the model folder, the folders): one line."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crewstream live",
        description="Streaming predict: read rows of the test layout as they arrive and write each "
                    "row's probabilities `id,A,B,C,D` (plus crew, seat, experiment, time) as soon as "
                    "no earlier row of its recording can still arrive: the same numbers as `crewstream "
                    "predict` on the whole file. Locally: --input-folder (CSV files with a header, "
                    "landing by rename) -> --output folder (a file per tick). On Dataflow: "
                    "--input-subscription -> --output-topic, --rejects-topic, with --runner DataflowRunner "
                    "--project P --region R --temp_location gs://... (streaming is set). Other flags go to "
                    "Beam's PipelineOptions.")
    parser.add_argument("--model-dir", required=True, help="folder of a train run, MODEL (uses MODEL/serving)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input-folder", help="local folder that CSV files land in (read in name order; "
                                               "a file is read once it has a .csv name)")
    source.add_argument("--input-subscription",
                        help="Pub/Sub subscription projects/P/subscriptions/S: each message CSV lines in "
                             "the test layout's column order, no header (Dataflow)")
    parser.add_argument("--output", help="local folder for the live output (with --input-folder)")
    parser.add_argument("--output-topic", help="Pub/Sub topic projects/P/topics/T for the output lines "
                                               "(with --input-subscription)")
    parser.add_argument("--rejects-topic", help="Pub/Sub topic for rejected rows (with --input-subscription)")
    parser.add_argument("--max-delay", type=console.number_of("seconds"), default=DEFAULT_MAX_DELAY,
                        help="seconds of a recording's time by which its rows may arrive late or out of "
                             "order; a row is predicted once a row of its recording this much later has "
                             "arrived; a row later than that is rejected (default "
                             f"{DEFAULT_MAX_DELAY:g})")
    parser.add_argument("--quiet-seconds", type=console.number_of("seconds"), default=DEFAULT_QUIET_SECONDS,
                        help="a recording that has delivered nothing for this many seconds (arrival time: "
                             "its flight ended or its recorder stopped) has its waiting rows predicted; a "
                             f"row of it arriving later than them is rejected (default {DEFAULT_QUIET_SECONDS:g})")
    parser.add_argument("--stop-after-idle", type=console.number_of("seconds"), default=None,
                        help="end the run (after predicting every row still waiting) once no file has "
                             "landed for this many seconds (default: run until interrupted)")
    parser.add_argument("--path", choices=inference.PATHS, default=inference.AUTO,
                        help=f"as predict's: {inference.SWEEP} (a tcn's `sequence` signature) or "
                             f"{inference.WINDOWS} (default {inference.AUTO})")
    parser.add_argument("--batch-size", type=console.int_at_least(1), default=inference.DEFAULT_BATCH_SIZE,
                        help=argparse.SUPPRESS)
    parser.add_argument("--span-bytes", type=console.int_at_least(1), default=csv_reader.DEFAULT_SPAN_BYTES,
                        help=argparse.SUPPRESS)
    console.add_verbose(parser)
    return parser


def _parse_args(argv: Optional[Sequence[str]]):
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    if beam_args:
        refuse_unknown_flags(parser, beam_args)
    if args.input_folder is not None:
        if args.output is None:
            parser.error("--input-folder needs --output (a local folder)")
        if args.output_topic or args.rejects_topic:
            parser.error("--output-topic and --rejects-topic go with --input-subscription")
    elif not (args.output_topic and args.rejects_topic) or args.output is not None:
        parser.error("--input-subscription needs --output-topic and --rejects-topic (and no --output)")
    return args, beam_args


def params_for(model_dir: str, config: Dict, path: str, max_delay: float, batch_size: int,
               quiet_seconds: Optional[float] = DEFAULT_QUIET_SECONDS):
    from beam_jobs.live_steps import LiveParams

    return LiveParams(model_dir=model_dir, window=config["window"], num_classes=len(config["label_vocabulary"]),
                      features=tuple(config["features"]), path=path, max_delay=max_delay,
                      quiet_seconds=quiet_seconds, batch_size=batch_size)


def build_pipeline(pipeline, deliveries, params, sink) -> None:
    """Wire the job: `deliveries` (a PTransform of live_steps.Delivery) -> ... -> `sink` (a
    PTransform taking Predicted rows and csv_reader.Reject objects, one PCollection)."""
    import apache_beam as beam

    from beam_jobs.live_steps import REJECTS, FollowRecordingFn, ParseDeliveryFn, UNIFORM

    parsed = (pipeline | "Read" >> deliveries
              | "Parse" >> beam.ParDo(ParseDeliveryFn(params)).with_outputs(REJECTS, UNIFORM, main="rows"))
    keyed = beam.ParDo(FollowRecordingFn(params)).with_input_types(Tuple[Tuple[int, int, str], Any])  # a key coder
    followed = parsed.rows | "Follow" >> keyed.with_outputs(REJECTS, main="predicted")
    ((parsed[UNIFORM], parsed[REJECTS], followed.predicted, followed[REJECTS])
     | "Gather" >> beam.Flatten() | "Write" >> sink)


def local_sink(folder: str):
    import apache_beam as beam

    from beam_jobs.live_steps import WriteTicksFn

    return beam.ParDo(WriteTicksFn(folder))


def pubsub_source(subscription: str):
    import apache_beam as beam

    from beam_jobs.live_steps import Delivery

    header = cols.TEST_COLUMNS  # a message's lines are numbered from 1 (in rejects and among equal times)
    return ("Messages" >> beam.io.ReadFromPubSub(subscription=subscription)
            | "AsDeliveries" >> beam.Map(lambda data: Delivery(subscription, 0, 1, header, data)))


def pubsub_sink(topic: str, rejects_topic: str):
    """Predicted rows to `topic` (a message of live output lines per element), rejects to
    `rejects_topic` (one message per rejected row, in the rejects format)."""
    import apache_beam as beam

    from beam_jobs import rejects
    from beam_jobs.live_steps import Predicted, format_lines

    class ToPubSub(beam.PTransform):
        def expand(self, pcoll):
            split = pcoll | "Split" >> beam.Partition(lambda e, n: 0 if isinstance(e, Predicted) else 1, 2)
            (split[0] | "Lines" >> beam.Map(lambda p: format_lines([p])) | "Filled" >> beam.Filter(bool)
             | "ToTopic" >> beam.io.WriteToPubSub(topic))
            return (split[1] | "RejectLines" >> beam.Map(lambda r: rejects.format_reject(r).encode())
                    | "ToRejectsTopic" >> beam.io.WriteToPubSub(rejects_topic))

    return ToPubSub()


def run(argv: Optional[Sequence[str]] = None, events=None) -> Dict:
    """Run the job until its input ends; returns {rows, rejects, files: written into --output,
    files_read, output, seconds} (or {submitted} for Dataflow). `events` (tests): a TestStream to
    read instead of --input-folder (whose folder must then exist only as a name)."""
    args, beam_args = _parse_args(argv)
    try:
        config = inference.model_config(args.model_dir, graph=not inference.stand_in_active())
        path = inference.choose_path(args.path, config, args.model_dir)
    except ValueError as e:
        raise LiveError(str(e)) from None
    params = params_for(file_io.absolute(args.model_dir), config, path, args.max_delay, args.batch_size,
                        args.quiet_seconds)
    if args.input_subscription:
        return _run_on_pubsub(args, beam_args, params)
    output = os.path.abspath(args.output)
    folder = os.path.abspath(args.input_folder)
    if ownership.is_inside(output, folder) or ownership.is_inside(folder, output):
        raise LiveError(f"--output {args.output} and --input-folder {args.input_folder} must not hold one "
                        "another (the job would read its own output)")
    if events is None and not os.path.isdir(folder):
        raise LiveError(f"--input-folder {args.input_folder}: " + ("not a folder" if os.path.exists(folder)
                                                                   else "not found"))
    with ownership.hold(output, f"--output {args.output}"):
        ownership.check_output_folder(output, OUTPUT, [folder])
        ownership.claim(output, OUTPUT)
        return _run_local(args, beam_args, params, folder, output, events)


def _run_local(args, beam_args, params, folder: str, output: str, events) -> Dict:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_jobs import live_sources

    started = time.time()
    options = PipelineOptions([*beam_args, "--streaming"], runner=LOCAL_RUNNER)
    controller = reader = None
    if events is None:
        from apache_beam.testing.test_stream import TestStream
        from apache_beam.testing.test_stream_service import TestStreamServiceController
        from apache_beam.coders import PickleCoder

        reader = live_sources.FolderEvents(folder, args.stop_after_idle, args.span_bytes)
        controller = TestStreamServiceController(reader)
        controller.start()
        events = TestStream(coder=PickleCoder(), endpoint=controller.endpoint)
    from beam_jobs.live_steps import WRITTEN

    WRITTEN.pop(output, None)
    _LOG.info("following %s into %s (model %s, window %d rows, --max-delay %g s)", folder, output,
              args.model_dir, params.window, params.max_delay)
    result, finished = None, False
    try:
        pipeline = beam.Pipeline(options=options)
        build_pipeline(pipeline, events, params, local_sink(output))
        result = pipeline.run()
        result.wait_until_finish()
        finished = True
        if reader is not None and not reader.ended:  # Beam's reader thread logs why and ends the stream
            raise LiveError(f"--input-folder {args.input_folder}: the stream of its rows to the runner broke off "
                            f"after {len(reader.files_read):,} file(s) (--verbose shows why)")
    finally:
        if reader is not None:
            reader.stop()
        if controller is not None:
            controller.stop()
        if result is not None and not finished:  # interrupted: the runner's threads stop before exit
            _stop(result)  # (a thread inside TensorFlow at the interpreter's exit aborts the process)
        inference.forget_loaded()
        _remove_partial_ticks(output)
    written = {k: v for k, v in WRITTEN.pop(output, {"rows": 0, "rejects": 0, "files": 0}).items() if k != "reported"}
    return {**written, "files_read": len(reader.files_read) if reader else None, "output": output,
            "seconds": time.time() - started}


def _stop(result) -> None:
    """Shut the DirectRunner's worker threads down and wait for them (each ends its bundle)."""
    try:
        result.cancel()
    except Exception as e:  # the run is ending anyway: its own error is the report
        _LOG.debug("stopping the runner: %s", e)


def _remove_partial_ticks(output: str) -> None:
    """The hidden tick files a stopped run was still writing (the live output's names, hidden:
    under the run's lock no other run writes there)."""
    from tfrecords_schema import live as live_output

    for name in os.listdir(output):
        if name.startswith(".") and live_output.parse_name(name[1:]):
            os.remove(os.path.join(output, name))


def _run_on_pubsub(args, beam_args, params) -> Dict:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    options = PipelineOptions([*beam_args, "--streaming"])
    if options.view_as(StandardOptions).runner in (None, "DirectRunner", LOCAL_RUNNER):
        raise LiveError("--input-subscription runs on Dataflow: add --runner DataflowRunner --project P "
                        "--region R --temp_location gs://BUCKET/tmp")
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, pubsub_source(args.input_subscription), params,
                   pubsub_sink(args.output_topic, args.rejects_topic))
    result = pipeline.run()
    _LOG.info("submitted: %s", getattr(result, "job_id", lambda: "")())
    return {"submitted": True}


@failure.command("live")
def main(argv: Optional[Sequence[str]] = None) -> int:
    prefer_legacy_keras()
    console.setup(console.verbose_requested(argv))
    counts = run(argv)
    if counts.get("submitted"):
        print("submitted the live job")
        return 0
    print(f"read {counts['files_read']:,} file(s); wrote {counts['rows']:,} rows into {counts['output']} "
          f"({counts['files']:,} files), {counts['rejects']:,} rejected rows in its rejects-*.csv files, "
          f"in {counts['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    failure.run_process(main)
