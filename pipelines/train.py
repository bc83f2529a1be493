"""mode=train: train (or resume), evaluate on the test split, export a SavedModel and verify it."""

from __future__ import annotations

import dataclasses
import io
from contextlib import redirect_stdout
from pathlib import Path

import keras
from omegaconf import DictConfig, OmegaConf

from pipelines import context
from pipelines.evaluate import checked_tta, evaluate_and_log, print_metrics
from pipelines.export import export_and_verify, export_settings
from pipelines.settings import ExportSettings, TrainerSettings, positive, typed
from visionkit.analysis import format_table, layer_table, totals
from visionkit.data.augment import build_augmenter
from visionkit.data.loader import BatchLoader
from visionkit.errors import UserError
from visionkit.tracking import flatten
from visionkit.models.common import inference_model
from visionkit.training.checkpoints import BEST, TrainingState, read_state, restore_training
from visionkit.training.distribute import (build_before_fit, is_chief, is_multi_worker, make_strategy,
                                           multi_worker_dataset, strategy_scope, this_worker)
from visionkit.training.devices import set_cpu_threads
from visionkit.training.fit import (TrainSettings, checkpoint_callbacks, compile_model, fit, monitored_metric,
                                    training_targets)


def model_summary(model: keras.Model) -> str:
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        model.summary(line_length=120)
    return buffer.getvalue()


def apply_cpu_threads(trainer: TrainerSettings) -> None:
    """trainer.cpu_threads, or a line saying why this process keeps the threads it has."""
    notice = set_cpu_threads(trainer.cpu_threads)
    if notice:
        print(notice)


def run(cfg: DictConfig) -> dict[str, float]:
    trainer = typed(cfg.trainer, TrainerSettings, "trainer")
    export = export_settings(cfg)
    for key in ("epochs", "batch_size", "workers", "prefetch"):
        positive(getattr(trainer, key), f"trainer.{key}")
    run_dir = context.output_dir()
    checkpoints = run_dir / "checkpoints"
    state = resume_state(cfg, checkpoints) if cfg.get("resume") else start_state(cfg, checkpoints)
    apply_cpu_threads(trainer)  # like the strategy, before TensorFlow starts
    strategy = make_strategy(trainer.strategy, cpu_devices=trainer.cpu_devices)
    set_precision(trainer.precision)
    keras.utils.set_random_seed(trainer.seed)
    task = context.load_task(cfg)
    tta = checked_tta(cfg, task)  # before training, not after it
    bundle = context.load_data(cfg, task)
    chief = is_chief(strategy)
    if not chief:
        cfg.tracking.enabled = False  # one MLflow run per training, the chief's
    tracker, tracking = context.make_tracker(cfg)
    if strategy is not None:
        print(f"trainer.strategy={trainer.strategy}: {strategy.num_replicas_in_sync} replicas, "
              f"global batch {trainer.batch_size}")

    with strategy_scope(strategy):
        model = context.build_model(cfg, task, bundle)
    train_data, val_data = training_loaders(cfg, trainer, task, bundle, model)
    with strategy_scope(strategy):
        compile_for_training(model, task, trainer, steps_per_epoch=len(train_data))
    initial_epoch = state.get("epochs_completed", 0)
    if initial_epoch:
        with strategy_scope(strategy):
            restore_training(model, checkpoints)
        train_data.start_at_epoch(initial_epoch)  # the shuffling and augmentation the uninterrupted run would see
        print(f"resuming {run_dir} after epoch {initial_epoch} of {trainer.epochs}")
    if is_multi_worker(strategy):
        build_before_fit(model, strategy, train_data[0])
        train_data, val_data = (multi_worker_dataset(loader, strategy) for loader in (train_data, val_data))

    metadata = context.model_metadata(cfg, task, bundle, model)
    context.write_metadata(checkpoints, metadata)
    print(f"{cfg.task.name}: {cfg.model.name} on {cfg.data.name} ({len(bundle.train)} train / {len(bundle.val)} val / "
          f"{len(bundle.test)} test images of {bundle.image_shape}), {model.count_params():,} parameters -> {run_dir}")

    with tracker.run(**context.run_identity(cfg), run_id=state.get("run_id")):
        if initial_epoch:
            tracker.set_tags({"resumed_after_epoch": initial_epoch, "resumed_trainer.epochs": trainer.epochs})
        else:
            log_run_description(cfg, model, bundle, tracker)
        # The task's callbacks come first: they may add epoch metrics (detection's val_map50) that the
        # checkpoints monitor and the tracker logs.
        callbacks = task.training_callbacks(bundle, tracker.log_figure)
        callbacks += checkpoint_callbacks(checkpoints, monitored_metric(task, model),
                                          trainer.early_stopping or None, task.monitor_mode,
                                          best=state.get("best"), extra_state={"run_id": tracker.run_id})
        callbacks.append(tracker.keras_callback())
        fit(model, train_data, val_data, epochs=trainer.epochs, callbacks=callbacks, initial_epoch=initial_epoch)
        best_monitor = next(c.best for c in callbacks if isinstance(c, TrainingState))
        if not chief:
            print(f"worker {this_worker()[0]}: training done; worker 0 evaluates and exports")
            return {}
        model = best_model(model, checkpoints, strategy)  # the model we report and ship is the best one
        model.save(run_dir / "model.keras")
        metrics = evaluate_and_log(model, task, bundle, tracker, batch_size=trainer.batch_size, tta=tta)
        if export.enabled:
            export_and_verify(model, task, metadata, bundle.test.images[:export.num_images],
                              export_tolerance(export, trainer.precision), tracker)
        if tracking.register:
            tracker.register_model(model, f"{cfg.task.name}-{cfg.model.name}")
    print_metrics(task, metrics)
    # What a hyper-parameter search maximises (hparams_search=...): the best epoch's validation
    # monitor, never a test metric, negated where lower is better.
    if best_monitor is not None:  # None only when no epoch ever finished with a finite monitor
        metrics["validation_score"] = best_monitor if task.monitor_mode == "max" else -best_monitor
    return metrics


def best_model(model: keras.Model, checkpoints: Path, strategy) -> keras.Model:
    """The best checkpoint's served model (no auxiliary training heads). Under multi_worker it is loaded
    outside the strategy: evaluated by the chief alone, a distributed model would wait for the others."""
    if is_multi_worker(strategy):
        model = keras.saving.load_model(checkpoints / BEST, safe_mode=True, compile=False)
    else:
        model.load_weights(checkpoints / BEST)
    return inference_model(model)


def training_loaders(cfg: DictConfig, trainer: TrainerSettings, task, bundle, model) -> tuple[BatchLoader, BatchLoader]:
    """Shuffled, augmented training batches and plain validation batches (also what mode=benchmark times)."""
    with context.as_user_error("augment"):
        augmenter = build_augmenter(**context.options(cfg.augment), seed=trainer.seed)
    targets = training_targets(task.encode_targets, model)
    common = dict(batch_size=trainer.batch_size, workers=trainer.workers, use_multiprocessing=trainer.multiprocessing,
                  max_queue_size=trainer.prefetch)
    return (BatchLoader(bundle.train, targets, augmenter=augmenter, shuffle=True, seed=trainer.seed, **common),
            BatchLoader(bundle.val, targets, **common))


def compile_for_training(model, task, trainer: TrainerSettings, steps_per_epoch: int) -> None:
    """Optimizer, schedule, loss, metrics and XLA setting of the trainer section."""
    with context.as_user_error("trainer"):
        compile_model(model, task, TrainSettings(
            epochs=trainer.epochs, learning_rate=trainer.learning_rate, optimizer=trainer.optimizer,
            schedule=trainer.schedule, warmup_epochs=trainer.warmup_epochs, weight_decay=trainer.weight_decay,
            momentum=trainer.momentum, jit_compile=jit_compile(trainer.jit_compile)), steps_per_epoch=steps_per_epoch)


def log_run_description(cfg: DictConfig, model, bundle, tracker) -> None:
    """Params (the resolved config and the model's size), the config, the architecture and the data check."""
    rows = layer_table(inference_model(model))
    size = totals(rows)
    tracker.log_params({**flatten(OmegaConf.to_container(cfg, resolve=True)),
                        "model.total_params": size["params"], "model.trainable_params": size["trainable_params"],
                        "model.macs": size["macs"], "model.receptive_field": size["receptive_field"]})
    tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
    tracker.log_text(model_summary(model), "model_summary.txt")
    tracker.log_text(format_table(rows), "layer_table.txt")
    if bundle.verification is not None:  # file-based datasets: what verification kept, converted and skipped
        print(bundle.verification.format_table())
        tracker.log_text(bundle.verification.format_table(), "verification.txt")
        tracker.log_metrics(bundle.verification.counts())


# A resumed run must be the same experiment: these sections must match the saved configuration,
# except for how long it trains, how its data is loaded and on how many CPU threads.
EXPERIMENT_SECTIONS = ("task.", "model.", "data.", "augment.", "trainer.", "profile")
RESUMABLE_KEYS = ("trainer.epochs", "trainer.workers", "trainer.multiprocessing", "trainer.prefetch",
                  "trainer.cpu_threads")
RUN_CONFIG = "config.yaml"
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
# A mixed-precision model computes in 16 bits, and the SavedModel's kernels round differently from
# the in-memory model's: outputs agree to about 1e-3 (float16) or 1e-2 (bfloat16), not 1e-4.
MIXED_PRECISION_ATOL = {"mixed_float16": 5e-3, "mixed_bfloat16": 3e-2}
JIT_COMPILE = {"auto": "auto", "true": True, "false": False}


def start_state(cfg: DictConfig, checkpoints: Path) -> dict:
    """A new run: refuse a run directory that already holds one, and keep the configuration to resume with."""
    if read_state(checkpoints) is not None:
        raise UserError(f"{checkpoints.parent} already holds a run; resume=true continues it, "
                        f"or choose another hydra.run.dir")
    checkpoints.mkdir(parents=True, exist_ok=True)
    (checkpoints / RUN_CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return {}


def resume_state(cfg: DictConfig, checkpoints: Path) -> dict:
    """The saved state of the run in this directory, after checking the configuration is the same."""
    state = read_state(checkpoints)
    if state is None:
        raise UserError(f"resume=true: no completed epoch to resume in {checkpoints.parent} "
                        f"(pass hydra.run.dir=<the run directory>)")
    saved = flatten(OmegaConf.to_container(OmegaConf.load(checkpoints / RUN_CONFIG), resolve=True))
    current = flatten(OmegaConf.to_container(cfg, resolve=True))
    changed = sorted(key for key in saved.keys() | current.keys()
                     if key.startswith(EXPERIMENT_SECTIONS) and key not in RESUMABLE_KEYS
                     and saved.get(key) != current.get(key))
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed[:5])
        raise UserError(f"resume=true with a different configuration ({details}); of the experiment's settings "
                        f"only {', '.join(RESUMABLE_KEYS)} may change")
    return state


def set_precision(precision: str) -> None:
    """float32, or mixed precision (float16 with loss scaling, which Keras's compile adds; or bfloat16)."""
    if precision not in PRECISIONS:
        raise UserError(f"trainer.precision must be one of {', '.join(PRECISIONS)}, received {precision!r}")
    keras.mixed_precision.set_dtype_policy(precision)


def jit_compile(value: str) -> bool | str:
    """trainer.jit_compile: true | false | auto (XLA where Keras finds it supported)."""
    if str(value).lower() not in JIT_COMPILE:
        raise UserError(f"trainer.jit_compile must be true, false or auto, received {value!r}")
    return JIT_COMPILE[str(value).lower()]


def export_tolerance(export: ExportSettings, precision: str) -> ExportSettings:
    """The export check's tolerance, widened to what 16-bit arithmetic allows under mixed precision."""
    atol = max(export.atol, MIXED_PRECISION_ATOL.get(precision, 0.0))
    if atol != export.atol:
        print(f"export.atol {export.atol:g} -> {atol:g} for trainer.precision={precision}")
    return dataclasses.replace(export, atol=atol)
