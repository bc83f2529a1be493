"""Evaluation pictures. Built on matplotlib's object API (no pyplot), so no GUI backend is needed."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

TRUTH_COLOUR, PREDICTION_COLOUR = "tab:green", "tab:red"  # detection_gallery's boxes


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
            ax.text(
                j, i, str(count), ha="center", va="center", fontsize=7, color="white" if rates[i, j] > 0.5 else "black"
            )
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


def class_colours(count: int) -> np.ndarray:
    """A distinct RGB colour (0..1) per class index; index 0 (background) is black."""
    from matplotlib import colormaps

    palette = colormaps["tab10" if count <= 11 else "tab20"]  # tab10's colours are the most distinct
    colours = palette(np.arange(max(count - 1, 1)) % palette.N)[:, :3]
    return np.concatenate([np.zeros((1, 3)), colours])[:count]


def _colour_mask(mask: np.ndarray, colours: np.ndarray, transparent_background: bool) -> np.ndarray:
    """RGBA picture of a class-index mask: opaque class colours, white for ignored pixels (outside
    the classes) and, when index 0 is the background, a see-through background."""
    mask = np.asarray(mask)
    picture = np.ones((*mask.shape, 4))
    known = mask < len(colours)
    picture[known, :3] = colours[mask[known]]
    if transparent_background:
        picture[mask == 0, 3] = 0.0
    return picture


def overlay_gallery_figure(
    images: np.ndarray, true_masks: np.ndarray, predicted_masks: np.ndarray, class_names: list[str], title: str = ""
) -> Figure:
    """One row per image: the image | the true mask over it | the predicted mask over it."""
    colours = class_colours(len(class_names))
    transparent_background = class_names[0] == "background"
    rows = len(images)
    fig = Figure(figsize=(7.5, 2.4 * rows + 0.6))
    for row, (image, truth, predicted) in enumerate(zip(images, true_masks, predicted_masks)):
        picture = image[..., 0] if image.shape[-1] == 1 else image
        for column, (mask, label) in enumerate(((None, "image"), (truth, "truth"), (predicted, "prediction"))):
            ax = fig.add_subplot(rows, 3, 3 * row + column + 1)
            ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=255)
            if mask is not None:
                ax.imshow(_colour_mask(mask, colours, transparent_background), interpolation="nearest")
            ax.set_axis_off()
            if row == 0:
                ax.set_title(label)
    handles = [
        Patch(color=colours[i], label=name) for i, name in enumerate(class_names) if i or not transparent_background
    ]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(class_names), 6), fontsize=8)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    return fig


def per_class_bar_figure(values: np.ndarray, class_names: list[str], label: str) -> Figure:
    """A horizontal bar per class (nan: the class is absent from truth and prediction)."""
    fig = Figure(figsize=(6, 0.35 * len(class_names) + 1.2))
    ax = fig.add_subplot()
    shown = np.nan_to_num(np.asarray(values, np.float64), nan=0.0)
    ax.barh(range(len(class_names)), shown, color=class_colours(len(class_names)), edgecolor="black")
    ax.set(yticks=range(len(class_names)), xlim=(0, 1), xlabel=label, title=f"{label} per class")
    ax.set_yticklabels(class_names)
    ax.invert_yaxis()
    for i, value in enumerate(values):
        ax.text(min(shown[i] + 0.01, 0.9), i, "absent" if np.isnan(value) else f"{value:.3f}", va="center", fontsize=8)
    fig.tight_layout()
    return fig


def detection_gallery(
    images,
    truths: list[dict],
    predictions: list[dict],
    class_names: list[str],
    score_threshold: float = 0.3,
    max_images: int = 16,
) -> Figure:
    """The first max_images images with their true boxes and the predicted boxes scoring at least
    score_threshold, each labelled with its class (and score)."""
    count = min(len(images), max_images)
    columns = max(1, math.ceil(math.sqrt(count)))
    rows = max(1, math.ceil(count / columns))
    fig = Figure(figsize=(3 * columns, 3 * rows + 0.4))
    for i in range(count):
        ax = fig.add_subplot(rows, columns, i + 1)
        image = np.asarray(images[i])
        ax.imshow(image.squeeze(-1) if image.ndim == 3 and image.shape[-1] == 1 else image, cmap="gray")
        for box, cls in zip(np.reshape(truths[i]["boxes"], (-1, 4)), truths[i]["classes"]):
            _draw_box(ax, box, class_names[int(cls)], TRUTH_COLOUR, "-", label_below=True)
        scores = np.asarray(predictions[i]["scores"]).reshape(-1)
        keep = scores >= score_threshold
        boxes, classes = np.reshape(predictions[i]["boxes"], (-1, 4))[keep], np.asarray(predictions[i]["classes"])[keep]
        for box, cls, score in zip(boxes, classes, scores[keep]):
            _draw_box(ax, box, f"{class_names[int(cls)]} {score:.2f}", PREDICTION_COLOUR, "--")
        ax.set_axis_off()
    fig.legend(
        handles=[
            Patch(fill=False, edgecolor=TRUTH_COLOUR, label="truth"),
            Patch(
                fill=False,
                edgecolor=PREDICTION_COLOUR,
                linestyle="--",
                label=f"prediction (score >= {score_threshold:g})",
            ),
        ],
        loc="lower center",
        ncol=2,
        fontsize=8,
    )
    fig.tight_layout(rect=(0, 0.4 / (3 * rows + 0.4), 1, 1))
    return fig


def _draw_box(ax, box, label, colour, linestyle, label_below=False):
    """One box; truths label below their box and predictions above, so a hit shows both labels."""
    x1, y1, x2, y2 = (float(v) for v in box)
    ax.add_patch(
        Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linestyle=linestyle, linewidth=1.5)
    )
    ax.text(
        x1,
        y2 if label_below else y1,
        label,
        color="white",
        fontsize=6,
        va="top" if label_below else "bottom",
        bbox={"facecolor": colour, "pad": 1, "linewidth": 0},
    )
