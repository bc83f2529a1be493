"""`coco`: a COCO instances JSON plus its image folder (detection and segmentation).

Boxes come from `bbox` (COCO's pixel xywh, converted here to xyxy); masks from `segmentation`
(polygons, compressed and uncompressed RLE, decoded with pycocotools) painted largest object first,
so that small objects stay visible, with value class index + 1. Categories are sorted by id; the
class index is the position. Crowd annotations (`iscrowd: 1`) are not training boxes and their pixels
are 255 (ignore) in masks, as are the pixels of annotations with unknown category ids and the boxes
of annotations without a segmentation. A split whose objects have boxes only has no masks (data.load
refuses it for segmentation).

Labelling tools' exports load as they are: data.path may name the JSON file (its folder is the root) or a
folder, where the JSON is data.annotations or else the one *.json in it or in its annotations/ (Roboflow's
`_annotations.coco.json`, CVAT's `annotations/instances_default.json`). A `file_name` is looked for under
<root>/<images>, the JSON's folder, an images/ beside the JSON and one beside its folder, also by its last
part alone (Label Studio writes `images/x.jpg` or absolute paths, Windows tools backslashes). Category ids
may start at 0 or 1; Roboflow's placeholder category (the others' supercategory, never used) is left out.
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
from visionkit.data.index import LazyItem
from visionkit.data.verify import Checked, ImageVerifier, VerificationReport, clean_boxes
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
    """root/<annotations> and root/<images>/, or the same inside root/{train,val,test}/; or the JSON file."""
    location = existing_path(path, f"a COCO JSON file, or a folder with {annotations} and {images}/")
    root = location.parent if location.is_file() else location
    splits = {"train": root} if location.is_file() else split_folders(root)
    json_paths = {
        split: location if location.is_file() else find_json(folder, annotations) for split, folder in splits.items()
    }
    documents = {split: read_json(json_path) for split, json_path in json_paths.items()}
    categories = _categories(documents, json_paths["train"])
    index_of = {c["id"]: i for i, c in enumerate(categories)}
    verifier = ImageVerifier("coco", root, image_size=image_size, channels=channels)
    pools = {}
    for split, folder in splits.items():
        folders = image_folders(folder, images, json_paths[split])
        pools[split] = _samples(documents[split], json_paths[split], folders, index_of, verifier)
    return bundle_from_samples(
        "coco",
        pools,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        class_names=[c["name"] for c in categories],
        verification=verifier.finish(),
    )


def find_json(folder: Path, annotations: str) -> Path:
    """folder/<annotations>, else the one JSON file in folder or in folder/annotations/ (exporters name it)."""
    named = folder / annotations
    if named.is_file():
        return named
    found = sorted(folder.glob("*.json")) + sorted(folder.glob("annotations/*.json"))
    if len(found) == 1:
        return found[0]
    which = f"it holds {', '.join(p.relative_to(folder).as_posix() for p in found)}" if found else "nor any .json"
    raise UserError(f"{folder} has no {annotations} ({which}): set data.annotations to the COCO JSON file")


def image_folders(folder: Path, images: str, json_path: Path) -> list[Path]:
    """Where exporters put the images of this JSON, in the order they are looked for."""
    candidates = (folder / images, json_path.parent, json_path.parent / "images", json_path.parent.parent / "images")
    return list(dict.fromkeys(candidates))


def image_path(file_name: str, folders: list[Path]) -> Path:
    """The first existing file that file_name names under the folders, whole or by its last part; the first
    candidate (reported missing later) when none exists."""
    name = file_name.replace("\\", "/")
    candidates = [folder / name for folder in folders] + [folder / Path(name).name for folder in folders]
    return next((p for p in candidates if p.exists() or p.is_symlink()), candidates[0])


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{path} does not exist (data.annotations names the COCO JSON file)")
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))  # -sig: some Windows tools write a BOM
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise UserError(f"{path} is not readable JSON ({str(error).splitlines()[0]})") from None
    if not isinstance(document, dict) or not isinstance(document.get("images"), list):
        raise UserError(f"{path} is not a COCO annotations file: it has no 'images' list")
    annotations = document.setdefault("annotations", [])
    if not isinstance(annotations, list) or not all(isinstance(ann, dict) for ann in annotations):
        raise UserError(f"{path}: 'annotations' must be a list of objects")
    return document


def _categories(documents: dict[str, dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    """The train JSON's categories sorted by id, less a placeholder: a category that no annotation of any split
    uses and that other categories name as their supercategory (Roboflow's, named after the project, id 0)."""
    categories = documents["train"].get("categories")
    if not categories or not all(
        isinstance(c, dict) and isinstance(c.get("id"), int) and isinstance(c.get("name"), str) for c in categories
    ):
        raise UserError(f"{path}: 'categories' must be a non-empty list of {{id, name}} entries with integer ids")
    ids = (ann.get("category_id") for document in documents.values() for ann in document["annotations"])
    used = {value for value in ids if _is_id(value)}

    def placeholder(category: dict[str, Any]) -> bool:
        children = [c for c in categories if c is not category and c.get("supercategory") == category["name"]]
        return bool(children) and category["id"] not in used

    return sorted((c for c in categories if not placeholder(c)), key=lambda c: c["id"])


def _samples(
    document: dict[str, Any],
    json_path: Path,
    folders: list[Path],
    index_of: dict[int, int],
    verifier: ImageVerifier,
) -> list[dict[str, Any]]:
    """The split's samples; without "mask" when it has objects but none with an outline (a boxes-only export)."""
    entries = document["images"]
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str) or not _is_id(entry.get("id")):
            raise UserError(f"{json_path}: images[{position}] needs an 'id' and a 'file_name' (a string)")
    by_image = defaultdict(list)
    known = {entry["id"] for entry in entries}
    for ann in document["annotations"]:
        if _is_id(ann.get("image_id")) and ann["image_id"] in known:
            by_image[ann["image_id"]].append(ann)
        else:
            verifier.report.find(
                "unknown_image",
                1,
                f"{json_path.name} annotation id {ann.get('id')}",
                f"image id {ann.get('image_id')} is not in 'images'; annotation ignored",
            )
    paths = [image_path(entry["file_name"], folders) for entry in entries]
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
        samples.append(_sample(decoded, by_image[entry["id"]], index_of, verifier.report, json_path.name))
    outlines = [segmentation is not None for sample in samples for segmentation, _, _ in sample["mask"].item[1]]
    if outlines and not any(outlines):
        return [{key: value for key, value in sample.items() if key != "mask"} for sample in samples]
    return samples


def _is_id(value: Any) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _sample(
    checked: Checked,
    anns: list[dict[str, Any]],
    index_of: dict[int, int],
    report: VerificationReport,
    source: str,
) -> dict[str, Any]:
    """The image's boxes in its own pixels, and its mask as the list of what to paint (read_mask paints it when
    the sample is read): (segmentation or None for the box, xyxy box, value), largest first."""
    height, width = checked.original_size
    paint, boxes, classes, sources = [], [], [], []
    for ann in sorted(anns, key=_area, reverse=True):
        where = f"{source} annotation id {ann.get('id')}"
        box = _xyxy(ann.get("bbox"))
        known = _is_id(ann.get("category_id")) and ann["category_id"] in index_of
        crowd = bool(ann.get("iscrowd", 0))
        if not known:
            report.find(
                "unknown_category",
                1,
                where,
                f"category id {ann.get('category_id')} is not in "
                f"'categories'; not a box, its pixels are ignored in masks",
            )
        report.find("crowd_annotations", int(crowd))
        segmentation = _checked_segmentation(ann.get("segmentation"), height, width, report, where)
        labelled = known and not crowd
        # Without an outline, the box holds unlabelled pixels: ignored, whatever its class.
        value = index_of[ann["category_id"]] + 1 if labelled and segmentation is not None else IGNORE_INDEX
        paint.append((segmentation, box, value))
        if labelled:
            boxes.append(box)
            classes.append(index_of[ann["category_id"]])
            sources.append(where)
    boxes, classes = clean_boxes(
        report, np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(classes), (height, width), sources
    )
    return {
        "image": checked.file,
        "boxes": boxes,
        "classes": classes,
        "mask": LazyItem(((height, width), paint), painted_mask),
    }


def painted_mask(item: tuple[tuple[int, int], list]) -> np.ndarray:
    """uint8 class-index mask of one image: objects painted largest first, so that small ones stay visible;
    crowds, unknown categories and boxes without an outline are IGNORE_INDEX, painted over the labels."""
    (height, width), paint = item
    mask = np.zeros((height, width), np.uint8)
    ignore = np.zeros((height, width), bool)
    for segmentation, box, value in paint:
        if segmentation is None:
            x1, y1, x2, y2 = np.nan_to_num(np.round(box)).astype(int).clip(0, [width, height, width, height])
            ignore[y1:y2, x1:x2] = True
            continue
        pixels = mask_utils.decode(_rle(segmentation, height, width)).astype(bool)
        if value == IGNORE_INDEX:
            ignore |= pixels
        else:
            mask[pixels] = value
    mask[ignore] = IGNORE_INDEX
    return mask


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


def _checked_segmentation(segmentation: Any, height: int, width: int, report: VerificationReport, where: str) -> Any:
    """The annotation's outline as pycocotools reads it (polygons or RLE), or None (reported) when it has none
    that can be read."""
    if not segmentation:
        report.find("no_segmentation")
        return None
    try:
        if isinstance(segmentation, list):  # polygons [x1, y1, x2, y2, ...]; fewer than 3 points outline nothing
            segmentation = [p for p in segmentation if isinstance(p, list) and len(p) >= 6]
            if not segmentation:
                raise ValueError("no polygon has 3 or more points")
        elif isinstance(segmentation, dict):
            if list(segmentation.get("size", [])) != [height, width]:
                raise ValueError(f"RLE size {segmentation.get('size')} is not the image's [{height}, {width}]")
        else:
            raise ValueError(f"expected polygons or RLE, received {type(segmentation).__name__}")
        _rle(segmentation, height, width)  # pycocotools' own checks, without painting the pixels
        return segmentation
    except (ValueError, TypeError, KeyError) as error:
        report.find("no_segmentation", 1, where, f"segmentation cannot be read ({error}); its box is ignored in masks")
        return None


def _rle(segmentation: Any, height: int, width: int) -> dict:
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    compressed = not isinstance(segmentation.get("counts"), list)
    return segmentation if compressed else mask_utils.frPyObjects(segmentation, height, width)
