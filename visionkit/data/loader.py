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
        self._reads_arrays = _reads_arrays(split, augmenter)
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
        return self._read(index, rows)[0]

    def batch(self, index: int, rows: Sequence[int] | None = None) -> tuple[np.ndarray, Any]:
        """(uint8 images, encoded targets) of batch `index` of the current epoch: its rows `rows`
        (positions within the batch), or all of them."""
        samples, inputs = self._read(index, rows)
        if inputs is None:
            key = self.split.input_key
            inputs = np.stack([s[key] for s in samples])
        return inputs, self.encode_targets(samples)

    def _read(self, index: int, rows: Sequence[int] | None) -> tuple[list[dict[str, Any]], np.ndarray | None]:
        """The augmented samples of rows `rows` of batch `index`, and their inputs as one array when the
        batch was read as arrays (else None)."""
        self._limit_opencv_threads()
        ids = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        positions = np.arange(len(ids)) if rows is None else np.asarray(rows, dtype=np.int64)
        if np.any((positions < 0) | (positions >= len(ids))):
            raise IndexError(f"batch {index} has rows 0 to {len(ids) - 1}, received {positions.tolist()}")
        where = dict(epoch=self.epoch, batch=index, positions=positions, batch_length=len(ids))
        if not self._reads_arrays:
            samples = [self.split.sample(i) for i in ids[positions]]
            return (samples if self.augmenter is None else self.augmenter(samples, **where)), None
        columns = self.split.columns(ids[positions])
        inputs = columns[self.split.input_key]
        if self.augmenter is not None:
            if "mask" in columns:
                columns["mask"] = columns["mask"].astype(np.uint8, copy=False)
            self.augmenter.augment_arrays(inputs, columns.get("mask"), **where)
        return [dict(zip(columns, row)) for row in zip(*columns.values())], inputs

    def __getitem__(self, index: int):
        return self.batch(index)

    def start_at_epoch(self, epoch: int) -> None:
        """Continue as an uninterrupted run would at `epoch` (a resumed training): same order, same augmentation.
        A run resumed inside an epoch reads its remaining batches through training/mid_epoch.py's view."""
        self.epoch = epoch
        self.order = self._order()

    def on_epoch_end(self) -> None:
        self.start_at_epoch(self.epoch + 1)


def _reads_arrays(split: Split, augmenter: Augmenter | None) -> bool:
    """Whether batches can be read and augmented as arrays, a column at a time, rather than sample by sample:
    a split held in memory, without augmentation or with one that runs a batch at once on its images (and masks).
    Both ways give the same batches; arrays spare a dict per sample until the targets are encoded."""
    if split.streamed:
        return False
    if augmenter is None:
        return True
    mask = split.targets.get("mask")
    if not isinstance(augmenter, Augmenter) or split.input_key != "image" or "boxes" in split.targets:
        return False
    if mask is not None and not isinstance(mask, np.ndarray):
        return False
    images = split.images
    return augmenter.augments_at_once(images.shape[1:], images.dtype, None if mask is None else mask.shape[1:])
