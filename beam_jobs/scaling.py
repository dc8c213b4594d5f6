"""Scaling with tf.Transform: full-pass statistics of the TRAIN rows, a graph that serving reuses.

The graph's input is `signals` float32 [N, F] (raw values, features in stats.json order) and its
output `signals_scaled` float32 [N, F]. Statistics are accumulated in float64.

- zscore: (x - mean) / std, population std (ddof 0); a zero std divides by 1.
- minmax: (x - min) / (max - min); a zero range divides by 1 (tft.scale_to_0_1 would use a
  sigmoid there instead, which is not the contract).
"""

from typing import Dict, Sequence

import numpy as np
import pyarrow as pa
import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx_bsl.tfxio import tensor_adapter

from beam_jobs.csv_reader import Rows
from tfrecords_schema import RAW_SIGNALS, SCALED_SIGNALS
from tfrecords_schema.stats import SCALE_PARAMS

# Columns that ride through the transform untouched (tf.Transform passthrough keys).
PASSTHROUGH = ("crew", "seat", "experiment", "time", "label", "source", "line")
_TYPES = {RAW_SIGNALS: pa.float32(), "crew": pa.int64(), "seat": pa.int64(), "experiment": pa.string(),
          "time": pa.float64(), "label": pa.int64(), "source": pa.int64(), "line": pa.int64()}
ARROW_SCHEMA = pa.schema([(name, pa.list_(kind)) for name, kind in _TYPES.items()])


def _affine(x: tf.Tensor, shift: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
    safe = tf.where(tf.equal(scale, 0), tf.ones_like(scale), scale)
    return tf.cast((tf.cast(x, tf.float64) - shift) / safe, tf.float32)


def zscore_preprocessing_fn(inputs: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    x = tf.cast(inputs[RAW_SIGNALS], tf.float64)
    mean = tft.mean(x, reduce_instance_dims=False)
    std = tf.sqrt(tft.var(x, reduce_instance_dims=False))
    return {SCALED_SIGNALS: _affine(x, mean, std)}


def minmax_preprocessing_fn(inputs: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    x = tf.cast(inputs[RAW_SIGNALS], tf.float64)
    lo = tft.min(x, reduce_instance_dims=False)
    hi = tft.max(x, reduce_instance_dims=False)
    return {SCALED_SIGNALS: _affine(x, lo, hi - lo)}


PREPROCESSING_FNS = {"zscore": zscore_preprocessing_fn, "minmax": minmax_preprocessing_fn}


def _list_column(values: np.ndarray, width: int, kind: pa.DataType) -> pa.Array:
    n = len(values) // width if width else 0
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * width)
    return pa.ListArray.from_arrays(offsets, pa.array(values, type=kind))


def rows_to_record_batch(rows: Rows) -> pa.RecordBatch:
    """Rows as the record batch tf.Transform reads: `signals` list<float32>[F], the rest list of 1."""
    f = rows.signals.shape[1]
    columns = [_list_column(np.ascontiguousarray(rows.signals).reshape(-1), f, _TYPES[RAW_SIGNALS])]
    columns += [_list_column(np.asarray(getattr(rows, name)), 1, _TYPES[name]) for name in PASSTHROUGH]
    return pa.RecordBatch.from_arrays(columns, schema=ARROW_SCHEMA)


def record_batch_to_rows(batch: pa.RecordBatch, signals_key: str = SCALED_SIGNALS) -> Rows:
    """The inverse, for a transformed batch (scaled signals) or an input batch (`RAW_SIGNALS`)."""
    def flat(name):
        return batch.column(batch.schema.get_field_index(name)).flatten().to_numpy(zero_copy_only=False)

    signals = flat(signals_key).astype(np.float32, copy=False)
    n = batch.num_rows
    columns = {name: flat(name) for name in PASSTHROUGH}
    return Rows(signals=signals.reshape(n, -1) if n else signals.reshape(0, 0), **columns)


def tensor_adapter_config(num_features: int) -> tensor_adapter.TensorAdapterConfig:
    """Tells tf.Transform that `signals` is a dense float32 [F] tensor; other columns pass through."""
    rep = schema_pb2.TensorRepresentation()
    rep.dense_tensor.column_name = RAW_SIGNALS
    rep.dense_tensor.shape.dim.add().size = num_features
    return tensor_adapter.TensorAdapterConfig(ARROW_SCHEMA, {RAW_SIGNALS: rep})


def affine_params(transform_output: tft.TFTransformOutput, num_features: int) -> np.ndarray:
    """Read back from the transform graph the (shift, divisor) it applies to each feature: [2, F].

    The graph is probed rather than re-derived, so stats.json can never disagree with what
    serving applies. Two probes keep float32 outputs precise: a rough one at 0 and 1, then one at
    the rough shift and shift + divisor, where the outputs are near 0 and 1.
    """
    def scaled(x: np.ndarray) -> np.ndarray:
        out = transform_output.transform_raw_features({RAW_SIGNALS: tf.constant(x, tf.float32)})
        return out[SCALED_SIGNALS].numpy().astype(np.float64)

    def solve(x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
        f0, f1 = scaled(np.stack([x0, x1]).astype(np.float32))
        x0, x1 = x0.astype(np.float32).astype(np.float64), x1.astype(np.float32).astype(np.float64)
        scale = (x1 - x0) / (f1 - f0)
        return np.stack([x0 - f0 * scale, scale])

    rough = solve(np.zeros(num_features), np.ones(num_features))
    fine = solve(rough[0], rough[0] + rough[1])
    # Where shift + divisor rounds to shift in float32 the second probe says nothing new.
    return np.where(np.isfinite(fine), fine, rough)


def scaling_stats(transform_output: tft.TFTransformOutput, features: Sequence[str], scale: str) -> Dict:
    """stats.json's `scaling`: {feature: {mean, std}} (zscore) or {feature: {min, range}} (minmax)."""
    shift, divisor = affine_params(transform_output, len(features))
    a, b = SCALE_PARAMS[scale]
    return {name: {a: float(shift[i]), b: float(divisor[i])} for i, name in enumerate(features)}
