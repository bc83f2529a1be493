"""Could one OpenCV call warp a whole batch? The batched Affine (visionkit/data/augment/batched.py) calls
cv2.warpAffine once per image; on 32x32 digits the call's fixed cost is a large part of the warp.

    .venv/bin/python benchmarks/warp_batch.py            # 64 images of 32x32x1
    .venv/bin/python benchmarks/warp_batch.py --channels 3 --size 64

cv2.warpAffine inverts the matrix, computes fixed-point source coordinates (1/32 pixel) and remaps. The
same maps, built in NumPy for the whole batch, let one cv2.remap warp every image of the batch stacked
into one tall picture, each framed by a pixel of the fill so that bilinear reads at an edge see the
border as warpAffine does; coordinates with no neighbour in their image point outside the picture.
Printed: whether the pixels are identical, and µs per image of the per-image loop, of the batched remap
(maps included), of the remap alone and of a warpAffine call on a 1x1 image (the call's fixed cost).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from visionkit.data.augment.batched import affine_matrices  # noqa: E402

AB_BITS, INTER_BITS = 10, 5  # OpenCV's imgwarp.cpp: coordinates in 1/1024, then 1/32 of a pixel
TABLE = 1 << INTER_BITS
FILL = 0


def per_image(images: np.ndarray, warps: np.ndarray) -> np.ndarray:
    """The batched Affine's way: one cv2.warpAffine per image."""
    out, (height, width) = np.empty_like(images), images.shape[1:3]
    for source, warp, target in zip(images, warps, out):
        cv2.warpAffine(source, warp, (width, height), target, cv2.INTER_LINEAR, cv2.BORDER_CONSTANT, (FILL,) * 4)
    return out


def inverse(warps: np.ndarray) -> tuple[np.ndarray, ...]:
    """The six entries of each inverted [2, 3] matrix, computed as cv2.warpAffine inverts it."""
    a, b, c, d, e, f = (warps[:, i, j] for i in range(2) for j in range(3))
    determinant = a * e - b * d
    scale = np.divide(1.0, determinant, out=np.zeros_like(determinant), where=determinant != 0)
    a11, a12, a21, a22 = e * scale, -b * scale, -d * scale, a * scale
    return a11, a12, -a11 * c - a12 * f, a21, a22, -a21 * c - a22 * f


def fixed_point_maps(warps: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """[n, H, W] source coordinates in 1/32 pixel, rounded as cv2.warpAffine rounds them."""
    m0, m1, m2, m3, m4, m5 = inverse(warps)
    columns, rows, scale = np.arange(width), np.arange(height), 1 << AB_BITS
    half = scale // TABLE // 2
    x_steps = np.rint(m0[:, None] * columns * scale).astype(np.int32)
    y_steps = np.rint(m3[:, None] * columns * scale).astype(np.int32)
    x_rows = np.rint((m1[:, None] * rows + m2[:, None]) * scale).astype(np.int32) + half
    y_rows = np.rint((m4[:, None] * rows + m5[:, None]) * scale).astype(np.int32) + half
    shift = AB_BITS - INTER_BITS
    return (x_rows[:, :, None] + x_steps[:, None]) >> shift, (y_rows[:, :, None] + y_steps[:, None]) >> shift


def one_remap(images: np.ndarray, warps: np.ndarray) -> np.ndarray:
    """Every image warped by one cv2.remap of the framed images stacked into one tall picture."""
    count, height, width = images.shape[:3]
    x, y = fixed_point_maps(warps, height, width)
    x_pixel, y_pixel = x >> INTER_BITS, y >> INTER_BITS
    outside = (x_pixel < -1) | (x_pixel >= width) | (y_pixel < -1) | (y_pixel >= height)
    nowhere = np.int32(-8)  # no neighbour in the tall picture: the fill, as warpAffine gives it
    tops = ((height + 2) * np.arange(count, dtype=np.int32) + 1)[:, None, None]
    maps = np.stack(
        [
            np.where(outside, nowhere, x_pixel + 1).astype(np.int16),
            np.where(outside, nowhere, y_pixel + tops).astype(np.int16),
        ],
        axis=-1,
    )
    fractions = ((y & (TABLE - 1)) * TABLE + (x & (TABLE - 1))).astype(np.uint16)
    framed = np.full((count, height + 2, width + 2, *images.shape[3:]), FILL, np.uint8)
    framed[:, 1:-1, 1:-1] = images
    tall = framed.reshape(count * (height + 2), width + 2, *images.shape[3:])
    warped = cv2.remap(
        tall,
        maps.reshape(count * height, width, 2),
        fractions.reshape(count * height, width),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(FILL,) * 4,
    )
    return warped.reshape(images.shape)


def random_batch(rng: np.random.Generator, args) -> tuple[np.ndarray, np.ndarray]:
    """Random images and [n, 2, 3] matrices in the classification default's ranges: translate 10 %, scale
    0.85-1.15, rotate 15 and shear 8 degrees."""
    n, size = args.batch, args.size
    images = rng.integers(0, 256, (n, size, size) + ((args.channels,) if args.channels > 1 else ()), np.uint8)
    translate = np.trunc(rng.uniform(-0.1, 0.1, (n, 2)) * size)
    shear, scale, rotate = rng.uniform(-8, 8, (n, 2)), rng.uniform(0.85, 1.15, (n, 2)), rng.uniform(-15, 15, n)
    return images, affine_matrices(translate, shear, scale, rotate, ((size - 1) / 2,) * 2)[:, :2].copy()


def microseconds_per_image(function, repeats: int, count: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=1, choices=[1, 3])
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    cv2.ipp.setUseIPP(False)  # as the batched Affine warps
    batches = [random_batch(np.random.default_rng(seed), args) for seed in range(5)]
    same = all(np.array_equal(per_image(*batch), one_remap(*batch)) for batch in batches)
    images, warps = batches[0]
    n, size = args.batch, args.size
    verdict = "identical to" if same else "DIFFER from"
    print(f"{len(batches)} batches of {n} images of {images.shape[1:]}: one remap's pixels {verdict} the loop's")
    tall = np.zeros((n * (size + 2), size + 2, *images.shape[3:]), np.uint8)
    maps, fractions = np.zeros((n * size, size, 2), np.int16), np.zeros((n * size, size), np.uint16)
    tiny, tiny_out = images[:1, :1, :1].copy()[0], np.empty((1, 1), np.uint8)
    timings = {
        "cv2.warpAffine per image": lambda: per_image(images, warps),
        "one cv2.remap, maps built in NumPy": lambda: one_remap(images, warps),
        "the cv2.remap alone": lambda: cv2.remap(tall, maps, fractions, cv2.INTER_LINEAR, borderValue=(FILL,) * 4),
        "cv2.warpAffine of 1x1 (the call)": lambda: [
            cv2.warpAffine(tiny, warps[0], (1, 1), tiny_out, cv2.INTER_LINEAR, cv2.BORDER_CONSTANT, (FILL,) * 4)
            for _ in range(n)
        ],
    }
    for name, function in timings.items():
        print(f"  {name:36s} {microseconds_per_image(function, args.repeats, n):6.2f} µs per image")


if __name__ == "__main__":
    main()
