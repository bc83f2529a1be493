"""Datasets. Each source module registers its loader in DATASETS when imported."""

from __future__ import annotations

from visionkit.data import digits, shapes  # noqa: F401  (registers the datasets)
from visionkit.data.core import DataBundle, Split
from visionkit.errors import UserError
from visionkit.registry import DATASETS


def load(name: str, *, task: str, **options) -> DataBundle:
    """Load dataset `name` for `task`; options are the source's keyword arguments."""
    source = DATASETS.get(name)
    tasks = DATASETS.meta(name)["tasks"]
    if task not in tasks:
        raise UserError(f"dataset '{name}' does not support task '{task}'; it supports: {', '.join(tasks)}")
    try:
        return source(**options)
    except TypeError as error:  # an option the source does not take
        raise UserError(f"dataset '{name}': {error}") from None


__all__ = ["DATASETS", "DataBundle", "Split", "load"]
