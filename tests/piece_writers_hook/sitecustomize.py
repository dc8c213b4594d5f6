"""Test-only start-up hook of tests/piece_writers.py; nothing in crewstream knows about it.

Python imports `sitecustomize` from its path when it starts, so every Python process started with
this folder on PYTHONPATH runs this file. When CREWSTREAM_TEST_PIECE_LOG names a folder, the
process wraps `beam_jobs.shards.write_records` (the writer of every shard piece) so that each piece
it writes appends a line "RECORDS<TAB>PATH" to FOLDER/PID.tsv, PID being its own process id.
"""

import os

_FOLDER = os.environ.get("CREWSTREAM_TEST_PIECE_LOG")

if _FOLDER:
    from beam_jobs import shards

    _write_records = shards.write_records

    def _logged_write_records(path, records):
        count = _write_records(path, records)
        with open(os.path.join(_FOLDER, f"{os.getpid()}.tsv"), "a") as log:
            log.write(f"{count}\t{path}\n")
        return count

    shards.write_records = _logged_write_records
