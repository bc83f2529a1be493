"""Image regression: K target values from a linear head; MSE or Huber loss; MAE, RMSE and R²."""

from __future__ import annotations

import keras
import numpy as np

from visionkit.analysis.plots import scatter_figure
from visionkit.registry import TASKS
from visionkit.tasks.base import Task

LOSSES = {
    "mse": lambda delta: keras.losses.MeanSquaredError(name="mse"),
    "huber": lambda delta: keras.losses.Huber(delta=delta, name="huber"),
}


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, target_names: list[str]) -> dict[str, float]:
    """MAE, RMSE and R² averaged over targets (R² as scikit-learn's uniform average), and per target."""
    y_true = np.asarray(y_true, np.float64).reshape(len(y_true), -1)
    y_pred = np.asarray(y_pred, np.float64).reshape(len(y_pred), -1)
    error = y_pred - y_true
    mae = np.abs(error).mean(axis=0)
    mse = (error**2).mean(axis=0)
    variance = ((y_true - y_true.mean(axis=0)) ** 2).mean(axis=0)
    # A constant target has no variance to explain: R² is 1 for a perfect fit there, else 0 (as scikit-learn).
    r2 = np.where(variance > 0, 1 - mse / np.where(variance > 0, variance, 1), np.where(mse == 0, 1.0, 0.0))
    metrics = {"mae": float(mae.mean()), "rmse": float(np.sqrt(mse.mean())), "r2": float(r2.mean())}
    for name, a, m, r in zip(target_names, mae, mse, r2):
        metrics.update({f"mae_{name}": float(a), f"rmse_{name}": float(np.sqrt(m)), f"r2_{name}": float(r)})
    return metrics


@TASKS.register("regression")
class Regression(Task):
    name = "regression"
    target_key = "target"
    monitor = "val_loss"
    headline_metrics = ("mae", "rmse", "r2")
    raw_serving_output = "targets"
    # The architecture's own top (its fully connected layers or global pooling) with a linear layer of
    # K outputs in place of the softmax classifier.
    head = {"include_top": True, "classifier_activation": None}

    def __init__(self, loss: str = "mse", huber_delta: float = 1.0):
        if loss not in LOSSES:
            raise ValueError(f"regression loss must be one of {sorted(LOSSES)}, received {loss!r}")
        self.loss_name = loss
        self.huber_delta = huber_delta

    def num_outputs(self, data) -> int:
        return len(data.target_names)

    def loss(self):
        return LOSSES[self.loss_name](self.huber_delta)

    def metrics(self, num_outputs):
        return [
            keras.metrics.MeanAbsoluteError(name="mae"),
            keras.metrics.RootMeanSquaredError(name="rmse"),
            keras.metrics.R2Score(name="r2"),
        ]

    def evaluate(self, y_true, y_pred, data):
        return regression_metrics(y_true, y_pred, data.target_names)

    def figures(self, y_true, y_pred, data):
        return {"predicted_vs_true.png": scatter_figure(y_true, y_pred, data.target_names)}

    def serving_outputs(self, outputs):
        return {"targets": outputs}

    def prediction_rows(self, outputs, data):
        return [dict(zip(data.target_names, map(float, row))) for row in outputs["targets"]]
