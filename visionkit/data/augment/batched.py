"""Albumentations transforms applied a batch at a time: the same distributions and the same OpenCV
calls, without Albumentations' per-call Python.

One Albumentations call costs about 60 µs of Python on a 32x32 image (Compose's checks, two affine
matrices composed from six 3x3 products, an identity test), of which the warp itself is 3 µs; LeNet-5
trains in about 75 µs per image. On two cores the loader then takes half the machine. Here a batch's
parameters are drawn at once with numpy, the matrices are composed for the whole batch, and each image
goes straight to cv2.warpAffine or through a lookup table: about an eighth of the cost.

Only what can be matched exactly is batched: Affine (fit_output false), RandomBrightnessContrast,
HorizontalFlip and VerticalFlip, on uint8 images of one size, with or without masks, without boxes.
Any other list runs through Albumentations sample by sample. The random streams differ from
Albumentations' (numpy's generator, seeded per batch), the distributions do not: tests draw both and
compare them, and apply both to the same parameters and compare the pixels.

Parameters are drawn for every row of the batch, then applied to the rows at hand: a worker that holds
some rows of a batch (its shard) gets exactly those rows of the whole batch's result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import albumentations as A
import cv2
import numpy as np
from albumentations.augmentations.geometric.functional import center, extend_value
from albumentations.augmentations.pixel.functional import get_safe_brightness_contrast_params

UINT8_LEVELS = np.arange(256, dtype=np.float32)


class BatchedAffine:
    """A.Affine for a batch: translation, shear, scale and rotation about the image centre."""

    def __init__(self, transform: A.Affine):
        self.transform = transform

    def draw(self, rng: np.random.Generator, count: int, image_shape: tuple[int, int]) -> np.ndarray:
        """[count, 3, 3] matrices drawn as A.Affine.get_params_dependent_on_data draws one."""
        t = self.transform
        translate = self._translations(rng, count, image_shape)
        shear = -np.stack([rng.uniform(*t.shear["x"], count), rng.uniform(*t.shear["y"], count)], axis=1)
        scale = np.stack([self._scales(rng, count, t.scale["x"]), self._scales(rng, count, t.scale["y"])], axis=1)
        if t.keep_ratio:
            scale[:, 1] = scale[:, 0]
        rotate = rng.uniform(*t.rotate, count)
        return affine_matrices(translate, shear, scale, rotate, center(image_shape))

    def _translations(self, rng: np.random.Generator, count: int, image_shape: tuple[int, int]) -> np.ndarray:
        t, (height, width) = self.transform, image_shape
        if t.translate_px is not None:  # random.randint: both ends included
            return np.stack(
                [
                    rng.integers(int(low), int(high) + 1, count)
                    for low, high in (t.translate_px["x"], t.translate_px["y"])
                ],
                axis=1,
            ).astype(float)
        if t.translate_percent is not None:  # int(): towards zero, as Albumentations rounds them
            return np.trunc(
                np.stack(
                    [
                        rng.uniform(*t.translate_percent["x"], count) * width,
                        rng.uniform(*t.translate_percent["y"], count) * height,
                    ],
                    axis=1,
                )
            )
        return np.zeros((count, 2))

    def _scales(self, rng: np.random.Generator, count: int, bounds: tuple[float, float] | float) -> np.ndarray:
        if isinstance(bounds, (int, float)):
            return np.full(count, float(bounds))
        low, high = bounds
        if not self.transform.balanced_scale:
            return rng.uniform(low, high, count)
        # balanced_scale: as likely to shrink as to enlarge, each side uniform within its own interval.
        intervals = ([(low, 1.0)] if low < 1 else []) + ([(1.0, high)] if high > 1 else [])
        if not intervals:
            return np.ones(count)
        chosen = rng.integers(0, len(intervals), count)
        lows, highs = np.array(intervals).T
        return rng.uniform(lows[chosen], highs[chosen])

    def __call__(
        self,
        rng: np.random.Generator,
        applied: np.ndarray,
        images: np.ndarray,
        masks: np.ndarray | None,
        rows: np.ndarray,
    ) -> None:
        matrices = self.draw(rng, len(applied), images.shape[1:3])[rows]
        self.warp(images, masks, matrices, np.flatnonzero(applied[rows]))

    def warp(self, images: np.ndarray, masks: np.ndarray | None, matrices: np.ndarray, chosen: np.ndarray) -> None:
        """Warps the chosen images (and masks) in place, as A.Affine.apply (apply_to_mask) would with
        these matrices: the same cv2.warpAffine call, interpolation, border mode and fill."""
        t, (height, width) = self.transform, images.shape[1:3]
        warps = np.ascontiguousarray(matrices[chosen, :2])  # OpenCV takes the top two rows
        image_fill = tuple(extend_value(t.fill, images.shape[3] if images.ndim == 4 else 1))
        _warp_rows(images, warps, chosen, (width, height), t.interpolation, t.border_mode, image_fill)
        if masks is not None:
            mask_fill = tuple(extend_value(t.fill_mask, 1))
            _warp_rows(masks, warps, chosen, (width, height), t.mask_interpolation, t.border_mode, mask_fill)


def _warp_rows(
    batch: np.ndarray,
    warps: np.ndarray,
    chosen: np.ndarray,
    size: tuple[int, int],
    flags: int,
    border: int,
    fill: tuple,
) -> None:
    """cv2.warpAffine of the chosen rows of `batch` in place, row k by warps[k]. The loop is the per-image cost
    of the batched path: positional arguments and Python ints keep it to the call itself."""
    # cv2.warpAffine cannot work in place: it reads copies and writes into the batch.
    for source, matrix, index in zip(batch[chosen], warps, chosen.tolist()):
        cv2.warpAffine(source, matrix, size, batch[index], flags, border, fill)


def affine_matrices(
    translate: np.ndarray, shear: np.ndarray, scale: np.ndarray, rotate: np.ndarray, shift: tuple[float, float]
) -> np.ndarray:
    """Albumentations' create_affine_transformation_matrix for a batch: translate, shear (degrees) and
    scale are [n, 2] (x, y), rotate [n] degrees. That function multiplies six 3x3 matrices,
    to_centre @ translation @ shearing @ rotation @ scaling @ to_top_left; here the product is
    written out: linear part shearing @ rotation @ scaling, and a point p goes to L (p - c) + c + t."""
    radians = np.deg2rad(rotate % 360)
    cos, sin = np.cos(radians), np.sin(radians)
    tan_x, tan_y = np.tan(np.deg2rad(shear[:, 0])), np.tan(np.deg2rad(shear[:, 1]))
    matrices = np.zeros((len(rotate), 3, 3))
    matrices[:, 0, 0] = (cos - tan_x * sin) * scale[:, 0]
    matrices[:, 0, 1] = (sin + tan_x * cos) * scale[:, 1]
    matrices[:, 1, 0] = (tan_y * cos - sin) * scale[:, 0]
    matrices[:, 1, 1] = (tan_y * sin + cos) * scale[:, 1]
    centre = np.asarray(shift, float)
    matrices[:, :2, 2] = centre + translate - matrices[:, :2, :2] @ centre
    matrices[:, 2, 2] = 1.0
    return matrices


class BatchedBrightnessContrast:
    """A.RandomBrightnessContrast for a batch of uint8 images: alpha * pixel + beta through a lookup table."""

    def __init__(self, transform: A.RandomBrightnessContrast):
        self.transform = transform

    def draw(
        self, rng: np.random.Generator, images: np.ndarray, rows: np.ndarray | None = None, count: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """[n] (alpha, beta) for the n images, drawn as the transform's get_params_dependent_on_data draws
        one pair. The images are the rows `rows` (default: all) of a batch of `count` (default: n): pairs
        are drawn for all `count` rows, and those of `rows` kept."""
        t = self.transform
        rows = np.arange(len(images)) if rows is None else rows
        count = len(images) if count is None else count
        alpha = 1.0 + rng.uniform(*t.contrast_limit, count)[rows]
        beta = rng.uniform(*t.brightness_limit, count)[rows]
        beta = beta * 255.0 if t.brightness_by_max else beta * images.reshape(len(images), -1).mean(axis=1)
        if t.ensure_safe_range:
            safe = [get_safe_brightness_contrast_params(a, b, 255) for a, b in zip(alpha, beta)]
            alpha, beta = np.array(safe, float).reshape(-1, 2).T
        return alpha, beta

    @staticmethod
    def lookup_tables(alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
        """[n, 256] uint8 tables of alpha * level + beta, built as albucore.multiply_add builds its one
        (float32, clipped to 0..255, truncated)."""
        levels = UINT8_LEVELS * alpha[:, None].astype(np.float32) + beta[:, None].astype(np.float32)
        return np.clip(levels, 0, 255).astype(np.uint8)

    def __call__(
        self,
        rng: np.random.Generator,
        applied: np.ndarray,
        images: np.ndarray,
        masks: np.ndarray | None,
        rows: np.ndarray,
    ) -> None:
        tables = self.lookup_tables(*self.draw(rng, images, rows, len(applied)))
        for index in np.flatnonzero(applied[rows]).tolist():  # cv2.LUT in place: faster than one numpy gather
            image = images[index]
            cv2.LUT(image, tables[index], image)


class BatchedFlip:
    """A.HorizontalFlip / A.VerticalFlip for a batch: the image and its mask mirrored together."""

    def __init__(self, transform: A.HorizontalFlip | A.VerticalFlip):
        self.transform = transform
        self.axis = 2 if isinstance(transform, A.HorizontalFlip) else 1  # of [n, H, W, ...]

    def __call__(
        self,
        rng: np.random.Generator,
        applied: np.ndarray,
        images: np.ndarray,
        masks: np.ndarray | None,
        rows: np.ndarray,
    ) -> None:
        chosen = np.flatnonzero(applied[rows])
        for array in (images, masks):
            if array is not None:
                array[chosen] = np.flip(array[chosen], axis=self.axis)


def _affine(transform: A.Affine) -> BatchedAffine | None:
    return None if transform.fit_output else BatchedAffine(transform)


BATCHED: dict[type, Callable[[A.BasicTransform], object | None]] = {
    A.Affine: _affine,
    A.RandomBrightnessContrast: BatchedBrightnessContrast,
    A.HorizontalFlip: BatchedFlip,
    A.VerticalFlip: BatchedFlip,
}


class BatchedPipeline:
    """A Compose's transforms applied to whole batches; `build` says whether a list can be."""

    def __init__(self, steps: Sequence[tuple[float, object]]):
        self.steps = list(steps)

    @classmethod
    def build(cls, compose: A.Compose) -> BatchedPipeline | None:
        """The batched equivalent of the Compose's transforms (from Compose, after it set their mask
        interpolation), or None when one of them has none."""
        steps = []
        for transform in compose.transforms:
            make = BATCHED.get(type(transform))  # exact type: a subclass may draw or apply differently
            step = make(transform) if make else None
            if step is None:
                return None
            steps.append((transform.p, step))
        return cls(steps)

    def __call__(
        self,
        images: np.ndarray,
        masks: np.ndarray | None,
        seed: int,
        rows: np.ndarray | None = None,
        count: int | None = None,
    ) -> None:
        """Augments [n, H, W(, C)] uint8 images (and [n, H, W] masks) in place: rows `rows` (default:
        all) of a batch of `count` (default: n) images, as the whole batch would augment them."""
        rng = np.random.default_rng(seed)
        rows = np.arange(len(images)) if rows is None else np.asarray(rows, dtype=np.int64)
        count = len(images) if count is None else count
        with opencv_without_ipp():
            for probability, step in self.steps:
                applied = rng.random(count) < probability  # one draw per row of the batch
                step(rng, applied, images, masks, rows)


@contextmanager
def opencv_without_ipp() -> Iterator[None]:
    """OpenCV's Intel IPP dispatch costs about 4 µs per warpAffine call, half the call on a 32x32 image,
    and the pixels come from OpenCV's own code either way (tested). The switch is per thread."""
    was = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(False)
    try:
        yield
    finally:
        cv2.ipp.setUseIPP(was)
