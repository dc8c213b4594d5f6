"""`crewstream train` / `python -m trainer.task`: the command line of a training run.

Only the command line: `_parse_args(argv)` -> `main(argv)` -> TrainConfig -> trainer.train.train.
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
from trainer.choices import MODELS, NORMALIZATIONS, STRATEGIES

DEFAULTS = {"epochs": 10, "batch_size": 64, "seed": 0, "units": 64, "layers": 1, "dropout": 0.2,
            "learning_rate": 1e-3, "model": "tcn", "filters": 32, "kernel_size": 3, "normalize": "center",
            "augment_gain": 1.0}


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
    parser = argparse.ArgumentParser(
        prog="crewstream train",
        description="Stream the TFRecord shards of a preprocess output into a classifier (an "
                    "LSTM, or a causal convolutional network) with per-sample class weights, "
                    "checkpoint every epoch, and export MODEL/serving (raw windows in, "
                    "probabilities out). Re-running the same "
                    "command after a kill resumes from the last finished epoch.")
    parser.add_argument("--data", required=True, help="preprocess output folder OUT (with stats.json)")
    parser.add_argument("--model-dir", required=True, help="folder of the run, MODEL (created)")
    parser.add_argument("--epochs", type=_positive_int, default=DEFAULTS["epochs"],
                        help=f"epochs in total, resumed ones included (default {DEFAULTS['epochs']})")
    parser.add_argument("--batch-size", type=_positive_int, default=DEFAULTS["batch_size"],
                        help=f"windows per batch (default {DEFAULTS['batch_size']})")
    parser.add_argument("--weighting", type=_weighting, default=weights.BALANCED,
                        help=f"per-sample weights: {', '.join(weights.METHODS)} (default balanced)")
    parser.add_argument("--window", type=_positive_int, default=None,
                        help="rows per window: on a sequence folder (preprocess --layout sequence) "
                             "any up to its --window; a windows folder holds only its own (default: "
                             "stats.json's window); the exported model takes windows of this size")
    parser.add_argument("--stride", type=_positive_int, default=None,
                        help="rows between window starts: on a sequence folder any, from 1 (every "
                             "window); a windows folder holds only its own (default: stats.json's stride)")
    parser.add_argument("--dense", action="store_true",
                        help="tcn on a sequence folder: run the network once over each chunk and "
                             "train on every row a window of --window rows ends at (all stride-1 "
                             "windows for the cost of one pass), weighted from the stride-1 class "
                             "counts; --batch-size then counts chunks per step, the eval loss is over "
                             "the eval split's stride-1 windows, and --stride is not used")
    parser.add_argument("--steps-per-epoch", type=_positive_int, default=None,
                        help="batches per epoch over the repeated train split (default: one exact "
                             "pass, ceil(train windows / batch size))")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="random seed (default 0)")
    parser.add_argument("--model", choices=MODELS, default=DEFAULTS["model"],
                        help="lstm: LSTM over the window; tcn: residual blocks of causal dilated "
                             "convolutions with a softmax at every step, whose serving model also "
                             "predicts a whole recording in one pass (default tcn: with --normalize "
                             "center the best measured on a crew it has not seen, benchmarks/README.md)")
    parser.add_argument("--units", type=_positive_int, default=DEFAULTS["units"], help="LSTM units (default 64)")
    parser.add_argument("--layers", type=_positive_int, default=DEFAULTS["layers"], help="stacked LSTMs (default 1)")
    parser.add_argument("--filters", type=_positive_int, default=DEFAULTS["filters"],
                        help=f"tcn: convolution filters, the width (default {DEFAULTS['filters']})")
    parser.add_argument("--kernel-size", type=_kernel_size, default=DEFAULTS["kernel_size"],
                        help=f"tcn: convolution kernel, >= 2 (default {DEFAULTS['kernel_size']})")
    parser.add_argument("--blocks", type=_positive_int, default=None,
                        help="tcn: residual blocks (dilations 1, 2, 4, ...), the depth; the receptive "
                             "field is 1 + 2 (kernel - 1) (2^blocks - 1) rows and must fit the "
                             "window (default: as many blocks as fit)")
    parser.add_argument("--dropout", type=_dropout, default=DEFAULTS["dropout"],
                        help="LSTM input dropout; tcn: dropout after each convolution (default 0.2)")
    parser.add_argument("--normalize", choices=NORMALIZATIONS, default=DEFAULTS["normalize"],
                        help="the model's first stage, per feature and causal, carried by the "
                             "serving model: none; center (minus the mean of the last --norm-rows "
                             "rows); zscore (that, divided by their standard deviation). Removes "
                             "a person's levels (zscore: and gains), so that a model can recognize "
                             "a state in a person it has not seen; benchmarks/README.md compares "
                             f"them (default {DEFAULTS['normalize']})")
    parser.add_argument("--augment-gain", type=_gain, default=DEFAULTS["augment_gain"], metavar="G",
                        help="training only: each window's (--dense: each chunk's) features each "
                             "multiplied by a random gain in [1/G, G], so that the model cannot "
                             "recognize a state by the signal levels of the few people it trained "
                             "on; the serving model has no such stage. Measured (benchmarks/"
                             "README.md, \"Models on a new crew\"): 2 helps with 2 train crews (the "
                             "demo), hurts with 8 (the Kaggle size) (default 1: none)")
    parser.add_argument("--norm-rows", type=_norm_rows, default=None,
                        help="rows --normalize looks back over, >= 2; a tcn's receptive field "
                             "counts them (default: half the window)")
    parser.add_argument("--learning-rate", type=_positive_float, default=DEFAULTS["learning_rate"],
                        help="Adam learning rate (default 0.001)")
    parser.add_argument("--shuffle-buffer", type=_positive_int, default=None,
                        help="windows in the shuffle buffer (default 2048)")
    parser.add_argument("--early-stopping", type=_positive_int, default=None, metavar="PATIENCE",
                        help="stop when the eval loss (val_loss) has not improved for PATIENCE "
                             "epochs, and export the best epoch's weights, not the last (default: "
                             "train every epoch, export the last)")
    parser.add_argument("--strategy", choices=STRATEGIES, default="default",
                        help="default: one device; mirrored: the local GPUs (tf.distribute."
                             "MirroredStrategy); multiworker: every worker of the cluster in "
                             "TF_CONFIG runs this same command (MultiWorkerMirroredStrategy; the "
                             "shards are split between workers by file, --batch-size is global, "
                             "MODEL must be shared and only the chief writes it)")
    parser.add_argument("--data-service", type=_service_address, default=None, metavar="grpc://HOST:PORT",
                        help="run the input pipeline on the tf.data service of this dispatcher (its "
                             "workers read the shards under --data themselves); not with multiworker")
    console.add_progress(parser, "Keras output (log: one line per epoch; 'epoch' is accepted for log)")
    console.add_verbose(parser)
    args = parser.parse_args(argv)
    if args.dense and args.model != "tcn":
        parser.error(f"--dense needs --model tcn: an {args.model} has no per-row outputs")
    if args.dense and args.stride:
        parser.error("--stride has no use with --dense: it trains on every window (stride 1)")
    if args.dense and (args.strategy == "multiworker" or args.data_service):
        parser.error("--dense runs on one machine: not with --strategy multiworker or --data-service")
    if args.strategy == "multiworker" and args.data_service:
        parser.error("--data-service cannot be combined with --strategy multiworker: every worker "
                     "would run its own jobs over the whole split")
    return args


def _config(args: argparse.Namespace):
    from trainer import data, model, train

    return train.TrainConfig(
        data=args.data, model_dir=args.model_dir, epochs=args.epochs, batch_size=args.batch_size,
        weighting=args.weighting, steps_per_epoch=args.steps_per_epoch, seed=args.seed,
        shuffle_buffer=args.shuffle_buffer or data.DEFAULT_SHUFFLE_BUFFER,
        model=model.ModelParams(units=args.units, layers=args.layers, dropout=args.dropout,
                                learning_rate=args.learning_rate, kind=args.model, filters=args.filters,
                                kernel_size=args.kernel_size, blocks=args.blocks,
                                normalize=args.normalize, norm_rows=args.norm_rows,
                                augment_gain=args.augment_gain),
        verbose={"bar": 1, "log": 2, "none": 0}[console.resolve_progress(args.progress, sys.stdout)],
        strategy=args.strategy, data_service=args.data_service, early_stopping=args.early_stopping,
        window=args.window, stride=args.stride, dense=args.dense,
    )


def _summary(history, args: argparse.Namespace) -> str:
    """The line a run ends with: epochs trained and the metrics of the exported epoch (the last,
    or with --early-stopping the best one, history["best_epoch"])."""
    epochs = history["epoch"]
    done = f"trained {epochs[-1] if epochs else 0} epoch(s)"
    row = -1
    if args.early_stopping:
        kept = history.get("best_epoch")
        if epochs and epochs[-1] < args.epochs:
            done += f", stopped early (val_loss not lower for {args.early_stopping} epoch(s))"
        if kept in epochs:
            row = epochs.index(kept)
            done += f"; kept epoch {kept}"
    values = {k: v[row] for k, v in history.items() if isinstance(v, list) and v and k != "epoch"}
    return done + ": " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(values.items()))


def _writes_model(args: argparse.Namespace) -> bool:
    """Whether this process writes MODEL (trainer.train.is_chief, read from TF_CONFIG without
    importing TensorFlow): always, but for a multiworker cluster's workers other than the chief
    (task `chief`, else worker 0). An unreadable TF_CONFIG counts as writing (train refuses it)."""
    if args.strategy != "multiworker":
        return True
    try:
        config = json.loads(os.environ.get("TF_CONFIG", ""))
        task, cluster = config["task"], config["cluster"]
        return task["type"] == "chief" or (task["type"] == "worker" and task["index"] == 0 and "chief" not in cluster)
    except (ValueError, KeyError, TypeError):
        return True


@failure.command("train")
def main(argv: Optional[List[str]] = None) -> int:
    args = _parse_args(argv)
    console.setup(args.verbose)
    hold = (ownership.hold(args.model_dir, f"--model-dir {args.model_dir}") if _writes_model(args)
            else contextlib.nullcontext())
    with hold:  # one run at a time writes MODEL
        # MODEL must be crewstream's to write (tfrecords_schema.ownership), checked before TensorFlow loads
        ownership.check_output_folder(args.model_dir, ownership.MODEL, inputs=[args.data], flag="--model-dir")
        console.check_preprocess_output(args.data, "--data")
        from trainer import train  # TensorFlow is imported only once the arguments are good

        result = train.train(_config(args))
    print(_summary(result["history"], args))
    print(f"exported {result['serving']}" if result["chief"]
          else f"worker done; {args.model_dir} is written by the chief")
    return 0


if __name__ == "__main__":
    sys.exit(main())
