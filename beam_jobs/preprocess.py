"""`crewstream preprocess` / `python -m beam_jobs.preprocess`: crew CSVs -> scaled, windowed
TFRecord shards, class-count statistics and a tf.Transform graph (docs/DESIGN.md, "The flow").

This module only wires: the work is in beam_jobs.reading, beam_jobs.preprocess_steps and the plain
modules they call.

    read CSV spans -> validate (rejects -> OUT/rejects/) -> cut each (crew, seat, experiment)
    into time blocks of at most --block-rows rows -> sort each block by time, reject duplicate
    times -> analyze scaling on TRAIN crews (tf.Transform) -> scale each block (windows layout)
    -> per shard: the windows (or the chunks, scaled as they are read) of its recordings, cut
    block by block with the W-1 rows before each -> tf.train.Example -> the shard file, written
    once where it ends up -> OUT/stats.json (last)

The CSVs are parsed once: validated rows are spilled, raw, to spill files per recording
(beam_jobs.blocks), with their rows per time bin, from which each recording's time blocks are
planned. Each block is sorted and written once; its kept TRAIN rows feed tf.Transform's analyzers.
A full pass has to finish before any row can be scaled; then each block is scaled once with the
written transform graph (the same graph serving applies) and written again (in the sequence
layout, whose chunks each go to one shard, the shards scale the sorted rows as they read them
instead), and each shard is written by one worker, straight to its place: for each of its
recordings, block after block, the windows whose last row is in the block and whose number (as if
the recording were cut whole) falls to the shard, read with the rows before the block they need.
The output does not depend on --block-rows.
"""

import argparse
import logging
import os
import time
import uuid
from typing import Dict, List, Optional, Sequence

# Beam, TensorFlow and tf.Transform are imported only once the arguments and local paths are good
# (cli_common.console): a usage error is reported in about a second.
from beam_jobs import blocks, csv_reader, rejects
from beam_jobs.runner import (JobError, absolute, make_runner, prefer_legacy_keras, refuse_unknown_flags,
                              without_type_checks)
from cli_common import console, failure
from tfrecords_schema import LABEL_VOCABULARY, csv_columns, ownership, sequence, file_io, output_folder
from tfrecords_schema.stats import SCALES, validate_stats

_LOG = logging.getLogger("crewstream.preprocess")


class PreprocessError(JobError):
    """A problem the user can fix (bad arguments or input files); printed without a traceback."""


def _int_list(text: str) -> List[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _parse_args(argv: Optional[Sequence[str]]):
    parser = argparse.ArgumentParser(
        prog="crewstream preprocess",
        description="Turn crew CSVs (Kaggle layout, any size, unsorted) into scaled, windowed "
                    "TFRecord shards with class-count statistics. Other flags go to Beam's "
                    "PipelineOptions (e.g. --runner DataflowRunner --project P --region R --temp_location "
                    "gs://...; locally --direct_num_workers 2 --direct_running_mode multi_processing); "
                    "a flag neither knows is refused.")
    parser.add_argument("--input", required=True, action="append",
                        help="CSV path or glob (.csv, .csv.gz or .csv.bz2); repeat for several")
    parser.add_argument("--output", required=True, help="output folder OUT (local path or gs://...)")
    parser.add_argument("--features", default=",".join(csv_columns.SIGNALS),
                        help="comma-separated signal columns, in the order windows store them "
                             "(default: all 23 in file order)")
    parser.add_argument("--window", type=int, default=256, help="rows per window (W, default 256)")
    parser.add_argument("--stride", type=int, default=32, help="rows between window starts (default 32)")
    parser.add_argument("--max-gap", type=float, default=1.0,
                        help="a time gap above this many seconds starts a new segment (default 1.0)")
    parser.add_argument("--scale", choices=SCALES, default="zscore", help="scaling (default zscore)")
    parser.add_argument("--eval-crews", type=_int_list, default=[],
                        help="comma-separated crews for the eval split, the one results are reported "
                             "on; the crews of neither --eval-crews nor --val-crews are train")
    parser.add_argument("--val-crews", type=_int_list, default=[],
                        help="comma-separated crews for the val split, which train early-stops and "
                             "calibrates on (so that nothing is chosen on eval; default: none)")
    parser.add_argument("--num-shards", type=int, default=8, help="shards per split (default 8)")
    parser.add_argument("--compression", choices=sorted(output_folder.COMPRESSIONS), default="NONE",
                        help="shard compression (default NONE)")
    parser.add_argument("--span-bytes", type=int, default=csv_reader.DEFAULT_SPAN_BYTES,
                        help=argparse.SUPPRESS)
    parser.add_argument("--split-bytes", type=int, default=csv_reader.DEFAULT_SPLIT_BYTES,
                        help="bytes of an uncompressed CSV one worker parses (default 64 MiB)")
    parser.add_argument("--max-bad-fraction", type=float, default=0.001,
                        help="fail, publishing nothing, if more than this fraction of the rows read "
                             "is rejected (default 0.001)")
    parser.add_argument("--block-rows", type=int, default=blocks.DEFAULT_BLOCK_ROWS,
                        help="most rows of a (crew, seat, experiment) one worker holds at once: longer "
                             "recordings are cut into time blocks of at most this many rows, each with "
                             "the W-1 rows before it; the output does not depend on it "
                             f"(default {blocks.DEFAULT_BLOCK_ROWS:,})")
    parser.add_argument("--layout", choices=sequence.LAYOUTS, default=sequence.WINDOWS,
                        help="windows: one record per window (W and stride fixed now); sequence: one record "
                             "per chunk of a segment, each row stored about once, windows of any W' <= "
                             "--window and any stride cut at read time (default windows)")
    parser.add_argument("--chunk-rows", type=int, default=None,
                        help="--layout sequence: rows per chunk record, each also holding the W-1 rows "
                             f"before it (default {sequence.DEFAULT_CHUNK_ROWS:,})")
    console.add_verbose(parser)
    args, beam_args = parser.parse_known_args(argv)
    if beam_args:  # only then is Beam imported to know its flags
        refuse_unknown_flags(parser, beam_args)
    args.features = [f.strip() for f in args.features.split(",") if f.strip()]
    if args.chunk_rows is not None and args.layout != sequence.SEQUENCE:
        parser.error("--chunk-rows applies to --layout sequence only")
    args.chunk_rows = sequence.DEFAULT_CHUNK_ROWS if args.chunk_rows is None else args.chunk_rows
    for name, value in (("--window", args.window), ("--stride", args.stride), ("--num-shards", args.num_shards),
                        ("--block-rows", args.block_rows), ("--chunk-rows", args.chunk_rows)):
        if value < 1:
            parser.error(f"{name} must be >= 1")
    if args.max_gap <= 0:
        parser.error("--max-gap must be > 0")
    both = sorted(set(args.eval_crews) & set(args.val_crews))
    if both:
        parser.error(f"crew {', '.join(map(str, both))} is in both --eval-crews and --val-crews: a crew "
                     "belongs to one split")
    if not 0 <= args.max_bad_fraction <= 1:
        parser.error("--max-bad-fraction must be between 0 and 1")
    unknown = [f for f in args.features if f not in csv_columns.SIGNALS]
    if unknown or not args.features or len(set(args.features)) != len(args.features):
        parser.error(f"--features: unknown or repeated {unknown or args.features}; "
                     f"choose from {','.join(csv_columns.SIGNALS)}")
    return args, beam_args


def match_inputs(patterns: Sequence[str]) -> List[str]:
    """Every file the patterns match, sorted (the file index in rejects and sorting is stable)."""
    files = set()
    for pattern in patterns:
        found = _match(pattern)
        if not found:
            raise PreprocessError(f"--input {pattern}: not found" if not _has_wildcard(pattern)
                                  else f"--input {pattern}: no file matches")
        files.update(found)
    return sorted(files)


def _has_wildcard(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _match(pattern: str) -> List[str]:
    """The files one `--input` names. A path that exists names that file, whatever characters it
    holds (`data/[1].csv`); a folder is refused; only a path that does not exist is a glob.
    Local paths are looked up with os (no Beam import: a wrong path is reported at once)."""
    if not file_io.is_remote(pattern):
        path = os.path.abspath(pattern)
        if os.path.isdir(path):
            raise PreprocessError(f"--input {pattern} is a folder; name its files, e.g. --input "
                                  f"'{os.path.join(pattern, '*.csv')}'")
        if os.path.exists(path):
            return [path]
        if not _has_wildcard(pattern):
            return []
    from apache_beam.io.filesystems import FileSystems

    if file_io.is_remote(pattern) and FileSystems.exists(pattern):
        return [pattern]
    return [m.path for m in FileSystems.match([absolute(pattern)])[0].metadata_list]


def check_inputs(files: Sequence[str], features: Sequence[str]) -> None:
    """File-level problems stop the run before anything is written: a missing or wrong header,
    no data rows, a compressed file that does not decompress to its end (read through here once,
    since a truncated gzip is only noticed at its end). Columns outside the layout are logged."""
    from beam_jobs.reading import check_file

    for path in files:
        try:
            ignored = check_file(path, features)
        except csv_reader.CsvFileError as e:
            raise PreprocessError(str(e)) from None
        if ignored:
            _LOG.warning("%s: column(s) %s are not part of the layout and are ignored", path, ", ".join(ignored))


def build_pipeline(pipeline, files: Sequence[str], args, staging: str) -> None:
    """Wire the job into `pipeline`; everything it writes goes under `staging`."""
    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam

    from beam_jobs import scaling
    from beam_jobs import preprocess_steps as steps, reading

    features, eval_crews = list(args.features), frozenset(args.eval_crews)
    params = steps.WindowParams(args.window, args.stride, args.max_gap, args.num_shards, eval_crews,
                                staging, tuple(files), args.block_rows, val_crews=frozenset(args.val_crews))
    read = pipeline | "ReadCrewCsv" >> reading.ReadCrewCsv(files, features, args.span_bytes, args.split_bytes)
    # Scaling is analyzed on the rows the windows use: TRAIN crews, duplicate times rejected.
    sorted_blocks = read.rows | "SortBlocks" >> steps.SortBlocks(params)
    with tft_beam.Context(temp_dir=file_io.join(staging, "tft_tmp")):
        transform_fn = (
            (sorted_blocks[steps.TRAIN_SIGNALS], scaling.tensor_adapter_config(len(features)))
            | "AnalyzeScaling" >> tft_beam.AnalyzeDataset(scaling.PREPROCESSING_FNS[args.scale])
        )
        transform_ready = transform_fn | "WriteTransformFn" >> scaling.WriteTransformFn(staging, len(features))

    if args.layout == sequence.SEQUENCE:
        from beam_jobs.sequences import chunk_cutter

        cut = chunk_cutter(args.chunk_rows)
    else:
        cut = steps.cut_block_windows
    shard_meta = sorted_blocks.blocks | "WriteShards" >> steps.WriteShards(
        params, args.compression, cut, transform_ready, scale_in_shards=args.layout == sequence.SEQUENCE)
    rejected = (
        (read.rejects, sorted_blocks.rejects)
        | "AllRejects" >> beam.Flatten()
        | "WriteRejects" >> reading.WriteRejects(rejects.in_folder(staging))
    )
    tallies = (read.tally, sorted_blocks.tally) | "SumTallies" >> reading.SumTallies()
    files = list(files)
    reading.write_manifest_last(
        pipeline, staging,
        lambda shard_list, block_counts, rejected_rows, tally, sorted_list: {
            "shards": sorted(shard_list, key=lambda s: s["file"]), "block_counts": block_counts,
            "rejected_rows": rejected_rows,
            "inputs": reading.input_accounting(files, tally), "segments": steps.segment_counts(sorted_list, params)},
        shard_list=beam.pvalue.AsList(shard_meta), block_counts=beam.pvalue.AsList(sorted_blocks.block_counts),
        rejected_rows=beam.pvalue.AsSingleton(rejected), tally=beam.pvalue.AsList(tallies),
        sorted_list=beam.pvalue.AsList(sorted_blocks.blocks))


def build_stats(args, manifest: Dict, scaling_stats: Dict) -> Dict:
    """stats.json from the run's manifest (docs/DESIGN.md, "The output folder of a preprocess run")."""
    splits = {}
    for split in output_folder.SPLITS if args.val_crews else output_folder.REQUIRED_SPLITS:
        blocks_of_split = [b for b in manifest["block_counts"] if b["split"] == split]
        recordings = [r for r in manifest["segments"] if r["split"] == split]
        shard_list = sorted((s for s in manifest["shards"] if s["split"] == split), key=lambda s: s["file"])
        counts = {name: sum(s["class_counts"][name] for s in shard_list) for name in LABEL_VOCABULARY}
        splits[split] = {
            "crews": sorted({b["crew"] for b in blocks_of_split}),
            "num_rows": sum(b["num_rows"] for b in blocks_of_split),
            "num_windows": sum(s["num_windows"] for s in shard_list),
            "class_counts": counts,
            "segments": sum(r["segments"] for r in recordings),
            "short_segments": sum(r["short_segments"] for r in recordings),
            "shards": [shard_entry(s, args.layout) for s in shard_list],
        }
        if args.layout == sequence.SEQUENCE:
            splits[split]["num_chunks"] = sum(len(s.get("chunks", [])) for s in shard_list)
    per_layout = {"chunk_rows": args.chunk_rows} if args.layout == sequence.SEQUENCE else {}
    return {
        "layout": args.layout, "window": args.window, "stride": args.stride, **per_layout, "max_gap": args.max_gap,
        "features": list(args.features), "label_vocabulary": list(LABEL_VOCABULARY),
        "scale": args.scale, "scaling": scaling_stats, "compression": args.compression,
        "rejected_rows": manifest["rejected_rows"], "splits": splits, "inputs": manifest["inputs"],
    }


def shard_entry(shard: Dict, layout_name: str) -> Dict:
    """A shard as stats.json lists it: {file, num_windows, sha256} (windows layout) or {file,
    num_chunks, sha256, chunks} (sequence layout: each record's [position, c, label runs])."""
    if layout_name == sequence.SEQUENCE:
        chunks = shard.get("chunks", [])  # an empty shard's metadata has none
        return {"file": shard["file"], "num_chunks": len(chunks), "sha256": shard["sha256"], "chunks": chunks}
    return {"file": shard["file"], "num_windows": shard["num_windows"], "sha256": shard["sha256"]}


def _crews_flags(args) -> Dict[str, List[int]]:
    """{split: the crews its flag names} for the splits chosen by crew (eval, val)."""
    return {output_folder.EVAL: list(args.eval_crews), output_folder.VAL: list(args.val_crews)}


def _crews(crews: Sequence[int]) -> str:
    return ",".join(map(str, crews))


def check_split_crews(manifest: Dict, args) -> None:
    """PreprocessError if a crew of --eval-crews or --val-crews has no usable row: the split asked
    for cannot be given."""
    found = sorted({c["crew"] for c in manifest["block_counts"]})
    for split, crews in _crews_flags(args).items():
        missing = sorted(set(crews) - set(found))
        if missing:
            raise PreprocessError(
                f"--{split}-crews {_crews(crews)}: crew {', '.join(map(str, missing))} has no usable row "
                f"in the input (crews found: {', '.join(map(str, found)) or 'none'}); nothing was published")


def check_splits(manifest: Dict, args) -> None:
    """PreprocessError if the train split (always) or the eval or val split (when its crews are
    given) has no window: no usable row, or every time segment of its crews shorter than --window."""
    flags = _crews_flags(args)
    for split in [output_folder.TRAIN] + [s for s in output_folder.SPLITS if flags.get(s)]:
        rows = sum(c["num_rows"] for c in manifest["block_counts"] if c["split"] == split)
        if rows == 0:
            held = "; ".join(f"--{s}-crews {_crews(c) or 'none'}" for s, c in flags.items())
            raise PreprocessError(f"no usable {split} rows: every row was rejected or belongs to an "
                                  f"eval or val crew ({held})")
        if any(s["num_windows"] for s in manifest["shards"] if s["split"] == split):
            continue
        recordings = [r for r in manifest["segments"] if r["split"] == split]
        raise PreprocessError(
            f"no {split} windows: all {sum(r['segments'] for r in recordings):,} time segment(s) of the {split} crews "
            f"are shorter than --window {args.window:,} rows (the longest has "
            f"{max(r['longest_segment'] for r in recordings):,}; a time gap over --max-gap {args.max_gap:g} s "
            f"starts a segment); nothing was published")


def short_segment_notes(stats: Dict) -> List[str]:
    """One line per split with time segments shorter than the window (they give no window)."""
    return [f"{split}: {s['short_segments']:,} of {s['segments']:,} time segment(s) are shorter than the "
            f"window ({stats['window']:,} rows) and give no window"
            for split, s in stats["splits"].items() if s.get("short_segments")]


def check_rejects(manifest: Dict, max_bad_fraction: float, staging: str) -> None:
    """PreprocessError if rejected rows / rows read exceeds `max_bad_fraction` (beam_jobs.rejects)."""
    try:
        rejects.check_bad_fraction(sum(entry["rows_read"] for entry in manifest["inputs"]),
                                   manifest["rejected_rows"], max_bad_fraction, rejects.in_folder(staging))
    except rejects.TooManyRejectsError as e:
        raise PreprocessError(str(e)) from None


def run(argv: Optional[Sequence[str]] = None) -> Dict:
    """Run the job; returns the stats.json it wrote. Raises PreprocessError on bad input; any
    failure (an interrupt included) removes the run's staging folder on the way out, and OUT
    keeps what it held."""
    args, beam_args = _parse_args(argv)
    files = match_inputs(args.input)
    with ownership.hold(args.output, f"--output {args.output}"):  # one run at a time in OUT
        return _run(args, beam_args, files)


def _run(args, beam_args: Sequence[str], files: Sequence[str]) -> Dict:
    started = time.time()
    # OUT must be crewstream's to write (new, empty or an earlier preprocess output), before any work
    owned = ownership.check_output_folder(args.output, ownership.PREPROCESS, inputs=files)
    ownership.remove_leftover_stagings(args.output)  # killed runs' (no live run holds OUT but this one)
    import apache_beam as beam
    import tensorflow_transform as tft
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_jobs import publish
    from tfrecords_schema import transform_graph

    check_inputs(files, args.features)
    if not args.eval_crews:
        _LOG.warning("no --eval-crews given: every crew goes to train and the eval split is empty")
    staging = file_io.join(absolute(args.output), f"{output_folder.STAGING_PREFIX}{uuid.uuid4().hex[:12]}")
    ownership.claim(args.output, ownership.PREPROCESS, owned)
    published = False
    try:
        ownership.write_marker(staging, ownership.STAGING_KIND)  # remove_leftover_stagings knows it by this
        _LOG.info("preprocess %d file(s) -> %s (W=%d, stride=%d, %d feature(s), %s)", len(files),
                  args.output, args.window, args.stride, len(args.features), args.scale)
        import tensorflow_transform.beam  # noqa: F401  (build_pipeline's, imported before the freeze)

        from beam_jobs import preprocess_steps, scaling  # noqa: F401  (the same)

        failure.imports_done()
        options = PipelineOptions(without_type_checks(beam_args))
        with beam.Pipeline(runner=make_runner(options), options=options) as pipeline:
            build_pipeline(pipeline, files, args, staging)

        from beam_jobs.reading import read_manifest

        manifest = read_manifest(staging)
        check_rejects(manifest, args.max_bad_fraction, staging)
        check_split_crews(manifest, args)
        check_splits(manifest, args)
        scaling_stats = transform_graph.scaling_stats(tft.TFTransformOutput(staging), args.features, args.scale)
        stats = validate_stats(build_stats(args, manifest, scaling_stats))  # before anything moves
        for note in short_segment_notes(stats):
            _LOG.warning("%s", note)
        with ownership.uninterrupted():  # an interrupt waits until OUT holds the new output whole
            path = publish.publish(staging, args.output, stats)  # removes staging once it has moved
            published = True
    finally:
        if not published:  # whatever ended the run: OUT keeps what it held, nothing of the run stays
            _discard(staging, args.output)
    _LOG.info("wrote %s in %.1f s", path, time.time() - started)
    return stats


def _discard(staging: str, out: str) -> None:
    """A run that did not publish leaves OUT as it found it: its staging folder and the marker of
    a claim that owns nothing are removed (ownership.hold removes the folder it created)."""
    if file_io.exists(staging):
        ownership.remove_tree(staging)
    ownership.unclaim(out)


def summarize(stats: Dict) -> str:
    """A readable table of a stats.json."""
    read = sum(entry["rows_read"] for entry in stats.get("inputs", []))
    num_chunks = sum(stats["splits"][s].get("num_chunks", 0) for s in output_folder.splits_of(stats))
    chunks = (f"; sequence layout: {num_chunks:,} chunk(s) "
              f"of up to {stats['chunk_rows']:,} rows (windows below: this window and stride; a trainer "
              "may cut others)" if sequence.layout_of(stats) == sequence.SEQUENCE else "")
    lines = [f"window {stats['window']} x {len(stats['features'])} feature(s), stride {stats['stride']}, "
             f"scale {stats['scale']}, rejected rows {stats['rejected_rows']:,}"
             + (f" of {read:,} read (see rejects/)" if stats["rejected_rows"] else "") + chunks,
             f"{'split':<6} {'crews':<14} {'rows':>12} {'windows':>10}  " + "  ".join(
                 f"{c:>8}" for c in LABEL_VOCABULARY) + "  shards"]
    for split in output_folder.splits_of(stats):
        s = stats["splits"][split]
        lines.append(f"{split:<6} {','.join(map(str, s['crews'])) or '-':<14} {s['num_rows']:>12,} "
                     f"{s['num_windows']:>10,}  " + "  ".join(
                         f"{s['class_counts'].get(c, 0):>8,}" for c in LABEL_VOCABULARY)
                     + f"  {len(s['shards'])}")
    return "\n".join(lines + [f"warning: {note}" for note in short_segment_notes(stats)])


@failure.command("preprocess")
def main(argv: Optional[Sequence[str]] = None) -> int:
    prefer_legacy_keras()  # before anything imports TensorFlow: its import skips Keras 3 (about 1 s)
    console.setup(console.verbose_requested(argv))
    print(summarize(run(argv)))
    return 0


if __name__ == "__main__":
    failure.run_process(main)
