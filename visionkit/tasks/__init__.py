"""Tasks: classification, regression, segmentation (detection plugs in the same way)."""

from __future__ import annotations

from visionkit.registry import TASKS
from visionkit.tasks import classification, detection, regression, segmentation  # noqa: F401  (registers the tasks)
from visionkit.tasks.base import Task


def get_task(name: str, **options) -> Task:
    """The task registered as `name`, configured with its options (e.g. label_smoothing)."""
    return TASKS.get(name)(**options)


__all__ = ["Task", "get_task", "TASKS"]
