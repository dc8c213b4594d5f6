"""trainer.export: MODEL/serving takes RAW windows, scales them itself, needs no OUT at load time.

The `exported` fixture exports from a copy of OUT and deletes the copy before any test loads it.
"""

import os

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tfrecords_schema import CREW, END_TIME, EXPERIMENT, NUM_CLASSES, SEAT, WINDOW, csv_layout
from trainer import export


@pytest.fixture(scope="module")
def serving(exported):
    assert not os.path.exists(os.path.join(os.path.dirname(exported.model_dir), "out"))
    return export.load_serving(exported.model_dir)


def raw_windows_from_csv(csv_path, stats, rec):
    """The RAW windows of records `rec`, rebuilt from the CSV: each record's group sorted by time,
    the W rows ending at its end_time, features in stats.json order. float32 [N, W, F]."""
    df = pd.read_csv(csv_path)
    df = df.sort_values([csv_layout.CREW, csv_layout.SEAT, csv_layout.EXPERIMENT, csv_layout.TIME],
                        kind="stable")
    w = stats["window"]
    groups = {key: (g[csv_layout.TIME].to_numpy(np.float32), g[stats["features"]].to_numpy(np.float64))
              for key, g in df.groupby([csv_layout.CREW, csv_layout.SEAT, csv_layout.EXPERIMENT])}
    out = []
    for crew, seat, experiment, end in zip(rec[CREW], rec[SEAT], rec[EXPERIMENT], rec[END_TIME]):
        time, values = groups[(int(crew), int(seat), experiment.decode())]
        last = np.flatnonzero(time == end)
        assert len(last) == 1, (crew, seat, experiment, end)
        assert last[0] + 1 >= w
        out.append(values[last[0] + 1 - w:last[0] + 1])
    return np.stack(out).astype(np.float32)


def test_signature_contract(serving, stats):
    sig = serving.signatures[export.SERVING_SIGNATURE]
    (inputs,) = sig.structured_input_signature[1].values()
    assert list(sig.structured_input_signature[1]) == [WINDOW]
    assert inputs.dtype == tf.float32 and inputs.shape.as_list() == [None, stats["window"], len(stats["features"])]
    assert list(sig.structured_outputs) == [export.PROBABILITIES]
    assert sig.structured_outputs[export.PROBABILITIES].shape.as_list() == [None, NUM_CLASSES]


def test_hermetic_raw_windows_give_the_keras_model_on_scaled_windows(
        exported, serving, stats, records, sample_dir):
    """OUT is gone; raw windows rebuilt from the CSV through serving_default equal the Keras model
    on the scaled windows the TFRecords hold."""
    rec = records("eval")
    raw = raw_windows_from_csv(sample_dir / "train.csv", stats, rec)
    assert not np.allclose(raw, rec[WINDOW], atol=0.1)  # the CSV values really are unscaled

    served = serving.signatures[export.SERVING_SIGNATURE](**{WINDOW: tf.constant(raw)})[export.PROBABILITIES]
    expected = exported.model.predict(rec[WINDOW], batch_size=256, verbose=0)
    np.testing.assert_allclose(served.numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(served.numpy().sum(axis=1), 1.0, atol=1e-5)
    assert expected.std(axis=0).max() > 0.01  # a model whose outputs vary: the check has teeth


def test_scaled_signature_is_the_keras_model(exported, serving, records):
    rec = records("train")
    x = rec[WINDOW][:300]
    got = serving.signatures[export.SCALED_SIGNATURE](**{WINDOW: tf.constant(x)})[export.PROBABILITIES]
    np.testing.assert_allclose(got.numpy(), exported.model(x, training=False).numpy(), atol=1e-6)


def test_any_batch_size(serving, stats):
    sig = serving.signatures[export.SERVING_SIGNATURE]
    for n in (0, 1, 7):
        x = tf.zeros([n, stats["window"], len(stats["features"])])
        assert sig(**{WINDOW: x})[export.PROBABILITIES].shape == (n, NUM_CLASSES)


def test_export_replaces_a_previous_export(tmp_path, exported, prep_dir):
    """Exporting into a MODEL with an old serving/ leaves only the new one, no staging folder."""
    old = tmp_path / export.SERVING_DIR
    old.mkdir()
    (old / "stale.txt").write_text("from an older export")
    export.export_serving(exported.model, prep_dir, str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == [export.SERVING_DIR]
    assert not (old / "stale.txt").exists()
    assert export.load_serving(str(tmp_path)).signatures[export.SERVING_SIGNATURE] is not None


def test_serving_config_tells_a_consumer_what_to_feed_without_out(exported, stats):
    """MODEL/serving/assets.extra/crewstream.json: W, the features in stats.json order and the
    order of the probability columns, readable after OUT is gone."""
    assert not os.path.exists(os.path.join(os.path.dirname(exported.model_dir), "out"))
    config = export.read_serving_config(exported.model_dir)
    assert config == {"window": stats["window"], "features": stats["features"],
                      "label_vocabulary": stats["label_vocabulary"]}
    sig = export.load_serving(exported.model_dir).signatures[export.SERVING_SIGNATURE]
    shape = sig.structured_input_signature[1][WINDOW].shape.as_list()
    assert shape == [None, config["window"], len(config["features"])]


def test_a_serving_model_without_its_config_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="export it again"):
        export.read_serving_config(str(tmp_path))
