"""Batches for model.fit: samples are augmented once and batched once, in PyDataset workers.

Workers are threads, or processes with `use_multiprocessing=True`: Albumentations spends most of its
time in Python, so threads contend for the interpreter lock and processes scale better. Either way
the workers prepare up to `max_queue_size` batches ahead of the model (prefetching).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import keras
import numpy as np

from visionkit.data.augment import Augmenter
from visionkit.data.core import Split


class BatchLoader(keras.utils.PyDataset):
    """Yields (uint8 images [B,H,W,C], encoded targets) batches from a Split.

    Shuffles each epoch with a seeded order; augmentation (training only) is seeded per sample by its
    batch and position, so the batches are the same whatever the number and kind of workers, and
    `batch(index, rows)` reads and augments some rows of a batch exactly as the whole batch has them
    (a training process's shard). A resumed run calls start_at and gets the batches the
    uninterrupted run would have seen.
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
        self.start_at_epoch(0)
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

    def samples(self, index: int, rows: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """The samples of batch `index` of the current epoch, augmented: those at positions `rows` within the
        batch, or all; only they are read."""
        self._limit_opencv_threads()
        ids = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        positions = np.arange(len(ids)) if rows is None else np.asarray(rows, dtype=np.int64)
        if not all(0 <= p < len(ids) for p in positions):
            raise IndexError(f"batch {index} has rows 0 to {len(ids) - 1}, received {positions.tolist()}")
        samples = [self.split.sample(i) for i in ids[positions]]
        if self.augmenter is not None:
            samples = self.augmenter(samples, epoch=self.epoch, batch=index, positions=positions, batch_length=len(ids))
        return samples

    def batch(self, index: int, rows: Sequence[int] | None = None) -> tuple[np.ndarray, Any]:
        """(uint8 images, encoded targets) of batch `index` of the current epoch: its rows `rows`
        (positions within the batch), or all of them."""
        samples = self.samples(index, rows)
        return np.stack([s[self.split.input_key] for s in samples]), self.encode_targets(samples)

    def __getitem__(self, index: int):
        return self.batch(index)

    def start_at_epoch(self, epoch: int) -> None:
        """Continue as an uninterrupted run would at `epoch` (a resumed training): same order, same augmentation.
        A run resumed inside an epoch reads its remaining batches through training/mid_epoch.py's view."""
        self.epoch = epoch
        self.order = self._order()

    def on_epoch_end(self) -> None:
        self.start_at_epoch(self.epoch + 1)
