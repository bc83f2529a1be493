"""Datasets: the sources (sources/, one module per dataset name, each registered in DATASETS), the sample
contract (core.py), decoding (images.py), verification (verify.py), the loader (loader.py) and augmentation
(augment/)."""

from __future__ import annotations

from visionkit.data import sources  # noqa: F401  (registers every dataset)
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
