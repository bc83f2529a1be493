"""In-memory datasets: a Split holds images and per-sample targets; a DataBundle holds the three
splits and what the task needs to know about them (class names, target names).

Sample contract: a dict of numpy arrays — `image` uint8 HxWxC; `label` int; `target` float [K];
`boxes` float [N, 4] pixel xyxy with `classes` int [N]; `mask` uint8 HxW class indices (0 = background,
class_names[v - 1] for v >= 1, 255 = ignore). Boxes and classes vary in length: a Split keeps them as lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.model_selection import train_test_split

from visionkit.errors import UserError

# Mask value of pixels without a label (unlabelled, crowd regions, borders that augmentation moved
# in): no loss or metric counts them.
IGNORE_INDEX = 255

if TYPE_CHECKING:
    from visionkit.data.verify import VerificationReport

SPLIT_NAMES = ("train", "val", "test")
LIST_TARGETS = ("boxes", "classes", "difficult")  # one array per image, of varying length (difficult: VOC's)


@dataclass(frozen=True)
class Split:
    """A split's samples: `images` is a uint8 [N, H, W, C] array, or an index of files (data/index.py's
    ImageFiles) that decodes and sizes each sample when it is read."""

    images: Any  # uint8 [N, H, W, C], or ImageFiles; for sequence models series float32 [N, T, C] (data/series.py)
    targets: dict[str, Any] = field(default_factory=dict)  # name -> array [N, ...], list of N arrays, or LazyColumn
    index: Split | None = None  # the files this split was decoded from, when a cache decoded it

    def __post_init__(self):
        if not self.streamed and self.input_key == "image" and (self.images.dtype != np.uint8 or self.images.ndim != 4):
            raise ValueError(
                f"images must be uint8 [N, H, W, C] (series float32 [N, T, C]), received "
                f"{self.images.dtype} {self.images.shape}"
            )
        for name, values in self.targets.items():
            if len(values) != len(self.images):
                raise ValueError(f"target '{name}' has {len(values)} entries for {len(self.images)} images")

    # Cached: the loader asks for every sample, and the answer cannot change on a frozen split.
    @cached_property
    def streamed(self) -> bool:
        """Whether samples are decoded from files when read (else they are held in memory)."""
        return not isinstance(self.images, np.ndarray)

    @cached_property
    def input_key(self) -> str:
        """The sample key of the model's input: "series" for float32 [N, T, C] in memory, else "image"."""
        series = not self.streamed and self.images.dtype == np.float32 and self.images.ndim == 3
        return "series" if series else "image"

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, i: int) -> dict[str, Any]:
        targets = {name: values[i] for name, values in self.targets.items()}
        return self.images.sample(i, targets) if self.streamed else {self.input_key: self.images[i], **targets}

    def columns(self, ids: Sequence[int]) -> dict[str, Any]:
        """Samples `ids` of a split held in memory as columns, each read at once: the input under its key and
        every target, as arrays [n, ...] (lists for targets of varying length). Row k is sample(ids[k])."""
        if self.streamed:
            raise ValueError("Split.columns reads splits held in memory; a streamed split reads sample by sample")
        ids = np.asarray(ids, dtype=np.int64)
        return {self.input_key: self.images[ids], **{name: _rows(values, ids) for name, values in self.targets.items()}}

    def targets_of(self, i: int) -> dict[str, Any]:
        """Sample i's targets as Split.sample gives them (sized), without decoding its image."""
        targets = {name: values[i] for name, values in self.targets.items()}
        return self.images.sized_targets(i, targets) if self.streamed else targets

    def take(self, indices: Sequence[int]) -> Split:
        indices = np.asarray(indices, dtype=np.int64)
        return Split(
            _take(self.images, indices),
            {name: _take(values, indices) for name, values in self.targets.items()},
            index=None if self.index is None else self.index.take(indices),
        )


def _rows(values, indices: np.ndarray):
    """values[i] for each index: one indexing of an array, else one look-up per index."""
    return values[indices] if isinstance(values, np.ndarray) else [values[i] for i in indices]


def _take(values, indices: np.ndarray):
    if isinstance(values, np.ndarray):
        return values[indices]
    return [values[i] for i in indices] if isinstance(values, list) else values.take(indices)


@dataclass(frozen=True)
class DataBundle:
    name: str
    train: Split
    val: Split
    test: Split
    class_names: list[str] = field(default_factory=list)
    target_names: list[str] = field(default_factory=list)
    verification: VerificationReport | None = None  # what the file-based sources checked, kept and skipped
    mask_names: list[str] = field(default_factory=list)  # a name per mask value when the data names them all

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.train.images.shape[1:])

    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def limit(self, max_per_split: int | None) -> DataBundle:
        """The first `max_per_split` samples of each split (for quick trial runs)."""
        if max_per_split is None:
            return self
        if max_per_split < 1:
            raise UserError(f"data.limit must be a positive number of samples, received {max_per_split}")
        return replace(
            self, **{name: split.take(range(min(len(split), max_per_split))) for name, split in self.splits().items()}
        )

    def without_targets(self, *names: str) -> DataBundle:
        return replace(
            self,
            **{
                split_name: replace(split, targets={k: v for k, v in split.targets.items() if k not in names})
                for split_name, split in self.splits().items()
            },
        )

    def pixel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and standard deviation of the training images, in pixel units (estimated from a
        spread of images when the split is streamed from files)."""
        if self.train.streamed:
            from visionkit.data.index import sampled_pixel_stats

            return sampled_pixel_stats(self.train)
        if self.train.input_key == "series":
            from visionkit.data.series import series_stats

            return series_stats(self.train.images)
        # Sums over chunks of images: a float64 copy of all the pixels would take 8x their memory.
        images = self.train.images
        total, squares, count = 0.0, 0.0, 0
        for start in range(0, len(images), 256):
            pixels = images[start : start + 256].reshape(-1, images.shape[-1]).astype(np.float64)
            total, squares, count = total + pixels.sum(axis=0), squares + (pixels**2).sum(axis=0), count + len(pixels)
        mean = total / count
        std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
        return mean.tolist(), np.maximum(std, 1.0).tolist()

    def check_task(self, target_key: str, task: str) -> None:
        if target_key not in self.train.targets:
            raise UserError(
                f"dataset '{self.name}' has no '{target_key}' targets for task '{task}'; "
                f"it provides: {', '.join(self.train.targets)}"
            )


def split_indices(
    n: int, *, val_fraction: float, test_fraction: float, seed: int, stratify: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded train/val/test index split, stratified by `stratify` labels when given."""
    parts = carve_indices(n, {"test": test_fraction, "val": val_fraction}, seed=seed, stratify=stratify)
    return parts["train"], parts["val"], parts["test"]


def check_fractions(fractions: dict[str, float]) -> None:
    names = sorted(fractions, key=SPLIT_NAMES.index)
    for name in names:
        if not 0 < fractions[name] < 1:
            raise UserError(f"data.{name}_fraction must be between 0 and 1, received {fractions[name]}")
    if sum(fractions.values()) >= 1:
        raise UserError(
            f"{' + '.join(f'data.{name}_fraction' for name in names)} must be below 1, received "
            f"{' + '.join(str(fractions[name]) for name in names)}"
        )


def carve_indices(
    n: int, fractions: dict[str, float], *, seed: int, stratify: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Seeded split of range(n) into "train" and one part per entry of `fractions` (a share of all n),
    taken in order from what is left, stratified by `stratify` labels when given."""
    check_fractions(fractions)
    parts, left = {"train": np.arange(n)}, 1.0
    for name, fraction in fractions.items():
        labels = None if stratify is None else stratify[parts["train"]]
        try:
            parts["train"], parts[name] = train_test_split(
                parts["train"], test_size=fraction / left, random_state=seed, stratify=labels
            )
        except ValueError as error:  # too few samples (per class) for the requested shares
            kind = " stratified by class" if stratify is not None else ""
            raise UserError(
                f"cannot carve a {name} split of {fraction} from {len(parts['train'])} samples{kind} "
                f"({error}); add samples or change data.{name}_fraction"
            ) from None
        left -= fraction
    return {name: np.sort(indices) for name, indices in parts.items()}


def bundle_from_arrays(
    name: str,
    images: np.ndarray,
    targets: dict[str, Any],
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    stratify: np.ndarray | None = None,
    class_names: list[str] | None = None,
    target_names: list[str] | None = None,
) -> DataBundle:
    """Split one set of samples into a DataBundle."""
    everything = Split(images, targets)
    train, val, test = split_indices(
        len(everything), val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, stratify=stratify
    )
    return DataBundle(
        name,
        everything.take(train),
        everything.take(val),
        everything.take(test),
        class_names=list(class_names or []),
        target_names=list(target_names or []),
    )


def stack_samples(samples: Sequence[dict[str, Any]]) -> Split:
    """A Split of samples that share their keys and image shape; samples whose "image" is a verified file
    (data/index.py's ImageFile) make a Split that reads them when it is used."""
    key = "series" if "series" in samples[0] else "image"
    if not isinstance(samples[0][key], np.ndarray):
        from visionkit.data.index import files_split

        return files_split(samples, LIST_TARGETS)
    keys = [k for k in samples[0] if k != key]
    targets = {k: [s[k] for s in samples] if k in LIST_TARGETS else np.asarray([s[k] for s in samples]) for k in keys}
    return Split(np.stack([s[key] for s in samples]), targets)


def bundle_from_samples(
    name: str,
    pools: dict[str, Sequence[dict[str, Any]]],
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    stratify_key: str | None = None,
    class_names: list[str] | None = None,
    target_names: list[str] | None = None,
    mask_names: list[str] | None = None,
    verification: VerificationReport | None = None,
) -> DataBundle:
    """A DataBundle from samples grouped by split. The splits the data defines (train/, val/, test/
    folders) are kept as they are; a missing val or test split is carved from train by its fraction,
    seeded, and stratified by `stratify_key` when given."""
    if "train" not in pools or set(pools) - set(SPLIT_NAMES):
        raise ValueError(f"pools must have 'train' and only {SPLIT_NAMES}, received {sorted(pools)}")
    for split, samples in pools.items():
        if not samples:
            raise UserError(f"dataset '{name}': the {split} split has no usable images")
    train = stack_samples(pools["train"])
    missing = {
        split: fraction for split, fraction in (("test", test_fraction), ("val", val_fraction)) if split not in pools
    }
    stratify = None if stratify_key is None else np.asarray(train.targets[stratify_key])
    carved = carve_indices(len(train), missing, seed=seed, stratify=stratify)
    splits = {split: stack_samples(pools[split]) for split in pools if split != "train"}
    splits.update({split: train.take(indices) for split, indices in carved.items()})
    return DataBundle(
        name,
        splits["train"],
        splits["val"],
        splits["test"],
        class_names=list(class_names or []),
        target_names=list(target_names or []),
        verification=verification,
        mask_names=list(mask_names or []),
    )
