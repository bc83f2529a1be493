"""Every registered model, looped over the registry so a new model is tested the day it lands:
it builds for each task it supports, trains one step, and exports a SavedModel that serves the
same outputs as the in-memory model."""

import numpy as np
import pytest
import tensorflow as tf

from visionkit.export import export_savedmodel
from visionkit.export.savedmodel import reference_outputs
from visionkit.models import MODELS
from visionkit.models.common import auxiliary_outputs, inference_model
from visionkit.tasks import build, get_task
from visionkit.training.fit import CompileSettings, compile_model, training_targets

# The smallest square input each architecture runs on, where it is above the default of 32:
# AlexNet's 11x11/4 convolution and three 3x3/2 poolings, ZF-Net's two stride-2 convolutions.
SMALL_SIZES = {"alexnet": 52, "zfnet": 60}
# Tracing a deep model into a SavedModel takes minutes on a 2-core CPU, so the default suite
# exports one model per family and the full suite (`make test-all`) exports them all.
FAST_EXPORT = {"lenet5", "alexnet", "vgg11", "googlenet", "resnet18", "allconv", "alphago_policy"}
DEEP = {"resnet101", "resnet152", "densenet169", "densenet201"}  # even building them takes a while


def small_input(name: str) -> tuple[int, int, int]:
    paper = MODELS.meta(name)["paper_input"]
    if paper[0] <= 32:
        return tuple(paper)  # LeNet-5, All-CNN, the AlphaGo board: already small
    size = SMALL_SIZES.get(name, 32)
    return (size, size, paper[2])


def outputs_for(name: str, task: str) -> int:
    if task == "classification":
        height, width, _ = small_input(name)
        return height * width if name == "alphago_policy" else 3
    return 2


def cases(fast):
    return [
        pytest.param(name, task, marks=[] if fast(name, task) else [pytest.mark.slow], id=f"{name}-{task}")
        for name in MODELS.names()
        for task in MODELS.meta(name)["tasks"]
        if task in ("classification", "regression") and MODELS.meta(name).get("modality") != "series"
    ]  # the series models (a [T, C] input): tests/test_sequences.py


def trained_one_step(name, task):
    shape, outputs = small_input(name), outputs_for(name, task)
    model = build(name, input_shape=shape, num_classes=outputs, task=task, width=0.25)
    task_object = get_task(task)
    compile_model(model, task_object, CompileSettings(epochs=1, learning_rate=1e-3), steps_per_epoch=1)
    model.run_eagerly = True  # compiling a DenseNet training step as a graph takes minutes; one eager step, seconds
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, *shape)).astype("uint8")
    samples = [
        {"image": image, "label": i % outputs, "target": rng.random(outputs).astype("float32")}
        for i, image in enumerate(images)
    ]
    targets = training_targets(task_object.encode_targets, model)(samples)
    history = model.fit(images, targets, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    return inference_model(model), task_object, images


@pytest.mark.parametrize("name, task", cases(lambda name, task: name not in DEEP))
def test_model_trains_one_step(name, task):
    model, task_object, images = trained_one_step(name, task)
    assert not auxiliary_outputs(model)
    predictions = model.predict(images, verbose=0)
    assert predictions.shape == (4, outputs_for(name, task))
    if task == "classification":
        np.testing.assert_allclose(predictions.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name, task", cases(lambda name, task: name in FAST_EXPORT and task == "classification"))
def test_trained_model_exports_a_savedmodel_that_serves_the_same_outputs(name, task, tmp_path):
    model, task_object, images = trained_one_step(name, task)
    directory = export_savedmodel(model, tmp_path / "1", task_object.serving_outputs, {"model": name})
    served = tf.saved_model.load(str(directory)).signatures["serving_default"](images=tf.constant(images))
    expected = reference_outputs(model, task_object.serving_outputs, images)
    assert set(served) == set(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(served[key].numpy(), value, atol=1e-4, err_msg=f"{name} {key}")
