"""beam_jobs.inference: a block's windows, batches and sweeps, against explicit numpy loops; the
path a model gets; memory that never holds a block's windows at once."""

import functools
import tracemalloc

import numpy as np
import pytest

from beam_jobs import inference, windows
from tests.predict_reference import fingerprint, loop_windows, sequence_fingerprint, slow_fingerprint
from tfrecords_schema import csv_columns as cols
from tfrecords_schema import WINDOW, serving


@pytest.mark.parametrize("cuts", [[], [1, 2, 3], [4, 5, 17], [2, 9, 10, 30]])
def test_blocks_cut_anywhere_get_the_windows_of_the_whole_recording(cuts):
    """A recording cut into blocks (some shorter than W-1, some of one row): each block padded
    with the rows before it (all of them, or only the last W-1 as the job reads them) gives its
    rows' windows over the whole recording, as views of the padded block."""
    w, rows = 5, np.arange(40 * 2, dtype=np.float32).reshape(40, 2) * 1.5 - 7
    expected = loop_windows(rows, w)
    edges = [0, *cuts, len(rows)]
    for a, b in zip(edges, edges[1:]):
        for before in (rows[:a], rows[max(0, a - (w - 1)):a]):
            padded = windows.pad_front(rows[a:b], before, w)
            views = windows.window_view(padded, w)
            assert padded.shape == (w - 1 + b - a, 2) and views.shape == (b - a, w, 2)
            assert np.shares_memory(views, padded)
            np.testing.assert_array_equal(views, expected[a:b])


def test_batches_are_the_windows_in_a_ring_of_buffers():
    w, padded = 4, np.arange(30 * 3, dtype=np.float32).reshape(30, 3)
    expected = loop_windows(padded, w)[w - 1:]  # row i of the block is padded row W-1+i
    seen = []
    for start, batch in inference.batches(padded, w, batch_size=6, buffers=3):
        assert batch.flags.c_contiguous and len(batch) <= 6
        np.testing.assert_array_equal(batch, expected[start:start + len(batch)])
        if len(seen) >= 3:
            assert np.shares_memory(batch, seen[-3])  # the buffer of 3 yields ago, reused
        assert not any(np.shares_memory(batch, b) for b in seen[-2:])
        seen.append(batch)
    assert [len(b) for b in seen] == [6, 6, 6, 6, 3]


def test_sweeps_overlap_by_w_minus_1():
    w, padded = 4, np.arange(3 + 10, dtype=np.float32).reshape(13, 1)  # 3 rows of context, 10 rows
    sweeps = [(start, sweep.copy()) for start, sweep in inference.sweeps(padded, w, sweep_rows=4, buffers=3)]
    assert [start for start, _ in sweeps] == [0, 4, 8]
    assert [sweep[:, 0].tolist() for _, sweep in sweeps] == [
        [0, 1, 2, 3, 4, 5, 6], [4, 5, 6, 7, 8, 9, 10], [8, 9, 10, 11, 12]]


def fake_sweep_model(window):
    """A SweepModel over `sequence_fingerprint` without a model folder."""
    model = inference.SweepModel.__new__(inference.SweepModel)
    model.window, model._sequence = window, sequence_fingerprint(window)
    return model


@pytest.mark.parametrize("path, size", [(inference.WINDOWS, 37), (inference.WINDOWS, 4096), (inference.SWEEP, 3),
                                        (inference.SWEEP, 15), (inference.SWEEP, 16), (inference.SWEEP, 1000),
                                        (inference.SWEEP, 1 << 20)])
def test_predict_padded_gives_every_row_its_windows_output(path, size):
    """Many small batches with three slow calls in flight (a buffer reused too early would give a
    row another window's output), sweep chunks of 3 rows, W-1, W, a short last chunk and one
    chunk: every row gets exactly the fingerprint of its window, the padded rows included."""
    w, rows = 16, np.random.default_rng(1).normal(size=(700, 3)).astype(np.float32)
    padded = windows.pad_front(rows, rows[:0], w)
    model = slow_fingerprint if path == inference.WINDOWS else fake_sweep_model(w)
    given = []  # what on_rows was given: (first row, a copy of its rows)
    got, nonfinite = inference.predict_padded(model, padded, w, 4, path, batch_size=size, sweep_rows=size, concurrent=3,
                                              on_rows=lambda start, part: given.append((start, part.copy())))
    np.testing.assert_array_equal(got, fingerprint(loop_windows(rows, w)))
    assert nonfinite == 0
    assert [start for start, _ in given] == list(range(0, len(rows), size))  # in row order, each once
    np.testing.assert_array_equal(np.concatenate([part for _, part in given]), got)


def test_a_row_whose_output_is_not_finite_gets_the_uniform_row_and_is_counted():
    w, padded = 4, np.arange(20 * 2, dtype=np.float32).reshape(20, 2)
    padded[10, 1] = np.nan  # in the windows of block rows 7..10
    given = []
    got, nonfinite = inference.predict_padded(fingerprint, padded, w, 4, inference.WINDOWS, batch_size=5,
                                              on_rows=lambda start, part: given.append(part.copy()))
    expected = fingerprint(loop_windows(padded, w)[w - 1:])
    bad = ~np.isfinite(expected).all(axis=1)
    assert bad.tolist() == [7 <= i <= 10 for i in range(17)] and nonfinite == 4
    np.testing.assert_array_equal(got[bad], 0.25)
    np.testing.assert_array_equal(got[~bad], expected[~bad])
    np.testing.assert_array_equal(np.concatenate(given), got)  # on_rows sees the uniform rows too


def test_the_path_follows_the_model(exported, exported_tcn):
    lstm = serving.read_config(exported.model_dir)
    tcn = serving.read_config(exported_tcn.model_dir)
    assert inference.choose_path(inference.AUTO, lstm, "m") == inference.WINDOWS
    assert inference.choose_path(inference.AUTO, tcn, "m") == inference.SWEEP
    assert inference.choose_path(inference.WINDOWS, tcn, "m") == inference.WINDOWS
    with pytest.raises(ValueError, match="--path sweep needs a model with the `sequence` signature"):
        inference.choose_path(inference.SWEEP, lstm, "m")


def traced_peak(function, *args, **kwargs):
    """Peak bytes of Python/numpy allocations (tracemalloc) during `function(*args, **kwargs)`."""
    tracemalloc.start()
    try:
        function(*args, **kwargs)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_predict_padded_peak_memory_would_catch_all_windows_of_a_block_at_once(monkeypatch):
    """Bound: well under the windows of one block (30 s at 256 Hz, W=64, 3 features).
    Materializing them (the monkeypatched window_view) breaks it, so the bound is one a
    regression would hit."""
    w, n, f = 64, 30 * cols.SAMPLE_RATE_HZ, 3
    padded = np.random.default_rng(2).normal(size=(w - 1 + n, f)).astype(np.float32)
    block_windows = n * w * f * 4
    bound = block_windows // 3
    call = functools.partial(inference.predict_padded, fingerprint, padded, w, 4, inference.WINDOWS,
                             batch_size=256, concurrent=1)
    lazy = traced_peak(call)
    assert lazy < bound, (lazy, bound)

    viewed = inference.window_view
    monkeypatch.setattr(inference, "window_view", lambda padded, w: np.ascontiguousarray(viewed(padded, w)))
    eager = traced_peak(call)
    assert eager > block_windows > bound, (eager, block_windows)


@pytest.mark.parametrize("path", [inference.WINDOWS, inference.SWEEP])
def test_predict_padded_peak_memory_grows_only_by_the_output(path):
    """Four times the rows: the peak grows by the larger output (n x K float32) and little else."""
    w, f = 64, 3
    model = fingerprint if path == inference.WINDOWS else fake_sweep_model(w)
    peaks = []
    for n in (7680, 4 * 7680):
        padded = np.random.default_rng(3).normal(size=(w - 1 + n, f)).astype(np.float32)
        peaks.append(traced_peak(inference.predict_padded, model, padded, w, 4, path, batch_size=256,
                                 sweep_rows=2000, concurrent=1))
    small, large = peaks
    assert large < small * 1.25 + 3 * 7680 * 4 * 4 + (256 << 10), (small, large)


@pytest.mark.parametrize("which", ["sweep", "windows"])
def test_a_model_is_warmed_up_as_it_loads_and_gives_what_a_cold_load_gives(exported_tcn, which, monkeypatch):
    """SweepModel and ServingModel call their signature once, on one window of zeros, as they load
    (the first call's kernel building then happens on the loader thread); that call changes
    nothing: the outputs equal those of the signature of a model loaded and called cold."""
    import tensorflow as tf

    real_load, calls = serving.load, []

    class Spy:  # the loaded model, its signatures' calls recorded
        def __init__(self, loaded):
            self.signatures = {name: self._spy(name, fn) for name, fn in loaded.signatures.items()}

        @staticmethod
        def _spy(name, fn):
            def call(**inputs):
                calls.append((name, {k: v.shape.as_list() for k, v in inputs.items()}))
                return fn(**inputs)
            call.structured_input_signature = fn.structured_input_signature
            return call

    monkeypatch.setattr(serving, "load", lambda model_dir: Spy(real_load(model_dir)))
    config = serving.read_config(exported_tcn.model_dir)
    w, f = config["window"], len(config["features"])
    model = (inference.SweepModel if which == "sweep" else inference.ServingModel)(exported_tcn.model_dir)
    name, key = ((serving.SEQUENCE_SIGNATURE, serving.SEQUENCE_INPUT) if which == "sweep"
                 else (serving.SERVING_SIGNATURE, WINDOW))
    assert calls == [(name, {key: [1, w, f]})]

    rows = np.random.default_rng(4).normal(size=(w + 40, f)).astype(np.float32) * 30 + 5
    cold = real_load(exported_tcn.model_dir).signatures[name]
    if which == "sweep":
        got, inputs = model(rows), tf.constant(rows[None])
        expected = cold(**{key: inputs})[serving.PROBABILITIES].numpy()[0][w - 1:]
    else:
        batch = np.stack([rows[i:i + w] for i in range(41)])
        got, expected = model(batch), cold(**{key: tf.constant(batch)})[serving.PROBABILITIES].numpy()
    assert got.shape == (41, 4)
    np.testing.assert_array_equal(got, expected)
