"""Datasets: the sources (sources/, one module per dataset name, each registered in DATASETS), the sample
contract (core.py), decoding (images.py), verification (verify.py), the loader (loader.py) and augmentation
(augment/)."""

from __future__ import annotations

from visionkit.data import sources  # noqa: F401  (registers every dataset)
from visionkit.data.core import DataBundle, Split
from visionkit.data.index import STREAM_OPTIONS, cached, check_stream_options, resized
from visionkit.errors import UserError
from visionkit.registry import DATASETS


def load(
    name: str,
    *,
    task: str | None,
    resize: str = "stretch",
    crop_ratio: float = 0.875,
    cache: str = "auto",
    cache_memory_mb: float = 1024,
    limit: int | None = None,
    **options,
) -> DataBundle:
    """Load dataset `name` for `task` (None: whatever it holds, as mode=verify does); options are the
    source's keyword arguments; `limit` keeps the first samples of each split. A file source's bundle is an
    index, sized by `resize` (stretch | center_crop | letterbox, data/sizing.py) and decoded ahead of time by
    `cache` (data/index.py) where that pays."""
    check_stream_options(resize, crop_ratio, cache, cache_memory_mb)
    source = DATASETS.get(name)
    tasks = DATASETS.meta(name)["tasks"]
    if task is not None and task not in tasks:
        raise UserError(f"dataset '{name}' does not support task '{task}'; it supports: {', '.join(tasks)}")
    try:
        bundle = source(**options)
    except TypeError as error:  # an option the source does not take
        raise UserError(f"dataset '{name}': {error}") from None
    unmasked = [split for split, data in bundle.splits().items() if "mask" not in data.targets]
    if task == "segmentation" and unmasked:  # a boxes-only export would train on background and ignore alone
        raise UserError(
            f"dataset '{name}': no object of the {', '.join(unmasked)} split{'s' * (len(unmasked) > 1)} has a mask "
            f"(an outline), which task=segmentation needs; its boxes serve task=detection"
        )
    bundle = bundle.limit(limit)
    if task == "detection" and bundle.train.streamed:  # masks read and painted for nothing on every read
        bundle = bundle.without_targets("mask")
    return cached(resized(bundle, resize, crop_ratio), cache, cache_memory_mb)


__all__ = ["DATASETS", "STREAM_OPTIONS", "DataBundle", "Split", "load"]
