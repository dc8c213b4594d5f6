"""What the benchmark scripts share beyond their measurements."""

import contextlib
import os
import shutil
import tempfile
import time
from typing import Callable, Iterable, Iterator, Optional, Sequence, Tuple


@contextlib.contextmanager
def scratch_dir(given: Optional[str], prefix: str) -> Iterator[str]:
    """The benchmark's working folder: `given` (created if needed, kept), or a new temporary folder
    removed at the end."""
    path = given or tempfile.mkdtemp(prefix=prefix)
    os.makedirs(path, exist_ok=True)
    try:
        yield path
    finally:
        if not given:
            shutil.rmtree(path, ignore_errors=True)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_parts(parts: Sequence[Tuple[str, Callable[[], str]]], skip: Iterable[str]) -> None:
    """Run each (name, function returning its report) not in `skip`, printing the report and how
    long it took under what load."""
    for name, run in parts:
        if name not in skip:
            start = time.perf_counter()
            print(f"\n{run()}\n({name}: {time.perf_counter() - start:.0f} s; load average "
                  f"{os.getloadavg()[0]:.2f})", flush=True)
