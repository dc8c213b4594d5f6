"""What the benchmark scripts share beyond their measurements."""

import contextlib
import os
import shutil
import tempfile
from typing import Iterator, Optional


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
