"""`yolo`: YOLO txt label folders with a dataset YAML (detection), as Ultralytics and Roboflow export them.

The YAML holds `path` (the dataset root, relative to the YAML's folder; default: that folder), `train`,
`val`, `test` (relative to path: an image folder, a .txt file listing images, or a list of these; Roboflow's
`../train/images` is also looked for without its `../`, as Ultralytics does) and `names` (a list, or a
mapping id -> name; `nc` alone names the classes by number). A YAML without splits has images/ and labels/
beside it (or images with their labels beside them, as labelImg keeps them): train/ val/ test/ sub-folders
are the splits, else every image is in train and val and test are carved with the seed. A folder without
data.yaml may name its classes one a line in classes.txt (Label Studio, labelImg) or obj.names (CVAT's YOLO 1.1,
Darknet's layout: obj_<subset>_data/ holds the images with their labels). The labels of
.../images/.../x.jpg are in .../labels/.../x.txt, one object a line: `class cx cy w h`, normalised to 0..1
(converted here to pixel xyxy). An image without a label file has no objects. A label file with a malformed
line or a class id out of range is reported with its file and line, and its image skipped: keeping the image
with the other boxes would teach the model that the object is background.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from visionkit.data.core import SPLIT_NAMES, DataBundle, bundle_from_samples
from visionkit.data.files import existing_path, list_images, read_text, split_folders
from visionkit.data.images import DecodeError
from visionkit.data.verify import ImageVerifier, clean_boxes, read_bytes
from visionkit.errors import UserError
from visionkit.registry import DATASETS

CLASS_LISTS = ("classes.txt", "obj.names")  # class names one a line, in a folder without data.yaml


class BadLabel(Exception):
    pass


@DATASETS.register("yolo", tasks=("detection",))
def yolo(
    *,
    path: str = "",
    image_size: int | Sequence[int] = (64, 64),
    channels: int = 3,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> DataBundle:
    yaml_path, spec = read_spec(existing_path(path, "a YOLO dataset YAML, or a folder with data.yaml"))
    root = (yaml_path.parent / str(spec.get("path") or ".")).expanduser()
    names = class_names(spec, yaml_path)
    verifier = ImageVerifier("yolo", root, image_size=image_size, channels=channels)
    pools = {split: _samples(paths, len(names), verifier) for split, paths in _split_images(root, spec, yaml_path)}
    return bundle_from_samples(
        "yolo",
        pools,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        class_names=names,
        verification=verifier.finish(),
    )


def read_spec(path: Path) -> tuple[Path, dict[str, Any]]:
    """The dataset YAML (path names it, or a folder with data.yaml) and its content; a folder with a class list
    (CLASS_LISTS) and no data.yaml gives that file and {"names": its lines}."""
    if path.is_dir():
        listed = next((path / name for name in CLASS_LISTS if (path / name).is_file()), None)
        if not (path / "data.yaml").exists() and listed is not None:
            return listed, {"names": [line.strip() for line in read_text(listed).splitlines() if line.strip()]}
        path = existing_path(
            str(path / "data.yaml"), "the dataset YAML, or a class list, in the folder data.path names"
        )
    try:
        spec = yaml.safe_load(read_text(path))
    except yaml.YAMLError as error:
        raise UserError(f"{path} is not readable YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(spec, dict) or not (spec.get("names") or spec.get("nc")):
        raise UserError(f"{path} must be a mapping that gives at least 'names' (the class names)")
    return path, spec


def class_names(spec: dict[str, Any], yaml_path: Path) -> list[str]:
    """'names' as a list, from a list or a mapping 0..K-1 -> name (keys may be written as strings); without
    names, `nc` classes named by their number. When both are given they must agree."""
    names, count = spec.get("names"), spec.get("nc")
    if names is None and isinstance(count, int) and count > 0:
        names = [str(i) for i in range(count)]
    if isinstance(names, dict) and all(str(k).isdigit() for k in names):
        names = {int(k): v for k, v in names.items()}
        names = [names[i] for i in range(len(names))] if sorted(names) == list(range(len(names))) else names
    if not isinstance(names, list) or not names:
        raise UserError(
            f"{yaml_path}: 'names' must be a non-empty list, or a mapping 0..K-1 -> name, received {names!r}"
        )
    if count is not None and count != len(names):
        raise UserError(f"{yaml_path}: 'nc' is {count!r} but 'names' lists {len(names)} classes")
    return [str(name) for name in names]


def _split_images(root: Path, spec: dict[str, Any], yaml_path: Path) -> list[tuple[str, list[Path]]]:
    """(split, image paths) of each split the YAML names; without any, of images/ beside it, or of the YAML's
    folder itself (labelImg keeps each label beside its image): its split folders, else all of it as train."""
    if any(spec.get(split) for split in SPLIT_NAMES):
        if not spec.get("train"):
            raise UserError(f"{yaml_path} names {', '.join(s for s in SPLIT_NAMES if spec.get(s))} but no 'train'")
        return [(split, _image_paths(root, spec[split], yaml_path, split)) for split in SPLIT_NAMES if spec.get(split)]
    images = root / "images" if (root / "images").is_dir() else root
    return [(split, list_images(folder)) for split, folder in split_folders(images).items()]


def _image_paths(root: Path, entries: Any, yaml_path: Path, split: str) -> list[Path]:
    paths = []
    for entry in entries if isinstance(entries, list) else [entries]:
        location = root / str(entry)
        if not location.exists() and str(entry).startswith("../"):  # Roboflow's exports point one folder too high
            location = root / str(entry)[3:]
        if location.is_dir():
            paths += list_images(location)
        elif location.is_file() and location.suffix == ".txt":  # one image path a line, relative to the list
            lines = read_text(location).splitlines()
            paths += [location.parent / line.strip() for line in lines if line.strip()]
        else:
            raise UserError(f"{yaml_path}: {split}: {location} is neither an image folder nor a .txt list of images")
    return paths


def label_path(image: Path) -> Path:
    """.../images/.../x.jpg -> .../labels/.../x.txt (the last 'images' folder); beside the image if none."""
    parts = list(image.parts)
    if "images" in parts[:-1]:
        parts[len(parts) - 2 - parts[-2::-1].index("images")] = "labels"
    return Path(*parts).with_suffix(".txt")


def parse_labels(text: str, num_classes: int, where: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Normalised cxcywh boxes, class ids and each box's `file line n`; BadLabel names the bad line. A polygon line
    (`class x1 y1 x2 y2 x3 y3 ...`, YOLO's segmentation format, which Roboflow exports for outlined objects) gives
    the box around its points, as Ultralytics' detection does."""
    boxes, classes, sources = [], [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            values = [float(v) for v in fields]
        except ValueError:
            values = []
        polygon = len(values) >= 7 and len(values) % 2 == 1
        if not (len(values) == 5 or polygon) or not all(math.isfinite(v) for v in values):
            raise BadLabel(
                f"{where} line {number}: expected 'class cx cy w h', received {line.strip()!r} "
                f"(or a polygon: 'class x1 y1 x2 y2 x3 y3 ...')"
            )
        if values[0] != int(values[0]) or not 0 <= values[0] < num_classes:
            raise BadLabel(f"{where} line {number}: class id {fields[0]} is out of range 0..{num_classes - 1}")
        boxes.append(_enclosing(values[1:]) if polygon else values[1:])
        classes.append(int(values[0]))
        sources.append(f"{where} line {number}")
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(classes, np.int64), sources


def _enclosing(points: list[float]) -> list[float]:
    """cx, cy, w, h of the box around the points x1, y1, x2, y2, ..."""
    xs, ys = points[0::2], points[1::2]
    return [(min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)]


def label_text(labels: Path) -> str:
    """The label file's text, "" when there is none (an image without objects); BadLabel when it is there but
    cannot be read (a link to nothing, a link loop, no permission, not UTF-8 text)."""
    if not labels.exists() and not labels.is_symlink():
        return ""
    try:
        return read_bytes(labels).decode("utf-8-sig")  # -sig: Windows editors begin with a byte-order mark
    except DecodeError as error:
        raise BadLabel(f"{labels}: {error.detail}") from None
    except UnicodeDecodeError:
        raise BadLabel(f"{labels} is not UTF-8 text") from None


def _samples(paths: list[Path], num_classes: int, verifier: ImageVerifier) -> list[dict[str, np.ndarray]]:
    samples = []
    for path, decoded in zip(paths, verifier.read(paths)):
        if decoded is None:
            continue
        labels = label_path(path)
        try:
            normalised, classes, sources = parse_labels(label_text(labels), num_classes, labels)
        except BadLabel as error:
            verifier.drop(path, decoded, "bad_label", str(error))
            continue
        height, width = decoded.original_size
        centre, size = normalised[:, :2] * [width, height], normalised[:, 2:] * [width, height]
        boxes, classes = clean_boxes(
            verifier.report,
            np.concatenate([centre - size / 2, centre + size / 2], axis=1),
            classes,
            (height, width),
            sources,
        )
        samples.append({"image": decoded.file, "boxes": boxes, "classes": classes})
    return samples
