"""Scaling with tf.Transform: full-pass statistics of the TRAIN rows, a graph that serving reuses.

The graph's input is `signals` float32 [N, F] (raw values, features in stats.json order) and its
output `signals_scaled` float32 [N, F]. Statistics are accumulated in float64 and rounded to
float32 (see `_as_float32`); the arithmetic of scaling is float64.

- zscore: (x - mean) / std, population std (ddof 0); a zero std divides by 1.
- minmax: (x - min) / (max - min); a zero range divides by 1 (tft.scale_to_0_1 would use a
  sigmoid there instead, which is not the contract).

What a written graph applies is read back by tfrecords_schema.transform_graph (stats.json's
`scaling`), which `crewstream verify` uses too without importing Beam.
"""

from typing import Dict

import apache_beam as beam
import numpy as np
import pyarrow as pa
import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx_bsl.tfxio import tensor_adapter

from tfrecords_schema import RAW_SIGNALS, SCALED_SIGNALS, transform_graph, file_io

# Only the signals go through tf.Transform; the preprocess job keeps the other columns itself.
ARROW_SCHEMA = pa.schema([(RAW_SIGNALS, pa.list_(pa.float32()))])
SCALE_BATCH_ROWS = 1 << 16  # rows scaled per graph call: bounds the tensors of a long recording


def _as_float32(t: tf.Tensor) -> tf.Tensor:
    # A full-pass statistic differs in its last float64 bits with the order the runner combined
    # partial sums in; rounded to float32 it is the same on 1 or N workers, and so is every window.
    return tf.cast(tf.cast(t, tf.float32), tf.float64)


def _affine(x: tf.Tensor, shift: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
    shift, scale = _as_float32(shift), _as_float32(scale)
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


def signals_record_batch(signals: np.ndarray) -> pa.RecordBatch:
    """float [n, F] -> the record batch tf.Transform analyzes: `signals` list<float32> of F each."""
    signals = np.ascontiguousarray(signals, dtype=np.float32)
    n, f = signals.shape
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * f)
    column = pa.ListArray.from_arrays(offsets, pa.array(signals.reshape(-1), type=pa.float32()))
    return pa.RecordBatch.from_arrays([column], schema=ARROW_SCHEMA)


def tensor_adapter_config(num_features: int) -> tensor_adapter.TensorAdapterConfig:
    """Tells tf.Transform that `signals` is a dense float32 [F] tensor."""
    rep = schema_pb2.TensorRepresentation()
    rep.dense_tensor.column_name = RAW_SIGNALS
    rep.dense_tensor.shape.dim.add().size = num_features
    return tensor_adapter.TensorAdapterConfig(ARROW_SCHEMA, {RAW_SIGNALS: rep})


class Scaler:
    """Applies a written transform graph (OUT/transform_fn) to raw signals, the way serving does."""

    def __init__(self, transform_dir: str):
        self._output = tft.TFTransformOutput(transform_dir)

    def scale(self, signals: np.ndarray) -> np.ndarray:
        """float32 [n, F] raw -> float32 [n, F] scaled."""
        parts = [self._scale_batch(signals[a:a + SCALE_BATCH_ROWS])
                 for a in range(0, len(signals), SCALE_BATCH_ROWS)]
        return np.concatenate(parts) if parts else np.zeros_like(signals, dtype=np.float32)

    def _scale_batch(self, batch: np.ndarray) -> np.ndarray:
        raw = {RAW_SIGNALS: tf.constant(batch, tf.float32)}
        return self._output.transform_raw_features(raw)[SCALED_SIGNALS].numpy()


class WriteTransformFn(beam.PTransform):
    """tft_beam.WriteTransformFn(path), made safe to replay.

    tf.Transform's own writer renames a temporary folder into place and then deletes the
    temporary root, so a runner that retries that bundle (after a lost worker, or the FnApiRunner's
    `--direct_runner_bundle_repeat`) finds nothing to rename and the job fails
    (tests/beam_jobs/test_replay.py). Here every step can run again: the metadata is written in
    place and the graph copied over any earlier attempt's copy. `path` is the job's private staging
    folder, which nobody reads before the output is published, so no rename is needed.
    Beside tf.Transform's two folders it writes the raw metadata (path/metadata/schema.pbtxt,
    transform_graph.raw_metadata(num_features)) the way TFX's Transform does with
    tft_beam.WriteMetadata, so that TFTransformOutput(path).raw_feature_spec() works.
    Input and output as tf.Transform's: (transform_fn, metadata) -> a one-element PCollection
    that exists once all three are written.
    """

    def __init__(self, path: str, num_features: int):
        super().__init__()
        self._path = path
        self._num_features = num_features

    def _extract_input_pvalues(self, transform_fn):  # the input is a (PCollection, metadata) pair
        from tensorflow_transform.beam.tft_beam_io import beam_metadata_io

        saved_model_dir, metadata = transform_fn
        pvalues = [saved_model_dir]
        if isinstance(metadata, beam_metadata_io.BeamDatasetMetadata):
            pvalues.append(metadata.deferred_metadata)
        return transform_fn, pvalues

    def expand(self, transform_fn):
        from tensorflow_transform.beam.tft_beam_io import beam_metadata_io

        saved_model_dir, metadata = transform_fn
        pipeline = saved_model_dir.pipeline
        written = metadata | "WriteMetadata" >> beam_metadata_io.WriteMetadata(
            file_io.join(self._path, tft.TFTransformOutput.TRANSFORMED_METADATA_DIR), pipeline)
        copied = saved_model_dir | "CopyTransformFn" >> beam.Map(
            replace_tree, file_io.join(self._path, tft.TFTransformOutput.TRANSFORM_FN_DIR))
        raw = transform_graph.raw_metadata(self._num_features) | "WriteRawMetadata" >> beam_metadata_io.WriteMetadata(
            file_io.join(self._path, tft.TFTransformOutput.RAW_METADATA_DIR), pipeline)
        return (
            pipeline
            | "Sole" >> beam.Create([None])
            | "WhenAllWritten" >> beam.Map(_last, beam.pvalue.AsSingleton(raw), beam.pvalue.AsSingleton(written),
                                           beam.pvalue.AsSingleton(copied))
        )


def _last(_, *written: str) -> str:
    return written[-1]


def replace_tree(source: str, destination: str) -> str:
    """Copy folder `source` to `destination`, replacing whatever is there (gfile: any filesystem)."""
    if tf.io.gfile.exists(destination):
        tf.io.gfile.rmtree(destination)
    for where, _, names in tf.io.gfile.walk(source):
        target = file_io.join(destination, where[len(source):].lstrip("/"))
        tf.io.gfile.makedirs(target)
        for name in names:
            tf.io.gfile.copy(file_io.join(where, name), file_io.join(target, name), overwrite=True)
    return destination
