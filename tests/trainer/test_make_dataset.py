"""trainer.data.make_dataset: exact streaming of a split, weights by label, no materialization."""

import collections
import gzip
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.data.experimental.ops import distribute as tf_distribute

from tfrecords_schema import LABEL, LABEL_VOCABULARY, WINDOW, read_stats, output_folder
from tests.helpers import dataset_graph_report
from trainer import data, weights


def _key(window: np.ndarray) -> bytes:
    return np.ascontiguousarray(window, dtype=np.float32).tobytes()


def _drain(ds):
    """(windows [N, W, F], labels [N], weights [N], batch sizes) of one pass."""
    windows, labels, ws, sizes = [], [], [], []
    for x, y, w in ds:
        windows.append(x.numpy())
        labels.append(y.numpy())
        ws.append(w.numpy())
        sizes.append(len(y))
    return np.concatenate(windows), np.concatenate(labels), np.concatenate(ws), sizes


@pytest.mark.parametrize("split", ["train", "eval"])
@pytest.mark.parametrize("weighting", ["balanced", "effective:0.99"])
def test_one_pass_yields_the_split_exactly(prep_dir, stats, records, split, weighting):
    batch = 50
    ds = data.make_dataset(prep_dir, split, batch, weighting=weighting, shuffle=True, seed=3)
    expected = stats["splits"][split]
    steps = -(-expected["num_windows"] // batch)
    assert ds.cardinality().numpy() == steps

    assert ds.element_spec == (
        tf.TensorSpec([None, stats["window"], len(stats["features"])], tf.float32),
        tf.TensorSpec([None], tf.int64), tf.TensorSpec([None], tf.float32))
    truth = records(split)
    lookup = weights.weight_vector(stats["splits"]["train"]["class_counts"], weighting)
    for epoch in range(2):  # the same dataset object, iterated again as Keras does each epoch
        windows, labels, ws, sizes = _drain(ds)
        # (sorted: with shuffle the parallel parse may hand the short last batch out early)
        assert sorted(sizes, reverse=True) == [batch] * (steps - 1) + [expected["num_windows"] - batch * (steps - 1)]
        assert {c: int((labels == i).sum()) for i, c in enumerate(LABEL_VOCABULARY)} == expected["class_counts"]
        np.testing.assert_array_equal(ws, lookup[labels])
        # every window once, with its own label
        got = collections.Counter(zip(map(_key, windows), labels.tolist()))
        want = collections.Counter(zip(map(_key, truth[WINDOW]), truth[LABEL].tolist()))
        assert got == want
        assert max(got.values()) == 1


def test_without_shuffle_the_order_is_the_shards_round_robin(prep_dir, stats):
    """Deterministic: one window of each open shard in turn, in stats.json's shard order."""
    windows, labels, _, _ = _drain(data.make_dataset(prep_dir, "eval", 64))
    shards = [_read_shard(os.path.join(prep_dir, s["file"]), stats) for s in stats["splits"]["eval"]["shards"]]
    order = [(k, j) for j in range(max(len(s[LABEL]) for s in shards))
             for k in range(len(shards)) if j < len(shards[k][LABEL])]
    np.testing.assert_array_equal(windows, np.stack([shards[k][WINDOW][j] for k, j in order]))
    np.testing.assert_array_equal(labels, [shards[k][LABEL][j] for k, j in order])


def _read_shard(path, stats):
    from tfrecords_schema import parse_examples

    serialized = list(tf.data.TFRecordDataset(path))
    parsed = parse_examples(tf.stack(serialized), stats["window"], len(stats["features"]))
    return {k: v.numpy() for k, v in parsed.items()}


def test_shuffle_changes_the_order_between_epochs(prep_dir):
    ds = data.make_dataset(prep_dir, "train", 64, shuffle=True, seed=5)
    first, second = (_drain(ds)[1] for _ in range(2))
    assert not np.array_equal(first, second)
    assert sorted(first) == sorted(second)


def test_repeat_is_endless_with_full_batches(prep_dir, stats):
    ds = data.make_dataset(prep_dir, "train", 64, shuffle=True, repeat=True, seed=0)
    assert ds.cardinality().numpy() == tf.data.INFINITE_CARDINALITY
    steps = data.steps_per_epoch(stats, "train", 64)
    sizes = [len(y) for _, y, _ in ds.take(steps + 2)]
    assert sizes == [64] * (steps + 2)


@pytest.mark.parametrize("readers", [1, 2, 3])  # 3 shards: several, then one shard per reader
@pytest.mark.parametrize("shuffle", [False, True])
def test_file_autosharding_splits_the_shards_between_readers(prep_dir, stats, records, readers, shuffle):
    ds = data.make_dataset(prep_dir, "train", 32, shuffle=shuffle, seed=11)
    seen = collections.Counter()
    for index in range(readers):
        windows, _, _, _ = _drain(tf_distribute._AutoShardDataset(ds, readers, index))
        assert len(windows) == data.num_windows(stats, "train", readers, index)
        seen.update(map(_key, windows))
    assert seen == collections.Counter(map(_key, records("train")[WINDOW]))


def test_input_context_reads_its_shards_with_exact_steps(prep_dir, stats, records):
    seen = collections.Counter()
    for index in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=index)
        ds = data.make_dataset(prep_dir, "train", 32, shuffle=True, seed=1, input_context=context)
        assert ds.cardinality().numpy() == data.steps_per_epoch(stats, "train", 32, 2, index)
        windows = _drain(ds)[0]
        assert len(windows) == sum(s["num_windows"] for s in stats["splits"]["train"]["shards"][index::2])
        seen.update(map(_key, windows))
    assert seen == collections.Counter(map(_key, records("train")[WINDOW]))


def test_gzip_shards(tmp_path, prep_dir, stats):
    """A GZIP preprocess output reads the same (shard names and compression from stats.json)."""
    out = tmp_path / "gz"
    gz_stats = json.loads(json.dumps(stats))
    gz_stats["compression"] = "GZIP"
    for split in output_folder.splits_of(gz_stats):
        for shard in gz_stats["splits"][split]["shards"]:
            src = os.path.join(prep_dir, shard["file"])
            shard["file"] += ".gz"
            os.makedirs(out / split, exist_ok=True)
            with open(src, "rb") as f, gzip.open(out / shard["file"], "wb") as g:
                g.write(f.read())
    from tfrecords_schema import write_stats

    write_stats(str(out), gz_stats)
    windows, labels, _, _ = _drain(data.make_dataset(str(out), "eval", 64))
    plain, plain_labels, _, _ = _drain(data.make_dataset(prep_dir, "eval", 64))
    np.testing.assert_array_equal(windows, plain)
    np.testing.assert_array_equal(labels, plain_labels)


def test_an_empty_split_is_an_error(prep_dir, stats):
    empty = json.loads(json.dumps(stats))
    empty["splits"]["eval"].update(num_windows=0, class_counts={c: 0 for c in LABEL_VOCABULARY}, shards=[])
    with pytest.raises(data.EmptySplitError):
        data.make_dataset(prep_dir, "eval", 8, stats=empty)


def test_shapes_come_from_stats_json(prep_dir, stats):
    """W and F follow stats.json: a stats.json claiming other sizes changes the parse spec."""
    other = json.loads(json.dumps(stats))
    other["window"], other["features"] = stats["window"] // 2, stats["features"] * 2
    x, _, _ = next(iter(data.make_dataset(prep_dir, "eval", 4, stats=other)))
    assert x.shape == (4, stats["window"] // 2, 2 * len(stats["features"]))


def test_bad_arguments(prep_dir):
    with pytest.raises(ValueError):
        data.make_dataset(prep_dir, "test", 8)
    with pytest.raises(ValueError):
        data.make_dataset(prep_dir, "train", 0)
    with pytest.raises(ValueError):
        data.make_dataset(prep_dir, "train", 8, weighting="focal")


# --- not materializing -------------------------------------------------------------------------

_IN_MEMORY_OPS = {"CacheDataset", "CacheDatasetV2", "MemoryCacheImpl", "AnonymousMemoryCache",
                  "PyFunc", "PyFuncStateless", "EagerPyFunc", "GeneratorDataset", "SnapshotDatasetV2"}


def assert_streams(ds: tf.data.Dataset, split_bytes: int) -> None:
    ops, const_bytes = dataset_graph_report(ds)
    assert not ops & _IN_MEMORY_OPS, f"in-memory ops {ops & _IN_MEMORY_OPS}"
    assert any(op.startswith("TFRecordDataset") for op in ops), "does not read the shards"
    assert const_bytes < split_bytes / 100, f"{const_bytes} bytes of constants in the graph"


@pytest.mark.parametrize("kwargs", [{}, {"shuffle": True, "repeat": True}])
def test_make_dataset_does_not_materialize_the_split(prep_dir, stats, kwargs):
    split_bytes = stats["splits"]["train"]["num_windows"] * stats["window"] * len(stats["features"]) * 4
    assert_streams(data.make_dataset(prep_dir, "train", 32, **kwargs), split_bytes)


def test_the_check_catches_materializing_pipelines(prep_dir, stats, records):
    """The graph check above fails for a from_tensor_slices of the split, a .cache() and a
    generator over a list(dataset)."""
    split_bytes = stats["splits"]["train"]["num_windows"] * stats["window"] * len(stats["features"]) * 4
    truth = records("train")
    streaming = data.make_dataset(prep_dir, "train", 32)
    in_memory = [
        tf.data.Dataset.from_tensor_slices((truth[WINDOW], truth[LABEL])).batch(32),
        streaming.cache(),
        tf.data.Dataset.from_generator(lambda: iter(list(streaming)), output_signature=streaming.element_spec),
    ]
    for ds in in_memory:
        with pytest.raises(AssertionError):
            assert_streams(ds, split_bytes)


def test_stats_json_disagreeing_with_the_shards_fails_loudly(tmp_path, prep_dir, stats):
    """The asserted cardinality catches shards with fewer windows than stats.json lists."""
    bad = json.loads(json.dumps(stats))
    bad["splits"]["eval"]["shards"][0]["num_windows"] += 100
    bad["splits"]["eval"]["num_windows"] += 100
    bad["splits"]["eval"]["class_counts"]["A"] += 100
    with pytest.raises(tf.errors.FailedPreconditionError):
        _drain(data.make_dataset(prep_dir, "eval", 10, stats=bad))


def test_reads_stats_from_data_dir(prep_dir):
    assert read_stats(prep_dir)["splits"]["train"]["num_windows"] == sum(
        len(y) for _, y, _ in data.make_dataset(prep_dir, "train", 128))
