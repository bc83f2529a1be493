"""Test-time augmentation: the model's outputs averaged over transformed copies of each image.

- `flip`: the image and its horizontal mirror. Dense outputs [B, H, W, K] (segmentation) are
  mirrored back before averaging. Image-level outputs [B, K] are averaged as they are, which assumes
  the target does not change under a mirror (a class does; an x position does not).
- `multicrop`: the 10 crops of AlexNet (Krizhevsky et al., 2012, sec. 4.1): the image resized up by
  256/224, its four corner crops and its centre crop at the input size, and their mirrors; the
  probabilities are averaged. GoogLeNet (Szegedy et al., 2015, sec. 7) averaged 144 crops the same
  way. Image-level outputs only: a crop's dense output no longer lines up with the image.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from visionkit.errors import UserError
from visionkit.registry import unknown_name_message

TTA_MODES = ("none", "flip", "multicrop")
MULTICROP_SCALE = 256 / 224  # AlexNet's 224-pixel crops of a 256-pixel image


def check_tta(mode: str) -> str:
    if mode not in TTA_MODES:
        raise UserError("eval.tta: " + unknown_name_message("test-time augmentation", mode, TTA_MODES))
    return mode


def mirror(images: np.ndarray) -> np.ndarray:
    """Horizontal mirror of a batch [B, H, W, ...]."""
    return np.ascontiguousarray(images[:, :, ::-1])


def multicrop_views(images: np.ndarray, scale: float = MULTICROP_SCALE) -> list[np.ndarray]:
    """Ten [B, H, W, C] views: corner (top-left, top-right, bottom-left, bottom-right) and centre
    crops of the images resized up by `scale`, then the same five mirrored."""
    _, height, width, channels = images.shape
    big_h, big_w = round(height * scale), round(width * scale)
    resized = np.stack(
        [
            cv2.resize(image, (big_w, big_h), interpolation=cv2.INTER_LINEAR).reshape(big_h, big_w, channels)
            for image in images
        ]
    )
    bottom, right = big_h - height, big_w - width
    corners = [(0, 0), (0, right), (bottom, 0), (bottom, right), (bottom // 2, right // 2)]
    crops = [np.ascontiguousarray(resized[:, y : y + height, x : x + width]) for y, x in corners]
    return crops + [mirror(crop) for crop in crops]


VIEWS: dict[str, Callable[[np.ndarray], list[np.ndarray]]] = {
    "none": lambda images: [images],
    "flip": lambda images: [images, mirror(images)],
    "multicrop": multicrop_views,
}
OUTPUT_RANKS = {"none": None, "flip": (2, 4), "multicrop": (2,)}  # the output ranks each mode can average


def _outputs(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, mode: str) -> np.ndarray:
    outputs = predict(images)
    if not isinstance(outputs, np.ndarray):
        raise UserError(
            f"eval.tta={mode} needs a model with a single output tensor; this one returns {type(outputs).__name__}"
        )
    ranks = OUTPUT_RANKS[mode]
    if ranks is not None and outputs.ndim not in ranks:
        kinds = "image-level [batch, K]" + (" or dense [batch, H, W, K]" if 4 in ranks else "")
        hint = ": use eval.tta=flip or none" if mode == "multicrop" else ""
        raise UserError(
            f"eval.tta={mode} averages {kinds} outputs; this model's outputs have shape {outputs.shape}{hint}"
        )
    return outputs


def predict_tta(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, mode: str) -> np.ndarray:
    """`predict` (a batch of images -> a batch of outputs) averaged over the views of `mode`."""
    outputs = [_outputs(predict, view, mode) for view in VIEWS[check_tta(mode)](images)]
    if mode == "flip" and outputs[0].ndim == 4:
        outputs[1] = mirror(outputs[1])  # dense outputs back in the image's orientation
    return np.mean(outputs, axis=0)
