"""beam_jobs.submission's lines against pyarrow's own CSV writer (the independent reference)."""

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest

from beam_jobs import submission


def _write_csv(ids, probabilities):
    columns = [pa.array(ids.astype(np.int64))] + [pa.array(probabilities[:, k].astype(np.float32))
                                                 for k in range(probabilities.shape[1])]
    table = pa.Table.from_arrays(columns, names=["id", *"ABCD"[:probabilities.shape[1]]])
    sink = pa.BufferOutputStream()
    pa_csv.write_csv(table, sink, pa_csv.WriteOptions(include_header=False, quoting_style="none"))
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize("n", [1, 7, 20_000])
def test_csv_rows_are_pyarrow_write_csv_s_bytes(n):
    rng = np.random.default_rng(n)
    ids = rng.integers(0, 2 ** 62, n)
    probabilities = rng.dirichlet([0.1, 1, 1, 1], n).astype(np.float32)
    special = np.float32([[1, 0, 0, 0], [0.25] * 4, [1e-30, 1, 0, 0], [1 / 3] * 4, [3e-8, 0.5, 0.49999997, 0],
                          [np.nan, np.inf, -np.inf, -0.0], [1e-45, 3.4028235e38, 0.1, 0.7]])
    probabilities[:min(n, len(special))] = special[:n]
    got = submission.csv_rows(ids, probabilities)
    assert got == _write_csv(ids, probabilities)
    assert got.count(b"\n") == n


def test_csv_rows_of_a_slice_and_of_nothing():
    ids = np.arange(10, dtype=np.int64)
    probabilities = np.full((10, 4), 0.25, np.float32)
    assert submission.csv_rows(ids[3:5], probabilities[3:5]) == b"3,0.25,0.25,0.25,0.25\n4,0.25,0.25,0.25,0.25\n"
    assert submission.csv_rows(ids[:0], probabilities[:0]) == b""
