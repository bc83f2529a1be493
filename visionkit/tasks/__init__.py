"""Tasks: classification, regression, segmentation and detection. Every module of this package is
imported, so a task registers itself in TASKS, and a loss in Keras, by being defined in one."""

from __future__ import annotations

import keras

from visionkit.models import MODELS, check_supports
from visionkit.registry import TASKS, import_submodules
from visionkit.tasks.base import Task

import_submodules(__name__)


def get_task(name: str, **options) -> Task:
    """The task registered as `name`, configured with its options (e.g. label_smoothing)."""
    return TASKS.get(name)(**options)


def build(name: str, *, input_shape, num_classes=None, task: str = "classification", **kwargs) -> keras.Model:
    """Model `name` for `task`: the architecture from the zoo with the task's head.

    `num_classes` is the number of classes (classification, segmentation, detection) or of target values
    (regression); `kwargs` are the builder's other keywords. The task sets the keywords that make its head
    (include_top and classifier_activation where the builder has them); visionkit.models.build takes them all.
    """
    check_supports(name, task)
    return get_task(task).build_model(MODELS.get(name), input_shape=input_shape, num_outputs=num_classes, **kwargs)


__all__ = ["TASKS", "Task", "build", "get_task"]
