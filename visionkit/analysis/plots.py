"""Evaluation pictures. Built on matplotlib's object API (no pyplot), so no GUI backend is needed."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure


def confusion_matrix_figure(counts: np.ndarray, class_names: list[str]) -> Figure:
    """Row-normalised confusion matrix with the raw counts written in each cell."""
    n = len(class_names)
    size = max(4.0, 0.45 * n + 2)
    fig = Figure(figsize=(size, size))
    ax = fig.add_subplot()
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of true class")
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title="Confusion matrix")
    ax.set_xticklabels(class_names, rotation=90)
    ax.set_yticklabels(class_names)
    if n <= 30:
        for (i, j), count in np.ndenumerate(counts):
            ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black")
    fig.tight_layout()
    return fig


def scatter_figure(y_true: np.ndarray, y_pred: np.ndarray, target_names: list[str]) -> Figure:
    """Predicted against true value, one panel per target, with the identity line."""
    y_true = np.asarray(y_true).reshape(len(y_true), -1)
    y_pred = np.asarray(y_pred).reshape(len(y_pred), -1)
    k = y_true.shape[1]
    fig = Figure(figsize=(3.2 * k, 3.4))
    for i, name in enumerate(target_names):
        ax = fig.add_subplot(1, k, i + 1)
        ax.scatter(y_true[:, i], y_pred[:, i], s=6, alpha=0.6)
        low, high = min(y_true[:, i].min(), y_pred[:, i].min()), max(y_true[:, i].max(), y_pred[:, i].max())
        ax.plot([low, high], [low, high], color="black", linewidth=0.8)
        ax.set(title=name, xlabel="true", ylabel="predicted")
    fig.tight_layout()
    return fig
