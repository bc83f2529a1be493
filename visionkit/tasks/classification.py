"""Image classification: softmax head, sparse cross-entropy (optionally label-smoothed), accuracy,
top-k accuracy, per-class precision/recall/F1 and a confusion matrix."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from visionkit.analysis.plots import confusion_matrix_figure
from visionkit.data.series import nearest_neighbour_baselines
from visionkit.registry import TASKS
from visionkit.tasks.base import Task


@keras.saving.register_keras_serializable(package="visionkit")
class SparseCrossentropy(keras.losses.Loss):
    """Cross-entropy on integer labels and class probabilities, with label smoothing
    (which keras.losses.SparseCategoricalCrossentropy does not offer)."""

    def __init__(self, label_smoothing: float = 0.0, name: str = "sparse_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        one_hot = ops.one_hot(labels, ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(one_hot, y_pred, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (y_true, y_pred), 1)
    return counts


def classification_metrics(
    y_true: np.ndarray, probabilities: np.ndarray, class_names: list[str], top_k: int = 5
) -> dict[str, float]:
    """Accuracy, top-k accuracy, macro and per-class precision/recall/F1 (0 where undefined)."""
    num_classes = probabilities.shape[1]
    y_pred = probabilities.argmax(axis=1)
    counts = confusion_matrix(y_true, y_pred, num_classes)
    true_pos = np.diag(counts).astype(np.float64)
    precision = np.divide(true_pos, counts.sum(axis=0), out=np.zeros(num_classes), where=counts.sum(axis=0) > 0)
    recall = np.divide(true_pos, counts.sum(axis=1), out=np.zeros(num_classes), where=counts.sum(axis=1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(num_classes), where=precision + recall > 0)
    # Named by the requested k; with fewer classes than k every label is in the top k.
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, : min(top_k, num_classes)]
    metrics = {
        "accuracy": float(np.mean(y_pred == y_true)),
        f"top{top_k}_accuracy": float(np.mean((top == y_true[:, None]).any(axis=1))),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
    }
    for name, p, r, f in zip(class_names, precision, recall, f1):
        metrics.update({f"precision_{name}": float(p), f"recall_{name}": float(r), f"f1_{name}": float(f)})
    return metrics


@TASKS.register("classification")
class Classification(Task):
    name = "classification"
    target_key = "label"
    monitor = "val_accuracy"
    monitor_mode = "max"
    raw_serving_output = "probabilities"
    head = {"include_top": True, "classifier_activation": "softmax"}  # the paper's own classifier

    def __init__(self, label_smoothing: float = 0.0, top_k: int = 5):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), received {label_smoothing!r}")
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, received {top_k!r}")
        self.label_smoothing = label_smoothing
        self.top_k = top_k
        self.headline_metrics = ("accuracy", f"top{top_k}_accuracy", "macro_f1")

    def num_outputs(self, data) -> int:
        return len(data.class_names)

    def loss(self):
        return SparseCrossentropy(label_smoothing=self.label_smoothing)

    def metrics(self, num_outputs):
        return [
            keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            keras.metrics.SparseTopKCategoricalAccuracy(
                k=min(self.top_k, num_outputs), name=f"top{self.top_k}_accuracy"
            ),
        ]

    def evaluate(self, y_true, y_pred, data):
        metrics = classification_metrics(y_true, y_pred, data.class_names, self.top_k)
        return {**metrics, **nearest_neighbour_baselines(data, len(y_true))}

    def figures(self, y_true, y_pred, data):
        counts = confusion_matrix(y_true, y_pred.argmax(axis=1), len(data.class_names))
        return {"confusion_matrix.png": confusion_matrix_figure(counts, data.class_names)}

    def serving_outputs(self, outputs):
        return {"probabilities": outputs, "class_ids": ops.cast(ops.argmax(outputs, axis=-1), "int32")}

    def prediction_rows(self, outputs, data):
        return [
            {"class_id": int(i), "class_name": data.class_names[int(i)], "probability": float(p[int(i)])}
            for i, p in zip(outputs["class_ids"], outputs["probabilities"])
        ]
