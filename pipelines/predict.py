"""mode=predict: a trained (.keras) or exported (SavedModel) model over a folder of images -> CSV."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np
from omegaconf import DictConfig
from PIL import Image, UnidentifiedImageError

from pipelines import context
from pipelines.settings import PredictSettings, positive, typed
from visionkit.data.verify import printable
from visionkit.errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
SERIES_SUFFIXES = {".ts", ".csv", ".npz"}


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
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:  # the bomb: not an OSError
        print(f"warning: skipping unreadable image {printable(path)}: {error}")
        return None
    return pixels.reshape(height, width, channels)


class SeriesRow(NamedTuple):
    """One series of a .ts, CSV or NPZ file, named file#row in the predictions."""

    file: Path
    row: int
    values: np.ndarray

    def __str__(self) -> str:
        return f"{self.file}#{self.row}"


def find_inputs(source: Path, input_shape) -> list:
    """The images under a folder, or for a sequence model ([T, C] input) every series of a .ts, CSV or NPZ file,
    or of such files under a folder."""
    if len(input_shape) != 2:
        return find_images(source)
    from visionkit.data.series import read_predict_file

    files = (
        [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.suffix.lower() in SERIES_SUFFIXES)
    )
    if not files:
        raise UserError(f"predict.input: no series files ({', '.join(sorted(SERIES_SUFFIXES))}) at {source}")
    return [SeriesRow(f, i, s) for f in files for i, s in enumerate(read_predict_file(f, *input_shape))]


def read_input(item, input_shape) -> np.ndarray | None:
    return item.values if isinstance(item, SeriesRow) else read_image(item, input_shape)


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
        (name,) = serve.structured_input_signature[1]  # "images", or "series" for a sequence model
        return lambda images: {k: v.numpy() for k, v in serve(**{name: tf.constant(images)}).items()}
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
    source = Path(settings.input).expanduser()
    if not source.exists():  # before the checkpoint is read: the cheaper mistake first
        raise UserError(f"predict.input does not exist: {source}")
    path = Path(cfg.checkpoint).expanduser()
    metadata = read_metadata(path)
    files = find_inputs(source, metadata["input_shape"])
    task = get_task(metadata["task"])
    tta = checked_tta(cfg, task)  # before the model loads
    serve = averaged_over_views(load_serving_fn(path, task), task, tta)
    names = SimpleNamespace(
        **{**metadata, "class_names": metadata.get("class_names", []), "target_names": metadata.get("target_names", [])}
    )
    output = Path(settings.output) if settings.output else context.output_dir() / "predictions.csv"
    rows = []
    for start in range(0, len(files), settings.batch_size):
        batch = [(f, read_input(f, metadata["input_shape"])) for f in files[start : start + settings.batch_size]]
        batch = [(f, image) for f, image in batch if image is not None]
        if batch:
            outputs = serve(np.stack([image for _, image in batch]))
            # printable: a file name that is not UTF-8 reaches Python as surrogate escapes, which UTF-8 cannot write
            rows += [{"file": printable(f), **row} for (f, _), row in zip(batch, task.prediction_rows(outputs, names))]
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["file"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} predictions written to {output}" + (f" (eval.tta={tta})" if tta != "none" else ""))
    return output
