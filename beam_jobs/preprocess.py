"""`crewstream preprocess` / `python -m beam_jobs.preprocess`: crew CSVs -> scaled, windowed
TFRecord shards, class-count statistics and a tf.Transform graph (DESIGN.md, "The flow").

This module only wires: the work is in beam_jobs.transforms and the plain modules it calls.

    read CSV chunks -> validate (rejects -> OUT/rejects/) -> analyze scaling on TRAIN crews
    (tf.Transform) -> scale every row -> group by (crew, seat, experiment) -> sort by time ->
    cut windows -> tf.train.Example -> shards -> OUT/stats.json (last)

The CSVs are parsed once: validated rows feed tf.Transform's analyzers and are spilled, raw, to
block files per recording (beam_jobs.blocks). A full pass has to finish before any row can be
scaled; the windowing step then reads each recording's blocks back, scales them with the written
transform graph (the same graph serving applies) and cuts its windows.
"""

import argparse
import json
import logging
import sys
import time
import uuid
from typing import Dict, List, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from beam_jobs import csv_reader
from tfrecords_schema import LABEL_VOCABULARY, csv_layout, layout
from tfrecords_schema.stats import SCALES

_LOG = logging.getLogger("crewstream.preprocess")
LOCAL_RUNNERS = (None, "DirectRunner", "FnApiRunner")


class PreprocessError(RuntimeError):
    """A problem the user can fix (bad arguments or input files); printed without a traceback."""


def _int_list(text: str) -> List[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _parse_args(argv: Optional[Sequence[str]]):
    parser = argparse.ArgumentParser(
        prog="crewstream preprocess",
        description="Turn crew CSVs (Kaggle layout, any size, unsorted) into scaled, windowed "
                    "TFRecord shards with class-count statistics. Unknown flags go to Beam "
                    "(e.g. --runner DataflowRunner --project P --region R --temp_location gs://...; "
                    "locally --direct_num_workers 2 --direct_running_mode multi_processing).")
    parser.add_argument("--input", required=True, action="append",
                        help="CSV path or glob (.csv or .csv.gz); repeat for several")
    parser.add_argument("--output", required=True, help="output folder OUT (local path or gs://...)")
    parser.add_argument("--features", default=",".join(csv_layout.SIGNALS),
                        help="comma-separated signal columns, in the order windows store them "
                             "(default: all 23 in file order)")
    parser.add_argument("--window", type=int, default=256, help="rows per window (W, default 256)")
    parser.add_argument("--stride", type=int, default=32, help="rows between window starts (default 32)")
    parser.add_argument("--max-gap", type=float, default=1.0,
                        help="a time gap above this many seconds starts a new segment (default 1.0)")
    parser.add_argument("--scale", choices=SCALES, default="zscore", help="scaling (default zscore)")
    parser.add_argument("--eval-crews", type=_int_list, default=[],
                        help="comma-separated crews for the eval split; the rest are train")
    parser.add_argument("--num-shards", type=int, default=8, help="shards per split (default 8)")
    parser.add_argument("--compression", choices=sorted(layout.COMPRESSIONS), default="NONE",
                        help="shard compression (default NONE)")
    parser.add_argument("--chunk-bytes", type=int, default=csv_reader.DEFAULT_CHUNK_BYTES,
                        help=argparse.SUPPRESS)
    parser.add_argument("--split-bytes", type=int, default=csv_reader.DEFAULT_SPLIT_BYTES,
                        help="bytes of an uncompressed CSV one worker parses (default 64 MiB)")
    parser.add_argument("--verbose", action="store_true", help="debug logging and full tracebacks")
    args, beam_args = parser.parse_known_args(argv)
    args.features = [f.strip() for f in args.features.split(",") if f.strip()]
    for name, value in (("--window", args.window), ("--stride", args.stride), ("--num-shards", args.num_shards)):
        if value < 1:
            parser.error(f"{name} must be >= 1")
    if args.max_gap <= 0:
        parser.error("--max-gap must be > 0")
    unknown = [f for f in args.features if f not in csv_layout.SIGNALS]
    if unknown or not args.features or len(set(args.features)) != len(args.features):
        parser.error(f"--features: unknown or repeated {unknown or args.features}; "
                     f"choose from {','.join(csv_layout.SIGNALS)}")
    return args, beam_args


def match_inputs(patterns: Sequence[str]) -> List[str]:
    """Every file the patterns match, sorted (the file index in rejects and sorting is stable)."""
    files = set()
    for pattern in patterns:
        found = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
        if not found:
            raise PreprocessError(f"no file matches {pattern!r}")
        files.update(found)
    return sorted(files)


def check_headers(files: Sequence[str], features: Sequence[str]) -> None:
    """File-level problems stop the run before anything is written."""
    for path in files:
        with FileSystems.open(path) as f:
            try:
                header = csv_reader.read_header(f, path)
                csv_reader.check_header(header, features, path)
            except csv_reader.CsvLayoutError as e:
                raise PreprocessError(str(e)) from None


def make_runner(options: PipelineOptions):
    """The runner: a local DirectRunner request runs on the in-process FnApiRunner directly.

    Beam's DirectRunner would first hand the pipeline to the Prism runner, which downloads a
    binary; our machines are offline, so we take the FnApiRunner path it would fall back to.
    `--direct_num_workers` and `--direct_running_mode` still apply.
    """
    name = options.view_as(StandardOptions).runner
    if name in LOCAL_RUNNERS:
        from apache_beam.runners.portability.fn_api_runner import fn_runner

        return fn_runner.FnApiRunner()
    return None  # Beam builds the runner named by --runner


def build_pipeline(pipeline: beam.Pipeline, files: Sequence[str], args, staging: str) -> None:
    """Wire the job into `pipeline`; everything it writes goes under `staging`."""
    import tensorflow_transform.beam as tft_beam

    from beam_jobs import scaling
    from beam_jobs import transforms as t

    features, eval_crews = list(args.features), frozenset(args.eval_crews)
    read = pipeline | "ReadCrewCsv" >> t.ReadCrewCsv(files, features, args.chunk_bytes, args.split_bytes)
    with tft_beam.Context(temp_dir=layout.join(staging, "tft_tmp")):
        train_batches = (
            read.rows
            | "KeepTrainCrews" >> beam.ParDo(t.SelectSplitFn(layout.TRAIN, eval_crews))
            | "TrainSignals" >> beam.Map(lambda rows: scaling.signals_record_batch(rows.signals))
        )
        transform_fn = (
            (train_batches, scaling.tensor_adapter_config(len(features)))
            | "AnalyzeScaling" >> tft_beam.AnalyzeDataset(scaling.PREPROCESSING_FNS[args.scale])
        )
        transform_ready = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(staging)

    params = t.WindowParams(args.window, args.stride, args.max_gap, args.num_shards, eval_crews,
                            staging, tuple(files))
    cut = read.rows | "CutWindows" >> t.CutWindows(params, transform_ready)
    shard_meta = cut.pieces | "WriteShards" >> t.WriteShards(staging, args.num_shards, args.compression)
    rejected = (
        (read.rejects, cut.rejects)
        | "AllRejects" >> beam.Flatten()
        | "WriteRejects" >> t.WriteRejects(staging)
    )
    _ = (
        pipeline
        | "ManifestTrigger" >> beam.Create([layout.join(staging, "manifest.json")])
        | "WriteManifest" >> beam.Map(
            lambda path, shard_list, groups, n: t.write_manifest(shard_list, groups, n, path),
            beam.pvalue.AsList(shard_meta), beam.pvalue.AsList(cut.groups), beam.pvalue.AsSingleton(rejected))
    )


def build_stats(args, manifest: Dict, scaling_stats: Dict) -> Dict:
    """stats.json from the run's manifest (DESIGN.md, "The output folder of a preprocess run")."""
    splits = {}
    for split in layout.SPLITS:
        groups = [g for g in manifest["groups"] if g["split"] == split]
        shard_list = sorted((s for s in manifest["shards"] if s["split"] == split), key=lambda s: s["file"])
        counts = {name: sum(s["class_counts"][name] for s in shard_list) for name in LABEL_VOCABULARY}
        splits[split] = {
            "crews": sorted({g["crew"] for g in groups}),
            "num_rows": sum(g["num_rows"] for g in groups),
            "num_windows": sum(s["num_windows"] for s in shard_list),
            "class_counts": counts,
            "shards": [{"file": s["file"], "num_windows": s["num_windows"]} for s in shard_list],
        }
    return {
        "window": args.window, "stride": args.stride, "max_gap": args.max_gap,
        "features": list(args.features), "label_vocabulary": list(LABEL_VOCABULARY),
        "scale": args.scale, "scaling": scaling_stats, "compression": args.compression,
        "rejected_rows": manifest["rejected_rows"], "splits": splits,
    }


def _read_manifest(staging: str) -> Dict:
    import tensorflow as tf

    with tf.io.gfile.GFile(layout.join(staging, "manifest.json")) as f:
        return json.load(f)


def run(argv: Optional[Sequence[str]] = None) -> Dict:
    """Run the job; returns the stats.json it wrote. Raises PreprocessError on bad input."""
    args, beam_args = _parse_args(argv)
    import tensorflow_transform as tft

    from beam_jobs import publish, scaling

    started = time.time()
    files = match_inputs(args.input)
    check_headers(files, args.features)
    if not args.eval_crews:
        _LOG.warning("no --eval-crews given: every crew goes to train and the eval split is empty")
    staging = layout.join(args.output, f".staging-{uuid.uuid4().hex[:12]}")
    _LOG.info("preprocess %d file(s) -> %s (W=%d, stride=%d, %d feature(s), %s)", len(files),
              args.output, args.window, args.stride, len(args.features), args.scale)
    options = PipelineOptions(beam_args)
    with beam.Pipeline(runner=make_runner(options), options=options) as pipeline:
        build_pipeline(pipeline, files, args, staging)

    manifest = _read_manifest(staging)
    train_rows = sum(g["num_rows"] for g in manifest["groups"] if g["split"] == layout.TRAIN)
    if train_rows == 0:
        raise PreprocessError("no usable training rows: every row was rejected or belongs to an "
                              f"eval crew (--eval-crews {args.eval_crews})")
    scaling_stats = scaling.scaling_stats(tft.TFTransformOutput(staging), args.features, args.scale)
    stats = build_stats(args, manifest, scaling_stats)
    path = publish.publish(staging, args.output, stats)
    _LOG.info("wrote %s in %.1f s", path, time.time() - started)
    return stats


def summarize(stats: Dict) -> str:
    """A readable table of a stats.json."""
    lines = [f"window {stats['window']} x {len(stats['features'])} feature(s), stride {stats['stride']}, "
             f"scale {stats['scale']}, rejected rows {stats['rejected_rows']:,}",
             f"{'split':<6} {'crews':<14} {'rows':>12} {'windows':>10}  " + "  ".join(
                 f"{c:>8}" for c in LABEL_VOCABULARY) + "  shards"]
    for split in layout.SPLITS:
        s = stats["splits"][split]
        lines.append(f"{split:<6} {','.join(map(str, s['crews'])) or '-':<14} {s['num_rows']:>12,} "
                     f"{s['num_windows']:>10,}  " + "  ".join(
                         f"{s['class_counts'].get(c, 0):>8,}" for c in LABEL_VOCABULARY)
                     + f"  {len(s['shards'])}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    verbose = "--verbose" in (argv or sys.argv[1:])
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        stats = run(argv)
    except (PreprocessError, csv_reader.CsvLayoutError) as e:
        if verbose:
            raise
        print(f"crewstream preprocess: error: {e}", file=sys.stderr)
        return 1
    print(summarize(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
