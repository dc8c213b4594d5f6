"""The training run behind `crewstream train`: stream the shards into the model, keep MODEL/ up to
date after every epoch, export MODEL/serving at the end (docs/DESIGN.md, "The model folder of a
train run").

    MODEL/train_config.json   the settings of the run (a resumed run must use the same ones)
    MODEL/checkpoints/        model, optimizer and epoch after each epoch (BackupAndRestore)
    MODEL/history.json        {"epoch": [1, 2, ...], "loss": [...], "accuracy": [...],
                               "val_loss": [...], "val_accuracy": [...]}, rewritten every epoch;
                              with --early-stopping also "best_epoch": the epoch exported; with
                              a val split "calibration": the temperature fitted on it (calibrate)
    MODEL/checkpoints/best_epoch.npz   with --early-stopping: the best epoch's weights
    MODEL/logs/               TensorBoard
    MODEL/plots/loss.png  MODEL/plots/accuracy.png
    MODEL/serving/            trainer.export

Splits: val_loss (what Keras logs for validation_data, what early stopping watches) is the val
split's loss when the folder has one (preprocess --val-crews), else eval's (watched_split); the
temperature the export carries (trainer.calibration) is fitted on val after the weights are final,
and only with val. Eval is then what nothing was chosen or fitted on: evaluate reports it.

Killed and re-run with the same command, a run restores the last finished epoch from
MODEL/checkpoints and continues with the next one; history.json keeps the epochs already done.

Early stopping (`--early-stopping PATIENCE`) is Keras' EarlyStopping(monitor="val_loss",
patience=PATIENCE) made resumable: see EarlyStopping.

Strategies (`--strategy`): `default` (one device), `mirrored` (tf.distribute.MirroredStrategy:
the local GPUs, else the CPU) and `multiworker` (tf.distribute.MultiWorkerMirroredStrategy, the
cluster and this process's place in it from TF_CONFIG; every worker runs the same command). The
batch size is global: one step trains on `batch_size` windows over all replicas. Every worker
restores from MODEL/checkpoints, so MODEL must be on storage all workers share (a bucket, NFS).
Only the chief (task `chief`, else worker 0) writes MODEL; the other workers write what TF
needs every worker to write (checkpoints, TensorBoard, the export) to temporary folders that
they remove.
"""

import dataclasses
import io
import json
import logging
import os
import shutil
import tempfile
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfrecords_schema import file_io, output_folder, ownership, read_stats, sequence
from trainer import calibration, data, export, model as model_lib, plots, weights
from trainer.choices import DEFAULT, MIRRORED, MULTIWORKER, STRATEGIES
from trainer.config import TrainConfig

_LOG = logging.getLogger("crewstream.train")

CONFIG_FILE = "train_config.json"
HISTORY_FILE = "history.json"
CHECKPOINTS_DIR = "checkpoints"
LOGS_DIR = "logs"
PLOTS_DIR = "plots"
# Settings a resumed run may change: they do not change what the finished epochs computed.
RESUMABLE_CHANGES = ("epochs", "verbose", "strategy", "data_service")
TF_CONFIG = "TF_CONFIG"
MONITOR = "val_loss"  # what early stopping watches: the weighted loss on watched_split (val, else eval)
BEST_EPOCH = "best_epoch"  # history.json: the epoch whose weights are exported (early stopping)
CALIBRATION = "calibration"  # history.json: {split, temperature, log_loss_before, log_loss_after, num_windows}
BEST_WEIGHTS_FILE = "best_epoch.npz"  # in CHECKPOINTS_DIR


class ResumeError(ValueError):
    """MODEL holds checkpoints of a run with other settings, or of an older crewstream's."""


class StrategyError(ValueError):
    """The strategy cannot be built: TF_CONFIG is missing or does not describe a cluster."""


_TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
                      '"task": {"type": "worker", "index": 0}}')


def read_tf_config(environ: Mapping[str, str] = os.environ) -> Dict[str, Any]:
    """TF_CONFIG, checked: {"cluster": {"chief": [one "host:port"], "worker": ["host:port", ...]},
    "task": {"type": "chief" | "worker", "index": i}} (other keys, e.g. Vertex AI's, pass).

    StrategyError, naming what is wrong, when it is missing, not JSON, or not a cluster
    MultiWorkerMirroredStrategy can run (parameter servers, an evaluator task, a task outside
    the cluster).
    """
    text = environ.get(TF_CONFIG, "").strip()
    if not text:
        raise StrategyError(f"--strategy {MULTIWORKER} needs the {TF_CONFIG} environment variable on "
                            f"every worker, e.g. {TF_CONFIG}='{_TF_CONFIG_EXAMPLE}'")
    try:
        tf_config = json.loads(text)
    except json.JSONDecodeError as e:
        raise StrategyError(f"{TF_CONFIG} is not JSON ({e}): {text!r}") from None
    cluster = tf_config.get("cluster") if isinstance(tf_config, dict) else None
    task = tf_config.get("task") if isinstance(tf_config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise StrategyError(f"{TF_CONFIG} needs \"cluster\" and \"task\" objects, e.g. "
                            f"{_TF_CONFIG_EXAMPLE}; got {text!r}")
    unsupported = sorted(set(cluster) - {"chief", "worker"})
    if unsupported:
        raise StrategyError(f"{TF_CONFIG}: the multiworker strategy runs a cluster of \"chief\" "
                            f"and \"worker\" tasks only, not {unsupported}")
    for role, addresses in cluster.items():
        if (not isinstance(addresses, list) or not addresses
                or not all(isinstance(a, str) and a.rpartition(":")[2].isdigit() for a in addresses)):
            raise StrategyError(f"{TF_CONFIG}: cluster.{role} must be a non-empty list of "
                                f"\"host:port\", got {addresses!r}")
    if len(cluster.get("chief", [])) > 1:
        raise StrategyError(f"{TF_CONFIG}: a cluster has at most one chief, got {cluster['chief']}")
    role, index = task.get("type"), task.get("index")
    if role not in cluster or not isinstance(index, int) or not 0 <= index < len(cluster[role]):
        raise StrategyError(f"{TF_CONFIG}: task {task!r} is not one of the cluster's tasks "
                            f"({', '.join(f'{r} 0..{len(a) - 1}' for r, a in cluster.items())})")
    return tf_config


def num_workers(tf_config: Dict[str, Any]) -> int:
    """Training processes of the cluster: the chief, if any, and the workers."""
    return sum(len(tf_config["cluster"].get(role, [])) for role in ("chief", "worker"))


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The tf.distribute strategy `name` (one of STRATEGIES).

    `multiworker` must be built before TensorFlow runs any op in the process (it configures
    the collective ops), and starts this worker's gRPC server at the address TF_CONFIG gives.
    """
    if name == MULTIWORKER:
        read_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == MIRRORED:
        return tf.distribute.MirroredStrategy()
    if name == DEFAULT:
        return tf.distribute.get_strategy()
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes MODEL: always, but for the non-chief workers of a cluster."""
    return strategy.extended.should_checkpoint


def _path(config: TrainConfig, *parts: str) -> str:
    return file_io.join(config.model_dir, *parts)


def _read_json(path: str) -> Optional[Any]:
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def _write_json(path: str, obj: Any) -> None:
    file_io.write_atomic(path, json.dumps(obj, indent=2) + "\n")


def check_resumable(config: TrainConfig, write: bool = True) -> None:
    """Record the run's settings in MODEL (unless not `write`). ResumeError if MODEL has
    checkpoints of a run with other settings, or of a run whose train_config.json was written by
    an older crewstream (other keys than this version records): the settings its checkpoints were
    trained with cannot be compared with this run's."""
    path = _path(config, CONFIG_FILE)
    current = config.to_json()
    previous = _read_json(path)
    if previous is not None and tf.io.gfile.exists(_path(config, CHECKPOINTS_DIR)):
        _check_same_keys(previous, current, path)
        changed = sorted(k for k in current
                         if k not in RESUMABLE_CHANGES and previous[k] != current[k])
        if changed:
            raise ResumeError(
                f"{config.model_dir} holds checkpoints of a run with other settings "
                f"({', '.join(f'{k}: {previous[k]!r} -> {current[k]!r}' for k in changed)}); "
                "re-run with the same settings to resume, or use a new --model-dir")
    if write:
        ownership.claim(config.model_dir, ownership.MODEL)  # the marker a rerun knows MODEL by
        _write_json(path, current)


def _check_same_keys(previous: Any, current: Dict[str, Any], path: str) -> None:
    """ResumeError, one line, unless the train_config.json `previous` has exactly the keys of
    `current` (and of its "model")."""
    def keys(settings: Any) -> set:
        if not isinstance(settings, dict):
            return set()
        model = settings.get("model")
        return set(settings) | {f"model.{k}" for k in (model if isinstance(model, dict) else ())}

    missing, unknown = sorted(keys(current) - keys(previous)), sorted(keys(previous) - keys(current))
    if missing or unknown:
        details = "; ".join(part for part in (f"without {', '.join(missing)}" if missing else "",
                                              f"with {', '.join(unknown)}" if unknown else "") if part)
        raise ResumeError(f"{path} was written by an older crewstream ({details}): train into a new "
                          "--model-dir")


class HistoryFile:
    """MODEL/history.json, one entry per finished epoch, kept across resumed runs.

    Epochs are numbered from 1 as the progress bar shows them. An entry for an epoch that is
    about to run again (the run was killed after writing it, before its checkpoint) is dropped.
    With `write` False (a non-chief worker) the file is read but only kept up to date in memory.
    """

    def __init__(self, path: str, write: bool = True):
        self.path = path
        self.write = write
        self.history: Dict[str, List[Any]] = _read_json(path) or {"epoch": []}

    def _save(self) -> None:
        if self.write:
            _write_json(self.path, self.history)

    def _truncate(self, epochs_done: int) -> None:
        """Keep the first `epochs_done` epochs' entries; drop the run-level keys (e.g. BEST_EPOCH):
        they are set again at the end of the next epoch."""
        keep = sum(1 for e in self.history["epoch"] if e <= epochs_done)
        self.history = {k: v[:keep] for k, v in self.history.items() if isinstance(v, list)}

    def set(self, key: str, value: Any) -> None:
        """A run-level entry (not a per-epoch list), e.g. BEST_EPOCH."""
        self.history[key] = value
        self._save()

    def on_epoch_begin(self, epoch: int, logs: Optional[Dict] = None) -> None:
        if self.history["epoch"] and self.history["epoch"][-1] > epoch:
            self._truncate(epoch)
            self._save()

    def on_epoch_end(self, epoch: int, logs: Optional[Dict] = None) -> None:
        self._truncate(epoch)
        self.history["epoch"].append(epoch + 1)
        for key, value in sorted((logs or {}).items()):
            self.history.setdefault(key, []).append(float(value))
        self._save()


def best_epoch(history: Mapping[str, Any]) -> Optional[int]:
    """The epoch (as numbered in history["epoch"]) of the lowest MONITOR value, the first of
    equal ones, as Keras' EarlyStopping counts an improvement (strictly lower; NaN never is);
    None before any finite value."""
    best, lowest = None, float("inf")
    for epoch, value in zip(history.get("epoch", []), history.get(MONITOR, [])):
        if value < lowest:
            best, lowest = epoch, value
    return best


def stops_after(history: Mapping[str, Any], patience: int) -> bool:
    """Whether early stopping ends the run after the last epoch of `history`: MONITOR has not
    improved for `patience` epochs (Keras: wait >= patience, never after the first epoch)."""
    epochs = history.get("epoch", [])
    if len(epochs) < 2:
        return False
    best = best_epoch(history)
    return epochs[-1] - (best if best is not None else 0) >= patience


def _save_weights(path: str, epoch: int, arrays: Sequence[np.ndarray]) -> None:
    """An npz of the epoch number and the model's weights in get_weights() order (no pickles)."""
    buffer = io.BytesIO()
    np.savez(buffer, epoch=np.int64(epoch), **{f"weight_{i:04d}": a for i, a in enumerate(arrays)})
    file_io.write_atomic(path, buffer.getvalue())


def _load_weights(path: str, epoch: int) -> List[np.ndarray]:
    """The weights _save_weights wrote for `epoch`; ResumeError if the file is missing or holds
    another epoch."""
    if not tf.io.gfile.exists(path):
        raise ResumeError(f"{path} is missing: the weights of epoch {epoch}, the best one in "
                          f"{HISTORY_FILE}, cannot be exported; re-train in a new --model-dir")
    with tf.io.gfile.GFile(path, "rb") as f:
        saved = np.load(io.BytesIO(f.read()), allow_pickle=False)
    if int(saved["epoch"]) != epoch:
        raise ResumeError(f"{path} holds epoch {int(saved['epoch'])}, but the best one in "
                          f"{HISTORY_FILE} is {epoch}; re-train in a new --model-dir")
    return [saved[k] for k in sorted(k for k in saved.files if k.startswith("weight_"))]


class EarlyStopping:
    """`--early-stopping PATIENCE`: stop when MONITOR (the watched split's loss) has not improved for
    PATIENCE epochs, as Keras' EarlyStopping(monitor="val_loss", patience=PATIENCE) does, and
    keep the best epoch's weights for the export (whether or not the run stopped early).

    Nothing lives only in this object, so a killed run resumes it: the best epoch and the epochs
    waited are derived from `history` (history.json) every time, and the best epoch's weights
    are kept in memory and, by the chief, in MODEL/checkpoints/best_epoch.npz. Its on_epoch_end
    runs after the backup, so a kill in between leaves the best epoch checkpointed but not kept:
    on_epoch_begin then keeps the weights BackupAndRestore has just restored, which are that
    epoch's.

    Under the multiworker strategy every worker decides alone, from the same numbers: val_loss
    is aggregated over all workers before Keras logs it (history.json is identical on every
    worker), so all set stop_training after the same epoch; only the chief writes files, and
    every worker holds the same best weights.
    """

    def __init__(self, net, patience: int, history: HistoryFile, weights_path: str, write: bool):
        self.net, self.patience, self.history = net, patience, history
        self.weights_path, self.write = weights_path, write
        self._kept: Optional[Tuple[int, List[np.ndarray]]] = None  # (epoch, weights)

    def best_epoch(self) -> Optional[int]:
        return best_epoch(self.history.history)

    def stopped(self) -> bool:
        """Whether the run so far has already stopped (a re-run then trains nothing)."""
        return stops_after(self.history.history, self.patience)

    def _keep(self, epoch: int) -> None:
        self._kept = (epoch, self.net.get_weights())
        if self.write:
            _save_weights(self.weights_path, epoch, self._kept[1])

    def on_epoch_begin(self, epoch: int, logs: Optional[Dict] = None) -> None:
        best = self.best_epoch()  # over the `epoch` epochs done: history dropped any later entry
        if best is not None and best == epoch and (self._kept is None or self._kept[0] != best):
            self._keep(best)

    def on_epoch_end(self, epoch: int, logs: Optional[Dict] = None) -> None:
        best = self.best_epoch()
        if best == epoch + 1:
            self._keep(best)
        self.history.set(BEST_EPOCH, best)
        if stops_after(self.history.history, self.patience):
            self.net.stop_training = True

    def best_weights(self) -> Optional[List[np.ndarray]]:
        """The best epoch's weights (None before any finite MONITOR value)."""
        best = self.best_epoch()
        if best is None:
            return None
        if self._kept is not None and self._kept[0] == best:
            return self._kept[1]
        return _load_weights(self.weights_path, best)


def _describe(stats: Dict[str, Any], config: TrainConfig, workers: int) -> str:
    train = stats["splits"][output_folder.TRAIN]
    w = weights.class_weights(train["class_counts"], config.weighting)
    if config.dense:
        chunks = data.num_chunks(stats, output_folder.TRAIN)
        return (f"train (dense): {chunks:,} chunks of {len(stats['features'])} features, "
                f"{data.windowed_stats(stats, stride=1)['splits'][output_folder.TRAIN]['num_windows']:,} rows "
                f"ending a window of {stats['window']}; "
                f"{config.steps_per_epoch or -(-chunks // config.batch_size):,} steps of "
                f"{config.batch_size} chunks per epoch; weights ({config.weighting}) of the stride-1 counts")
    if config.steps_per_epoch:
        steps = f"{config.steps_per_epoch:,} steps"
    elif workers == 1:
        steps = f"{data.steps_per_epoch(stats, output_folder.TRAIN, config.batch_size):,} steps"
    else:  # tf.distribute steps every worker until the last has run out of its part
        steps = "one pass"
    if workers > 1:
        parts = [data.num_windows(stats, output_folder.TRAIN, workers, k) for k in range(workers)]
        steps += f" over {workers} workers reading by file ({', '.join(f'{n:,}' for n in parts)} windows)"
    if config.data_service:
        steps += f", input on the tf.data service {config.data_service}"
    return (f"train: {train['num_windows']:,} windows of {stats['window']} x {len(stats['features'])} "
            f"every {stats['stride']} rows "
            f"({','.join(stats['features'])}) in {len(train['shards'])} shard(s); {steps} of "
            f"{config.batch_size} per epoch; weights ({config.weighting}) "
            + ", ".join(f"{k} {v:.3g}" for k, v in w.items()))


def watched_split(stats: Dict[str, Any]) -> Optional[str]:
    """The split whose loss Keras logs as val_loss and early stopping watches: val when it has
    windows (then eval is left to the reports alone), else eval (an older way of working: what is
    chosen on eval is then reported on it too), else None."""
    for split in (output_folder.VAL, output_folder.EVAL):
        if stats["splits"].get(split, {}).get("num_windows"):
            return split
    return None


def _datasets(config: TrainConfig, stats: Dict[str, Any], workers: int, watched: Optional[str]):
    """(train, `watched` split or None) datasets (watched_split); both splits are checked before
    any training starts."""
    if config.dense:
        return _dense_datasets(config, stats, watched)
    common = dict(stats=stats, num_workers=workers, data_service=config.data_service)
    train_ds = data.make_dataset(config.data, output_folder.TRAIN, config.batch_size, config.weighting,
                                 shuffle=True, repeat=config.steps_per_epoch is not None,
                                 seed=config.seed, shuffle_buffer=config.shuffle_buffer, **common)
    watched_ds = None
    if watched:
        watched_ds = data.make_dataset(config.data, watched, config.batch_size, config.weighting, **common)
    return train_ds, watched_ds


def _dense_datasets(config: TrainConfig, stats: Dict[str, Any], watched: Optional[str]):
    """(train, watched or None) chunk datasets of dense training: `batch_size` chunks per step."""
    train_ds = data.make_dense_dataset(config.data, output_folder.TRAIN, config.batch_size, config.weighting,
                                       shuffle=True, repeat=config.steps_per_epoch is not None,
                                       seed=config.seed, stats=stats)
    watched_ds = None
    if watched:
        watched_ds = data.make_dense_dataset(config.data, watched, config.batch_size, config.weighting, stats=stats)
    return train_ds, watched_ds


def calibrate(net, config: TrainConfig, stats: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The temperature of `net` fitted on the val split (trainer.calibration.fit_on_split: its
    windows at the run's window and stride, unweighted), or None without a val split: nothing
    fitted after the weights may look at eval, which the reports are of. Every worker of a
    cluster fits the same number from the same weights and windows."""
    if watched_split(stats) != output_folder.VAL:
        _LOG.info("no val split: the model is not calibrated (temperature 1; preprocess with --val-crews)")
        return None
    fitted = calibration.fit_on_split(net, config.data, output_folder.VAL, stats, config.batch_size)
    return {"split": output_folder.VAL, **fitted}


def _export(net, config: TrainConfig, stats: Dict[str, Any], chief: bool, temperature: float = 1.0) -> Optional[str]:
    """MODEL/serving on the chief. The other workers save too, as TF asks of every worker of a
    cluster (a save may read variables through collectives), into a temporary folder they remove;
    they return None. `net`: under a strategy a plain copy of the network, so that the SavedModel
    runs outside the cluster."""
    if chief:
        return export.export_serving(net, config.data, config.model_dir, stats, config.model, temperature)
    scratch = tempfile.mkdtemp(prefix="crewstream-worker-export-")
    try:
        export.export_serving(net, config.data, scratch, stats, config.model, temperature)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return None


def train(config: TrainConfig, extra_callbacks: Sequence[Any] = ()) -> Dict[str, Any]:
    """Train (or resume) the run `config` describes, export MODEL/serving, draw the plots.

    `extra_callbacks` (Keras callbacks, e.g. from trainer.model.epoch_callback) run after the
    run's own, so at their on_epoch_end the epoch is already checkpointed and in history.json.
    Returns {"history": the whole run's history, "serving": path (None on a non-chief worker),
    "chief": whether this process wrote MODEL, "model": the trained Keras model (with early
    stopping, holding the exported best epoch's weights)}.
    The windows are `config.window` x `config.stride` (None: stats.json's; other ones only on a
    sequence folder), and everything after reads stats.json as data.windowed_stats counts them:
    steps, weights, the model's window and the exported W.
    Raises StrategyError (TF_CONFIG), data.ShardingError (fewer shards than workers),
    model_lib.ModelError (a tcn whose receptive field exceeds the window), ResumeError,
    data.EmptySplitError, data.WindowError (a window or stride the folder cannot give), StatsError.
    """
    # Everything that can be wrong with the input is found before the cluster starts (building
    # the multiworker strategy waits for every worker), and nothing before it runs a TF op.
    workers = num_workers(read_tf_config()) if config.strategy == MULTIWORKER else 1
    stats = data.windowed_stats(read_stats(config.data), config.window, config.stride)
    data.check_distribution(stats, config.data_service)
    if config.dense and sequence.layout_of(stats) != sequence.SEQUENCE:
        raise data.WindowError(f"{config.data}: --dense reads a sequence folder's chunks; this one has the "
                               f"{sequence.layout_of(stats)} layout (preprocess with --layout sequence)")
    config = dataclasses.replace(config, model=config.model.for_window(stats["window"]))  # ModelError
    for split in output_folder.splits_of(stats):
        if stats["splits"][split]["num_windows"]:
            data.check_shards(stats, split, workers)
    if config.early_stopping and watched_split(stats) is None:
        raise data.EmptySplitError(f"{config.data}: --early-stopping watches the val split's loss, but there is "
                                   "no val split and split 'eval' has no windows (preprocess with --val-crews)")
    strategy = make_strategy(config.strategy)
    chief = is_chief(strategy)
    check_resumable(config, write=chief)
    model_lib.set_seed(config.seed)
    watched = watched_split(stats)
    train_ds, eval_ds = _datasets(config, stats, workers, watched)
    if watched == output_folder.EVAL and config.early_stopping:
        _LOG.warning("no val split: early stopping watches the eval split, the one evaluate reports on "
                     "(preprocess with --val-crews to keep eval out of every choice)")
    elif watched:
        _LOG.info("%s is the %s split's loss", MONITOR, watched)
    _LOG.info(_describe(stats, config, workers))
    _LOG.info("model %s", config.model.describe())

    with strategy.scope():
        net = model_lib.build_model(stats["window"], len(stats["features"]), config.model)
        fitted = model_lib.dense_model(net, config.model) if config.dense else net
    history = HistoryFile(_path(config, HISTORY_FILE), write=chief)
    callbacks = [
        # history before the backup: a kill between the two re-runs the epoch and rewrites its entry
        model_lib.epoch_callback(history.on_epoch_begin, history.on_epoch_end),
        # both write to MODEL on the chief only (to temporary folders on the other workers)
        model_lib.backup_and_restore(_path(config, CHECKPOINTS_DIR)),
        model_lib.tensorboard(_path(config, LOGS_DIR)),
    ]
    early = None
    if config.early_stopping:
        # after the backup: see EarlyStopping
        early = EarlyStopping(net, config.early_stopping, history,
                              _path(config, CHECKPOINTS_DIR, BEST_WEIGHTS_FILE), write=chief)
        callbacks.append(model_lib.epoch_callback(early.on_epoch_begin, early.on_epoch_end))
    if early is not None and early.stopped():  # a re-run of a run that stopped early
        _LOG.info("the run stopped early after epoch %d: nothing to train", history.history["epoch"][-1])
    else:
        fitted.fit(train_ds, epochs=config.epochs, steps_per_epoch=config.steps_per_epoch,
                validation_data=eval_ds, callbacks=[*callbacks, *extra_callbacks],
                verbose=config.verbose)
    kept = early.best_weights() if early is not None else None
    if kept is not None:
        _LOG.info("exporting epoch %d, the lowest %s", early.best_epoch(), MONITOR)
        net.set_weights(kept)

    plain = model_lib.plain_copy(net) if config.strategy != DEFAULT else net
    calibrated = calibrate(plain, config, stats)
    if calibrated is not None:
        history.set(CALIBRATION, calibrated)
    serving = _export(plain, config, stats, chief, calibrated["temperature"] if calibrated else 1.0)
    if chief:
        plots.plot_history(history.history, _path(config, PLOTS_DIR), validation=watched)
    return {"history": history.history, "serving": serving, "chief": chief, "model": net}
