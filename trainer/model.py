"""The classifier and the Keras pieces the trainer needs: the one module that imports tf_keras.

tf_keras (the Keras 2 API), not Keras 3: tf.Transform's TransformFeaturesLayer is a tf_keras
model, and Keras 3's `fit` fails under MultiWorkerMirroredStrategy on TF 2.21 (docs/DESIGN.md,
"Decisions, and why"). Other trainer modules reach Keras only through the functions here.

Models (`ModelParams.kind`, trainer.config), both windows float32 [B, W, F] (scaled) ->
probabilities [B, 4]:
- `lstm`: `layers` LSTM(`units`, `dropout`) -> Dense(4, softmax).
- `tcn` (the default): a temporal convolutional network. The per-step network, a nested model
  named `step_network` (STEP_NETWORK), maps rows [B, T, F] (any T) -> [B, T, 4]: `levels`
  residual levels, each two causal dilated Conv1D of `filters` (kernel `kernel_size`, dilation
  1, 2, 4, ... doubling per level, ReLU, dropout) and a 1x1 Conv1D on the skip path where the
  width changes, then Dense(4, softmax) applied per time step. Nothing is pooled, flattened or
  normalized over time except causally, so output step t depends on rows t-R+1..t only,
  R = receptive_field(kernel_size, levels, L) = L + 2 (k-1) (2^levels - 1) (L: the input
  normalization's rows, 1 without one). The classifier of windows is the last step of the
  per-step network on the window: with R <= W, the per-step network run once over a sequence
  (a recording's rows in time order) gives at step t the classifier's output on the window
  ending at t.
Both: in training only, optionally, random gains per sample and feature (RandomGain,
`augment_gain`); a first stage, RollingNormalization (`normalize`, `norm_rows` L; the default
centers): per feature, each step minus the mean of the last L rows (center), or also divided by
their std (zscore); sparse categorical cross-entropy, weighted by the per-sample weights `fit`
receives as the third element of each batch; Adam.
"""

from typing import Callable, Optional

import tensorflow as tf
import tf_keras as keras

from tfrecords_schema import NUM_CLASSES, WINDOW
from trainer.choices import LSTM, MODELS, NORM_CENTER, NORM_NONE, NORM_ZSCORE, NORMALIZATIONS, TCN  # noqa: F401
from trainer.config import ModelError, ModelParams

NORM_EPSILON = 1e-4  # added to the rolling variance (of globally scaled values) before its root
STEP_NETWORK = "step_network"  # the tcn's per-step network, nested in the classifier


def build_model(window: int, num_features: int, params: ModelParams = ModelParams(),
                num_classes: int = NUM_CLASSES) -> keras.Model:
    """A compiled, built classifier of scaled windows.

    Input float32 [None, window, num_features] (time-major, features in stats.json order);
    output float32 [None, num_classes] softmax probabilities. lstm: `layers` LSTMs of `units`
    are stacked, each but the last returning its output at every step. tcn: the last step of the
    nested per-step network (see `step_network`); ModelError when its receptive field exceeds
    `window`.
    """
    inputs = keras.Input(shape=(window, num_features), dtype="float32", name=WINDOW)
    params = params.for_window(window)
    if params.kind == TCN:
        per_step = _tcn(num_features, params, num_classes)
        outputs = LastStep(name="probabilities")(per_step(inputs))
    else:
        x = _normalized(_augmented(inputs, params), params)
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


def _tcn(num_features: int, params: ModelParams, num_classes: int) -> keras.Model:
    """rows float32 [B, T, F] -> per-step probabilities [B, T, num_classes], for any T."""
    rows = keras.Input(shape=(None, num_features), dtype="float32", name="rows")
    x = NonEmptyBatch(name="non_empty")(rows)
    # the normalization looks back params.input_rows rows, counted in the receptive field
    x = _normalized(_augmented(x, params), params)
    for i in range(params.levels):
        skip = x
        for j in range(2):
            x = keras.layers.Conv1D(params.filters, params.kernel_size, padding="causal",
                                    dilation_rate=2 ** i, activation="relu", name=f"level{i}_conv{j}")(x)
            x = keras.layers.Dropout(params.dropout, name=f"level{i}_dropout{j}")(x)
        if skip.shape[-1] != params.filters:  # a per-step projection: causal, receptive field 1
            skip = keras.layers.Conv1D(params.filters, 1, name=f"level{i}_skip")(skip)
        x = keras.layers.Activation("relu", name=f"level{i}_out")(keras.layers.Add()([x, skip]))
    # Dense on [B, T, C] acts on the last axis: the same softmax at every step
    probabilities = keras.layers.Dense(num_classes, activation="softmax", name="per_step")(x)
    probabilities = FirstOfBatch(name="batch")([probabilities, rows])
    return keras.Model(rows, probabilities, name=STEP_NETWORK)


def _augmented(rows, params: ModelParams):
    """rows [B, T, F] through RandomGain when `params.augment_gain` > 1 (training only)."""
    if params.augment_gain <= 1.0:
        return rows
    return RandomGain(params.augment_gain, name="random_gain")(rows)


def _normalized(rows, params: ModelParams):
    """rows [B, T, F] through the input stage `params.normalize` (the same tensor for none)."""
    if params.normalize == NORM_NONE:
        return rows
    return RollingNormalization(params.norm_rows, scale=params.normalize == NORM_ZSCORE,
                                name="rolling_normalization")(rows)


@keras.utils.register_keras_serializable(package="crewstream")  # see NonEmptyBatch
class RollingNormalization(keras.layers.Layer):
    """[B, T, F] -> [B, T, F], causal, per feature: step t minus the mean of rows t-L+1..t
    (`rows` L; only rows 0..t before step L-1), and with `scale` divided by
    sqrt(their population variance + NORM_EPSILON). No weights; step t >= L-1 depends on
    exactly rows t-L+1..t, so it is the same in a window and in one pass over a longer run."""

    def __init__(self, rows: int, scale: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.rows, self.scale = int(rows), bool(scale)

    def get_config(self):
        return {**super().get_config(), "rows": self.rows, "scale": self.scale}

    def _rolling_mean(self, x, count):
        # the sum of the L rows ending at step t is cumsum[t] - cumsum[t-L] (0 before the start):
        # O(T) whatever L; in float64 a run of millions of rows loses nothing near 1e-5
        total = tf.cumsum(x, axis=1)
        earlier = tf.pad(total, [[0, 0], [self.rows, 0], [0, 0]])[:, :tf.shape(x)[1]]
        return (total - earlier) / count

    def call(self, inputs):
        # float64: the variance is E[x^2] - E[x]^2, which float32 would lose for a feature whose
        # level is far from 0 in units of its local spread
        x = tf.cast(inputs, tf.float64)
        steps = tf.shape(x)[1]
        count = tf.cast(tf.minimum(tf.range(1, steps + 1), self.rows), tf.float64)[None, :, None]
        mean = self._rolling_mean(x, count)
        out = x - mean
        if self.scale:
            variance = tf.maximum(self._rolling_mean(tf.square(x), count) - tf.square(mean), 0.0)
            out = out * tf.math.rsqrt(variance + NORM_EPSILON)
        return tf.cast(out, inputs.dtype)


@keras.utils.register_keras_serializable(package="crewstream")
class RandomGain(keras.layers.Layer):
    """Training only: each sample's features each multiplied by one random gain, log-uniform in
    [1/`gain`, `gain`] (the same over the sample's time steps); the identity when not training,
    so a serving model computes exactly what it would without the layer. A new person's signal
    levels differ by such gains (electrodes, leads, skin): a model that has seen its training
    people at random levels cannot tell a state by a level that only those people had."""

    def __init__(self, gain: float, **kwargs):
        super().__init__(**kwargs)
        self.gain = float(gain)

    def get_config(self):
        return {**super().get_config(), "gain": self.gain}

    def call(self, inputs, training=None):
        def augmented():
            shape = tf.stack([tf.shape(inputs)[0], 1, tf.shape(inputs)[2]])
            spread = tf.math.log(tf.constant(self.gain, inputs.dtype))
            return inputs * tf.exp(tf.random.uniform(shape, -spread, spread, dtype=inputs.dtype))
        return keras.backend.in_train_phase(augmented, inputs, training=training)


@keras.utils.register_keras_serializable(package="crewstream")
class LastStep(keras.layers.Layer):
    """[B, T, C] -> [B, C]: the last time step."""

    def call(self, inputs):
        return inputs[:, -1, :]


# Layers inside the nested per-step network are registered: plain_copy (clone_model) rebuilds
# that network from its config, which finds custom layers only by their registered names.
@keras.utils.register_keras_serializable(package="crewstream")
class NonEmptyBatch(keras.layers.Layer):
    """[B, ...] -> [max(B, 1), ...]: an empty batch gets one row of zeros. TensorFlow's
    convolutions fail on an empty batch, which a multi-worker step can hand a worker at the end
    of its part and a serving call may send; FirstOfBatch drops the row again."""

    def call(self, inputs):
        extra = tf.maximum(1 - tf.shape(inputs)[0], 0)
        return tf.pad(inputs, [[0, extra]] + [[0, 0]] * (len(inputs.shape) - 1))


@keras.utils.register_keras_serializable(package="crewstream")
class FirstOfBatch(keras.layers.Layer):
    """[outputs [B', ...], inputs [B, ...]] -> outputs[:B]."""

    def call(self, inputs):
        outputs, like = inputs
        return outputs[:tf.shape(like)[0]]


class DenseTraining(keras.Model):
    """Dense training of a tcn classifier: its per-step network (shared: training this trains
    the classifier) run once over each chunk of rows, with a loss at every row a window ends at.

    Batches: (rows float32 [B, T, F], labels int64 [B, T], weights float32 [B, T]); a label < 0
    marks a row that is input only (context, a row no window ends at, padding). The loss of a
    batch is sum(weight * cross-entropy) over its target rows / their number: with R <= W and
    every layer causal, a target row's output is the classifier's on the window ending there,
    so this is the loss Keras computes for a batch of those windows with the same weights.
    Metrics: `loss` (the mean of the batches' losses, as Keras logs it) and `accuracy` (over the
    target rows, unweighted), the names the windowed model logs.
    """

    def __init__(self, step_network: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.step_network = step_network
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    def call(self, rows, training=None):
        return self.step_network(rows, training=training)

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy]

    def dense_loss(self, rows, labels, weights, training=False):
        """(loss scalar, probabilities [B, T, K], labels with 0 at non-targets, target mask float32)."""
        probabilities = self(rows, training=training)
        target = tf.cast(labels >= 0, tf.float32)
        labels = tf.maximum(labels, 0)
        per_row = keras.losses.sparse_categorical_crossentropy(labels, probabilities)
        loss = tf.math.divide_no_nan(tf.reduce_sum(per_row * weights * target), tf.reduce_sum(target))
        return loss, probabilities, labels, target

    def _record(self, loss, probabilities, labels, target):
        self.loss_tracker.update_state(loss)
        self.accuracy.update_state(labels, probabilities, sample_weight=target)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, batch):
        with tf.GradientTape() as tape:
            loss, *rest = self.dense_loss(*batch, training=True)
        self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
        return self._record(loss, *rest)

    def test_step(self, batch):
        return self._record(*self.dense_loss(*batch, training=False))


def dense_model(model: keras.Model, params: ModelParams) -> keras.Model:
    """A compiled DenseTraining of the tcn classifier `model` (its weights, shared); ModelError
    for an lstm, whose outputs are per window only."""
    per_step = step_network(model)
    if per_step is None:
        raise ModelError("dense training needs a convolutional model (--model tcn): an lstm has no "
                         "per-row outputs")
    dense = DenseTraining(per_step, name="dense_training")
    # weighted_metrics=[]: the third element of a batch is the per-row weights, used by dense_loss
    dense.compile(optimizer=keras.optimizers.Adam(learning_rate=params.learning_rate), weighted_metrics=[])
    return dense


def step_network(model: keras.Model) -> Optional[keras.Model]:
    """The per-step network (rows [B, T, F] -> [B, T, K]) of a tcn classifier; None for an lstm."""
    try:
        return model.get_layer(STEP_NETWORK)
    except ValueError:
        return None


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
