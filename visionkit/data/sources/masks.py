"""`masks`: images/ plus masks/ of PNG class-index maps with the same stem, and a class-names file
(segmentation), the layout of Pascal VOC's SegmentationClass and of most labelling tools' exports.

The class-names file has one name a line, line 0 the background; a mask pixel of value v is class
line v, and 255 is ignore (VOC's object borders). Masks may be grey, palette (VOC: the palette
indices are the classes) or 16-bit PNGs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from visionkit.data.core import IGNORE_INDEX, DataBundle, bundle_from_samples
from visionkit.data.files import existing_path, list_images, read_text, split_folders
from visionkit.data.images import DecodeError, read_mask
from visionkit.data.index import LazyItem
from visionkit.data.verify import ImageVerifier, clean_mask, read_bytes
from visionkit.errors import UserError
from visionkit.registry import DATASETS


@DATASETS.register("masks", tasks=("segmentation",))
def masks(
    *,
    path: str = "",
    images: str = "images",
    masks: str = "masks",
    class_names_file: str = "classes.txt",
    image_size: int | Sequence[int] = (64, 64),
    channels: int = 3,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> DataBundle:
    """root/<images>/, root/<masks>/ (or both inside root/{train,val,test}/) and root/<class_names_file>."""
    root = existing_path(path, f"a folder with {images}/, {masks}/ and {class_names_file}")
    names = read_class_names(root / class_names_file)
    verifier = ImageVerifier("masks", root, image_size=image_size, channels=channels)
    pools = {
        split: _samples(folder / images, folder / masks, len(names), verifier)
        for split, folder in split_folders(root).items()
    }
    return bundle_from_samples(
        "masks",
        pools,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        class_names=names[1:],
        mask_names=names,
        verification=verifier.finish(),
    )


def read_class_names(path: Path) -> list[str]:
    if not path.is_file():
        raise UserError(f"{path} does not exist (data.class_names_file: one class name a line, line 0 the background)")
    names = [line.strip() for line in read_text(path).splitlines() if line.strip()]
    if len(names) < 2:
        raise UserError(f"{path} must name the background (line 0) and at least one class, received {names}")
    if len(names) > 255:
        raise UserError(f"{path} names {len(names)} classes; masks hold at most 255 (value 255 is ignore)")
    return names


def _samples(image_folder: Path, mask_folder: Path, num_values: int, verifier: ImageVerifier) -> list[dict]:
    for folder, key in ((image_folder, "data.images"), (mask_folder, "data.masks")):
        if not folder.is_dir():
            raise UserError(f"{folder} does not exist ({key} names the folder)")
    mask_of = {
        p.relative_to(mask_folder).with_suffix("").as_posix(): p
        for p in sorted(list_images(mask_folder), key=lambda p: p.suffix.lower() == ".png")
    }  # .png wins
    image_paths = list_images(image_folder)
    samples = []
    for path, decoded in zip(image_paths, verifier.read(image_paths)):
        if decoded is None:
            continue
        stem = path.relative_to(image_folder).with_suffix("").as_posix()
        mask_path = mask_of.get(stem)
        if mask_path is None:
            verifier.drop(path, decoded, "mask_missing", f"no mask {mask_folder / stem}.png")
            continue
        try:
            mask = read_mask(read_bytes(mask_path, "mask_"))
        except DecodeError as error:
            verifier.drop(path, decoded, error.reason, f"mask {mask_path}: {error.detail}")
            continue
        if mask.shape != decoded.original_size:
            verifier.drop(
                path,
                decoded,
                "mask_size",
                f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]}, the image "
                f"{path} is {decoded.original_size[1]}x{decoded.original_size[0]}",
            )
            continue
        clean_mask(verifier.report, mask, num_values, str(mask_path))  # reports what reading will set to ignore
        samples.append({"image": decoded.file, "mask": LazyItem((str(mask_path), num_values), mask_of_file)})
    return samples


def mask_of_file(item: tuple[str, int]) -> np.ndarray:
    """The mask file's class indices, values outside the class range set to ignore (as verification reported)."""
    path, num_values = item
    try:
        with open(path, "rb") as handle:
            mask = read_mask(handle.read())
    except (OSError, DecodeError) as error:
        raise UserError(f"{path} cannot be read any more ({error}); it changed after verification") from None
    return np.where((mask < 0) | (mask >= num_values), IGNORE_INDEX, mask).astype(np.uint8)
