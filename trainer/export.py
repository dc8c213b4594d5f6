"""MODEL/serving: a self-contained SavedModel of raw windows in, probabilities out.

Signatures:
- `serving_default`: `window` float32 [None, W, F] RAW (unscaled) values, features in stats.json
  order -> `probabilities` float32 [None, 4]. The windows are scaled inside the graph by the
  preprocess job's own tf.Transform graph (OUT/transform_fn), fed rows {signals: [B*W, F]} and
  reshaped back, so serving and training can never scale differently.
- `scaled`: the same output from windows already scaled (what the TFRecords hold); evaluate uses
  it, so the numbers it reports are those of the exported model.
- `sequence` (tcn models only): `rows` float32 [None, T, F] RAW rows, any T >= 1 ->
  `probabilities` float32 [None, T, 4]: the per-step network run once over the rows (scaled
  inside the same way). Step t >= W-1 equals `serving_default` on the window ending at row t
  (the receptive field is at most W, every layer causal); earlier steps see zero padding.
- `serving_examples`: `examples` string [None], serialized tf.train.Example of RAW windows (TF
  Serving's and TFX's usual input; the feature `window`, W*F raw values time-major, parsed with
  tfrecords_schema.raw_window_spec; other features ignored) -> `probabilities` float32 [None, 4],
  exactly `serving_default` on the same windows.

The tf.Transform layer is an attribute of the exported module, so its variables and assets are
saved with it: the model loads and runs after OUT has been deleted.

`serving/assets.extra/crewstream.json` (TF Serving's folder for files the loader ignores) tells a
consumer what to feed the signatures without OUT: {"window": W, "features": [names, in stats.json
order], "label_vocabulary": ["A", "B", "C", "D"] (the order of the `probabilities` columns),
"model": "lstm" | "tcn", "receptive_field": rows one output depends on (W for the lstm),
"signatures": [the signature names above that the model has], "normalize": the model's input
normalization (trainer.model.NORMALIZATIONS; inside both networks, so raw rows still go in),
"norm_rows": rows it looks back over (null for none)}. `read_serving_config(model_dir)` reads it
back (the one reader), filling in the lstm's values for exports older than the last five.
"""

import json
import logging
import uuid
from typing import Any, Dict, List, Optional

import tensorflow as tf
import tensorflow_transform as tft

from tfrecords_schema import RAW_SIGNALS, SCALED_SIGNALS, WINDOW, layout, raw_window_spec, read_stats
from trainer import model as model_lib

_LOG = logging.getLogger("crewstream.export")

SERVING_DIR = "serving"
SERVING_SIGNATURE = "serving_default"
SCALED_SIGNATURE = "scaled"
SEQUENCE_SIGNATURE = "sequence"
SEQUENCE_INPUT = "rows"
EXAMPLES_SIGNATURE = "serving_examples"
EXAMPLES_INPUT = "examples"  # TFX's name for a serialized tf.Example batch
PROBABILITIES = "probabilities"
SERVING_CONFIG_FILE = "assets.extra/crewstream.json"


class ServingModule(tf.Module):
    """Raw or scaled windows [None, W, F] -> {`probabilities`: [None, num_classes]}; with a
    `sequence` network (rows [B, T, F] -> [B, T, K]), raw rows [None, T, F] -> [None, T, K] too."""

    def __init__(self, model: tf.Module, transform_layer: tf.Module, window: int, num_features: int,
                 sequence: Optional[tf.Module] = None):
        super().__init__(name="crewstream_serving")
        self.model = model
        self.transform_layer = transform_layer  # tracked: carries transform_fn's variables and assets
        self._window, self._num_features = window, num_features
        spec = tf.TensorSpec([None, window, num_features], tf.float32, name=WINDOW)
        self.serve_raw = tf.function(self._raw, input_signature=[spec])
        self.serve_scaled = tf.function(self._scaled, input_signature=[spec])
        examples = tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)
        self.serve_examples = tf.function(self._examples, input_signature=[examples])
        self.serve_sequence = None
        if sequence is not None:
            self.sequence = sequence
            rows = tf.TensorSpec([None, None, num_features], tf.float32, name=SEQUENCE_INPUT)
            self.serve_sequence = tf.function(self._sequence, input_signature=[rows])

    def _scaled(self, window: tf.Tensor) -> Dict[str, tf.Tensor]:
        return {PROBABILITIES: self.model(window, training=False)}

    def _scale(self, values: tf.Tensor) -> tf.Tensor:
        # The transform graph scales rows [N, F]: flatten [B, T, F] to rows and fold them back.
        rows = tf.reshape(values, [-1, self._num_features])
        scaled = self.transform_layer({RAW_SIGNALS: rows})[SCALED_SIGNALS]
        scaled = tf.reshape(scaled, tf.shape(values))
        scaled.set_shape(values.shape)  # keep the static W and F the networks are built for
        return scaled

    def _raw(self, window: tf.Tensor) -> Dict[str, tf.Tensor]:
        return self._scaled(self._scale(window))

    def _examples(self, examples: tf.Tensor) -> Dict[str, tf.Tensor]:
        parsed = tf.io.parse_example(examples, raw_window_spec(self._window, self._num_features))
        return self._raw(tf.reshape(parsed[WINDOW], [-1, self._window, self._num_features]))

    def _sequence(self, rows: tf.Tensor) -> Dict[str, tf.Tensor]:
        return {PROBABILITIES: self.sequence(self._scale(rows), training=False)}

    def signatures(self) -> Dict[str, Any]:
        """{name: concrete function} of every signature this module serves."""
        out = {SERVING_SIGNATURE: self.serve_raw.get_concrete_function(),
               SCALED_SIGNATURE: self.serve_scaled.get_concrete_function(),
               EXAMPLES_SIGNATURE: self.serve_examples.get_concrete_function()}
        if self.serve_sequence is not None:
            out[SEQUENCE_SIGNATURE] = self.serve_sequence.get_concrete_function()
        return out


def serving_dir(model_dir: str) -> str:
    return layout.join(model_dir, SERVING_DIR)


def export_serving(model: tf.Module, data_dir: str, model_dir: str,
                   stats: Optional[Dict[str, Any]] = None,
                   params: model_lib.ModelParams = model_lib.ModelParams()) -> str:
    """Write MODEL/serving for `model` (scaled windows [B, W, F] -> probabilities [B, 4], built by
    model_lib.build_model with `params`) with the scaling of the preprocess output `data_dir`;
    return its path. A tcn also gets the `sequence` signature. W is `stats["window"]`, the window
    the model was trained on (for a window other than the folder's, trainer.data.windowed_stats'
    stats; ValueError if the model's input has another).

    The SavedModel is written beside the old one and moved into place, so MODEL/serving is either
    the previous complete export or the new one.
    """
    stats = read_stats(data_dir) if stats is None else stats
    trained = getattr(model, "input_shape", (None, stats["window"]))[1]
    if trained != stats["window"]:
        raise ValueError(f"the model takes windows of {trained} rows, `stats` says {stats['window']}: pass "
                         "the stats of the windows it was trained on (trainer.data.windowed_stats)")
    params = params.for_window(stats["window"])
    sequence = model_lib.sequence_network(model)
    if (sequence is not None) != (params.kind == model_lib.TCN):
        raise ValueError(f"the model to export is {'not ' if sequence is None else ''}a "
                         f"{model_lib.TCN}, its settings say {params.kind}")
    transform_layer = tft.TFTransformOutput(data_dir).transform_features_layer()
    module = ServingModule(model, transform_layer, stats["window"], len(stats["features"]), sequence)
    final = serving_dir(model_dir)
    staging = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
    signatures = module.signatures()
    tf.saved_model.save(module, staging, signatures=signatures)
    _write_serving_config(staging, stats, params, sorted(signatures))
    if tf.io.gfile.exists(final):
        tf.io.gfile.rmtree(final)
    tf.io.gfile.rename(staging, final)
    _LOG.info("exported %s", final)
    return final


def _write_serving_config(saved_model_dir: str, stats: Dict[str, Any], params: model_lib.ModelParams,
                          signatures: List[str]) -> None:
    path = layout.join(saved_model_dir, SERVING_CONFIG_FILE)
    tf.io.gfile.makedirs(layout.join(saved_model_dir, SERVING_CONFIG_FILE.rsplit("/", 1)[0]))
    config = {"window": stats["window"], "features": list(stats["features"]),
              "label_vocabulary": list(stats["label_vocabulary"]), "model": params.kind,
              "receptive_field": params.receptive_field or stats["window"], "signatures": signatures,
              "normalize": params.normalize, "norm_rows": params.norm_rows}
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")


def read_serving_config(model_dir: str) -> Dict[str, Any]:
    """{"window": int, "features": [str], "label_vocabulary": [str], "model": str,
    "receptive_field": int in 1..window, "signatures": [str], "normalize": str, "norm_rows": int
    or None} of MODEL/serving; an export that predates the last five keys gets the lstm's
    ("lstm", window, [scaled, serving_default], "none", None).

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
    config.setdefault("model", model_lib.LSTM)
    config.setdefault("receptive_field", window)
    config.setdefault("signatures", [SCALED_SIGNATURE, SERVING_SIGNATURE])
    config.setdefault("normalize", model_lib.NORM_NONE)
    config.setdefault("norm_rows", None)
    field, signatures = config["receptive_field"], config["signatures"]
    if not (config["model"] in model_lib.MODELS and isinstance(field, int) and 1 <= field <= window
            and isinstance(signatures, list) and SERVING_SIGNATURE in signatures
            and all(isinstance(n, str) for n in signatures)
            and config["normalize"] in model_lib.NORMALIZATIONS):
        raise ValueError(f"{path}: expected model one of {list(model_lib.MODELS)}, receptive_field an "
                         f"int in 1..window, signatures [str, ...] with {SERVING_SIGNATURE}, normalize one of "
                         f"{list(model_lib.NORMALIZATIONS)}; got {config}")
    return config


class ServingModelError(ValueError):
    """MODEL/serving is damaged or not a crewstream export (one line)."""


def check_serving(model_dir: str) -> None:
    """ServingModelError unless MODEL/serving/saved_model.pb reads as a SavedModel with the
    `serving_default` signature: a damaged or foreign export is refused before any work (cheap:
    the graph's proto only, no variables)."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    path = layout.join(serving_dir(model_dir), tf.saved_model.SAVED_MODEL_FILENAME_PB)
    proto = saved_model_pb2.SavedModel()
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            proto.ParseFromString(f.read())
    except tf.errors.NotFoundError:
        raise ServingModelError(f"{path} not found: {model_dir} holds no exported model (train it again)") from None
    except DecodeError as e:
        raise ServingModelError(f"{path} is damaged ({e}): export the model again") from None
    if not any(SERVING_SIGNATURE in graph.signature_def for graph in proto.meta_graphs):
        raise ServingModelError(f"{path} is damaged or not a crewstream export (no `{SERVING_SIGNATURE}` "
                                "signature): export the model again")


def load_serving(model_dir: str):
    """The exported module; call `.signatures[SERVING_SIGNATURE](window=...)`. ServingModelError
    when TensorFlow cannot load it (damaged variables, a foreign folder)."""
    try:
        return tf.saved_model.load(serving_dir(model_dir))
    except Exception as e:  # a damaged file fails in many ways (OpError, IndexError, DecodeError, ...)
        reason = str(getattr(e, "message", e)).strip().splitlines()
        raise ServingModelError(f"{serving_dir(model_dir)} cannot be loaded ({reason[0] if reason else type(e).__name__}): "
                                "export the model again") from e
