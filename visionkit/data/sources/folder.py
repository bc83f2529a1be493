"""`folder`: one sub-folder of images per class (classification), the layout of ImageNet and of
Keras' image_dataset_from_directory. Class names are the sorted sub-folder names."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from visionkit.data.core import DataBundle, bundle_from_samples
from visionkit.data.files import existing_path, list_images, split_folders
from visionkit.data.verify import ImageVerifier
from visionkit.errors import UserError
from visionkit.registry import DATASETS


def class_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


@DATASETS.register("folder", tasks=("classification",))
def folder(
    *,
    path: str = "",
    image_size: int | Sequence[int] = (64, 64),
    channels: int = 3,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> DataBundle:
    """root/<class>/<image>, or root/{train,val,test}/<class>/<image>; a missing val or test split is
    carved from train, stratified by class."""
    root = existing_path(path, "a folder with one sub-folder of images per class")
    splits = split_folders(root)
    class_names = class_folders(splits["train"])
    if not class_names:
        raise UserError(f"data.path: {splits['train']} has no class sub-folders (one folder of images per class)")
    records = {split: _records(folder, class_names) for split, folder in splits.items()}
    verifier = ImageVerifier("folder", root, image_size=image_size, channels=channels)
    pools = {
        split: [
            {"image": d.file, "label": np.int64(label)}
            for d, (_, label) in zip(verifier.read([p for p, _ in rows]), rows)
            if d is not None
        ]
        for split, rows in records.items()
    }
    report = verifier.finish()
    report.require_every_class([s["label"] for s in pools["train"]], class_names)
    return bundle_from_samples(
        "folder",
        pools,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        stratify_key="label",
        class_names=class_names,
        verification=report,
    )


def _records(folder: Path, class_names: list[str]) -> list[tuple[Path, int]]:
    unknown = sorted(set(class_folders(folder)) - set(class_names))
    if unknown:
        raise UserError(f"{folder} has class folders that train/ lacks: {', '.join(unknown)}")
    return [
        (image, index)
        for index, name in enumerate(class_names)
        if (folder / name).is_dir()
        for image in list_images(folder / name)
    ]
