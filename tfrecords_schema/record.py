"""One tf.train.Example per window: the record contract of docs/DESIGN.md.

| key          | type              | value                                                |
|--------------|-------------------|------------------------------------------------------|
| `window`     | float_list, W*F   | scaled values, time-major (row 0's F features, ...)  |
| `label`      | int64             | index into LABEL_VOCABULARY                          |
| `crew`       | int64             |                                                      |
| `seat`       | int64             |                                                      |
| `experiment` | bytes             | `CA`, `DA`, `SS`, `LOFT`                             |
| `end_time`   | float             | `time` of the window's last row                      |

The writer encodes with `encode_windows` (the compiled tfx_bsl encoder over an Arrow record batch:
no Python loop over floats) and readers parse with `feature_spec` / `parse_examples`.
"""

from typing import Dict, List, Sequence

import numpy as np
import pyarrow as pa

WINDOW = "window"
LABEL = "label"
CREW = "crew"
SEAT = "seat"
EXPERIMENT = "experiment"
END_TIME = "end_time"

RECORD_KEYS = (WINDOW, LABEL, CREW, SEAT, EXPERIMENT, END_TIME)

LABEL_VOCABULARY = ("A", "B", "C", "D")
NUM_CLASSES = len(LABEL_VOCABULARY)


def label_index(event: str) -> int:
    """`A` -> 0 ... `D` -> 3; ValueError for anything else."""
    try:
        return LABEL_VOCABULARY.index(event)
    except ValueError:
        raise ValueError(f"unknown label {event!r}; expected one of {LABEL_VOCABULARY}") from None


def feature_spec(window: int, num_features: int) -> Dict[str, object]:
    """The `tf.io.parse_example` spec of one record, for windows of `window` rows x `num_features`."""
    import tensorflow as tf  # readers only; the writer side needs no TensorFlow import

    if window < 1 or num_features < 1:
        raise ValueError(f"window ({window}) and num_features ({num_features}) must be >= 1")
    return {
        WINDOW: tf.io.FixedLenFeature([window * num_features], tf.float32),
        LABEL: tf.io.FixedLenFeature([], tf.int64),
        CREW: tf.io.FixedLenFeature([], tf.int64),
        SEAT: tf.io.FixedLenFeature([], tf.int64),
        EXPERIMENT: tf.io.FixedLenFeature([], tf.string),
        END_TIME: tf.io.FixedLenFeature([], tf.float32),
    }


def parse_examples(serialized, window: int, num_features: int):
    """Parse a batch of serialized records.

    Args:
      serialized: string tensor [B].
    Returns:
      dict: `window` float32 [B, window, num_features]; `label`, `crew`, `seat` int64 [B];
      `experiment` string [B]; `end_time` float32 [B].
    """
    import tensorflow as tf

    parsed = tf.io.parse_example(serialized, feature_spec(window, num_features))
    parsed[WINDOW] = tf.reshape(parsed[WINDOW], [-1, window, num_features])
    return parsed


def _list_column(values: np.ndarray, width: int) -> pa.Array:
    """A ListArray whose rows are consecutive runs of `width` values (tfx_bsl wants list columns)."""
    n = len(values) // width
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * width)
    return pa.ListArray.from_arrays(offsets, pa.array(values))


def encode_windows(
    windows: np.ndarray,
    labels: Sequence[int],
    crew: int,
    seat: int,
    experiment: str,
    end_times: Sequence[float],
) -> List[bytes]:
    """Serialize windows of one (crew, seat, experiment) group as tf.train.Example bytes.

    Args:
      windows: float [N, W, F] scaled values (any float dtype; stored as float32).
      labels: int [N] label indices.
      end_times: float [N] `time` of each window's last row.
    Returns:
      N serialized tf.train.Example, in input order. The bytes are deterministic (feature map
      keys sorted), so the same window always serializes the same, in any process.
    """
    from tensorflow.core.example import example_pb2
    from tfx_bsl.coders import example_coder

    windows = np.asarray(windows, dtype=np.float32)
    if windows.ndim != 3:
        raise ValueError(f"windows must be [N, W, F], got shape {windows.shape}")
    n = windows.shape[0]
    if n == 0:
        return []
    labels = np.asarray(labels, dtype=np.int64)
    end_times = np.asarray(end_times, dtype=np.float32)
    if labels.shape != (n,) or end_times.shape != (n,):
        raise ValueError(f"labels {labels.shape} and end_times {end_times.shape} must be ({n},)")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise ValueError(f"label indices must be in [0, {NUM_CLASSES}), got {sorted(set(labels))}")
    batch = pa.RecordBatch.from_arrays(
        [
            _list_column(windows.reshape(-1), windows.shape[1] * windows.shape[2]),
            _list_column(labels, 1),
            _list_column(np.full(n, crew, dtype=np.int64), 1),
            _list_column(np.full(n, seat, dtype=np.int64), 1),
            _list_column(np.array([experiment.encode()] * n, dtype=object), 1),
            _list_column(end_times, 1),
        ],
        [WINDOW, LABEL, CREW, SEAT, EXPERIMENT, END_TIME],
    )
    # The compiled encoder writes the feature map in a per-process hash order; protobuf's
    # deterministic serialization (upb, a few ms per thousand windows) sorts it.
    parse = example_pb2.Example.FromString
    return [parse(record).SerializeToString(deterministic=True)
            for record in example_coder.RecordBatchToExamplesEncoder().encode(batch)]


# The tf.Transform graph in OUT/transform_fn (written by the preprocess job, reused by serving):
# input `signals` float32 [N, F] raw values in stats.json feature order; output
# `signals_scaled` float32 [N, F].
RAW_SIGNALS = "signals"
SCALED_SIGNALS = "signals_scaled"


def raw_signals_spec(num_features: int) -> Dict[str, object]:
    """The raw feature spec of the tf.Transform graph: one row's `signals` float32 [F], raw values
    in stats.json feature order. It is what the preprocess job analyzes, and what OUT/metadata
    holds (tft.TFTransformOutput(OUT).raw_feature_spec() returns it)."""
    import tensorflow as tf

    if num_features < 1:
        raise ValueError(f"num_features ({num_features}) must be >= 1")
    return {RAW_SIGNALS: tf.io.FixedLenFeature([num_features], tf.float32)}


def raw_window_spec(window: int, num_features: int) -> Dict[str, object]:
    """The `tf.io.parse_example` spec of a RAW window, the serving model's tf.Example input:
    `window` float_list of W*F raw (unscaled) values, time-major like the record's. Any other
    feature in the Example (a record's `label`, `crew`, ...) is ignored."""
    return {WINDOW: feature_spec(window, num_features)[WINDOW]}
