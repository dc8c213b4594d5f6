"""What the tf.Transform graph in OUT (`OUT/transform_fn/`) applies, read back from the graph.

The graph's input is `signals` float32 [N, F] (raw values, features in stats.json order) and its
output `signals_scaled` float32 [N, F], one affine map per feature (beam_jobs.scaling writes it).
The preprocess job derives stats.json's `scaling` from here and `crewstream verify` checks it
against the same probe, so neither imports Beam.
"""

from typing import Dict, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from tfrecords_schema.record import RAW_SIGNALS, SCALED_SIGNALS, raw_signals_spec
from tfrecords_schema.stats import SCALE_PARAMS


def num_features(transform_output: tft.TFTransformOutput) -> int:
    """F, the width of the graph's `signals_scaled` output (its input's: one map per feature), from
    OUT/transformed_metadata (outputs written before OUT/metadata existed have only that)."""
    return int(transform_output.transformed_feature_spec()[SCALED_SIGNALS].shape[0])


def raw_metadata(num_features: int):
    """The raw DatasetMetadata the preprocess job writes to OUT/metadata (tft_beam.WriteMetadata's
    layout: schema.pbtxt): the schema of `raw_signals_spec(num_features)`. Its text is a function
    of F alone, so it is byte-identical across runs and worker counts."""
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    return dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(raw_signals_spec(num_features)))


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
