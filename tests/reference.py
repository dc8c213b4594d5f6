"""An independent in-memory reference of the preprocess contract: pandas sort + numpy loops.

Deliberately written without any code from beam_jobs, so that tests compare two implementations.
"""

import numpy as np
import pandas as pd
import tensorflow as tf

from tfrecords_schema import csv_columns as cols
from tfrecords_schema import parse_examples, read_stats, shard_files


def reference_windows(frame, features, window, stride, max_gap, eval_crews, scale="zscore"):
    """{(crew, seat, experiment, end_time float32): (split, label, window float32 [W, F])}."""
    frame = frame.sort_values([cols.CREW, cols.SEAT, cols.EXPERIMENT, cols.TIME], kind="stable")
    values = frame[list(features)].to_numpy(np.float32).astype(np.float64)
    train = ~frame[cols.CREW].isin(eval_crews).to_numpy()
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
            split = "eval" if crew in eval_crews else "train"
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
    for split in ("train", "eval"):
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
