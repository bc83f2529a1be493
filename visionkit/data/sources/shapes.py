"""`shapes`: a seeded synthetic scene generator.

Each scene has a main object and up to `max_objects - 1` smaller distractors that never overlap it
or each other, on a textured, noisy background. Every object has a class, a pixel xyxy box and
a mask, so one generator serves classification (the main object's class), regression (the main
object's centre and size, normalised to 0..1), detection (all boxes) and segmentation (the
class-index mask, 0 = background). The same seed and size give the same scenes.
"""

from __future__ import annotations

import cv2
import numpy as np

from visionkit.data.core import DataBundle, bundle_from_arrays
from visionkit.errors import UserError
from visionkit.registry import DATASETS

CLASS_NAMES = ["circle", "square", "triangle", "star"]
TARGET_NAMES = ["center_x", "center_y", "width", "height"]
# Half-size of the main object as a fraction of the image side: a wide range, so that its size
# varies as much as its position and both are worth regressing.
MAIN_RADIUS = (0.08, 0.3)


def _outline(kind: str, cx: float, cy: float, r: float) -> np.ndarray:
    """Polygon vertices (float) of a shape of half-size r centred at (cx, cy)."""
    if kind == "square":
        angles, radii = np.deg2rad([45, 135, 225, 315]), np.full(4, r * np.sqrt(2))
    elif kind == "triangle":
        angles, radii = np.deg2rad([-90, 30, 150]), np.full(3, r)
    elif kind == "star":
        angles, radii = np.deg2rad(np.arange(10) * 36 - 90), np.tile([r, 0.45 * r], 5)
    else:  # circle
        angles, radii = np.linspace(0, 2 * np.pi, 48, endpoint=False), np.full(48, r)
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)


def _shape_mask(kind: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    shift = 4  # sub-pixel precision for cv2's integer vertex coordinates
    points = np.round(_outline(kind, cx, cy, r) * (1 << shift)).astype(np.int32)
    cv2.fillPoly(mask, [points], 1, lineType=cv2.LINE_8, shift=shift)
    return mask.astype(bool)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A colour gradient, sinusoidal texture of random orientation and Gaussian noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    start, end = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
    t = (xx * np.cos(a := rng.uniform(0, np.pi)) + yy * np.sin(a) + 1) / 2
    image = start + (end - start) * t[..., None]
    theta, frequency = rng.uniform(0, np.pi), rng.uniform(4, 12)
    stripes = np.sin(2 * np.pi * frequency * (xx * np.cos(theta) + yy * np.sin(theta)))
    image += rng.uniform(8, 25) * stripes[..., None]
    image += rng.normal(0, rng.uniform(3, 10), image.shape)
    return image


def _contrasting_colour(rng: np.random.Generator, background_mean: np.ndarray) -> np.ndarray:
    for _ in range(20):
        colour = rng.uniform(0, 255, 3)
        if np.abs(colour - background_mean).sum() > 150:
            return colour
    return 255 - background_mean


def _overlaps(box, boxes, margin: float) -> bool:
    return any(
        box[0] < b[2] + margin and b[0] < box[2] + margin and box[1] < b[3] + margin and b[1] < box[3] + margin
        for b in boxes
    )


def render_scene(rng: np.random.Generator, size: int, max_objects: int) -> dict[str, np.ndarray]:
    """One sample: image, the main object's label and target, and every object's box, class and mask."""
    image = _background(rng, size)
    placed = []  # (class id, half-size, cx, cy, box)
    main_r = rng.uniform(*MAIN_RADIUS) * size
    for index in range(rng.integers(1, max_objects + 1)):
        r = main_r if index == 0 else max(2.0, rng.uniform(0.3, 0.6) * main_r)
        for _ in range(30):  # rejection sampling until the object sits clear of the others
            cx, cy = rng.uniform(r + 1, size - r - 1, 2)
            box = (cx - r, cy - r, cx + r, cy + r)
            if not _overlaps(box, [p[4] for p in placed], margin=2):
                placed.append((int(rng.integers(len(CLASS_NAMES))), r, cx, cy, box))
                break
    mask = np.zeros((size, size), np.uint8)
    boxes, classes = [], []
    for class_id, r, cx, cy, _ in placed:
        shape = _shape_mask(CLASS_NAMES[class_id], cx, cy, r, size)
        image[shape] = _contrasting_colour(rng, image[shape].mean(axis=0)) + rng.normal(0, 4, (shape.sum(), 3))
        mask[shape] = class_id + 1
        ys, xs = np.nonzero(shape)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        classes.append(class_id)
    boxes = np.asarray(boxes, np.float32)
    main = boxes[0]
    target = (
        np.array([(main[0] + main[2]) / 2, (main[1] + main[3]) / 2, main[2] - main[0], main[3] - main[1]], np.float32)
        / size
    )
    return {
        "image": np.clip(image, 0, 255).astype(np.uint8),
        "label": classes[0],
        "target": target,
        "boxes": boxes,
        "classes": np.asarray(classes, np.int64),
        "mask": mask,
    }


@DATASETS.register("shapes", tasks=("classification", "regression", "segmentation", "detection"))
def shapes(
    *,
    num_images: int = 4000,
    image_size: int = 64,
    max_objects: int = 3,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> DataBundle:
    if image_size < 16:
        raise UserError(f"data.image_size must be at least 16 for shapes, received {image_size}")
    if max_objects < 1:
        raise UserError(f"data.max_objects must be at least 1, received {max_objects}")
    rng = np.random.default_rng(seed)
    scenes = [render_scene(rng, image_size, max_objects) for _ in range(num_images)]
    columns = {key: [s[key] for s in scenes] for key in ("boxes", "classes")}
    columns.update({key: np.stack([s[key] for s in scenes]) for key in ("label", "target", "mask")})
    images = np.stack([s["image"] for s in scenes])
    return bundle_from_arrays(
        "shapes",
        images,
        columns,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        stratify=columns["label"],
        class_names=CLASS_NAMES,
        target_names=TARGET_NAMES,
    )
