"""The export step of mode=train and mode=export: a SavedModel under <run dir>/export/<model>/<version>/,
verified in a fresh process."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from pipelines import context
from pipelines.settings import ExportSettings, positive, typed
from visionkit.export import export_savedmodel, next_version_dir, verify_savedmodel


def export_and_verify(model, task, metadata: dict, images, settings: ExportSettings, tracker) -> Path:
    """Export, then reload in a fresh process and compare outputs on `images`; the run fails on a mismatch."""
    directory = next_version_dir(context.output_dir() / "export", metadata["model"])
    export_savedmodel(model, directory, task.serving_outputs, metadata)
    if settings.verify:
        worst = verify_savedmodel(directory, model, task.serving_outputs, images, atol=settings.atol)
        print(f"export verified: {directory} (max abs difference {worst:.2e} on {len(images)} images)")
        tracker.log_metrics({"export_max_abs_diff": worst})
    tracker.log_artifacts(directory, f"export/{metadata['model']}/{directory.name}")
    return directory


def export_settings(cfg: DictConfig) -> ExportSettings:
    """The export section, typed and checked up front (before any training)."""
    settings = typed(cfg.export, ExportSettings, "export")
    positive(settings.num_images, "export.num_images")
    return settings
