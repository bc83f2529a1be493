"""Is the loader ever the bottleneck? Loader throughput, and training throughput with the default
augmentation relative to training on pre-decoded, unaugmented arrays.

    .venv/bin/python benchmarks/loader.py                         # classification: lenet5 on digits, augment=affine
    .venv/bin/python benchmarks/loader.py --task segmentation     # unet on shapes, if registered
    .venv/bin/python benchmarks/loader.py trainer.multiprocessing=true   # any config override

The configuration is the pipeline's own (conf/, with the task's defaults and the CPU/GPU profile).
Printed:
1. the loader alone: images/s for 1 worker, 2 threads and 2 processes (median over epochs after the first);
2. training: images/s of model.fit through the BatchLoader with the configured augmentation and
   workers, and of model.fit on the training images as one numpy array without augmentation (the
   median epoch of each fit but its first). Each round fits arrays, the same loader without
   augmentation (Keras's path for a PyDataset and the reading, none of the augmentation's work), the
   loader, then arrays again. A round's ratio is a loader's rate over the mean of the two array fits
   around it (a drift of the machine's speed within the round cancels); the second array fit over the
   first is a control: the same work measured the same way, whose spread is the method's noise on
   this machine. Printed: the median ratio over the rounds with a 90 % bootstrap interval, the
   unaugmented loader's and the control's; the steady state (median step times after an epoch's
   first); the ratio of CPU time per image (what the ratio falls to when no core is idle: a machine
   shared with other jobs). Target: at least 0.95.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from configured import load_config, model_on_arrays, prepare  # noqa: E402  (benchmarks/configured.py)
from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter  # noqa: E402  (what fit uses)
from timing import EpochRates  # noqa: E402  (benchmarks/timing.py)

from pipelines.trainer import training_input  # noqa: E402
from visionkit.data.loader import BatchLoader  # noqa: E402

TASK_NEEDS = {"classification": (), "segmentation": ("visionkit/tasks/segmentation.py", "visionkit/models/unet.py")}


def loader_rate(loader: BatchLoader, epochs: int) -> tuple[float, float]:
    """Median images/s of whole epochs through Keras's PyDataset adapter (workers and queue included),
    and the median CPU time per image of this process (worker processes not counted)."""
    adapter, rates, cpu = PyDatasetAdapter(loader), [], []
    for epoch in range(epochs + 1):
        adapter.on_epoch_begin()
        start, cpu_start = time.perf_counter(), time.process_time()
        count = sum(len(images) for images, _ in adapter.get_numpy_iterator())
        adapter.on_epoch_end()
        if epoch > 0:
            rates.append(count / (time.perf_counter() - start))
            cpu.append((time.process_time() - cpu_start) / count)
    return statistics.median(rates), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="classification", choices=sorted(TASK_NEEDS))
    parser.add_argument("--rounds", type=int, default=60, help="rounds of arrays, plain loader, loader, arrays")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per fit (the first one is not timed)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. trainer.multiprocessing=true")
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    missing = [path for path in TASK_NEEDS[args.task] if not (root / path).is_file()]
    if missing:
        print(f"task={args.task}: skipped, {', '.join(missing)} not there yet")
        return

    cfg = load_config([f"task={args.task}", *args.overrides])
    trainer, task, bundle = prepare(cfg)
    train, augmenter = training_input(cfg, trainer, bundle)  # augment.full_resolution included
    print(
        f"task={args.task} model={cfg.model.name} data={cfg.data.name} augment={len(cfg.augment.transforms)} "
        f"transforms, batch {trainer.batch_size}, {len(train)} training images of {bundle.image_shape}, "
        f"{os.cpu_count()} CPUs, keras backend {keras.backend.backend()}"
    )

    print("loader alone (images/s; CPU ms per 1000 images in the main process):")
    for workers, processes in [(1, False), (2, False), (2, True)]:
        loader = BatchLoader(
            train,
            task.encode_targets,
            batch_size=trainer.batch_size,
            augmenter=augmenter,
            shuffle=True,
            seed=trainer.seed,
            workers=workers,
            use_multiprocessing=processes,
            max_queue_size=trainer.prefetch,
        )
        kind = "processes" if processes else "threads" if workers > 1 else "worker"
        rate, cpu = loader_rate(loader, args.epochs)
        print(f"  {workers} {kind:9s} {rate:9.0f}   {cpu * 1e6:6.0f}")

    model, targets, images, encoded = model_on_arrays(cfg, trainer, task, bundle)
    loader = BatchLoader(
        train,
        targets,
        batch_size=trainer.batch_size,
        augmenter=augmenter,
        shuffle=True,
        seed=trainer.seed,
        workers=trainer.workers,
        use_multiprocessing=trainer.multiprocessing,
        max_queue_size=trainer.prefetch,
    )
    # The same loader without augmentation: Keras's path for a PyDataset and the reading, none of the augmentation.
    plain = BatchLoader(train, targets, batch_size=trainer.batch_size, shuffle=True, seed=trainer.seed)
    arrays, augmented, unaugmented = EpochRates(len(train)), EpochRates(len(train)), EpochRates(len(train))
    array_steps, loader_steps = StepTimes(), StepTimes()
    ratios, plain_ratios, controls = [], [], []
    on_arrays = dict(batch_size=trainer.batch_size, shuffle=True)
    for _ in range(args.rounds):
        before = fit_rate(model, [arrays, array_steps], args.epochs, images, encoded, **on_arrays)
        # shuffle=False: the loader shuffles its samples itself, as in training
        read = fit_rate(model, [unaugmented], args.epochs, plain, shuffle=False)
        loaded = fit_rate(model, [augmented, loader_steps], args.epochs, loader, shuffle=False)
        after = fit_rate(model, [arrays, array_steps], args.epochs, images, encoded, **on_arrays)
        ratios.append(loaded / ((before + after) / 2))
        plain_ratios.append(read / ((before + after) / 2))
        controls.append(after / before)
    workers = f"{trainer.workers} {'process' if trainer.multiprocessing else 'thread'}(s)"
    print(
        f"training (images/s, median of {len(augmented.rates)} loader and {len(arrays.rates)} array epochs of "
        f"{len(loader)} steps; CPU ms per 1000 images in the main process):"
    )
    for name, timer in [
        ("pre-decoded arrays, no augmentation  ", arrays),
        ("BatchLoader, no augmentation         ", unaugmented),
        (f"BatchLoader + augmentation, {workers:9s}", augmented),
    ]:
        print(f"  {name} {statistics.median(timer.rates):9.0f}   {statistics.median(timer.cpu_per_image) * 1e6:6.0f}")
    print(f"  ratio {summary(ratios)}; target >= 0.95")
    print(f"  without augmentation (Keras's PyDataset path and the reading): {summary(plain_ratios)}")
    print(f"  control, arrays over arrays: {summary(controls)}")
    steady = statistics.median(array_steps.seconds) / statistics.median(loader_steps.seconds)
    print(
        f"  steady state (median step after an epoch's first, {len(loader_steps.seconds)} loader steps): {steady:.3f}; "
        f"an epoch's start to its first step's end: {statistics.median(loader_steps.first) * 1e3:.1f} ms with the "
        f"loader, {statistics.median(array_steps.first) * 1e3:.1f} ms on arrays (medians)"
    )
    # With no idle core (a machine shared with other jobs), throughput goes as 1 / CPU time per image.
    cpu_ratio = statistics.median(arrays.cpu_per_image) / statistics.median(augmented.cpu_per_image)
    print(f"  ratio on saturated cores, from CPU time per image: {cpu_ratio:.2f}")


def fit_rate(model: keras.Model, timers: list, epochs: int, *data, **fit_arguments) -> float:
    """model.fit for `epochs` epochs; the median images/s of its epochs but the first (timers[0])."""
    model.fit(*data, epochs=epochs, verbose=0, callbacks=timers, **fit_arguments)
    return statistics.median(timers[0].rates[-(epochs - 1) :])


class StepTimes(keras.callbacks.Callback):
    """Seconds between the ends of consecutive steps of an epoch (`seconds`: the steady state, where prefetching
    hides the loader), and from the epoch's start to the end of its first step (`first`: the loader has no head
    start there); epochs after a fit's first."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []
        self.first: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.timed, self.last = epoch > 0, time.perf_counter()
        self.step = 0

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if self.timed:
            (self.seconds if self.step else self.first).append(now - self.last)
        self.last, self.step = now, self.step + 1


def summary(ratios: list[float]) -> str:
    """The median of per-round ratios, a 90 % bootstrap interval of that median, and the rounds."""
    resampled = np.random.default_rng(0).choice(ratios, size=(10_000, len(ratios)))
    low, high = np.percentile(np.median(resampled, axis=1), [5, 95])
    rounds = " ".join(f"{ratio:.2f}" for ratio in ratios)
    return f"{statistics.median(ratios):.3f} (90 % interval {low:.3f}-{high:.3f}; {len(ratios)} rounds: {rounds})"


if __name__ == "__main__":
    main()
