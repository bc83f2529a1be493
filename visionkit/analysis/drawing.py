"""Samples drawn as pictures: mask overlays, labelled boxes, and grids of them (numpy and OpenCV,
RGB uint8 in and out).

Colours follow the sample contract: box class c and mask value c + 1 share a colour, mask value 0
(background) is left as it is, and 255 (ignore) is shaded grey.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from matplotlib.figure import Figure

from visionkit.analysis.plots import class_colours
from visionkit.data.core import IGNORE_INDEX

# The evaluation pictures' class colours (matplotlib's tab10) as uint8 RGB, one per object class.
PALETTE = (class_colours(11)[1:] * 255).round().astype(np.uint8)
IGNORE_COLOUR = (200, 200, 200)
FONT = cv2.FONT_HERSHEY_SIMPLEX
MIN_TILE_SIDE = 128  # small images are enlarged (nearest neighbour) so that labels stay readable


def class_colour(class_id: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in PALETTE[int(class_id) % len(PALETTE)])


def to_rgb(image: np.ndarray) -> np.ndarray:
    """An HxW, HxWx1 or HxWx3 uint8 image as HxWx3."""
    image = image.reshape(image.shape[0], image.shape[1], -1)
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image[..., :3].copy()


def overlay_mask(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The image with each labelled mask pixel blended with its class colour, and each class region
    outlined, so that a mask that does not fit its object shows."""
    colours = np.zeros((256, 3), np.float32)
    colours[1:IGNORE_INDEX] = [class_colour(v - 1) for v in range(1, IGNORE_INDEX)]
    colours[IGNORE_INDEX] = IGNORE_COLOUR
    rgb = to_rgb(image).astype(np.float32)
    labelled = (mask > 0)[..., None]
    canvas = np.where(labelled, (1 - alpha) * rgb + alpha * colours[mask], rgb).round().astype(np.uint8)
    for value in np.unique(mask):
        if 0 < value < IGNORE_INDEX:
            contours, _ = cv2.findContours((mask == value).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(canvas, contours, -1, class_colour(value - 1), 1)
    return canvas


def put_label(image: np.ndarray, text: str, origin: tuple[int, int], colour: tuple[int, int, int]) -> None:
    """Text on a filled box of `colour`, its bottom-left corner at `origin` (moved inside the image)."""
    (width, height), baseline = cv2.getTextSize(text, FONT, 0.4, 1)
    x = int(np.clip(origin[0], 0, max(image.shape[1] - width, 0)))
    y = int(np.clip(origin[1], height + baseline, image.shape[0]))
    cv2.rectangle(image, (x, y - height - baseline), (x + width, y), colour, cv2.FILLED)
    text_colour = (0, 0, 0) if sum(colour) > 450 else (255, 255, 255)
    cv2.putText(image, text, (x, y - baseline), FONT, 0.4, text_colour, 1, cv2.LINE_AA)


def draw_boxes(
    image: np.ndarray, boxes: np.ndarray, classes: Sequence[int], class_names: Sequence[str] = ()
) -> np.ndarray:
    """The image with pixel xyxy boxes outlined in their class colour, each labelled with its class name."""
    canvas = to_rgb(image)
    for box, class_id in zip(np.asarray(boxes).reshape(-1, 4), classes):
        colour = class_colour(class_id)
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(canvas, (x1, y1), (max(x2 - 1, x1), max(y2 - 1, y1)), colour, 1)
        name = class_names[class_id] if 0 <= class_id < len(class_names) else str(int(class_id))
        put_label(canvas, name, (x1, y1), colour)
    return canvas


def draw_sample(sample: dict[str, Any], class_names: Sequence[str] = ()) -> np.ndarray:
    """A sample as one RGB picture: enlarged, its mask overlaid, its boxes and its class label drawn."""
    image = sample["image"]
    scale = max(1, math.ceil(MIN_TILE_SIDE / min(image.shape[:2])))
    size = (image.shape[1] * scale, image.shape[0] * scale)
    canvas = to_rgb(cv2.resize(image, size, interpolation=cv2.INTER_NEAREST).reshape(size[1], size[0], -1))
    if "mask" in sample:
        canvas = overlay_mask(canvas, cv2.resize(sample["mask"], size, interpolation=cv2.INTER_NEAREST))
    if "boxes" in sample:
        canvas = draw_boxes(canvas, np.asarray(sample["boxes"], np.float64) * scale, sample["classes"], class_names)
    if "label" in sample:
        label = int(sample["label"])
        name = class_names[label] if 0 <= label < len(class_names) else str(label)
        put_label(canvas, name, (0, canvas.shape[0]), (255, 255, 255))  # bottom left: box labels sit on top
    return canvas


def image_grid(tiles: Sequence[np.ndarray], columns: int | None = None, pad: int = 4) -> np.ndarray:
    """RGB tiles in rows of `columns` (default: a near-square grid) on white, `pad` pixels apart."""
    if not tiles:
        raise ValueError("image_grid needs at least one tile, received none")
    columns = columns or math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    cell_h = max(t.shape[0] for t in tiles) + pad
    cell_w = max(t.shape[1] for t in tiles) + pad
    grid = np.full((rows * cell_h + pad, columns * cell_w + pad, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        y, x = pad + (i // columns) * cell_h, pad + (i % columns) * cell_w
        grid[y : y + tile.shape[0], x : x + tile.shape[1]] = to_rgb(tile)
    return grid


def image_figure(image: np.ndarray, dpi: int = 100) -> Figure:
    """A matplotlib Figure showing `image` pixel for pixel (for savefig and MLflow's log_figure)."""
    figure = Figure(figsize=(image.shape[1] / dpi, image.shape[0] / dpi), dpi=dpi)
    figure.figimage(image, resize=False)
    return figure
