"""task=segmentation end to end through the real command: the CPU profile, per-epoch and test
metrics, the pictures, and a verified export serving the class map and the probabilities."""

import csv
import json

import cv2
import pytest

TINY = (
    "task=segmentation",
    "model=unet",
    "trainer.epochs=1",
    "data.num_images=60",
    "data.image_size=32",
    "export.num_images=4",
    "tracking.system_metrics=false",
)


def test_segmentation_trains_tracks_exports_and_predicts(pipeline, tmp_path):
    done = pipeline(*TINY)
    assert "profile cpu (no GPU found): model.width=0.125" in done.stdout
    assert "export verified" in done.stdout

    client, runs = pipeline.mlflow_runs("segmentation")
    run = runs[0]
    assert run.data.params["profile"] == "cpu" and run.data.params["model.width"] == "0.125"
    assert run.data.tags["profile"] == "cpu"
    for key in (
        "val_mean_iou",
        "val_dice",
        "val_pixel_accuracy",
        "test_mean_iou",
        "test_dice",
        "test_pixel_accuracy",
        "test_iou_background",
        "export_max_abs_diff",
    ):
        assert key in run.data.metrics, key
    stored = json.loads((pipeline.run_dir / "test_metrics.json").read_text())
    assert run.data.metrics["test_mean_iou"] == pytest.approx(stored["test_mean_iou"])
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/gallery.png", "plots/iou_per_class.png", "plots/gallery_epoch_001.png"} <= plots

    export = pipeline.run_dir / "export" / "unet" / "1"
    metadata = json.loads((export / "assets.extra" / "visionkit.json").read_text())
    assert metadata["mask_names"] == ["background", "circle", "square", "triangle", "star"]

    from visionkit.data import load

    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(
        str(images / "scene.png"), load("shapes", task="segmentation", num_images=40, image_size=32).test.images[0]
    )
    out = tmp_path / "predictions.csv"
    pipeline(
        "mode=predict", f"checkpoint={export}", f"predict.input={images}", f"predict.output={out}", "tracking=none"
    )
    row = next(csv.DictReader(out.open()))
    assert sum(float(row[f"share_{name}"]) for name in metadata["mask_names"]) == pytest.approx(1.0)
