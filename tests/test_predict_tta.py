"""mode=predict honours eval.tta as the test metrics do: the served probabilities of a checkpoint and of
its SavedModel are the average over each image and its mirror, checked against numpy; tasks whose
outputs cannot be averaged are refused before the model loads."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image
from test_tta import images, numpy_softmax_regression, softmax_regression

from pipelines.predict import run
from visionkit.errors import UserError
from visionkit.tasks import TASKS, get_task

CLASS_NAMES = ["a", "b", "c"]


def checkpoint(folder: Path, task: str = "classification") -> Path:
    """A position-dependent softmax regression saved as a checkpoint, with the metadata mode=train writes."""
    folder.mkdir(parents=True)
    softmax_regression().save(folder / "best.keras")
    metadata = {
        "task": task,
        "model": "softmax_regression",
        "data": "digits",
        "input_shape": [16, 16, 1],
        "class_names": CLASS_NAMES,
        "target_names": [],
    }
    (folder / "visionkit.json").write_text(json.dumps(metadata))
    return folder / "best.keras"


def image_folder(folder: Path, pixels: np.ndarray) -> Path:
    for i, image in enumerate(pixels):
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[..., 0]).save(folder / f"{i:02d}.png")  # grey PNG: read back exactly
    return folder


def predict(model_path: Path, folder: Path, tta: str) -> list[dict]:
    output = folder.parent / f"predictions_{tta}.csv"
    cfg = OmegaConf.create(
        {
            "checkpoint": str(model_path),
            "eval": {"tta": tta},
            "predict": {"input": str(folder), "output": str(output), "batch_size": 4},
        }
    )
    run(cfg)
    return list(csv.DictReader(output.open()))


def served_probability(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([int(r["class_id"]) for r in rows]), np.array([float(r["probability"]) for r in rows])


def test_predict_averages_each_image_and_its_mirror_for_a_checkpoint_and_its_export(tmp_path):
    from visionkit.export import export_savedmodel

    pixels = images(7)  # two batches of 4
    folder = image_folder(tmp_path / "images", pixels)
    model_path = checkpoint(tmp_path / "run" / "checkpoints")
    model = softmax_regression()  # the same seeded weights as the checkpoint's
    plain = numpy_softmax_regression(model, pixels)
    averaged = (plain + numpy_softmax_regression(model, pixels[:, :, ::-1])) / 2
    assert not np.allclose(averaged.max(axis=1), plain.max(axis=1), atol=1e-3)  # the mirror changes the outputs

    metadata = json.loads((model_path.parent / "visionkit.json").read_text())
    export = export_savedmodel(model, tmp_path / "export" / "1", get_task("classification").serving_outputs, metadata)
    for served in (model_path, export):
        class_ids, probabilities = served_probability(predict(served, folder, "flip"))
        np.testing.assert_array_equal(class_ids, averaged.argmax(axis=1))
        np.testing.assert_allclose(probabilities, averaged.max(axis=1), atol=1e-5)
    class_ids, probabilities = served_probability(predict(model_path, folder, "none"))
    np.testing.assert_array_equal(class_ids, plain.argmax(axis=1))
    np.testing.assert_allclose(probabilities, plain.max(axis=1), atol=1e-5)


def test_predict_refuses_tta_before_loading_the_model(tmp_path):
    folder = image_folder(tmp_path / "images", images(1))
    unloadable = tmp_path / "run" / "best.keras"
    unloadable.parent.mkdir()
    unloadable.write_text("not a model")  # a refusal after loading would fail on this file instead
    (unloadable.parent / "visionkit.json").write_text(json.dumps({"task": "detection", "input_shape": [16, 16, 1]}))
    with pytest.raises(UserError, match=r"^eval.tta=flip is not available for task detection$"):
        predict(unloadable, folder, "flip")
    with pytest.raises(UserError, match=r"^eval.tta: unknown test-time augmentation 'fip' \(did you mean 'flip'\?\)"):
        predict(unloadable, folder, "fip")


@pytest.mark.parametrize("name", [name for name in TASKS.names() if TASKS.get(name).averages_views])
def test_each_task_that_averages_views_names_its_raw_serving_output(name):
    task = get_task(name)
    raw = np.random.default_rng(0).random((2, 4, 4, 3)).astype(np.float32)  # [B, H, W, K]: dense or not
    np.testing.assert_array_equal(np.asarray(task.serving_outputs(raw)[task.raw_serving_output]), raw)
