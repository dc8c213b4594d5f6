"""The one failure path: how any command's failure becomes one line on stderr and an exit code.

Every subcommand's `main(argv)` is wrapped by `command(NAME)`; `crewstream/cli.py` wraps its
dispatch the same way (an interrupt while a subcommand's modules import). Inside, a command only
raises; here
  - a usage error (`console.UsageError`) exits 2 (argparse's own errors exit 2 as argparse does);
  - any other exception exits 1 with `crewstream NAME: error: WHAT` (`describe`), whatever raised
    it: crewstream's own errors by their message, an OSError (no space, read-only file system,
    permission, not a folder, a folder, too many open files, ...) as `PATH: REASON`, an error
    that Beam re-raised from inside a step by the error it carries;
  - SIGINT and SIGTERM unwind the command like an exception (`Interrupted`), so that every
    `finally` on the way removes what the run had written (its staging folder, its lock), and
    exit 130 / 143 with `crewstream NAME: interrupted (SIGINT)`. A second signal while the first
    unwinds ends the process at once (what it leaves, the next run removes, as after `kill -9`).
`--verbose` prints the full traceback before the line. This module imports neither TensorFlow
nor Beam.
"""

import errno
import functools
import gc
import os
import re
import signal
import sys
import threading
import traceback
from typing import Callable, Iterator, List, NoReturn, Optional, Sequence

from cli_common import console
from tfrecords_schema import ownership

USAGE_EXIT = 2
FAILURE_EXIT = 1
SIGNALS = (signal.SIGINT, signal.SIGTERM)
# The packages whose exceptions are crewstream's own: their message is the line as it stands.
OWN_PACKAGES = ("crewstream", "cli_common", "beam_jobs", "trainer", "tfrecords_schema")
_BEAM_STEP = re.compile(r" \[while running '[^']*'\]")
_ERRNO_TEXT = re.compile(r"\[Errno (\d+)\]")


class Interrupted(KeyboardInterrupt):
    """A command ended by SIGINT or SIGTERM (a KeyboardInterrupt, so libraries treat it as one)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def command(name: str) -> Callable:
    """Decorator of a subcommand's `main(argv) -> int`: run it through `run(name, ...)`."""
    def wrap(body: Callable[[Optional[Sequence[str]]], int]) -> Callable[[Optional[Sequence[str]]], int]:
        @functools.wraps(body)
        def main(argv: Optional[Sequence[str]] = None) -> int:
            return run(name, body, argv)
        return main
    return wrap


_OWN_PROCESS = False  # set by run_process: the command is the process's, not a library call's


def run_process(main: Callable[[], int]) -> NoReturn:
    """How the `crewstream` script and every `python -m` entry run their command: `main()` as the
    process's own (so `imports_done` may freeze), then `end_process` with its code."""
    global _OWN_PROCESS
    _OWN_PROCESS = True
    end_process(main())


def imports_done() -> None:
    """Called by a job once it has imported what it runs on (TensorFlow, Beam, tf.Transform): in a
    process of its own (`run_process`), every object made so far, hundreds of thousands and nearly
    all kept to the end, is frozen (`gc.freeze`), so that the collector's full collections during
    the run walk the run's own objects only (a tiny preprocess 0.22 s faster after its imports,
    benchmarks/README.md). Objects made later are collected as always. A job called as a library
    (tests, notebooks) freezes nothing: there the garbage of earlier runs would be kept for good."""
    if _OWN_PROCESS:
        gc.freeze()


def end_process(code: int) -> NoReturn:
    """Exit the process with `code` once its command has ended (the `crewstream` script and every
    `python -m` entry). Every object still alive is frozen first (`gc.freeze`): the interpreter's
    last collections then need not walk TensorFlow's and Beam's millions of objects, about 1 s of
    every run's exit on our machines (benchmarks/README.md). atexit handlers, flushes and module
    teardown run as always; a command's own files were closed before it returned."""
    gc.freeze()
    sys.exit(code)


def run(name: str, body: Callable[[Optional[Sequence[str]]], int], argv: Optional[Sequence[str]] = None) -> int:
    """`body(argv)`'s exit code; any failure of it printed as one line and turned into its code.
    `name` is the subcommand ("" for the `crewstream` command itself)."""
    prog = f"crewstream {name}" if name else "crewstream"
    verbose = console.verbose_requested(argv)
    with _SignalsUnwind() as received:
        try:
            return int(body(argv) or 0)
        except SystemExit:  # argparse's --help (0) and usage errors (2), as argparse meant them
            if received:
                return _interrupted(prog, received[0])
            raise
        except BaseException as e:  # every failure, KeyboardInterrupt included, ends here
            if verbose:
                traceback.print_exc()
            if received or isinstance(e, KeyboardInterrupt):
                return _interrupted(prog, received[0] if received else signal.SIGINT)
            print(f"{prog}: error: {describe(e)}", file=sys.stderr, flush=True)
            return USAGE_EXIT if isinstance(e, console.UsageError) else FAILURE_EXIT


def _interrupted(prog: str, signum: int) -> int:
    print(f"{prog}: interrupted ({signal.Signals(signum).name})", file=sys.stderr, flush=True)
    return 128 + signum


class _SignalsUnwind:
    """SIGINT and SIGTERM raise Interrupted in the main thread and are recorded (a library may
    turn the exception into another on its way out; the record says what ended the run); a
    second one exits at once. The outermost command installs the handlers (a nested one, the
    demo's steps, shares them and their record) and puts the previous ones back on exit. Outside
    the main thread the handlers in place are kept."""

    depth = 0
    received: List[int] = []
    previous: dict = {}

    def __enter__(self) -> List[int]:
        cls = _SignalsUnwind
        if cls.depth == 0:
            cls.received = []
            cls.previous = {}
            if threading.current_thread() is threading.main_thread():
                cls.previous = {signum: signal.signal(signum, _handle) for signum in SIGNALS}
        cls.depth += 1
        return cls.received

    def __exit__(self, *exc) -> bool:
        cls = _SignalsUnwind
        cls.depth -= 1
        if cls.depth == 0:
            for signum, handler in cls.previous.items():
                signal.signal(signum, handler)
        return False


def _handle(signum, frame) -> None:
    received = _SignalsUnwind.received
    if received:  # the second signal: stop unwinding and end now
        sys.stderr.flush()
        os._exit(128 + received[0])
    received.append(signum)
    raise Interrupted(signum)


# ---------------------------------------------------------------------------------------------
# What the line says

def describe(error: BaseException) -> str:
    """One line for `error`: what failed and where.

    The first of crewstream's own errors in the chain (`__cause__`, `__context__`: Beam re-raises
    a step's error as a new one whose context is the original) gives its message; else the
    innermost OSError gives `PATH: REASON`; else the error's own message, or, for an error
    nobody expected, its type and message. Beam's ` [while running 'STEP']` is left out; only
    the first line of a message is kept.
    """
    chain = list(_chain(error))
    own = [e for e in chain if _is_own(e)]
    if own:
        return _first_line(str(own[0]))
    os_errors = [e for e in chain if isinstance(e, OSError) and e.errno is not None]
    if os_errors:
        innermost = os_errors[-1]
        return _os_line(innermost) + ("" if innermost.filename is not None else _where(chain))
    for e in chain:
        reason, where = _errno_in_text(_message(e)), _where(chain)
        if reason:  # the reason and where the run was writing (the file the text names may be gone)
            return reason + where if where else _first_line(_message(e))
    innermost = chain[-1]
    text = _first_line(_message(innermost))
    kind = type(innermost).__name__
    return f"{kind}: {text} (--verbose shows where)" if text else f"{kind} (--verbose shows where)"


def _where(chain: List[BaseException]) -> str:
    """` while writing --output OUT`: the note ownership.hold adds to an error that leaves a run."""
    for e in chain:
        for note in getattr(e, "__notes__", ()):
            if note.startswith(ownership.WRITING_NOTE):
                return " " + note
    return ""


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ if error.__cause__ is not None or error.__suppress_context__ else error.__context__


def _is_own(error: BaseException) -> bool:
    """An error whose message crewstream wrote: one of its own exception types, or a ValueError
    (or an OSError without an errno) that its code raised with a message."""
    if isinstance(error, KeyboardInterrupt):
        return False
    if (type(error).__module__ or "").split(".")[0] in OWN_PACKAGES:
        return True
    if not isinstance(error, ValueError) and not (isinstance(error, OSError) and error.errno is None):
        return False
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and _in_own_package(tb.tb_frame.f_code.co_filename)


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _in_own_package(filename: str) -> bool:
    return any(os.path.abspath(filename).startswith(os.path.join(_ROOT, package) + os.sep)
               for package in OWN_PACKAGES)


def _message(error: BaseException) -> str:
    message = getattr(error, "message", None)  # tf.errors.OpError keeps its text there
    return message if isinstance(message, str) else str(error)


def _first_line(text: str) -> str:
    text = _BEAM_STEP.sub("", text).strip()
    return text.splitlines()[0].strip() if text else ""


def _os_line(error: OSError) -> str:
    reason = (error.strerror or os.strerror(error.errno)).lower()
    if error.filename is None:
        return reason
    second = f" -> {error.filename2}" if error.filename2 is not None else ""
    return f"{error.filename}{second}: {reason}"


def _errno_in_text(text: str) -> Optional[str]:
    """The reason of an OS error that a library passed on as text only (TensorFlow's file errors,
    an error Beam re-raised as a RuntimeError): `[Errno 28] ...` in it, or the text of a
    well-known errno; None when there is none."""
    match = _ERRNO_TEXT.search(text)
    if match:
        return os.strerror(int(match.group(1))).lower()
    for number in _WELL_KNOWN:
        if os.strerror(number) in text:
            return os.strerror(number).lower()
    return None


# TensorFlow's file errors carry the reason only as text: these are recognized in it
_WELL_KNOWN = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.EMFILE, errno.ENFILE,
               errno.ENOTDIR, errno.EISDIR)
