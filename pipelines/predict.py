"""mode=predict: a trained (.keras) or exported (SavedModel) model over a folder of images -> CSV."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from omegaconf import DictConfig
from PIL import Image, UnidentifiedImageError

from pipelines import context
from pipelines.settings import PredictSettings, positive, typed
from visionkit.errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def find_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise UserError(f"predict.input is not a folder: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    return files


def read_image(path: Path, input_shape) -> np.ndarray | None:
    """uint8 HxWxC at the model's size and channel count; None (with a warning) if unreadable."""
    height, width, channels = input_shape
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB").resize((width, height), Image.BILINEAR)
            pixels = np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as error:
        print(f"warning: skipping unreadable image {path}: {error}")
        return None
    return pixels.reshape(height, width, channels)


def is_savedmodel(path: Path) -> bool:
    return (path / "saved_model.pb").is_file()


def read_metadata(path: Path) -> dict:
    """The task, names and input shape stored beside a SavedModel or a checkpoint (no model is loaded)."""
    if is_savedmodel(path):
        return json.loads((path / "assets.extra" / context.METADATA_FILE).read_text())
    return context.resolve_checkpoint_path(path).metadata


def load_serving_fn(path: Path, task):
    """images -> named outputs, from a SavedModel directory or a checkpoint."""
    if is_savedmodel(path):
        import tensorflow as tf

        serve = tf.saved_model.load(str(path)).signatures["serving_default"]
        return lambda images: {k: v.numpy() for k, v in serve(images=tf.constant(images)).items()}
    from visionkit.export.savedmodel import reference_outputs

    model = context.load_checkpoint_model(context.resolve_checkpoint_path(path))
    return lambda images: reference_outputs(model, task.serving_outputs, images)


def averaged_over_views(serve, task, tta: str):
    """`serve` under eval.tta: the model's raw output averaged over each image's views by the same
    predict_tta as the test metrics, then the task's other outputs (class ids, class maps) derived
    from the average, as the exported model derives them from one view."""
    if tta == "none":
        return serve
    from keras import ops

    from visionkit.data.augment.tta import predict_tta

    def serve_averaged(images):
        raw = predict_tta(lambda view: serve(view)[task.raw_serving_output], images, tta)
        return {name: ops.convert_to_numpy(value) for name, value in task.serving_outputs(raw).items()}

    return serve_averaged


def run(cfg: DictConfig) -> Path:
    from pipelines.evaluation import checked_tta
    from visionkit.tasks import get_task

    settings = typed(cfg.predict, PredictSettings, "predict")
    positive(settings.batch_size, "predict.batch_size")
    if not settings.input:
        raise UserError("mode=predict needs predict.input=<folder of images>")
    if not cfg.checkpoint:
        raise UserError("mode=predict needs checkpoint=<a .keras file, a run directory or a SavedModel directory>")
    files = find_images(Path(settings.input).expanduser())
    path = Path(cfg.checkpoint).expanduser()
    metadata = read_metadata(path)
    task = get_task(metadata["task"])
    tta = checked_tta(cfg, task)  # before the model loads
    serve = averaged_over_views(load_serving_fn(path, task), task, tta)
    names = SimpleNamespace(
        **{**metadata, "class_names": metadata.get("class_names", []), "target_names": metadata.get("target_names", [])}
    )
    output = Path(settings.output) if settings.output else context.output_dir() / "predictions.csv"
    rows = []
    for start in range(0, len(files), settings.batch_size):
        batch = [(f, read_image(f, metadata["input_shape"])) for f in files[start : start + settings.batch_size]]
        batch = [(f, image) for f, image in batch if image is not None]
        if batch:
            outputs = serve(np.stack([image for _, image in batch]))
            rows += [{"file": str(f), **row} for (f, _), row in zip(batch, task.prediction_rows(outputs, names))]
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["file"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} predictions written to {output}" + (f" (eval.tta={tta})" if tta != "none" else ""))
    return output
