"""`digit_scenes`: real handwriting for detection and segmentation, built in and seeded.

Each scene places 1 to max_digits of scikit-learn's real handwritten digits (8x8, upscaled with
bilinear interpolation to a random size in digit_size) on a black canvas, never overlapping. A
digit's stroke is where its intensity exceeds stroke_threshold of full white: the mask holds
digit + 1 there (0 = background), and its box is tight around the stroke, with class = the digit.
The same seed gives the same scenes and split.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from sklearn.datasets import load_digits

from visionkit.data.core import DataBundle, bundle_from_arrays
from visionkit.data.images import check_channels
from visionkit.errors import UserError
from visionkit.registry import DATASETS

PLACEMENT_TRIES = 30  # rejection sampling per digit; a crowded canvas ends up with fewer digits


def _free(box: tuple[int, int, int, int], placed: list[tuple[int, int, int, int]]) -> bool:
    """No overlap with the placed patches, one pixel of margin kept between strokes."""
    return all(box[0] >= b[2] + 1 or b[0] >= box[2] + 1 or box[1] >= b[3] + 1 or b[1] >= box[3] + 1 for b in placed)


def render_scene(
    rng: np.random.Generator,
    digits: np.ndarray,
    labels: np.ndarray,
    image_size: int,
    max_digits: int,
    digit_size: tuple[int, int],
    threshold: float,
) -> dict[str, np.ndarray]:
    """One scene: image uint8 HxW, boxes [N, 4] pixel xyxy, classes [N], mask HxW."""
    image = np.zeros((image_size, image_size), np.float32)
    mask = np.zeros((image_size, image_size), np.uint8)
    placed, boxes, classes = [], [], []
    for _ in range(rng.integers(1, max_digits + 1)):
        index, side = rng.integers(len(digits)), int(rng.integers(digit_size[0], digit_size[1] + 1))
        for _ in range(PLACEMENT_TRIES):
            x, y = (int(v) for v in rng.integers(0, image_size - side + 1, 2))
            if _free((x, y, x + side, y + side), placed):
                break
        else:
            continue
        patch = np.round(cv2.resize(digits[index], (side, side), interpolation=cv2.INTER_LINEAR))
        stroke = patch > threshold * 255  # of the pixels as stored, so that image and mask agree
        ys, xs = np.nonzero(stroke)
        if not len(xs):
            continue
        placed.append((x, y, x + side, y + side))
        image[y : y + side, x : x + side] = patch
        mask[y : y + side, x : x + side][stroke] = labels[index] + 1
        boxes.append([x + xs.min(), y + ys.min(), x + xs.max() + 1, y + ys.max() + 1])
        classes.append(labels[index])
    return {
        "image": np.clip(image, 0, 255).astype(np.uint8),
        "boxes": np.asarray(boxes, np.float32),
        "classes": np.asarray(classes, np.int64),
        "mask": mask,
    }


@DATASETS.register("digit_scenes", tasks=("detection", "segmentation"))
def digit_scenes(
    *,
    num_images: int = 1000,
    image_size: int = 64,
    max_digits: int = 4,
    digit_size: Sequence[int] = (12, 24),
    stroke_threshold: float = 0.5,
    channels: int = 1,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> DataBundle:
    channels = check_channels(channels)
    if image_size < 16:
        raise UserError(f"data.image_size must be at least 16 for digit_scenes, received {image_size}")
    if max_digits < 1:
        raise UserError(f"data.max_digits must be at least 1, received {max_digits}")
    if not (
        isinstance(digit_size, (list, tuple))
        and len(digit_size) == 2
        and 8 <= digit_size[0] <= digit_size[1] <= image_size
    ):
        raise UserError(
            f"data.digit_size must be [min, max] with 8 <= min <= max <= data.image_size "
            f"({image_size}), received {digit_size!r}"
        )
    if not 0 < stroke_threshold < 1:
        raise UserError(f"data.stroke_threshold must be between 0 and 1, received {stroke_threshold}")
    raw = load_digits()
    digits = (raw.images * (255.0 / 16.0)).astype(np.float32)
    rng = np.random.default_rng(seed)
    scenes = [
        render_scene(rng, digits, raw.target, image_size, max_digits, tuple(digit_size), stroke_threshold)
        for _ in range(num_images)
    ]
    images = np.stack([s["image"] for s in scenes])[..., None].repeat(channels, axis=-1)
    targets = {
        "boxes": [s["boxes"] for s in scenes],
        "classes": [s["classes"] for s in scenes],
        "mask": np.stack([s["mask"] for s in scenes]),
    }
    return bundle_from_arrays(
        "digit_scenes",
        images,
        targets,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        class_names=[str(d) for d in range(10)],
    )
