"""Test-only start-up hook of tests/shard_writers.py; nothing in crewstream knows about it.

Python imports `sitecustomize` from its path when it starts, so every Python process started with
this folder on PYTHONPATH runs this file. When CREWSTREAM_TEST_SHARD_LOG names a folder, the
process wraps `beam_jobs.shards.write_shard` (the writer of every shard file) so that each shard
it writes appends a line "RECORDS<TAB>PATH" to FOLDER/PID.tsv, PID being its own process id.
"""

import os

_FOLDER = os.environ.get("CREWSTREAM_TEST_SHARD_LOG")

if _FOLDER:
    from beam_jobs import shards

    _write_shard = shards.write_shard

    def _logged_write_shard(path, records, compression):
        count, digest = _write_shard(path, records, compression)
        with open(os.path.join(_FOLDER, f"{os.getpid()}.tsv"), "a") as log:
            log.write(f"{count}\t{path}\n")
        return count, digest

    shards.write_shard = _logged_write_shard
