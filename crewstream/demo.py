"""`crewstream demo`: the whole flow on a small generated sample, end to end.

    synth -> preprocess -> train -> evaluate -> predict -> score

The sample's crews: 1 and 3 train the weights, 4 is the val split (early stopping and the
temperature look at it), 2 the eval split evaluate reports on, and the test flight (LOFT: A, B, C
and D alternating) is crew 5's, a crew in no split, which score ends with.

Each step is the same subcommand a user would run, called with the same arguments.
"""

import argparse
import os
import time
from typing import List, Optional, Sequence, Tuple

from cli_common import console, failure
from crewstream import cli
from beam_jobs import rejects
from tfrecords_schema import ownership
from trainer.config import TrainConfig

SAMPLE, OUT, MODEL, SUBMISSION = "sample", "out", "model", "submission.csv"
TEST_CREW = 5  # the flight's crew: in no split
SUBMISSION_REJECTS = rejects.beside(SUBMISSION)


# What `crewstream demo --workdir DIR` owns in DIR (tfrecords_schema.ownership).
OUTPUT = ownership.Kind("demo", (SAMPLE, OUT, MODEL, SUBMISSION, SUBMISSION_REJECTS))


def _parse_args(argv):
    parser = argparse.ArgumentParser(prog="crewstream demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="demo-run", help="folder for everything the demo writes")
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="seconds of train recording per (crew, seat, experiment) (default 60)")
    # train's own defaults, chosen on a flight of a crew in no split (benchmarks/README.md, "Defaults on a flight")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs,
                        help=f"training epochs (default {TrainConfig.epochs}, train's)")
    console.add_verbose(parser)  # passed on to every step
    return parser.parse_args(argv)


def steps(workdir: str, seconds: float, epochs: int) -> List[Tuple[str, str, List[str]]]:
    """(title, subcommand, argv) of every step, in order."""
    sample, out, model = (os.path.join(workdir, name) for name in (SAMPLE, OUT, MODEL))
    submission = os.path.join(workdir, SUBMISSION)
    return [
        ("generate a sample", "synth",
         ["--output", sample, "--crews", "1,2,3,4", "--seconds", str(seconds),
          "--test-crews", str(TEST_CREW), "--test-seconds", "60"]),
        ("preprocess", "preprocess",
         ["--input", os.path.join(sample, "train.csv"), "--output", out, "--window", "256", "--stride", "32",
          "--eval-crews", "2", "--val-crews", "4", "--num-shards", "4"]),
        ("train", "train", ["--data", out, "--model-dir", model, "--epochs", str(epochs)]),
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
    failure.run_process(main)
