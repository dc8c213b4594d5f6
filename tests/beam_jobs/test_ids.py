"""beam_jobs.ids: which row keeps an id that several rows carry, and the hash that spreads ids over
buckets, checked against a pandas reference written here from the contract (the first usable row
by (file, line) keeps an id, else its first row) and against the hash spelled out in Python ints.
"""

import numpy as np
import pandas as pd
import pytest

from beam_jobs import blocks, ids
from beam_jobs.csv_reader import Reject

FILES = ["/data/a.csv", "/data/b.csv", "/data/c.csv"]


def records_of(rows):
    """ID_DTYPE records from (id, source, line, rejected) tuples."""
    return np.array(rows, ids.ID_DTYPE)


def random_records(n, seed):
    """n rows over 3 files, ids drawn from n/3 values (most ids repeated, some across files),
    about a third of the rows rejected by the reader, in no particular order."""
    rng = np.random.default_rng(seed)
    source = rng.integers(0, len(FILES), n)
    line = np.empty(n, np.int64)
    for s in range(len(FILES)):  # each file's lines distinct
        mine = np.flatnonzero(source == s)
        line[mine] = rng.permutation(len(mine)) + 2
    rows = zip(rng.integers(0, n // 3, n) * 1_000_003, source, line, rng.random(n) < 0.3)
    return records_of([tuple(int(v) for v in row) for row in rows])


def reference_keepers(records):
    """{id: (source, line, rejected) of the row that keeps it}, by pandas, id by id."""
    frame = pd.DataFrame({name: records[name] for name in ids.ID_DTYPE.names})
    keepers = {}
    for row_id, rows in frame.groupby("id"):
        usable = rows[rows["rejected"] == 0]
        first = (usable if len(usable) else rows).sort_values(["source", "line"]).iloc[0]
        keepers[int(row_id)] = (int(first["source"]), int(first["line"]), int(first["rejected"]))
    return keepers


def as_set(records):
    return {(int(r["id"]), int(r["source"]), int(r["line"]), int(r["rejected"])) for r in records}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_row_per_id_is_the_first_usable_row_else_the_first_row(seed):
    records = random_records(3000, seed)
    keepers = reference_keepers(records)
    fallback, duplicates, keeper = ids.one_row_per_id(records)

    kept = {(row_id, *where) for row_id, where in keepers.items()}
    assert as_set(fallback) == {k for k in kept if k[3] == 1}  # rejected rows that keep their id
    assert as_set(duplicates) == as_set(records) - kept  # every other row
    assert len(duplicates) == len(records) - len(keepers)
    for d, k in zip(duplicates, keeper):  # each duplicate names its id's keeper
        assert int(k["id"]) == int(d["id"])
        assert (int(k["source"]), int(k["line"]), int(k["rejected"])) == keepers[int(d["id"])]
    assert len(fallback) and (duplicates["rejected"] == 1).any()  # every kind of row occurs


def test_one_row_per_id_by_hand():
    records = records_of([(5, 0, 10, 1), (5, 0, 3, 1), (5, 0, 20, 0), (7, 1, 4, 0), (7, 0, 9, 0), (9, 0, 8, 1),
                          (11, 2, 1, 0)])
    fallback, duplicates, keeper = ids.one_row_per_id(records)
    assert as_set(fallback) == {(9, 0, 8, 1)}  # id 9: only a rejected row, it keeps the id
    # id 5: the usable line 20 beats earlier rejected lines; id 7: file 0 comes before file 1
    assert sorted(zip(duplicates["id"].tolist(), duplicates["line"].tolist(), keeper["line"].tolist())) == [
        (5, 3, 20), (5, 10, 20), (7, 4, 9)]


def test_duplicate_rejects_name_the_row_that_keeps_the_id():
    records = random_records(600, 3)
    keepers = reference_keepers(records)
    _, duplicates, keeper = ids.one_row_per_id(records)
    found = ids.duplicate_rejects(duplicates, keeper, FILES)

    frame = pd.DataFrame({name: records[name] for name in ids.ID_DTYPE.names})
    expected = []
    for row in frame.itertuples():
        source, line, _ = keepers[row.id]
        if row.rejected or (row.source, row.line) == (source, line):
            continue  # the reader's rejects are listed already; the keeper is no duplicate
        expected.append(Reject(FILES[row.source], row.line, "id", f"duplicate id: line {line} of {FILES[source]} "
                               "has it too and keeps it", "", id=row.id))
    key = lambda r: (r.file, r.line)  # noqa: E731
    assert sorted(found, key=key) == sorted(expected, key=key)
    assert expected


def test_bucket_of_is_the_fibonacci_hash_and_spreads_consecutive_ids():
    shift = 64 - (ids.BUCKETS - 1).bit_length()
    sample = [0, 1, 2, 3, 12_345, 17_965_143, 2**40 + 7, 2**62, 2**63 - 1]
    expected = [(i * 0x9E3779B97F4A7C15 % 2**64) >> shift for i in sample]  # Python ints: no overflow
    assert ids.bucket_of(np.array(sample, np.int64)).tolist() == expected

    counts = np.bincount(ids.bucket_of(np.arange(64_000)), minlength=ids.BUCKETS)
    assert len(counts) == ids.BUCKETS
    mean = 64_000 / ids.BUCKETS
    assert counts.min() > 0.9 * mean and counts.max() < 1.1 * mean  # consecutive ids spread evenly


def test_in_bucket_order_gives_each_bucket_one_run_read_alone(tmp_path):
    records = random_records(2000, 4)
    ordered, buckets = ids.in_bucket_order(records)
    path = str(tmp_path / "f0-l2.npy")
    blocks.write_npy(path, ordered)
    seen = []
    for bucket, start, stop in buckets:
        part = ids.read_ids(path, start, stop)
        assert (ids.bucket_of(part["id"]) == bucket).all()
        seen.append(part)
    assert [b for b, _, _ in buckets] == sorted({b for b, _, _ in buckets})
    assert as_set(np.concatenate(seen)) == as_set(records) and sum(map(len, seen)) == len(records)
    assert as_set(ids.read_ids(path)) == as_set(records)
    with pytest.raises(ValueError, match="not an id file"):
        blocks.write_npy(path, np.arange(3.0))
        ids.read_ids(path)


@pytest.mark.parametrize("seed", [5, 6])
def test_one_row_per_id_when_every_id_is_once(seed):
    """The usual file: no duplicates, the rejected rows whose id reads keep it."""
    records = random_records(3000, seed)
    records["id"] = np.random.default_rng(seed).permutation(len(records)) * 7
    fallback, duplicates, keeper = ids.one_row_per_id(records)
    assert as_set(fallback) == as_set(records[records["rejected"] == 1]) and len(fallback)
    assert len(duplicates) == len(keeper) == 0 and duplicates.dtype == keeper.dtype == ids.ID_DTYPE
