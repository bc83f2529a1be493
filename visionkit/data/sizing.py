"""How an image of any size meets data.image_size outside training augmentation, with its boxes and mask.

- `stretch`: resized to the size, aspect ratio ignored (the behaviour of every source before images were
  kept at their own size; digits and shapes keep their results).
- `center_crop`: the ImageNet evaluation: resized, aspect kept, so that it covers size / crop_ratio
  (`Resize(256)` for 224 at 0.875), then the centre `size` cut out. Boxes are clipped to the crop; a box
  left with no area is dropped, its class with it.
- `letterbox`: resized, aspect kept, so that it fits inside the size, then padded at the bottom and right
  (images with 0, masks with IGNORE_INDEX, so padding never counts as background). Anchoring at the top
  left keeps box coordinates a pure scaling, so mapping predictions back to the file is one division.

Every mode first resizes the whole image to `resized_size(original)`; no detail finer than that survives,
which is why `decode_at_least` returns it: a JPEG decoded at 1/2, 1/4 or 1/8 scale down to that size
gives the same result within a grey level or two (tests/test_sizing.py measures it), once resized at the
scale of the reduction (images.resize_decoded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from visionkit.data import core  # core's IGNORE_INDEX is read at call time: core may import this module
from visionkit.data.images import image_size_pair, resize_decoded, resize_mask, scale_boxes
from visionkit.errors import UserError

SIZING_MODES = ("stretch", "center_crop", "letterbox")


def check_sizing(mode: str, crop_ratio: float) -> float:
    """data.resize and data.crop_ratio checked; the ratio as a float."""
    if mode not in SIZING_MODES:
        raise UserError(f"data.resize must be one of {', '.join(SIZING_MODES)}, received {mode!r}")
    if isinstance(crop_ratio, bool) or not isinstance(crop_ratio, (int, float)):
        raise UserError(f"data.crop_ratio must be a number in (0, 1], received {crop_ratio!r}")
    if not 0 < crop_ratio <= 1:
        raise UserError(f"data.crop_ratio must be in (0, 1], received {crop_ratio}")
    return float(crop_ratio)


@dataclass(frozen=True)
class Sizing:
    """Brings a sample (image, boxes in pixel xyxy with classes, mask) to `size` (height, width)."""

    size: tuple[int, int]
    mode: str = "stretch"
    crop_ratio: float = 0.875  # center_crop: the share of the resized image's shorter side that is kept

    def __post_init__(self):
        object.__setattr__(self, "size", image_size_pair(self.size))
        object.__setattr__(self, "crop_ratio", check_sizing(self.mode, self.crop_ratio))

    def resized_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        """(height, width) the whole image of original_size is resized to before the crop or the padding."""
        if self.mode == "stretch":
            return self.size
        (height, width), (out_h, out_w) = original_size, self.size
        if self.mode == "center_crop":
            scale = max(round(out_h / self.crop_ratio) / height, round(out_w / self.crop_ratio) / width)
        else:
            scale = min(out_h / height, out_w / width)
        return max(1, round(height * scale)), max(1, round(width * scale))

    def decode_at_least(self, original_size: tuple[int, int]) -> tuple[int, int]:
        """The smallest decoded (height, width) that loses nothing for this sizing: the resized size."""
        return self.resized_size(original_size)

    def apply(self, sample: dict[str, Any], original_size: tuple[int, int]) -> dict[str, Any]:
        """The sample at `size`. Boxes and mask are in the pixels of original_size (the file's); the image may
        have been decoded smaller (decode_at_least): it is resized to the same geometry. Other keys pass."""
        original_size = (int(original_size[0]), int(original_size[1]))
        resized = self.resized_size(original_size)
        top, left = self._crop_offset(resized)
        sized = dict(sample)
        if "image" in sample:
            image = resize_decoded(sample["image"], original_size, resized)
            sized["image"] = self._place(image, top, left, fill=0)
        if "mask" in sample:
            mask = resize_mask(np.asarray(sample["mask"]), resized)
            sized["mask"] = self._place(mask, top, left, fill=core.IGNORE_INDEX)
        if "boxes" in sample:
            boxes = scale_boxes(sample["boxes"], original_size, resized)
            if self.mode == "center_crop":
                per_box = {key: sample[key] for key in ("classes", "difficult") if key in sample}
                sized.update(self._cropped_boxes(boxes, per_box, top, left))
            else:
                sized["boxes"] = boxes
        return sized

    def _crop_offset(self, resized: tuple[int, int]) -> tuple[int, int]:
        """(top, left) of the centre crop in the resized image; (0, 0) when nothing is cut."""
        if self.mode != "center_crop":
            return 0, 0
        return (resized[0] - self.size[0]) // 2, (resized[1] - self.size[1]) // 2

    def _place(self, array: np.ndarray, top: int, left: int, *, fill: int) -> np.ndarray:
        """The resized array cut (center_crop) or padded at the bottom and right (letterbox) to size."""
        height, width = self.size
        if self.mode == "center_crop":
            return np.ascontiguousarray(array[top : top + height, left : left + width])
        if self.mode == "letterbox" and array.shape[:2] != (height, width):
            canvas = np.full((height, width, *array.shape[2:]), fill, array.dtype)
            canvas[: array.shape[0], : array.shape[1]] = array
            return canvas
        return array

    def _cropped_boxes(self, boxes: np.ndarray, per_box: dict, top: int, left: int) -> dict[str, np.ndarray]:
        """Boxes shifted into the crop and clipped to it; those left without area are dropped, and their entries
        of `per_box` (classes, VOC's difficult flags) with them."""
        height, width = self.size
        shifted = boxes - np.array([left, top, left, top], np.float32)
        clipped = np.clip(shifted, 0, np.array([width, height, width, height], np.float32)).astype(np.float32)
        keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
        return {
            "boxes": clipped[keep],
            **{key: np.asarray(values).reshape(-1)[keep] for key, values in per_box.items()},
        }
