"""mode=explain and the end of mode=train through the real command, with tiny data and one epoch."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
from PIL import Image

TINY = ("trainer.epochs=1", "data.limit=48", "export.enabled=false")


@pytest.mark.slow
def test_train_logs_pictures_and_explain_mode_writes_them(pipeline, tmp_path):
    pipeline(*TINY)
    run_dir = pipeline.run_dir
    client, runs = pipeline.mlflow_runs("classification")
    logged = {a.path for a in client.list_artifacts(runs[0].info.run_id, "explain")}
    assert logged == {"explain/filters.png", "explain/gradcam.png"}
    filters = np.asarray(Image.open(run_dir / "explain" / "filters.png"))
    assert filters.shape == (2 * 21 - 1, 3 * 21 - 1, 3)  # lenet5's six 5x5 filters drawn 4x, 3 a row, 1 pixel apart

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(images / f"digit{i}.png"), rng.integers(0, 256, (40, 28), dtype=np.uint8))
    (images / "broken.png").write_bytes(b"not an image")
    done = pipeline(
        "mode=explain",
        f"checkpoint={run_dir}",
        "explain.method=gradcam",
        "explain.layer=c3_conv",
        f"predict.input={images}",
    )
    assert "skipping unreadable image" in done.stdout
    assert re.search(r"explain_randomisation_spearman=-?\d\.\d{4}", done.stdout)
    gradcam = np.asarray(Image.open(pipeline.run_dir / "explain" / "gradcam.png"))
    assert gradcam.shape == (3 * 130 - 2, 2 * 130 - 2, 3)  # three rows of image | overlay, 32x32 drawn 4x, 2 apart

    for method in ("deconvnet", "top_patches"):
        done = pipeline("mode=explain", f"checkpoint={run_dir}", f"explain.method={method}", "data.limit=48")
        assert (pipeline.run_dir / "explain" / f"{method}.png").is_file()
    _, runs = pipeline.mlflow_runs("classification")
    explained = [run for run in runs if run.data.tags["mode"] == "explain"]
    assert {run.data.params["explain.method"] for run in explained} == {"gradcam", "deconvnet", "top_patches"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["explain.method=gradcamm"],
            "error: explain.method must be one of filters, activations, top_patches, deconvnet, saliency, "
            "guided_backprop, gradcam, guided_gradcam, occlusion, received 'gradcamm'",
        ),
        pytest.param(
            ["explain.num_images=0"], "error: explain.num_images must be at least 1, received 0", marks=pytest.mark.slow
        ),
        pytest.param(
            ["explain.method=filters"],
            "error: mode=explain needs checkpoint=<a .keras file or a run directory>",
            marks=pytest.mark.slow,
        ),
    ],
)  # each case starts a process that imports TensorFlow: one in the fast tier
def test_errors(pipeline, overrides, message):
    done = pipeline("mode=explain", "tracking=none", *overrides, check=False)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1] == message


def test_a_detection_checkpoint_gets_the_layer_methods_only(tmp_path):
    from omegaconf import OmegaConf

    from pipelines import explain
    from pipelines.context import METADATA_FILE, PROJECT_ROOT
    from visionkit.errors import UserError

    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "best.keras").write_bytes(b"")
    (checkpoints / METADATA_FILE).write_text('{"task": "detection", "data": "shapes"}')
    section = OmegaConf.load(PROJECT_ROOT / "conf" / "config.yaml").explain
    cfg = OmegaConf.create({"explain": section, "checkpoint": str(tmp_path / "run"), "mode": "explain"})
    message = (
        "explain.method=gradcam explains classification, regression, segmentation models; "
        "a detection checkpoint has filters, activations, top_patches"
    )
    with pytest.raises(UserError, match=message):
        explain.run(cfg)
