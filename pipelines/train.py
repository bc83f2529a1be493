"""mode=train: train (or resume), evaluate on the test split, export a SavedModel and verify it."""

from __future__ import annotations

import dataclasses
import io
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
from omegaconf import DictConfig, OmegaConf

from pipelines import context
from pipelines.evaluation import checked_tta, evaluate_and_log, print_metrics
from pipelines.explaining import log_training_pictures
from pipelines.exporting import export_and_verify, export_settings
from pipelines.resume import training_state
from pipelines.settings import ExportSettings, TrackingSettings, TrainerSettings
from pipelines.trainer import compile_for_training, start_engine, trainer_settings, training_loaders
from visionkit.analysis import format_table, layer_table, totals
from visionkit.data.core import DataBundle
from visionkit.errors import UserError
from visionkit.models.common import inference_model
from visionkit.tracking import flatten
from visionkit.training.checkpoints import BEST, TrainingState, restore_training
from visionkit.training.distribute import (
    build_before_fit,
    is_chief,
    is_multi_worker,
    multi_worker_dataset,
    strategy_scope,
    this_worker,
)
from visionkit.training.fit import checkpoint_callbacks, monitored_metric
from visionkit.training.mid_epoch import check_step_checkpoints, fit_from
from visionkit.training.precise_bn import PreciseBatchNorm, precise_bn_setting, wants_precise_statistics
from visionkit.training.precision import export_tolerance


@dataclass
class Training:
    """What `prepare` builds: the checked settings and everything the fit and the report use."""

    cfg: DictConfig
    trainer: TrainerSettings
    export: ExportSettings
    tracking: TrackingSettings
    run_dir: Path
    state: dict[str, Any]  # the saved training state when resuming, else {}
    strategy: Any  # a tf.distribute strategy, or None
    task: Any
    tta: str
    bundle: DataBundle
    tracker: Any
    model: keras.Model
    train_data: Any  # BatchLoaders; distributed datasets under multi_worker
    val_data: Any
    metadata: dict[str, Any]  # what serving needs besides the weights (visionkit.json)

    @property
    def checkpoints(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def initial_epoch(self) -> int:
        return self.state.get("epochs_completed", 0)

    @property
    def chief(self) -> bool:
        return is_chief(self.strategy)


def run(cfg: DictConfig) -> dict[str, float]:
    training = prepare(cfg)
    with training.tracker.run(**context.run_identity(cfg), run_id=training.state.get("run_id")):
        describe_run(training)
        best_monitor = fit_model(training)
        if not training.chief:
            print(f"worker {this_worker()[0]}: training done; worker 0 evaluates and exports")
            return {}
        metrics = report(training)
    print_metrics(training.task, metrics)
    # What a hyper-parameter search maximises (hparams_search=...): the best epoch's validation
    # monitor, never a test metric, negated where lower is better.
    if best_monitor is not None:  # None only when no epoch ever finished with a finite monitor
        metrics["validation_score"] = best_monitor if training.task.monitor_mode == "max" else -best_monitor
    return metrics


def prepare(cfg: DictConfig) -> Training:
    """Settings checked and the run directory claimed before any work; then the engine, task, data, tracker,
    and the model compiled (restored when resuming) with its loaders."""
    trainer = trainer_settings(cfg)
    export = export_settings(cfg)
    check_step_checkpoints(trainer.checkpoint_every_steps, trainer.strategy)
    precise_bn_unavailable(trainer, cfg.task.name)  # a wrong value or an impossible request
    run_dir = context.output_dir()
    state = training_state(cfg, run_dir / "checkpoints")
    strategy = start_engine(trainer)  # before anything starts TensorFlow
    task = context.load_task(cfg)
    tta = checked_tta(cfg, task)  # before training, not after it
    if not is_chief(strategy):
        cfg.tracking.enabled = False  # one MLflow run per training, the chief's
    tracker, tracking = context.make_tracker(cfg)  # a store MLflow refuses fails here, before the data loads
    bundle = context.load_data(cfg, task)
    model, train_data, val_data = compiled_model(cfg, trainer, strategy, task, bundle)
    training = Training(
        cfg=cfg,
        trainer=trainer,
        export=export,
        tracking=tracking,
        run_dir=run_dir,
        state=state,
        strategy=strategy,
        task=task,
        tta=tta,
        bundle=bundle,
        tracker=tracker,
        model=model,
        train_data=train_data,
        val_data=val_data,
        metadata=context.model_metadata(cfg, task, bundle, model),
    )
    if training.state:
        restore(training)
    if is_multi_worker(strategy):
        distribute(training)
    context.write_metadata(training.checkpoints, training.metadata)
    print(
        f"{cfg.task.name}: {cfg.model.name} on {cfg.data.name} ({len(bundle.train)} train / {len(bundle.val)} val / "
        f"{len(bundle.test)} test {samples_word(bundle)} of {bundle.image_shape}), {model.count_params():,} parameters "
        f"-> {run_dir}"
    )
    return training


def samples_word(bundle: DataBundle) -> str:
    """What the run's first line calls the samples."""
    return "series" if bundle.train.input_key == "series" else "images"


def compiled_model(cfg: DictConfig, trainer: TrainerSettings, strategy, task, bundle):
    """(model, training loader, validation loader): the model built and compiled in the strategy's scope."""
    with strategy_scope(strategy):
        model = context.build_model(cfg, task, bundle)
    train_data, val_data = training_loaders(cfg, trainer, task, bundle, model)
    with strategy_scope(strategy):
        compile_for_training(model, task, trainer, steps_per_epoch=len(train_data))
    return model, train_data, val_data


def restore(training: Training) -> None:
    """The last checkpoint's weights and optimizer state, and the loader at the epoch where the run stopped
    (fit_model starts inside it at a step checkpoint's position)."""
    with strategy_scope(training.strategy):
        restore_training(training.model, training.checkpoints, training.state)
    # The shuffling and augmentation the uninterrupted run would see.
    training.train_data.start_at_epoch(training.initial_epoch)
    position = training.state.get("position")
    within = f" and {position['step']} steps of epoch {position['epoch'] + 1}" if position else ""
    print(f"resuming {training.run_dir} after epoch {training.initial_epoch} of {training.trainer.epochs}{within}")


def distribute(training: Training) -> None:
    """multi_worker: the model built on one batch, and loaders that give each worker its share of the batches."""
    build_before_fit(training.model, training.strategy, training.train_data[0])
    training.train_data, training.val_data = (
        multi_worker_dataset(loader, training.strategy) for loader in (training.train_data, training.val_data)
    )


def describe_run(training: Training) -> None:
    """A new run logs what it is; a resumed one says where it resumed."""
    if training.state:
        position = training.state.get("position") or {}
        training.tracker.set_tags(
            {
                "resumed_after_epoch": training.initial_epoch,
                "resumed_after_step": position.get("step", 0),
                "resumed_trainer.epochs": training.trainer.epochs,
            }
        )
    else:
        log_run_description(training.cfg, training.model, training.bundle, training.tracker)


def fit_model(training: Training) -> float | None:
    """model.fit with the task's, the checkpoints' and the tracker's callbacks; the best epoch's monitor value."""
    task, trainer = training.task, training.trainer
    # The task's callbacks come first: they may add epoch metrics (detection's val_map50) that the
    # checkpoints monitor and the tracker logs.
    callbacks = task.training_callbacks(training.bundle, training.tracker.log_figure)
    # Before the checkpoints: a step checkpoint at an epoch's last step keeps the re-estimated statistics.
    callbacks = precise_batch_norm(training) + callbacks
    callbacks += checkpoint_callbacks(
        training.checkpoints,
        monitored_metric(task, training.model),
        trainer.early_stopping or None,
        task.monitor_mode,
        best=training.state.get("best"),
        extra_state={"run_id": training.tracker.run_id},
        every_steps=trainer.checkpoint_every_steps,
    )
    callbacks.append(training.tracker.keras_callback())
    fit_from(
        training.model,
        training.train_data,
        training.val_data,
        epochs=trainer.epochs,
        callbacks=callbacks,
        initial_epoch=training.initial_epoch,
        position=training.state.get("position"),
    )
    return next(c.best for c in callbacks if isinstance(c, TrainingState))


def precise_bn_unavailable(trainer: TrainerSettings, task_name: str) -> str | None:
    """Why trainer.precise_bn cannot apply, or None: a detector's training-mode call needs its targets, and a
    strategy's replicas would each average their own batches. Explicitly asked for there, it is an error."""
    setting = precise_bn_setting(trainer.precise_bn)
    reason = "detection" if task_name == "detection" else None
    reason = reason or (f"trainer.strategy={trainer.strategy}" if trainer.strategy != "none" else None)
    if reason and setting == "true":
        raise UserError(f"trainer.precise_bn=true is not available for {reason}; use false or auto")
    return reason


def precise_batch_norm(training: Training) -> list[keras.callbacks.Callback]:
    """trainer.precise_bn's callback, where it applies and is wanted."""
    setting = precise_bn_setting(training.trainer.precise_bn)
    if precise_bn_unavailable(training.trainer, training.task.name):
        return []
    if wants_precise_statistics(setting, training.model, len(training.train_data)):
        print(f"batch norm statistics re-estimated before each validation (trainer.precise_bn={setting})")
        return [PreciseBatchNorm(training.train_data)]
    return []


def report(training: Training) -> dict[str, float]:
    """The best checkpoint saved as model.keras, its test metrics logged, exported, verified and registered."""
    cfg, task, bundle, tracker = training.cfg, training.task, training.bundle, training.tracker
    model = best_model(training.model, training.checkpoints, training.strategy)  # what we report and ship
    model.save(training.run_dir / "model.keras")
    metrics = evaluate_and_log(model, task, bundle, tracker, batch_size=training.trainer.batch_size, tta=training.tta)
    log_training_pictures(model, task.name, bundle, tracker, training.run_dir)
    if training.export.enabled:
        exported = export_and_verify(
            model,
            task,
            training.metadata,
            bundle.test.images[: training.export.num_images],
            widened_export_check(training.export, training.trainer.precision),
            tracker,
        )
        if training.tracking.register:  # make_tracker refuses register=true without the export
            tracker.register_model(exported, f"{cfg.task.name}-{cfg.model.name}", bundle.test.images)
    return metrics


def best_model(model: keras.Model, checkpoints: Path, strategy) -> keras.Model:
    """The best checkpoint's served model (no auxiliary training heads). Under multi_worker it is loaded
    outside the strategy: evaluated by the chief alone, a distributed model would wait for the others."""
    if is_multi_worker(strategy):
        model = keras.saving.load_model(checkpoints / BEST, safe_mode=True, compile=False)
    else:
        model.load_weights(checkpoints / BEST)
    return inference_model(model)


def widened_export_check(export: ExportSettings, precision: str) -> ExportSettings:
    """The export section with its tolerance widened for a mixed-precision model, saying so."""
    atol = export_tolerance(export.atol, precision)
    if atol != export.atol:
        print(f"export.atol {export.atol:g} -> {atol:g} for trainer.precision={precision}")
    return dataclasses.replace(export, atol=atol)


def model_summary(model: keras.Model) -> str:
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        model.summary(line_length=120)
    return buffer.getvalue()


def log_run_description(cfg: DictConfig, model, bundle, tracker) -> None:
    """Params (the resolved config and the model's size), the config, the architecture and the data check."""
    rows = layer_table(inference_model(model))
    size = totals(rows)
    tracker.log_params(
        {
            **flatten(OmegaConf.to_container(cfg, resolve=True)),
            "model.total_params": size["params"],
            "model.trainable_params": size["trainable_params"],
            "model.macs": size["macs"],
            "model.receptive_field": size["receptive_field"],
        }
    )
    tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
    tracker.log_text(model_summary(model), "model_summary.txt")
    tracker.log_text(format_table(rows), "layer_table.txt")
    tracker.log_dataset(bundle, context.options(cfg.data))
    if bundle.verification is not None:  # file-based datasets: what verification kept, converted and skipped
        print(bundle.verification.format_table())
        tracker.log_text(bundle.verification.format_table(), "verification.txt")
        tracker.log_metrics(bundle.verification.counts())
