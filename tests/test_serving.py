"""tracking.register=true registers a model that `mlflow models serve` serves as the exported SavedModel does."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest

from visionkit.data import load

MODEL_URI = "models:/classification-lenet5/1"
STARTUP_SECONDS = 240  # loading TensorFlow and the model on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(server: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"mlflow models serve exited ({server.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=5):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(1)
    raise AssertionError(f"mlflow models serve did not answer within {STARTUP_SECONDS} s:\n{log.read_text()[-3000:]}")


def predict(url: str, images: np.ndarray) -> dict[str, np.ndarray]:
    request = urllib.request.Request(
        f"{url}/invocations",
        data=json.dumps({"inputs": images.tolist()}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return {name: np.asarray(values) for name, values in json.load(response)["predictions"].items()}


def savedmodel_outputs(directory: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    import tensorflow as tf

    serve = tf.saved_model.load(str(directory)).signatures["serving_default"]
    return {name: value.numpy() for name, value in serve(images=tf.constant(images)).items()}


@pytest.mark.slow
def test_the_registered_model_is_served_by_mlflow_as_the_savedmodel(pipeline, tmp_path):
    pipeline(
        "trainer.epochs=1",
        "data.limit=48",
        "export.num_images=4",
        "tracking.register=true",
        "tracking.system_metrics=false",
    )
    uri = f"sqlite:///{pipeline.store}"
    mlflow.set_tracking_uri(uri)
    info = mlflow.models.get_model_info(MODEL_URI)
    (spec,) = info.signature.inputs.inputs
    assert (spec.type, spec.shape) == (np.dtype("uint8"), (-1, 32, 32, 1))
    assert {output["name"] for output in info.signature.outputs.to_dict()} == {"probabilities", "class_ids"}
    assert info.saved_input_example_info is not None

    images = load("digits", task="classification").test.images[:5]
    url, log = f"http://127.0.0.1:{free_port()}", tmp_path / "serve.log"
    # `mlflow models serve --env-manager local` starts uvicorn from PATH: this interpreter's scripts come first.
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    with log.open("w") as output:
        command = [
            str(Path(sys.executable).parent / "mlflow"),
            "models",
            "serve",
            "-m",
            MODEL_URI,
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            url.rsplit(":", 1)[1],
        ]
        server = subprocess.Popen(
            command, env=env, cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_until_up(server, url, log)
        served = predict(url, images)
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its uvicorn worker
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    expected = savedmodel_outputs(pipeline.run_dir / "export" / "lenet5" / "1", images)
    assert set(served) == set(expected)
    np.testing.assert_allclose(served["probabilities"], expected["probabilities"], atol=1e-6)
    np.testing.assert_array_equal(served["class_ids"], expected["class_ids"])
