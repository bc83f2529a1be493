"""The model zoo. Every family module registers its builders in MODELS when imported; importing
this package imports every family module, so a new file is found without being listed here."""

from __future__ import annotations

import keras

from visionkit.errors import UserError
from visionkit.registry import MODELS, import_submodules

import_submodules(__name__, skip={"common"})  # common holds helpers, not a model family


def available(task: str | None = None) -> list[str]:
    """Registered model names, optionally only those that support `task`."""
    return [n for n in MODELS.names() if task is None or task in MODELS.meta(n)["tasks"]]


def check_supports(name: str, task: str) -> None:
    tasks = MODELS.meta(name)["tasks"]
    if task not in tasks:
        raise UserError(f"model '{name}' does not support task '{task}'; it supports: {', '.join(tasks)}. "
                        f"Models for {task}: {', '.join(available(task)) or 'none yet'}")


def build(name: str, *, input_shape, num_classes=None, task: str = "classification", **kwargs) -> keras.Model:
    """Build model `name` for `task`: the trunk from the zoo with the task's head.

    `num_classes` is the number of classes (classification) or of target values (regression).
    """
    from visionkit.tasks import get_task

    check_supports(name, task)
    return get_task(task).build_model(MODELS.get(name), input_shape=input_shape, num_outputs=num_classes, **kwargs)
