"""`crewstream train --early-stopping` under the multiworker strategy, on a real two-worker cluster
on loopback (the machinery of test_multiworker.py).

Every worker decides alone when to stop, from the val_loss Keras aggregates over all workers
before logging it: the workers must stop after the same epoch (or the collectives of the next
one would wait forever), hold the same best weights, and only the chief writes them.
"""

import os

import numpy as np
import pytest

from tests.cluster import cluster_argv, assert_same_weights, worker_log, worker_result, run_cluster
from tests.reference import keras_early_stopping
from trainer import train

EPOCHS = 6
PATIENCE = 1


@pytest.mark.slow
def test_two_workers_stop_after_the_same_epoch_with_the_same_best_weights(prep_dir, tmp_path):
    model_dir = tmp_path / "model"
    argv = cluster_argv(prep_dir, model_dir, epochs=EPOCHS) + [
        "--early-stopping", str(PATIENCE), "--learning-rate", "0.05"]
    outs, codes = run_cluster(tmp_path, "early", argv)
    assert codes == [0, 0], "\n".join(worker_log(o) for o in outs)
    chief, worker = (worker_result(o) for o in outs)
    assert chief["chief"] and not worker["chief"]
    assert chief["started"] == worker["started"]
    assert chief["history"] == worker["history"]

    history = chief["history"]
    best, stop = keras_early_stopping(history["val_loss"], PATIENCE)
    assert stop is not None and stop < EPOCHS, history  # a high rate: the eval loss soon stalls
    assert history["epoch"] == list(range(1, stop + 1)) and history["best_epoch"] == best

    # both hold the best epoch's weights, and the chief's file is the same epoch and weights
    assert_same_weights([chief, worker])
    assert sorted(os.listdir(model_dir / "checkpoints")) == [train.BEST_WEIGHTS_FILE, "chief"]
    with np.load(model_dir / "checkpoints" / train.BEST_WEIGHTS_FILE) as saved:
        assert int(saved["epoch"]) == best
        assert_same_weights([chief, {"weights": [saved[k] for k in sorted(saved.files)
                                                  if k.startswith("weight_")]}])
