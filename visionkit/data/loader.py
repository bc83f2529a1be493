"""Batches for model.fit: samples are augmented once and batched once, in PyDataset workers."""

from __future__ import annotations

import math
from typing import Any, Callable

import cv2
import keras
import numpy as np

from visionkit.data.augment import Augmenter
from visionkit.data.core import Split


class BatchLoader(keras.utils.PyDataset):
    """Yields (uint8 images [B,H,W,C], encoded targets) batches from a Split.

    Shuffles each epoch with a seeded order; augmentation (training only) is seeded per batch.
    """

    def __init__(self, split: Split, encode_targets: Callable[[list[dict[str, Any]]], np.ndarray], *,
                 batch_size: int, augmenter: Augmenter | None = None, shuffle: bool = False, seed: int = 0,
                 workers: int = 1, use_multiprocessing: bool = False, max_queue_size: int = 10):
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, received {batch_size}")
        self.split = split
        self.encode_targets = encode_targets
        self.batch_size = batch_size
        self.augmenter = augmenter
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.order = self._order()
        if workers > 1:
            cv2.setNumThreads(1)  # the workers are the parallelism; OpenCV's own threads would oversubscribe

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.split))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.split))

    def __len__(self) -> int:
        return math.ceil(len(self.split) / self.batch_size)

    def __getitem__(self, index: int):
        ids = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        samples = [self.split.sample(i) for i in ids]
        if self.augmenter is not None:
            samples = self.augmenter(samples, epoch=self.epoch, batch=index)
        images = np.stack([s["image"] for s in samples])
        return images, self.encode_targets(samples)

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self._order()
