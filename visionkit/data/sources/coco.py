"""`coco`: a COCO instances JSON plus its image folder (detection and segmentation).

Boxes come from `bbox` (COCO's pixel xywh, converted here to xyxy); masks from `segmentation`
(polygons, compressed and uncompressed RLE, decoded with pycocotools) painted largest object first,
so that small objects stay visible, with value class index + 1. Categories are sorted by id; the
class index is the position. Crowd annotations (`iscrowd: 1`) are not training boxes and their pixels
are 255 (ignore) in masks, as are the pixels of annotations with unknown category ids and the boxes
of annotations without a segmentation.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from visionkit.data.core import IGNORE_INDEX, DataBundle, bundle_from_samples
from visionkit.data.files import existing_path, split_folders
from visionkit.data.images import resize_mask, scale_boxes
from visionkit.data.verify import Decoded, ImageVerifier, VerificationReport, clean_boxes
from visionkit.errors import UserError
from visionkit.registry import DATASETS


@DATASETS.register("coco", tasks=("detection", "segmentation"))
def coco(
    *,
    path: str = "",
    annotations: str = "annotations.json",
    images: str = "images",
    image_size: int | Sequence[int] = (64, 64),
    channels: int = 3,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> DataBundle:
    """root/<annotations> and root/<images>/, or the same inside root/{train,val,test}/."""
    root = existing_path(path, f"a folder with {annotations} and {images}/")
    splits = split_folders(root)
    documents = {split: read_json(folder / annotations) for split, folder in splits.items()}
    categories = _categories(documents["train"], splits["train"] / annotations)
    index_of = {c["id"]: i for i, c in enumerate(categories)}
    verifier = ImageVerifier("coco", root, image_size=image_size, channels=channels)
    pools = {
        split: _samples(documents[split], folder / annotations, folder / images, index_of, verifier)
        for split, folder in splits.items()
    }
    return bundle_from_samples(
        "coco",
        pools,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        class_names=[c["name"] for c in categories],
        verification=verifier.finish(),
    )


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{path} does not exist (data.annotations names the COCO JSON file)")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise UserError(f"{path} is not readable JSON ({str(error).splitlines()[0]})") from None
    if not isinstance(document, dict) or not isinstance(document.get("images"), list):
        raise UserError(f"{path} is not a COCO annotations file: it has no 'images' list")
    return document


def _categories(document: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    categories = document.get("categories")
    if not categories or not all(isinstance(c, dict) and "id" in c and "name" in c for c in categories):
        raise UserError(f"{path}: 'categories' must be a non-empty list of {{id, name}} entries")
    return sorted(categories, key=lambda c: c["id"])


def _samples(
    document: dict[str, Any], json_path: Path, image_folder: Path, index_of: dict[int, int], verifier: ImageVerifier
) -> list[dict[str, np.ndarray]]:
    entries = document["images"]
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict) or "id" not in entry or "file_name" not in entry:
            raise UserError(f"{json_path}: images[{position}] needs an 'id' and a 'file_name'")
    by_image = defaultdict(list)
    known = {entry["id"] for entry in entries}
    for ann in document.get("annotations", []):
        if ann.get("image_id") in known:
            by_image[ann["image_id"]].append(ann)
        else:
            verifier.report.find(
                "unknown_image",
                1,
                f"{json_path.name} annotation id {ann.get('id')}",
                f"image id {ann.get('image_id')} is not in 'images'; annotation ignored",
            )
    paths = [image_folder / entry["file_name"] for entry in entries]
    samples = []
    for entry, path, decoded in zip(entries, paths, verifier.read(paths)):
        if decoded is None:
            continue
        height, width = decoded.original_size
        if (entry.get("height", height), entry.get("width", width)) != (height, width):
            verifier.drop(
                path,
                decoded,
                "size_mismatch",
                f"{json_path.name} gives {entry.get('width')}x"
                f"{entry.get('height')} for a {width}x{height} image; its annotations would not fit",
            )
            continue
        samples.append(
            _sample(decoded, by_image[entry["id"]], index_of, verifier.report, json_path.name, verifier.size)
        )
    return samples


def _sample(
    decoded: Decoded,
    anns: list[dict[str, Any]],
    index_of: dict[int, int],
    report: VerificationReport,
    source: str,
    size: tuple[int, int],
) -> dict[str, np.ndarray]:
    height, width = decoded.original_size
    mask = np.zeros((height, width), np.uint8)
    ignore = np.zeros((height, width), bool)
    boxes, classes, sources = [], [], []
    for ann in sorted(anns, key=_area, reverse=True):
        where = f"{source} annotation id {ann.get('id')}"
        box = _xyxy(ann.get("bbox"))
        known, crowd = ann.get("category_id") in index_of, bool(ann.get("iscrowd", 0))
        if not known:
            report.find(
                "unknown_category",
                1,
                where,
                f"category id {ann.get('category_id')} is not in "
                f"'categories'; not a box, its pixels are ignored in masks",
            )
        report.find("crowd_annotations", int(crowd))
        pixels = _pixels(ann.get("segmentation"), height, width, report, where)
        if pixels is None:  # no outline: the box holds unlabelled pixels
            pixels = np.zeros_like(ignore)
            x1, y1, x2, y2 = np.nan_to_num(np.round(box)).astype(int).clip(0, [width, height, width, height])
            ignore[y1:y2, x1:x2] = True
        if known and not crowd:
            mask[pixels] = index_of[ann["category_id"]] + 1
            boxes.append(box)
            classes.append(index_of[ann["category_id"]])
            sources.append(where)
        else:
            ignore |= pixels
    mask[ignore] = IGNORE_INDEX
    boxes, classes = clean_boxes(
        report, np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(classes), (height, width), sources
    )
    return {
        "image": decoded.image,
        "boxes": scale_boxes(boxes, (height, width), size),
        "classes": classes,
        "mask": resize_mask(mask, size),
    }


def _area(ann: dict[str, Any]) -> float:
    if isinstance(ann.get("area"), (int, float)):
        return float(ann["area"])
    box = _xyxy(ann.get("bbox"))
    return float(np.nan_to_num((box[2] - box[0]) * (box[3] - box[1])))


def _xyxy(bbox: Any) -> np.ndarray:
    """COCO's [x, y, width, height] as [x1, y1, x2, y2]; NaNs (dropped later as degenerate) when malformed."""
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        return np.full(4, np.nan)
    return np.array([x, y, x + w, y + h])


def _pixels(segmentation: Any, height: int, width: int, report: VerificationReport, where: str) -> np.ndarray | None:
    """The annotation's pixels (bool HxW) from polygons or RLE; None when it has no usable outline."""
    if not segmentation:
        report.find("no_segmentation")
        return None
    try:
        if isinstance(segmentation, list):  # polygons [x1, y1, x2, y2, ...]; fewer than 3 points outline nothing
            polygons = [p for p in segmentation if isinstance(p, list) and len(p) >= 6]
            if not polygons:
                raise ValueError("no polygon has 3 or more points")
            rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
        elif isinstance(segmentation, dict):
            if list(segmentation.get("size", [])) != [height, width]:
                raise ValueError(f"RLE size {segmentation.get('size')} is not the image's [{height}, {width}]")
            compressed = not isinstance(segmentation.get("counts"), list)
            rle = segmentation if compressed else mask_utils.frPyObjects(segmentation, height, width)
        else:
            raise ValueError(f"expected polygons or RLE, received {type(segmentation).__name__}")
        return mask_utils.decode(rle).astype(bool)
    except (ValueError, TypeError, KeyError) as error:
        report.find("no_segmentation", 1, where, f"segmentation cannot be read ({error}); its box is ignored in masks")
        return None
