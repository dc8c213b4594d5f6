"""`crewstream SUBCOMMAND ...`: one console script; each subcommand is a module's `main(argv)`.

The modules are imported only when their subcommand runs, so `crewstream synth` does not pay for
importing TensorFlow and `crewstream --help` is instant.
"""

import importlib
import importlib.util
import sys
from typing import List, Optional

# subcommand -> (module with main(argv), one-line help)
SUBCOMMANDS = {
    "synth": ("crewstream.synth", "write a sample train.csv / test.csv in the Kaggle layout"),
    "preprocess": ("beam_jobs.preprocess", "Beam + tf.Transform: CSVs -> scaled windowed TFRecord shards"),
    "verify": ("tfrecords_schema.verify", "check a preprocess output: record CRCs, counts, unlisted shards"),
    "train": ("trainer.task", "stream the shards into a tf_keras model; export a serving model"),
    "evaluate": ("trainer.evaluate", "evaluate a trained model on a split; write eval.json"),
    "predict": ("trainer.predict", "predict a test CSV in bounded memory; write a submission"),
    "score": ("trainer.score", "score a submission against a truth file (log loss, accuracy, F1)"),
    "demo": ("crewstream.demo", "synth -> preprocess -> ... on a small generated sample"),
}


def _usage() -> str:
    names = [name for name, (module, _) in SUBCOMMANDS.items() if available(module)]
    width = max(len(name) for name in SUBCOMMANDS)
    lines = ["usage: crewstream SUBCOMMAND [--help] [args...]", "", "subcommands:"]
    lines += [f"  {name:<{width}}  {SUBCOMMANDS[name][1]}" for name in names]
    return "\n".join(lines)


def available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
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
