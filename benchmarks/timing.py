"""Timing shared by the benchmark scripts."""

from __future__ import annotations

import time

import keras


class EpochRates(keras.callbacks.Callback):
    """Images/s of every epoch of a fit but its first, and the CPU time of this process per image (all
    its threads: less disturbed than the wall clock by other work on a shared machine)."""

    def __init__(self, images_per_epoch: int):
        super().__init__()
        self.images_per_epoch = images_per_epoch
        self.rates: list[float] = []
        self.cpu_per_image: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start, self.cpu_start = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        if epoch > 0:
            self.rates.append(self.images_per_epoch / (time.perf_counter() - self.start))
            self.cpu_per_image.append((time.process_time() - self.cpu_start) / self.images_per_epoch)
