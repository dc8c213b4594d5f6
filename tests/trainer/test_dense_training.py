"""Dense training (`--dense`): the tcn's per-step network run once per chunk, a loss at every row
a stride-1 window ends at, equal to the windowed loss over those windows."""

import collections

import numpy as np
import pytest

from tfrecords_schema import LABEL_VOCABULARY, sequence
from trainer import data, model as model_lib, weights
from tests.helpers import SEQUENCE_FEATURES as FEATURES
from tests.reference import numpy_windows


WINDOW = 12  # the trained W', below the folder's 24: the chunks' context is trimmed to W' - 1 rows
PARAMS = model_lib.ModelParams(kind=model_lib.TCN, filters=4, kernel_size=2, dropout=0.0,
                               learning_rate=1e-2, normalize=model_lib.NORM_ZSCORE, norm_rows=4)


def _one_batch(ds):
    """The tensors of a one-batch dataset."""
    batches = list(ds)
    assert len(batches) == 1
    return batches[0]


@pytest.mark.parametrize("split", ["train", "eval"])
def test_the_labelled_rows_are_the_stride_1_window_ends(folder, split):
    data_dir, stats, recordings = folder
    ds = data.make_dense_dataset(data_dir, split, 3, window=WINDOW, stats=stats)
    chunks = stats["splits"][split]["num_chunks"]
    assert ds.cardinality().numpy() == -(-chunks // 3)
    labels, ws = [], []
    for rows, label, weight in ds:
        assert rows.shape[:2] == label.shape == weight.shape and rows.shape[2] == len(FEATURES)
        labels.append(label.numpy().reshape(-1))
        ws.append(weight.numpy().reshape(-1))
    labels, ws = np.concatenate(labels), np.concatenate(ws)
    target = labels >= 0
    want, _ = numpy_windows(recordings[split], WINDOW, 1)
    assert target.sum() == sum(want.values())
    counts = collections.Counter(label for _, label in want.elements())
    assert {c: int((labels == i).sum()) for i, c in enumerate(LABEL_VOCABULARY)} == {
        c: counts[i] for i, c in enumerate(LABEL_VOCABULARY)}
    lookup = weights.weight_vector(sequence.window_counts(stats, "train", WINDOW, 1)["class_counts"])
    np.testing.assert_array_equal(ws[target], lookup[labels[target]])
    assert not ws[~target].any()


def test_the_dense_loss_is_the_windowed_loss_over_the_stride_1_windows(folder):
    data_dir, stats, _ = folder
    model_lib.set_seed(4)
    net = model_lib.build_model(WINDOW, len(FEATURES), PARAMS)
    assert net.get_layer(model_lib.STEP_NETWORK) is model_lib.step_network(net) is not None
    dense = model_lib.dense_model(net, PARAMS.for_window(WINDOW))
    for split in ("train", "eval"):
        x, y, w = _one_batch(data.make_dataset(data_dir, split, 10_000, window=WINDOW, stride=1, stats=stats))
        windowed = net.loss(y, net(x, training=False), sample_weight=w)
        rows, labels, ws = _one_batch(data.make_dense_dataset(data_dir, split, 1000, window=WINDOW, stats=stats))
        assert rows.shape[0] > 1 and (labels.numpy() < 0).any()  # several chunks, padded and masked
        loss, probabilities, _, target = dense.dense_loss(rows, labels, ws)
        np.testing.assert_allclose(loss.numpy(), windowed.numpy(), rtol=1e-5)
        assert int(target.numpy().sum()) == len(y)
        # and row by row: each labelled row's output is the classifier's on its window
        np.testing.assert_allclose(np.sort(probabilities.numpy()[target.numpy() > 0], axis=0),
                                   np.sort(net(x, training=False).numpy(), axis=0), atol=1e-5)


def test_short_dense_training_lowers_the_loss(folder):
    data_dir, stats, _ = folder
    model_lib.set_seed(5)
    params = model_lib.ModelParams(kind=model_lib.TCN, filters=4, kernel_size=2, learning_rate=1e-2,
                                   normalize=model_lib.NORM_NONE)
    net = model_lib.build_model(WINDOW, len(FEATURES), params)  # no normalization: levels tell the labels
    dense = model_lib.dense_model(net, params.for_window(WINDOW))
    # in file order: a shuffled read interleaves nondeterministically, and so would the loss
    train_ds = data.make_dense_dataset(data_dir, "train", 4, window=WINDOW, stats=stats)
    eval_ds = data.make_dense_dataset(data_dir, "eval", 4, window=WINDOW, stats=stats)
    history = dense.fit(train_ds, validation_data=eval_ds, epochs=10, verbose=0).history
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert history["loss"][-1] < 0.7 * history["loss"][0]
    assert history["val_loss"][-1] < 0.7 * history["val_loss"][0]
    # the classifier shares the trained weights
    x, y, _ = _one_batch(data.make_dataset(data_dir, "eval", 10_000, window=WINDOW, stride=1, stats=stats))
    assert (net.predict(x, verbose=0).argmax(axis=1) == y.numpy()).mean() == pytest.approx(
        history["val_accuracy"][-1], abs=1e-6)


def test_dense_training_is_refused_for_an_lstm_and_a_windows_folder(prep_dir):
    lstm = model_lib.ModelParams(kind=model_lib.LSTM, units=4)
    with pytest.raises(model_lib.ModelError, match="tcn"):
        model_lib.dense_model(model_lib.build_model(WINDOW, 3, lstm), lstm)
    with pytest.raises(data.WindowError, match="--layout sequence"):
        data.make_dense_dataset(prep_dir, "train", 4)
