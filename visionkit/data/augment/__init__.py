"""Augmentation: Albumentations lists declared in the config (augmenter.py), their batched equivalents
(batched.py), the project's own transforms (transforms.py) and test-time augmentation (tta.py)."""

from __future__ import annotations

from visionkit.data.augment.augmenter import Augmenter, build_augmenter

__all__ = ["Augmenter", "build_augmenter"]
