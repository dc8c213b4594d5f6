import numpy as np
import pytest
import tensorflow as tf

from tfrecords_schema import (LABEL_VOCABULARY, encode_windows, feature_spec, label_index, layout,
                              parse_examples, raw_signals_spec, raw_window_spec)


def test_feature_spec_golden():
    # The record contract of docs/DESIGN.md, spelled out once more on purpose: changing it must be a
    # deliberate act that breaks this test.
    assert feature_spec(256, 23) == {
        "window": tf.io.FixedLenFeature([256 * 23], tf.float32),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "crew": tf.io.FixedLenFeature([], tf.int64),
        "seat": tf.io.FixedLenFeature([], tf.int64),
        "experiment": tf.io.FixedLenFeature([], tf.string),
        "end_time": tf.io.FixedLenFeature([], tf.float32),
    }
    assert LABEL_VOCABULARY == ("A", "B", "C", "D")


def test_raw_specs_golden():
    """The tf.Transform graph's raw input (OUT/metadata) and the serving model's raw tf.Example,
    spelled out; tf.Transform's own name for the raw metadata folder is layout's."""
    import tensorflow_transform as tft

    assert raw_signals_spec(23) == {"signals": tf.io.FixedLenFeature([23], tf.float32)}
    assert raw_window_spec(256, 23) == {"window": tf.io.FixedLenFeature([256 * 23], tf.float32)}
    assert layout.RAW_METADATA_DIR == tft.TFTransformOutput.RAW_METADATA_DIR
    assert layout.TRANSFORM_DIRS == (tft.TFTransformOutput.TRANSFORM_FN_DIR,
                                     tft.TFTransformOutput.TRANSFORMED_METADATA_DIR,
                                     tft.TFTransformOutput.RAW_METADATA_DIR)


def test_encode_then_parse_round_trip():
    rng = np.random.default_rng(1)
    windows = rng.normal(size=(5, 7, 3)).astype(np.float32)
    labels = [0, 3, 2, 1, 3]
    end_times = [0.5, 1.0, 109.98828125, 11.0, 2.25]
    records = encode_windows(windows, labels, crew=13, seat=1, experiment="LOFT", end_times=end_times)
    assert len(records) == 5
    parsed = parse_examples(tf.constant(records), window=7, num_features=3)
    np.testing.assert_array_equal(parsed["window"].numpy(), windows)
    np.testing.assert_array_equal(parsed["label"].numpy(), labels)
    np.testing.assert_array_equal(parsed["crew"].numpy(), [13] * 5)
    np.testing.assert_array_equal(parsed["seat"].numpy(), [1] * 5)
    assert list(parsed["experiment"].numpy()) == [b"LOFT"] * 5
    np.testing.assert_array_equal(parsed["end_time"].numpy(), np.float32(end_times))


def test_encoded_record_is_a_plain_tf_example_time_major():
    # Read with nothing but protobuf: row 0's F features come first, then row 1's.
    windows = np.arange(2 * 3, dtype=np.float32).reshape(1, 2, 3)
    example = tf.train.Example.FromString(encode_windows(windows, [2], 1, 0, "CA", [3.0])[0])
    feature = example.features.feature
    assert list(feature["window"].float_list.value) == [0, 1, 2, 3, 4, 5]
    assert list(feature["label"].int64_list.value) == [2]
    assert list(feature["experiment"].bytes_list.value) == [b"CA"]
    assert list(feature["end_time"].float_list.value) == [3.0]
    assert sorted(feature.keys()) == sorted(["window", "label", "crew", "seat", "experiment", "end_time"])


def test_encode_rejects_bad_input():
    with pytest.raises(ValueError):
        encode_windows(np.zeros((2, 3)), [0, 1], 1, 0, "CA", [0.0, 1.0])
    with pytest.raises(ValueError):
        encode_windows(np.zeros((1, 2, 3)), [4], 1, 0, "CA", [0.0])
    assert encode_windows(np.zeros((0, 2, 3)), [], 1, 0, "CA", []) == []


def test_label_index():
    assert [label_index(c) for c in "ABCD"] == [0, 1, 2, 3]
    for bad in ("a", "E", ""):
        with pytest.raises(ValueError):
            label_index(bad)


def test_shard_names():
    assert layout.shard_path("train", 3, 16) == "train/part-00003-of-00016.tfrecord"
    assert layout.shard_path("eval", 0, 1, "GZIP") == "eval/part-00000-of-00001.tfrecord.gz"
    with pytest.raises(ValueError):
        layout.shard_name(4, 4)
    with pytest.raises(ValueError):
        layout.shard_path("test", 0, 1)


def test_encoding_is_byte_identical_across_processes():
    # The compiled encoder's map order depends on a per-process hash seed; ours must not.
    import subprocess
    import sys

    code = ("import numpy as np, hashlib; from tfrecords_schema import encode_windows; "
            "w = np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3); "
            "print(hashlib.sha256(b''.join(encode_windows(w, [1, 2], 3, 1, 'DA', [1.5, 2.5]))).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
               for _ in range(3)}
    assert len(digests) == 1
