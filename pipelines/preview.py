"""mode=preview: what the model will see — the first augmented training samples, with the task's
targets drawn (class label, mask or boxes), as one grid PNG in the run directory and in MLflow."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from pipelines import context
from pipelines.settings import TrainerSettings, positive, typed
from pipelines.trainer import training_input
from visionkit.analysis.drawing import draw_sample, image_figure, image_grid
from visionkit.data.loader import BatchLoader
from visionkit.errors import UserError
from visionkit.tracking import flatten


@dataclass
class PreviewSettings:
    num_images: int
    output: str | None = None


def first_samples(loader: BatchLoader, count: int) -> list[dict[str, Any]]:
    """The first `count` samples the loader yields this epoch, augmented as training gets them."""
    samples: list[dict[str, Any]] = []
    for index in range(len(loader)):
        if len(samples) >= count:
            break
        samples += loader.samples(index)
    return samples[:count]


def task_view(sample: dict[str, Any], target_key: str) -> dict[str, Any]:
    """The image and the target the task trains on (boxes with their classes)."""
    keys = {"image", target_key, *(("classes",) if target_key == "boxes" else ())}
    return {key: value for key, value in sample.items() if key in keys}


def run(cfg: DictConfig) -> Path:
    settings = typed(cfg.preview, PreviewSettings, "preview")
    positive(settings.num_images, "preview.num_images")
    trainer = typed(cfg.trainer, TrainerSettings, "trainer")
    task = context.load_task(cfg)
    bundle = context.load_data(cfg, task)
    if bundle.train.input_key == "series":
        raise UserError(f"mode=preview draws images; data={cfg.data.name} holds series")
    augment = context.options(cfg.augment)
    train, augmenter = training_input(cfg, trainer, bundle)
    # The training loader's own order and seeds: the preview shows the samples epoch 0 starts with.
    loader = BatchLoader(
        train,
        task.encode_targets,
        batch_size=trainer.batch_size,
        augmenter=augmenter,
        shuffle=True,
        seed=trainer.seed,
    )
    samples = first_samples(loader, settings.num_images)
    tiles = [draw_sample(task_view(sample, task.target_key), bundle.class_names) for sample in samples]
    figure = image_figure(image_grid(tiles))
    output = Path(settings.output).expanduser() if settings.output else context.output_dir() / "preview.png"
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output)
    tracker, _ = context.make_tracker(cfg)
    with tracker.run(**context.run_identity(cfg)):
        tracker.log_params(
            {**flatten({"augment": augment}), "trainer.seed": trainer.seed, "preview.num_images": len(samples)}
        )
        tracker.log_figure(figure, "preview.png")
    print(
        f"preview: {len(samples)} augmented training samples of {cfg.data.name} "
        f"(augment: {len(augment.get('transforms') or [])} transforms) -> {output}"
    )
    return output
