"""What both Beam jobs need to start: Beam's flags checked before any work, the runner chosen,
local paths made absolute for workers."""

import argparse
import difflib
import logging
import os
from typing import List, Sequence

LOCAL_RUNNERS = (None, "DirectRunner", "FnApiRunner")
# A local predict on at least this much input gets one in-process worker per usable core: below
# one split (csv_reader.DEFAULT_SPLIT_BYTES) a second worker would have nothing to read, and a
# small run would only pay for the threads. (Preprocess stays on one worker unless told: its
# shards and stats do not depend on the workers, but transform_fn/saved_model.pb's function names
# carry TensorFlow's process-wide counters, which more workers in one process move.)
PARALLEL_INPUT_BYTES = 64 << 20
MAX_LOCAL_WORKERS = 8
# Flags by which the user chose how a run is spread: then crewstream chooses nothing.
_PLACEMENT_FLAGS = ("--runner", "--direct_num_workers", "--direct_running_mode", "--environment_type")
# Beam's construction-time type checks (TypeOptions.pipeline_type_check, on by default) infer
# every step's output type, disassembling its functions: 13% of the Python calls of a tiny
# preprocess after its imports (benchmarks/README.md). crewstream's pipelines are fixed and are
# built with the checks on in its tests (tests/beam_jobs/test_runner.py); a run turns them off
# unless one of these flags was given. The outputs do not depend on it (tests/test_golden.py).
# (Beam has no flag that turns them on: a user who asks for any type checking keeps Beam's default.)
_TYPE_CHECK_FLAGS = ("--no_pipeline_type_check", "--type_check_strictness", "--type_check_additional",
                     "--runtime_type_check", "--performance_runtime_type_check")
# TensorFlow imports Keras 3 with itself (about 1 s of its 4 s import on our machines) unless told
# that `tf.keras` is the legacy tf_keras, the Keras crewstream uses (trainer/model.py).
LEGACY_KERAS = "TF_USE_LEGACY_KERAS"


class JobError(RuntimeError):
    """A problem the user can fix (bad arguments, input files or runner flags); printed without a
    traceback."""


def beam_flag_parser(prog: str) -> argparse.ArgumentParser:
    """The parser Beam's PipelineOptions.get_all_options builds (every PipelineOptions class's
    flags, no abbreviations), its errors one line; what it leaves unparsed, Beam logs and drops."""
    from apache_beam.options import pipeline_options as beam_options

    class _BeamFlagParser(beam_options._BeamArgumentParser):
        def error(self, message):
            if not message.startswith("ambiguous option: "):  # Beam ignores those too
                self.exit(2, f"{self.prog}: error: {message}\n")

    parser = _BeamFlagParser(prog=prog, allow_abbrev=False)
    for cls in {str(c): c for c in beam_options.PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)
    return parser


def refuse_unknown_flags(parser: argparse.ArgumentParser, beam_args: Sequence[str]) -> None:
    """Exit 2 with one line if `beam_args` (what `parser` did not know) holds a flag Beam's
    PipelineOptions do not know either, naming the closest known flag the way Beam's own warning
    does (difflib over the option strings), crewstream's own among them. Beam would only log it
    and the run would go on with defaults."""
    beam_parser = beam_flag_parser(parser.prog)
    unknown = beam_parser.parse_known_args(list(beam_args))[1]
    if not unknown:
        return
    arg = next((a for a in unknown if a.startswith("-")), unknown[0])
    if not arg.startswith("-"):
        parser.exit(2, f"{parser.prog}: error: unexpected argument {arg!r}\n")
    name = arg.split("=", 1)[0]
    known = [s for p in (parser, beam_parser) for action in p._actions for s in action.option_strings]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    parser.exit(2, f"{parser.prog}: error: unknown flag {name}: neither {parser.prog} nor Beam's "
                   f"PipelineOptions know it{hint}\n")


def usable_cores() -> int:
    """The cores this process may run on (its affinity), at least 1."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def with_local_workers(beam_args: Sequence[str], input_bytes: int) -> List[str]:
    """`beam_args`, plus `--direct_num_workers N` (N: the usable cores, at most MAX_LOCAL_WORKERS)
    when the run is local, reads at least PARALLEL_INPUT_BYTES, and no flag of `_PLACEMENT_FLAGS`
    was given. The workers are threads of this process (Beam's in_memory mode: each runs its share
    of a stage's bundles; pyarrow, numpy, zlib, file writes and TensorFlow release the GIL), and the
    outputs do not depend on their number."""
    args = list(beam_args)
    workers = min(usable_cores(), MAX_LOCAL_WORKERS)
    if _gives_any(args, _PLACEMENT_FLAGS) or input_bytes < PARALLEL_INPUT_BYTES or workers < 2:
        return args
    logging.getLogger("crewstream.runner").info(
        "%d in-process workers, one per usable core (--direct_num_workers N to choose)", workers)
    return args + ["--direct_num_workers", str(workers)]


def without_type_checks(beam_args: Sequence[str]) -> List[str]:
    """`beam_args`, plus `--no_pipeline_type_check` unless a flag of `_TYPE_CHECK_FLAGS` was given:
    Beam's construction-time type inference is skipped, and the PCollections between stages are
    coded by the coder Beam gives `Any` (FastPrimitivesCoder: Python's own types natively, the
    rest pickled) rather than by one chosen from an inferred type."""
    args = list(beam_args)
    return args if _gives_any(args, _TYPE_CHECK_FLAGS) else args + ["--no_pipeline_type_check"]


def _gives_any(args: Sequence[str], flags: Sequence[str]) -> bool:
    """Whether `args` holds one of `flags` (as `--flag value` or `--flag=value`)."""
    return any(a.split("=", 1)[0] in flags for a in args)


def runs_in_this_process(options) -> bool:
    """Whether the job's workers are threads of this process: a local run in Beam's in_memory mode
    (the default), without a worker pool."""
    from apache_beam.options.pipeline_options import DirectOptions, PortableOptions, StandardOptions

    return (options.view_as(StandardOptions).runner in LOCAL_RUNNERS
            and options.view_as(PortableOptions).environment_type is None
            and options.view_as(DirectOptions).direct_running_mode == "in_memory")


def input_bytes(files: Sequence[str]) -> int:
    """The bytes of the local files among `files` (a URL counts 0: its size is not looked up)."""
    return sum(os.path.getsize(f) for f in files if os.path.isfile(f))


def prefer_legacy_keras() -> None:
    """Call before TensorFlow is imported (a command's main): `tf.keras` is to be tf_keras, so that
    importing TensorFlow does not import Keras 3, which a job that loads SavedModels never uses.
    A value the user set is kept; child processes (local SDK workers) inherit it."""
    os.environ.setdefault(LEGACY_KERAS, "1")


def absolute(path: str) -> str:
    """A local path made absolute, URLs (gs://...) as they are: workers resolve a relative path in
    their own working directory, which on a portable runner is not the launcher's."""
    from apache_beam.io.filesystems import FileSystems

    return path if FileSystems.get_scheme(path) else os.path.abspath(path)


def make_runner(options):
    """The runner: a local DirectRunner request runs on the FnApiRunner directly.

    Beam's DirectRunner would first hand the pipeline to the Prism runner, which downloads a
    binary; our machines are offline, so we take the FnApiRunner path it would fall back to.
    `--direct_num_workers` and `--direct_running_mode` still apply. With `--environment_type
    EXTERNAL --environment_config HOST:PORT` it runs `--direct_num_workers` SDK workers taken from
    a worker pool (`python -m apache_beam.runners.worker.worker_pool_main`): the portable runners'
    machinery with several workers, which Beam's embedded job service (`--runner PortableRunner
    --job_endpoint embed`) cannot give: it always asks the pool for one.

    Any other runner is built by Beam from `--runner`, except that a job service on this machine
    (`--job_endpoint embed`) with a DOCKER environment, Beam's default, is refused: it would pull
    Beam's SDK container here.
    """
    from apache_beam.options.pipeline_options import DirectOptions, PortableOptions, StandardOptions

    name = options.view_as(StandardOptions).runner
    portable = options.view_as(PortableOptions)
    if name in LOCAL_RUNNERS:
        from apache_beam.runners.portability.fn_api_runner import fn_runner

        if portable.environment_type is None:
            return fn_runner.FnApiRunner()
        if portable.environment_type != "EXTERNAL" or \
                options.view_as(DirectOptions).direct_running_mode != "in_memory":
            raise JobError("a local run takes --environment_type EXTERNAL (workers from a worker "
                                  "pool) without --direct_running_mode, or no --environment_type")
        from apache_beam.transforms import environments

        return fn_runner.FnApiRunner(default_environment=environments.ExternalEnvironment.from_options(portable))
    if portable.job_endpoint == "embed" and portable.environment_type in (None, "DOCKER"):
        raise JobError("--job_endpoint embed runs the SDK workers on this machine: add --environment_type "
                              "EXTERNAL --environment_config HOST:PORT (a worker pool) or LOOPBACK; the "
                              "default, DOCKER, would pull Beam's SDK container")
    return None  # Beam builds the runner named by --runner
