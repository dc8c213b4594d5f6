"""Reading and writing files on local disk or behind a URL (gs://, s3://, ram://): the one home of
crewstream's file-system helpers.

Local paths go through `os` and the builtin `open` (TensorFlow is not imported, and `open` writes at
memory speed where tf.io.gfile's local writes ran at about 120 MB/s); URLs through tf.io.gfile,
imported only then. Paths are joined with `posixpath`, so the same code names files everywhere.
"""

import contextlib
import os
import posixpath
from typing import Iterable, Iterator, List, Optional, Tuple, Union

TMP_SUFFIX = ".tmp"


def is_remote(path: str) -> bool:
    """A URL (gs://..., ram://...), which only TensorFlow's or Beam's file systems read and write;
    anything else is a local path."""
    return "://" in path


def absolute(path: str) -> str:
    """A local path made absolute, a URL as it is (without importing Beam or TensorFlow)."""
    return path if is_remote(path) else os.path.abspath(path)


def gfile():
    """tf.io.gfile, imported on first use: only URLs need it."""
    import tensorflow as tf

    return tf.io.gfile


def join(root: str, *parts: str) -> str:
    """Join a folder (local path or URL such as gs://bucket/x) with relative parts."""
    return posixpath.join(root.rstrip("/") if root not in ("/",) else root, *parts)


def open_file(path: str, mode: str = "rb"):
    """`path` opened in `mode`; writing creates the folder."""
    if is_remote(path):
        if "r" not in mode:
            gfile().makedirs(posixpath.dirname(path))
        return gfile().GFile(path, mode)
    if "r" not in mode:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return open(path, mode)


SYNC_BYTES = 16 << 20  # open_written: bytes written between two trips to the disk
_CAN_SYNC = hasattr(os, "fdatasync") and hasattr(os, "posix_fadvise")  # Linux; elsewhere plain writes


class _WrittenThrough:
    """A local file open for writing whose bytes go to the disk as they are written (`open_written`)."""

    def __init__(self, f):
        self._f = f
        self._synced = 0  # bytes [0, _synced) are on the disk and out of the page cache
        self._written = 0

    def write(self, data) -> int:
        n = self._f.write(data)
        self._written += n
        if self._written - self._synced >= SYNC_BYTES:
            self.sync()
        return n

    def sync(self) -> None:
        """What was written reaches the disk (fdatasync), then leaves the page cache."""
        self._f.flush()
        fd = self._f.fileno()
        os.fdatasync(fd)
        os.posix_fadvise(fd, self._synced, self._written - self._synced, os.POSIX_FADV_DONTNEED)
        self._synced = self._written


@contextlib.contextmanager
def open_written(path: str) -> Iterator:
    """`path` opened for writing ("wb", its folder created) for a file written once and not read
    back by its writer (a shard): a local file's bytes reach the disk every SYNC_BYTES as they
    are written (os.fdatasync) and then leave the page cache (POSIX_FADV_DONTNEED), the rest at the
    end, so the file is on the disk once the block closes and the page cache it used is reused for
    the next bytes. Writing gigabytes into the page cache instead takes new memory for every page:
    on our VMs 3.36 GB written that way took 7.8-8.0 s, nearly all kernel time, against 2.4-2.6 s
    written through (benchmarks/bench_write.py). A URL, or a system without fdatasync, is written
    plainly."""
    if is_remote(path) or not _CAN_SYNC:
        with open_file(path, "wb") as f:
            yield f
        return
    with open_file(path, "wb") as f:
        through = _WrittenThrough(f)
        yield through
        through.sync()


def copy_files(paths, write, block: int = 16 << 20) -> None:
    """Pass the bytes of each file of `paths` (local or URL), in order, to `write`, `block` bytes
    at a time: the copy loop of the submission's concatenation when it is compressed or remote."""
    for path in paths:
        with open_file(path, "rb") as f:
            while True:
                data = f.read(block)
                if not data:
                    break
                write(data)


def append_files(paths, out, block: int = 16 << 20) -> None:
    """Append the bytes of each file of `paths`, in order, to the open file `out`. Local files into
    a local file are copied by the kernel (os.sendfile: the bytes never pass through Python);
    anything else through `copy_files`."""
    try:
        fd = out.fileno() if hasattr(os, "sendfile") and not any(is_remote(p) for p in paths) else None
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both of the last two
        fd = None
    if fd is None:
        copy_files(paths, out.write, block)
        return
    out.flush()
    for path in paths:
        with open(path, "rb") as src:
            offset, size = 0, os.fstat(src.fileno()).st_size
            while offset < size:
                sent = os.sendfile(fd, src.fileno(), offset, min(block, size - offset))
                if sent == 0:
                    break
                offset += sent
    os.lseek(fd, 0, os.SEEK_END)


def write_bytes(path: str, data: bytes) -> None:
    with open_file(path, "wb") as f:
        f.write(data)


def read_bytes(path: str) -> bytes:
    """The whole file; FileNotFoundError when it is missing, behind a URL too (tf.io.gfile's
    NotFoundError, raised at the first read, is not an OSError)."""
    if not is_remote(path):
        with open(path, "rb") as f:
            return f.read()
    import tensorflow as tf

    try:
        with gfile().GFile(path, "rb") as f:
            return f.read()
    except tf.errors.NotFoundError:
        raise FileNotFoundError(f"{path} not found") from None


def read_range(path: str, offset: int, length: Optional[int] = None):
    """Bytes [offset, offset + length) of a file (to its end when `length` is None, fewer if it
    ends first), as a buffer. A local file's are mapped, not copied (mmap): numpy arrays over them
    read the page cache in place, and the mapping lasts as long as something refers to it. The
    file must not shrink meanwhile."""
    if length is not None and length <= 0:
        return b""
    if is_remote(path):
        with open_file(path, "rb") as f:
            if offset >= f.size():  # GFile refuses to seek past the end
                return b""
            f.seek(offset)
            return f.read(-1 if length is None else length)
    import mmap

    with open(path, "rb") as f:
        end = os.fstat(f.fileno()).st_size
        end = end if length is None else min(end, offset + length)
        if offset >= end:
            return b""
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        mapped = mmap.mmap(f.fileno(), end - start, access=mmap.ACCESS_READ, offset=start)
    return memoryview(mapped)[offset - start:]


def replace(src: str, dst: str) -> None:
    """Rename the file `src` over `dst` (on one file system: a local rename is atomic; on an object
    store a copy, then a delete of `src`)."""
    if is_remote(dst):
        gfile().rename(src, dst, overwrite=True)
    else:
        os.replace(src, dst)


def temporary_name(path: str) -> str:
    """Where `write_atomic(path, ...)` writes before the rename: PATH.tmp."""
    return path + TMP_SUFFIX


def write_atomic(path: str, content: Union[str, bytes]) -> None:
    """Write `content` (text is UTF-8) to `path` whole or not at all: to `temporary_name(path)`,
    then renamed over `path`, so a run killed mid-write leaves the earlier file whole (or none).
    The folder must exist."""
    tmp = temporary_name(path)
    with open_file(tmp, "wb") as f:
        f.write(content.encode() if isinstance(content, str) else content)
    replace(tmp, path)


def exists(path: str) -> bool:
    """Whether a local path or URL exists (a link counts, even a dangling one). OSError (one line)
    when a URL's file system cannot answer (unknown scheme, access)."""
    if not is_remote(path):
        return os.path.lexists(path)
    import tensorflow as tf

    try:
        return tf.io.gfile.exists(path)
    except tf.errors.OpError as e:
        raise OSError(f"{path}: {e.message}") from None


def is_link(path: str) -> bool:
    return not is_remote(path) and os.path.islink(path)


def is_dir(path: str) -> bool:
    """A real folder (a link to one is not)."""
    return gfile().isdir(path) if is_remote(path) else os.path.isdir(path) and not os.path.islink(path)


def listdir(path: str) -> List[str]:
    names = gfile().listdir(path) if is_remote(path) else os.listdir(path)
    return sorted(name.rstrip("/") for name in names)


def walk(root: str) -> Iterable[Tuple[str, List[str], List[str]]]:
    """(folder, subfolders, files) under `root`, never entering a link; links are listed as files."""
    if is_remote(root):
        for folder, dirs, names in gfile().walk(root):
            yield folder, [d.rstrip("/") for d in dirs], list(names)
        return
    for folder, dirs, names in os.walk(root):
        links = [d for d in dirs if os.path.islink(os.path.join(folder, d))]
        dirs[:] = [d for d in dirs if d not in links]
        yield folder, dirs, names + links


def makedirs(path: str) -> None:
    gfile().makedirs(path) if is_remote(path) else os.makedirs(path, exist_ok=True)


def remove(path: str) -> None:
    """Delete the file `path` if it is there."""
    if is_remote(path):
        if gfile().exists(path):
            gfile().remove(path)
    elif os.path.lexists(path):
        os.remove(path)
