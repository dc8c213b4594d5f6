"""The serving model's contract (docs/DESIGN.md, "The model folder of a train run"): MODEL/serving's signature
and tensor names and its config, read as JSON, so that a reader (predict's launcher) learns what to
feed the model without importing TensorFlow. Checking and loading the SavedModel itself import
TensorFlow, inside those functions only.

Signatures (trainer.export writes them):
- `serving_default`: `window` float32 [None, W, F] RAW (unscaled) windows -> `probabilities`
  float32 [None, K], scaled inside by the preprocess run's tf.Transform graph.
- `scaled`: the same from windows already scaled (what the TFRecords hold).
- `sequence` (tcn only): `rows` float32 [None, T, F] RAW rows -> `probabilities` [None, T, K]; step
  t >= W-1 equals `serving_default` on the window ending at row t.
- `serving_examples`: `examples` string [None], serialized tf.train.Example of RAW windows ->
  `probabilities` [None, K].

MODEL/serving/assets.extra/crewstream.json (TF Serving's folder for files its loader ignores),
the serving config: {"window": W, "features": [names, stats.json order], "label_vocabulary":
[the `probabilities` columns], "model": "lstm" | "tcn", "receptive_field": rows one output depends
on, "signatures": [names], "normalize": the model's input normalization, "norm_rows": int or null,
"temperature": the calibration every signature applies last (softmax(log p / T); a number > 0, 1.0:
not calibrated)}. A config missing a key (one written by an older crewstream) is refused.
"""

import json
import math
from typing import Any, Dict, List

from tfrecords_schema import file_io

SERVING_DIR = "serving"
SERVING_SIGNATURE = "serving_default"
SCALED_SIGNATURE = "scaled"
SEQUENCE_SIGNATURE = "sequence"
SEQUENCE_INPUT = "rows"
EXAMPLES_SIGNATURE = "serving_examples"
EXAMPLES_INPUT = "examples"  # TFX's name for a serialized tf.Example batch
PROBABILITIES = "probabilities"
CONFIG_FILE = "assets.extra/crewstream.json"

# The networks (`--model`) and what each does to its (globally scaled) rows first, per feature,
# over the last `norm_rows` rows up to each step (causal): nothing, subtract their mean, z-score.
LSTM, TCN = "lstm", "tcn"
MODELS = (LSTM, TCN)
NORM_NONE, NORM_CENTER, NORM_ZSCORE = "none", "center", "zscore"
NORMALIZATIONS = (NORM_NONE, NORM_CENTER, NORM_ZSCORE)

KEYS = ("window", "features", "label_vocabulary", "model", "receptive_field", "signatures", "normalize",
        "norm_rows", "temperature")


class ServingModelError(ValueError):
    """MODEL/serving is missing, damaged, or not a crewstream export (one line)."""


def serving_dir(model_dir: str) -> str:
    return file_io.join(model_dir, SERVING_DIR)


def make_config(stats: Dict[str, Any], kind: str, receptive_field: int, signatures: List[str],
                normalize: str, norm_rows, temperature: float = 1.0) -> Dict[str, Any]:
    """The serving config of a model trained on windows described by `stats` (stats.json's keys),
    its outputs tempered by `temperature` (1.0: not calibrated)."""
    return {"window": stats["window"], "features": list(stats["features"]),
            "label_vocabulary": list(stats["label_vocabulary"]), "model": kind,
            "receptive_field": receptive_field, "signatures": signatures, "normalize": normalize,
            "norm_rows": norm_rows, "temperature": float(temperature)}


def write_config(saved_model_dir: str, config: Dict[str, Any]) -> None:
    file_io.write_bytes(file_io.join(saved_model_dir, CONFIG_FILE), (json.dumps(config, indent=2) + "\n").encode())


def read_config(model_dir: str) -> Dict[str, Any]:
    """MODEL/serving's config (KEYS, as make_config writes them).
    ServingModelError when there is none or it is malformed, or written by an older crewstream
    (train and export again)."""
    path = file_io.join(serving_dir(model_dir), CONFIG_FILE)
    try:
        config = json.loads(file_io.read_bytes(path))
    except FileNotFoundError:
        raise ServingModelError(f"{path} not found: {model_dir} holds no exported model (train it again)") from None
    except ValueError as e:
        raise ServingModelError(f"{path} is not JSON ({e}): export the model again") from None
    if not isinstance(config, dict) or sorted(config) != sorted(KEYS):
        raise ServingModelError(f"{path}: written by an older crewstream or damaged (expected the keys "
                                f"{', '.join(KEYS)}): train the model again")
    window, features, labels = config["window"], config["features"], config["label_vocabulary"]
    field, signatures, norm_rows = config["receptive_field"], config["signatures"], config["norm_rows"]
    temperature = config["temperature"]
    if not (isinstance(window, int) and window >= 1 and isinstance(features, list) and features
            and all(isinstance(n, str) for n in features) and isinstance(labels, list) and labels
            and config["model"] in MODELS and isinstance(field, int) and 1 <= field <= window
            and isinstance(signatures, list) and SERVING_SIGNATURE in signatures
            and all(isinstance(n, str) for n in signatures) and config["normalize"] in NORMALIZATIONS
            and (norm_rows is None or isinstance(norm_rows, int))
            and isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
            and math.isfinite(temperature) and temperature > 0):
        raise ServingModelError(f"{path}: expected window an int >= 1, features and label_vocabulary "
                                f"[str, ...], model one of {list(MODELS)}, receptive_field an int in "
                                f"1..window, signatures [str, ...] with {SERVING_SIGNATURE}, normalize one "
                                f"of {list(NORMALIZATIONS)}, temperature a number > 0; got {config}")
    config["temperature"] = float(temperature)
    return config


def check(model_dir: str) -> None:
    """ServingModelError unless MODEL/serving/saved_model.pb reads as a SavedModel with the
    `serving_default` signature: a damaged or foreign export is refused before any work (the
    graph's proto only, no variables; imports TensorFlow)."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    path = file_io.join(serving_dir(model_dir), "saved_model.pb")
    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString(file_io.read_bytes(path))
    except FileNotFoundError:
        raise ServingModelError(f"{path} not found: {model_dir} holds no exported model (train it again)") from None
    except DecodeError as e:
        raise ServingModelError(f"{path} is damaged ({e}): export the model again") from None
    if not any(SERVING_SIGNATURE in graph.signature_def for graph in proto.meta_graphs):
        raise ServingModelError(f"{path} is damaged or not a crewstream export (no `{SERVING_SIGNATURE}` "
                                "signature): export the model again")


def load(model_dir: str):
    """The exported module (imports TensorFlow); call `.signatures[SERVING_SIGNATURE](window=...)`.
    ServingModelError when TensorFlow cannot load it (damaged variables, a foreign folder)."""
    import tensorflow as tf

    try:
        return tf.saved_model.load(serving_dir(model_dir))
    except Exception as e:  # a damaged file fails in many ways (OpError, IndexError, DecodeError, ...)
        reason = str(getattr(e, "message", e)).strip().splitlines()
        why = reason[0] if reason else type(e).__name__
        raise ServingModelError(f"{serving_dir(model_dir)} cannot be loaded ({why}): "
                                "export the model again") from e
