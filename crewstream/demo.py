"""`crewstream demo`: the whole flow on a small generated sample, end to end.

    synth -> preprocess -> train -> evaluate -> predict -> score

Each step is the same subcommand a user would run, called with the same arguments.
"""

import argparse
import os
import sys
import time
from typing import List, Optional, Sequence, Tuple

from cli_common import console, failure
from crewstream import cli
from beam_jobs import rejects
from tfrecords_schema import ownership

SAMPLE, OUT, MODEL, SUBMISSION = "sample", "out", "model", "submission.csv"
SUBMISSION_REJECTS = rejects.beside(SUBMISSION)
# The sample's train split holds 2 crews, 4 people: trained at random input gains, a model learns
# no person's signal amplitudes (benchmarks/README.md, "Models on a new crew": macro F1 0.86-0.96
# on the held-out crew against 0.69-0.84 without; with 8 train crews the gains hurt, so train's
# default is none).
TRAIN_FLAGS = ("--augment-gain", "2")


# What `crewstream demo --workdir DIR` owns in DIR (tfrecords_schema.ownership).
OUTPUT = ownership.Kind("demo", (SAMPLE, OUT, MODEL, SUBMISSION, SUBMISSION_REJECTS))


def _parse_args(argv):
    parser = argparse.ArgumentParser(prog="crewstream demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="demo-run", help="folder for everything the demo writes")
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="seconds of train recording per (crew, seat, experiment) (default 60)")
    # 24 epochs, as benchmarks/README.md ("Models on a new crew") compared the models on this sample:
    # trained at random input gains (TRAIN_FLAGS), a model needs more of them than 8
    parser.add_argument("--epochs", type=int, default=24, help="training epochs (default 24)")
    console.add_verbose(parser)  # passed on to every step
    return parser.parse_args(argv)


def steps(workdir: str, seconds: float, epochs: int) -> List[Tuple[str, str, List[str]]]:
    """(title, subcommand, argv) of every step, in order."""
    sample, out, model = (os.path.join(workdir, name) for name in (SAMPLE, OUT, MODEL))
    submission = os.path.join(workdir, SUBMISSION)
    return [
        ("generate a sample", "synth",
         ["--output", sample, "--crews", "1,2,3", "--seconds", str(seconds), "--test-seconds", "30"]),
        ("preprocess", "preprocess",
         ["--input", os.path.join(sample, "train.csv"), "--output", out,
          "--window", "256", "--stride", "32", "--eval-crews", "2", "--num-shards", "4"]),
        ("train", "train", ["--data", out, "--model-dir", model, "--epochs", str(epochs), *TRAIN_FLAGS]),
        ("evaluate", "evaluate", ["--data", out, "--model-dir", model, "--split", "eval"]),
        ("predict", "predict", ["--model-dir", model, "--input", os.path.join(sample, "test.csv"),
                                        "--output", submission]),
        ("score", "score", ["--submission", submission,
                                    "--truth", os.path.join(sample, "test_truth.csv")]),
    ]


@failure.command("demo")
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parse_args(argv)
    console.setup(args.verbose)
    with ownership.hold(args.workdir, f"--workdir {args.workdir}"):
        ownership.check_output_folder(args.workdir, OUTPUT, flag="--workdir")
        ownership.claim(args.workdir, OUTPUT)
        return _run_steps(args)


def _run_steps(args) -> int:
    started = time.time()
    for title, subcommand, step_argv in steps(args.workdir, args.seconds, args.epochs):
        step_argv += ["--verbose"] if args.verbose else []
        print(f"\n== {title}: crewstream {subcommand} {' '.join(step_argv)}", flush=True)
        t0 = time.time()
        code = cli.command(subcommand)(step_argv)
        if code:  # the step printed its one line (`crewstream STEP: error: ...`)
            return int(code)
        print(f"== {title}: done in {time.time() - t0:.1f} s", flush=True)
    print(f"\ndemo finished in {time.time() - started:.1f} s; outputs in {args.workdir}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
