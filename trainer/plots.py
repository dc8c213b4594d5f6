"""PNG figures of a run: loss and accuracy per epoch (train and eval), a confusion matrix, a
reliability diagram.

Figures are made with matplotlib's object API (`Figure`, rendered by Agg), not pyplot: no display
and no global backend or figure state are involved. Files are written with tf.io.gfile, so MODEL
may be a gs:// folder.
"""

import io
import posixpath
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure

from tfrecords_schema import file_io

# history key -> (file stem, y-axis label)
CURVES = {"loss": ("loss", "weighted cross-entropy"), "accuracy": ("accuracy", "accuracy")}


def plot_history(history: Dict[str, List[float]], out_dir: str, validation: Optional[str] = "eval") -> List[str]:
    """One PNG per metric of `history` ({"epoch": [1, 2, ...], "loss": [...], "val_loss": [...]}),
    train and validation curves on the same axes, the latter labelled `validation` (the split
    Keras validated on: val, else eval); returns the paths written."""
    epochs = history.get("epoch", [])
    paths = []
    for key, (stem, ylabel) in CURVES.items():
        if key not in history or not epochs:
            continue
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        ax.plot(epochs, history[key], marker="o", label="train")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], marker="o", label=validation or "validation")
        ax.set(xlabel="epoch", ylabel=ylabel, title=f"{stem} per epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend()
        paths.append(_save(fig, file_io.join(out_dir, f"{stem}.png")))
    return paths


def plot_confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: str, title: str) -> str:
    """A confusion-matrix heat map (rows true, columns predicted), counts and row shares printed."""
    cm = np.asarray(matrix, dtype=np.int64)
    shares = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(5, 4.5))
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, label="share of the true class")
    ticks = np.arange(len(labels))
    ax.set(xticks=ticks, yticks=ticks, xticklabels=labels, yticklabels=labels,
           xlabel="predicted", ylabel="true", title=title)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{cm[i, j]:,}\n{shares[i, j]:.0%}", ha="center", va="center", fontsize=8,
                    color="white" if shares[i, j] > 0.5 else "black")
    return _save(fig, path)


def plot_reliability(reliability: Dict[str, Any], path: str, title: str) -> str:
    """A reliability diagram from trainer.metrics' `reliability` ({bins: edges, count, confidence,
    accuracy}): per confidence bin, the accuracy as a bar and the mean confidence as a point, the
    diagonal (perfect calibration) for reference; below, the windows per bin."""
    edges = np.asarray(reliability["bins"], dtype=np.float64)
    count = np.asarray(reliability["count"], dtype=np.int64)
    filled = count > 0
    left, width = edges[:-1][filled], np.diff(edges)[filled]
    accuracy = np.array([a for a in reliability["accuracy"] if a is not None], dtype=np.float64)
    confidence = np.array([c for c in reliability["confidence"] if c is not None], dtype=np.float64)
    fig = Figure(figsize=(5, 6))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.bar(left, accuracy, width=width, align="edge", edgecolor="black", alpha=0.7, label="accuracy")
    top.plot(confidence, confidence, "o", color="tab:red", markersize=4, label="mean confidence")
    top.plot([0, 1], [0, 1], "--", color="gray", label="calibrated")
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=title)
    top.grid(alpha=0.3)
    top.legend(loc="upper left")
    bottom.bar(edges[:-1], count, width=np.diff(edges), align="edge", edgecolor="black", color="tab:gray")
    bottom.set(xlabel="confidence (probability of the predicted class)", ylabel="windows")
    return _save(fig, path)


def _save(fig: Figure, path: str) -> str:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    tf.io.gfile.makedirs(posixpath.dirname(path) or ".")
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(buffer.getvalue())
    return path
