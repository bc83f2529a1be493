"""Every custom layer, initialiser and loss is registered by `import visionkit.layers, visionkit.tasks`:
a `model.keras` of every registered model, for every task it supports, compiled as training compiles
it, loads with safe_mode=True in a fresh process that imports only those two, and computes the same."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from visionkit.models import MODELS
from visionkit.tasks import build, get_task
from visionkit.training.fit import CompileSettings, compile_model

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 3
# The smallest inputs and widths the builders allow, so that the whole zoo saves in seconds.
SMALL_INPUTS = {"lenet5": (16, 16, 1), "alexnet": (52, 52, 3), "zfnet": (60, 60, 3), "alphago_policy": (3, 3, 4)}
SMALL_INPUTS |= {
    name: (15, 16) if name == "tdnn" else (16, 2)
    for name in MODELS.names()
    if MODELS.meta(name).get("modality") == "series"
}
SMALL_OPTIONS = {
    "tdnn": {},
    "wavenet": {"filters": 4, "skip_filters": 4, "layers_per_block": 2, "blocks": 1},
    "alphago_policy": {"filters": 4, "depth": 2},
    "retinanet": {
        "backbone": "resnet18",
        "width": 0.125,
        "strides": (8, 16),
        "anchor_size": 2.0,
        "aspect_ratios": (1.0,),
        "head_depth": 1,
    },
    "faster_rcnn": {
        "backbone": "resnet18",
        "width": 0.125,
        "feature_stride": 8,
        "anchor_sizes": (8, 16),
        "aspect_ratios": (1.0,),
        "pre_nms_proposals": 16,
        "proposals": 4,
        "pooled_size": 2,
        "fc_units": 8,
    },
}
EVERY_PAIR = [(name, task) for name in MODELS.names() for task in MODELS.meta(name)["tasks"]]
# Building, saving and loading a model costs time per layer: two minutes for every pair on a 2-core CPU.
# The quick test takes every model but the deepest (hundreds of layers of Keras's own classes, which
# resnet18 uses too) for its first task, and every task at least once: a regression head on a plain and
# on a multi-output model. The slow test takes the rest.
DEEP_MODELS = {"densenet121", "densenet169", "densenet201", "resnet34", "resnet50", "resnet101", "resnet152"}
QUICK_PAIRS = [(name, MODELS.meta(name)["tasks"][0]) for name in MODELS.names() if name not in DEEP_MODELS] + [
    ("lenet5", "regression"),
    ("googlenet", "regression"),
]
# The fresh process starts first and reads the names on stdin once the files are saved: its imports
# overlap the building and saving.
LOAD_EVERY_FILE = """
import json, sys, warnings
import keras, numpy as np
import visionkit.layers, visionkit.tasks

warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")  # saved before a step

directory = sys.argv[1]
failures = {}
for name in json.loads(sys.stdin.read()):
    try:
        model = keras.saving.load_model(f"{directory}/{name}.keras", safe_mode=True)
        outputs = model(np.load(f"{directory}/{name}.input.npy"), training=False)
        outputs = outputs if isinstance(outputs, dict) else {"output": outputs}
        np.savez(f"{directory}/{name}.loaded.npz", **{k: keras.ops.convert_to_numpy(v) for k, v in outputs.items()})
    except Exception as error:
        failures[name] = f"{type(error).__name__}: {error}"[:300]
print(json.dumps(failures))
"""


def small_model(name: str, task: str) -> keras.Model:
    input_shape = SMALL_INPUTS.get(name, (32, 32, 3))
    classes = input_shape[0] * input_shape[1] if name == "alphago_policy" else CLASSES  # one class per point
    options = SMALL_OPTIONS.get(name, {"width": 0.125})
    return build(name, input_shape=input_shape, num_classes=classes, task=task, **options)


def numpy_outputs(outputs) -> dict[str, np.ndarray]:
    outputs = outputs if isinstance(outputs, dict) else {"output": outputs}
    return {key: keras.ops.convert_to_numpy(value) for key, value in outputs.items()}


def save_models(pairs: list[tuple[str, str]], directory: Path) -> dict[str, dict[str, np.ndarray]]:
    """Each (model, task) compiled as training compiles it, saved with its input; its outputs by file name."""
    expected = {}
    for name, task_name in pairs:
        model, task = small_model(name, task_name), get_task(task_name)
        compile_model(model, task, CompileSettings(epochs=1, learning_rate=1e-3), steps_per_epoch=1)
        key = f"{name}-{task_name}"
        images = np.random.default_rng(0).uniform(0, 255, (2, *model.input_shape[1:])).astype("float32")
        np.save(directory / f"{key}.input.npy", images)
        expected[key] = numpy_outputs(model(images, training=False))
        model.save(directory / f"{key}.keras")
    return expected


def check_saved_models_load(pairs: list[tuple[str, str]], directory: Path) -> None:
    """Save each (model, task); load every file in one fresh process, which computes the same outputs."""
    command = [sys.executable, "-c", LOAD_EVERY_FILE, str(directory)]
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with subprocess.Popen(command, cwd=ROOT, text=True, **pipes) as loader:  # on a failure here: EOF, it ends
        expected = save_models(pairs, directory)
        stdout, stderr = loader.communicate(json.dumps(sorted(expected)), timeout=900)
    assert loader.returncode == 0, stderr[-3000:]
    assert json.loads(stdout.splitlines()[-1]) == {}
    for key, outputs in expected.items():
        loaded = np.load(directory / f"{key}.loaded.npz")
        assert sorted(loaded.files) == sorted(outputs), key
        for output, values in outputs.items():
            np.testing.assert_allclose(loaded[output], values, rtol=1e-6, atol=1e-6, err_msg=f"{key}: {output}")


def test_models_and_tasks_load_after_importing_layers_and_tasks(tmp_path):
    assert {task for _, task in QUICK_PAIRS} == {task for _, task in EVERY_PAIR}
    check_saved_models_load(QUICK_PAIRS, tmp_path)


@pytest.mark.slow
def test_every_other_model_and_task_loads_after_importing_layers_and_tasks(tmp_path):
    check_saved_models_load([pair for pair in EVERY_PAIR if pair not in QUICK_PAIRS], tmp_path)


def test_every_serializable_class_lives_in_layers_or_tasks():
    # visionkit.tasks imports the models (tasks.build), so the loading test alone would also find a
    # class that only a model module registers; a checkpoint must not need the model zoo to load.
    owners = {
        name: obj.__module__ for name, obj in keras.saving.get_custom_objects().items() if name.startswith("visionkit>")
    }
    assert owners
    assert {
        name: module
        for name, module in owners.items()
        if not module.startswith(("visionkit.layers.", "visionkit.tasks."))
    } == {}
