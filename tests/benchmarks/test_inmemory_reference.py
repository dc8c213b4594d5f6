"""The benchmark's baseline must do the same work as the job, or its numbers mean nothing.

The in-memory reference (benchmarks/inmemory_reference.py) is an independent re-implementation;
here it and `beam_jobs.preprocess` run on the same tiny file (with a time gap in every group) and
must give the same windows, keys, labels and values.
"""

import numpy as np

from benchmarks import inmemory_reference as ref
from tests.helpers import make_frame, write_crew_csv
from tfrecords_schema import CREW, END_TIME, EXPERIMENT, LABEL, SEAT, WINDOW

W, S = 64, 16


def test_window_group_cuts_segments_at_gaps():
    time = np.concatenate([np.arange(100), np.arange(100, 180) + 5.0]) / 1.0  # 1-s steps, one 6-s gap
    values = np.arange(180, dtype=np.float32)[:, None]
    labels = np.arange(180) % 4
    X, y, end = ref.window_group(time, values, labels, window=50, stride=20, max_gap=1.0)
    # segment 0 (100 rows): starts 0, 20, 40; segment 1 (80 rows): starts 100, 120
    np.testing.assert_array_equal(X[:, 0, 0], [0, 20, 40, 100, 120])
    np.testing.assert_array_equal(y, labels[[49, 69, 89, 149, 169]])
    np.testing.assert_array_equal(end, time[[49, 69, 89, 149, 169]])
    assert ref.window_group(time[:10], values[:10], labels[:10], 50, 20, 1.0)[0].shape == (0, 50, 1)


def _records(n, shift=0.0):
    rng = np.random.default_rng(0)
    return {WINDOW: rng.normal(size=(n, 4, 2)).astype(np.float32) + shift, LABEL: np.arange(n) % 4,
            CREW: np.ones(n, np.int64), SEAT: np.zeros(n, np.int64), EXPERIMENT: np.array(["CA"] * n),
            END_TIME: np.arange(n, dtype=np.float32)}


def test_compare_records_finds_differences():
    assert ref.compare_records("train", _records(5), _records(5), 1e-5)[0] == []
    assert ref.compare_records("train", _records(5), _records(4), 1e-5)[0]
    assert ref.compare_records("train", _records(5), _records(5, shift=1e-3), 1e-5)[0]
    other = _records(5)
    other[LABEL] = other[LABEL][::-1]
    assert ref.compare_records("train", _records(5), other, 1e-5)[0]


def test_reference_and_job_write_the_same_windows(tmp_path):
    from beam_jobs import preprocess

    # Every (crew, seat, experiment) has 700 rows with a 2-s gap after row 400: segments of 400
    # and 300 rows give (400 - 64) // 16 + 1 = 22 and (300 - 64) // 16 + 1 = 15 windows.
    csv = write_crew_csv(tmp_path / "train.csv", make_frame(rows_per_recording=700, gap_at=(400, 2.0)))
    features = ["eeg_fp1", "ecg", "r", "gsr"]
    summary = ref.run(csv, str(tmp_path / "ref"), features, window=W, stride=S, eval_crews=[2], num_shards=2)
    stats = preprocess.run(["--input", csv, "--output", str(tmp_path / "job"), "--features", ",".join(features),
                            "--window", str(W), "--stride", str(S), "--eval-crews", "2", "--num-shards", "2"])

    per_group = 22 + 15
    assert summary["splits"]["train"]["num_windows"] == stats["splits"]["train"]["num_windows"] == 12 * per_group
    assert summary["splits"]["eval"]["num_windows"] == stats["splits"]["eval"]["num_windows"] == 6 * per_group
    assert summary["splits"]["train"]["class_counts"] == stats["splits"]["train"]["class_counts"]
    for name in features:
        assert np.isclose(summary["scaling"][name]["mean"], stats["scaling"][name]["mean"], rtol=1e-6)
        assert np.isclose(summary["scaling"][name]["std"], stats["scaling"][name]["std"], rtol=1e-6)
    problems, details = ref.compare_outputs(str(tmp_path / "ref"), str(tmp_path / "job"), atol=1e-5)
    assert problems == []
    assert details["train"]["windows"] == 12 * per_group
