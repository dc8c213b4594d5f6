"""`crewstream SUBCOMMAND ...`: one console script; each subcommand is a module's `main(argv)`.

The modules are imported only when their subcommand runs, so `crewstream synth` does not pay for
importing TensorFlow and `crewstream --help` is instant.
"""

import importlib
import importlib.metadata
import importlib.util
import os
import sys
from typing import List, Optional

from crewstream import failure

# subcommand -> (module with main(argv), one-line help)
SUBCOMMANDS = {
    "synth": ("crewstream.synth", "write a sample train.csv / test.csv in the Kaggle layout"),
    "preprocess": ("beam_jobs.preprocess", "Beam + tf.Transform: CSVs -> scaled windowed TFRecord shards"),
    "verify": ("crewstream.verify", "check a preprocess output: record CRCs, counts, unlisted shards"),
    "train": ("trainer.task", "stream the shards into a tf_keras model; export a serving model"),
    "evaluate": ("trainer.evaluate", "evaluate a trained model on a split; write eval.json"),
    "predict": ("beam_jobs.predict", "predict a test CSV in bounded memory (a Beam job); write a submission"),
    "score": ("trainer.score", "score a submission against a truth file (log loss, accuracy, F1)"),
    "demo": ("crewstream.demo", "synth -> preprocess -> ... on a small generated sample"),
}


def _usage() -> str:
    names = [name for name, (module, _) in SUBCOMMANDS.items() if available(module)]
    width = max(len(name) for name in SUBCOMMANDS)
    lines = ["usage: crewstream [--version] SUBCOMMAND [--help] [args...]", "", "subcommands:"]
    lines += [f"  {name:<{width}}  {SUBCOMMANDS[name][1]}" for name in names]
    return "\n".join(lines)


def available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def version() -> str:
    """The installed distribution's version (setup.py's `version`, its one source)."""
    try:
        return importlib.metadata.version("crewstream")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown (not installed)"


def main(argv: Optional[List[str]] = None) -> int:
    """The console script: run a subcommand; a closed stdout (`| head -1`) ends it quietly."""
    argv = list(sys.argv[1:] if argv is None else argv)
    name = argv[0] if argv and argv[0] in SUBCOMMANDS else ""
    try:
        try:  # the subcommand's main runs its own failure path; this one covers importing it
            return failure.run(name, _dispatch, argv)
        finally:  # inside the try: the flush at exit would otherwise fail with a traceback
            sys.stdout.flush()
    except BrokenPipeError:
        # Python's documented recipe (signal module, "Note on SIGPIPE"): point stdout at devnull
        # so that the interpreter's own flush at exit does not fail again; exit 1 as Python does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _dispatch(argv: Optional[List[str]]) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"crewstream {version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS or not available(SUBCOMMANDS[name][0]):
        print(f"crewstream: unknown subcommand {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    result = module.main(rest)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
