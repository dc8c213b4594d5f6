"""The classifier and the Keras pieces the trainer needs: the one module that imports tf_keras.

tf_keras (the Keras 2 API), not Keras 3: tf.Transform's TransformFeaturesLayer is a tf_keras
model, and Keras 3's `fit` fails under MultiWorkerMirroredStrategy on TF 2.21 (DESIGN.md,
"Decisions already taken"). Other trainer modules reach Keras only through the functions here.

Default model: windows float32 [B, W, F] (scaled) -> LSTM(64, dropout 0.2) -> Dense(4, softmax)
-> probabilities float32 [B, 4]; sparse categorical cross-entropy, weighted by the per-sample
weights `fit` receives as the third element of each batch; Adam.
"""

import dataclasses
from typing import Callable, Optional

import tensorflow as tf
import tf_keras as keras

from tfrecords_schema import NUM_CLASSES, WINDOW


@dataclasses.dataclass(frozen=True)
class ModelParams:
    """The flags that shape and train the network."""

    units: int = 64
    layers: int = 1
    dropout: float = 0.2
    learning_rate: float = 1e-3

    def __post_init__(self):
        if self.units < 1 or self.layers < 1:
            raise ValueError(f"units ({self.units}) and layers ({self.layers}) must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")


def build_model(window: int, num_features: int, params: ModelParams = ModelParams(),
                num_classes: int = NUM_CLASSES) -> keras.Model:
    """A compiled, built classifier of scaled windows.

    Input float32 [None, window, num_features] (time-major, features in stats.json order);
    output float32 [None, num_classes] softmax probabilities. `layers` LSTMs of `units` are
    stacked, each but the last returning its sequence.
    """
    inputs = keras.Input(shape=(window, num_features), dtype="float32", name=WINDOW)
    x = inputs
    for i in range(params.layers):
        x = keras.layers.LSTM(params.units, dropout=params.dropout,
                              return_sequences=i < params.layers - 1, name=f"lstm_{i}")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="crew_state")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=params.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        weighted_metrics=[],  # accuracy counts every window once; only the loss is weighted
    )
    return model


def plain_copy(model: keras.Model) -> keras.Model:
    """The same network and weights in variables of no tf.distribute strategy (call it outside
    any strategy scope). Export this, not a model trained under a strategy: reads of mirrored
    variables are traced with the training cluster's device (e.g. /job:worker/task:0) pinned
    into the SavedModel, which then fails to run anywhere else."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def set_seed(seed: int) -> None:
    """Seed Python, numpy and TensorFlow (weight initialization, dropout)."""
    keras.utils.set_random_seed(seed)


def backup_and_restore(backup_dir: str) -> keras.callbacks.Callback:
    """Saves model, optimizer and epoch after every epoch; a new `fit` with the same directory
    restores them and continues at the next epoch. The backup is kept after the last epoch, so
    re-running a finished run trains nothing and a larger --epochs continues it."""
    return keras.callbacks.BackupAndRestore(backup_dir, save_freq="epoch", delete_checkpoint=False)


def tensorboard(log_dir: str) -> keras.callbacks.Callback:
    """TensorBoard logs: LOG_DIR/train and LOG_DIR/validation, tags `epoch_loss`,
    `epoch_accuracy`, step = epoch (so a resumed run continues the same curves)."""
    return keras.callbacks.TensorBoard(log_dir, histogram_freq=0, write_graph=False, update_freq="epoch")


def epoch_callback(on_epoch_begin: Optional[Callable[[int, dict], None]] = None,
                   on_epoch_end: Optional[Callable[[int, dict], None]] = None) -> keras.callbacks.Callback:
    """A callback calling `fn(epoch, logs)` (epoch 0-based) at the start / end of every epoch."""
    kwargs = {}
    if on_epoch_begin is not None:
        kwargs["on_epoch_begin"] = on_epoch_begin
    if on_epoch_end is not None:
        kwargs["on_epoch_end"] = on_epoch_end
    return keras.callbacks.LambdaCallback(**kwargs)
