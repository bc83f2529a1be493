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
        raise UserError(
            f"model '{name}' does not support task '{task}'; it supports: {', '.join(tasks)}. "
            f"Models for {task}: {', '.join(available(task)) or 'none yet'}"
        )


def build(name: str, **kwargs) -> keras.Model:
    """Model `name` as its builder makes it, from the builder's keywords (input_shape, num_classes,
    include_top, width, ...): include_top=False gives the trunk, with its feature maps named by stride.
    For a task's head (a linear regression output, say) use visionkit.tasks.build."""
    return MODELS.get(name)(**kwargs)
