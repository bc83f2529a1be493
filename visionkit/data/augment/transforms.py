"""visionkit's own Albumentations transforms, for what Albumentations lacks.

An augment spec's `name` is looked up here first, then in Albumentations.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np

from visionkit.registry import Registry

TRANSFORMS = Registry("visionkit transform")


@TRANSFORMS.register("SobelFilter")
class SobelFilter(A.ImageOnlyTransform):
    """Replaces the image by its edges: the Sobel gradient magnitude of its grey version, stretched
    to 0..255 and written to every channel.

    One of the augmentations compared in SimCLR (Chen et al., 2020, "A Simple Framework for
    Contrastive Learning of Visual Representations", fig. 4): it keeps shapes and drops colour and
    texture. uint8 images.

    Args:
        ksize: Sobel kernel size, 1, 3, 5 or 7.
        p: probability of applying the transform.
    """

    def __init__(self, ksize: int = 3, p: float = 0.5):
        super().__init__(p=p)
        if ksize not in (1, 3, 5, 7):
            raise ValueError(f"SobelFilter ksize must be 1, 3, 5 or 7, received {ksize!r}")
        self.ksize = ksize

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        channels = img.shape[-1] if img.ndim == 3 else 1
        grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if channels == 3 else img.reshape(img.shape[:2])
        magnitude = cv2.magnitude(
            cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=self.ksize), cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=self.ksize)
        )
        # Stretched per image: the largest possible magnitude depends on ksize and would leave most edges faint.
        edges = np.round(magnitude * (255.0 / max(float(magnitude.max()), 1e-6))).astype(np.uint8)
        return np.repeat(edges[..., None], channels, axis=-1).reshape(img.shape)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("ksize",)
