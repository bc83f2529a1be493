"""mode=train: train, evaluate on the test split, export a SavedModel and verify it."""

from __future__ import annotations

import io
from contextlib import redirect_stdout

import keras
from omegaconf import DictConfig, OmegaConf

from pipelines import context
from pipelines.evaluate import evaluate_and_log, print_metrics
from pipelines.export import export_and_verify, export_settings
from pipelines.settings import TrainerSettings, positive, typed
from visionkit.analysis import format_table, layer_table, totals
from visionkit.data.augment import build_augmenter
from visionkit.data.loader import BatchLoader
from visionkit.tracking import flatten
from visionkit.models.common import inference_model
from visionkit.training.fit import (TrainSettings, checkpoint_callbacks, compile_model, fit, monitored_metric,
                                    training_targets)


def model_summary(model: keras.Model) -> str:
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        model.summary(line_length=120)
    return buffer.getvalue()


def run(cfg: DictConfig) -> dict[str, float]:
    trainer = typed(cfg.trainer, TrainerSettings, "trainer")
    export = export_settings(cfg)
    for key in ("epochs", "batch_size", "workers"):
        positive(getattr(trainer, key), f"trainer.{key}")
    keras.utils.set_random_seed(trainer.seed)
    task = context.load_task(cfg)
    bundle = context.load_data(cfg, task)
    with context.as_user_error("augment"):
        augmenter = build_augmenter(OmegaConf.to_container(cfg.augment.transforms, resolve=True), seed=trainer.seed)
    model = context.build_model(cfg, task, bundle)
    tracker, tracking = context.make_tracker(cfg)
    run_dir = context.output_dir()

    targets = training_targets(task.encode_targets, model)
    train_data = BatchLoader(bundle.train, targets, batch_size=trainer.batch_size, augmenter=augmenter,
                             shuffle=True, seed=trainer.seed, workers=trainer.workers)
    val_data = BatchLoader(bundle.val, targets, batch_size=trainer.batch_size, workers=trainer.workers)
    with context.as_user_error("trainer"):
        compile_model(model, task, TrainSettings(
            epochs=trainer.epochs, learning_rate=trainer.learning_rate, optimizer=trainer.optimizer,
            schedule=trainer.schedule, warmup_epochs=trainer.warmup_epochs, weight_decay=trainer.weight_decay,
            momentum=trainer.momentum), steps_per_epoch=len(train_data))

    metadata = context.model_metadata(cfg, bundle, model)
    checkpoints = run_dir / "checkpoints"
    context.write_metadata(checkpoints, metadata)
    print(f"{cfg.task.name}: {cfg.model.name} on {cfg.data.name} ({len(bundle.train)} train / {len(bundle.val)} val / "
          f"{len(bundle.test)} test images of {bundle.image_shape}), {model.count_params():,} parameters -> {run_dir}")

    with tracker.run(**context.run_identity(cfg)):
        rows = layer_table(inference_model(model))
        size = totals(rows)
        tracker.log_params({**flatten(OmegaConf.to_container(cfg, resolve=True)),
                            "model.total_params": size["params"], "model.trainable_params": size["trainable_params"],
                            "model.macs": size["macs"], "model.receptive_field": size["receptive_field"]})
        tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        tracker.log_text(model_summary(model), "model_summary.txt")
        tracker.log_text(format_table(rows), "layer_table.txt")
        callbacks = checkpoint_callbacks(checkpoints, monitored_metric(task.monitor, model),
                                         trainer.early_stopping or None, mode=task.monitor_mode)
        fit(model, train_data, val_data, epochs=trainer.epochs, callbacks=[*callbacks, tracker.keras_callback()])
        model.load_weights(checkpoints / "best.keras")  # the model we report and ship is the best one
        model = inference_model(model)  # without auxiliary training heads
        model.save(run_dir / "model.keras")
        metrics = evaluate_and_log(model, task, bundle, tracker, batch_size=trainer.batch_size)
        if export.enabled:
            export_and_verify(model, task, metadata, bundle.test.images[:export.num_images], export, tracker)
        if tracking.register:
            tracker.register_model(model, f"{cfg.task.name}-{cfg.model.name}")
    print_metrics(task, metrics)
    return metrics
