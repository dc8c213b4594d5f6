"""bench_write measures what it says: each variant writes the bytes asked for, the written-through
one through file_io.open_written (synced as it goes), and the file is gone after the run."""

import os

import pytest

from benchmarks import bench_write
from tfrecords_schema import file_io


@pytest.mark.parametrize("variant", bench_write.VARIANTS)
def test_each_variant_writes_the_bytes_asked_for_and_removes_its_file(tmp_path, monkeypatch, variant):
    monkeypatch.setattr(file_io, "SYNC_BYTES", 4096)
    sizes, syncs = [], []
    real_remove, real_fdatasync = os.remove, os.fdatasync
    monkeypatch.setattr(os, "remove", lambda p: (sizes.append(os.path.getsize(p)), real_remove(p))[1])
    monkeypatch.setattr(os, "fdatasync", lambda fd: (syncs.append(fd), real_fdatasync(fd))[1])
    path = str(tmp_path / "f.bin")
    result = bench_write.write_once(variant, path, 5 * 3000, b"x" * 3000)
    assert sizes == [15000] and not os.path.exists(path)
    assert set(result) == {"wall", "user", "sys", "gb_s"} and result["gb_s"] > 0
    if variant == "written-through" and file_io._CAN_SYNC:
        assert len(syncs) >= 3  # every 4096 bytes or more, and at the end
    else:
        assert syncs == []
