"""An independent in-memory reference of the preprocess contract: pandas sort + numpy loops.

Deliberately written without any code from beam_jobs, so that tests compare two implementations.
"""

import collections
import os

import numpy as np
import pandas as pd
import tensorflow as tf

from tests.helpers import SMALL_FEATURES
from tfrecords_schema import LABEL_VOCABULARY
from tfrecords_schema import csv_columns as cols
from tfrecords_schema import output_folder, parse_examples, read_stats, shard_files


def reference_windows(frame, features, window, stride, max_gap, eval_crews, scale="zscore", val_crews=()):
    """{(crew, seat, experiment, end_time float32): (split, label, window float32 [W, F])}; scaled
    with the statistics of the train crews (neither eval nor val)."""
    frame = frame.sort_values([cols.CREW, cols.SEAT, cols.EXPERIMENT, cols.TIME], kind="stable")
    values = frame[list(features)].to_numpy(np.float32).astype(np.float64)
    train = ~frame[cols.CREW].isin(list(eval_crews) + list(val_crews)).to_numpy()
    if scale == "zscore":
        shift, div = values[train].mean(0), values[train].std(0)
    else:
        shift, div = values[train].min(0), values[train].max(0) - values[train].min(0)
    div[div == 0] = 1.0
    scaled = ((values - shift) / div).astype(np.float32)
    labels = frame[cols.EVENT].map("ABCD".index).to_numpy()
    times = frame[cols.TIME].to_numpy()
    keys = frame[[cols.CREW, cols.SEAT, cols.EXPERIMENT]].to_numpy()
    out = {}
    start = 0
    n = len(frame)
    for i in range(1, n + 1):
        new_group = i == n or tuple(keys[i]) != tuple(keys[i - 1]) or times[i] - times[i - 1] > max_gap
        if not new_group:
            continue
        s = start
        while s + window <= i:
            last = s + window - 1
            crew, seat, experiment = keys[last]
            split = "eval" if crew in eval_crews else "val" if crew in val_crews else "train"
            out[(int(crew), int(seat), str(experiment), float(np.float32(times[last])))] = (
                split, int(labels[last]), scaled[s:s + window])
            s += stride
        start = i
    return out, (shift, div)


def read_output(out_dir):
    """Every record of a preprocess output, as the same dict, using only the schema's parser."""
    stats = read_stats(out_dir)
    w, f = stats["window"], len(stats["features"])
    compression = "GZIP" if stats["compression"] == "GZIP" else ""
    found, per_shard = {}, {}
    for split in output_folder.splits_of(stats):
        for path in shard_files(out_dir, stats, split):
            records = [r.numpy() for r in tf.data.TFRecordDataset(path, compression_type=compression)]
            per_shard[path] = records
            if not records:
                continue
            p = parse_examples(tf.constant(records), w, f)
            for i in range(len(records)):
                key = (int(p["crew"][i]), int(p["seat"][i]), p["experiment"][i].numpy().decode(),
                       float(p["end_time"][i]))
                assert key not in found, f"window {key} written twice"
                found[key] = (split, int(p["label"][i]), p["window"][i].numpy())
    return stats, found, per_shard


def frame_from_csv(path):
    return pd.read_csv(path)


def assert_matches_reference(frame, out, window, stride, scale="zscore", features=SMALL_FEATURES, val_crews=()):
    """The preprocess output in `out` holds exactly reference_windows' windows of `frame` (eval crew
    2, val crews `val_crews`), its stats.json counts them and its scaling is the reference's;
    returns the stats."""
    expected, (shift, div) = reference_windows(frame, features, window, stride, 1.0, [2], scale, val_crews)
    stats, found, per_shard = read_output(str(out))
    assert set(found) == set(expected)
    for key, (split, label, values) in expected.items():
        got_split, got_label, got_values = found[key]
        assert (got_split, got_label) == (split, label), key
        np.testing.assert_allclose(got_values, values, rtol=1e-5, atol=1e-5)
    # stats.json agrees with what reading the shards back finds.
    for split in output_folder.splits_of(stats):
        s = stats["splits"][split]
        mine = [v for v in found.values() if v[0] == split]
        assert s["num_windows"] == len(mine)
        assert s["class_counts"] == {c: sum(1 for v in mine if v[1] == i) for i, c in enumerate(LABEL_VOCABULARY)}
        for shard in s["shards"]:
            assert len(per_shard[os.path.join(str(out), shard["file"])]) == shard["num_windows"]
    names = ("mean", "std") if scale == "zscore" else ("min", "range")
    for i, name in enumerate(features):
        np.testing.assert_allclose([stats["scaling"][name][names[0]], stats["scaling"][name][names[1]]],
                                   [shift[i], div[i]], rtol=1e-5)
    return stats


def numpy_windows(recordings, window, stride):
    """Counter of (window bytes, label) over the recordings, and {bytes: recording index}."""
    windows, owner = collections.Counter(), {}
    for r, (rows, labels) in enumerate(recordings):
        for start in range(0, len(labels) - window + 1, stride):
            key = rows[start:start + window].tobytes()
            windows[key, int(labels[start + window - 1])] += 1
            owner[key] = r
    return windows, owner


def keras_early_stopping(val_loss, patience):
    """(best epoch, epoch it stops after or None) by Keras' own EarlyStopping(monitor='val_loss',
    patience) fed these per-epoch losses, epochs numbered from 1: the independent reference."""
    import types

    from trainer import model as model_lib

    stub = types.SimpleNamespace(stop_training=False)
    reference = model_lib.keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience)
    reference.set_model(stub)
    reference.on_train_begin()
    for epoch, value in enumerate(val_loss):
        reference.on_epoch_end(epoch, {"val_loss": value})
        if stub.stop_training:
            return reference.best_epoch + 1, epoch + 1
    return reference.best_epoch + 1, None
