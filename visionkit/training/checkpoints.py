"""Crash-safe training state: atomic checkpoints, the resume record, and a stop on a NaN loss.

Every file is written to a temporary name in the same directory, flushed to disk and renamed over
the old one, so a crash or a full disk at any moment leaves the previous complete checkpoint.
`state.json` records what a resumed run needs: the epochs completed, the best monitored value so
far and the MLflow run to continue.

With step checkpoints, every N batches the model goes to a file named after its position in the
epoch (`step-e0003-s000040.keras`), then state.json's `position` names that file, then the older
step files are removed. A crash between any two of these leaves state.json naming a complete file
that matches it; an epoch's end writes last.keras and a state.json without a position.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import keras

from visionkit.errors import TrainingDivergedError, UserError

STATE_FILE = "state.json"
BEST, LAST = "best.keras", "last.keras"
STEP_FILE = re.compile(r"\.?step-e\d+-s\d+(\.tmp)?\.keras")  # a temporary one too, left by a kill -9


class CheckpointWriteError(UserError):
    """A checkpoint could not be written (a full disk, a read-only directory)."""


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def atomic_write(path: Path, write) -> None:
    """Call write(temporary_path), flush it to disk and rename it to `path`; on failure remove the
    temporary file, keep the old `path` and raise CheckpointWriteError naming the directory."""
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.tmp{path.suffix}")  # Keras insists on the .keras suffix
    try:
        write(temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        _fsync_directory(path.parent)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        kept = f"; the previous {path.name} is kept" if path.exists() else ""
        raise CheckpointWriteError(
            f"cannot write {path.name} in {path.parent}: {error.strerror or error}{kept}"
        ) from None


def save_model(model: keras.Model, path: Path) -> None:
    atomic_write(path, lambda temporary: model.save(temporary))


def write_state(directory: Path, state: dict[str, Any]) -> None:
    text = json.dumps(state, indent=2)
    atomic_write(Path(directory) / STATE_FILE, lambda temporary: Path(temporary).write_text(text))


def read_state(directory: Path) -> dict[str, Any] | None:
    path = Path(directory) / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def step_file_name(epoch: int, step: int) -> str:
    """The step checkpoint after `step` batches of epoch `epoch` (0-based, as Keras counts epochs)."""
    return f"step-e{epoch:04d}-s{step:06d}.keras"


def remove_step_files(directory: Path, keep: str | None = None) -> None:
    """The step checkpoints that state.json no longer names (and any a crash left half-written)."""
    for path in Path(directory).iterdir():
        if path.name != keep and STEP_FILE.fullmatch(path.name):
            path.unlink(missing_ok=True)


def checkpoint_to_resume(state: dict[str, Any]) -> str:
    """The file a resumed run restores: the step checkpoint state.json names, else last.keras."""
    position = state.get("position")
    return position["file"] if position else LAST


def improved(value: float, best: float | None, mode: str) -> bool:
    return best is None or (value < best if mode == "min" else value > best)


class TrainingState(keras.callbacks.Callback):
    """After every epoch: best.keras when `monitor` improved, then last.keras, then state.json; with
    `every_steps`, a step checkpoint every that many batches of an epoch as well (not after its last
    batch, which the epoch's own checkpoint follows at once).

    A NaN or infinite batch loss stops training before the next checkpoint is written, so the
    checkpoints on disk are the last good ones; `diverged` then says where it happened.
    """

    def __init__(
        self,
        directory: Path,
        monitor: str,
        mode: str,
        *,
        best: float | None = None,
        extra_state: dict[str, Any] | None = None,
        every_steps: int = 0,
    ):
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', received {mode!r}")
        if every_steps < 0:
            raise ValueError(f"every_steps must be 0 (off) or positive, received {every_steps}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.monitor, self.mode, self.best = monitor, mode, best
        self.extra_state = dict(extra_state or {})
        self.every_steps = every_steps
        self.steps_before = 0  # batches of the current epoch trained before this fit (the rest of a resumed epoch)
        self.diverged: tuple[int, int, float] | None = None  # epoch, batch, loss
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        step = self.steps_before + batch + 1  # batches of this epoch trained so far
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.diverged = (self.epoch + 1, step, float(loss))
            self.model.stop_training = True
        elif self.every_steps and step % self.every_steps == 0 and batch + 1 < self.params["steps"]:
            self.save_step(step)

    def save_step(self, step: int) -> None:
        """The model at `step` batches into the current epoch, then state.json naming it, then the older step files."""
        name = step_file_name(self.epoch, step)
        save_model(self.model, self.directory / name)
        self.write(epochs_completed=self.epoch, position={"epoch": self.epoch, "step": step, "file": name})
        remove_step_files(self.directory, keep=name)

    def on_epoch_end(self, epoch, logs=None):
        if self.diverged:
            return
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise KeyError(
                f"checkpoint monitor '{self.monitor}' is not among the logged metrics: {', '.join(sorted(logs or {}))}"
            )
        if improved(float(value), self.best, self.mode):
            self.best = float(value)
            save_model(self.model, self.directory / BEST)
        save_model(self.model, self.directory / LAST)
        self.write(epochs_completed=epoch + 1)
        remove_step_files(self.directory)

    def write(self, **progress: Any) -> None:
        state = {**self.extra_state, **progress, "monitor": self.monitor, "mode": self.mode, "best": self.best}
        write_state(self.directory, state)

    def raise_if_diverged(self) -> None:
        if self.diverged:
            epoch, batch, loss = self.diverged
            kept = self.directory / LAST
            where = f"the last good checkpoint is {kept}" if kept.exists() else "no epoch completed, so no checkpoint"
            raise TrainingDivergedError(
                f"training loss became {loss} at epoch {epoch}, batch {batch}; {where}. "
                f"Try a lower trainer.learning_rate"
            )


def restore_training(model: keras.Model, directory: Path, state: dict[str, Any]) -> None:
    """Load the weights and optimizer state (step count included) of the checkpoint `state` names
    (checkpoint_to_resume) into a compiled `model`.

    The model is rebuilt and compiled from the configuration first, so a longer `trainer.epochs`
    gives the learning-rate schedule of the extended run; the optimizer's variables then continue
    where training stopped.
    """
    path = Path(directory) / checkpoint_to_resume(state)
    if not path.is_file():
        raise UserError(f"resume=true: {path}, the checkpoint {STATE_FILE} names, is missing")
    saved = keras.saving.load_model(path, compile=True, safe_mode=True)
    model.set_weights(saved.get_weights())
    model.optimizer.build(model.trainable_variables)
    if len(model.optimizer.variables) != len(saved.optimizer.variables):
        raise UserError(
            f"the optimizer state in {path} does not fit trainer.optimizer; "
            f"resume with the optimizer the run started with"
        )
    for target, source in zip(model.optimizer.variables, saved.optimizer.variables):
        target.assign(source)
