"""Batches for model.fit: samples are augmented once and batched once, in PyDataset workers.

Workers are threads, or processes with `use_multiprocessing=True`: Albumentations spends most of its
time in Python, so threads contend for the interpreter lock and processes scale better. Either way
the workers prepare up to `max_queue_size` batches ahead of the model (prefetching).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import cv2
import keras
import numpy as np

from visionkit.data.augment import Augmenter
from visionkit.data.core import Split


class BatchLoader(keras.utils.PyDataset):
    """Yields (uint8 images [B,H,W,C], encoded targets) batches from a Split.

    Shuffles each epoch with a seeded order; augmentation (training only) is seeded per batch, so
    the batches are the same whatever the number and kind of workers. A resumed run calls
    start_at_epoch and gets the batches the uninterrupted run would have seen.
    """

    def __init__(
        self,
        split: Split,
        encode_targets: Callable[[list[dict[str, Any]]], np.ndarray],
        *,
        batch_size: int,
        augmenter: Augmenter | None = None,
        shuffle: bool = False,
        seed: int = 0,
        workers: int = 1,
        use_multiprocessing: bool = False,
        max_queue_size: int = 10,
    ):
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, received {batch_size}")
        if max_queue_size < 1:
            raise ValueError(f"max_queue_size must be at least 1, received {max_queue_size}")
        self.split = split
        self.encode_targets = encode_targets
        self.batch_size = batch_size
        self.augmenter = augmenter
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.order = self._order()
        # The workers are the parallelism: OpenCV's own thread pool in each of them would oversubscribe
        # the cores. Threads share this process's OpenCV; each worker process limits its own.
        if workers > 1 and not use_multiprocessing:
            cv2.setNumThreads(1)
        self._main_process = os.getpid()
        self._opencv_limited_in = None

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.split))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.split))

    def _limit_opencv_threads(self) -> None:
        """One OpenCV thread in each worker process."""
        process = os.getpid()
        if self.use_multiprocessing and process not in (self._main_process, self._opencv_limited_in):
            cv2.setNumThreads(1)
            self._opencv_limited_in = process

    def __len__(self) -> int:
        return math.ceil(len(self.split) / self.batch_size)

    def samples(self, index: int) -> list[dict[str, Any]]:
        """The samples of batch `index` of the current epoch, augmented."""
        self._limit_opencv_threads()
        ids = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        samples = [self.split.sample(i) for i in ids]
        if self.augmenter is not None:
            samples = self.augmenter(samples, epoch=self.epoch, batch=index)
        return samples

    def __getitem__(self, index: int):
        samples = self.samples(index)
        return np.stack([s["image"] for s in samples]), self.encode_targets(samples)

    def start_at_epoch(self, epoch: int) -> None:
        """Continue as an uninterrupted run would at `epoch` (a resumed training): same order, same augmentation."""
        self.epoch = epoch
        self.order = self._order()

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self._order()
