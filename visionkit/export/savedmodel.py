"""TF SavedModel export in TF Serving's layout (<root>/<model>/<integer version>/) and its verification."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np

from visionkit.errors import ExportVerificationError

RELOAD_SCRIPT = Path(__file__).with_name("reload_check.py")


def next_version_dir(root: Path, model_name: str) -> Path:
    """<root>/<model_name>/<1 + highest existing integer version>."""
    model_dir = Path(root) / model_name
    versions = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return model_dir / str(max(versions, default=0) + 1)


def export_savedmodel(
    model: keras.Model,
    directory: Path,
    serving_outputs: Callable[[Any], Mapping[str, Any]],
    metadata: Mapping[str, Any],
) -> Path:
    """Write a SavedModel whose `serving_default` takes uint8 images [N,H,W,C] (a sequence model: float32
    series [N,T,C]) and returns the task's named outputs. `metadata` (task, class names, ...) goes to
    assets.extra/visionkit.json."""
    import tensorflow as tf

    def serve(inputs):
        return dict(serving_outputs(model(keras.ops.cast(inputs, "float32"), training=False)))

    name, dtype = ("series", tf.float32) if model.inputs[0].name == "series" else ("images", tf.uint8)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default",
        serve,
        input_signature=[tf.TensorSpec((None, *model.input_shape[1:]), dtype, name=name)],
    )
    directory = Path(directory)
    archive.write_out(str(directory), verbose=False)
    (directory / "assets.extra").mkdir(exist_ok=True)
    (directory / "assets.extra" / "visionkit.json").write_text(json.dumps(dict(metadata), indent=2))
    return directory


def reference_outputs(model: keras.Model, serving_outputs, images: np.ndarray) -> dict[str, np.ndarray]:
    """What the in-memory model serves for `images`."""
    outputs = serving_outputs(model(keras.ops.cast(images, "float32"), training=False))
    return {name: keras.ops.convert_to_numpy(value) for name, value in outputs.items()}


def verify_savedmodel(
    directory: Path, model: keras.Model, serving_outputs, images: np.ndarray, atol: float = 1e-4
) -> float:
    """Reload the export in a fresh process without visionkit and compare its outputs with the
    in-memory model's; returns the largest absolute difference, raises ExportVerificationError."""
    expected = reference_outputs(model, serving_outputs, images)
    with tempfile.TemporaryDirectory() as tmp:
        inputs, outputs = Path(tmp) / "inputs.npz", Path(tmp) / "outputs.npz"
        np.savez(inputs, images=images)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        done = subprocess.run(
            [sys.executable, str(RELOAD_SCRIPT), str(directory), str(inputs), str(outputs)],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp,
        )
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise ExportVerificationError(f"reloading {directory} failed in a fresh process: {last}")
        served = dict(np.load(outputs))
    if set(served) != set(expected):
        raise ExportVerificationError(f"export {directory} serves {sorted(served)}, expected {sorted(expected)}")
    worst = max(
        float(np.max(np.abs(served[k].astype(np.float64) - expected[k].astype(np.float64)), initial=0.0))
        for k in expected
    )
    if worst > atol:
        raise ExportVerificationError(
            f"export {directory} differs from the trained model by {worst:.3g} (max abs), above the tolerance {atol:g}"
        )
    return worst
