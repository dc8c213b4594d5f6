import numpy as np
import pytest
import tensorflow as tf

from tfrecords_schema import (LABEL_VOCABULARY, encode_windows, feature_spec, label_index, output_folder,
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
    assert output_folder.RAW_METADATA_DIR == tft.TFTransformOutput.RAW_METADATA_DIR
    assert output_folder.TRANSFORM_DIRS == (tft.TFTransformOutput.TRANSFORM_FN_DIR,
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
    assert output_folder.shard_path("train", 3, 16) == "train/part-00003-of-00016.tfrecord"
    assert output_folder.shard_path("eval", 0, 1, "GZIP") == "eval/part-00000-of-00001.tfrecord.gz"
    with pytest.raises(ValueError):
        output_folder.shard_name(4, 4)
    with pytest.raises(ValueError):
        output_folder.shard_path("test", 0, 1)


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


def test_sequence_feature_spec_golden():
    from tfrecords_schema.record import SEQUENCE_KEYS, sequence_feature_spec

    assert sequence_feature_spec() == {
        "rows": tf.io.RaggedFeature(tf.float32),
        "context": tf.io.FixedLenFeature([], tf.int64),
        "position": tf.io.FixedLenFeature([], tf.int64),
        "labels": tf.io.RaggedFeature(tf.int64),
        "crew": tf.io.FixedLenFeature([], tf.int64),
        "seat": tf.io.FixedLenFeature([], tf.int64),
        "experiment": tf.io.FixedLenFeature([], tf.string),
        "first_time": tf.io.FixedLenFeature([], tf.float32),
        "last_time": tf.io.FixedLenFeature([], tf.float32),
    }
    assert SEQUENCE_KEYS == tuple(sequence_feature_spec())


def test_chunks_encode_then_parse_round_trip():
    from tfrecords_schema.record import encode_chunks, parse_chunks

    rng = np.random.default_rng(2)
    contexts, sizes, positions = [0, 3, 2], [5, 1, 4], [0, 5, 100]
    rows = [rng.normal(size=(k + c, 3)).astype(np.float32) for k, c in zip(contexts, sizes)]
    labels = [rng.integers(0, 4, size=c) for c in sizes]
    first, last = [0.25, 1.5, 109.98828125], [1.0, 1.5, 111.0]
    records = encode_chunks(rows, contexts, positions, labels, crew=5, seat=1, experiment="DA",
                            first_times=first, last_times=last)
    assert len(records) == 3
    assert encode_chunks(rows, contexts, positions, labels, 5, 1, "DA", first, last) == records
    parsed = parse_chunks(tf.constant(records), num_features=3)
    for i in range(3):
        np.testing.assert_array_equal(parsed["rows"][i].numpy(), rows[i])
        np.testing.assert_array_equal(parsed["labels"][i].numpy(), labels[i])
    np.testing.assert_array_equal(parsed["context"].numpy(), contexts)
    np.testing.assert_array_equal(parsed["position"].numpy(), positions)
    np.testing.assert_array_equal(parsed["crew"].numpy(), [5] * 3)
    np.testing.assert_array_equal(parsed["seat"].numpy(), [1] * 3)
    assert list(parsed["experiment"].numpy()) == [b"DA"] * 3
    np.testing.assert_array_equal(parsed["first_time"].numpy(), np.float32(first))
    np.testing.assert_array_equal(parsed["last_time"].numpy(), np.float32(last))
    # read with nothing but protobuf: context rows first, time-major
    feature = tf.train.Example.FromString(records[1]).features.feature
    assert list(feature["rows"].float_list.value) == rows[1].reshape(-1).tolist()
    assert list(feature["labels"].int64_list.value) == labels[1].tolist()


def test_encode_chunks_rejects_bad_input():
    from tfrecords_schema.record import encode_chunks

    good = dict(contexts=[1], positions=[4], crew=1, seat=0, experiment="CA", first_times=[0.0], last_times=[1.0])
    assert encode_chunks([], [], [], [], 1, 0, "CA", [], []) == []
    for rows, labels, message in [
        (np.zeros((3, 2)), [np.zeros(3, int)], "context"),  # k + c != rows
        (np.zeros((2, 2)), [np.zeros(0, int)], "context"),  # c = 0: no label... and k + c != rows
        (np.zeros((1, 2)), [np.zeros(0, int)], "at least one label"),
        (np.zeros((3, 2)), [np.array([0, 4])], "label indices"),
    ]:
        with pytest.raises(ValueError, match=message):
            encode_chunks([rows], labels=labels, **good)
    with pytest.raises(ValueError, match="positions has 2 entries"):
        encode_chunks([np.zeros((2, 2))], [1], [0, 1], [np.zeros(1, int)], 1, 0, "CA", [0.0], [0.0])


def _protobuf_example(window, label, crew, seat, experiment, end_time):
    """The same record built field by field with protobuf (the independent reference)."""
    feature = tf.train.Feature
    return tf.train.Example(features=tf.train.Features(feature={
        "window": feature(float_list=tf.train.FloatList(value=window.reshape(-1))),
        "label": feature(int64_list=tf.train.Int64List(value=[label])),
        "crew": feature(int64_list=tf.train.Int64List(value=[crew])),
        "seat": feature(int64_list=tf.train.Int64List(value=[seat])),
        "experiment": feature(bytes_list=tf.train.BytesList(value=[experiment.encode()])),
        "end_time": feature(float_list=tf.train.FloatList(value=[end_time])),
    })).SerializeToString(deterministic=True)


@pytest.mark.parametrize("shape, crew, seat, experiment", [
    ((6, 256, 23), 13, 1, "LOFT"),  # the real layout: the window's length is a 3-byte varint
    ((3, 1, 1), 0, 0, ""),  # one value, an empty experiment
    ((2, 4, 3), 300, -1, "DA"),  # a crew above one varint byte, a negative seat (10-byte varint)
    ((2, 5, 2), 2 ** 40, 7, "é-CA"),  # a large crew, a non-ASCII experiment
    ((2, 3, 2), np.int64(5), np.int64(-2), "SS"),  # numpy integers, as a recording's key may hold
])
def test_encoded_bytes_are_protobufs_deterministic_serialization(shape, crew, seat, experiment):
    """encode_windows lays the records out itself: every byte must be what protobuf writes for the
    same Example (deterministic: map keys sorted), whatever the values (NaN, -0.0, inf included)."""
    rng = np.random.default_rng(sum(shape))
    windows = rng.normal(size=shape).astype(np.float32) * 1e3
    flat = windows.reshape(-1)
    flat[:3] = [np.nan, -0.0, np.inf]
    labels = rng.integers(0, 4, shape[0])
    end_times = rng.random(shape[0]).astype(np.float32) * 1e4
    end_times[0] = -0.0
    records = encode_windows(windows, labels, crew, seat, experiment, end_times)
    expected = [_protobuf_example(w, int(lab), int(crew), int(seat), experiment, float(t))
                for w, lab, t in zip(windows, labels, end_times)]
    assert records == expected
    parsed = tf.train.Example.FromString(records[-1]).features.feature
    np.testing.assert_array_equal(np.array(parsed["window"].float_list.value, np.float32), windows[-1].reshape(-1))


def test_float64_windows_are_stored_as_float32_as_protobuf_would():
    windows = np.array([[[0.1, 1 / 3], [2.5e-8, 1e30]]])
    (record,) = encode_windows(windows, [1], 2, 0, "SS", [109.98828125])
    assert record == _protobuf_example(windows.astype(np.float32), 1, 2, 0, "SS", 109.98828125)


def test_windows_of_any_memory_layout_encode_as_their_values():
    """A strided or Fortran-ordered array (what a gather or a slice can give) encodes as its values."""
    base = np.random.default_rng(3).normal(size=(4, 6, 5)).astype(np.float32)
    for windows in (base[:, ::-1], np.asfortranarray(base), base[::2], base.astype(">f4")):
        assert encode_windows(windows, [0] * len(windows), 1, 0, "CA", [0.5] * len(windows)) == \
            [_protobuf_example(np.ascontiguousarray(w, dtype=np.float32), 0, 1, 0, "CA", 0.5) for w in windows]
