"""The data a run trained on, as MLflow dataset inputs: one per split, logged with its context
(train, validation, test), so that the runs table's Dataset column and the run comparison say what
trained each model and on how many images.

The digest is computed over what the run holds in memory after loading and `data.limit`: the pixels,
the targets and the class names of the split. It changes whenever the samples, their order, their
labels or the split change, and costs one pass of hashing over bytes already decoded.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.dataset import Dataset
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import resolve_dataset_source

from visionkit.data.core import DataBundle, Split

SPLIT_CONTEXTS = {"train": "train", "val": "validation", "test": "test"}  # split -> MLflow's mlflow.data.context
DIGEST_LENGTH = 8  # MLflow shows digests of 8-10 characters


class SplitDataset(Dataset):
    """One split of a DataBundle, described by its size and image shape (the pixels stay out of MLflow)."""

    def __init__(self, split: Split, *, class_names: list[str], name: str, source: DatasetSource):
        self._split, self._class_names = split, class_names
        self._profile = {
            "num_rows": len(split),
            "image_shape": list(split.images.shape[1:]),
            "targets": sorted(split.targets),
        }
        if class_names:
            self._profile["num_classes"] = len(class_names)
        super().__init__(source=source, name=name)

    def _compute_digest(self) -> str:
        return split_digest(self._split, self._class_names)

    @property
    def profile(self) -> dict[str, Any]:
        return self._profile

    @property
    def schema(self) -> None:
        return None

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "profile": json.dumps(self._profile)}


def split_digest(split: Split, class_names: list[str]) -> str:
    """A hash of the split's images, targets (in sample order) and class names. A split of files is hashed by
    its index (paths, sizes, sizing and annotations), whether or not a cache decoded it, so that the digest
    neither reads every image nor depends on data.cache."""
    split = split.index if split.index is not None else split
    hasher = hashlib.sha256(json.dumps({"shape": split.images.shape, "class_names": class_names}).encode())
    hasher.update(split.images.fingerprint() if split.streamed else np.ascontiguousarray(split.images).data)
    for name in sorted(split.targets):
        hasher.update(name.encode())
        values = split.targets[name]
        if hasattr(values, "fingerprint"):
            hasher.update(values.fingerprint())
            continue
        for array in [values] if isinstance(values, np.ndarray) else values:  # list targets: one array per image
            hasher.update(np.ascontiguousarray(array).data)
    return hasher.hexdigest()[:DIGEST_LENGTH]


def dataset_source(options: Mapping[str, Any]) -> tuple[str, DatasetSource]:
    """The dataset's name and where it came from: the files at `path` for file datasets
    (`folder:flowers`), else the options that generate it (`digits` and its seed, fractions, limit)."""
    path = options.get("path")
    if path:
        resolved = Path(path).expanduser().resolve()
        with warnings.catch_warnings():  # MLflow registers its local source twice (schemes "" and "file") and says so
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple")
            return f"{options['name']}:{resolved.stem}", resolve_dataset_source(str(resolved))
    return options["name"], CodeDatasetSource({key: str(value) for key, value in options.items()})


def dataset_inputs(bundle: DataBundle, options: Mapping[str, Any]) -> tuple[list[SplitDataset], list[str]]:
    """The bundle's splits as MLflow datasets, and their contexts. `options`: the data section (name and options)."""
    name, source = dataset_source(options)
    datasets = [
        SplitDataset(split, class_names=bundle.class_names, name=name, source=source)
        for split in bundle.splits().values()
    ]
    return datasets, [SPLIT_CONTEXTS[split] for split in bundle.splits()]
