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


SEQUENCE_CHUNK_ROWS = 500  # a 10 s recording (2,560 rows) is 6 chunks


@pytest.fixture(scope="session")
def sequence_dir(tmp_path_factory, sample_dir):
    """OUT of a `preprocess --layout sequence` run on the sample with prep_dir's flags (W 64,
    stride 32, 3 shards), chunks of SEQUENCE_CHUNK_ROWS rows (read-only for tests)."""
    from beam_jobs import preprocess
    from tests.conftest import PREPROCESS_FLAGS

    out = tmp_path_factory.mktemp("sequence_prep") / "out"
    preprocess.run(["--input", str(sample_dir / "train.csv"), "--output", str(out), *PREPROCESS_FLAGS,
                    "--layout", "sequence", "--chunk-rows", str(SEQUENCE_CHUNK_ROWS)])
    return str(out)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """(path, stats, {split: [(rows, labels)]}) of a hand-made sequence folder (tests/helpers.py)."""
    from tests.helpers import write_sequence_folder

    out = tmp_path_factory.mktemp("sequence")
    stats, recordings = write_sequence_folder(out, np.random.default_rng(7))
    return str(out), stats, recordings
