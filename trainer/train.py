"""The training run behind `crewstream train`: stream the shards into the model, keep MODEL/ up to
date after every epoch, export MODEL/serving at the end (DESIGN.md, "The model folder").

    MODEL/train_config.json   the settings of the run (a resumed run must use the same ones)
    MODEL/checkpoints/        model, optimizer and epoch after each epoch (BackupAndRestore)
    MODEL/history.json        {"epoch": [1, 2, ...], "loss": [...], "accuracy": [...],
                               "val_loss": [...], "val_accuracy": [...]}, rewritten every epoch
    MODEL/logs/               TensorBoard
    MODEL/plots/loss.png  MODEL/plots/accuracy.png
    MODEL/serving/            trainer.export

Killed and re-run with the same command, a run restores the last finished epoch from
MODEL/checkpoints and continues with the next one; history.json keeps the epochs already done.
"""

import dataclasses
import json
import logging
from typing import Any, Dict, List, Optional, Sequence

import tensorflow as tf

from tfrecords_schema import layout, read_stats
from trainer import data, export, model as model_lib, plots, weights

_LOG = logging.getLogger("crewstream.train")

CONFIG_FILE = "train_config.json"
HISTORY_FILE = "history.json"
CHECKPOINTS_DIR = "checkpoints"
LOGS_DIR = "logs"
PLOTS_DIR = "plots"
# Settings a resumed run may change: they do not change what the finished epochs computed.
RESUMABLE_CHANGES = ("epochs", "verbose")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    data: str
    model_dir: str
    epochs: int = 10
    batch_size: int = 64
    weighting: str = weights.BALANCED
    steps_per_epoch: Optional[int] = None  # None: one exact pass over the train split per epoch
    seed: int = 0
    shuffle_buffer: int = data.DEFAULT_SHUFFLE_BUFFER
    model: model_lib.ModelParams = model_lib.ModelParams()
    verbose: int = 1  # Keras: 1 progress bar, 2 one line per epoch, 0 silent

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.shuffle_buffer < 1:
            raise ValueError("epochs, batch_size and shuffle_buffer must be >= 1")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {self.steps_per_epoch}")
        weights.parse_method(self.weighting)

    def to_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


class ResumeError(ValueError):
    """MODEL holds checkpoints of a run with other settings."""


def _path(config: TrainConfig, *parts: str) -> str:
    return layout.join(config.model_dir, *parts)


def _read_json(path: str) -> Optional[Any]:
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def _write_json(path: str, obj: Any) -> None:
    """Write then rename: a run killed mid-write leaves the previous file whole."""
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    tf.io.gfile.rename(tmp, path, overwrite=True)


def check_resumable(config: TrainConfig) -> None:
    """Record the run's settings in MODEL; ResumeError if MODEL has checkpoints of other ones."""
    path = _path(config, CONFIG_FILE)
    previous = _read_json(path)
    current = config.to_json()
    if previous is not None and tf.io.gfile.exists(_path(config, CHECKPOINTS_DIR)):
        changed = sorted(k for k in set(previous) | set(current)
                         if k not in RESUMABLE_CHANGES and previous.get(k) != current.get(k))
        if changed:
            raise ResumeError(
                f"{config.model_dir} holds checkpoints of a run with other settings "
                f"({', '.join(f'{k}: {previous.get(k)!r} -> {current.get(k)!r}' for k in changed)}); "
                "re-run with the same settings to resume, or use a new --model-dir")
    tf.io.gfile.makedirs(config.model_dir)
    _write_json(path, current)


class HistoryFile:
    """MODEL/history.json, one entry per finished epoch, kept across resumed runs.

    Epochs are numbered from 1 as the progress bar shows them. An entry for an epoch that is
    about to run again (the run was killed after writing it, before its checkpoint) is dropped.
    """

    def __init__(self, path: str):
        self.path = path
        self.history: Dict[str, List[Any]] = _read_json(path) or {"epoch": []}

    def _truncate(self, epochs_done: int) -> None:
        keep = sum(1 for e in self.history["epoch"] if e <= epochs_done)
        self.history = {k: v[:keep] for k, v in self.history.items()}

    def on_epoch_begin(self, epoch: int, logs: Optional[Dict] = None) -> None:
        if self.history["epoch"] and self.history["epoch"][-1] > epoch:
            self._truncate(epoch)
            _write_json(self.path, self.history)

    def on_epoch_end(self, epoch: int, logs: Optional[Dict] = None) -> None:
        self._truncate(epoch)
        self.history["epoch"].append(epoch + 1)
        for key, value in sorted((logs or {}).items()):
            self.history.setdefault(key, []).append(float(value))
        _write_json(self.path, self.history)


def _describe(stats: Dict[str, Any], config: TrainConfig, train_steps: int) -> str:
    train = stats["splits"][layout.TRAIN]
    w = weights.class_weights(train["class_counts"], config.weighting)
    return (f"train: {train['num_windows']:,} windows of {stats['window']} x {len(stats['features'])} "
            f"({','.join(stats['features'])}) in {len(train['shards'])} shard(s); {train_steps:,} "
            f"steps of {config.batch_size} per epoch; weights ({config.weighting}) "
            + ", ".join(f"{k} {v:.3g}" for k, v in w.items()))


def train(config: TrainConfig, extra_callbacks: Sequence[Any] = ()) -> Dict[str, Any]:
    """Train (or resume) the run `config` describes, export MODEL/serving, draw the plots.

    `extra_callbacks` (Keras callbacks, e.g. from trainer.model.epoch_callback) run after the
    run's own, so at their on_epoch_end the epoch is already checkpointed and in history.json.
    Returns {"history": the whole run's history, "serving": path}.
    """
    stats = read_stats(config.data)
    check_resumable(config)
    model_lib.set_seed(config.seed)
    repeat = config.steps_per_epoch is not None
    train_ds = data.make_dataset(config.data, layout.TRAIN, config.batch_size, config.weighting,
                                 shuffle=True, repeat=repeat, seed=config.seed,
                                 shuffle_buffer=config.shuffle_buffer, stats=stats)
    eval_ds = None
    if stats["splits"][layout.EVAL]["num_windows"]:
        eval_ds = data.make_dataset(config.data, layout.EVAL, config.batch_size, config.weighting,
                                    stats=stats)
    train_steps = config.steps_per_epoch or data.steps_per_epoch(stats, layout.TRAIN, config.batch_size)
    _LOG.info(_describe(stats, config, train_steps))

    net = model_lib.build_model(stats["window"], len(stats["features"]), config.model)
    history = HistoryFile(_path(config, HISTORY_FILE))
    callbacks = [
        # history before the backup: a kill between the two re-runs the epoch and rewrites its entry
        model_lib.epoch_callback(history.on_epoch_begin, history.on_epoch_end),
        model_lib.backup_and_restore(_path(config, CHECKPOINTS_DIR)),
        model_lib.tensorboard(_path(config, LOGS_DIR)),
        *extra_callbacks,
    ]
    net.fit(train_ds, epochs=config.epochs, steps_per_epoch=config.steps_per_epoch,
            validation_data=eval_ds, callbacks=callbacks, verbose=config.verbose)

    serving = export.export_serving(net, config.data, config.model_dir, stats)
    plots.plot_history(history.history, _path(config, PLOTS_DIR))
    return {"history": history.history, "serving": serving}
