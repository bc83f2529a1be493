"""The test-split evaluation that mode=train and mode=evaluate report, and eval.tta checked before any work."""

from __future__ import annotations

import json

import numpy as np
from omegaconf import DictConfig

from pipelines import context
from visionkit.data.loader import BatchLoader


def predict_split(model, task, split, batch_size: int, tta: str = "none") -> np.ndarray:
    """The model's outputs on a split, averaged over test-time augmented views when `tta` (eval.tta) says so."""
    from visionkit.data.augment.tta import check_tta, predict_tta

    loader = BatchLoader(split, task.encode_targets, batch_size=batch_size)
    if check_tta(tta) == "none":
        return model.predict(loader, verbose=0)
    return np.concatenate([predict_tta(model.predict_on_batch, images, tta) for images, _ in loader])


def evaluate_and_log(
    model, task, bundle, tracker, *, batch_size: int, prefix: str = "test", tta: str = "none"
) -> dict[str, float]:
    """Task metrics (numpy, on the whole split) logged as <prefix>_*; pictures under plots/."""
    split = getattr(bundle, prefix)
    y_true = task.encode_targets([split.targets_of(i) for i in range(len(split))])  # no image decoded
    y_pred = predict_split(model, task, split, batch_size, tta)
    metrics = {f"{prefix}_{k}": v for k, v in task.evaluate(y_true, y_pred, bundle).items()}
    tracker.log_metrics(metrics)
    plots = context.output_dir() / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    for name, figure in task.figures(y_true, y_pred, bundle).items():
        figure.savefig(plots / name, dpi=110)
        tracker.log_figure(figure, f"plots/{name}")
    (context.output_dir() / f"{prefix}_metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def checked_tta(cfg: DictConfig, task) -> str:
    """eval.tta, checked before any work: a known mode, for a task whose outputs can be averaged."""
    from visionkit.data.augment.tta import check_tta
    from visionkit.errors import UserError

    tta = check_tta(cfg.eval.tta)
    if tta != "none" and not task.averages_views:
        raise UserError(f"eval.tta={tta} is not available for task {task.name}")
    return tta


def print_metrics(task, metrics: dict[str, float], prefix: str = "test") -> None:
    # A metric the split cannot define is left out of `metrics` (detection's mAP of a test split without
    # a single box): it prints as n/a rather than failing the finished run.
    values = {k: metrics.get(f"{prefix}_{k}") for k in task.headline_metrics}
    print("  ".join(f"{prefix}_{k}=" + ("n/a" if v is None else f"{v:.4f}") for k, v in values.items()))
