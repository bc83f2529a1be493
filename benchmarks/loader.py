"""Is the loader ever the bottleneck? Loader throughput, and training throughput with the default
augmentation relative to training on pre-decoded, unaugmented arrays.

    .venv/bin/python benchmarks/loader.py                         # classification: lenet5 on digits, augment=affine
    .venv/bin/python benchmarks/loader.py --task segmentation     # unet on shapes, if registered
    .venv/bin/python benchmarks/loader.py trainer.multiprocessing=true   # any config override

The configuration is the pipeline's own (conf/, with the task's defaults and the CPU/GPU profile).
Printed:
1. the loader alone: images/s for 1 worker, 2 threads and 2 processes (median over epochs after the first);
2. training: images/s of model.fit through the BatchLoader with the configured augmentation and
   workers, and of model.fit on the training images as one numpy array without augmentation (both
   the median epoch after each fit's first; the two alternate, so that a change of machine load hits
   both), and their ratio. Target: at least 0.95. Also the ratio of their CPU time per image: what
   the ratio falls to when no core is idle (a machine shared with other jobs).
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
    parser.add_argument("--rounds", type=int, default=10, help="alternations of array and loader training")
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
    arrays, augmented, ratios = EpochRates(len(train)), EpochRates(len(train)), []
    for _ in range(args.rounds):
        model.fit(
            images,
            encoded,
            batch_size=trainer.batch_size,
            epochs=args.epochs,
            shuffle=True,
            verbose=0,
            callbacks=[arrays],
        )
        model.fit(loader, epochs=args.epochs, verbose=0, callbacks=[augmented])
        ratios.append(
            statistics.median(augmented.rates[-(args.epochs - 1) :])
            / statistics.median(arrays.rates[-(args.epochs - 1) :])
        )
    workers = f"{trainer.workers} {'process' if trainer.multiprocessing else 'thread'}(s)"
    print(
        f"training (images/s, median of {len(arrays.rates)} epochs of {len(loader)} steps; "
        f"CPU ms per 1000 images in the main process):"
    )
    for name, timer in [
        ("pre-decoded arrays, no augmentation  ", arrays),
        (f"BatchLoader + augmentation, {workers:9s}", augmented),
    ]:
        print(f"  {name} {statistics.median(timer.rates):9.0f}   {statistics.median(timer.cpu_per_image) * 1e6:6.0f}")
    print(
        f"  ratio {statistics.median(ratios):.2f} (median of {args.rounds} rounds: "
        f"{' '.join(f'{r:.2f}' for r in ratios)}; target >= 0.95)"
    )
    # With no idle core (a machine shared with other jobs), throughput goes as 1 / CPU time per image.
    cpu_ratio = statistics.median(arrays.cpu_per_image) / statistics.median(augmented.cpu_per_image)
    print(f"  ratio on saturated cores, from CPU time per image: {cpu_ratio:.2f}")


if __name__ == "__main__":
    main()
