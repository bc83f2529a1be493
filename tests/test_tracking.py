"""MLflow as its users expect: model-training experiments, the data as dataset inputs, GPU metrics asked for,
sweep runs told apart by name, and checkpoints that carry code refused in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from pipelines import context
from pipelines.callbacks import PrepareTrackingStore
from pipelines.run import CONF_DIR
from visionkit.data import load
from visionkit.data.core import Split
from visionkit.errors import UserError
from visionkit.tracking import MlflowTracker
from visionkit.tracking.datasets import dataset_inputs, dataset_source, split_digest
from visionkit.tracking.mlflow_tracker import EXPERIMENT_KIND_TAG, MODEL_TRAINING

ROOT = Path(__file__).resolve().parents[1]
DIGITS = {"name": "digits", "seed": 0, "limit": 48}


def composed(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def digits(limit: int = 48):
    return load("digits", task="classification").limit(limit)


def test_experiments_are_created_as_model_training_experiments(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    sweep = OmegaConf.create(
        {
            "mode": "train",
            "task": {"name": "classification"},
            "tracking": {"enabled": True, "uri": uri, "artifact_root": str(tmp_path / "art")},
            "hydra": {"overrides": {"task": ["task=classification,regression"]}},
        }
    )
    PrepareTrackingStore().on_multirun_start(sweep)  # a sweep's experiments, made before its jobs
    assert client.get_experiment_by_name("regression").tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING

    tracker = MlflowTracker(uri, str(tmp_path / "art"), system_metrics=False)
    assert client.get_experiment(tracker.experiment_id("detection")).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING
    older = client.create_experiment("segmentation")  # made before experiments had a kind
    assert tracker.experiment_id("segmentation") == older
    assert client.get_experiment(older).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING


def test_the_digest_follows_the_pixels_labels_order_and_class_names():
    bundle = digits()
    train = bundle.train
    digest = split_digest(train, bundle.class_names)
    assert digest == split_digest(digits().train, bundle.class_names)  # the same data: the same digest
    relabelled = Split(train.images, {"label": np.roll(train.targets["label"], 1)})
    touched = train.images.copy()
    touched[0, 0, 0, 0] ^= 1
    changed = [
        split_digest(digits(40).train, bundle.class_names),
        split_digest(relabelled, bundle.class_names),
        split_digest(Split(touched, train.targets), bundle.class_names),
        split_digest(train.take(range(len(train))[::-1]), bundle.class_names),
        split_digest(train, [name.upper() + "!" for name in bundle.class_names]),
    ]
    assert len({digest, *changed}) == 6
    boxes = Split(train.images[:2], {"boxes": [np.zeros((1, 4)), np.ones((2, 4))]})
    assert split_digest(boxes, []) != split_digest(Split(boxes.images, {"boxes": [np.zeros((1, 4))] * 2}), [])


def test_each_split_is_a_dataset_input_with_its_context_size_and_source(tmp_path):
    bundle = replace(digits(), val=digits(20).val)
    datasets, contexts = dataset_inputs(bundle, DIGITS)
    assert contexts == ["train", "validation", "test"]
    assert [d.name for d in datasets] == ["digits"] * 3
    assert [d.profile["num_rows"] for d in datasets] == [48, 20, 48]
    assert datasets[0].profile == {"num_rows": 48, "image_shape": [32, 32, 1], "targets": ["label"], "num_classes": 10}
    assert datasets[1].digest == split_digest(bundle.val, bundle.class_names)
    assert json.loads(datasets[0].to_dict()["source"]) == {"tags": {"name": "digits", "seed": "0", "limit": "48"}}

    name, source = dataset_source({"name": "folder", "path": str(tmp_path / "flowers")})
    assert (name, source._get_source_type()) == ("folder:flowers", "local")
    assert str(tmp_path / "flowers") in source.to_json()


def test_a_run_logs_its_splits_as_datasets_in_a_model_training_experiment(pipeline):
    pipeline("trainer.epochs=1", "data.limit=40", "export.enabled=false", "tracking.system_metrics=false")
    client, (run,) = pipeline.mlflow_runs("classification")
    assert client.get_experiment(run.info.experiment_id).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING
    inputs = {item.tags[0].value: item.dataset for item in run.inputs.dataset_inputs}
    assert sorted(inputs) == ["test", "train", "validation"]
    trained = digits(40)
    for context_name, split in zip(("train", "validation", "test"), (trained.train, trained.val, trained.test)):
        dataset = inputs[context_name]
        assert (dataset.name, dataset.source_type) == ("digits", "code")
        assert dataset.digest == split_digest(split, trained.class_names)
        assert json.loads(dataset.profile)["num_rows"] == len(split) == 40


def test_gpu_metrics_can_be_recorded_and_runs_ask_for_system_metrics(tmp_path, monkeypatch):
    import pynvml  # nvidia-ml-py: what MLflow's GPU monitor reads (no GPU here, so no GPU metric is asserted)

    assert callable(pynvml.nvmlInit)
    asked = []
    start_run = mlflow.start_run
    monkeypatch.setattr(mlflow, "start_run", lambda **kwargs: asked.append(kwargs) or start_run(**kwargs))
    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "art"), system_metrics=True)
    with tracker.run(experiment="classification", run_name="r", tags={}):
        pass
    assert asked[0]["log_system_metrics"] is True


def test_sweep_runs_are_named_by_their_overrides_and_single_runs_by_time():
    cfg = composed("trainer.seed=1", "model=lenet5", "data.limit=32", "tracking.uri=sqlite:///x.db")
    hydra = cfg.hydra
    assert context.run_name(cfg, hydra).startswith("lenet5-digits-20")  # a single run: model, data, time
    hydra.mode = "MULTIRUN"
    assert context.run_name(cfg, hydra) == "lenet5-digits-data.limit=32,trainer.seed=1"
    hydra.overrides.task = ["model=lenet5", "hydra/launcher=joblib", "tracking.uri=sqlite:///x.db"]
    assert context.run_name(cfg, hydra) == "lenet5-digits"


def test_registering_needs_the_export():
    with pytest.raises(
        UserError,
        match=r"^tracking.register=true registers the exported SavedModel; "
        r"it needs export.enabled=true$",
    ):
        context.make_tracker(composed("tracking.register=true", "export.enabled=false"))


def test_a_checkpoint_carrying_python_code_is_refused_in_one_line(tmp_path):
    inputs = keras.Input((8, 8, 1))
    doubled = keras.layers.Lambda(lambda images: images * 2)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(doubled)))
    checkpoint = tmp_path / "run" / "model.keras"
    checkpoint.parent.mkdir()
    model.save(checkpoint)
    context.write_metadata(
        checkpoint.parent,
        {
            "task": "classification",
            "model": "lenet5",
            "data": "digits",
            "input_shape": [8, 8, 1],
            "class_names": ["a", "b"],
            "target_names": [],
        },
    )
    message = (
        f"error: checkpoint {checkpoint} was refused: it holds Python code (such as a Lambda layer's "
        f"function) that Keras's safe_mode will not run"
    )
    with pytest.raises(UserError, match=r"refused: it holds Python code"):
        context.load_checkpoint_model(context.resolve_checkpoint_path(checkpoint))  # evaluate and export load so

    images = tmp_path / "images"
    images.mkdir()
    keras.utils.save_img(images / "one.png", np.zeros((8, 8, 1), dtype=np.uint8))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.run",
            "mode=predict",
            f"checkpoint={checkpoint}",
            f"predict.input={images}",
            f"hydra.run.dir={tmp_path / 'predict'}",
            "tracking=none",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert [line for line in done.stderr.splitlines() if line.startswith("error: ")] == [message]
    assert "Traceback" not in done.stderr


@pytest.mark.gpu
def test_a_gpu_run_records_its_gpu_in_mlflow(pipeline):
    """On a GPU machine MLflow's system metrics, read through nvidia-ml-py, include the GPU's utilisation and memory."""
    pipeline("trainer.epochs=3", "export.enabled=false", "tracking.system_metrics_interval=1")
    client, runs = pipeline.mlflow_runs("classification")
    names = set(client.get_run(runs[0].info.run_id).data.metrics)
    assert {"system/gpu_0_utilization_percentage", "system/gpu_0_memory_usage_megabytes"} <= names, sorted(names)
