"""Running the serving model over one sorted time block of a recording (predict), in plain numpy
and TensorFlow: no Beam here (beam_jobs.predict_steps's DoFns call it).

A block arrives `padded`: float32 [W - 1 + n, F], its n rows (RAW values, time order) preceded by
the W-1 rows before them in the recording, the recording's first row repeated where it has fewer
(docs/DESIGN.md, "Prediction"). Row i's window is then padded[i : i + W].

    windows  (`serving_default`, any model): --batch-size windows copied at a time into [B, W, F]
             batches; --concurrent model calls in flight on threads (TensorFlow runs a call without
             the GIL, and one LSTM call, a loop of small ops, leaves cores idle: measured on 2 cores,
             2 calls give about twice the windows/s of 1, with byte-identical output).
    sweep    (`sequence`, a tcn): the padded rows fed once, in sweeps of --sweep-rows rows plus the
             W-1 rows before them; every output step after those W-1 is a row's prediction (the
             output of the window ending at that row: docs/DESIGN.md, "Models").

Warm-up: ServingModel and SweepModel call their signature once on zeros (one window) as they load.
A loaded function's first call builds its kernels (about 0.3 s for the default tcn), and the loader
runs on a thread of its own while the launcher builds the pipeline (`preload`), so that cost is off
the run's path; the call leaves nothing behind (the outputs are a cold load's, bit for bit).

Memory: the padded block, --concurrent + 2 buffers of a batch (B * W * F * 4 bytes) or a sweep
((--sweep-rows + W - 1) * F * 4 bytes), allocated once per block, and n * K probabilities.
"""

import collections
import contextlib
import concurrent.futures
import dataclasses
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Deque, Dict, Iterator, Optional, Tuple

import numpy as np

from beam_jobs.windows import window_view
from tfrecords_schema import file_io, serving

DEFAULT_BATCH_SIZE = 1024
DEFAULT_SWEEP_ROWS = 1 << 16  # rows per sequence call (plus W-1 of context); 32k-128k measured alike
AUTO, WINDOWS, SWEEP = "auto", "windows", "sweep"
PATHS = (AUTO, WINDOWS, SWEEP)


def default_concurrency() -> int:
    """Model calls in flight: one per usable core, at most 8."""
    from beam_jobs.runner import usable_cores

    return max(1, min(usable_cores(), 8))


class ServingModel:
    """MODEL/serving's `serving_default`: raw windows float32 [B, W, F] -> float32 [B, K].

    One call of the signature's concrete function per batch: no retracing for any batch size.
    """

    def __init__(self, model_dir: str):
        import tensorflow as tf

        from tfrecords_schema import WINDOW
        self.config = serving.read_config(model_dir)
        self._loaded = serving.load(model_dir)  # keep it alive: the signature needs its variables
        self._fn = self._loaded.signatures[serving.SERVING_SIGNATURE]
        self._constant, self._input, self._output = tf.constant, WINDOW, serving.PROBABILITIES
        shape = self._fn.structured_input_signature[1][WINDOW].shape.as_list()
        expected = [None, self.config["window"], len(self.config["features"])]
        if shape != expected:
            raise ValueError(f"{model_dir}: serving input {shape} disagrees with its config {expected}")
        self(np.zeros([1] + expected[1:], np.float32))  # warm up: see the module's docstring

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        return self._fn(**{self._input: self._constant(windows)})[self._output].numpy()


class SweepModel:
    """MODEL/serving's `sequence` signature as predict sweeps it: a sweep of padded rows float32
    [W - 1 + c, F] (RAW) -> float32 [c, K], the outputs of the c windows ending at its last c rows
    (the first W-1 output steps, the context's, are dropped).

    `sequence` (a test's StandIn) replaces the signature: rows [T, F] -> per-step outputs [T, K].
    """

    def __init__(self, model_dir: str, sequence: Callable = None):
        self.config = serving.read_config(model_dir)
        self.window = self.config["window"]
        self._sequence = sequence
        if sequence is None:
            import tensorflow as tf

            if serving.SEQUENCE_SIGNATURE not in self.config["signatures"]:
                raise ValueError(f"{model_dir}: a {self.config['model']} model has no "
                                 f"`{serving.SEQUENCE_SIGNATURE}` signature to sweep with")
            self._loaded = serving.load(model_dir)  # keep it alive for its variables
            fn = self._loaded.signatures[serving.SEQUENCE_SIGNATURE]
            self._sequence = lambda rows: fn(**{serving.SEQUENCE_INPUT: tf.constant(rows[None])})[
                serving.PROBABILITIES].numpy()[0]
            self._sequence(np.zeros((self.window, len(self.config["features"])), np.float32))  # warm up (above)

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        return self._sequence(rows)[self.window - 1:]


_STAND_IN: Optional["StandIn"] = None


@dataclasses.dataclass(frozen=True)
class StandIn:
    """A test's model in place of MODEL/serving's signatures: `windows` float32 [B, W, F] -> [B, K]
    for the windows path, `sequence` rows [T, F] -> [T, K] for the sweep. Module-level functions:
    the job pickles what it calls."""

    windows: Optional[Callable] = None
    sequence: Optional[Callable] = None


@contextlib.contextmanager
def stand_in(model: StandIn) -> Iterator[None]:
    """Tests only, the one seam through which a test replaces the model: jobs started in this
    process (the local runner runs them here) call `model` instead of loading MODEL/serving."""
    global _STAND_IN
    _STAND_IN = model
    try:
        yield
    finally:
        _STAND_IN = None


def stand_in_active() -> bool:
    return _STAND_IN is not None


def load_model(model_dir: str, path: str) -> Callable[[np.ndarray], np.ndarray]:
    """The model a predict worker calls on `path`: SweepModel (SWEEP) or ServingModel (WINDOWS).
    Loaded once per process and model files (`preload`): Beam's in-process workers share it (its
    signatures may be called from several threads at once)."""
    if _STAND_IN is not None:
        return SweepModel(model_dir, _STAND_IN.sequence) if path == SWEEP else _STAND_IN.windows
    return _loading(model_dir, path, background=False).result()


def preload(model_dir: str, path: str) -> None:
    """Start loading the model on a thread of its own (TensorFlow's import included), so that a
    local run's workers, threads of this process, find it loaded once the rows are read: the
    launcher calls it before the job reads. Elsewhere (a remote worker) nothing is shared."""
    if _STAND_IN is None and not file_io.is_remote(model_dir):
        _loading(model_dir, path, background=True)


def forget_loaded() -> None:
    """Drop the models this process loaded (a run's end: the next run loads its own), once a load
    still under way has ended: a process must not exit while a thread is inside TensorFlow's
    loader (an interrupted run would end in an abort instead of its exit code)."""
    with _LOADED_LOCK:
        pending = list(_LOADED.values())
        _LOADED.clear()
    concurrent.futures.wait(pending)


_LOADED: Dict[tuple, Future] = {}
_LOADED_LOCK = threading.Lock()


def _loading(model_dir: str, path: str, background: bool) -> Future:
    """The Future of the model for (model_dir, path, the serving files' sizes and times): started
    here (on a thread if `background`) unless already started."""
    key = (model_dir, path, _files_stamp(model_dir))
    with _LOADED_LOCK:
        future, start = _LOADED.get(key), False
        if future is None:
            future, start = Future(), True
            _LOADED[key] = future

    def load() -> None:
        try:
            future.set_result(SweepModel(model_dir) if path == SWEEP else ServingModel(model_dir))
        except BaseException as e:  # the worker that asks for it raises it
            future.set_exception(e)

    if start:
        if background:
            threading.Thread(target=load, name="preload-model").start()
        else:
            load()
    return future


def _files_stamp(model_dir: str) -> tuple:
    """(size, mtime_ns) of each of the serving model's files, so a model trained again into the
    same folder is loaded again; None for a file that cannot be read from here."""
    stamp = []
    for name in ("saved_model.pb", "variables/variables.index", serving.CONFIG_FILE):
        try:
            stat = os.stat(os.path.join(model_dir, serving.SERVING_DIR, name))
            stamp.append((stat.st_size, stat.st_mtime_ns))
        except OSError:
            stamp.append(None)
    return tuple(stamp)


def model_config(model_dir: str, graph: bool = True) -> dict:
    """MODEL/serving's config; ValueError ("--model-dir MODEL: why") when there is no usable model
    (with `graph`, also when its saved_model.pb is damaged or foreign; a test's stand-in model
    needs a folder with the config alone)."""
    try:
        config = serving.read_config(model_dir)
        if graph:
            serving.check(model_dir)
    except (OSError, ValueError) as e:
        raise ValueError(f"--model-dir {model_dir}: {e}") from None
    return config


def choose_path(requested: str, config: dict, model_dir: str) -> str:
    """WINDOWS or SWEEP for `--path requested` and the model's serving config; ValueError for
    `sweep` with a model that has no `sequence` signature."""
    can_sweep = serving.SEQUENCE_SIGNATURE in config["signatures"]
    if requested == SWEEP and not can_sweep:
        raise ValueError(f"{model_dir}: --path {SWEEP} needs a model with the `{serving.SEQUENCE_SIGNATURE}` "
                         f"signature (train --model tcn); this one is a {config['model']} "
                         f"(use --path {WINDOWS} or {AUTO})")
    return SWEEP if can_sweep and requested != WINDOWS else WINDOWS


def batches(padded: np.ndarray, window: int, batch_size: int, buffers: int) -> Iterator[Tuple[int, np.ndarray]]:
    """(first row, windows float32 [b, W, F] contiguous), b <= batch_size, over the n rows of
    `padded`. Batches are written into `buffers` arrays taken in turn (allocated once), so a
    yielded batch is overwritten `buffers` yields later."""
    views = window_view(padded, window)
    ring = [np.empty((min(batch_size, len(views)),) + views.shape[1:], np.float32) for _ in range(buffers)]
    for turn, start in enumerate(range(0, len(views), batch_size)):
        part = views[start:start + batch_size]
        batch = ring[turn % buffers][:len(part)]
        np.copyto(batch, part)
        yield start, batch


def sweeps(padded: np.ndarray, window: int, sweep_rows: int, buffers: int) -> Iterator[Tuple[int, np.ndarray]]:
    """(first row, sweep float32 [W - 1 + c, F] contiguous), c <= sweep_rows: runs of `padded`
    overlapping by W-1, the last c rows of a sweep being the rows it predicts. Buffers as in
    `batches`."""
    n = len(padded) - window + 1
    ring = [np.empty((min(sweep_rows, n) + window - 1, padded.shape[1]), np.float32) for _ in range(buffers)]
    for turn, start in enumerate(range(0, n, sweep_rows)):
        part = padded[start:start + window - 1 + sweep_rows]
        sweep = ring[turn % buffers][:len(part)]
        np.copyto(sweep, part)
        yield start, sweep


def predict_padded(model: Callable, padded: np.ndarray, window: int, num_classes: int, path: str,
                   batch_size: int = DEFAULT_BATCH_SIZE, sweep_rows: int = DEFAULT_SWEEP_ROWS,
                   concurrent: int = 1, on_rows: Optional[Callable[[int, np.ndarray], None]] = None
                   ) -> Tuple[np.ndarray, int]:
    """(probabilities float32 [n, K] for the n rows of `padded`, rows whose output was not finite).

    `model` is a ServingModel-like callable (WINDOWS: windows [b, W, F] -> [b, K]) or a
    SweepModel-like one (SWEEP: sweep [W - 1 + c, F] -> [c, K]). A row whose output is not finite
    gets the uniform distribution (never a NaN in a submission) and is counted. `on_rows(first
    row, probabilities [b, K])` is given each batch's or sweep's rows, in row order, as its result
    comes back: it runs while the next model calls are in flight (TensorFlow leaves a core partly
    idle, and the writing fills it).
    """
    n = len(padded) - window + 1
    out = np.empty((n, num_classes), np.float32)
    if n <= (sweep_rows if path == SWEEP else batch_size):  # one call: no threads to start (live's case)
        piece = padded if path == SWEEP else np.ascontiguousarray(window_view(padded, window))
        done: Future = Future()
        done.set_result(model(piece))
        return out, _take(out, 0, done, on_rows)
    buffers = concurrent + 2  # a buffer is reused only after its result was taken
    pieces = (sweeps(padded, window, sweep_rows, buffers) if path == SWEEP
              else batches(padded, window, batch_size, buffers))
    nonfinite = 0
    with ThreadPoolExecutor(max_workers=concurrent, thread_name_prefix="predict") as pool:
        pending: Deque[Tuple[int, Future]] = collections.deque()
        for start, piece in pieces:
            pending.append((start, pool.submit(model, piece)))
            while len(pending) > concurrent:
                nonfinite += _take(out, *pending.popleft(), on_rows)
        while pending:
            nonfinite += _take(out, *pending.popleft(), on_rows)
    return out, nonfinite


def _take(out: np.ndarray, start: int, future: Future, on_rows) -> int:
    """The result into `out`, its non-finite rows made uniform (returns how many), then to `on_rows`."""
    result = future.result()
    part = out[start:start + len(result)]
    part[...] = result
    bad = ~np.isfinite(part).all(axis=1)
    part[bad] = 1.0 / part.shape[1]
    if on_rows is not None:
        on_rows(start, part)
    return int(bad.sum())


def uniform(n: int, num_classes: int) -> np.ndarray:
    return np.full((n, num_classes), 1.0 / num_classes, np.float32)
