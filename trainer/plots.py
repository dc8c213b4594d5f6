"""PNG figures of a run: loss and accuracy per epoch (train and eval), a confusion matrix.

Figures are made with matplotlib's object API (`Figure`, rendered by Agg), not pyplot: no display
and no global backend or figure state are involved. Files are written with tf.io.gfile, so MODEL
may be a gs:// folder.
"""

import io
import posixpath
from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure

from tfrecords_schema import file_io

# history key -> (file stem, y-axis label)
CURVES = {"loss": ("loss", "weighted cross-entropy"), "accuracy": ("accuracy", "accuracy")}


def plot_history(history: Dict[str, List[float]], out_dir: str) -> List[str]:
    """One PNG per metric of `history` ({"epoch": [1, 2, ...], "loss": [...], "val_loss": [...]}),
    train and eval curves on the same axes; returns the paths written."""
    epochs = history.get("epoch", [])
    paths = []
    for key, (stem, ylabel) in CURVES.items():
        if key not in history or not epochs:
            continue
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        ax.plot(epochs, history[key], marker="o", label="train")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], marker="o", label="eval")
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


def _save(fig: Figure, path: str) -> str:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    tf.io.gfile.makedirs(posixpath.dirname(path) or ".")
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(buffer.getvalue())
    return path
