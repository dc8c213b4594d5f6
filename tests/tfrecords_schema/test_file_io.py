"""write_atomic: the whole content or the earlier file, locally (os) and on a URL (tf.io.gfile)."""

import os
import subprocess
import sys

import pytest

from tfrecords_schema import file_io


def test_a_local_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = str(tmp_path / "report.json")
    file_io.write_atomic(path, "first\n")
    file_io.write_atomic(path, "sécond\n")
    assert (tmp_path / "report.json").read_bytes() == "sécond\n".encode("utf-8")
    file_io.write_atomic(path, b"\x00\xffbytes")
    assert (tmp_path / "report.json").read_bytes() == b"\x00\xffbytes"
    assert sorted(os.listdir(tmp_path)) == ["report.json"]


def test_a_failed_write_leaves_the_earlier_file_whole(tmp_path):
    path = tmp_path / "stats.json"
    path.write_text("earlier\n")
    os.mkdir(file_io.temporary_name(str(path)))  # the temporary cannot be opened
    with pytest.raises(OSError):
        file_io.write_atomic(str(path), "later\n")
    assert path.read_text() == "earlier\n"


def test_a_local_write_does_not_import_tensorflow(tmp_path):
    code = ("import sys; from tfrecords_schema import file_io; "
            f"file_io.write_atomic({str(tmp_path / 'f')!r}, 'x'); print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_url_goes_through_tf_io_gfile():
    tf = pytest.importorskip("tensorflow")
    path = f"ram://crewstream-atomic-{os.getpid()}/report.json"
    tf.io.gfile.makedirs(os.path.dirname(path))
    file_io.write_atomic(path, "first\n")
    file_io.write_atomic(path, "second\n")
    with tf.io.gfile.GFile(path, "rb") as f:
        assert f.read() == b"second\n"
    assert not tf.io.gfile.exists(file_io.temporary_name(path))


@pytest.mark.parametrize("remote", [False, True])
def test_reading_a_missing_file_is_file_not_found_behind_a_url_too(tmp_path, remote):
    """What serving.read_config and ownership turn into one line, whichever file system."""
    folder = f"ram://crewstream-missing-{os.getpid()}" if remote else str(tmp_path)
    with pytest.raises(FileNotFoundError):
        file_io.read_bytes(file_io.join(folder, "absent.json"))
    file_io.write_bytes(file_io.join(folder, "present.json"), b"{}")
    assert file_io.read_bytes(file_io.join(folder, "present.json")) == b"{}"


def test_append_files_copies_local_files_by_the_kernel_and_others_through_python(tmp_path):
    import io

    parts = []
    for i, data in enumerate([b"head,", b"", b"x" * 100_000, b"tail\n"]):
        path = tmp_path / f"p{i}"
        path.write_bytes(data)
        parts.append(str(path))
    expected = b"".join(open(p, "rb").read() for p in parts)
    with open(tmp_path / "out", "wb") as out:
        out.write(b"H\n")
        file_io.append_files(parts, out, block=4096)
    assert (tmp_path / "out").read_bytes() == b"H\n" + expected
    sink = io.BytesIO()  # no file descriptor: the bytes pass through Python
    file_io.append_files(parts, sink, block=4096)
    assert sink.getvalue() == expected


def _traced_disk_calls(monkeypatch):
    """Record os.fdatasync and os.posix_fadvise calls (and still make them) as (name, file size at
    the call, offset, length)."""
    calls = []
    fdatasync, fadvise = os.fdatasync, os.posix_fadvise

    def traced_fdatasync(fd):
        calls.append(("fdatasync", os.fstat(fd).st_size, None, None))
        fdatasync(fd)

    def traced_fadvise(fd, offset, length, advice):
        calls.append(("fadvise", os.fstat(fd).st_size, offset, length))
        assert advice == os.POSIX_FADV_DONTNEED
        fadvise(fd, offset, length, advice)

    monkeypatch.setattr(os, "fdatasync", traced_fdatasync)
    monkeypatch.setattr(os, "posix_fadvise", traced_fadvise)
    return calls


@pytest.mark.skipif(not file_io._CAN_SYNC, reason="written through only where fdatasync and posix_fadvise exist")
def test_a_written_file_reaches_the_disk_as_it_goes_and_leaves_the_page_cache_once(tmp_path, monkeypatch):
    """Every byte is synced before it is dropped, each range dropped once, in order, the last one
    when the file closes; the bytes are the ones written, whatever the writes' sizes."""
    monkeypatch.setattr(file_io, "SYNC_BYTES", 1000)
    calls = _traced_disk_calls(monkeypatch)
    pieces = [bytes([i % 251]) * size for i, size in enumerate([10, 990, 1, 2500, 0, 7, 999, 3])]
    path = tmp_path / "sub" / "shard.tfrecord"
    with file_io.open_written(str(path)) as out:
        for piece in pieces:
            out.write(memoryview(piece))
        assert calls, "nothing synced while writing"
    assert path.read_bytes() == b"".join(pieces)
    ranges, synced_size = [], None
    for name, size, offset, length in calls:
        if name == "fdatasync":
            synced_size = size
        else:
            assert offset + length == synced_size == size, "a range dropped before it was synced"
            ranges.append((offset, length))
    ends = [offset + length for offset, length in ranges]
    assert [offset for offset, _ in ranges] == [0] + ends[:-1] and ends[-1] == len(b"".join(pieces))
    assert all(length >= 1000 for _, length in ranges[:-1])


def test_a_written_file_behind_a_url_is_written_plainly(monkeypatch):
    tf = pytest.importorskip("tensorflow")
    calls = _traced_disk_calls(monkeypatch) if file_io._CAN_SYNC else []
    path = f"ram://crewstream-written-{os.getpid()}/part/shard.tfrecord"
    with file_io.open_written(path) as out:
        out.write(b"abc" * 1000)
    with tf.io.gfile.GFile(path, "rb") as f:
        assert f.read() == b"abc" * 1000
    assert calls == []


@pytest.mark.parametrize("remote", [False, True])
def test_read_range_gives_the_bytes_asked_for_whatever_the_offset(tmp_path, remote):
    """Offsets inside and past mmap's allocation unit, to the end or beyond it, or past the file."""
    if remote:
        pytest.importorskip("tensorflow")
    import mmap

    data = bytes(range(256)) * ((3 * mmap.ALLOCATIONGRANULARITY) // 256 + 7)
    path = (f"ram://crewstream-range-{os.getpid()}/f.bin" if remote else str(tmp_path / "f.bin"))
    file_io.write_bytes(path, data)
    unit = mmap.ALLOCATIONGRANULARITY
    for offset, length in [(0, 10), (5, None), (unit + 3, 100), (2 * unit - 1, 2), (len(data) - 4, 100),
                           (len(data), 5), (len(data) + 9, None), (7, 0), (7, -1)]:
        got = bytes(file_io.read_range(path, offset, length))
        assert got == data[offset:None if length is None else offset + max(length, 0)], (offset, length)
