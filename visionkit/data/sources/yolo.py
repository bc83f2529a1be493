"""`yolo`: YOLO txt label folders with a dataset YAML (detection), as Ultralytics and Roboflow export them.

The YAML holds `path` (the dataset root, relative to the YAML's folder; default: that folder), `train`,
`val`, `test` (relative to path: an image folder, a .txt file listing images, or a list of these) and
`names` (a list, or a mapping id -> name). The labels of .../images/.../x.jpg are in
.../labels/.../x.txt, one object a line: `class cx cy w h`, normalised to 0..1 (converted here to pixel
xyxy). An image without a label file has no objects. A label file with a malformed line or a class
id out of range is reported with its file and line, and its image skipped: keeping the image with
the other boxes would teach the model that the object is background.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from visionkit.data.core import SPLIT_NAMES, DataBundle, bundle_from_samples
from visionkit.data.files import existing_path, list_images
from visionkit.data.verify import ImageVerifier, clean_boxes
from visionkit.errors import UserError
from visionkit.registry import DATASETS


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
    yaml_path = existing_path(path, "a YOLO dataset YAML, or a folder with data.yaml")
    if yaml_path.is_dir():
        yaml_path = existing_path(str(yaml_path / "data.yaml"), "the dataset YAML in the folder data.path names")
    spec = read_spec(yaml_path)
    root = (yaml_path.parent / str(spec.get("path") or ".")).expanduser()
    names = class_names(spec.get("names"), yaml_path)
    verifier = ImageVerifier("yolo", root, image_size=image_size, channels=channels)
    pools = {
        split: _samples(_image_paths(root, spec[split], yaml_path, split), len(names), verifier)
        for split in SPLIT_NAMES
        if spec.get(split)
    }
    return bundle_from_samples(
        "yolo",
        pools,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        class_names=names,
        verification=verifier.finish(),
    )


def read_spec(yaml_path: Path) -> dict[str, Any]:
    try:
        spec = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise UserError(f"{yaml_path} is not readable YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(spec, dict) or not spec.get("train"):
        raise UserError(f"{yaml_path} must give at least 'train' (the training images) and 'names'")
    return spec


def class_names(names: Any, yaml_path: Path) -> list[str]:
    if isinstance(names, dict) and sorted(names) == list(range(len(names))):
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names:
        raise UserError(
            f"{yaml_path}: 'names' must be a non-empty list, or a mapping 0..K-1 -> name, received {names!r}"
        )
    return [str(name) for name in names]


def _image_paths(root: Path, entries: Any, yaml_path: Path, split: str) -> list[Path]:
    paths = []
    for entry in entries if isinstance(entries, list) else [entries]:
        location = root / str(entry)
        if location.is_dir():
            paths += list_images(location)
        elif location.is_file() and location.suffix == ".txt":  # one image path a line, relative to the list
            lines = location.read_text(encoding="utf-8").splitlines()
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
    """Normalised cxcywh boxes, class ids and each box's `file line n`; BadLabel names the bad line."""
    boxes, classes, sources = [], [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            values = [float(v) for v in fields]
        except ValueError:
            values = []
        if len(values) != 5 or not all(math.isfinite(v) for v in values):
            raise BadLabel(f"{where} line {number}: expected 'class cx cy w h', received {line.strip()!r}")
        if values[0] != int(values[0]) or not 0 <= values[0] < num_classes:
            raise BadLabel(f"{where} line {number}: class id {fields[0]} is out of range 0..{num_classes - 1}")
        boxes.append(values[1:])
        classes.append(int(values[0]))
        sources.append(f"{where} line {number}")
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(classes, np.int64), sources


def _samples(paths: list[Path], num_classes: int, verifier: ImageVerifier) -> list[dict[str, np.ndarray]]:
    samples = []
    for path, decoded in zip(paths, verifier.read(paths)):
        if decoded is None:
            continue
        labels = label_path(path)
        try:
            text = labels.read_text(encoding="utf-8") if labels.is_file() else ""
            normalised, classes, sources = parse_labels(text, num_classes, labels)
        except (BadLabel, UnicodeDecodeError) as error:
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
