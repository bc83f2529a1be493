"""Resuming inside an epoch: the rest of an interrupted epoch's batches, then the following epochs.

Keras fit always starts an epoch at its first batch, so a run resumed from a step checkpoint fits
the interrupted epoch's remaining batches as a one-epoch fit of a view of the loader that starts at
the saved step, then continues with a normal fit from the next epoch. The learning-rate schedule
follows optimizer.iterations, which the checkpoint restored; the epoch-end callbacks (validation,
best.keras, the tracker's epoch metrics, early stopping) see the partial epoch as a whole one.
Two things start afresh, as they do at a resume after a whole epoch: the resumed epoch's training
metrics average its remaining batches only, and early stopping counts its patience from the resume.
"""

from __future__ import annotations

from typing import Any

import keras

from visionkit.errors import UserError
from visionkit.training.checkpoints import TrainingState
from visionkit.training.fit import fit


class RemainingBatches(keras.utils.PyDataset):
    """The batches of `loader`'s epoch from batch `first` on, with the loader's workers and prefetch.

    The loader's batches are a function of (epoch, batch index) alone, so fitted after the loader's
    start_at_epoch(e) as a fit from epoch e would be, batch `i` here is the batch `first + i` that the
    uninterrupted run trained in epoch e, with the same samples and the same augmentation.
    """

    def __init__(self, loader, first: int):
        super().__init__(
            workers=loader.workers, use_multiprocessing=loader.use_multiprocessing, max_queue_size=loader.max_queue_size
        )
        if not 0 <= first < len(loader):
            raise ValueError(f"first must be a batch of the epoch's {len(loader)}, received {first}")
        self.loader, self.first = loader, first

    def __len__(self) -> int:
        return len(self.loader) - self.first

    def __getitem__(self, index: int):
        return self.loader[self.first + index]

    # Keras moves a PyDataset through its epochs with these hooks (also once when a fit starts): the
    # loader must move exactly as it does when fitted itself, to reach the epoch the uninterrupted run trained.
    def on_epoch_begin(self) -> None:
        self.loader.on_epoch_begin()

    def on_epoch_end(self) -> None:
        self.loader.on_epoch_end()


def check_step_checkpoints(every_steps: int, strategy: str) -> None:
    """trainer.checkpoint_every_steps: 0 or a positive count, and not under multi_worker."""
    if every_steps < 0:
        raise UserError(f"trainer.checkpoint_every_steps must be 0 (off) or a number of steps, received {every_steps}")
    if every_steps and strategy == "multi_worker":
        raise UserError(
            "trainer.checkpoint_every_steps is not supported with trainer.strategy=multi_worker; "
            "set it to 0 (checkpoints at each epoch's end)"
        )


def fit_from(
    model: keras.Model,
    train_data,
    val_data,
    *,
    epochs: int,
    callbacks: list,
    initial_epoch: int = 0,
    position: dict[str, Any] | None = None,
) -> None:
    """fit (visionkit.training.fit) from `initial_epoch`, or, from a step checkpoint's `position`, from its
    step: the rest of that epoch first. `train_data` is a BatchLoader already at `position`'s epoch."""
    if position and position["epoch"] < epochs:  # else trainer.epochs was lowered: nothing is left to train
        fit_rest_of_epoch(model, train_data, val_data, callbacks=callbacks, position=position)
        if model.stop_training:  # early stopping or a diverged loss in the resumed epoch
            return
        initial_epoch = position["epoch"] + 1
        train_data.start_at_epoch(initial_epoch)
    fit(model, train_data, val_data, epochs=epochs, callbacks=callbacks, initial_epoch=initial_epoch)


def fit_rest_of_epoch(model: keras.Model, train_data, val_data, *, callbacks: list, position: dict[str, Any]) -> None:
    """The batches of `position`'s epoch after its step, as one epoch with its epoch-end callbacks."""
    epoch, step = position["epoch"], position["step"]
    states = [callback for callback in callbacks if isinstance(callback, TrainingState)]
    for state in states:  # they count the epoch's batches, and name step checkpoints, from the saved step
        state.steps_before = step
    try:
        fit(
            model,
            RemainingBatches(train_data, step),
            val_data,
            epochs=epoch + 1,
            callbacks=callbacks,
            initial_epoch=epoch,
        )
    finally:
        for state in states:
            state.steps_before = 0
