"""The live output: what the streaming predict (`crewstream live`) writes and `crewstream watch`
reads (docs/DESIGN.md, "Live").

A live run's output folder holds one CSV file per tick of processing time (each about a second of
the job's work): `part-SSSSSSSSSSSSSSS-NNNNNN.csv`, S the tick's wall-clock start in milliseconds
since the epoch (15 digits), N the run's tick number (6 digits), so that names sort in the order
they were written. Each file is written under a hidden name and renamed into place: a reader never
sees a partial file. Columns (header line first):

    id,A,B,C,D,crew,seat,experiment,time

the submission's five columns (`id` and the probability of each class) followed by where the row
belongs: the recording (crew, seat, experiment) and the row's time in seconds. Probabilities are
written with 9 significant digits, like the batch submission. Rejected rows go to
`rejects-SSSSSSSSSSSSSSS-NNNNNN.csv` files in the rejects format of both jobs
(`file,line,column,reason,id,text`).
"""

import re
from typing import Optional, Tuple

from tfrecords_schema.csv_columns import CREW, EXPERIMENT, ID, SEAT, TIME
from tfrecords_schema.record import LABEL_VOCABULARY

COLUMNS = (ID,) + tuple(LABEL_VOCABULARY) + (CREW, SEAT, EXPERIMENT, TIME)
PART_PREFIX = "part-"
REJECTS_PREFIX = "rejects-"
_NAME = re.compile(r"^(part|rejects)-(\d{15})-(\d{6})\.csv$")


def part_name(tick_ms: int, tick: int, rejects: bool = False) -> str:
    """The file name of tick `tick` started at `tick_ms` (ms since the epoch)."""
    return f"{REJECTS_PREFIX if rejects else PART_PREFIX}{tick_ms:015d}-{tick:06d}.csv"


def parse_name(name: str) -> Optional[Tuple[str, int, int]]:
    """(kind 'part' or 'rejects', tick_ms, tick) of a live output file's name, None for another
    file (a hidden one being written, a marker, a lock)."""
    match = _NAME.match(name)
    return (match.group(1), int(match.group(2)), int(match.group(3))) if match else None
