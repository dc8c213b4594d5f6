"""`crewstream train` / `python -m trainer.task`: the command line of a training run.

Only the command line: `main(argv)` -> the arguments -> a TrainConfig (the one
`config_from_argv(argv)` returns) -> trainer.train.train. Every flag's default, and the default
its help shows, is the field's default in trainer.config (TrainConfig, ModelParams).
"""

import argparse
import contextlib
import json
import os
import re
import sys
from typing import List, Optional

from cli_common import console, failure
from tfrecords_schema import ownership
from trainer import weights
from trainer.choices import MODELS, MULTIWORKER, NORMALIZATIONS, STRATEGIES, TCN
from trainer.config import ModelParams, TrainConfig

_positive_int = console.int_at_least(1)
_kernel_size = _norm_rows = console.int_at_least(2)


def _gain(text: str) -> float:
    value = float(text)
    if not value >= 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (1: no augmentation), got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _dropout(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _weighting(text: str) -> str:
    try:
        weights.parse_method(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


_SERVICE_ADDRESS = re.compile(r"^(grpc://)?[^:/\s]+:\d+$")


def _service_address(text: str) -> str:
    if not _SERVICE_ADDRESS.match(text):
        raise argparse.ArgumentTypeError(f"expected grpc://HOST:PORT, got {text!r}")
    return text


def _parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    run, model = TrainConfig, ModelParams  # their fields' defaults are the flags'
    parser = argparse.ArgumentParser(
        prog="crewstream train",
        description="Stream the TFRecord shards of a preprocess output into a classifier (an "
                    "LSTM, or a causal convolutional network) with per-sample class weights, "
                    "checkpoint every epoch, and export MODEL/serving (raw windows in, "
                    "probabilities out). Re-running the same "
                    "command after a kill resumes from the last finished epoch.")
    parser.add_argument("--data", required=True, help="preprocess output folder OUT (with stats.json)")
    parser.add_argument("--model-dir", required=True, help="folder of the run, MODEL (created)")
    parser.add_argument("--epochs", type=_positive_int, default=run.epochs,
                        help=f"epochs in total, resumed ones included (default {run.epochs})")
    parser.add_argument("--batch-size", type=_positive_int, default=run.batch_size,
                        help=f"windows per batch (default {run.batch_size})")
    parser.add_argument("--weighting", type=_weighting, default=run.weighting,
                        help=f"per-sample weights: {', '.join(weights.METHODS)} (default {run.weighting})")
    parser.add_argument("--window", type=_positive_int, default=run.window,
                        help="rows per window: on a sequence folder (preprocess --layout sequence) "
                             "any up to its --window; a windows folder holds only its own (default: "
                             "stats.json's window); the exported model takes windows of this size")
    parser.add_argument("--stride", type=_positive_int, default=run.stride,
                        help="rows between window starts: on a sequence folder any, from 1 (every "
                             "window); a windows folder holds only its own (default: stats.json's stride)")
    parser.add_argument("--dense", action="store_true",
                        help="tcn on a sequence folder: run the network once over each chunk and "
                             "train on every row a window of --window rows ends at (all stride-1 "
                             "windows for the cost of one pass), weighted from the stride-1 class "
                             "counts; --batch-size then counts chunks per step, val_loss is over "
                             "the val split's (else eval's) stride-1 windows, and --stride is not used")
    parser.add_argument("--steps-per-epoch", type=_positive_int, default=run.steps_per_epoch,
                        help="batches per epoch over the repeated train split (default: one exact "
                             "pass, ceil(train windows / batch size))")
    parser.add_argument("--seed", type=int, default=run.seed, help=f"random seed (default {run.seed})")
    parser.add_argument("--model", choices=MODELS, default=model.kind,
                        help="lstm: LSTM over the window; tcn: residual levels of causal dilated "
                             "convolutions with a softmax at every step, whose serving model also "
                             "predicts a whole recording in one pass (default "
                             f"{model.kind}: with --normalize {model.normalize} and --augment-gain "
                             f"{model.augment_gain:g} the best measured on a flight of a crew in no split, "
                             "benchmarks/README.md)")
    parser.add_argument("--units", type=_positive_int, default=model.units,
                        help=f"LSTM units (default {model.units})")
    parser.add_argument("--layers", type=_positive_int, default=model.layers,
                        help=f"stacked LSTMs (default {model.layers})")
    parser.add_argument("--filters", type=_positive_int, default=model.filters,
                        help="tcn: convolution filters, the width. Measured (benchmarks/README.md, "
                             "\"Defaults on a flight\"): 64 against 32 lowered the mean log loss on a "
                             "flight of a crew in no split from 0.116 to 0.091 and raised B's lowest "
                             "recall from 0.55 to 0.87, for 1.9x the training time "
                             f"(default {model.filters})")
    parser.add_argument("--kernel-size", type=_kernel_size, default=model.kernel_size,
                        help=f"tcn: convolution kernel, >= 2 (default {model.kernel_size})")
    parser.add_argument("--levels", type=_positive_int, default=model.levels,
                        help="tcn: residual levels, each two causal convolutions of dilation 1, 2, "
                             "4, ... (doubling per level), the depth; the receptive field is L + 2 "
                             "(kernel - 1) (2^levels - 1) rows (L: --norm-rows; 1 with --normalize "
                             "none) and must fit the window (default: as many levels as fit)")
    parser.add_argument("--dropout", type=_dropout, default=model.dropout,
                        help=f"LSTM input dropout; tcn: dropout after each convolution (default {model.dropout:g})")
    parser.add_argument("--normalize", choices=NORMALIZATIONS, default=model.normalize,
                        help="the model's first stage, per feature and causal, carried by the "
                             "serving model: none; center (minus the mean of the last --norm-rows "
                             "rows); zscore (that, divided by their standard deviation). Removes "
                             "a person's levels (zscore: and gains), so that a model can recognize "
                             "a state in a person it has not seen; benchmarks/README.md compares "
                             f"them (default {model.normalize})")
    parser.add_argument("--augment-gain", type=_gain, default=model.augment_gain, metavar="G",
                        help="training only: each window's (--dense: each chunk's) features each "
                             "multiplied by a random gain in [1/G, G], so that the model cannot "
                             "recognize a state by the signal levels of the few people it trained "
                             "on; the serving model has no such stage; 1: none. Measured (benchmarks/"
                             "README.md, \"Defaults on a flight\"): 2 gave the lowest log loss and the "
                             "best macro F1 on a flight of a crew in no split with 4 train crews, whose "
                             "people differ in every signal's gain (on the older sample, without those "
                             f"gains, it hurt with 8 train crews) (default {model.augment_gain:g})")
    parser.add_argument("--norm-rows", type=_norm_rows, default=model.norm_rows,
                        help="rows --normalize looks back over, >= 2; a tcn's receptive field "
                             "counts them (default: half the window)")
    parser.add_argument("--learning-rate", type=_positive_float, default=model.learning_rate,
                        help=f"Adam learning rate (default {model.learning_rate:g})")
    parser.add_argument("--shuffle-buffer", type=_positive_int, default=run.shuffle_buffer,
                        help=f"windows in the shuffle buffer (default {run.shuffle_buffer})")
    parser.add_argument("--early-stopping", type=_positive_int, default=run.early_stopping, metavar="PATIENCE",
                        help="stop when val_loss, the loss on the val split (preprocess "
                             "--val-crews; without one, on eval), has not improved for PATIENCE "
                             "epochs, and export the best epoch's weights, not the last (default: "
                             "train every epoch, export the last)")
    parser.add_argument("--strategy", choices=STRATEGIES, default=run.strategy,
                        help="default: one device; mirrored: the local GPUs (tf.distribute."
                             "MirroredStrategy); multiworker: every worker of the cluster in "
                             "TF_CONFIG runs this same command (MultiWorkerMirroredStrategy; the "
                             "shards are split between workers by file, --batch-size is global, "
                             "MODEL must be shared and only the chief writes it)")
    parser.add_argument("--data-service", type=_service_address, default=run.data_service, metavar="grpc://HOST:PORT",
                        help="run the input pipeline on the tf.data service of this dispatcher (its "
                             "workers read the shards under --data themselves); not with multiworker")
    console.add_progress(parser, "Keras output (log: one line per epoch)")
    console.add_verbose(parser)
    args = parser.parse_args(argv)
    if args.dense and args.model != TCN:
        parser.error(f"--dense needs --model {TCN}: an {args.model} has no per-row outputs")
    if args.dense and args.stride:
        parser.error("--stride has no use with --dense: it trains on every window (stride 1)")
    if args.dense and (args.strategy == MULTIWORKER or args.data_service):
        parser.error("--dense runs on one machine: not with --strategy multiworker or --data-service")
    if args.strategy == MULTIWORKER and args.data_service:
        parser.error("--data-service cannot be combined with --strategy multiworker: every worker "
                     "would run its own jobs over the whole split")
    return args


def _config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        data=args.data, model_dir=args.model_dir, epochs=args.epochs, batch_size=args.batch_size,
        weighting=args.weighting, steps_per_epoch=args.steps_per_epoch, seed=args.seed,
        shuffle_buffer=args.shuffle_buffer,
        model=ModelParams(units=args.units, layers=args.layers, dropout=args.dropout,
                          learning_rate=args.learning_rate, kind=args.model, filters=args.filters,
                          kernel_size=args.kernel_size, levels=args.levels,
                          normalize=args.normalize, norm_rows=args.norm_rows,
                          augment_gain=args.augment_gain),
        verbose={"bar": 1, "log": 2, "none": 0}[console.resolve_progress(args.progress, sys.stdout)],
        strategy=args.strategy, data_service=args.data_service, early_stopping=args.early_stopping,
        window=args.window, stride=args.stride, dense=args.dense,
    )


def config_from_argv(argv: Optional[List[str]]) -> TrainConfig:
    """The TrainConfig `crewstream train ARGV` runs (main builds it from the same parse); a usage
    error exits as argparse does (SystemExit 2). Imports no TensorFlow."""
    return _config(_parse_args(argv))


def _summary(history, config: TrainConfig) -> str:
    """The line a run ends with: epochs trained and the metrics of the exported epoch (the last,
    or with --early-stopping the best one, history["best_epoch"])."""
    epochs = history["epoch"]
    done = f"trained {epochs[-1] if epochs else 0} epoch(s)"
    row = -1
    if config.early_stopping:
        kept = history.get("best_epoch")
        if epochs and epochs[-1] < config.epochs:
            done += f", stopped early (val_loss not lower for {config.early_stopping} epoch(s))"
        if kept in epochs:
            row = epochs.index(kept)
            done += f"; kept epoch {kept}"
    values = {k: v[row] for k, v in history.items() if isinstance(v, list) and v and k != "epoch"}
    line = done + ": " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(values.items()))
    calibrated = history.get("calibration")
    if calibrated:
        line += (f"; calibrated on {calibrated['split']}: temperature {calibrated['temperature']:.3f}, log loss "
                 f"{calibrated['log_loss_before']:.4f} -> {calibrated['log_loss_after']:.4f}")
    return line


def _writes_model(config: TrainConfig) -> bool:
    """Whether this process writes MODEL (trainer.train.is_chief, read from TF_CONFIG without
    importing TensorFlow): always, but for a multiworker cluster's workers other than the chief
    (task `chief`, else worker 0). An unreadable TF_CONFIG counts as writing (train refuses it)."""
    if config.strategy != MULTIWORKER:
        return True
    try:
        tf_config = json.loads(os.environ.get("TF_CONFIG", ""))
        task, cluster = tf_config["task"], tf_config["cluster"]
        return task["type"] == "chief" or (task["type"] == "worker" and task["index"] == 0 and "chief" not in cluster)
    except (ValueError, KeyError, TypeError):
        return True


@failure.command("train")
def main(argv: Optional[List[str]] = None) -> int:
    args = _parse_args(argv)
    console.setup(args.verbose)
    config = _config(args)  # as config_from_argv builds it
    hold = (ownership.hold(config.model_dir, f"--model-dir {config.model_dir}") if _writes_model(config)
            else contextlib.nullcontext())
    with hold:  # one run at a time writes MODEL
        # MODEL must be crewstream's to write (tfrecords_schema.ownership), checked before TensorFlow loads
        ownership.check_output_folder(config.model_dir, ownership.MODEL, inputs=[config.data], flag="--model-dir")
        console.check_preprocess_output(config.data, "--data")
        from trainer import train  # TensorFlow is imported only once the arguments are good

        result = train.train(config)
    print(_summary(result["history"], config))
    print(f"exported {result['serving']}" if result["chief"]
          else f"worker done; {config.model_dir} is written by the chief")
    return 0


if __name__ == "__main__":
    failure.run_process(main)
