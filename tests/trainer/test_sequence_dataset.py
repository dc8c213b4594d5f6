"""trainer.data.make_dataset on sequence shards: windows of any (W', stride) cut at read time.

The folder here is made by hand: random recordings cut into chunk records with
tfrecords_schema's encoder (the contract's arithmetic: chunk j = rows [jC, (j+1)C), k =
min(W-1, position) context rows), dealt to shards at random. The reference windows are cut in
numpy from the recordings themselves (starts 0, s, 2s, ... while start + W' <= n), not from
the records.
"""

import collections
import math

import numpy as np
import pytest
import tensorflow as tf

from tfrecords_schema import LABEL_VOCABULARY, read_stats, sequence
from tests.helpers import SEQUENCE_FEATURES as FEATURES
from tests.helpers import SEQUENCE_STRIDE as STRIDE, SEQUENCE_WINDOW as WINDOW
from tests.reference import numpy_windows
from trainer import data, weights


def _drain(ds):
    xs, ys, ws, sizes = [], [], [], []
    for x, y, w in ds:
        xs.append(x.numpy())
        ys.append(y.numpy())
        ws.append(w.numpy())
        sizes.append(len(y))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ws), sizes


@pytest.mark.parametrize("window,stride,shuffle", [(WINDOW, STRIDE, False), (WINDOW, STRIDE, True), (WINDOW, 1, True),
                                                    (10, 3, False), (1, 1, True), (7, 50, False), (24, 200, True)])
def test_the_windows_are_those_numpy_cuts_from_the_recordings(folder, window, stride, shuffle):
    data_dir, stats, recordings = folder
    batch = 16
    for split in ("train", "eval"):
        ds = data.make_dataset(data_dir, split, batch, shuffle=shuffle, window=window, stride=stride,
                               seed=1, stats=stats)
        want, _ = numpy_windows(recordings[split], window, stride)
        counts = sequence.window_counts(stats, split, window, stride)
        assert counts["num_windows"] == sum(want.values())
        assert ds.cardinality().numpy() == math.ceil(counts["num_windows"] / batch)
        assert ds.element_spec[0] == tf.TensorSpec([None, window, len(FEATURES)], tf.float32)
        x, y, w, sizes = _drain(ds)
        assert sorted(sizes, reverse=True)[:-1] == [batch] * (len(sizes) - 1)
        assert collections.Counter(zip(map(bytes, x), y.tolist())) == want
        assert {c: int((y == i).sum()) for i, c in enumerate(LABEL_VOCABULARY)} == counts["class_counts"]
        train_counts = sequence.window_counts(stats, "train", window, stride)["class_counts"]
        np.testing.assert_array_equal(w, weights.weight_vector(train_counts, "balanced")[y])


def test_chunk_windows_is_the_contracts_arithmetic():
    """The TensorFlow cut equals tfrecords_schema.sequence.chunk_window_ends for random chunks."""
    rng = np.random.default_rng(3)
    for _ in range(40):
        big = int(rng.integers(1, 40))
        window, stride = int(rng.integers(1, big + 1)), int(rng.integers(1, 50))
        positions, rows = rng.integers(0, 300, size=8), rng.integers(1, 60, size=8)
        ks = np.array([sequence.context_rows(int(p), big) for p in positions])
        starts, label_rows = data.chunk_windows(tf.constant(positions, tf.int64), tf.constant(ks, tf.int64),
                                                tf.constant(rows, tf.int64), window, stride)
        for i, (position, c, k) in enumerate(zip(positions, rows, ks)):
            ends = sequence.chunk_window_ends(int(position), int(c), window, stride)
            np.testing.assert_array_equal(label_rows[i].numpy(), ends - position)
            np.testing.assert_array_equal(starts[i].numpy(), ends - window + 1 - position + k)
            assert (starts[i].numpy() >= 0).all()


def test_windowed_stats_counts_the_chosen_windows(folder):
    _, stats, recordings = folder
    view = data.windowed_stats(stats, 10, 3)
    assert (view["window"], view["stride"]) == (10, 3)
    for split in ("train", "eval"):
        want, _ = numpy_windows(recordings[split], 10, 3)
        assert view["splits"][split]["num_windows"] == sum(want.values())
        assert data.num_windows(view, split) == sum(want.values())
        assert [s["file"] for s in view["splits"][split]["shards"]] == [
            s["file"] for s in stats["splits"][split]["shards"]]
    assert data.windowed_stats(stats) == data.windowed_stats(stats, WINDOW, STRIDE)
    with pytest.raises(data.WindowError, match="window"):
        data.windowed_stats(stats, WINDOW + 1, 1)
    with pytest.raises(data.WindowError, match="stride"):
        data.windowed_stats(stats, WINDOW, 0)


def test_a_windows_folder_takes_only_its_own_window_and_stride(prep_dir, stats):
    assert data.windowed_stats(stats) is stats
    assert data.windowed_stats(stats, stats["window"], stats["stride"]) is stats
    data.make_dataset(prep_dir, "eval", 8, window=stats["window"], stride=stats["stride"])
    for window, stride in ((stats["window"] // 2, None), (None, 1)):
        with pytest.raises(data.WindowError, match="windows-layout folder holds only window"):
            data.make_dataset(prep_dir, "eval", 8, window=window, stride=stride)


def test_shuffled_batches_mix_recordings(folder):
    """A shuffled batch holds windows of several recordings; the unshuffled order does not
    change between passes and the shuffled one does."""
    data_dir, stats, recordings = folder
    _, owner = numpy_windows(recordings["train"], 10, 1)
    ds = data.make_dataset(data_dir, "train", 32, shuffle=True, window=10, stride=1, seed=2, stats=stats)
    first = [[owner[bytes(w)] for w in x.numpy()] for x, _, _ in ds]
    shares = [max(collections.Counter(b).values()) / len(b) for b in first[:-1]]
    assert np.mean(shares) < 0.7
    assert min(len(set(b)) for b in first[:-1]) >= 2
    second = [[owner[bytes(w)] for w in x.numpy()] for x, _, _ in ds]
    assert first != second
    fixed = data.make_dataset(data_dir, "train", 32, window=10, stride=1, stats=stats)
    assert [y.numpy().tolist() for _, y, _ in fixed] == [y.numpy().tolist() for _, y, _ in fixed]


def test_the_pipeline_streams_without_python_or_dataset_window(folder):
    from tests.helpers import dataset_graph_report

    """No Python, no Dataset.window, no cache; the graph's constants do not grow with the split
    (train holds 5x eval's rows; both have two shards)."""
    data_dir, stats, _ = folder
    reports = {split: dataset_graph_report(data.make_dataset(data_dir, split, 8, shuffle=True, repeat=True,
                                                             window=12, stride=1, stats=stats))
               for split in ("train", "eval")}
    for ops, _ in reports.values():
        assert not ops & {"PyFunc", "EagerPyFunc", "PyFuncStateless", "WindowDataset", "GeneratorDataset",
                          "CacheDataset", "CacheDatasetV2"}
        assert any(op.startswith("TFRecordDataset") for op in ops)
    assert abs(reports["train"][1] - reports["eval"][1]) <= 8  # the shard names' lengths


# --- a preprocess run of each layout on the same sample ------------------------------------------

@pytest.mark.parametrize("split", ["train", "eval"])
def test_equal_window_and_stride_give_the_windows_layouts_windows_byte_for_byte(sequence_dir, records, split):
    from tfrecords_schema import LABEL, WINDOW

    stats = read_stats(sequence_dir)
    got = collections.Counter()
    for x, y, _ in data.make_dataset(sequence_dir, split, 100, shuffle=True, seed=4):
        got.update(zip(map(bytes, x.numpy()), y.numpy().tolist()))
    truth = records(split)
    want = collections.Counter(zip(map(bytes, truth[WINDOW]), truth[LABEL].tolist()))
    assert got == want and max(got.values()) == 1
    assert data.num_windows(data.windowed_stats(stats), split) == sum(want.values())


def test_readers_split_the_shards_with_exact_steps(folder):
    """Two input pipelines (tf.distribute's InputContext) read disjoint shards; together, every window once."""
    data_dir, stats, recordings = folder
    view = data.windowed_stats(stats, 10, 2)
    seen = collections.Counter()
    for index in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=index)
        ds = data.make_dataset(data_dir, "train", 8, shuffle=True, window=10, stride=2, seed=1, stats=stats,
                               input_context=context)
        assert ds.cardinality().numpy() == data.steps_per_epoch(view, "train", 8, 2, index)
        x, y, _, _ = _drain(ds)
        assert len(y) == data.num_windows(view, "train", 2, index) > 0
        seen.update(zip(map(bytes, x), y.tolist()))
    assert seen == numpy_windows(recordings["train"], 10, 2)[0]


@pytest.mark.parametrize("shuffle", [False, True])
def test_workers_split_the_shards_with_the_shard_hint(folder, shuffle):
    """What tf.distribute does for the multiworker strategy (auto-sharding; here the HINT policy):
    worker k reads shards k, k + N, ...; together, every window once. Without the hint, FILE
    auto-sharding would shard the pipeline's runs of windows instead (the last assertion)."""
    from tensorflow.python.data.experimental.ops import distribute as tf_distribute

    data_dir, stats, recordings = folder
    view = data.windowed_stats(stats, 10, 2)
    ds = data.make_dataset(data_dir, "train", 8, shuffle=shuffle, window=10, stride=2, seed=1, stats=stats,
                           num_workers=2)
    seen = collections.Counter()
    for index in range(2):
        x, y, _, _ = _drain(tf_distribute._AutoShardDataset(ds, 2, index))
        assert len(y) == data.num_windows(view, "train", 2, index)
        seen.update(zip(map(bytes, x), y.tolist()))
    assert seen == numpy_windows(recordings["train"], 10, 2)[0]
    one = data.make_dataset(data_dir, "train", 8, window=10, stride=2, stats=stats)
    assert [sum(len(y) for _, y, _ in tf_distribute._AutoShardDataset(one, 2, k)) for k in range(2)] != [
        data.num_windows(view, "train", 2, k) for k in range(2)]


def test_a_data_service_is_refused(folder, prep_dir):
    data_dir, stats, _ = folder
    with pytest.raises(data.WindowError, match="tf.data service"):
        data.make_dataset(data_dir, "train", 8, stats=stats, data_service="grpc://localhost:5000")
    data.check_distribution(read_stats(prep_dir), "grpc://localhost:5000")  # a windows folder: fine
