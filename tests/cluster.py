"""A real tf.distribute cluster on loopback for the trainer's tests: each worker is
`python -c WORKER_SCRIPT` with its own TF_CONFIG; it runs the trainer's command line in-process and
dumps its final weights to an npz file, so a test can compare the workers' models."""

import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


KILLED = 17  # exit status of a worker killed after its first epoch


WORKER_SCRIPT = textwrap.dedent(f"""
    import hashlib, json, os, sys
    import numpy as np
    import tensorflow as tf
    import tf_keras
    from trainer import model, task, train
    out, kill = sys.argv[1], sys.argv[2] == "kill"

    # What this worker's model steps on, by split and epoch: the sha1 of each window a train or
    # test step receives (tapped in Keras' Model, outside the trainer's code).
    seen, epoch_now = {{}}, [None]
    def tap(split, step):
        def record(windows):
            seen.setdefault(f"{{split}}/{{epoch_now[0]}}", []).extend(
                hashlib.sha1(w.tobytes()).hexdigest() for w in windows.numpy())
            return []
        def traced_step(self, batch):
            tf.py_function(record, [batch[0]], [])
            return step(self, batch)
        return traced_step
    tf_keras.Model.train_step = tap("train", tf_keras.Model.train_step)
    tf_keras.Model.test_step = tap("eval", tf_keras.Model.test_step)
    started = []
    def begin(epoch, logs):
        started.append(epoch)
        epoch_now[0] = epoch
    def save_seen(epoch, logs):  # at each epoch's end, validation included
        with open(out + ".seen.json", "w") as f:
            json.dump(seen, f)

    callbacks = [model.epoch_callback(on_epoch_begin=begin), model.epoch_callback(on_epoch_end=save_seen)]
    if kill:  # after epoch 1 is checkpointed: no clean-up code runs
        callbacks.append(model.epoch_callback(on_epoch_end=lambda epoch, logs: os._exit({KILLED})))
    result = train.train(task.config_from_argv(sys.argv[3:]), extra_callbacks=callbacks)
    np.savez(out + ".npz", *result["model"].get_weights())
    with open(out + ".json", "w") as f:
        json.dump({{"chief": result["chief"], "started": started, "history": result["history"],
                   "serving": result["serving"]}}, f)
""")


def tf_config(ports, index, role="worker"):
    return json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                       "task": {"type": role, "index": index}})


def free_ports(n):
    """n ports free now (bound to 0 and released: another process could take one meanwhile)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def cluster_argv(prep_dir, model_dir, epochs=2):
    """A small lstm's run, without random gains (the settings these tests were written with,
    before train's default became --augment-gain 2: the early-stopping test needs a loss that
    stalls within a few epochs)."""
    return ["--data", prep_dir, "--model-dir", str(model_dir), "--epochs", str(epochs),
            "--batch-size", "64", "--units", "8", "--seed", "3", "--progress", "none",
            "--strategy", "multiworker", "--model", "lstm", "--normalize", "none", "--augment-gain", "1"]


def run_cluster(tmp_path, name, argv, kill=False, workers=2):
    """Start `workers` worker processes on loopback, wait for all; returns their outputs' prefixes
    and exit statuses."""
    ports = free_ports(workers)
    procs, outs = [], []
    for index in range(workers):
        out = str(tmp_path / f"{name}-worker{index}")
        env = dict(os.environ, TF_CONFIG=tf_config(ports, index), PYTHONPATH=REPO,
                   TF_CPP_MIN_LOG_LEVEL="2")
        log = open(out + ".log", "w")
        procs.append(subprocess.Popen(
            [sys.executable, "-c", WORKER_SCRIPT, out, "kill" if kill else "run", *argv],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
        outs.append(out)
    try:
        codes = [p.wait(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return outs, codes


def worker_log(out):
    with open(out + ".log") as f:
        return f.read()[-3000:]


def worker_result(out):
    with open(out + ".json") as f:
        result = json.load(f)
    weights = np.load(out + ".npz")
    result["weights"] = [weights[k] for k in weights.files]
    return result


def assert_same_weights(results):
    first = results[0]["weights"]
    for other in results[1:]:
        assert len(other["weights"]) == len(first)
        for a, b in zip(first, other["weights"]):
            np.testing.assert_array_equal(a, b)


def window_keys(windows):
    return sorted(hashlib.sha1(w.tobytes()).hexdigest() for w in windows)


def assert_each_window_once_per_epoch(outs, records, stats, history, epochs):
    """In each of `epochs` (0-based), the windows the workers' models stepped on (WORKER_SCRIPT's
    tap) are each window of the split exactly once, both workers having some; and Keras
    aggregates accuracy over all replicas, so each epoch's accuracy is a whole number of correct
    windows out of the split's windows."""
    from tfrecords_schema import WINDOW

    seen = []
    for out in outs:
        with open(out + ".seen.json") as f:
            seen.append(json.load(f))
    for split, key in (("train", "accuracy"), ("eval", "val_accuracy")):
        expected = window_keys(records(split)[WINDOW])
        for epoch in epochs:
            parts = [worker.get(f"{split}/{epoch}", []) for worker in seen]
            assert all(parts), (split, epoch, [len(p) for p in parts])
            assert sorted(sum(parts, [])) == expected, (split, epoch, [len(p) for p in parts], len(expected))
        n = stats["splits"][split]["num_windows"]
        for accuracy in history[key]:
            assert abs(accuracy * n - round(accuracy * n)) < 1e-3, (split, accuracy, n)
