"""An independent reference of predict's windows (docs/DESIGN.md, "Prediction"), and a stand-in model.

`reference_windows` rebuilds every id's window from the CSV with pandas (group, stable sort by
time) and an explicit per-row slice with the padding spelled out, never with beam_jobs' code.
`fingerprint` is a numpy function of a window that no window but the right one gives; tests pass
it to beam_jobs.inference.stand_in, whose job pickles it (so it lives in a module).
"""

import time

import numpy as np
import pandas as pd

from tfrecords_schema import csv_columns as cols

GROUP = [cols.CREW, cols.SEAT, cols.EXPERIMENT]


def reference_windows(csv_path, features, window, ids=None):
    """{id: float32 [W, F]} by the contract: group, stable sort by time, the W rows ending at the
    row, the first row repeated in front of rows with fewer than W-1 predecessors. Rows of
    `csv_path` that cannot be read as numbers are dropped first (as rejected rows are)."""
    df = pd.read_csv(csv_path, dtype={cols.EXPERIMENT: str}, low_memory=False)
    for name in [cols.ID, cols.CREW, cols.SEAT, cols.TIME] + list(features):
        df[name] = pd.to_numeric(df[name], errors="coerce")
    df = df.dropna(subset=[cols.ID, cols.CREW, cols.SEAT, cols.TIME] + list(features))
    df = df[df[cols.SEAT].isin(cols.SEATS)]
    wanted = None if ids is None else set(int(i) for i in ids)
    out = {}
    for _, group in df.groupby(GROUP, sort=False):
        group = group.sort_values(cols.TIME, kind="stable")
        values = group[list(features)].to_numpy(np.float32)
        for pos, row_id in enumerate(group[cols.ID].astype(np.int64)):
            if wanted is not None and row_id not in wanted:
                continue
            start = pos - window + 1
            rows = values[max(start, 0):pos + 1]
            if start < 0:
                rows = np.concatenate([np.repeat(values[:1], -start, axis=0), rows])
            out[int(row_id)] = rows
    return out


def fingerprint(windows):
    """float32 [B, 4] from windows [B, W, F]: the first row's first feature, the last row's last
    feature, the middle row's first feature, and a position-weighted sum (order-sensitive)."""
    w = np.asarray(windows, np.float64)
    weights = np.arange(1, w.shape[1] + 1, dtype=np.float64)
    return np.stack([w[:, 0, 0], w[:, -1, -1], w[:, w.shape[1] // 2, 0],
                     np.einsum("bwf,w->b", w, weights) / weights.sum()], axis=1).astype(np.float32)


def slow_fingerprint(windows):
    """The fingerprint, slower for some batch sizes than others: calls finish out of order."""
    time.sleep(0.002 * (len(windows) % 3))
    return fingerprint(windows)


def sequence_fingerprint(window):
    """A causal stand-in for the `sequence` signature: rows [T, F] -> [T, 4], step t the
    fingerprint of rows t-W+1..t, NaN at the first W-1 steps (a context step ever written would
    come out as the uniform row, unlike its window's fingerprint)."""
    def sequence(rows):
        out = np.full((len(rows), 4), np.nan, np.float32)
        if len(rows) >= window:
            out[window - 1:] = fingerprint(np.lib.stride_tricks.sliding_window_view(
                rows, window, axis=0).transpose(0, 2, 1))
        return out
    return sequence


def loop_windows(rows, window):
    """float32 [n, W, F]: row i's window over the whole recording `rows`, padding spelled out."""
    out = []
    for i in range(len(rows)):
        start = i - window + 1
        part = rows[max(start, 0):i + 1]
        if start < 0:
            part = np.concatenate([np.repeat(rows[:1], -start, axis=0), part])
        out.append(part)
    return np.stack(out).astype(np.float32)
