"""`crewstream verify OUT` / `python -m crewstream.verify`: the command line of
tfrecords_schema.verify (is OUT a complete, intact preprocess output?), kept here so that the
contract package does not depend on crewstream. Exit 0 when intact, 1 with one line per problem.
"""

import argparse
import sys
from typing import Optional, Sequence

from cli_common import console, failure
from tfrecords_schema.verify import Report, verify


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="crewstream verify",
        description="Check a preprocess output folder against its stats.json: every shard's "
                    "record CRCs and framing, shard digests, records parse with the schema, record "
                    "and class counts, no unlisted shards; the transform graph loads and applies "
                    "stats.json's scaling. Exit 0 when intact, 1 with one line per problem.")
    parser.add_argument("out", metavar="OUT", nargs="?", help="preprocess output folder (local path or gs://...)")
    parser.add_argument("--data", metavar="OUT", default=None,
                        help="the same folder, with the flag train and evaluate name it by")
    console.add_verbose(parser)
    args = parser.parse_args(argv)
    if (args.out is None) == (args.data is None):
        parser.error("name the preprocess output folder once: OUT or --data OUT")
    args.out = args.out or args.data
    return args


@failure.command("verify")
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parse_args(argv)
    console.setup(args.verbose)
    try:  # before TensorFlow is imported
        console.check_preprocess_output(args.out, "OUT")
        report = verify(args.out)
    except console.MissingPathError as e:
        report = Report([str(e)], [])
    for note in report.notes:
        print(f"note: {note}")
    if not report.ok:
        for problem in report.problems:
            print(f"crewstream verify: {args.out}: {problem}", file=sys.stderr)
        print(f"crewstream verify: {args.out}: {len(report.problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{args.out}: ok: {report.num_shards} shard(s), {report.num_records:,} record(s); "
          "CRCs, digests, schema, record and class counts, transform graph agree with stats.json")
    return 0


if __name__ == "__main__":
    failure.run_process(main)
