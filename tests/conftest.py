"""Shared fixtures. Data is generated here, never downloaded; each pipeline run gets its own
temporary run directory and MLflow store."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def nvidia_gpus() -> list[str]:
    """The NVIDIA GPUs `nvidia-smi -L` lists; asked without starting a Keras backend in the test process."""
    if shutil.which("nvidia-smi") is None:
        return []
    done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    return [line for line in done.stdout.splitlines() if line.startswith("GPU ")] if done.returncode == 0 else []


@pytest.fixture(autouse=True, scope="session")
def session_cache_directory(tmp_path_factory):
    """What the tests verify is cached in a folder of the session, not in the user's ~/.cache/visionkit (a test that
    needs a cache of its own sets VISIONKIT_CACHE_DIR itself); pipeline runs inherit it."""
    previous = os.environ.get("VISIONKIT_CACHE_DIR")
    os.environ["VISIONKIT_CACHE_DIR"] = str(tmp_path_factory.mktemp("visionkit_cache"))
    yield
    if previous is None:
        os.environ.pop("VISIONKIT_CACHE_DIR")
    else:
        os.environ["VISIONKIT_CACHE_DIR"] = previous


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` check what only a GPU run does; without one they are skipped, saying why."""
    gpu_tests = [item for item in items if "gpu" in item.keywords]
    if gpu_tests and not nvidia_gpus():
        skip = pytest.mark.skip(reason="needs an NVIDIA GPU (nvidia-smi lists none on this machine)")
        for item in gpu_tests:
            item.add_marker(skip)


class PipelineRun:
    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.store = tmp_path / "mlflow.db"
        self.artifacts = tmp_path / "mlartifacts"
        self.count = 0

    def __call__(
        self, *overrides: str, check: bool = True, entry: tuple[str, ...] = ("-m", "pipelines.run")
    ) -> subprocess.CompletedProcess:
        """Run `python -m pipelines.run` (or `python *entry`, which calls it) with the overrides in a fresh
        run directory."""
        self.count += 1
        self.run_dir = self.tmp / f"run{self.count}"
        args = [
            sys.executable,
            *entry,
            f"hydra.run.dir={self.run_dir}",
            f"tracking.uri=sqlite:///{self.store}",
            f"tracking.artifact_root={self.artifacts}",
            *overrides,
        ]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        env.pop("HYDRA_FULL_ERROR", None)
        done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
        if check and done.returncode != 0:
            raise AssertionError(f"pipeline failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done

    def mlflow_runs(self, experiment: str):
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{self.store}")
        found = client.get_experiment_by_name(experiment)
        return client, client.search_runs([found.experiment_id]) if found else []


@pytest.fixture
def pipeline(tmp_path) -> PipelineRun:
    return PipelineRun(tmp_path)
