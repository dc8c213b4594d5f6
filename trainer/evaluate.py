"""`crewstream evaluate` / `python -m trainer.evaluate`: a split streamed through MODEL/serving.

The exported model (its `scaled` signature, fed the split's scaled windows) is what is measured,
not a Keras object that might differ from what ships. Metrics accumulate batch by batch
(trainer.metrics), so memory does not grow with the split.

Writes MODEL/eval.json (MODEL/eval_SPLIT.json for a split other than `eval`):
    {split, num_windows, log_loss, accuracy, macro_f1,
     per_class: {A: {precision, recall, f1, support}, ...},
     labels: [A, B, C, D], confusion_matrix: rows true, columns predicted, in label order,
     ece, reliability: {bins, count, confidence, accuracy} (trainer.metrics),
     temperature: the serving model's calibration (its serving config; 1.0: none),
     log_loss_uncalibrated: the log loss of the network's probabilities before the temperature}
(through a temporary name: tfrecords_schema.file_io.write_atomic), MODEL/plots/confusion_matrix_SPLIT.png
and MODEL/plots/reliability_SPLIT.png, and prints a table. Following tfrecords_schema.ownership, an
existing report file is replaced only if it is such a report (a JSON object with EVAL_KEYS);
anything else there is refused with one line, before any work.

Every number but log_loss_uncalibrated is of the calibrated probabilities the model serves. The
uncalibrated ones are recovered from them as softmax(T * log q) (trainer.calibration.temper(q,
1 / T)), the exact inverse of the serving model's softmax(log p / T) up to float32 rounding (and
for probabilities above float32's smallest normal, which the log loss's clip makes immaterial);
at T = 1 they are the served probabilities themselves.
"""

import argparse
import dataclasses
import json
import logging
from typing import Any, Dict, List, Optional

from cli_common import console, failure
from tfrecords_schema import serving
from tfrecords_schema import LABEL_VOCABULARY, WINDOW, ownership, read_stats, file_io, output_folder
from trainer import metrics, weights

_LOG = logging.getLogger("crewstream.evaluate")
DEFAULT_BATCH_SIZE = 256
# The keys that make a JSON file an evaluate report (what a new report may replace)
EVAL_KEYS = ("split", "num_windows", "log_loss", "accuracy", "macro_f1", "confusion_matrix")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    data: str
    model_dir: str
    split: str = output_folder.EVAL
    batch_size: int = DEFAULT_BATCH_SIZE
    progress: str = "none"  # cli_common.console.PROGRESS_MODES, on stderr


def report_path(model_dir: str, split: str) -> str:
    name = "eval.json" if split == output_folder.EVAL else f"eval_{split}.json"
    return file_io.join(model_dir, name)


def evaluate(config: EvalConfig) -> Dict[str, Any]:
    """Stream `config.split` through MODEL/serving; write the report and the plot; return the report.
    OwnershipError, before any work, if the report's path holds a file that is not a report."""
    import tensorflow as tf

    from trainer import calibration, data, plots

    path = report_path(config.model_dir, config.split)
    ownership.check_output_json(path, EVAL_KEYS)
    if not tf.io.gfile.exists(serving.serving_dir(config.model_dir)):
        raise EvaluateError(f"{serving.serving_dir(config.model_dir)} not found: train a model first")
    # before any work; the windows the model takes (its W; a sequence folder cuts them, at its stride)
    served = serving.read_config(config.model_dir)
    stats = check_matches(served, read_stats(config.data), config.model_dir, config.data)
    temperature = served["temperature"]
    if config.split not in stats["splits"]:
        raise EvaluateError(f"--data {config.data} has no {config.split} split "
                            f"(preprocess with --{config.split}-crews)")
    serving.check(config.model_dir)
    loaded = serving.load(config.model_dir)
    predict = loaded.signatures[serving.SCALED_SIGNATURE]
    stream = metrics.StreamingMetrics(LABEL_VOCABULARY)
    total = stats["splits"][config.split]["num_windows"]
    progress = console.Progress(config.split, total, "windows", console.resolve_progress(config.progress),
                                logger=_LOG)
    uncalibrated = 0.0  # sum of the log-loss terms of the probabilities before the temperature
    # Weights play no part in the report: every window counts once.
    for window, label, _ in data.make_dataset(config.data, config.split, config.batch_size,
                                                 weighting=weights.NONE, stats=stats):
        probabilities = predict(**{WINDOW: window})[serving.PROBABILITIES].numpy()
        labels = label.numpy()
        stream.update(labels, probabilities)
        uncalibrated += float(metrics.log_loss_terms(calibration.temper(probabilities, 1.0 / temperature),
                                                     labels).sum())
        progress.update(int(label.shape[0]))
    progress.close()
    report = {"split": config.split, **stream.report(), "temperature": temperature}
    report["log_loss_uncalibrated"] = uncalibrated / report["num_windows"]
    file_io.write_atomic(path, json.dumps(report, indent=2) + "\n")
    windows = f"{config.split}: {report['num_windows']:,} windows"
    plot_dir = file_io.join(config.model_dir, "plots")
    plots.plot_confusion(report["confusion_matrix"], report["labels"],
                         file_io.join(plot_dir, f"confusion_matrix_{config.split}.png"), title=windows)
    plots.plot_reliability(report["reliability"], file_io.join(plot_dir, f"reliability_{config.split}.png"),
                           title=f"{windows}, ECE {report['ece']:.4f}")
    _LOG.info("wrote %s", path)
    return report


class EvaluateError(ValueError):
    """The model and the data cannot be evaluated together (one line)."""


def check_matches(serving: Dict[str, Any], stats: Dict[str, Any], model_dir: str, data_dir: str) -> Dict[str, Any]:
    """stats.json as the model's windows see it (trainer.data.windowed_stats), or EvaluateError,
    naming both sides, when the folder does not hold what the model takes: its features in its
    order and its windows (a windows folder: exactly the model's W; a sequence folder: W up to the
    folder's `window`, cut at read time)."""
    from tfrecords_schema import sequence
    from trainer import data

    model_features, folder_features = list(serving["features"]), list(stats["features"])
    try:
        windowed = data.windowed_stats(stats, serving["window"])
    except data.WindowError:
        windowed = None
    if model_features != folder_features or windowed is None:
        holds = (f"windows of {stats['window']} rows" if sequence.layout_of(stats) == sequence.WINDOWS
                 else f"sequences for windows of up to {stats['window']} rows")
        raise EvaluateError(
            f"--model-dir {model_dir} takes windows of {serving['window']} rows of {_names(model_features)}; "
            f"--data {data_dir} holds {holds} of {_names(folder_features)}: preprocess with the "
            "model's --features and --window, or evaluate a model trained on this folder")
    return windowed


def _names(features: List[str]) -> str:
    """`r,ecg,gsr`; a long list as `23 features (eeg_fp1,eeg_f7,...,gsr)`."""
    if len(features) <= 6:
        return ",".join(features)
    return f"{len(features)} features ({features[0]},{features[1]},...,{features[-1]})"


def _parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="crewstream evaluate",
        description="Stream a split of a preprocess output through MODEL/serving; write "
                    "MODEL/eval.json (log loss, accuracy, macro F1, per-class precision / recall / "
                    "F1 / support, confusion matrix, expected calibration error, the log loss before "
                    "the model's temperature) and confusion-matrix and reliability PNGs.")
    parser.add_argument("--data", required=True, help="preprocess output folder OUT (with stats.json)")
    parser.add_argument("--model-dir", required=True, help="folder of a train run, MODEL")
    parser.add_argument("--split", choices=output_folder.SPLITS, default=output_folder.EVAL,
                        help=f"split (default {output_folder.EVAL})")
    parser.add_argument("--batch-size", type=console.int_at_least(1), default=DEFAULT_BATCH_SIZE,
                        help=f"windows per batch (default {DEFAULT_BATCH_SIZE})")
    console.add_progress(parser, "windows evaluated")
    console.add_verbose(parser)
    return parser.parse_args(argv)


@failure.command("evaluate")
def main(argv: Optional[List[str]] = None) -> int:
    args = _parse_args(argv)
    console.setup(args.verbose)
    # before TensorFlow is imported
    console.check_preprocess_output(args.data, "--data")
    console.check_exists(args.model_dir, "--model-dir", "train a model first")
    config = EvalConfig(data=args.data, model_dir=args.model_dir, split=args.split,
                        batch_size=args.batch_size, progress=args.progress)
    with ownership.hold(args.model_dir, f"--model-dir {args.model_dir}"):  # not while a train run writes it
        report = evaluate(config)
    print(f"{config.split} split, model {config.model_dir}\n")
    print(metrics.format_report(report))
    return 0


if __name__ == "__main__":
    failure.run_process(main)
