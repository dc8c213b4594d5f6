"""MODEL/serving: a self-contained SavedModel of raw windows in, probabilities out.

Signatures:
- `serving_default`: `window` float32 [None, W, F] RAW (unscaled) values, features in stats.json
  order -> `probabilities` float32 [None, 4]. The windows are scaled inside the graph by the
  preprocess job's own tf.Transform graph (OUT/transform_fn), fed rows {signals: [B*W, F]} and
  reshaped back, so serving and training can never scale differently.
- `scaled`: the same output from windows already scaled (what the TFRecords hold); evaluate uses
  it, so the numbers it reports are those of the exported model.

The tf.Transform layer is an attribute of the exported module, so its variables and assets are
saved with it: the model loads and runs after OUT has been deleted.
"""

import logging
import uuid
from typing import Any, Dict, Optional

import tensorflow as tf
import tensorflow_transform as tft

from tfrecords_schema import RAW_SIGNALS, SCALED_SIGNALS, WINDOW, layout, read_stats

_LOG = logging.getLogger("crewstream.export")

SERVING_DIR = "serving"
SERVING_SIGNATURE = "serving_default"
SCALED_SIGNATURE = "scaled"
PROBABILITIES = "probabilities"


class ServingModule(tf.Module):
    """Raw or scaled windows [None, W, F] -> {`probabilities`: [None, num_classes]}."""

    def __init__(self, model: tf.Module, transform_layer: tf.Module, window: int, num_features: int):
        super().__init__(name="crewstream_serving")
        self.model = model
        self.transform_layer = transform_layer  # tracked: carries transform_fn's variables and assets
        self._window, self._num_features = window, num_features
        spec = tf.TensorSpec([None, window, num_features], tf.float32, name=WINDOW)
        self.serve_raw = tf.function(self._raw, input_signature=[spec])
        self.serve_scaled = tf.function(self._scaled, input_signature=[spec])

    def _scaled(self, window: tf.Tensor) -> Dict[str, tf.Tensor]:
        return {PROBABILITIES: self.model(window, training=False)}

    def _raw(self, window: tf.Tensor) -> Dict[str, tf.Tensor]:
        # The transform graph scales rows [N, F]: flatten the windows' rows and fold them back.
        rows = tf.reshape(window, [-1, self._num_features])
        scaled = self.transform_layer({RAW_SIGNALS: rows})[SCALED_SIGNALS]
        return self._scaled(tf.reshape(scaled, [-1, self._window, self._num_features]))


def serving_dir(model_dir: str) -> str:
    return layout.join(model_dir, SERVING_DIR)


def export_serving(model: tf.Module, data_dir: str, model_dir: str,
                   stats: Optional[Dict[str, Any]] = None) -> str:
    """Write MODEL/serving for `model` (scaled windows [B, W, F] -> probabilities [B, 4]) with the
    scaling of the preprocess output `data_dir`; return its path.

    The SavedModel is written beside the old one and moved into place, so MODEL/serving is either
    the previous complete export or the new one.
    """
    stats = read_stats(data_dir) if stats is None else stats
    transform_layer = tft.TFTransformOutput(data_dir).transform_features_layer()
    module = ServingModule(model, transform_layer, stats["window"], len(stats["features"]))
    final = serving_dir(model_dir)
    staging = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
    tf.saved_model.save(module, staging, signatures={
        SERVING_SIGNATURE: module.serve_raw.get_concrete_function(),
        SCALED_SIGNATURE: module.serve_scaled.get_concrete_function(),
    })
    if tf.io.gfile.exists(final):
        tf.io.gfile.rmtree(final)
    tf.io.gfile.rename(staging, final)
    _LOG.info("exported %s", final)
    return final


def load_serving(model_dir: str):
    """The exported module; call `.signatures[SERVING_SIGNATURE](window=...)`."""
    return tf.saved_model.load(serving_dir(model_dir))
