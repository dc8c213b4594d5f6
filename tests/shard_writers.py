"""Which processes wrote the shards of a preprocess run, seen from outside the job.

Processes started with `environment(folder)` in their environment load
tests/shard_writers_hook/sitecustomize.py, which logs every shard the process writes, with its
record count, under its process id. Beam's multi-processing workers inherit the environment of
the process that runs the pipeline, so a run that claims N worker processes can be checked:
N process ids wrote shards, and their shards hold all the records.
"""

import os
from typing import Dict

HOOK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shard_writers_hook")
LOG_VARIABLE = "CREWSTREAM_TEST_SHARD_LOG"


def environment(folder) -> Dict[str, str]:
    """The variables to add to an environment so that its Python processes log shards to `folder`."""
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": HOOK + (os.pathsep + path if path else ""), LOG_VARIABLE: str(folder)}


def records_by_process(folder) -> Dict[int, int]:
    """{process id: records in the shards it wrote} of every process that logged to `folder`."""
    found = {}
    for name in os.listdir(folder):
        with open(os.path.join(folder, name)) as log:
            found[int(name.split(".")[0])] = sum(int(line.split("\t")[0]) for line in log)
    return found
