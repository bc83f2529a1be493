"""Datasets. Each source module registers its loader in DATASETS when imported."""

from __future__ import annotations

from visionkit.data import digits, shapes  # noqa: F401  (registers the datasets)
from visionkit.data import coco, digit_scenes, folder, masks, table, tfds_source, yolo  # noqa: F401
from visionkit.data.core import DataBundle, Split
from visionkit.errors import UserError
from visionkit.registry import DATASETS


def load(name: str, *, task: str | None, **options) -> DataBundle:
    """Load dataset `name` for `task` (None: whatever it holds, as mode=verify does); options are the
    source's keyword arguments."""
    source = DATASETS.get(name)
    tasks = DATASETS.meta(name)["tasks"]
    if task is not None and task not in tasks:
        raise UserError(f"dataset '{name}' does not support task '{task}'; it supports: {', '.join(tasks)}")
    try:
        return source(**options)
    except TypeError as error:  # an option the source does not take
        raise UserError(f"dataset '{name}': {error}") from None


__all__ = ["DATASETS", "DataBundle", "Split", "load"]
