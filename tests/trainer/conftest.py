"""Shared data of the trainer tests: the synth sample, preprocessed once per session, and its
records read back (tests/conftest.py holds the sample, its preprocess run and the trained models).
"""

import numpy as np
import pytest


def _read_split(prep_dir, stats, split):
    """Every record of a split, read directly (no trainer code): {key: numpy array}."""
    import tensorflow as tf

    from tfrecords_schema import parse_examples, shard_files

    ds = tf.data.TFRecordDataset(shard_files(prep_dir, stats, split)).batch(4096)
    parts = [parse_examples(batch, stats["window"], len(stats["features"])) for batch in ds]
    return {key: np.concatenate([p[key].numpy() for p in parts]) for key in parts[0]}


@pytest.fixture(scope="session")
def records(prep_dir, stats):
    """records(split) -> every record of the split as numpy arrays, keyed by record key."""
    cache = {}

    def read(split):
        if split not in cache:
            cache[split] = _read_split(prep_dir, stats, split)
        return cache[split]

    return read
