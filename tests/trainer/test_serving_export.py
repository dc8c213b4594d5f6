"""trainer.export: MODEL/serving takes RAW windows, scales them itself, needs no OUT at load time.

The `exported` fixture exports from a copy of OUT and deletes the copy before any test loads it.
"""

import collections
import os

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from scipy.special import softmax

from tfrecords_schema import serving as contract
from tfrecords_schema import CREW, END_TIME, EXPERIMENT, NUM_CLASSES, SEAT, WINDOW, csv_columns
from trainer import export


@pytest.fixture(scope="module")
def serving(exported):
    assert not os.path.exists(os.path.join(os.path.dirname(exported.model_dir), "out"))
    return contract.load(exported.model_dir)


def raw_windows_from_csv(csv_path, stats, rec):
    """The RAW windows of records `rec`, rebuilt from the CSV: each record's group sorted by time,
    the W rows ending at its end_time, features in stats.json order. float32 [N, W, F]."""
    df = pd.read_csv(csv_path)
    df = df.sort_values([csv_columns.CREW, csv_columns.SEAT, csv_columns.EXPERIMENT, csv_columns.TIME],
                        kind="stable")
    w = stats["window"]
    groups = {key: (g[csv_columns.TIME].to_numpy(np.float32), g[stats["features"]].to_numpy(np.float64))
              for key, g in df.groupby([csv_columns.CREW, csv_columns.SEAT, csv_columns.EXPERIMENT])}
    out = []
    for crew, seat, experiment, end in zip(rec[CREW], rec[SEAT], rec[EXPERIMENT], rec[END_TIME]):
        time, values = groups[(int(crew), int(seat), experiment.decode())]
        last = np.flatnonzero(time == end)
        assert len(last) == 1, (crew, seat, experiment, end)
        assert last[0] + 1 >= w
        out.append(values[last[0] + 1 - w:last[0] + 1])
    return np.stack(out).astype(np.float32)


def test_signature_contract(serving, stats):
    sig = serving.signatures[contract.SERVING_SIGNATURE]
    (inputs,) = sig.structured_input_signature[1].values()
    assert list(sig.structured_input_signature[1]) == [WINDOW]
    assert inputs.dtype == tf.float32 and inputs.shape.as_list() == [None, stats["window"], len(stats["features"])]
    assert list(sig.structured_outputs) == [contract.PROBABILITIES]
    assert sig.structured_outputs[contract.PROBABILITIES].shape.as_list() == [None, NUM_CLASSES]


def test_hermetic_raw_windows_give_the_keras_model_on_scaled_windows(
        exported, serving, stats, records, sample_dir):
    """OUT is gone; raw windows rebuilt from the CSV through serving_default equal the Keras model
    on the scaled windows the TFRecords hold."""
    rec = records("eval")
    raw = raw_windows_from_csv(sample_dir / "train.csv", stats, rec)
    assert not np.allclose(raw, rec[WINDOW], atol=0.1)  # the CSV values really are unscaled

    served = serving.signatures[contract.SERVING_SIGNATURE](**{WINDOW: tf.constant(raw)})[contract.PROBABILITIES]
    expected = exported.model.predict(rec[WINDOW], batch_size=256, verbose=0)
    np.testing.assert_allclose(served.numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(served.numpy().sum(axis=1), 1.0, atol=1e-5)
    assert expected.std(axis=0).max() > 0.01  # a model whose outputs vary: the check has teeth


def raw_window_examples(raw):
    """Serialized tf.train.Example of raw windows [N, W, F], built by hand: `window` W*F floats,
    time-major, and a `label` feature a serving client may leave in (ignored)."""
    return [tf.train.Example(features=tf.train.Features(feature={
        "window": tf.train.Feature(float_list=tf.train.FloatList(value=w.reshape(-1))),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[3]))})).SerializeToString()
        for w in raw]


def test_hermetic_serving_examples_equal_serving_default(serving, tcn_serving, stats, records, sample_dir):
    """OUT is gone; TFX's input (serialized tf.Examples of raw windows, a 1-D string tensor
    `examples`) gives serving_default's probabilities on the same windows, for both models."""
    rec = records("eval")
    raw = raw_windows_from_csv(sample_dir / "train.csv", stats, rec)[:200]
    examples = tf.constant(raw_window_examples(raw))
    for model in (serving, tcn_serving):
        sig = model.signatures[contract.EXAMPLES_SIGNATURE]
        (spec,) = sig.structured_input_signature[1].values()
        assert list(sig.structured_input_signature[1]) == [contract.EXAMPLES_INPUT]
        assert spec.dtype == tf.string and spec.shape.as_list() == [None]
        got = sig(**{contract.EXAMPLES_INPUT: examples})[contract.PROBABILITIES].numpy()
        expected = model.signatures[contract.SERVING_SIGNATURE](**{WINDOW: tf.constant(raw)})[contract.PROBABILITIES]
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-6, rtol=0)
        assert expected.numpy().std(axis=0).max() > 1e-3  # outputs vary between windows: the check has teeth
        empty = sig(**{contract.EXAMPLES_INPUT: tf.constant([], tf.string)})
        assert empty[contract.PROBABILITIES].shape == (0, NUM_CLASSES)


def test_scaled_signature_is_the_keras_model(exported, serving, records):
    rec = records("train")
    x = rec[WINDOW][:300]
    got = serving.signatures[contract.SCALED_SIGNATURE](**{WINDOW: tf.constant(x)})[contract.PROBABILITIES]
    np.testing.assert_allclose(got.numpy(), exported.model(x, training=False).numpy(), atol=1e-6)


def test_any_batch_size(serving, tcn_serving, stats):
    for model in (serving, tcn_serving):
        sig = model.signatures[contract.SERVING_SIGNATURE]
        for n in (0, 1, 7):
            x = tf.zeros([n, stats["window"], len(stats["features"])])
            assert sig(**{WINDOW: x})[contract.PROBABILITIES].shape == (n, NUM_CLASSES)


def test_export_replaces_a_previous_export(tmp_path, exported, prep_dir):
    """Exporting into a MODEL with an old serving/ leaves only the new one, no staging folder."""
    old = tmp_path / contract.SERVING_DIR
    old.mkdir()
    (old / "stale.txt").write_text("from an older export")
    export.export_serving(exported.model, prep_dir, str(tmp_path), params=exported.params)
    assert sorted(os.listdir(tmp_path)) == [contract.SERVING_DIR]
    assert not (old / "stale.txt").exists()
    assert contract.load(str(tmp_path)).signatures[contract.SERVING_SIGNATURE] is not None


def test_serving_config_tells_a_consumer_what_to_feed_without_out(exported, stats):
    """MODEL/serving/assets.extra/crewstream.json: W, the features in stats.json order and the
    order of the probability columns, readable after OUT is gone."""
    assert not os.path.exists(os.path.join(os.path.dirname(exported.model_dir), "out"))
    config = contract.read_config(exported.model_dir)
    assert config == {"window": stats["window"], "features": stats["features"],
                      "label_vocabulary": stats["label_vocabulary"], "model": "lstm",
                      "receptive_field": stats["window"],
                      "signatures": [contract.SCALED_SIGNATURE, contract.SERVING_SIGNATURE,
                                     contract.EXAMPLES_SIGNATURE],
                      "normalize": "none", "norm_rows": None, "temperature": 1.0}
    assert contract.SEQUENCE_SIGNATURE not in contract.load(exported.model_dir).signatures
    sig = contract.load(exported.model_dir).signatures[contract.SERVING_SIGNATURE]
    shape = sig.structured_input_signature[1][WINDOW].shape.as_list()
    assert shape == [None, config["window"], len(config["features"])]


# --- the tcn's `sequence` signature ------------------------------------------------------------

@pytest.fixture(scope="module")
def tcn_serving(exported_tcn):
    assert not os.path.exists(os.path.join(os.path.dirname(exported_tcn.model_dir), "out"))
    return contract.load(exported_tcn.model_dir)


def test_tcn_config_lists_its_signatures_and_receptive_field(exported_tcn, tcn_serving, stats):
    config = contract.read_config(exported_tcn.model_dir)
    assert config == {"window": stats["window"], "features": stats["features"],
                      "label_vocabulary": stats["label_vocabulary"], "model": "tcn",
                      "receptive_field": 52, "signatures": sorted(tcn_serving.signatures),
                      "normalize": "zscore", "norm_rows": 24, "temperature": 1.0}
    assert sorted(tcn_serving.signatures) == [contract.SCALED_SIGNATURE, contract.SEQUENCE_SIGNATURE,
                                              contract.SERVING_SIGNATURE, contract.EXAMPLES_SIGNATURE]
    sig = tcn_serving.signatures[contract.SEQUENCE_SIGNATURE]
    (inputs,) = sig.structured_input_signature[1].values()
    assert list(sig.structured_input_signature[1]) == [contract.SEQUENCE_INPUT]
    assert inputs.dtype == tf.float32 and inputs.shape.as_list() == [None, None, len(stats["features"])]
    assert sig.structured_outputs[contract.PROBABILITIES].shape.as_list() == [None, None, NUM_CLASSES]


def _raw_rows(csv_path, stats, length):
    """float32 [2, length, F]: the first `length` rows in time order of two groups of the CSV,
    RAW, plus noise on the second (so it is not a recording the model was trained on)."""
    df = pd.read_csv(csv_path)
    groups = [g.sort_values(csv_columns.TIME, kind="stable")[stats["features"]].to_numpy(np.float32)[:length]
              for _, g in df.groupby([csv_columns.CREW, csv_columns.SEAT, csv_columns.EXPERIMENT])]
    rows = np.stack(groups[:2])
    rng = np.random.default_rng(3)
    rows[1] += rng.normal(size=rows[1].shape).astype(np.float32) * rows[1].std(axis=0)
    return rows


@pytest.mark.parametrize("model", ["tcn_serving", "tempered_tcn_serving"])
def test_hermetic_sequence_step_t_is_serving_default_on_the_window_ending_at_t(
        model, request, stats, sample_dir):
    """OUT is gone; raw rows through `sequence` equal raw windows through serving_default, also
    with a temperature (the same map at every step)."""
    served = request.getfixturevalue(model)
    w = stats["window"]
    rows = _raw_rows(sample_dir / "train.csv", stats, 400)
    sequence = served.signatures[contract.SEQUENCE_SIGNATURE]
    windows = served.signatures[contract.SERVING_SIGNATURE]
    one_pass = sequence(**{contract.SEQUENCE_INPUT: tf.constant(rows)})[contract.PROBABILITIES].numpy()
    assert one_pass.shape == (2, 400, NUM_CLASSES)
    for b in range(2):
        cut = np.stack([rows[b, t - w + 1:t + 1] for t in range(w - 1, 400)])
        expected = windows(**{WINDOW: tf.constant(cut)})[contract.PROBABILITIES].numpy()
        np.testing.assert_allclose(one_pass[b, w - 1:], expected, atol=1e-5)
        assert expected.std(axis=0).max() > 1e-3  # outputs vary between windows: the check has teeth


def test_a_persons_levels_do_not_move_the_normalized_tcn(tcn_serving, exported, stats, sample_dir):
    """The serving model z-scores its input over the last norm_rows rows (after the global
    scaling): raw rows shifted by a constant per feature, as another person's levels would be,
    give the same probabilities at every step; scaled by a gain g too, the same up to the
    variance's epsilon, whose share a gain divides by g^2 (the global scaling is affine, so the
    normalized value is (x - m) / sqrt(v + eps / g^2)): two gains agree once the rolling variance
    is of norm_rows rows. The same shift moves the unnormalized lstm (the check has teeth)."""
    w = stats["window"]
    rows = _raw_rows(sample_dir / "train.csv", stats, 200)
    sequence = tcn_serving.signatures[contract.SEQUENCE_SIGNATURE]
    run = lambda x: sequence(**{contract.SEQUENCE_INPUT: tf.constant(x)})[contract.PROBABILITIES].numpy()  # noqa: E731
    base = run(rows)
    spread = rows.std(axis=(0, 1))
    offset = (np.random.default_rng(5).uniform(1, 2, spread.shape) * spread).astype(np.float32)
    np.testing.assert_allclose(run(rows + offset), base, atol=1e-4)
    # from step norm_rows - 1 on, when the variance is of 24 rows (of 1 or 2 it is epsilon's);
    # gains 8 and 64 leave eps/64 and eps/4096: 1.6e-4 apart here, where gains 1 and 3 were
    # 0.009 apart (0.0101 on one CI run: a window whose scaled variance is a few eps)
    gained = [run(rows * np.float32(g) + offset)[:, 23:] for g in (8.0, 64.0)]
    np.testing.assert_allclose(gained[0], gained[1], atol=1e-3)
    lstm = contract.load(exported.model_dir).signatures[contract.SERVING_SIGNATURE]
    windows = lambda x: lstm(**{WINDOW: tf.constant(x[:, -w:])})[contract.PROBABILITIES].numpy()  # noqa: E731
    assert np.abs(windows(rows + offset) - windows(rows)).max() > 1e-2


def test_sequence_takes_any_length(tcn_serving, stats):
    sig = tcn_serving.signatures[contract.SEQUENCE_SIGNATURE]
    for batch, length in ((1, 1), (3, 5), (0, 7), (2, 1000)):
        rows = tf.random.normal([batch, length, len(stats["features"])], seed=2)
        out = sig(**{contract.SEQUENCE_INPUT: rows})[contract.PROBABILITIES].numpy()
        assert out.shape == (batch, length, NUM_CLASSES)
        np.testing.assert_allclose(out.sum(axis=-1), 1.0, atol=1e-5)


def test_tcn_serving_default_is_the_keras_model(exported_tcn, tcn_serving, records):
    rec = records("eval")
    got = tcn_serving.signatures[contract.SCALED_SIGNATURE](**{WINDOW: tf.constant(rec[WINDOW][:300])})
    np.testing.assert_allclose(got[contract.PROBABILITIES].numpy(),
                               exported_tcn.model(rec[WINDOW][:300], training=False).numpy(), atol=1e-6)


def test_exporting_with_settings_of_another_model_is_refused(tmp_path, exported, prep_dir):
    from trainer import model as model_lib

    with pytest.raises(ValueError, match="is not a tcn"):
        export.export_serving(exported.model, prep_dir, str(tmp_path),
                              params=model_lib.ModelParams(kind=model_lib.TCN))


# --- calibration: the temperature as the serving model's last stage -----------------------------

TEMPERATURE = 1.7


@pytest.fixture(scope="module")
def tempered_tcn(tmp_path_factory, exported_tcn, prep_dir):
    """exported_tcn's network exported with temperature TEMPERATURE; OUT is not needed to load it."""
    model_dir = tmp_path_factory.mktemp("tempered_tcn") / "model"
    export.export_serving(exported_tcn.model, prep_dir, str(model_dir), params=exported_tcn.params,
                          temperature=TEMPERATURE)
    return str(model_dir)


@pytest.fixture(scope="module")
def tempered_tcn_serving(tempered_tcn):
    return contract.load(tempered_tcn)


def _tempered(p, temperature):
    """The reference: softmax(log max(p, tiny) / T) on the last axis, float64."""
    return softmax(np.log(np.maximum(p.astype(np.float64), np.finfo(np.float32).tiny)) / temperature, axis=-1)


def test_every_signature_serves_softmax_of_log_p_over_t(exported_tcn, tcn_serving, tempered_tcn_serving,
                                                         tempered_tcn, stats, records, sample_dir):
    """Each signature of the T export is softmax(log p / T) of the same signature of the T = 1
    export of the same network, on raw windows, scaled windows, examples and raw sequences."""
    rec = records("eval")
    raw = raw_windows_from_csv(sample_dir / "train.csv", stats, rec)[:300]
    inputs = {contract.SERVING_SIGNATURE: {WINDOW: tf.constant(raw)},
              contract.SCALED_SIGNATURE: {WINDOW: tf.constant(rec[WINDOW][:300])},
              contract.EXAMPLES_SIGNATURE: {contract.EXAMPLES_INPUT: tf.constant(raw_window_examples(raw[:50]))},
              contract.SEQUENCE_SIGNATURE: {contract.SEQUENCE_INPUT: tf.constant(
                  _raw_rows(sample_dir / "train.csv", stats, 200))}}
    assert sorted(inputs) == sorted(tempered_tcn_serving.signatures)
    for name, feed in inputs.items():
        plain = tcn_serving.signatures[name](**feed)[contract.PROBABILITIES].numpy()
        got = tempered_tcn_serving.signatures[name](**feed)[contract.PROBABILITIES].numpy()
        assert got.dtype == np.float32 and got.shape == plain.shape
        np.testing.assert_allclose(got, _tempered(plain, TEMPERATURE), atol=1e-5, rtol=0, err_msg=name)
        np.testing.assert_array_equal(got.argmax(axis=-1), plain.argmax(axis=-1))
        assert np.abs(got - plain).max() > 1e-2, name  # the temperature moves the outputs: the check has teeth
    assert contract.read_config(tempered_tcn) == {**contract.read_config(exported_tcn.model_dir),
                                                  "temperature": TEMPERATURE}


def _op_counts(model_dir):
    """{op type: nodes} over MODEL/serving's graph and its function library (Consts left out)."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(model_dir, contract.SERVING_DIR, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    counts = collections.Counter()
    for graph in proto.meta_graphs:
        counts.update(node.op for node in graph.graph_def.node)
        for function in graph.graph_def.library.function:
            counts.update(node.op for node in function.node_def)
    del counts["Const"]
    return counts


def _object_graph(model_dir):
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(model_dir, contract.SERVING_DIR, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    (graph,) = proto.meta_graphs
    return graph.object_graph_def.nodes


@pytest.mark.parametrize("fixture", ["exported", "exported_tcn"])
def test_the_export_holds_the_networks_variables_not_their_keras_layers(request, fixture):
    """MODEL/serving is its signatures and the variables they read: every variable of the Keras
    network is saved (once), none of its layers is (a layer's saved functions and Keras metadata
    are what made loading slow), and the signatures still equal the network (tests above)."""
    exported = request.getfixturevalue(fixture)
    nodes = _object_graph(exported.model_dir)
    kinds = collections.Counter(node.user_object.identifier for node in nodes
                                if node.WhichOneof("kind") == "user_object")
    assert not {"_tf_keras_layer", "_tf_keras_network", "_tf_keras_input_layer"} & set(kinds), kinds
    saved = collections.Counter(node.variable.name for node in nodes if node.WhichOneof("kind") == "variable")
    network = collections.Counter(v.name.split(":")[0] for v in exported.model.variables)
    assert network and not network - saved  # every network variable, its name as Keras gave it
    assert max(saved.values()) == 1


def test_each_network_is_in_the_export_once(exported_tcn):
    """The window network's graph is saved once (`scaled`'s function, which serving_default and
    serving_examples call) and the per-step network's once (`sequence`): not again as the module's
    methods, nor inlined into every signature (8 copies of each conv before: loading rebuilds every
    function of the library in Python, so each copy cost every predict, evaluate and live run)."""
    import tf_keras

    convs = sum(isinstance(layer, tf_keras.layers.Conv1D) for layer in exported_tcn.model.submodules)
    ops = _op_counts(exported_tcn.model_dir)
    assert convs and ops["Conv2D"] == 2 * convs  # a Conv1D is a Conv2D op on expanded dims
    assert ops["Softmax"] == 2


def test_temperature_one_adds_nothing_to_the_graph(exported_tcn, tempered_tcn):
    """T = 1 (the default) exports the graph an export without calibration did: the T export's
    graph is the T = 1 graph plus the map's ops, once in each traced network's function (`scaled`,
    which the other window signatures call, and `sequence`)."""
    plain, tempered = _op_counts(exported_tcn.model_dir), _op_counts(tempered_tcn)
    assert not plain - tempered
    extra = tempered - plain
    assert set(extra) == {"Maximum", "Log", "RealDiv", "Softmax"}
    assert len(set(extra.values())) == 1, extra  # as many of each: one map per traced function


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_a_temperature_that_is_not_a_positive_number_is_refused(tmp_path, exported_tcn, prep_dir, bad):
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        export.export_serving(exported_tcn.model, prep_dir, str(tmp_path), params=exported_tcn.params,
                              temperature=bad)
    assert os.listdir(tmp_path) == []
