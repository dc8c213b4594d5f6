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

`serving/assets.extra/crewstream.json` (TF Serving's folder for files the loader ignores) tells a
consumer what to feed the signature without OUT: {"window": W, "features": [names, in stats.json
order], "label_vocabulary": ["A", "B", "C", "D"]} (the order of the `probabilities` columns).
`read_serving_config(model_dir)` reads it back.
"""

import json
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
SERVING_CONFIG_FILE = "assets.extra/crewstream.json"


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
    _write_serving_config(staging, stats)
    if tf.io.gfile.exists(final):
        tf.io.gfile.rmtree(final)
    tf.io.gfile.rename(staging, final)
    _LOG.info("exported %s", final)
    return final


def _write_serving_config(saved_model_dir: str, stats: Dict[str, Any]) -> None:
    path = layout.join(saved_model_dir, SERVING_CONFIG_FILE)
    tf.io.gfile.makedirs(layout.join(saved_model_dir, SERVING_CONFIG_FILE.rsplit("/", 1)[0]))
    config = {"window": stats["window"], "features": list(stats["features"]),
              "label_vocabulary": list(stats["label_vocabulary"])}
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")


def read_serving_config(model_dir: str) -> Dict[str, Any]:
    """{"window": int, "features": [str], "label_vocabulary": [str]} of MODEL/serving.

    FileNotFoundError when MODEL/serving has none (exported before it was written: re-export);
    ValueError when it is malformed.
    """
    path = layout.join(serving_dir(model_dir), SERVING_CONFIG_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path} not found: {model_dir} has no exported serving model, or "
                                "one exported before the serving config existed (export it again)")
    with tf.io.gfile.GFile(path, "r") as f:
        config = json.load(f)
    window, features, labels = (config.get(k) for k in ("window", "features", "label_vocabulary"))
    if not (isinstance(window, int) and window >= 1 and isinstance(features, list) and features
            and all(isinstance(n, str) for n in features) and isinstance(labels, list) and labels):
        raise ValueError(f"{path}: expected {{window: int >= 1, features: [str, ...], "
                         f"label_vocabulary: [str, ...]}}, got {config}")
    return config


def load_serving(model_dir: str):
    """The exported module; call `.signatures[SERVING_SIGNATURE](window=...)`."""
    return tf.saved_model.load(serving_dir(model_dir))
