"""What mode=explain and the end of mode=train share: the images explained and the pictures saved and logged."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from visionkit.errors import UserError

TRAIN_IMAGES = 4  # test images whose Grad-CAM overlays mode=train logs
DENSE_TASKS = ("classification", "regression", "segmentation")  # a score per image for Grad-CAM to explain


def folder_images(folder: Path, input_shape, count: int) -> np.ndarray:
    """The first `count` readable images under `folder`, at the model's size and channel count (raw pixels)."""
    from visionkit.data.files import list_images
    from visionkit.data.images import DecodeError, decode_image, resize_image

    if not folder.is_dir():
        raise UserError(f"predict.input is not a folder: {folder}")
    height, width, channels = input_shape
    images = []
    for path in list_images(folder):
        try:
            image = decode_image(path.read_bytes(), channels)[0]
        except (DecodeError, OSError) as error:
            print(f"warning: skipping unreadable image {path}: {error}")
            continue
        images.append(resize_image(image, (height, width)))
        if len(images) == count:
            break
    if not images:
        raise UserError(f"no readable image under predict.input={folder}")
    return np.stack(images)


def split_images(split, count: int) -> np.ndarray:
    return np.stack([split.sample(i)["image"] for i in range(min(count, len(split)))])


def save_and_log(pictures: dict[str, np.ndarray], folder: Path, tracker) -> list[Path]:
    """Each picture as <folder>/<name>.png, and the folder as the run's `explain` artifacts."""
    from visionkit.explain.pictures import save_png

    paths = [save_png(picture, folder / f"{name}.png") for name, picture in pictures.items()]
    tracker.log_artifacts(folder, "explain")
    return paths


def log_training_pictures(model, task_name: str, bundle, tracker, run_dir: Path) -> None:
    """The end of mode=train: the first layer's filters and Grad-CAM overlays of a few test images."""
    from visionkit.explain.graph import conv_paths
    from visionkit.explain.render import render

    if not conv_paths(model) or task_name not in DENSE_TASKS or not len(bundle.test):
        return
    images = split_images(bundle.test, TRAIN_IMAGES)
    pictures = {method: render(model, images, method) for method in ("filters", "gradcam")}
    save_and_log(pictures, run_dir / "explain", tracker)
