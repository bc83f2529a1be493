"""Training: compile, callbacks (best and last checkpoints, early stopping) and fit."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import keras

from visionkit.training.optim import build_optimizer, learning_rate_schedule


@dataclass
class TrainSettings:
    epochs: int
    learning_rate: float
    optimizer: str = "adam"
    schedule: str = "cosine"
    warmup_epochs: int = 0
    weight_decay: float = 0.0
    momentum: float = 0.9
    early_stopping_patience: int | None = None  # epochs without improvement; None = never stop early


def compile_model(model: keras.Model, task, settings: TrainSettings, steps_per_epoch: int) -> None:
    schedule = learning_rate_schedule(settings.schedule, learning_rate=settings.learning_rate,
                                      total_steps=settings.epochs * steps_per_epoch,
                                      warmup_steps=settings.warmup_epochs * steps_per_epoch)
    optimizer = build_optimizer(settings.optimizer, learning_rate=schedule, weight_decay=settings.weight_decay,
                                momentum=settings.momentum)
    model.compile(optimizer=optimizer, loss=task.loss(), metrics=task.metrics(model.output_shape[-1]))


def checkpoint_callbacks(checkpoint_dir: Path, monitor: str, patience: int | None) -> list[keras.callbacks.Callback]:
    """best.keras (by `monitor`) and last.keras every epoch; early stopping that restores the best weights."""
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    callbacks = [
        keras.callbacks.ModelCheckpoint(checkpoint_dir / "best.keras", monitor=monitor, save_best_only=True),
        keras.callbacks.ModelCheckpoint(checkpoint_dir / "last.keras"),
    ]
    if patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, patience=patience, restore_best_weights=True))
    return callbacks


def progress_verbosity() -> int:
    """A progress bar on a terminal, one line per epoch otherwise (logs, CI)."""
    return 1 if sys.stdout.isatty() else 2


def fit(model: keras.Model, train_data, val_data, *, epochs: int, callbacks) -> keras.callbacks.History:
    return model.fit(train_data, validation_data=val_data, epochs=epochs, callbacks=callbacks,
                     verbose=progress_verbosity())
