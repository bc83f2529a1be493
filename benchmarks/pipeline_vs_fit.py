"""Does the pipeline cost training speed? Its training throughput against a plain, hand-written Keras
model.fit of the same model, data and batch size, measured in one run.

    .venv/bin/python benchmarks/pipeline_vs_fit.py                                   # lenet5 on digits
    .venv/bin/python benchmarks/pipeline_vs_fit.py model=resnet18 model.width=0.25 data=shapes data.num_images=1000

- pipeline: the BatchLoader (augment=none, the configured workers), compile_for_training (the trainer
  section's optimizer, schedule, weight decay, momentum and XLA setting; the task's loss and metrics) and
  model.fit on the loader, as mode=train wires them (pipelines/trainer.py), without the checkpoint and
  tracking callbacks;
- plain: the same network (same builder, same initial weights) compiled by hand with Adam, the task's
  loss and metrics, and model.fit on the training images and encoded targets as numpy arrays.

Each round fits both for --epochs epochs, who goes first alternating; an epoch's images/s counts only epochs after
each fit's first (input-pipeline set-up; tracing in the first fit). Machine load changes hit both sides
of a round, so the ratio printed is the median of the rounds' ratios; the ratio of CPU time per image
(this process, all threads) is printed too, as it is less disturbed by other work on a shared machine.
Target: at least 0.95.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from configured import load_config, prepare  # noqa: E402  (benchmarks/configured.py)
from timing import EpochRates  # noqa: E402  (benchmarks/timing.py)

from pipelines import context  # noqa: E402
from pipelines.settings import TrainerSettings  # noqa: E402
from pipelines.trainer import compile_for_training, training_loaders  # noqa: E402  (mode=train's wiring)


def pipeline_side(cfg, trainer: TrainerSettings, task, bundle):
    """(model, fit arguments) as mode=train wires them."""
    model = context.build_model(cfg, task, bundle)
    loader, _ = training_loaders(cfg, trainer, task, bundle, model)
    compile_for_training(model, task, trainer, steps_per_epoch=len(loader))
    return model, {"x": loader}


def plain_side(cfg, trainer: TrainerSettings, task, bundle):
    """(model, fit arguments): the same network compiled by hand, numpy arrays in memory."""
    model = context.build_model(cfg, task, bundle)
    model.compile(
        optimizer=keras.optimizers.Adam(trainer.learning_rate),
        loss=task.loss(),
        metrics=task.metrics(model.output_shape[-1]),
    )
    train = bundle.train
    targets = task.encode_targets([train.sample(i) for i in range(len(train))])
    return model, {
        "x": np.ascontiguousarray(train.images),
        "y": targets,
        "batch_size": trainer.batch_size,
        "shuffle": True,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="alternations of plain and pipeline fits")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per fit (the first one is not timed)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model=resnet18 data=shapes")
    args = parser.parse_args()

    cfg = load_config(["augment=none", *args.overrides])
    trainer, task, bundle = prepare(cfg)
    sides = {}
    for name, build in (("plain", plain_side), ("pipeline", pipeline_side)):
        keras.utils.set_random_seed(trainer.seed)  # the same initial weights on both sides
        sides[name] = (*build(cfg, trainer, task, bundle), EpochRates(len(bundle.train)))
    print(
        f"{cfg.model.name} on {cfg.data.name}: {len(bundle.train)} training images of "
        f"{'x'.join(map(str, bundle.image_shape))}, batch {trainer.batch_size}, {trainer.workers} loader worker(s), "
        f"keras {keras.backend.backend()}, {os.cpu_count()} CPUs"
    )

    ratios = []
    for round_index in range(args.rounds):
        order = list(sides.values())
        for model, fit_args, timer in order[::-1] if round_index % 2 else order:  # who goes first alternates
            model.fit(**fit_args, epochs=args.epochs, verbose=0, callbacks=[timer])
        latest = {name: statistics.median(timer.rates[-(args.epochs - 1) :]) for name, (_, _, timer) in sides.items()}
        ratios.append(latest["pipeline"] / latest["plain"])
    timed = len(sides["plain"][2].rates)
    timers = {name: timer for name, (_, _, timer) in sides.items()}
    cpu = {name: statistics.median(timer.cpu_per_image) for name, timer in timers.items()}
    print(
        f"training (median of {timed} epochs each, {args.rounds} rounds of {args.epochs}-epoch fits): "
        f"images/s, CPU ms per 1000 images"
    )
    print(
        f"  plain model.fit on numpy arrays       {statistics.median(timers['plain'].rates):10,.0f} "
        f"{cpu['plain'] * 1e6:8.0f}"
    )
    print(
        f"  pipeline: BatchLoader + compile_model {statistics.median(timers['pipeline'].rates):10,.0f} "
        f"{cpu['pipeline'] * 1e6:8.0f}"
    )
    print(
        f"  ratio pipeline / plain: {statistics.median(ratios):.3f} images/s (median of the rounds: "
        f"{' '.join(f'{r:.2f}' for r in ratios)}; target >= 0.95); {cpu['plain'] / cpu['pipeline']:.3f} "
        f"by CPU time per image"
    )


if __name__ == "__main__":
    main()
