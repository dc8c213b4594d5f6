"""`crewstream train --data-service grpc://HOST:PORT`: the input pipeline on the tf.data service.

A dispatcher and two workers run in a separate process on loopback (tf.data.experimental.service),
the way a real deployment runs them as separate servers; two workers, so that the dynamic
sharding really splits the shards between them.

The trainer (this process) and the service see the data folder `data` through different working
folders: the service's is the preprocess output itself, the trainer's a copy without the shard
files listed in stats.json. A trainer that read the shards itself instead of through the
service would fail on the first missing file, so a test passing here proves the service read them.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tfrecords_schema import WINDOW, shard_files
from trainer import data, model as model_lib, task, train

DATA = "data"  # the data folder, relative: each process finds it under its own working folder
SERVICE_SCRIPT = textwrap.dedent("""
    import tensorflow as tf
    svc = tf.data.experimental.service
    dispatcher = svc.DispatchServer(svc.DispatcherConfig(port=0))
    address = dispatcher.target.split("://", 1)[1]
    # frequent heartbeats: a worker learns soon that a finished job's tasks can go
    workers = [svc.WorkerServer(svc.WorkerConfig(dispatcher_address=address,
                                                 worker_address="localhost:%port%",
                                                 heartbeat_interval_ms=500))
               for _ in range(2)]
    print(address.rsplit(":", 1)[1], flush=True)
    dispatcher.join()
""")


@pytest.fixture(scope="module")
def views(tmp_path_factory, prep_dir, stats):
    """(the trainer's working folder, the service's): under the service's, `data` is the
    preprocess output; under the trainer's, a copy of it without any shard file."""
    root = tmp_path_factory.mktemp("service_views")
    trainer_view, service_view = root / "trainer", root / "service"
    service_view.mkdir()
    os.symlink(prep_dir, service_view / DATA)
    shutil.copytree(prep_dir, trainer_view / DATA)
    for split in ("train", "eval"):
        for path in shard_files(str(trainer_view / DATA), stats, split):
            os.remove(path)
    return trainer_view, service_view


@pytest.fixture(scope="module")
def service(views):
    """grpc://localhost:PORT of a dispatcher with two workers, in a process working in the
    service's view of the data."""
    _, service_view = views
    with open(service_view / "service.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", SERVICE_SCRIPT], cwd=service_view,
                                stdout=subprocess.PIPE, stderr=log, text=True,
                                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    try:
        port = proc.stdout.readline().strip()
        assert port.isdigit(), (service_view / "service.log").read_text()[-3000:]
        yield f"grpc://localhost:{port}"
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def in_trainer_view(views, monkeypatch):
    """This process works in the trainer's view: `data` has stats.json and no shard."""
    monkeypatch.chdir(views[0])


def test_the_trainer_alone_cannot_read_its_view_of_the_data(in_trainer_view):
    """What the other tests rely on: without the service, the input fails on a missing shard."""
    ds = data.make_dataset(DATA, "train", 64)
    with pytest.raises(tf.errors.NotFoundError):
        next(iter(ds))


def _keys(windows):
    return sorted(hashlib.sha1(w.tobytes()).hexdigest() for w in windows)


def test_each_window_once_per_pass_in_full_batches(service, in_trainer_view, stats, records):
    ds = data.make_dataset(DATA, "train", 64, shuffle=True, seed=0, data_service=service)
    steps = data.steps_per_epoch(stats, "train", 64)
    assert ds.cardinality().numpy() == steps
    expected = _keys(records("train")[WINDOW])
    for _ in range(2):  # every iteration is a new job: a fresh pass
        batches = list(ds)
        sizes = [int(x.shape[0]) for x, _, _ in batches]
        assert sizes[:-1] == [64] * (steps - 1) and 0 < sizes[-1] <= 64
        assert _keys(w for x, _, _ in batches for w in x.numpy()) == expected
        labels = np.concatenate([y.numpy() for _, y, _ in batches])
        np.testing.assert_array_equal(np.bincount(labels, minlength=4),
                                      np.bincount(records("train")["label"], minlength=4))


def test_repeated_input_yields_full_batches(service, in_trainer_view, stats):
    ds = data.make_dataset(DATA, "train", 64, shuffle=True, repeat=True, seed=0,
                           data_service=service)
    steps = data.steps_per_epoch(stats, "train", 64) + 3  # across the end of a pass
    assert [int(x.shape[0]) for x, _, _ in ds.take(steps)] == [64] * steps


def test_training_through_the_service(service, in_trainer_view, stats, tmp_path):
    argv = ["--data", DATA, "--model-dir", str(tmp_path / "model"), "--epochs", "2",
            "--steps-per-epoch", "3", "--batch-size", "32", "--units", "8", "--seed", "5",
            "--model", "lstm", "--normalize", "none",
            "--learning-rate", "0.01", "--progress", "none", "--data-service", service]
    config = task.config_from_argv(argv)
    assert config.data_service == service

    model_lib.set_seed(5)  # the initial weights train.train starts from
    initial = model_lib.build_model(stats["window"], len(stats["features"]),
                                    config.model).get_weights()
    result = train.train(config)

    history = result["history"]
    assert history["epoch"] == [1, 2]
    assert all(np.isfinite(history[k]).all() for k in ("loss", "val_loss"))
    trained = result["model"].get_weights()
    assert [w.shape for w in trained] == [w.shape for w in initial]
    assert any(not np.allclose(a, b) for a, b in zip(trained, initial))
    assert (tmp_path / "model" / "serving" / "saved_model.pb").exists()


def test_initial_weights_depend_only_on_the_seed(stats):
    """What test_training_through_the_service relies on to tell that the weights changed."""
    def build():
        model_lib.set_seed(5)
        return model_lib.build_model(stats["window"], len(stats["features"]),
                                     model_lib.ModelParams(kind=model_lib.LSTM, units=8,
                                                           normalize=model_lib.NORM_NONE)).get_weights()

    for a, b in zip(build(), build()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("address", ["localhost", "grpc://localhost", "http://h:1", "h:p"])
def test_bad_service_address_is_a_usage_error(address):
    with pytest.raises(SystemExit) as e:
        task.config_from_argv(["--data", "d", "--model-dir", "m", "--data-service", address])
    assert e.value.code == 2
