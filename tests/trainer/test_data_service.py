"""`crewstream train --data-service grpc://HOST:PORT`: the input pipeline on the tf.data service.

A dispatcher and two workers run in this process on loopback (tf.data.experimental.service),
the way a real deployment runs them as separate servers; two workers, so that the dynamic
sharding really splits the shards between them.
"""

import hashlib

import numpy as np
import pytest
import tensorflow as tf

from tfrecords_schema import WINDOW
from trainer import data, model as model_lib, task, train


@pytest.fixture(scope="module")
def service():
    """grpc://localhost:PORT of a dispatcher with two workers, all in this process."""
    svc = tf.data.experimental.service
    dispatcher = svc.DispatchServer(svc.DispatcherConfig(port=0))
    address = dispatcher.target.split("://", 1)[1]
    # frequent heartbeats: a worker learns soon that a finished job's tasks can go, so that
    # stopping it at the end does not wait for the default 30 s heartbeat
    workers = [svc.WorkerServer(svc.WorkerConfig(dispatcher_address=address,
                                                 worker_address="localhost:%port%",
                                                 heartbeat_interval_ms=500))
               for _ in range(2)]
    yield f"grpc://localhost:{address.rsplit(':', 1)[1]}"
    for worker in workers:
        worker.stop()
    dispatcher.stop()


def _keys(windows):
    return sorted(hashlib.sha1(w.tobytes()).hexdigest() for w in windows)


def test_each_window_once_per_pass_in_full_batches(service, prep_dir, stats, records):
    ds = data.make_dataset(prep_dir, "train", 64, shuffle=True, seed=0, data_service=service)
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


def test_repeated_input_yields_full_batches(service, prep_dir, stats):
    ds = data.make_dataset(prep_dir, "train", 64, shuffle=True, repeat=True, seed=0,
                           data_service=service)
    steps = data.steps_per_epoch(stats, "train", 64) + 3  # across the end of a pass
    assert [int(x.shape[0]) for x, _, _ in ds.take(steps)] == [64] * steps


def test_training_through_the_service(service, prep_dir, stats, tmp_path):
    argv = ["--data", prep_dir, "--model-dir", str(tmp_path / "model"), "--epochs", "2",
            "--steps-per-epoch", "3", "--batch-size", "32", "--units", "8", "--seed", "5",
            "--learning-rate", "0.01", "--progress", "none", "--data-service", service]
    config = task._config(task._parse_args(argv))
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
                                     model_lib.ModelParams(units=8)).get_weights()

    for a, b in zip(build(), build()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("address", ["localhost", "grpc://localhost", "http://h:1", "h:p"])
def test_bad_service_address_is_a_usage_error(address):
    with pytest.raises(SystemExit) as e:
        task._parse_args(["--data", "d", "--model-dir", "m", "--data-service", address])
    assert e.value.code == 2
