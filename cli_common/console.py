"""What every subcommand's command line shares: quiet output, the shared flags, early path checks.

Every `main(argv)` (run by `crewstream SUBCOMMAND` or `python -m MODULE`) parses its arguments,
calls `setup(args.verbose)`, checks its paths with `check_exists` and only then imports TensorFlow
or Beam, so that a usage error returns in about a second. This module imports neither.

By default a command prints only crewstream's own lines (loggers `crewstream`, `beam_jobs`,
`trainer`, `tfrecords_schema`, at INFO): TensorFlow's C++ logs (TF_CPP_MIN_LOG_LEVEL, unless the
user set it, and the start-up lines TensorFlow's libraries write to stderr while `tensorflow` is
imported), absl's, Beam's and tf.Transform's Python logs are silenced (an error that ends a run
is the command's one line: cli_common.failure). `--verbose`
leaves all of them on and logs at DEBUG. Worker processes that Beam starts itself
(`--direct_running_mode multi_processing`, a worker pool) inherit TF_CPP_MIN_LOG_LEVEL but not
the capture: each still writes TensorFlow's start-up lines when it loads it (Beam's local runner
passes workers no options through which to reach them).

The shared flags mean the same in every subcommand: `--verbose` (above, and full tracebacks),
`--progress auto|bar|log|none` (auto: a bar on a terminal, plain log lines otherwise), drawn by
`Progress`.
"""

import argparse
import contextlib
import importlib.abc
import importlib.machinery
import logging
import math
import os
import sys
import tempfile
import time
from typing import IO, Iterator, Optional

from tfrecords_schema import file_io, output_folder

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
OWN_LOGGERS = ("crewstream", "cli_common", "beam_jobs", "trainer", "tfrecords_schema")
QUIET_MODULES = ("tensorflow",)  # their import writes start-up lines to the stderr file descriptor

PROGRESS_MODES = ("auto", "bar", "log", "none")


class UsageError(ValueError):
    """An argument that is wrong in itself, found after argparse (one line; the command exits 2,
    as for argparse's own errors: cli_common.failure)."""


class MissingPathError(ValueError):
    """A path a flag names does not exist, found before any work (one line; the command exits 1)."""


# ---------------------------------------------------------------------------------------------
# Quiet by default

def setup(verbose: bool) -> None:
    """Configure logging for a command and, unless `verbose`, silence the libraries' own output.

    Call before TensorFlow is imported (the C++ log level is read when it loads); calling it
    again (the demo runs several commands in one process) changes nothing already set.
    """
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # inherited by worker processes
        quiet_imports()
    # The libraries' own error logs too: an error that ends the run reaches the user as the
    # command's one line (cli_common.failure); Beam logs every step's error before re-raising it.
    logging.basicConfig(level=logging.DEBUG if verbose else logging.CRITICAL, format=LOG_FORMAT)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)


def quiet_imports() -> None:
    """From now on, the first import of each of QUIET_MODULES runs with stderr captured."""
    if not any(isinstance(f, _QuietImportFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImportFinder())


@contextlib.contextmanager
def stderr_captured() -> Iterator[IO[bytes]]:
    """File descriptor 2 (what C++ libraries write to) goes to a temporary file inside the block;
    the file is yielded, and on an exception (not an interrupt) its text is written back to
    stderr before it rises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield captured
        except KeyboardInterrupt:  # an interrupted import: the lines said nothing of why it ended
            raise
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class _QuietLoader(importlib.abc.Loader):
    """Runs a module's real loader with stderr captured (dropped when the import succeeds)."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__loader__ = module.__spec__.loader = self._loader  # the module sees its own loader
        with stderr_captured():
            self._loader.exec_module(module)


class _QuietImportFinder(importlib.abc.MetaPathFinder):
    """Finds QUIET_MODULES as the path finder would, their loading wrapped in _QuietLoader."""

    def find_spec(self, name, path, target=None):
        if name not in QUIET_MODULES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def verbose_requested(argv: Optional[list]) -> bool:
    """Whether `--verbose` is among the arguments (for set-up before they are parsed)."""
    return "--verbose" in (sys.argv[1:] if argv is None else argv)


# ---------------------------------------------------------------------------------------------
# The shared flags

def int_at_least(minimum: int):
    """An argparse type: an integer >= `minimum`, else "must be an integer >= MINIMUM, got TEXT"."""
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text}")
        return value

    parse.__name__ = "int"  # argparse names the type in "invalid int value: 'x'"
    return parse


def number_of(unit: str, above: float = 0.0, inclusive: bool = True):
    """An argparse type: a finite number of `unit` >= `above` (> with inclusive=False), else
    "must be a finite number of UNIT >= ABOVE, got TEXT"."""
    sign = ">=" if inclusive else ">"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not (math.isfinite(value) and (value >= above if inclusive else value > above)):
            raise argparse.ArgumentTypeError(f"must be a finite number of {unit} {sign} {above:g}, got {text}")
        return value

    return parse


def fraction(text: str) -> float:
    """An argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text}")
    return value


def add_verbose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", action="store_true",
                        help="also the libraries' logs (TensorFlow, Beam, absl), debug logging and "
                             "full tracebacks")


def progress_mode(text: str) -> str:
    """argparse type of --progress: one of PROGRESS_MODES."""
    if text not in PROGRESS_MODES:
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(PROGRESS_MODES)})")
    return text


def add_progress(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--progress", type=progress_mode, default="auto", metavar="{" + ",".join(PROGRESS_MODES) + "}",
                        help=f"{what}: a bar, plain log lines, or nothing; auto: a bar on a terminal, "
                             "log lines otherwise (default auto)")


def resolve_progress(mode: str, stream: Optional[IO] = None) -> str:
    """`mode` with auto made concrete: "bar" when `stream` (default stderr) is a terminal, else "log"."""
    if mode != "auto":
        return mode
    stream = sys.stderr if stream is None else stream
    return "bar" if getattr(stream, "isatty", lambda: False)() else "log"


class Progress:
    """Work done toward a known total: a one-line bar on a terminal, periodic log lines otherwise.

    mode: "bar", "log" or "none" ("auto" picks bar or log by whether `stream` is a terminal).
    Log lines go to `logger` at INFO (default: the `crewstream` logger).
    """

    def __init__(self, label: str, total: float, unit: str, mode: str = "auto", stream=None,
                 log_every: float = 30.0, scale: float = 1.0, width: int = 24,
                 logger: Optional[logging.Logger] = None):
        self.stream = stream or sys.stderr
        mode = resolve_progress(mode, self.stream)
        self.label, self.total, self.unit, self.mode = label, max(float(total), 0.0), unit, mode
        self.scale, self.width, self.log_every = scale, width, log_every
        self.logger = logger or logging.getLogger("crewstream")
        self.done = 0.0
        self.started = self._last = time.monotonic()

    def update(self, amount: float) -> None:
        self.done += amount
        now = time.monotonic()
        if self.mode == "bar" and now - self._last >= 0.2:
            self._last = now
            self.stream.write("\r" + self.line())
            self.stream.flush()
        elif self.mode == "log" and now - self._last >= self.log_every:
            self._last = now
            self.logger.info("%s", self.line(bar=False))

    def close(self) -> None:
        if self.mode == "bar":
            self.stream.write("\r" + self.line() + "\n")
            self.stream.flush()
        elif self.mode == "log":
            self.logger.info("%s", self.line(bar=False))

    def line(self, bar: bool = True) -> str:
        """`LABEL [####......]  41%  226,304/551,424 windows  3,210 windows/s  1:41 left` (no bar: no [...])."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        fraction = min(self.done / self.total, 1.0) if self.total else 1.0
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        filled = int(round(fraction * self.width))
        parts = [self.label]
        if bar:
            parts.append("[" + "#" * filled + "." * (self.width - filled) + "]")
        parts += [f"{fraction:4.0%}", f"{self._n(self.done)}/{self._n(self.total)} {self.unit}",
                  f"{self._n(rate)} {self.unit}/s", f"{_clock(left)} left" if self.done < self.total
                  else f"in {_clock(elapsed)}"]
        return "  ".join(parts)

    def _n(self, value: float) -> str:
        value /= self.scale
        return f"{value:,.0f}" if self.scale == 1 else f"{value:,.1f}"


def _clock(seconds: float) -> str:
    """h:mm:ss, or m:ss under an hour; ?:?? when unknown."""
    if not math.isfinite(seconds):
        return "?:??"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


# ---------------------------------------------------------------------------------------------
# Early path checks



def check_exists(path: str, flag: str, reason: str = "") -> None:
    """MissingPathError unless the local `path` exists; a URL is left to the command (checked
    later, after TensorFlow or Beam is imported). `reason` follows the message after a colon."""
    if not file_io.is_remote(path) and not os.path.exists(path):
        raise MissingPathError(f"{flag}: {path} not found" + (f": {reason}" if reason else ""))


def check_preprocess_output(out: str, flag: str) -> None:
    """MissingPathError unless the local folder `out` holds stats.json (written last by preprocess); a
    URL is left to the command, as in check_exists."""
    check_exists(file_io.join(out, output_folder.STATS_FILE), flag,
                 f"{out} is not the output of a completed preprocess run")
