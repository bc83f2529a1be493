"""Optimizers and learning-rate schedules by name."""

from __future__ import annotations

import keras

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "step")


def learning_rate_schedule(schedule: str, *, learning_rate: float, total_steps: int, warmup_steps: int = 0):
    """constant; cosine decay to zero (with optional linear warm-up); step: x0.1 at 50% and 75% of training."""
    if schedule not in SCHEDULES:
        raise ValueError(f"trainer.schedule must be one of {', '.join(SCHEDULES)}, received {schedule!r}")
    if schedule == "constant":
        return learning_rate
    if schedule == "cosine":
        if warmup_steps:
            return keras.optimizers.schedules.CosineDecay(
                0.0, max(total_steps - warmup_steps, 1), warmup_target=learning_rate, warmup_steps=warmup_steps
            )
        return keras.optimizers.schedules.CosineDecay(learning_rate, max(total_steps, 1))
    boundaries = [max(total_steps // 2, 1), max(3 * total_steps // 4, 2)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        boundaries, [learning_rate, learning_rate * 0.1, learning_rate * 0.01]
    )


def build_optimizer(name: str, *, learning_rate, weight_decay: float = 0.0, momentum: float = 0.9):
    if name == "adam":
        return keras.optimizers.Adam(learning_rate, weight_decay=weight_decay or None)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
    if name == "sgd":
        return keras.optimizers.SGD(
            learning_rate, momentum=momentum, nesterov=momentum > 0, weight_decay=weight_decay or None
        )
    raise ValueError(f"trainer.optimizer must be one of {', '.join(OPTIMIZERS)}, received {name!r}")
