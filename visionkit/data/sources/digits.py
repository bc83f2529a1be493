"""`digits`: scikit-learn's 1,797 real handwritten digits (8x8, 16 grey levels; shipped inside
scikit-learn, so nothing downloads), resized for convolutional networks."""

from __future__ import annotations

import cv2
import numpy as np
from sklearn.datasets import load_digits

from visionkit.data.core import DataBundle, bundle_from_arrays
from visionkit.errors import UserError
from visionkit.registry import DATASETS


@DATASETS.register("digits", tasks=("classification",))
def digits(
    *,
    image_size: int = 32,
    digit_size: int = 24,
    channels: int = 1,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> DataBundle:
    """Each digit is resized to digit_size and centred on a black image_size canvas, as LeNet-5's
    32x32 input framed MNIST's 20x20 digits, so that 5x5 filters see the strokes at the border."""
    if channels not in (1, 3):
        raise UserError(f"data.channels must be 1 or 3, received {channels}")
    if not 4 <= digit_size <= image_size:
        raise UserError(f"data.digit_size must be between 4 and data.image_size ({image_size}), received {digit_size}")
    raw = load_digits()
    pixels = (raw.images * (255.0 / 16.0)).astype(np.float32)
    offset = (image_size - digit_size) // 2
    images = np.zeros((len(pixels), image_size, image_size), np.float32)
    images[:, offset : offset + digit_size, offset : offset + digit_size] = np.stack(
        [cv2.resize(p, (digit_size, digit_size), interpolation=cv2.INTER_LINEAR) for p in pixels]
    )
    images = np.clip(np.round(images), 0, 255).astype(np.uint8)[..., None].repeat(channels, axis=-1)
    labels = raw.target.astype(np.int64)
    return bundle_from_arrays(
        "digits",
        images,
        {"label": labels},
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        stratify=labels,
        class_names=[str(d) for d in range(10)],
    )
