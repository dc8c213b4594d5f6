"""Rejected rows, for both jobs: one CSV format, one writer, one bad-fraction check.

The rejects file (preprocess: OUT/rejects/rejects.csv; predict: NAME.rejects.csv beside the
submission) has the columns `file,line,column,reason,id,text`, one row per rejected input row,
sorted by file and line: `column` is empty when the whole line is at fault, `id` is the row's id
in a test file when its `id` cell still reads (empty otherwise, and always in a train file),
`text` the line as written (at most 1,000 characters; csv_reader.Reject). Its path is spelled
here only: `in_folder(OUT)` and `beside(SUBMISSION)`.
"""

from typing import Iterable, List, Tuple

from beam_jobs.csv_reader import Reject
from tfrecords_schema import file_io, output_folder

HEADER = ("file", "line", "column", "reason", "id", "text")


def in_folder(folder: str) -> str:
    """The rejects file of a preprocess output (or of a job's staging folder): FOLDER/rejects/rejects.csv."""
    return file_io.join(folder, output_folder.REJECTS_DIR, output_folder.REJECTS_FILE)


def beside(output: str) -> str:
    """The rejects file of predict's submission: `sub.csv` -> `sub.rejects.csv` (also for
    `sub.csv.gz` and names without `.csv`)."""
    base = output[:-3] if output.endswith(".gz") else output
    base = base[:-4] if base.endswith(".csv") else base
    return base + ".rejects.csv"


class TooManyRejectsError(ValueError):
    """More rows rejected than --max-bad-fraction allows: nothing is published (the rejects file
    is, to show why)."""


def format_reject(r: Reject) -> str:
    """One CSV line (no newline) of the rejects file; cells quoted only where they must be."""
    def quote(s: str) -> str:
        return '"' + s.replace('"', '""') + '"' if any(c in s for c in ',"\n\r') else s

    return ",".join([quote(r.file), str(r.line), quote(r.column), quote(r.reason),
                     "" if r.id is None else str(r.id), quote(r.text)])


def write_rejects(rejects: Iterable[Reject], path: str) -> int:
    """Write `rejects` sorted by (file, line) to `path` (local or URL, its folder created); nothing
    is written when there are none. Returns how many were written."""
    rejects = sorted(rejects, key=lambda r: (r.file, r.line))
    if not rejects:
        return 0
    with file_io.open_file(path, "w") as f:
        f.write(",".join(HEADER) + "\n")
        for r in rejects:
            f.write(format_reject(r) + "\n")
    return len(rejects)


def first_rejects(path: str, n: int) -> List[Tuple[str, str, str, str]]:
    """(file, line, column, reason) of the first `n` rows of a rejects file."""
    import csv

    with file_io.open_file(path, "r") as f:
        reader = csv.reader(f)
        next(reader)  # the header
        return [tuple(r[:4]) for _, r in zip(range(n), reader)]


def check_bad_fraction(rows_read: int, rejected: int, max_bad_fraction: float, rejects_path: str,
                       what: str = "nothing was published", listed_in: str = "") -> None:
    """TooManyRejectsError when `rejected` / `rows_read` exceeds `max_bad_fraction`, quoting the
    first rejects of the file at `rejects_path` (and saying they are all in `listed_in`, if given)."""
    if not rejects_over(rows_read, rejected, max_bad_fraction):
        return
    first = "; ".join(f"{file} line {line} ({column or 'row'}): {reason}"
                      for file, line, column, reason in first_rejects(rejects_path, 3))
    raise TooManyRejectsError(
        f"{rejected:,} of {rows_read:,} rows rejected ({rejected / rows_read:.3%}), more than "
        f"--max-bad-fraction {max_bad_fraction:g}; {what}. First: {first}"
        + (f" (all listed in {listed_in})" if listed_in else ""))


def rejects_over(rows_read: int, rejected: int, max_bad_fraction: float) -> bool:
    """True when a run must stop for its rejects (as check_bad_fraction decides)."""
    return rows_read > 0 and rejected / rows_read > max_bad_fraction
