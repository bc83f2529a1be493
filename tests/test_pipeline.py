"""End to end through the real command, with tiny data, one epoch and a temporary MLflow store."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import keras
import pytest

from pipelines.modes import modes_help

ROOT = Path(__file__).resolve().parents[1]
TINY = ("trainer.epochs=1", "data.limit=48", "export.num_images=4", "tracking.system_metrics_interval=1")


def test_classification_trains_tracks_exports_and_serves(pipeline, tmp_path):
    done = pipeline(*TINY)
    run_dir = pipeline.run_dir
    assert re.search(r"export verified: .*export/lenet5/1 \(max abs difference", done.stdout)
    assert (run_dir / "model.keras").is_file() and (run_dir / "checkpoints" / "best.keras").is_file()
    assert (run_dir / "export" / "lenet5" / "1" / "saved_model.pb").is_file()

    client, runs = pipeline.mlflow_runs("classification")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name.startswith("lenet5-digits-")
    assert {"task": "classification", "model": "lenet5", "data": "digits"}.items() <= run.data.tags.items()
    assert "trainer.epochs=1" in run.data.tags["overrides"]
    assert run.data.params["trainer.epochs"] == "1" and run.data.params["model.total_params"] == "61706"
    assert run.data.params["model.macs"] == "416520"  # LeNet-5 on 32x32x1, worked out in test_layer_table.py
    for key in (
        "test_accuracy",
        "test_top5_accuracy",
        "test_macro_f1",
        "train_loss",
        "val_accuracy",
        "export_max_abs_diff",
    ):
        assert key in run.data.metrics, key
    stored = json.loads((run_dir / "test_metrics.json").read_text())
    assert run.data.metrics["test_accuracy"] == pytest.approx(stored["test_accuracy"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "model_summary.txt", "layer_table.txt", "plots", "export"} <= artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "plots")] == ["plots/confusion_matrix.png"]
    assert any(k.startswith("system/cpu") for k in run.data.metrics), "system metrics are logged"

    # A folder of images for mode=predict: nested, one broken, one whose name is not UTF-8.
    from visionkit.data import load

    images = tmp_path / "images"
    (images / "nested").mkdir(parents=True)
    test = load("digits", task="classification").test
    for i in range(3):
        cv2.imwrite(str(images / "nested" / f"digit{i}.png"), test.images[i])
    (images / "broken.png").write_bytes(b"not an image")
    with open(os.fsencode(images / "nested") + b"/digit3\xe9.png", "wb") as handle:  # Latin-1: not UTF-8
        handle.write(cv2.imencode(".png", test.images[3])[1].tobytes())

    # The modes that read the run, in one process, predict from the checkpoint first (nothing loaded before it).
    # mode=export's SavedModel is checked by serving the checkpoint's predictions; the verification in a fresh
    # process is the training run's (export verified above).
    exported = tmp_path / "exported" / "export" / "lenet5" / "1"
    tracking = (f"tracking.uri=sqlite:///{pipeline.store}", f"tracking.artifact_root={pipeline.artifacts}")

    def command(name: str, *overrides: str) -> list[str]:
        return [f"hydra.run.dir={tmp_path / name}", *tracking, *overrides]

    def predict(checkpoint: Path, name: str) -> list[str]:
        output = f"predict.output={tmp_path / name}.csv"
        return command(
            name, "mode=predict", f"checkpoint={checkpoint}", f"predict.input={images}", output, "tracking=none"
        )

    done = run_in_one_process(
        [
            predict(run_dir, "checkpoint"),
            command("evaluated", "mode=evaluate", f"checkpoint={run_dir}", "data.limit=48"),
            command("exported", "mode=export", f"checkpoint={run_dir}", "export.num_images=4", "data.limit=48")
            + ["export.verify=false"],
            predict(exported, "savedmodel"),
        ]
    )
    assert [call.returncode for call in done] == [0, 0, 0, 0], [call.stderr[-2000:] for call in done]
    assert re.search(r"test_accuracy=\d\.\d{4}", done[1].stdout)
    predictions = {}
    for name, predicted in (("checkpoint", done[0]), ("savedmodel", done[3])):
        assert "skipping unreadable image" in predicted.stdout
        rows = list(csv.DictReader((tmp_path / f"{name}.csv").open(encoding="utf-8")))
        names = [r["file"].rsplit("/", 1)[-1] for r in rows]
        assert names == ["digit0.png", "digit1.png", "digit2.png", "digit3\\udce9.png"]  # the byte, escaped
        assert all(r["class_name"] == r["class_id"] and 0 <= float(r["probability"]) <= 1 for r in rows)
        predictions[name] = rows
    for served, trained in zip(predictions["savedmodel"], predictions["checkpoint"], strict=True):
        assert served["class_id"] == trained["class_id"]
        assert float(served["probability"]) == pytest.approx(float(trained["probability"]), abs=1e-4)


def test_regression_trains_and_reports_r2(pipeline):
    done = pipeline("task=regression", "data.num_images=120", "trainer.epochs=1", "export.num_images=4")
    assert re.search(r"test_mae=\S+\s+test_rmse=\S+\s+test_r2=\S+", done.stdout)
    client, runs = pipeline.mlflow_runs("regression")
    run = runs[0]
    assert {"test_mae", "test_rmse", "test_r2", "test_r2_center_x", "val_r2", "train_loss"} <= set(run.data.metrics)
    assert run.data.tags["data"] == "shapes"
    assert [a.path for a in client.list_artifacts(run.info.run_id, "plots")] == ["plots/predicted_vs_true.png"]
    export_dir = pipeline.run_dir / "export" / "lenet5" / "1"
    signature = json.loads((export_dir / "assets.extra" / "visionkit.json").read_text())
    assert signature["target_names"] == ["center_x", "center_y", "width", "height"]


@pytest.mark.slow  # the auxiliary heads' loss, metrics and removal are unit-tested in test_zoo_googlenet_densenet.py
def test_googlenet_trains_with_auxiliary_heads_and_ships_without_them(pipeline):
    pipeline("model=googlenet", "model.width=0.25", *TINY)
    _, runs = pipeline.mlflow_runs("classification")
    metrics = set(runs[0].data.metrics)
    assert {"train_aux1_loss", "val_aux2_loss", "train_accuracy", "val_accuracy", "test_accuracy"} <= metrics
    import visionkit.layers  # noqa: F401  (LocalResponseNormalization)

    served = keras.saving.load_model(pipeline.run_dir / "model.keras", safe_mode=True, compile=False)
    assert not isinstance(served.output, dict) and served.output_shape == (None, 10)


@pytest.mark.slow  # copy_weights and freeze are unit-tested in test_transfer.py
def test_a_run_starts_from_another_runs_weights_and_freezes_part_of_them(pipeline):
    pipeline("tracking=none", *TINY)
    previous = pipeline.run_dir / "model.keras"
    done = pipeline("tracking=none", *TINY, f"model.weights={previous}", "model.freeze=c3_conv")
    assert f"model.weights: 5 layers from {previous}" in done.stdout
    assert "model.freeze: 6 layers frozen" in done.stdout  # image, normalize, c1_conv, s2_pool, stride2, c3_conv


BAD_INPUTS = [
    (
        ["model=lenet"],
        "error: unknown model option 'lenet' (did you mean 'lenet5'?); available: alexnet, allconv, ",
    ),
    (
        ["task=detections"],
        "error: unknown task option 'detections' (did you mean 'detection'?); available: "
        "classification, detection, regression, segmentation",
    ),
    (["data=digitz"], "error: unknown data option 'digitz' (did you mean 'digits'?)"),
    (
        ["tracking.enabled=true", "tracking.uri=file:///tmp/visionkit_file_store"],
        "error: tracking.uri=file:///tmp/visionkit_file_store: The filesystem tracking backend",
    ),
    (
        ["mode=trian"],
        "error: unknown mode 'trian' (did you mean 'train'?); available: benchmark, compare, evaluate, "
        "explain, export, predict, preview, summary, train, verify",
    ),
    (["-m", "model=lenet5,resnet188"], "error: unknown model option 'resnet188' (did you mean 'resnet18'?)"),
    (["trainer.epochs=abc"], "error: trainer.epochs: Value 'abc' of type 'str' could not be converted to Integer"),
    (["trainer.epochs=0"], "error: trainer.epochs must be at least 1, received 0"),
    (["export.num_images=0"], "error: export.num_images must be at least 1, received 0"),
    (["model.width=wide"], "error: model.width: expected float, received 'wide'"),
    (
        ["task=regression", "data=digits"],
        "error: dataset 'digits' does not support task 'regression'; it supports: classification",
    ),
    (
        ["task=detection", "model=lenet5"],
        "error: model 'lenet5' does not support task 'detection'; it supports: classification, regression. "
        "Models for detection: faster_rcnn, retinanet",
    ),
    (
        ["task=segmentation", "model=lenet5"],
        "error: model 'lenet5' does not support task 'segmentation'; it supports: classification, regression. "
        "Models for segmentation: dilated, fcn16s, fcn32s, fcn8s, segnet, unet",
    ),
    (["mode=evaluate", "checkpoint=/no/such/run"], "error: checkpoint not found: /no/such/run"),
    (["mode=evaluate"], "error: mode=evaluate needs checkpoint=<a .keras file or a run directory>"),
    (
        ["mode=predict", "checkpoint=/tmp", "predict.input=/no/such/folder"],
        "error: predict.input does not exist: /no/such/folder",
    ),
    (["model.weights=/no/such.keras"], "error: model.weights: no such file: /no/such.keras"),
    (["model.weights=imagenet"], "error: model.weights=imagenet is available for densenet121, densenet169, "),
    (["model.freeze=c3_cnv"], "error: unknown layer of lenet5 for model.freeze 'c3_cnv' (did you mean 'c3_conv'?)"),
    (
        ["trainer.optimizer=adamm"],
        "error: trainer: trainer.optimizer must be one of adam, adamw, sgd, received 'adamm'",
    ),
    (
        ["augment.transforms=[{name: Blurr}]"],
        "error: augment.transforms[0]: unknown Albumentations transform 'Blurr' (did you mean 'Blur'?)",
    ),
]
# Commands that stop before a run starts (bad inputs, refusals, --help) as calls of the command's entry point in
# turn, in one Python process: each call composes its own config, so one process does what a process per command
# did, without starting Python, Hydra and TensorFlow each time.
ONE_PROCESS = """
import contextlib, io, json, sys, traceback
from pipelines.run import main

results = []
for arguments in json.loads(sys.argv[1]):
    sys.argv = ["pipelines.run", *arguments]
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            main()
            status = 0
        except SystemExit as stop:
            status = 0 if stop.code is None else stop.code
        except Exception:
            traceback.print_exc()
            status = 1
    results.append([status, stdout.getvalue(), stderr.getvalue()])
print(json.dumps(results))
"""


def run_in_one_process(arguments: list[list[str]]) -> list[subprocess.CompletedProcess]:
    """Each command line (the arguments after `python -m pipelines.run`) called in turn by ONE_PROCESS."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("HYDRA_FULL_ERROR", None)
    done = subprocess.run(
        [sys.executable, "-c", ONE_PROCESS, json.dumps(arguments)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.splitlines()[-1])
    return [subprocess.CompletedProcess(argument, *result) for argument, result in zip(arguments, results, strict=True)]


@pytest.fixture(scope="module")
def commands(tmp_path_factory) -> dict[tuple[str, ...], subprocess.CompletedProcess]:
    """--help and each bad input's command (with tracking=none), called in one process; their results by command."""
    tmp = tmp_path_factory.mktemp("commands")
    called = [("--help",)] + [("tracking=none", *overrides) for overrides, _ in BAD_INPUTS]
    results = run_in_one_process([[f"hydra.run.dir={tmp / f'run{i}'}", *command] for i, command in enumerate(called)])
    return dict(zip(called, results, strict=True))


@pytest.mark.parametrize("overrides, message", BAD_INPUTS)
def test_bad_input_gets_one_line_and_a_nonzero_exit(commands, overrides, message):
    done = commands[("tracking=none", *overrides)]
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and lines[0].startswith(message), done.stderr[-2000:]
    assert "Traceback" not in done.stderr


def test_help_lists_the_config_groups(commands):
    done = commands[("--help",)]
    for group in (
        "task: classification, detection, regression, segmentation",
        "data: coco, csv, digit_scenes, digits, folder, masks, shapes, tfds, ucr, voc, yolo",
        "augment:",
        "trainer: default",
        "tracking: mlflow, none",
    ):
        assert group in done.stdout
    models = next(line for line in done.stdout.splitlines() if line.strip().startswith("model:"))
    assert all(name in models for name in ("lenet5", "alexnet", "vgg16", "googlenet", "resnet50", "densenet121"))
    assert modes_help() in done.stdout  # the modes, from pipelines/modes.py
