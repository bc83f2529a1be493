"""Semantic segmentation: per-pixel class probabilities; cross-entropy (with class weights), Dice,
focal and cross-entropy + Dice losses; mean IoU, per-class IoU, Dice and pixel accuracy from one
confusion matrix; an overlay gallery and a per-class IoU chart.

Masks are uint8 class-index maps. Index 0 is usually the background; IGNORE_INDEX marks unlabelled
pixels (crowd regions, borders created by augmentation), which no loss or metric counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from visionkit.analysis.plots import overlay_gallery_figure, per_class_bar_figure
from visionkit.data.core import IGNORE_INDEX
from visionkit.registry import TASKS
from visionkit.tasks.base import Task

LOSSES = ("cross_entropy", "dice", "focal", "cross_entropy_dice")
EPSILON = 1e-7


def mask_class_names(data) -> list[str]:
    """The name of every mask index: the dataset's own list when it has one (its index 0 may be a
    real class), else "background" followed by the object classes (index = class id + 1)."""
    return list(getattr(data, "mask_names", None) or ["background", *data.class_names])


# ---- numpy: the final evaluation ----


def confusion_matrix(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """counts[true, predicted] over every labelled pixel."""
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    valid = y_true != ignore_index
    if np.any(y_true[valid] >= num_classes):
        raise ValueError(f"mask values up to {y_true[valid].max()} for {num_classes} classes")
    index = y_true[valid].astype(np.int64) * num_classes + y_pred[valid].astype(np.int64)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def scores_from_confusion(counts: np.ndarray) -> dict[str, np.ndarray | float]:
    """Per-class IoU and Dice (nan for a class absent from both truth and prediction) and pixel accuracy."""
    counts = counts.astype(np.float64)
    true_pos = np.diag(counts)
    false_pos, false_neg = counts.sum(axis=0) - true_pos, counts.sum(axis=1) - true_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(true_pos + false_pos + false_neg > 0, true_pos / (true_pos + false_pos + false_neg), np.nan)
        dice = np.where(
            true_pos + false_pos + false_neg > 0, 2 * true_pos / (2 * true_pos + false_pos + false_neg), np.nan
        )
    accuracy = true_pos.sum() / counts.sum() if counts.sum() else float("nan")
    return {"iou": iou, "dice": dice, "pixel_accuracy": float(accuracy)}


def segmentation_metrics(
    y_true: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str], ignore_index: int = IGNORE_INDEX
) -> dict[str, float]:
    """mean_iou and dice (means over the classes present in truth or prediction), pixel_accuracy,
    and iou_<class> / dice_<class> for every class present."""
    counts = confusion_matrix(y_true, np.argmax(probabilities, axis=-1), len(class_names), ignore_index)
    scores = scores_from_confusion(counts)
    metrics = {
        "mean_iou": float(np.nanmean(scores["iou"])),
        "dice": float(np.nanmean(scores["dice"])),
        "pixel_accuracy": scores["pixel_accuracy"],
    }
    for name, iou, dice in zip(class_names, scores["iou"], scores["dice"]):
        if not np.isnan(iou):
            metrics.update({f"iou_{name}": float(iou), f"dice_{name}": float(dice)})
    return metrics


# ---- keras: losses and per-epoch metrics ----


def _labels_and_valid(y_true, ignore_index: int):
    labels = ops.cast(y_true, "int32")
    if len(labels.shape) == 4:  # [B, H, W, 1]
        labels = ops.squeeze(labels, axis=-1)
    valid = ops.not_equal(labels, ignore_index)
    return ops.where(valid, labels, 0), ops.cast(valid, "float32")


@keras.saving.register_keras_serializable(package="visionkit")
class SegmentationLoss(keras.losses.Loss):
    """Losses on per-pixel probabilities [B, H, W, K] against class-index masks [B, H, W].

    cross_entropy: -w_y log p_y averaged with the class weights w as in a weighted mean over pixels;
    focal (Lin et al. 2017): -(1 - p_y)^gamma log p_y; dice: 1 - the mean over classes of the soft
    Dice 2|P.G| / (|P| + |G|) over the batch (Milletari et al. 2016); cross_entropy_dice: their sum.
    Pixels labelled `ignore_index` contribute nothing.
    """

    def __init__(
        self,
        kind: str = "cross_entropy",
        class_weights: Sequence[float] | None = None,
        focal_gamma: float = 2.0,
        ignore_index: int = IGNORE_INDEX,
        name: str | None = None,
        **kwargs,
    ):
        super().__init__(name=name or kind, **kwargs)
        if kind not in LOSSES:
            raise ValueError(f"segmentation loss must be one of {', '.join(LOSSES)}, received {kind!r}")
        self.kind = kind
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.focal_gamma = float(focal_gamma)
        self.ignore_index = int(ignore_index)

    def call(self, y_true, y_pred):
        labels, valid = _labels_and_valid(y_true, self.ignore_index)
        one_hot = ops.one_hot(labels, ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        probability = ops.clip(ops.sum(one_hot * y_pred, axis=-1), EPSILON, 1.0)
        loss = 0.0
        if self.kind in ("cross_entropy", "focal", "cross_entropy_dice"):
            pixel_loss = -ops.log(probability)
            if self.kind == "focal":
                pixel_loss = pixel_loss * ops.power(1.0 - probability, self.focal_gamma)
            weights = valid
            if self.class_weights is not None:
                weights = weights * ops.take(ops.convert_to_tensor(self.class_weights, "float32"), labels)
            loss = ops.sum(pixel_loss * weights) / ops.maximum(ops.sum(weights), EPSILON)
        if self.kind in ("dice", "cross_entropy_dice"):
            loss = loss + self._dice_loss(one_hot, y_pred, valid)
        return loss

    @staticmethod
    def _dice_loss(one_hot, y_pred, valid):
        valid = valid[..., None]
        intersection = ops.sum(one_hot * y_pred * valid, axis=(0, 1, 2))
        total = ops.sum((one_hot + y_pred) * valid, axis=(0, 1, 2))
        return 1.0 - ops.mean((2.0 * intersection + 1.0) / (total + 1.0))

    def get_config(self):
        return {
            **super().get_config(),
            "kind": self.kind,
            "class_weights": self.class_weights,
            "focal_gamma": self.focal_gamma,
            "ignore_index": self.ignore_index,
        }


@keras.saving.register_keras_serializable(package="visionkit")
class ConfusionMatrixScore(keras.metrics.Metric):
    """mean_iou, dice or pixel_accuracy of the arg-max prediction, from a confusion matrix
    accumulated over the epoch (the same definitions as segmentation_metrics)."""

    def __init__(
        self, score: str, num_classes: int, ignore_index: int = IGNORE_INDEX, name: str | None = None, **kwargs
    ):
        super().__init__(name=name or score, **kwargs)
        self.score, self.num_classes, self.ignore_index = score, int(num_classes), int(ignore_index)
        self.counts = self.add_variable(
            shape=(self.num_classes, self.num_classes), initializer="zeros", dtype="float32", name="counts"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels, valid = _labels_and_valid(y_true, self.ignore_index)
        predicted = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        index = ops.reshape(labels * self.num_classes + predicted, (-1,))
        counts = ops.bincount(index, weights=ops.reshape(valid, (-1,)), minlength=self.num_classes**2)
        self.counts.assign_add(ops.reshape(ops.cast(counts, "float32"), (self.num_classes, self.num_classes)))

    def result(self):
        true_pos = ops.diagonal(self.counts)
        if self.score == "pixel_accuracy":
            return ops.sum(true_pos) / ops.maximum(ops.sum(self.counts), 1.0)
        errors = ops.sum(self.counts, axis=0) + ops.sum(self.counts, axis=1) - 2 * true_pos
        numerator, denominator = (
            (true_pos, true_pos + errors) if self.score == "mean_iou" else (2 * true_pos, 2 * true_pos + errors)
        )
        present = ops.cast(denominator > 0, "float32")
        per_class = numerator / ops.maximum(denominator, 1.0)
        return ops.sum(per_class * present) / ops.maximum(ops.sum(present), 1.0)

    def reset_state(self):
        self.counts.assign(ops.zeros_like(self.counts))

    def get_config(self):
        return {
            **super().get_config(),
            "score": self.score,
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
        }


class GalleryCallback(keras.callbacks.Callback):
    """Logs the overlay gallery of a few validation images every `every` epochs and after the last."""

    def __init__(self, images: np.ndarray, masks: np.ndarray, class_names: list[str], log_figure, every: int):
        super().__init__()
        self.images, self.masks, self.class_names = images, masks, class_names
        self.log_figure, self.every = log_figure, every

    def on_epoch_end(self, epoch, logs=None):
        last = epoch + 1 == self.params.get("epochs")
        if (epoch + 1) % self.every and not last:
            return
        predicted = np.argmax(self.model.predict(self.images, verbose=0), axis=-1)
        figure = overlay_gallery_figure(
            self.images, self.masks, predicted, self.class_names, title=f"validation, epoch {epoch + 1}"
        )
        self.log_figure(figure, f"plots/gallery_epoch_{epoch + 1:03d}.png")


@TASKS.register("segmentation")
class Segmentation(Task):
    name = "segmentation"
    target_key = "mask"
    monitor = "val_mean_iou"
    monitor_mode = "max"
    headline_metrics = ("mean_iou", "dice", "pixel_accuracy")
    raw_serving_output = "probabilities"
    head = {"classifier_activation": "softmax"}

    def __init__(
        self,
        loss: str = "cross_entropy_dice",
        class_weights: list | None = None,
        focal_gamma: float = 2.0,
        ignore_index: int = IGNORE_INDEX,
        gallery_every: int = 5,
        gallery_images: int = 8,
    ):
        SegmentationLoss(loss, class_weights, focal_gamma, ignore_index)  # validates the options
        if gallery_every < 1 or gallery_images < 1:
            raise ValueError(
                f"gallery_every and gallery_images must be at least 1, received {gallery_every} and {gallery_images}"
            )
        self.loss_kind, self.class_weights, self.focal_gamma = loss, class_weights, focal_gamma
        self.ignore_index, self.gallery_every, self.gallery_images = ignore_index, gallery_every, gallery_images

    def num_outputs(self, data) -> int:
        count = len(mask_class_names(data))
        if self.class_weights is not None and len(self.class_weights) != count:
            raise ValueError(
                f"class_weights needs {count} values (one per mask class: "
                f"{', '.join(mask_class_names(data))}), received {len(self.class_weights)}"
            )
        return count

    def loss(self):
        return SegmentationLoss(self.loss_kind, self.class_weights, self.focal_gamma, self.ignore_index)

    def metrics(self, num_outputs):
        return [
            ConfusionMatrixScore(score, num_outputs, self.ignore_index)
            for score in ("mean_iou", "dice", "pixel_accuracy")
        ]

    def training_callbacks(self, data, log_figure) -> list[keras.callbacks.Callback]:
        samples = [data.val.sample(i) for i in range(min(self.gallery_images, len(data.val)))]  # decoded and sized
        return [
            GalleryCallback(
                np.stack([s["image"] for s in samples]),
                np.stack([s["mask"] for s in samples]),
                mask_class_names(data),
                log_figure,
                self.gallery_every,
            )
        ]

    def serving_metadata(self, data):
        return {"mask_names": mask_class_names(data)}

    def evaluate(self, y_true, y_pred, data):
        return segmentation_metrics(y_true, y_pred, mask_class_names(data), self.ignore_index)

    def figures(self, y_true, y_pred, data):
        names = mask_class_names(data)
        count = min(self.gallery_images, len(y_true))
        scores = scores_from_confusion(confusion_matrix(y_true, y_pred.argmax(axis=-1), len(names), self.ignore_index))
        return {
            "gallery.png": overlay_gallery_figure(
                data.test.images[:count], y_true[:count], y_pred[:count].argmax(axis=-1), names, title="test"
            ),
            "iou_per_class.png": per_class_bar_figure(scores["iou"], names, "IoU"),
        }

    def serving_outputs(self, outputs):
        return {"class_map": ops.cast(ops.argmax(outputs, axis=-1), "int32"), "probabilities": outputs}

    def prediction_rows(self, outputs, data) -> list[dict[str, Any]]:
        """Per image: the share of pixels predicted as each class."""
        names = mask_class_names(data)
        rows = []
        for class_map in outputs["class_map"]:
            shares = np.bincount(np.asarray(class_map).ravel(), minlength=len(names)) / np.asarray(class_map).size
            rows.append({f"share_{name}": float(share) for name, share in zip(names, shares)})
        return rows
