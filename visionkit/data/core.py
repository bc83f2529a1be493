"""In-memory datasets: a Split holds images and per-sample targets; a DataBundle holds the three
splits and what the task needs to know about them (class names, target names).

Sample contract: a dict of numpy arrays — `image` uint8 HxWxC; `label` int; `target` float [K];
`boxes` float [N, 4] pixel xyxy with `classes` int [N]; `mask` uint8 HxW class indices.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
from sklearn.model_selection import train_test_split

from visionkit.errors import UserError


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8 [N, H, W, C]
    targets: dict[str, Any] = field(default_factory=dict)  # name -> array [N, ...] or list of N arrays

    def __post_init__(self):
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, H, W, C], received {self.images.dtype} {self.images.shape}")
        for name, values in self.targets.items():
            if len(values) != len(self.images):
                raise ValueError(f"target '{name}' has {len(values)} entries for {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, i: int) -> dict[str, Any]:
        return {"image": self.images[i], **{name: values[i] for name, values in self.targets.items()}}

    def take(self, indices: Sequence[int]) -> "Split":
        indices = np.asarray(indices, dtype=np.int64)
        return Split(self.images[indices], {name: _take(values, indices) for name, values in self.targets.items()})


def _take(values, indices: np.ndarray):
    return values[indices] if isinstance(values, np.ndarray) else [values[i] for i in indices]


@dataclass(frozen=True)
class DataBundle:
    name: str
    train: Split
    val: Split
    test: Split
    class_names: list[str] = field(default_factory=list)
    target_names: list[str] = field(default_factory=list)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.train.images.shape[1:])

    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def limit(self, max_per_split: int | None) -> "DataBundle":
        """The first `max_per_split` samples of each split (for quick trial runs)."""
        if max_per_split is None:
            return self
        if max_per_split < 1:
            raise UserError(f"data.limit must be a positive number of samples, received {max_per_split}")
        return replace(self, **{name: split.take(range(min(len(split), max_per_split)))
                                for name, split in self.splits().items()})

    def pixel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and standard deviation of the training images, in pixel units."""
        pixels = self.train.images.reshape(-1, self.train.images.shape[-1]).astype(np.float64)
        return pixels.mean(axis=0).tolist(), np.maximum(pixels.std(axis=0), 1.0).tolist()

    def check_task(self, target_key: str, task: str) -> None:
        if target_key not in self.train.targets:
            raise UserError(f"dataset '{self.name}' has no '{target_key}' targets for task '{task}'; "
                            f"it provides: {', '.join(self.train.targets)}")


def split_indices(n: int, *, val_fraction: float, test_fraction: float, seed: int,
                  stratify: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded train/val/test index split, stratified by `stratify` labels when given."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 < value < 1:
            raise UserError(f"data.{name} must be between 0 and 1, received {value}")
    if val_fraction + test_fraction >= 1:
        raise UserError(f"data.val_fraction + data.test_fraction must be below 1, received "
                        f"{val_fraction} + {test_fraction}")
    indices = np.arange(n)
    rest, test = train_test_split(indices, test_size=test_fraction, random_state=seed, stratify=stratify)
    rest_labels = None if stratify is None else stratify[rest]
    train, val = train_test_split(rest, test_size=val_fraction / (1 - test_fraction), random_state=seed,
                                  stratify=rest_labels)
    return np.sort(train), np.sort(val), np.sort(test)


def bundle_from_arrays(name: str, images: np.ndarray, targets: dict[str, Any], *, val_fraction: float,
                       test_fraction: float, seed: int, stratify: np.ndarray | None = None,
                       class_names: list[str] | None = None, target_names: list[str] | None = None) -> DataBundle:
    """Split one set of samples into a DataBundle."""
    everything = Split(images, targets)
    train, val, test = split_indices(len(everything), val_fraction=val_fraction, test_fraction=test_fraction,
                                     seed=seed, stratify=stratify)
    return DataBundle(name, everything.take(train), everything.take(val), everything.take(test),
                      class_names=list(class_names or []), target_names=list(target_names or []))
