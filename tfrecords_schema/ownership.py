"""Outputs crewstream owns (docs/DESIGN.md, "Outputs crewstream owns"): the one home of the rules.

A command writes into an output folder OUT only if OUT is
  - absent or empty, or
  - an earlier crewstream output of the same kind: OUT holds MARKER (`.crewstream.json`,
    {"kind": KIND, "files": [paths relative to OUT]}) naming that kind, written by the command
    before any work.
Everything else is refused with one line (OwnershipError), before any work and with nothing written:
  - OUT is an existing file (or a link to one);
  - an input is OUT or lies inside OUT (compared after resolving symbolic links);
  - OUT is not empty and not an earlier crewstream output of the kind (another kind's included);
  - one of the kind's entries (OUT/train, OUT/stats.json, ...) is a symbolic link, or a folder
    entry holds a symbolic link anywhere inside;
  - for a kind that lists its files (preprocess), an entry holds a file the marker does not list:
    crewstream refuses rather than delete it.
Inside an earlier output only the kind's entries are replaced, and of a listing kind only the
listed files; files beside the entries are left alone. Deleting never follows a symbolic link
(remove_owned, remove_tree) and never leaves the folder it was given.

An output FILE (predict's submission and its rejects file) is written only if it is absent, or a
regular file whose first line is exactly the header crewstream writes there; it is refused if it
is an input, a folder or a symbolic link (check_output_file). A JSON report (score's --output,
evaluate's MODEL/eval.json) likewise, its sign being a JSON object with the report's keys
(check_output_json).

One run at a time: `hold(OUT)` takes an exclusive lock on OUT/.crewstream.lock (`.NAME.lock`
beside a file output) for the whole run, refusing at once an output another live run holds;
`uninterrupted()` keeps SIGINT and SIGTERM waiting while a run publishes (docs/DESIGN.md,
"When a run fails").

Local paths go through os (so that symbolic links are seen; tf.io.gfile follows them); URLs
(gs://...) through tf.io.gfile, imported only then: for local paths the checks run before
TensorFlow is imported. Object stores have no symbolic links.
"""

import contextlib
import dataclasses
import fcntl
import gzip
import json
import os
import posixpath
import shutil
import signal
import socket
import threading
import time
from typing import FrozenSet, Iterable, Iterator, List, Optional, Tuple

from tfrecords_schema import file_io, output_folder

MARKER = ".crewstream.json"
LOCK = ".crewstream.lock"  # OUT/LOCK (a folder output), .NAME.lock beside a file output: see hold()
STAGING_KIND = "staging"  # the marker of a run's private staging folder (remove_leftover_stagings)


class OwnershipError(ValueError):
    """The output is not crewstream's to write (one line; the command prints it and exits 1)."""


@dataclasses.dataclass(frozen=True)
class Kind:
    """What a command writes into its output folder.

    `entries`: the names it writes directly in the folder (files or folders); nothing else there
    is ever touched. `lists_files`: the marker lists every file the entries hold, and an entry
    holding any other file is refused (for commands that delete inside their entries).
    """

    name: str
    entries: Tuple[str, ...]
    lists_files: bool = False


# ---------------------------------------------------------------------------------------------
# Paths

def _resolved(path: str) -> str:
    return path.rstrip("/") if file_io.is_remote(path) else os.path.realpath(path)


def is_inside(path: str, folder: str) -> bool:
    """Whether `path` is `folder` or lies inside it, after resolving symbolic links (local)."""
    p, f = _resolved(path), _resolved(folder)
    return p == f or p.startswith(f.rstrip("/") + "/")


def same_file(a: str, b: str) -> bool:
    """Whether two paths name the same file (a hard or symbolic link to it included)."""
    if not file_io.is_remote(a) and not file_io.is_remote(b) and os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return _resolved(a) == _resolved(b)


def list_files(root: str, entries: Iterable[str]) -> FrozenSet[str]:
    """Paths relative to `root` of every file under root/ENTRY (an entry may be a file)."""
    found = set()
    for entry in entries:
        path = file_io.join(root, entry)
        if not file_io.exists(path):
            continue
        if not file_io.is_dir(path):
            found.add(entry)
            continue
        for folder, _, files in file_io.walk(path):
            relative = posixpath.relpath(folder, root) if file_io.is_remote(root) else os.path.relpath(folder, root)
            found.update(posixpath.join(relative.replace(os.sep, "/"), name) for name in files)
    return frozenset(found)


# ---------------------------------------------------------------------------------------------
# The marker

def read_marker(folder: str) -> Optional[dict]:
    """FOLDER/MARKER as {"kind": str, "files": [str]}, None when absent; OwnershipError when it is
    not one crewstream wrote."""
    path = file_io.join(folder, MARKER)
    if not file_io.exists(path):
        return None
    try:
        marker = json.loads(file_io.read_bytes(path))
    except (OSError, ValueError) as e:
        raise OwnershipError(f"{path} is not a crewstream marker ({e})") from None
    if not (isinstance(marker, dict) and isinstance(marker.get("kind"), str)
            and isinstance(marker.get("files"), list) and all(isinstance(f, str) for f in marker["files"])):
        raise OwnershipError(f"{path} is not a crewstream marker (expected {{\"kind\": ..., \"files\": [...]}})")
    return marker


def write_marker(folder: str, kind: str, files: Iterable[str] = ()) -> str:
    """Write FOLDER/MARKER (creating FOLDER) through a temporary name; return its path."""
    path = file_io.join(folder, MARKER)
    text = json.dumps({"kind": kind, "files": sorted(set(files))}, indent=1) + "\n"
    if file_io.is_remote(folder):
        file_io.gfile().makedirs(folder)
    else:
        os.makedirs(folder, exist_ok=True)
    file_io.write_atomic(path, text)
    return path


def claim(out: str, kind: Kind, owned: FrozenSet[str] = frozenset()) -> None:
    """Mark OUT (created if absent) as a `kind` output owning `owned`, unless it is already marked.
    Call after check_output_folder and before any work."""
    if read_marker(out) is None:
        write_marker(out, kind.name, owned)


def unclaim(out: str) -> None:
    """Remove the marker of a claim that owns nothing (a failed first run leaves OUT as it was)."""
    marker = read_marker(out) if file_io.exists(out) else None
    if marker is not None and not marker["files"]:
        path = file_io.join(out, MARKER)
        file_io.gfile().remove(path) if file_io.is_remote(path) else os.remove(path)


# ---------------------------------------------------------------------------------------------
# The checks

def _listing(names: List[str]) -> str:
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return shown or "nothing"


def check_output_folder(out: str, kind: Kind, inputs: Iterable[str] = (),
                        flag: str = "--output") -> FrozenSet[str]:
    """Raise OwnershipError (one line naming `flag` and the reason) unless the command may write
    its `kind` output into OUT (the module's rules); return the files of OUT's entries crewstream
    wrote (relative to OUT; empty for a new or empty OUT, or a kind that does not list files).
    Writes nothing."""
    label = f"{flag} {out}"
    # OUT itself may be a link to a folder: the user named it, and nothing is deleted through it
    if file_io.exists(out) and not (file_io.is_dir(out) or os.path.isdir(out)):
        raise OwnershipError(f"{label} is an existing file, not a folder; give a new or empty folder")
    for path in inputs:
        if is_inside(path, out):
            raise OwnershipError(f"{label} holds the input {path}; a run would write over it: move the "
                                 "input or choose another output folder")
    if not file_io.exists(out):
        return frozenset()
    names = [n for n in file_io.listdir(out) if n not in (MARKER, LOCK)]
    marker = read_marker(out)
    if marker is None and not names:
        return frozenset()
    if marker is not None and marker["kind"] != kind.name:
        raise OwnershipError(f"{label} is a crewstream {marker['kind']} output, not a {kind.name} output; "
                             "choose another folder")
    if marker is None:  # an output of an older crewstream (no marker) too: it is not rewritten
        raise OwnershipError(f"{label} is not empty ({_listing(names)}) and not the output of an earlier "
                             f"crewstream {kind.name} run; choose a new or empty folder")
    owned = frozenset(marker["files"])
    _check_entries(out, kind, owned, label)
    return owned


def _check_entries(out: str, kind: Kind, owned: FrozenSet[str], label: str) -> None:
    for entry in kind.entries:
        path = file_io.join(out, entry)
        if file_io.is_link(path):
            raise OwnershipError(f"{label}: {entry} is a symbolic link; crewstream never writes or deletes "
                                 "through one: remove the link or choose another folder")
        if not file_io.exists(path):
            continue
        files = list_files(out, [entry])
        links = sorted(f for f in files if file_io.is_link(file_io.join(out, f)))
        if links:
            raise OwnershipError(f"{label}: {links[0]} is a symbolic link; crewstream never writes or deletes "
                                 "through one: remove the link or choose another folder")
        foreign = sorted(files - owned) if kind.lists_files else []
        if foreign:
            raise OwnershipError(f"{label}: {_listing(foreign)} not written by crewstream (a run would "
                                 "replace it): move it or choose another folder")


def check_output_file(path: str, header: str, inputs: Iterable[str] = (), label: Optional[str] = None) -> None:
    """Raise OwnershipError unless `path` may be (re)written: it is not an input, and it is absent
    or a regular file whose first line is `header` (gzip-decompressed for a `.gz` name)."""
    label = label or path
    for source in inputs:
        if same_file(path, source):
            raise OwnershipError(f"{label} is the input {source}; choose another output file")
    if not os.path.lexists(path):
        return
    if os.path.islink(path):
        raise OwnershipError(f"{label} is a symbolic link; crewstream never writes through one: "
                             "remove the link or choose another output file")
    if os.path.isdir(path):
        raise OwnershipError(f"{label} is a folder, not a file; choose an output file")
    if _first_line(path) != header:
        raise OwnershipError(f"{label} exists and was not written by crewstream (its first line is not "
                             f"{header!r}); move it or choose another output file")


def check_output_json(path: str, keys: Iterable[str], inputs: Iterable[str] = (),
                      label: Optional[str] = None) -> None:
    """Raise OwnershipError unless the JSON report `path` (local or URL) may be (re)written: it is
    not an input, and it is absent or a regular file holding a JSON object with every key in
    `keys` (the report crewstream writes there)."""
    label = label or path
    for source in inputs:
        if same_file(path, source):
            raise OwnershipError(f"{label} is the input {source}; choose another output file")
    if not file_io.exists(path):
        return
    if file_io.is_link(path):
        raise OwnershipError(f"{label} is a symbolic link; crewstream never writes through one: "
                             "remove the link or choose another output file")
    if file_io.is_dir(path) or os.path.isdir(path):
        raise OwnershipError(f"{label} is a folder, not a file; choose an output file")
    try:
        found = json.loads(file_io.read_bytes(path))
    except (OSError, ValueError):
        found = None
    missing = sorted(set(keys) - set(found)) if isinstance(found, dict) else None
    if missing is None or missing:
        raise OwnershipError(f"{label} exists and was not written by crewstream (not a JSON object with "
                             f"{', '.join(sorted(keys))}); move it or choose another output file")


def _first_line(path: str) -> Optional[str]:
    try:
        with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as f:
            line = f.readline(1 << 16)
    except (OSError, EOFError):
        return None
    try:
        return line.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        return None


# ---------------------------------------------------------------------------------------------
# One run at a time

def lock_path(path: str, folder: bool = True) -> str:
    """The lock of an output: OUT/.crewstream.lock for a folder, .NAME.lock beside a file NAME."""
    if folder:
        return file_io.join(path, LOCK)
    head, name = os.path.split(path.rstrip("/"))
    return os.path.join(head, f".{name}.lock")


@contextlib.contextmanager
def hold(path: str, label: str, folder: bool = True) -> Iterator[None]:
    """Hold the output `path` (a folder, or a file with `folder` False) for one run.

    Local: an exclusive `flock` on its lock file (lock_path), taken at once or refused with
    OwnershipError naming the live run that holds it (process id, host, start); the kernel
    releases it when its process ends, however it ends, so a killed run's lock is taken over by
    the next run. The lock file is removed on the way out, and so is the folder the hold created
    (the output folder, or a file output's folder) if it is still empty (a run that failed before
    writing anything). A URL (gs://...) has no lock:
    docs/DESIGN.md says what holds there. Creating the folder may raise OSError (a read-only file
    system, a parent that is a file); an existing file at a folder's `path` is left for
    check_output_folder to refuse.
    """
    if file_io.is_remote(path) or (folder and os.path.lexists(path) and not os.path.isdir(path)):
        created = folder and not file_io.exists(path)
        try:
            with _noted(label):
                yield
        finally:
            _remove_if_empty(path, created)
        return
    folder_path = path if folder else os.path.dirname(os.path.abspath(path))
    created = not os.path.lexists(folder_path)
    lock = lock_path(path, folder)
    try:
        os.makedirs(folder_path, exist_ok=True)
        fd = _take_lock(lock, label)
    except OSError as e:  # read-only, a parent that is a file, no permission: name the output
        _remove_if_empty(folder_path, created)
        raise type(e)(e.errno, e.strerror, path) from None
    try:
        with _noted(label):
            yield
    finally:
        try:
            os.unlink(lock)  # while holding it: a run that opens it now finds it gone and retries
        except OSError:
            pass
        os.close(fd)
        _remove_if_empty(folder_path, created)


WRITING_NOTE = "while writing "


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends (blocked, then delivered): publishing moves
    a run's files into place, and an interrupt there would leave neither the previous output
    nor the new one. Only the main thread receives them; elsewhere this changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def _noted(label: str) -> Iterator[None]:
    """An error that leaves adds the note `while writing LABEL` (PEP 678), once: an OS error
    without a file name (a full disk seen by a write) still says where."""
    try:
        yield
    except BaseException as e:
        if not any(note.startswith(WRITING_NOTE) for note in getattr(e, "__notes__", ())):
            e.add_note(WRITING_NOTE + label)
        raise


def _take_lock(lock: str, label: str) -> int:
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "a process that is starting"
            os.close(fd)
            raise OwnershipError(f"{label} is in use by another crewstream run ({holder}); wait for it "
                                 "to end or choose another output") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:  # else the holder removed the file between our open and our lock: take the new one
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()} since "
                  f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
    return fd


def _remove_if_empty(path: str, created: bool) -> None:
    """Remove the folder `path` if this run `created` it and it is empty (never a link)."""
    try:
        if created and file_io.exists(path) and file_io.is_dir(path) and not file_io.listdir(path):
            file_io.gfile().rmtree(path) if file_io.is_remote(path) else os.rmdir(path)
    except OSError:
        pass


# ---------------------------------------------------------------------------------------------
# Deleting

def remove_tree(path: str) -> None:
    """Delete the folder `path` and everything in it, removing links found inside (never what they
    point to). OwnershipError if `path` itself is a link."""
    if file_io.is_link(path):
        raise OwnershipError(f"{path} is a symbolic link; crewstream never deletes through one")
    if file_io.is_remote(path):
        file_io.gfile().rmtree(path)
    else:
        shutil.rmtree(path)  # does not follow links inside (os.rmdir/unlink on them)


def remove_owned(out: str, entry: str, owned: FrozenSet[str]) -> None:
    """Delete the files of OUT/ENTRY that `owned` lists (relative to OUT), then its emptied
    folders; OwnershipError, before deleting anything, if it holds any other file or is a link."""
    path = file_io.join(out, entry)
    if file_io.is_link(path):
        raise OwnershipError(f"{path} is a symbolic link; crewstream never deletes through one")
    if not file_io.exists(path):
        return
    foreign = sorted(list_files(out, [entry]) - owned)
    if foreign:
        raise OwnershipError(f"{path} holds {_listing(foreign)}, not written by crewstream; "
                             "nothing was replaced: move it and run again")
    for relative in list_files(out, [entry]):
        target = file_io.join(out, relative)
        file_io.gfile().remove(target) if file_io.is_remote(target) else os.remove(target)
    if file_io.is_remote(path):
        if file_io.exists(path):
            file_io.gfile().rmtree(path)  # only empty folders are left (object stores: prefixes)
        return
    for folder, _, _ in os.walk(path, topdown=False):
        os.rmdir(folder)  # empty by now; rmdir never follows a link


def remove_leftover_stagings(out: str, prefix: str = output_folder.STAGING_PREFIX) -> List[str]:
    """Remove the staging folders killed runs left: OUT/PREFIX* folders that are crewstream's (they
    hold a staging marker, or are empty: a run killed while creating one); leave any other.
    Preprocess's are OUT/.staging-*, predict's .NAME.staging-* beside its output NAME. Returns
    the removed paths."""
    removed = []
    for name in file_io.listdir(out) if file_io.exists(out) else []:
        path = file_io.join(out, name)
        if not name.startswith(prefix) or not file_io.is_dir(path):
            continue
        try:  # empty, or only a half-written marker: a run killed while creating it
            ours = set(file_io.listdir(path)) <= {file_io.temporary_name(MARKER)} or \
                (read_marker(path) or {}).get("kind") == STAGING_KIND
        except OwnershipError:
            ours = False
        if ours:
            remove_tree(path)
            removed.append(path)
    return removed


# ---------------------------------------------------------------------------------------------
# The kinds this package knows (the commands define theirs beside them: crewstream.synth, ...)

# OUT of `crewstream preprocess` (output_folder.py): publishing deletes inside these, so every file is listed.
PREPROCESS = Kind("preprocess", (*output_folder.SPLITS, *output_folder.TRANSFORM_DIRS,
                                 output_folder.REJECTS_DIR,
                                 output_folder.STATS_FILE),
                  lists_files=True)
# MODEL of `crewstream train` and `evaluate` (trainer.train's CONFIG_FILE, ..., trainer.export's
# SERVING_DIR; tests/tfrecords_schema/test_ownership.py keeps the two spellings equal). Nothing in
# it is deleted but MODEL/serving, replaced by a new export: no file list, no link inside.
MODEL = Kind("model", ("train_config.json", "checkpoints", "history.json", "logs", "plots", "serving",
                       "eval.json", "eval_train.json", "eval_val.json"))
