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
