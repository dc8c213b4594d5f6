"""`crewstream SUBCOMMAND ...`: one console script; each subcommand is a module's `main(argv)`.

Nothing imports this module (it sits on top of every package). Each subcommand's module is
imported only when it runs, so `crewstream synth` does not pay for importing TensorFlow and
`crewstream --help` is instant; the imports are written out below so that readers and tools see
them.
"""

import importlib.metadata
import os
import sys
from typing import Callable, List, Optional

from cli_common import failure


def _synth():
    from crewstream import synth
    return synth.main


def _preprocess():
    from beam_jobs import preprocess
    return preprocess.main


def _verify():
    from crewstream import verify
    return verify.main


def _train():
    from trainer import task
    return task.main


def _evaluate():
    from trainer import evaluate
    return evaluate.main


def _predict():
    from beam_jobs import predict
    return predict.main


def _live():
    from beam_jobs import live
    return live.main


def _score():
    from trainer import score
    return score.main


def _watch():
    from crewstream import watch
    return watch.main


def _demo():
    from crewstream import demo
    return demo.main


# subcommand -> (its main(argv), imported when called; one-line help)
SUBCOMMANDS = {
    "synth": (_synth, "write a sample train.csv / test.csv in the Kaggle layout"),
    "preprocess": (_preprocess, "Beam + tf.Transform: CSVs -> scaled windowed TFRecord shards"),
    "verify": (_verify, "check a preprocess output: record CRCs, counts, unlisted shards"),
    "train": (_train, "stream the shards into a tf_keras model; export a serving model"),
    "evaluate": (_evaluate, "evaluate a trained model on a split; write eval.json"),
    "predict": (_predict, "predict a test CSV in bounded memory (a Beam job); write a submission"),
    "live": (_live, "streaming predict: each arriving row's probabilities, equal to predict's (a Beam job)"),
    "score": (_score, "score a submission against a truth file (log loss, accuracy, F1)"),
    "watch": (_watch, "serve a live page of a live-predict output folder (127.0.0.1 only)"),
    "demo": (_demo, "synth -> preprocess -> ... on a small generated sample"),
}


def command(name: str) -> Callable[[Optional[List[str]]], int]:
    """The `main(argv)` of subcommand `name` (its module imported now)."""
    return SUBCOMMANDS[name][0]()


def _usage() -> str:
    width = max(len(name) for name in SUBCOMMANDS)
    lines = ["usage: crewstream [--version] SUBCOMMAND [--help] [args...]", "", "subcommands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    return "\n".join(lines)


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


def script() -> None:
    """The `crewstream` console script (setup.py's entry point): `main()` as the process's own,
    which then ends through failure.end_process (failure.run_process)."""
    failure.run_process(main)


def _dispatch(argv: Optional[List[str]]) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"crewstream {version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"crewstream: unknown subcommand {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    return int(command(name)(rest) or 0)


if __name__ == "__main__":
    failure.run_process(main)
