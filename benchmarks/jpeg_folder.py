"""A classification folder of photo-like JPEGs for the streaming benchmarks: <root>/<class>/<i>.jpg.

    .venv/bin/python benchmarks/jpeg_folder.py /tmp/vk_bench/jpeg_2000 --count 2000
    .venv/bin/python benchmarks/jpeg_folder.py /tmp/vk_bench/jpeg_20000 --count 20000

Images are about 500x375 (the size of VOC and ImageNet photos; one in five is portrait), smooth colour
gradients and soft blobs plus sensor-like noise, JPEG quality 90: they decode like photographs (a
synthetic flat image compresses to a few kB and decodes much faster than a real one). Each class has
its own dominant colour, so a model can learn something. Image i is the same on every run (seeded by
i). A folder that already holds `count` images is left as it is; an interrupted run is completed.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

LANDSCAPE = (375, 500)  # (height, width)
CLASSES = 10
QUALITY = 90


def class_name(index: int) -> str:
    return f"class_{index % CLASSES:02d}"


def image_path(root: Path, index: int) -> Path:
    return root / class_name(index) / f"{index:06d}.jpg"


def photo_like(index: int) -> np.ndarray:
    """A uint8 HxWx3 (BGR) image: a smooth random field tinted by the class colour, blobs, noise."""
    rng = np.random.default_rng([index, 2026])
    height, width = LANDSCAPE if rng.random() >= 0.2 else LANDSCAPE[::-1]
    # Low-resolution random field, upsampled: large smooth gradients as in a photo's background.
    coarse = rng.uniform(0, 255, size=(4 + rng.integers(4), 4 + rng.integers(4), 3)).astype(np.float32)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    tint = np.array(cv2.cvtColor(np.uint8([[[18 * (index % CLASSES), 200, 220]]]), cv2.COLOR_HSV2BGR)[0, 0])
    image = 0.5 * image + 0.5 * tint.astype(np.float32)
    for _ in range(rng.integers(3, 9)):  # objects
        centre = (int(rng.integers(width)), int(rng.integers(height)))
        axes = (int(rng.integers(15, width // 3)), int(rng.integers(15, height // 3)))
        colour = tuple(float(c) for c in rng.uniform(0, 255, size=3))
        cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
    image = cv2.GaussianBlur(image, (0, 0), sigmaX=1.5)  # edges as soft as a lens makes them
    # Texture at two scales: what makes a photo's JPEG large and costly to decode.
    detail = rng.normal(0, 18, size=(height // 2, width // 2, 3)).astype(np.float32)
    image += cv2.resize(detail, (width, height), interpolation=cv2.INTER_LINEAR)
    image += rng.normal(0, 10, size=image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_image(root: Path, index: int) -> None:
    path = image_path(root, index)
    if path.exists():
        return
    ok, data = cv2.imencode(".jpg", photo_like(index), [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for image {index}")
    partial = path.with_suffix(".part")  # renamed once whole: a killed run never leaves a truncated .jpg
    partial.write_bytes(data.tobytes())
    partial.replace(path)


def jpeg_count(root: Path) -> int:
    return sum(1 for _ in root.glob("*/*.jpg")) if root.is_dir() else 0


def make_jpeg_folder(root: str | Path, count: int, *, threads: int | None = None) -> Path:
    """Writes images 0..count-1 under `root` (missing ones only); returns `root`."""
    root = Path(root)
    if jpeg_count(root) == count:
        return root
    for index in range(min(count, CLASSES)):
        (root / class_name(index)).mkdir(parents=True, exist_ok=True)
    # OpenCV and NumPy release the interpreter lock in the costly parts, so threads use every core.
    with ThreadPoolExecutor(threads or os.cpu_count()) as pool:
        for _ in pool.map(lambda index: write_image(root, index), range(count)):
            pass
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="the folder to write (created; never inside a dataset)")
    parser.add_argument("--count", type=int, default=2000, help="number of images")
    parser.add_argument("--threads", type=int, default=None, help="writer threads (default: one per CPU)")
    args = parser.parse_args()
    before, start = jpeg_count(args.root), time.perf_counter()
    make_jpeg_folder(args.root, args.count, threads=args.threads)
    size = sum(path.stat().st_size for path in args.root.glob("*/*.jpg"))
    print(
        f"{args.root}: {jpeg_count(args.root)} JPEGs ({before} there before), {size / 1e6:.0f} MB, "
        f"{time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
