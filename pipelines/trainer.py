"""The trainer section as everything that trains uses it (mode=train, mode=benchmark, benchmarks/): checked
settings, the engine started in the right order, the loaders, and the one conversion to compile settings."""

from __future__ import annotations

import dataclasses

import keras
from omegaconf import DictConfig

from pipelines import context
from pipelines.settings import TrainerSettings, positive, typed
from visionkit.data.augment import Augmenter, build_augmenter
from visionkit.data.core import DataBundle, Split
from visionkit.data.index import own_size_split
from visionkit.data.loader import BatchLoader
from visionkit.errors import UserError
from visionkit.training.devices import set_cpu_threads
from visionkit.training.distribute import make_strategy
from visionkit.training.fit import CompileSettings, compile_model, training_targets
from visionkit.training.precision import jit_compile, set_precision

TRAINING_COUNTS = ("epochs", "batch_size", "workers", "prefetch")  # trainer keys that must be at least 1


def trainer_settings(cfg: DictConfig, counts: tuple[str, ...] = TRAINING_COUNTS) -> TrainerSettings:
    """The trainer section, typed, with the given counts checked to be at least 1."""
    trainer = typed(cfg.trainer, TrainerSettings, "trainer")
    for key in counts:
        positive(getattr(trainer, key), f"trainer.{key}")
    return trainer


def apply_cpu_threads(trainer: TrainerSettings) -> None:
    """trainer.cpu_threads, or a line saying why this process keeps the threads it has."""
    notice = set_cpu_threads(trainer.cpu_threads)
    if notice:
        print(notice)


def start_engine(trainer: TrainerSettings, *, distribute: bool = True):
    """TensorFlow's threads and devices (before anything starts TensorFlow), the dtype policy and the seed.
    Returns trainer.strategy's tf.distribute strategy, or None (also when not `distribute`)."""
    apply_cpu_threads(trainer)
    strategy = make_strategy(trainer.strategy, cpu_devices=trainer.cpu_devices) if distribute else None
    set_precision(trainer.precision)
    keras.utils.set_random_seed(trainer.seed)
    if strategy is not None:
        print(
            f"trainer.strategy={trainer.strategy}: {strategy.num_replicas_in_sync} replicas, "
            f"global batch {trainer.batch_size}"
        )
    return strategy


def training_input(cfg: DictConfig, trainer: TrainerSettings, bundle: DataBundle) -> tuple[Split, Augmenter | None]:
    """The split training reads and the augmenter of the augment section. With augment.full_resolution the
    samples reach the transforms at their files' own sizes (the photo a random-resized crop is cut from), and
    the transforms must end at the model's input size."""
    augment = context.options(cfg.augment)
    series = augment.pop("series", None)
    if bundle.train.input_key == "series":
        return bundle.train, series_augmenter(augment, series, trainer.seed)
    if series:
        raise UserError(f"augment.series transforms series; data={cfg.data.name} holds images")
    full_resolution = augment.pop("full_resolution", False)
    if not isinstance(full_resolution, bool):
        raise UserError(f"augment.full_resolution must be true or false, received {full_resolution!r}")
    output_size = bundle.image_shape[:2] if full_resolution else None
    with context.as_user_error("augment"):
        augmenter = build_augmenter(**augment, seed=trainer.seed, output_size=output_size)
    if full_resolution and augmenter is None:
        raise UserError("augment.full_resolution=true needs transforms that end at data.image_size")
    return (own_size_split(bundle.train) if full_resolution else bundle.train), augmenter


def series_augmenter(augment: dict, series, seed: int):
    """augment.series for a dataset of series; an image preset's transforms (the tasks' default) do not apply."""
    from visionkit.data.augment.series import build_series_augmenter

    if augment.get("transforms") and not series:
        print("augment: the data are series, so the image transforms are not applied; augment=series augments them")
    with context.as_user_error("augment"):
        return build_series_augmenter(series, seed)


def training_loaders(cfg: DictConfig, trainer: TrainerSettings, task, bundle, model) -> tuple[BatchLoader, BatchLoader]:
    """Shuffled, augmented training batches and plain validation batches (also what mode=benchmark times)."""
    train, augmenter = training_input(cfg, trainer, bundle)
    targets = training_targets(task.encode_targets, model)
    common = dict(
        batch_size=trainer.batch_size,
        workers=trainer.workers,
        use_multiprocessing=trainer.multiprocessing,
        max_queue_size=trainer.prefetch,
    )
    return (
        BatchLoader(train, targets, augmenter=augmenter, shuffle=True, seed=trainer.seed, **common),
        BatchLoader(bundle.val, targets, **common),
    )


def compile_settings(trainer: TrainerSettings) -> CompileSettings:
    """The trainer section's compile settings: every field of CompileSettings is read from the trainer key of
    the same name, so none can be left at a default that differs from the config."""
    values = {field.name: getattr(trainer, field.name) for field in dataclasses.fields(CompileSettings)}
    return CompileSettings(**{**values, "jit_compile": jit_compile(trainer.jit_compile)})


def compile_for_training(model: keras.Model, task, trainer: TrainerSettings, steps_per_epoch: int) -> None:
    """Optimizer, schedule, loss, metrics and XLA setting of the trainer section."""
    with context.as_user_error("trainer"):
        compile_model(model, task, compile_settings(trainer), steps_per_epoch=steps_per_epoch)
