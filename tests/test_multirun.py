"""Parallel multiruns into one MLflow store: the store and experiments made before the jobs start,
writes retried while SQLite is locked, one FINISHED run per job."""

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from omegaconf import OmegaConf

from pipelines.callbacks import PrepareTrackingStore, experiment_names
from visionkit.tracking import mlflow_tracker
from visionkit.tracking.mlflow_tracker import LOCKED_RETRIES, retry_when_locked

ROOT = Path(__file__).resolve().parents[1]


def sweep_config(tmp_path, *overrides: str, enabled: bool = True):
    return OmegaConf.create(
        {
            "mode": "train",
            "task": {"name": "classification"},
            "tracking": {
                "enabled": enabled,
                "uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                "artifact_root": str(tmp_path / "mlartifacts"),
            },
            "hydra": {"overrides": {"task": list(overrides)}},
        }
    )


def test_experiments_of_a_sweep(tmp_path):
    assert experiment_names(sweep_config(tmp_path, "model=lenet5,vgg11")) == ["classification"]
    assert experiment_names(sweep_config(tmp_path, "task=regression,segmentation")) == ["regression", "segmentation"]
    assert experiment_names(sweep_config(tmp_path, "task=regression", "mode=benchmark")) == ["benchmark"]
    assert experiment_names(sweep_config(tmp_path, "mode=train,benchmark")) == ["benchmark", "classification"]


def test_the_callback_creates_the_store_and_experiments_before_the_jobs(tmp_path):
    PrepareTrackingStore().on_multirun_start(sweep_config(tmp_path, "task=classification,regression"))
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    created = {e.name: e.artifact_location for e in client.search_experiments()}
    assert created["regression"] == (tmp_path / "mlartifacts" / "regression").as_uri()  # as the jobs' tracker makes it
    assert {"classification", "regression"} <= set(created)

    PrepareTrackingStore().on_multirun_start(sweep_config(tmp_path / "off", enabled=False))
    assert not (tmp_path / "off").exists()


def test_writes_are_retried_while_the_database_is_locked(monkeypatch):
    waits = []
    monkeypatch.setattr(mlflow_tracker.time, "sleep", waits.append)
    answers = iter([RuntimeError("(sqlite3.OperationalError) database is locked")] * 2 + ["logged"])

    def write(value, *, step):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return (answer, value, step)

    assert retry_when_locked(write, 1.0, step=3) == ("logged", 1.0, 3)
    assert len(waits) == 2 and 0.1 <= waits[0] <= 0.2 and 0.2 <= waits[1] <= 0.4  # exponential backoff

    def locked():
        raise RuntimeError("database is locked")

    with pytest.raises(RuntimeError, match="database is locked"):
        retry_when_locked(locked)
    assert len(waits) == 2 + LOCKED_RETRIES - 1

    def broken():
        raise ValueError("no such table: runs")

    with pytest.raises(ValueError, match="no such table"):
        retry_when_locked(broken)  # other errors are not retried
    assert len(waits) == 2 + LOCKED_RETRIES - 1


@pytest.mark.slow
def test_parallel_joblib_multirun_logs_one_finished_run_per_job(tmp_path):
    store, sweep = tmp_path / "mlflow.db", tmp_path / "sweep"
    args = [
        sys.executable,
        "-m",
        "pipelines.run",
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={sweep}",
        f"tracking.uri=sqlite:///{store}",
        f"tracking.artifact_root={tmp_path / 'art'}",
        "trainer.seed=0,1,2",
        "trainer.epochs=1",
        "data.limit=32",
        "export.enabled=false",
        "tracking.system_metrics_interval=1",
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "database is locked" not in done.stdout + done.stderr

    client = mlflow.MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("classification")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(run.data.params["trainer.seed"] for run in runs) == ["0", "1", "2"]
    assert sorted(run.info.run_name for run in runs) == [  # each job named by what it was given
        f"lenet5-digits-data.limit=32,export.enabled=False,trainer.epochs=1,trainer.seed={seed}" for seed in range(3)
    ]
    assert all(run.info.status == "FINISHED" and "test_accuracy" in run.data.metrics for run in runs)
    assert sorted(run.data.tags["run_dir"] for run in runs) == [
        str(sweep / f"{i}_classification_lenet5") for i in range(3)
    ]
    assert experiment.creation_time < min(run.info.start_time for run in runs)  # made by the callback, up front


def test_slurm_launcher_config_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the [cluster] extra is not installed")
    from hydra import compose, initialize_config_dir

    from pipelines.run import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"], return_hydra_config=True
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min) == ("gpu", 1, 240)
    assert cfg.hydra.callbacks.tracking_store._target_ == "pipelines.callbacks.PrepareTrackingStore"
