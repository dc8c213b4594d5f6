"""MODEL/serving: a self-contained SavedModel of raw windows in, probabilities out.

Signatures:
- `serving_default`: `window` float32 [None, W, F] RAW (unscaled) values, features in stats.json
  order -> `probabilities` float32 [None, 4]. The windows are scaled inside the graph by the
  preprocess job's own tf.Transform graph (OUT/transform_fn), fed rows {signals: [B*W, F]} and
  reshaped back, so serving and training can never scale differently.
- `scaled`: the same output from windows already scaled (what the TFRecords hold); evaluate uses
  it, so the numbers it reports are those of the exported model.
- `sequence` (tcn models only): `rows` float32 [None, T, F] RAW rows of a sequence (a
  recording's rows in time order), any T >= 1 -> `probabilities` float32 [None, T, 4]: the
  per-step network (trainer.model.step_network) run once over the rows (scaled inside the same
  way). Step t >= W-1 equals `serving_default` on the window ending at row t
  (the receptive field is at most W, every layer causal); earlier steps see zero padding.
- `serving_examples`: `examples` string [None], serialized tf.train.Example of RAW windows (TF
  Serving's and TFX's usual input; the feature `window`, W*F raw values time-major, parsed with
  tfrecords_schema.raw_window_spec; other features ignored) -> `probabilities` float32 [None, 4],
  exactly `serving_default` on the same windows.

Calibration: every signature's `probabilities` are the network's, tempered as the last stage:
softmax(log(max(p, tiny)) / T) per row or step (trainer.calibration.temper_tensor), T the
`temperature` given to export_serving (fitted by trainer.calibration). It keeps each row's arg-max,
and being the same map at every step, `sequence` still equals `serving_default`. T = 1 (not
calibrated) adds no op: the graph computes exactly what an export without calibration did. T is
recorded in the serving config (`temperature`).

The tf.Transform layer is an attribute of the exported module, so its variables and assets are
saved with it: the model loads and runs after OUT has been deleted. Of the networks only their
variables are attributes (not the Keras objects), and the signatures' tf.functions are not
attributes either (saved as signatures only, not again as methods of the module); serving_default
and serving_examples call `scaled`'s function rather than each holding the window network: the
SavedModel holds each network's graph once, and loads without rebuilding every Keras layer
(loading rebuilds every function of the library in Python, at the start of every predict,
evaluate and live run).

The names of the signatures and tensors, and the serving config written beside the SavedModel
(`serving/assets.extra/crewstream.json`: what to feed the model without OUT), are the contract in
tfrecords_schema.serving, which predict reads without importing TensorFlow.
"""

import logging
import types
import uuid
from typing import Any, Dict, Optional

import tensorflow as tf
import tensorflow_transform as tft

from tfrecords_schema import RAW_SIGNALS, SCALED_SIGNALS, WINDOW, raw_window_spec, read_stats, serving
from trainer import calibration, model as model_lib

_LOG = logging.getLogger("crewstream.export")


class ServingModule(tf.Module):
    """Raw or scaled windows [None, W, F] -> {`probabilities`: [None, num_classes]}; with a tcn's
    `step_network` (rows [B, T, F] -> [B, T, K]), raw rows [None, T, F] -> [None, T, K] too.
    Every output is tempered by `temperature` (a constant of the graph; none at 1.0)."""

    def __init__(self, model: tf.Module, transform_layer: tf.Module, window: int, num_features: int,
                 step_network: Optional[tf.Module] = None, temperature: float = 1.0):
        super().__init__(name="crewstream_serving")
        # The networks' variables are tracked, not the Keras objects: the SavedModel holds the
        # signatures' functions and the variables they read, without each layer's own saved
        # functions and Keras metadata, and loads in about a third of the time (what every predict,
        # evaluate and live run waits for at its start; benchmarks/README.md, bench_floor).
        self.network_variables = _variables_of(model, step_network)
        self._networks = types.SimpleNamespace(model=model, step=step_network)  # not tracked
        self.transform_layer = transform_layer  # tracked: carries transform_fn's variables and assets
        self._window, self._num_features = window, num_features
        self._temperature = calibration.check_temperature(temperature)
        # The signatures' functions are not tracked either (a tracked tf.function is saved again as
        # the module's method: a second copy of every graph to rebuild at each load), and the raw
        # window signatures call `scaled`'s function (one graph of the window network, not three).
        spec = tf.TensorSpec([None, window, num_features], tf.float32, name=WINDOW)
        examples = tf.TensorSpec([None], tf.string, name=serving.EXAMPLES_INPUT)
        scaled = tf.function(self._scaled, input_signature=[spec])
        functions = {serving.SERVING_SIGNATURE: tf.function(self._raw, input_signature=[spec]),
                     serving.SCALED_SIGNATURE: scaled,
                     serving.EXAMPLES_SIGNATURE: tf.function(self._examples, input_signature=[examples])}
        if step_network is not None:
            rows = tf.TensorSpec([None, None, num_features], tf.float32, name=serving.SEQUENCE_INPUT)
            functions[serving.SEQUENCE_SIGNATURE] = tf.function(self._sequence, input_signature=[rows])
        self._serve = types.SimpleNamespace(functions=functions, scaled=scaled)  # a dict would be tracked

    def _scaled(self, window: tf.Tensor) -> Dict[str, tf.Tensor]:
        probabilities = self._networks.model(window, training=False)
        return {serving.PROBABILITIES: calibration.temper_tensor(probabilities, self._temperature)}

    def _scale(self, values: tf.Tensor) -> tf.Tensor:
        # The transform graph scales rows [N, F]: flatten [B, T, F] to rows and fold them back.
        rows = tf.reshape(values, [-1, self._num_features])
        scaled = self.transform_layer({RAW_SIGNALS: rows})[SCALED_SIGNALS]
        scaled = tf.reshape(scaled, tf.shape(values))
        scaled.set_shape(values.shape)  # keep the static W and F the networks are built for
        return scaled

    def _raw(self, window: tf.Tensor) -> Dict[str, tf.Tensor]:
        return self._serve.scaled(self._scale(window))

    def _examples(self, examples: tf.Tensor) -> Dict[str, tf.Tensor]:
        parsed = tf.io.parse_example(examples, raw_window_spec(self._window, self._num_features))
        return self._raw(tf.reshape(parsed[WINDOW], [-1, self._window, self._num_features]))

    def _sequence(self, rows: tf.Tensor) -> Dict[str, tf.Tensor]:
        probabilities = self._networks.step(self._scale(rows), training=False)
        return {serving.PROBABILITIES: calibration.temper_tensor(probabilities, self._temperature)}

    def signatures(self) -> Dict[str, Any]:
        """{name: concrete function} of every signature this module serves."""
        return {name: function.get_concrete_function() for name, function in self._serve.functions.items()}


def _variables_of(*networks: Optional[tf.Module]) -> list:
    """Every variable of `networks` once (a tcn's per-step network shares its classifier's)."""
    found = {}
    for network in networks:
        for variable in (network.variables if network is not None else ()):
            found.setdefault(id(variable), variable)
    return list(found.values())


def export_serving(model: tf.Module, data_dir: str, model_dir: str,
                   stats: Optional[Dict[str, Any]] = None,
                   params: model_lib.ModelParams = model_lib.ModelParams(), temperature: float = 1.0) -> str:
    """Write MODEL/serving for `model` (scaled windows [B, W, F] -> probabilities [B, 4], built by
    model_lib.build_model with `params`) with the scaling of the preprocess output `data_dir`;
    return its path. A tcn also gets the `sequence` signature. W is `stats["window"]`, the window
    the model was trained on (for a window other than the folder's, trainer.data.windowed_stats'
    stats; ValueError if the model's input has another). `temperature`: the calibration every
    signature applies (trainer.calibration; 1.0, the default: none; ValueError unless finite and > 0).

    The SavedModel is written beside the old one and moved into place, so MODEL/serving is either
    the previous complete export or the new one.
    """
    stats = read_stats(data_dir) if stats is None else stats
    trained = getattr(model, "input_shape", (None, stats["window"]))[1]
    if trained != stats["window"]:
        raise ValueError(f"the model takes windows of {trained} rows, `stats` says {stats['window']}: pass "
                         "the stats of the windows it was trained on (trainer.data.windowed_stats)")
    params = params.for_window(stats["window"])
    per_step = model_lib.step_network(model)
    if (per_step is not None) != (params.kind == model_lib.TCN):
        raise ValueError(f"the model to export is {'not ' if per_step is None else ''}a "
                         f"{model_lib.TCN}, its settings say {params.kind}")
    transform_layer = tft.TFTransformOutput(data_dir).transform_features_layer()
    module = ServingModule(model, transform_layer, stats["window"], len(stats["features"]), per_step, temperature)
    final = serving.serving_dir(model_dir)
    staging = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
    signatures = module.signatures()
    tf.saved_model.save(module, staging, signatures=signatures)
    serving.write_config(staging, serving.make_config(stats, params.kind, params.receptive_field or stats["window"],
                                                      sorted(signatures), params.normalize, params.norm_rows,
                                                      float(temperature)))
    if tf.io.gfile.exists(final):
        tf.io.gfile.rmtree(final)
    tf.io.gfile.rename(staging, final)
    _LOG.info("exported %s", final)
    return final
