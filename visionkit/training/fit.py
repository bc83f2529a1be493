"""Training: compile, callbacks (crash-safe best and last checkpoints, early stopping) and fit."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import keras

from visionkit.models.common import auxiliary_outputs
from visionkit.outputs import MAIN_OUTPUT
from visionkit.training.checkpoints import TrainingState
from visionkit.training.optim import build_optimizer, learning_rate_schedule


@dataclass
class CompileSettings:
    """How compile_model compiles a model for training: optimizer, learning-rate schedule and XLA."""

    epochs: int
    learning_rate: float
    optimizer: str = "adam"
    schedule: str = "cosine"
    warmup_epochs: int = 0
    weight_decay: float = 0.0
    momentum: float = 0.9
    jit_compile: bool | str = "auto"  # XLA compilation of the train step: True, False or "auto" (Keras decides)


def compile_model(model: keras.Model, task, settings: CompileSettings, steps_per_epoch: int) -> None:
    schedule = learning_rate_schedule(
        settings.schedule,
        learning_rate=settings.learning_rate,
        total_steps=settings.epochs * steps_per_epoch,
        warmup_steps=settings.warmup_epochs * steps_per_epoch,
    )
    optimizer = build_optimizer(
        settings.optimizer, learning_rate=schedule, weight_decay=settings.weight_decay, momentum=settings.momentum
    )
    auxiliary = auxiliary_outputs(model)
    if not auxiliary:
        model.compile(
            optimizer=optimizer,
            loss=task.loss(),
            metrics=task.metrics(model.output_shape[-1]),
            jit_compile=settings.jit_compile,
        )
        return
    # Auxiliary outputs (GoogLeNet's heads, Faster R-CNN's proposal network) have their own loss and
    # weight; metrics describe the main output only, the one that is evaluated and exported.
    losses, loss_weights = task.output_losses([MAIN_OUTPUT, *auxiliary])
    model.compile(
        optimizer=optimizer,
        loss=losses,
        loss_weights=loss_weights,
        metrics={MAIN_OUTPUT: task.metrics(model.output[MAIN_OUTPUT].shape[-1])},
        jit_compile=settings.jit_compile,
    )


def monitored_metric(task, model: keras.Model) -> str:
    """The log key of a task's monitor (`val_accuracy`) for this model's outputs: Keras prefixes a
    multi-output model's metrics with the output's name; a task callback's metric keeps its name."""
    if not auxiliary_outputs(model) or task.monitor_from_callback:
        return task.monitor
    return f"val_{MAIN_OUTPUT}_{task.monitor[len('val_') :]}"


def training_targets(encode_targets, model: keras.Model):
    """The loader's target encoder, giving every output of a multi-output model the same targets."""
    auxiliary = auxiliary_outputs(model)
    if not auxiliary:
        return encode_targets

    def encode_for_every_output(samples):
        targets = encode_targets(samples)
        return {name: targets for name in (MAIN_OUTPUT, *auxiliary)}

    return encode_for_every_output


def checkpoint_callbacks(
    checkpoint_dir: Path,
    monitor: str,
    patience: int | None,
    mode: str,
    *,
    best: float | None = None,
    extra_state: dict | None = None,
    every_steps: int = 0,
) -> list[keras.callbacks.Callback]:
    """Atomic best.keras / last.keras / state.json every epoch, and a step checkpoint every `every_steps`
    batches (visionkit.training.checkpoints); early stopping that restores the best weights."""
    callbacks = [
        TrainingState(checkpoint_dir, monitor, mode, best=best, extra_state=extra_state, every_steps=every_steps)
    ]
    if patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=patience, restore_best_weights=True)
        )
    return callbacks


def progress_verbosity() -> int:
    """A progress bar on a terminal, one line per epoch otherwise (logs, CI)."""
    return 1 if sys.stdout.isatty() else 2


def fit(
    model: keras.Model, train_data, val_data, *, epochs: int, callbacks, initial_epoch: int = 0
) -> keras.callbacks.History:
    """model.fit; afterwards a NaN loss is raised as TrainingDivergedError (the checkpoints stay the last good ones)."""
    # shuffle=False: the loader already shuffles its samples each epoch from its seed; Keras's own
    # shuffling of a PyDataset's batch order (from Python's global random state) would make a resumed
    # or distributed run's order differ from the uninterrupted single run's.
    history = model.fit(
        train_data,
        validation_data=val_data,
        epochs=epochs,
        initial_epoch=initial_epoch,
        callbacks=callbacks,
        verbose=progress_verbosity(),
        shuffle=False,
    )
    for callback in callbacks:
        if isinstance(callback, TrainingState):
            callback.raise_if_diverged()
    return history
