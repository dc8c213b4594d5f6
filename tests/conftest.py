"""pytest set-up shared by every test, and the session's shared data: one small synth sample,
preprocessed once, and two models briefly trained on it (the trainer tests and the predict job's).

3 crews x 2 seats x 3 experiments x 10 s at 256 Hz; windows of 64 rows every 32, features
r, ecg, gsr; crew 2 is the eval split; 3 shards per split.
"""

import os
import shutil
from types import SimpleNamespace

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SAMPLE = {"crews": (1, 2, 3), "seconds": 10.0, "seed": 0}
PREPROCESS_FLAGS = ["--features", "r,ecg,gsr", "--window", "64", "--stride", "32",
                    "--eval-crews", "2", "--num-shards", "3"]


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory):
    """A folder with synth's train.csv / test.csv / test_truth.csv."""
    from crewstream import synth

    out = tmp_path_factory.mktemp("synth")
    synth.generate(str(out), **SAMPLE)
    return out


@pytest.fixture(scope="session")
def prep_dir(tmp_path_factory, sample_dir):
    """OUT of a preprocess run on the sample (read-only for tests: copy it to change it)."""
    from beam_jobs import preprocess

    out = tmp_path_factory.mktemp("prep") / "out"
    preprocess.run(["--input", str(sample_dir / "train.csv"), "--output", str(out), *PREPROCESS_FLAGS])
    return str(out)


@pytest.fixture(scope="session")
def val_dir(tmp_path_factory, sample_dir):
    """OUT of the same preprocess run with a val split: train crew 1, val crew 3, eval crew 2
    (read-only for tests)."""
    from beam_jobs import preprocess

    out = tmp_path_factory.mktemp("val_prep") / "out"
    preprocess.run(["--input", str(sample_dir / "train.csv"), "--output", str(out), *PREPROCESS_FLAGS,
                    "--val-crews", "3"])
    return str(out)


@pytest.fixture(scope="session")
def stats(prep_dir):
    from tfrecords_schema import read_stats

    return read_stats(prep_dir)


def _train_and_export(tmp_path_factory, prep_dir, stats, name, params):
    """A model of `params` trained 2 epochs, exported to MODEL/serving from a COPY of OUT that is
    then deleted. Returns SimpleNamespace(model=the Keras model, model_dir=MODEL, params)."""
    from trainer import data, export, model as model_lib

    root = tmp_path_factory.mktemp(name)
    copy = root / "out"
    shutil.copytree(prep_dir, copy)
    model_lib.set_seed(1)
    params = params.for_window(stats["window"])
    net = model_lib.build_model(stats["window"], len(stats["features"]), params)
    net.fit(data.make_dataset(str(copy), "train", 64, shuffle=True, seed=1), epochs=2, verbose=0)
    model_dir = root / "model"
    export.export_serving(net, str(copy), str(model_dir), params=params)
    shutil.rmtree(copy)
    return SimpleNamespace(model=net, model_dir=str(model_dir), params=params)


@pytest.fixture(scope="session")
def exported(tmp_path_factory, prep_dir, stats):
    """A briefly trained LSTM (see _train_and_export)."""
    from trainer import model as model_lib

    return _train_and_export(tmp_path_factory, prep_dir, stats, "exported",
                             model_lib.ModelParams(kind=model_lib.LSTM, units=16, learning_rate=1e-2,
                                                   normalize=model_lib.NORM_NONE, augment_gain=1.0))


@pytest.fixture(scope="session")
def exported_tcn(tmp_path_factory, prep_dir, stats):
    """A briefly trained tcn (see _train_and_export): 8 filters, kernel 3, its input z-scored over
    the last 24 rows (--normalize zscore --norm-rows 24), 3 levels (the most that fit W = 64:
    receptive field 24 + 28 = 52 rows), trained at random input gains (--augment-gain 2: the
    export and predict tests run a model with that training-only layer)."""
    from trainer import model as model_lib

    return _train_and_export(tmp_path_factory, prep_dir, stats, "exported_tcn",
                             model_lib.ModelParams(kind=model_lib.TCN, filters=8, learning_rate=1e-2,
                                                   normalize=model_lib.NORM_ZSCORE, norm_rows=24,
                                                   augment_gain=2.0))
