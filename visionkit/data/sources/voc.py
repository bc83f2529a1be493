"""`voc`: Pascal VOC's layout (detection and segmentation), as the VOCdevkit holds it and as labelImg and CVAT
export it.

    <path>/Annotations/<id>.xml            one object a <object>: name, bndbox, difficult, truncated, occluded, pose
    <path>/JPEGImages/<id>.jpg
    <path>/ImageSets/Main/<list>.txt       the ids of a split, one a line (detection)
    <path>/ImageSets/Segmentation/<list>.txt
    <path>/SegmentationClass/<id>.png      palette PNG: the palette index is the class, 255 the ignored borders
    <path>/labelmap.txt                    CVAT's export: `name:r,g,b::` per class, for its RGB colour masks

`targets` (conf: the task's name) picks the annotations: detection reads the XML boxes of the ids in
ImageSets/Main, segmentation the masks of the ids in ImageSets/Segmentation. Without that ImageSets folder (a
labelling tool's export), every annotation file is a training sample and val and test are carved from them.
Detection also reads XML files beside their images (labelImg's default, Roboflow's export), in <path> or in its
train/, valid/ and test/ folders.

VOC's boxes are 1-based inclusive pixel indices: a box covering the image's first column has xmin 1. They become
the sample contract's 0-based pixel edges here: (xmin - 1, ymin - 1, xmax, ymax). Objects marked `difficult` stay in
the samples with a `difficult` flag: the detection task keeps them out of training and of the metrics.
"""

from __future__ import annotations

import functools
import io
import math
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from visionkit.data.core import IGNORE_INDEX, DataBundle, bundle_from_samples
from visionkit.data.files import existing_path, split_folders
from visionkit.data.images import DecodeError, read_mask
from visionkit.data.index import LazyItem
from visionkit.data.verify import Checked, ImageVerifier, clean_boxes, clean_mask, read_bytes
from visionkit.errors import UserError
from visionkit.registry import DATASETS

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
# data.targets -> (the ImageSets folder of its split lists, the folder of its annotation files, their suffix)
TARGETS = {"detection": ("Main", "Annotations", ".xml"), "segmentation": ("Segmentation", "SegmentationClass", ".png")}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class BadAnnotation(Exception):
    pass


@dataclass(frozen=True)
class VocObject:
    name: str
    box: tuple[float, float, float, float]  # 0-based pixel-edge xyxy
    difficult: bool = False
    truncated: bool = False
    occluded: bool = False
    pose: str = "Unspecified"


@dataclass(frozen=True)
class VocAnnotation:
    filename: str
    size: tuple[int, int] | None  # (height, width) the XML gives; None when it gives none (or zeros)
    segmented: bool
    objects: tuple[VocObject, ...]


@DATASETS.register("voc", tasks=("detection", "segmentation"))
def voc(
    *,
    path: str = "",
    targets: str = "detection",
    train_list: str = "train",
    val_list: str = "val",
    test_list: str = "test",
    class_names: Sequence[str] | None = None,
    image_size: int | Sequence[int] = (64, 64),
    channels: int = 3,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> DataBundle:
    """A split list that is empty or absent (val, test) is carved from train by its fraction."""
    root = existing_path(path, "a Pascal VOC folder with Annotations/, JPEGImages/ and ImageSets/")
    if targets not in TARGETS:
        raise UserError(
            f"data.targets must be one of {', '.join(TARGETS)} (conf: the task's name), received {targets!r}; "
            f"add task=detection or task=segmentation"
        )
    lists = {"train": train_list, "val": val_list, "test": test_list}
    verifier = ImageVerifier("voc", root, image_size=image_size, channels=channels)
    if targets == "segmentation":
        ids = _split_ids(root, targets, lists)
        colours, listed = _colours(root)
        names = list(class_names or listed or VOC_CLASSES)
        pools = {
            split: _mask_samples(root, split_ids, len(names) + 1, colours, verifier) for split, split_ids in ids.items()
        }
        mask_names = ["background", *names]
    else:
        annotations = {split: _annotations(entries, verifier) for split, entries in _xml_files(root, lists).items()}
        names = list(class_names) if class_names else _found_names(annotations)
        pools = {split: _box_samples(found, names, verifier) for split, found in annotations.items()}
        mask_names = []
    return bundle_from_samples(
        "voc",
        pools,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        class_names=names,
        mask_names=mask_names,
        verification=verifier.finish(),
    )


def _split_ids(root: Path, targets: str, lists: dict[str, str]) -> dict[str, list[str]]:
    """The ids of each split whose list exists; without the ImageSets folder, every annotation file is train, and
    a folder of one list only (CVAT's `default.txt`, when the task had no subsets) is the train list."""
    image_set, annotation_folder, suffix = TARGETS[targets]
    folder = root / "ImageSets" / image_set
    only = sorted(folder.glob("*.txt")) if folder.is_dir() else []
    if len(only) == 1 and not (folder / f"{lists['train']}.txt").is_file():
        lists = {"train": only[0].stem}
    if not folder.is_dir():
        annotations = root / annotation_folder
        if not annotations.is_dir():
            raise UserError(f"{root} has neither {folder} nor {annotations}: is data.path a Pascal VOC folder?")
        return {"train": sorted(p.stem for p in annotations.iterdir() if p.suffix.lower() == suffix)}
    ids = {}
    for split, name in lists.items():
        list_file = folder / f"{name}.txt"
        if name and list_file.is_file():
            try:
                lines = list_file.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as error:
                raise UserError(f"data.{split}_list: {list_file} is not readable text ({error})") from None
            ids[split] = [line.split()[0] for line in lines if line.split()]  # "<id>" or "<id> <±1>" per line
        elif split == "train":
            present = ", ".join(sorted(p.stem for p in folder.glob("*.txt"))) or "none"
            raise UserError(f"data.train_list: {list_file} does not exist; lists in {folder}: {present}")
    return ids


def read_annotation(path: Path) -> VocAnnotation:
    """A VOC XML file as labelImg, CVAT and the VOCdevkit write it; BadAnnotation says what is wrong."""
    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError, ValueError) as error:
        why = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BadAnnotation(f"not readable XML ({why})") from None
    if root.tag != "annotation":
        raise BadAnnotation(f"the root element is <{root.tag}>, not <annotation>")
    width, height = _number(root, "size/width", 0), _number(root, "size/height", 0)
    return VocAnnotation(
        filename=(root.findtext("filename") or "").strip(),
        size=(int(height), int(width)) if width > 0 and height > 0 else None,
        segmented=_flag(root, "segmented"),
        objects=tuple(_object(element, n) for n, element in enumerate(root.iter("object"), start=1)),
    )


def _object(element: ElementTree.Element, number: int) -> VocObject:
    name = (element.findtext("name") or "").strip()
    if not name:
        raise BadAnnotation(f"object {number} has no <name>")
    try:
        x1, y1, x2, y2 = (_number(element, f"bndbox/{key}") for key in ("xmin", "ymin", "xmax", "ymax"))
    except BadAnnotation as error:
        raise BadAnnotation(f"object {number} ({name}): {error}") from None
    return VocObject(
        name=name,
        # 1-based inclusive pixel indices -> 0-based pixel edges: pixel 1 starts at edge 0, pixel xmax ends at xmax.
        box=(x1 - 1, y1 - 1, x2, y2),
        difficult=_flag(element, "difficult"),
        truncated=_flag(element, "truncated"),
        occluded=_flag(element, "occluded"),
        pose=(element.findtext("pose") or "Unspecified").strip(),
    )


def _number(element: ElementTree.Element, path: str, default: float | None = None) -> float:
    text = element.findtext(path)
    if text is None or not text.strip():
        if default is None:
            raise BadAnnotation(f"<{path}> is missing")
        return default
    try:
        value = float(text)  # CVAT writes decimals
    except ValueError:
        raise BadAnnotation(f"<{path}> is {text.strip()!r}, not a number") from None
    if not math.isfinite(value):
        raise BadAnnotation(f"<{path}> is {text.strip()!r}, not a finite number")
    return value


def _flag(element: ElementTree.Element, path: str) -> bool:
    """A 0/1 field (labelImg also writes 'true'/'false' for some); absent is 0."""
    text = (element.findtext(path) or "0").strip().lower()
    return text in ("1", "true", "yes")


def _xml_files(root: Path, lists: dict[str, str]) -> dict[str, list[tuple[Path, Path]]]:
    """(XML file, the folder of its image) per split: the VOCdevkit's Annotations/ and JPEGImages/ by the split
    lists, else XML files beside their images (labelImg's default, Roboflow's export), in root or in its train/,
    valid/ and test/ folders."""
    if (root / "Annotations").is_dir() or (root / "ImageSets").is_dir():
        return {
            split: [(root / "Annotations" / f"{image_id}.xml", root / "JPEGImages") for image_id in ids]
            for split, ids in _split_ids(root, "detection", lists).items()
        }
    found = {
        split: [(xml, folder) for xml in sorted(folder.glob("*.xml"))] for split, folder in split_folders(root).items()
    }
    if not any(found.values()):
        raise UserError(f"{root} has no Annotations/ folder and no .xml files beside its images: not a VOC dataset")
    return found


def _image_path(folder: Path, image_id: str, filename: str = "") -> Path:
    """<folder>/<filename the XML gives>, else <folder>/<id> with the first image suffix found."""
    if filename and (folder / Path(filename).name).is_file():
        return folder / Path(filename).name
    candidates = [folder / f"{image_id}{suffix}" for suffix in IMAGE_SUFFIXES]
    return next((p for p in candidates if p.is_file()), candidates[0])  # a missing file: verification names it


@dataclass(frozen=True)
class _Found:
    path: Path
    checked: Checked
    annotation: VocAnnotation
    xml: Path


def _annotations(entries: list[tuple[Path, Path]], verifier: ImageVerifier) -> list[_Found]:
    """Each (XML file, image folder)'s annotation and verified image; an unreadable XML or a <size> that is not the
    image's is a skip."""
    parsed = []
    for xml, images in entries:
        if not xml.is_file():
            verifier.report.skip("annotation_missing", str(xml), f"the split lists {xml.stem} but it has no annotation")
            continue
        try:
            annotation = read_annotation(xml)
        except BadAnnotation as error:
            verifier.report.skip("bad_annotation", str(xml), str(error))
            continue
        parsed.append((xml, _image_path(images, xml.stem, annotation.filename), annotation))
    paths = [path for _, path, _ in parsed]
    found = []
    for (xml, path, annotation), checked in zip(parsed, verifier.read(paths)):
        if checked is None:
            continue
        if annotation.size not in (None, checked.original_size):
            (height, width), (real_h, real_w) = annotation.size, checked.original_size
            detail = f"{xml.name} gives {width}x{height} for a {real_w}x{real_h} image; its boxes would not fit"
            verifier.drop(path, checked, "size_mismatch", detail)
            continue
        found.append(_Found(path, checked, annotation, xml))
    return found


def _found_names(annotations: dict[str, list[_Found]]) -> list[str]:
    """VOC's 20 classes when every object is one of them, else the sorted names the XML files use."""
    names = {obj.name for found in annotations.values() for item in found for obj in item.annotation.objects}
    if not names:
        raise UserError("data=voc: no <object> in any annotation file; nothing to detect")
    return list(VOC_CLASSES) if names <= set(VOC_CLASSES) else sorted(names)


def _box_samples(found: list[_Found], names: list[str], verifier: ImageVerifier) -> list[dict[str, Any]]:
    index_of = {name: i for i, name in enumerate(names)}
    report = verifier.report
    samples = []
    for item in found:
        objects = []
        for obj in item.annotation.objects:
            if obj.name in index_of:
                objects.append(obj)
            else:
                where = f"{item.xml}: object {obj.name!r}"
                report.find("unknown_category", 1, where, f"not in data.class_names {names}; not a box")
        report.find("difficult_objects", sum(obj.difficult for obj in objects))
        boxes = np.array([obj.box for obj in objects], np.float64).reshape(-1, 4)
        sources = [f"{item.xml} object {obj.name!r}" for obj in objects]
        # clean_boxes drops what it must with the classes it is given: give it positions to keep the flags aligned.
        boxes, kept = clean_boxes(report, boxes, np.arange(len(objects)), item.checked.original_size, sources)
        samples.append(
            {
                "image": item.checked.file,
                "boxes": boxes,
                "classes": np.array([index_of[objects[k].name] for k in kept], np.int64),
                "difficult": np.array([objects[k].difficult for k in kept], bool),
            }
        )
    return samples


@functools.cache
def voc_colour_map() -> np.ndarray:
    """[256, 3] uint8: the colour of each class index in VOC's palette (the devkit's bit-interleaving; 255 is the
    border colour 224, 224, 192)."""
    index = np.arange(256)
    colours = np.zeros((256, 3), np.int64)
    for bit in range(8):
        for channel in range(3):
            colours[:, channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
    return colours.astype(np.uint8)


def _colours(root: Path) -> tuple[tuple[tuple[int, int, int], ...] | None, list[str]]:
    """The colour of each mask value for masks saved as RGB (CVAT's export: its labelmap.txt, `name:r,g,b::` a
    line, the background first; None without it: VOC's palette) and the class names labelmap.txt gives."""
    labelmap = root / "labelmap.txt"
    if not labelmap.is_file():
        return None, []
    entries = []
    for number, line in enumerate(labelmap.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip() and not line.startswith("#"):
            name, _, rest = line.partition(":")
            try:
                rgb = tuple(int(v) for v in rest.split(":")[0].split(","))
            except ValueError:
                rgb = ()
            if len(rgb) != 3:
                raise UserError(f"{labelmap} line {number}: expected 'name:r,g,b::', received {line.strip()!r}")
            entries.append((name.strip(), rgb))
    return tuple(rgb for _, rgb in entries), [name for name, _ in entries[1:]]


def class_mask(data: bytes, colours: tuple[tuple[int, int, int], ...] | None) -> np.ndarray:
    """Class indices of a mask file: palette indices or grey values as they are; an RGB mask through `colours`
    (value = position; None: VOC's palette), VOC's border colour as IGNORE_INDEX, any other colour -1 (out of
    range)."""
    try:
        return read_mask(data)
    except DecodeError as error:
        if error.reason != "mask_colour":
            raise
    with Image.open(io.BytesIO(data)) as image:
        rgb = np.asarray(image.convert("RGB")).astype(np.int64)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    table = voc_colour_map().tolist()[:IGNORE_INDEX] if colours is None else colours
    values = {(r << 16) | (g << 8) | b: value for value, (r, g, b) in enumerate(table)}
    values[(224 << 16) | (224 << 8) | 192] = IGNORE_INDEX
    unique, inverse = np.unique(packed, return_inverse=True)
    return np.array([values.get(int(c), -1) for c in unique], np.int64)[inverse].reshape(packed.shape)


def voc_mask(item: tuple[str, int, tuple]) -> np.ndarray:
    """The mask file's class indices, values outside the classes set to ignore (as verification reported)."""
    path, num_values, colours = item
    try:
        with open(path, "rb") as handle:
            mask = class_mask(handle.read(), colours)
    except (OSError, DecodeError) as error:
        raise UserError(f"{path} cannot be read any more ({error}); it changed after verification") from None
    return np.where((mask < 0) | (mask >= num_values), IGNORE_INDEX, mask).astype(np.uint8)


def _mask_samples(
    root: Path, ids: list[str], num_values: int, colours: tuple, verifier: ImageVerifier
) -> list[dict[str, Any]]:
    paths = [_image_path(root / "JPEGImages", image_id) for image_id in ids]
    samples = []
    for image_id, path, checked in zip(ids, paths, verifier.read(paths)):
        if checked is None:
            continue
        mask_path = root / "SegmentationClass" / f"{image_id}.png"
        try:
            mask = class_mask(read_bytes(mask_path, "mask_"), colours)
        except DecodeError as error:
            verifier.drop(path, checked, error.reason, f"mask {mask_path}: {error.detail}")
            continue
        if mask.shape != checked.original_size:
            height, width = checked.original_size
            detail = f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]}, the image {path} is {width}x{height}"
            verifier.drop(path, checked, "mask_size", detail)
            continue
        clean_mask(verifier.report, mask, num_values, str(mask_path))  # reports what reading sets to ignore
        samples.append({"image": checked.file, "mask": LazyItem((str(mask_path), num_values, colours), voc_mask)})
    return samples
