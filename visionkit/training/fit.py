"""Training: compile, callbacks (best and last checkpoints, early stopping) and fit."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import keras

from visionkit.models.common import AUX_LOSS_WEIGHT, MAIN_OUTPUT, auxiliary_outputs
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
    auxiliary = auxiliary_outputs(model)
    if not auxiliary:
        model.compile(optimizer=optimizer, loss=task.loss(), metrics=task.metrics(model.output_shape[-1]))
        return
    # Auxiliary heads (GoogLeNet) learn the same targets with a smaller loss weight; metrics
    # describe the main output only, the one that is evaluated and exported.
    outputs = [MAIN_OUTPUT, *auxiliary]
    model.compile(optimizer=optimizer, loss={name: task.loss() for name in outputs},
                  loss_weights={name: 1.0 if name == MAIN_OUTPUT else AUX_LOSS_WEIGHT for name in outputs},
                  metrics={MAIN_OUTPUT: task.metrics(model.output[MAIN_OUTPUT].shape[-1])})


def monitored_metric(monitor: str, model: keras.Model) -> str:
    """The Keras log key of a task's monitor (`val_accuracy`) for this model's outputs."""
    if not auxiliary_outputs(model):
        return monitor
    return f"val_{MAIN_OUTPUT}_{monitor[len('val_'):]}"


def training_targets(encode_targets, model: keras.Model):
    """The loader's target encoder, giving every output of a multi-output model the same targets."""
    auxiliary = auxiliary_outputs(model)
    if not auxiliary:
        return encode_targets

    def encode_for_every_output(samples):
        targets = encode_targets(samples)
        return {name: targets for name in (MAIN_OUTPUT, *auxiliary)}

    return encode_for_every_output


def checkpoint_callbacks(checkpoint_dir: Path, monitor: str, patience: int | None,
                         mode: str = "auto") -> list[keras.callbacks.Callback]:
    """best.keras (by `monitor`, better when lower or higher as `mode` says) and last.keras every
    epoch; early stopping that restores the best weights."""
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    callbacks = [
        keras.callbacks.ModelCheckpoint(checkpoint_dir / "best.keras", monitor=monitor, mode=mode,
                                        save_best_only=True),
        keras.callbacks.ModelCheckpoint(checkpoint_dir / "last.keras"),
    ]
    if patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=patience,
                                                       restore_best_weights=True))
    return callbacks


def progress_verbosity() -> int:
    """A progress bar on a terminal, one line per epoch otherwise (logs, CI)."""
    return 1 if sys.stdout.isatty() else 2


def fit(model: keras.Model, train_data, val_data, *, epochs: int, callbacks) -> keras.callbacks.History:
    return model.fit(train_data, validation_data=val_data, epochs=epochs, callbacks=callbacks,
                     verbose=progress_verbosity())
