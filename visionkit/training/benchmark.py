"""How fast a model trains and predicts on this machine, and how much of the hardware it uses.

- Training images/s: the median over timed steps of batch size / step time, each step being the wait
  for the next batch (from the BatchLoader, through the same Keras adapter model.fit uses) plus
  `model.train_on_batch` (the compiled train step; it returns the loss as numbers, so the device has
  finished when the clock stops).
- Data-wait share: the time spent waiting for batches over the time of the whole steps, measured in
  the same loop.
- Inference images/s: the median of batch size / time of `predict_on_batch` on batches already in memory.
- Model FLOPs utilisation (MFU; Chowdhery et al., "PaLM: Scaling Language Modeling with Pathways", 2022,
  appendix B): the FLOPs the model needs, over the peak the machine reaches. Needed per image:
  2 FLOPs per multiply-accumulate of the forward pass, times 3 for forward and backward (the backward
  pass costs about twice the forward one: gradients for the inputs and for the weights). Peak: the best
  FLOP/s of a large square matmul in the model's compute dtype, measured here and now, so a shared or
  throttled machine is compared with itself rather than with a datasheet.
"""

from __future__ import annotations

import math
import platform
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import keras
import numpy as np

from visionkit.data.core import DataBundle, Split, stack_samples
from visionkit.data.loader import BatchLoader

TRAINING_FLOPS_PER_MAC = 2 * 3  # 2 FLOPs per MAC; forward + backward ≈ 3 × forward


@dataclass
class StepTimes:
    """Seconds per timed step: waiting for the batch, and the whole step (wait included)."""

    batch_size: int
    wait: list[float] = field(default_factory=list)
    step: list[float] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return self.batch_size / statistics.median(self.step)

    @property
    def data_wait_share(self) -> float:
        return sum(self.wait) / sum(self.step)


def fit_batches(loader: BatchLoader) -> Iterator[tuple]:
    """Full batches of `loader`, epoch after epoch, prepared the way model.fit gets them: through Keras's
    adapter for a PyDataset (tf.data with prefetching on TensorFlow, the workers' queue otherwise)."""
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter  # what fit wraps it in

    adapter = PyDatasetAdapter(loader)
    backend = keras.backend.backend()
    dataset = adapter.get_tf_dataset() if backend == "tensorflow" else None
    try:
        while True:
            adapter.on_epoch_begin()
            batches = (
                dataset
                if dataset is not None
                else (adapter.get_jax_iterator() if backend == "jax" else adapter.get_numpy_iterator())
            )
            # A smaller last batch would be a new input shape (a retrace) and a different amount of work.
            yield from (batch for batch in batches if batch[0].shape[0] == loader.batch_size)
            adapter.on_epoch_end()
    finally:
        if adapter.enqueuer is not None:
            adapter.enqueuer.stop()


def time_training(model: keras.Model, loader: BatchLoader, *, warmup_steps: int, steps: int) -> StepTimes:
    """Time `steps` training steps after `warmup_steps` untimed ones (tracing, compilation, caches)."""
    if len(loader.split) < loader.batch_size:
        raise ValueError(
            f"the training split has {len(loader.split)} images, fewer than one batch of {loader.batch_size}"
        )
    times = StepTimes(loader.batch_size)
    batches = fit_batches(loader)
    for index in range(warmup_steps + steps):
        start = time.perf_counter()
        x, y = next(batches)[:2]
        fetched = time.perf_counter()
        model.train_on_batch(x, y)  # returns Python floats: the step has finished on the device
        if index >= warmup_steps:
            times.wait.append(fetched - start)
            times.step.append(time.perf_counter() - start)
    batches.close()
    return times


def inference_rate(model: keras.Model, images: np.ndarray, *, warmup_steps: int, steps: int) -> float:
    """Median images/s of `model.predict_on_batch(images)` (it returns numpy: the device has finished)."""
    seconds = []
    for index in range(warmup_steps + steps):
        start = time.perf_counter()
        model.predict_on_batch(images)
        if index >= warmup_steps:
            seconds.append(time.perf_counter() - start)
    return len(images) / statistics.median(seconds)


def matmul_peak(size: int = 2048, *, repeats: int = 8, trials: int = 5, dtype: str | None = None) -> float:
    """The best FLOP/s over `trials` timings of `repeats` [size x size] matmuls (2·size³ FLOPs each),
    in `dtype` (default: the compute dtype of Keras's global policy, what the model computes in)."""
    dtype = dtype or keras.mixed_precision.global_policy().compute_dtype
    a = keras.random.normal((size, size), dtype=dtype, seed=1)
    b = keras.random.normal((size, size), dtype=dtype, seed=2)
    best = math.inf
    for trial in range(trials + 1):  # the first one is a warm-up (kernel selection, memory)
        start = time.perf_counter()
        products = [keras.ops.matmul(a, b) for _ in range(repeats)]
        keras.ops.convert_to_numpy(keras.ops.stack([p[0, 0] for p in products]))  # wait for every product
        if trial:
            best = min(best, time.perf_counter() - start)
    return 2 * size**3 * repeats / best


def training_flops_per_s(macs_per_image: int, images_per_s: float) -> float:
    return TRAINING_FLOPS_PER_MAC * macs_per_image * images_per_s


def synthetic_bundle(
    bundle: DataBundle, image_shape: tuple[int, int, int], num_images: int, seed: int = 0
) -> DataBundle:
    """Every split replaced by `num_images` random images of `image_shape`, with the targets of the
    dataset's first training samples (masks resized, boxes scaled to the new size): the same model,
    task and loader at any input size, without the cost of making real images of that size."""
    rng = np.random.default_rng(seed)
    # Samples as training reads them (a file source's are decoded and sized only then).
    source = stack_samples([bundle.train.sample(int(i)) for i in np.arange(num_images) % len(bundle.train)])
    height, width, _ = image_shape
    scale = (width / source.images.shape[2], height / source.images.shape[1])
    targets = {name: _resized(name, values, (height, width), scale) for name, values in source.targets.items()}
    split = Split(rng.integers(0, 256, (num_images, *image_shape), dtype=np.uint8), targets)
    return replace(bundle, train=split, val=split, test=split, verification=None)


def _resized(name: str, values: Any, size: tuple[int, int], scale: tuple[float, float]):
    if name == "mask":
        return np.stack([cv2.resize(mask, size[::-1], interpolation=cv2.INTER_NEAREST) for mask in values])
    if name == "boxes":
        return [boxes * np.asarray([*scale, *scale], boxes.dtype) for boxes in values]
    return values  # labels, normalised regression targets, box classes: the same at any size


def device_name() -> str:
    """The accelerator Keras runs on (its model name where the backend says it), else the CPU."""
    from visionkit.training.devices import accelerators

    found = accelerators()
    if not found:
        return cpu_name()
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
        return details.get("device_name", found[0])
    if keras.backend.backend() == "jax":
        import jax

        return jax.devices()[0].device_kind
    return found[0]


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    names = (
        [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        if cpuinfo.is_file()
        else []
    )
    return f"{names[0] if names else platform.processor() or platform.machine()} ({len(names) or '?'} CPUs)"
