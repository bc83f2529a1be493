"""task=detection end to end through the real command: per-epoch validation mAP, COCO test metrics,
the pictures, a verified export that decodes and suppresses, and predictions from it."""

import csv
import json

import cv2
import pytest

TINY = (
    "task=detection",
    "model=retinanet",
    "trainer.epochs=1",
    "data.num_images=40",
    "model.width=0.125",
    "model.strides=[8,16]",
    "model.head_depth=1",
    "task.val_map_images=8",
    "export.num_images=4",
    "tracking.system_metrics=false",
)


def test_detection_trains_tracks_exports_and_predicts(pipeline, tmp_path):
    done = pipeline(*TINY)
    assert "export verified" in done.stdout
    assert "test_map=" in done.stdout and "test_map50=" in done.stdout
    # The validation mAP joins the epoch logs from the task's callback; the callbacks before it in the
    # pipeline's list (checkpoints, tracking) do not see it, the progress line after it does.
    assert "val_map50:" in done.stdout

    client, runs = pipeline.mlflow_runs("detection")
    run = runs[0]
    for key in (
        "train_loss",
        "val_loss",
        "val_map50",
        "test_map",
        "test_map50",
        "test_map75",
        "test_mar100",
        "export_max_abs_diff",
    ):
        assert key in run.data.metrics, key
    stored = json.loads((pipeline.run_dir / "test_metrics.json").read_text())
    assert run.data.metrics["test_map50"] == pytest.approx(stored["test_map50"])
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/detections.png", "plots/precision_recall.png"} <= plots

    export = pipeline.run_dir / "export" / "retinanet" / "1"
    metadata = json.loads((export / "assets.extra" / "visionkit.json").read_text())
    assert metadata["task"] == "detection" and metadata["class_names"] == ["circle", "square", "triangle", "star"]
    assert metadata["max_detections"] == 100

    from visionkit.data import load

    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "scene.png"), load("shapes", task="detection", num_images=40).test.images[0])
    out = tmp_path / "predictions.csv"
    pipeline(
        "mode=predict", f"checkpoint={export}", f"predict.input={images}", f"predict.output={out}", "tracking=none"
    )
    row = next(csv.DictReader(out.open()))
    assert len(json.loads(row["detections"])) == int(row["num_detections"])


FASTER_RCNN = (
    "task=detection",
    "model=faster_rcnn",
    "trainer.epochs=1",
    "data.num_images=40",
    "model.width=0.125",
    "model.proposals=16",
    "model.fc_units=16",
    "task.val_map_images=8",
    "export.num_images=4",
    "tracking=none",
)


def test_faster_rcnn_trains_and_exports_with_its_proposal_stage(pipeline):
    done = pipeline(*FASTER_RCNN)
    # The SavedModel holds both stages: proposals, their suppression, RoI pooling, per-class decoding.
    assert "export verified" in done.stdout and "test_map50=" in done.stdout
    assert "rpn_loss" in done.stdout and "val_map50:" in done.stdout


# mode=evaluate from a checkpoint is tests/test_pipeline.py's (classification); a faster_rcnn checkpoint loads
# and computes its outputs in tests/test_saved_models_load.py.
@pytest.mark.slow
def test_a_faster_rcnn_checkpoint_evaluates(pipeline):
    pipeline(*FASTER_RCNN, "export.enabled=false")
    evaluated = pipeline(
        "mode=evaluate", "task=detection", "data.num_images=40", f"checkpoint={pipeline.run_dir}", "tracking=none"
    )
    assert "test_map50=" in evaluated.stdout
