"""trainer.model: the tcn's receptive field, causality, and one pass of its per-step network equal
to its windows.

The receptive field is measured on the network itself (which input rows move an output step),
not taken from the formula it is checked against.
"""

import numpy as np
import pytest

from trainer import model as model_lib

W, F = 64, 3


def _tcn(**kwargs):
    """A tcn of 8 filters without an input normalization (the tests of one add it)."""
    model_lib.set_seed(7)
    params = model_lib.ModelParams(**{"kind": model_lib.TCN, "filters": 8, "normalize": model_lib.NORM_NONE,
                                      **kwargs}).for_window(W)
    return model_lib.build_model(W, F, params), params


def _windows(rows, window):
    """float32 [T - W + 1, W, F]: the window ending at each row from row W-1 on (a copy)."""
    return np.stack([rows[t - window + 1:t + 1] for t in range(window - 1, len(rows))])


@pytest.mark.parametrize("kernel, window, levels, field", [
    (3, 64, 4, 61), (4, 64, 3, 43), (3, 256, 6, 253), (2, 256, 7, 255), (5, 17, 1, 9)])
def test_default_depth_is_the_deepest_that_fits_the_window(kernel, window, levels, field):
    unnormalized = dict(kind=model_lib.TCN, kernel_size=kernel, normalize=model_lib.NORM_NONE)
    params = model_lib.ModelParams(**unnormalized).for_window(window)
    assert (params.levels, params.receptive_field) == (levels, field)
    deeper = model_lib.ModelParams(**unnormalized, levels=levels + 1)
    assert deeper.receptive_field > window
    with pytest.raises(model_lib.ModelError, match=f"--levels {levels} or fewer"):
        deeper.for_window(window)


def test_a_kernel_too_wide_for_one_level_is_refused():
    with pytest.raises(model_lib.ModelError, match="receptive field of 79 rows, more than the window of 64 "
                                                   "rows: use a smaller --kernel-size"):
        model_lib.ModelParams(kind=model_lib.TCN, kernel_size=40, normalize=model_lib.NORM_NONE).for_window(64)


def test_the_lstm_is_unchanged_by_the_window():
    params = model_lib.ModelParams(kind=model_lib.LSTM, normalize=model_lib.NORM_NONE)
    assert params.for_window(W) == params and params.receptive_field is None
    assert model_lib.step_network(model_lib.build_model(W, F, params)) is None


@pytest.mark.parametrize("kwargs", [{}, {"kernel_size": 4, "levels": 2}])
def test_each_step_depends_on_exactly_the_receptive_field(kwargs):
    """Perturbing row t-R+1 moves output step t; perturbing every row up to t-R does not, and
    neither does any later row (causal)."""
    net, params = _tcn(**kwargs)
    per_step = model_lib.step_network(net)
    field = params.receptive_field
    rows = np.random.default_rng(0).normal(size=(1, 3 * W, F)).astype(np.float32)
    base = per_step(rows, training=False).numpy()[0]
    for t in (field - 1, field + 20, 3 * W - 1):
        first = rows.copy()
        first[0, t - field + 1] += 5.0
        assert np.abs(per_step(first, training=False).numpy()[0, t] - base[t]).max() > 1e-4, t
        outside = rows.copy()
        outside[0, :t - field + 1] = 7.0
        outside[0, t + 1:] = -7.0
        np.testing.assert_allclose(per_step(outside, training=False).numpy()[0, t], base[t], atol=1e-6)


def test_one_pass_equals_the_classifier_on_every_window():
    net, _ = _tcn()
    per_step = model_lib.step_network(net)
    rows = np.random.default_rng(1).normal(size=(2, 300, F)).astype(np.float32)
    one_pass = per_step(rows, training=False).numpy()
    assert one_pass.shape == (2, 300, 4)
    for b in range(2):
        windowed = net(_windows(rows[b], W), training=False).numpy()
        np.testing.assert_allclose(one_pass[b, W - 1:], windowed, atol=1e-5)
        assert windowed.std(axis=0).max() > 1e-3  # outputs vary: the check has teeth
    np.testing.assert_allclose(one_pass.sum(axis=-1), 1.0, atol=1e-5)


def test_an_empty_batch_passes_through_the_tcn():
    """TensorFlow's convolutions fail on an empty batch; a multi-worker step can give a worker
    one at the end of its part, and a serving call may send one."""
    net, _ = _tcn()
    assert net(np.zeros((0, W, F), np.float32), training=False).shape == (0, 4)
    assert model_lib.step_network(net)(np.zeros((0, 9, F), np.float32)).shape == (0, 9, 4)
    net.train_on_batch(np.zeros((0, W, F), np.float32), np.zeros(0, np.int64),
                       sample_weight=np.zeros(0, np.float32))
    copy = model_lib.plain_copy(net)
    assert copy(np.zeros((0, W, F), np.float32)).shape == (0, 4)


def test_a_plain_copy_keeps_the_step_network_and_weights():
    net, _ = _tcn()
    copy = model_lib.plain_copy(net)
    rows = np.random.default_rng(2).normal(size=(1, 100, F)).astype(np.float32)
    np.testing.assert_array_equal(model_lib.step_network(copy)(rows).numpy(),
                                  model_lib.step_network(net)(rows).numpy())


@pytest.mark.parametrize("kwargs", [{"kind": "gru"}, {"kind": model_lib.TCN, "kernel_size": 1},
                                    {"kind": model_lib.TCN, "levels": 0}, {"filters": 0}])
def test_bad_settings(kwargs):
    with pytest.raises(ValueError):
        model_lib.ModelParams(**kwargs)


def _rolling_reference(rows, window, scale, epsilon=model_lib.NORM_EPSILON):
    """numpy, row by row in float64: each step minus the mean of the (at most) `window` rows ending
    there, divided by sqrt(their population variance + epsilon) when `scale`."""
    out = np.empty(rows.shape, np.float64)
    for t in range(rows.shape[1]):
        past = rows[:, max(0, t - window + 1):t + 1].astype(np.float64)
        out[:, t] = rows[:, t] - past.mean(axis=1)
        if scale:
            out[:, t] /= np.sqrt(past.var(axis=1) + epsilon)
    return out


@pytest.mark.parametrize("scale", [True, False])
def test_rolling_normalization_against_numpy(scale):
    """Per feature, causal, count-normalized before step L-1; offsets and gains of a feature do
    not survive the z-score (what makes a new person's levels harmless)."""
    rng = np.random.default_rng(3)
    rows = (rng.normal(size=(2, 90, F)) * [1.0, 0.05, 3.0] + [0.0, 2.0, -4.0]).astype(np.float32)
    layer = model_lib.RollingNormalization(16, scale=scale)
    got = layer(rows).numpy()
    np.testing.assert_allclose(got, _rolling_reference(rows, 16, scale), atol=1e-5, rtol=1e-5)
    # a person's level (an offset per feature) is gone either way
    np.testing.assert_allclose(layer(rows + [[[40.0, -9.0, 5.0]]]).numpy(), got, atol=1e-4)
    if scale:  # and a gain too, up to epsilon's share of the variance (small next to these)
        gain = np.float32([[[8.0, 20.0, 0.5]]])
        np.testing.assert_allclose(layer(rows * gain).numpy()[..., [0, 2]], got[..., [0, 2]], atol=1e-3)


@pytest.mark.parametrize("normalize", [model_lib.NORM_CENTER, model_lib.NORM_ZSCORE])
def test_the_normalization_counts_in_the_receptive_field(normalize):
    params = model_lib.ModelParams(kind=model_lib.TCN, normalize=normalize, norm_rows=20).for_window(W)
    assert (params.levels, params.receptive_field) == (3, 20 + 28)  # 4 levels: 20 + 60 > 64
    assert model_lib.ModelParams(kind=model_lib.TCN, normalize=normalize).for_window(W).norm_rows == W // 2
    with pytest.raises(model_lib.ModelError, match="--norm-rows 20 has a receptive field of 80 rows, "
                                                   "more than the window of 64 rows: use --levels 3"):
        model_lib.ModelParams(kind=model_lib.TCN, normalize=normalize, norm_rows=20, levels=4).for_window(W)
    with pytest.raises(model_lib.ModelError, match="--norm-rows 65 rows, more than the window of 64"):
        model_lib.ModelParams(normalize=normalize, norm_rows=65).for_window(W)


@pytest.mark.parametrize("normalize", [model_lib.NORM_CENTER, model_lib.NORM_ZSCORE])
def test_one_pass_equals_the_windows_with_the_normalization(normalize):
    """Rows with large offsets per feature (a person's levels): the rolling statistics of step t
    in one pass are those of the window ending at t, so the outputs match to 1e-5."""
    model_lib.set_seed(7)
    params = model_lib.ModelParams(kind=model_lib.TCN, filters=8, normalize=normalize, norm_rows=24)
    net = model_lib.build_model(W, F, params)
    per_step = model_lib.step_network(net)
    assert params.for_window(W).receptive_field == 24 + 28 <= W
    rows = (np.random.default_rng(4).normal(size=(2, 260, F)) * [1, 3, 0.2] + [5, -20, 1]).astype(np.float32)
    one_pass = per_step(rows, training=False).numpy()
    for b in range(2):
        windowed = net(_windows(rows[b], W), training=False).numpy()
        np.testing.assert_allclose(one_pass[b, W - 1:], windowed, atol=1e-5)
        assert windowed.std(axis=0).max() > 1e-3
    copy = model_lib.plain_copy(net)  # the layer survives cloning (what a strategy's export uses)
    np.testing.assert_allclose(model_lib.step_network(copy)(rows).numpy(), one_pass, atol=1e-6)


def test_an_lstm_normalizes_its_window():
    """The lstm's output is unchanged by an offset and gain per feature of the whole window."""
    model_lib.set_seed(7)
    net = model_lib.build_model(W, F, model_lib.ModelParams(kind=model_lib.LSTM, units=8,
                                                            normalize=model_lib.NORM_ZSCORE))
    rows = np.random.default_rng(5).normal(size=(4, W, F)).astype(np.float32)
    np.testing.assert_allclose(net(rows * 50.0 - 30.0).numpy(), net(rows).numpy(), atol=1e-3)


def test_random_gain_scales_each_samples_features_in_training_only():
    """Training: out / in is one gain per (sample, feature), the same at every step, within
    [1/G, G], its log spread over that range (uniform: mean 0, variance (ln G)^2 / 3); otherwise
    the input comes back unchanged, bit for bit."""
    rows = np.random.default_rng(8).normal(size=(4000, 5, F)).astype(np.float32) + 3.0
    layer = model_lib.RandomGain(2.0)
    np.testing.assert_array_equal(layer(rows, training=False).numpy(), rows)
    np.testing.assert_array_equal(layer(rows).numpy(), rows)  # outside fit: not training
    gains = layer(rows, training=True).numpy() / rows
    np.testing.assert_allclose(gains, gains[:, :1, :].repeat(5, axis=1), rtol=1e-5)
    logs = np.log(gains[:, 0, :])
    assert np.abs(logs).max() <= np.log(2.0) + 1e-6
    assert abs(logs.mean()) < 0.02 and abs(logs.var() - np.log(2.0) ** 2 / 3) < 0.01
    assert np.abs(np.corrcoef(logs.T) - np.eye(F)).max() < 0.1  # features drawn independently


@pytest.mark.parametrize("kind", [model_lib.TCN, model_lib.LSTM])
def test_the_augmentation_changes_training_only(kind):
    """A model trained with --augment-gain computes, outside training, what the same weights
    compute without it; in training (no dropout here) only the gains make them differ; the tcn's
    one pass still equals its windows."""
    model_lib.set_seed(7)
    params = model_lib.ModelParams(kind=kind, filters=8, units=8, dropout=0.0, normalize=model_lib.NORM_CENTER,
                                   norm_rows=16, augment_gain=1.0)  # no dropout: in training only the gains differ
    augmented = model_lib.build_model(W, F, model_lib.ModelParams(**{**params.__dict__, "augment_gain": 3.0}))
    plain = model_lib.build_model(W, F, params)
    plain.set_weights(augmented.get_weights())  # RandomGain has no weights: the same lists
    rows = (np.random.default_rng(9).normal(size=(3, 200, F)) * [1, 3, 0.2] + [5, -20, 1]).astype(np.float32)
    windows = _windows(rows[0], W)
    np.testing.assert_array_equal(augmented.predict(windows, verbose=0), plain.predict(windows, verbose=0))
    labels = np.zeros(len(windows), np.int64)
    assert augmented.test_on_batch(windows, labels) == plain.test_on_batch(windows, labels)
    np.testing.assert_allclose(plain(windows, training=True).numpy(), plain.predict(windows, verbose=0), atol=1e-6)
    assert np.abs(augmented(windows, training=True).numpy() - plain.predict(windows, verbose=0)).max() > 1e-3
    if kind == model_lib.TCN:
        one_pass = model_lib.step_network(augmented)(rows).numpy()
        for b in range(3):
            np.testing.assert_allclose(one_pass[b, W - 1:], augmented(_windows(rows[b], W)).numpy(), atol=1e-5)
        copy = model_lib.plain_copy(augmented)  # the layer survives cloning (a strategy's export)
        np.testing.assert_array_equal(copy.predict(windows, verbose=0), plain.predict(windows, verbose=0))


def test_a_gain_below_one_is_refused():
    with pytest.raises(ValueError, match="augment_gain must be >= 1"):
        model_lib.ModelParams(augment_gain=0.5)
