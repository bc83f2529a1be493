"""mode=export: a checkpoint as a verified TF SavedModel under <run dir>/export/<model>/<version>/."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from pipelines import context
from pipelines.exporting import export_and_verify, export_settings


def run(cfg: DictConfig) -> Path:
    settings = export_settings(cfg)
    checkpoint = context.resolve_checkpoint(cfg)
    context.check_checkpoint_matches(cfg, checkpoint)
    task = context.load_task(cfg)
    bundle = context.load_data(cfg, task)
    model = context.load_checkpoint_model(checkpoint)
    tracker, _ = context.make_tracker(cfg)
    with tracker.run(**context.run_identity(cfg)):
        return export_and_verify(
            model, task, checkpoint.metadata, bundle.test.images[: settings.num_images], settings, tracker
        )
