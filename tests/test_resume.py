"""Crash safety: atomic checkpoints, a full disk, a NaN loss, and kill -9 followed by resume=true."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import PipelineRun
from test_pipeline import run_in_one_process

from visionkit.errors import TrainingDivergedError
from visionkit.training.checkpoints import LAST, CheckpointWriteError, TrainingState, read_state, save_model

ROOT = Path(__file__).resolve().parents[1]
SHORT = ("trainer.epochs=6", "export.enabled=false", "tracking.system_metrics=false")
# 37 batches an epoch (1,167 training digits in 32s), a step checkpoint every 5.
STEPS = (
    "trainer.epochs=3",
    "trainer.batch_size=32",
    "trainer.checkpoint_every_steps=5",
    "export.enabled=false",
    "tracking.system_metrics=false",
)


def tiny_model():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_a_failed_write_keeps_the_previous_checkpoint_and_names_the_directory(tmp_path, monkeypatch):
    model = tiny_model()
    path = tmp_path / LAST
    save_model(model, path)
    before = path.read_bytes()

    def disk_full(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as handle:  # a partial file, then the disk fills up
            handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(keras.Model, "save", disk_full)
    with pytest.raises(
        CheckpointWriteError,
        match=rf"cannot write last.keras in {tmp_path}: No space left on device; "
        r"the previous last.keras is kept",
    ):
        save_model(model, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [LAST]  # no temporary file left behind


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    model = tiny_model()
    x = np.ones((8, 4), np.float32)
    y = np.ones((8, 1), np.float32)

    class PoisonAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.layers[-1].kernel.assign(np.full((4, 1), np.nan, np.float32))

    state = TrainingState(tmp_path, "loss", "min")
    model.fit(x, y, epochs=3, batch_size=4, verbose=0, callbacks=[state, PoisonAfterFirstEpoch()])
    assert state.diverged[:2] == (2, 1) and np.isnan(state.diverged[2])
    assert read_state(tmp_path)["epochs_completed"] == 1  # epoch 1's checkpoints, not the poisoned weights
    kept = keras.saving.load_model(tmp_path / LAST)
    assert np.isfinite(kept.layers[-1].kernel.numpy()).all()
    with pytest.raises(
        TrainingDivergedError,
        match=rf"training loss became nan at epoch 2, batch 1; the last good checkpoint is "
        rf"{tmp_path / LAST}. Try a lower trainer.learning_rate",
    ):
        state.raise_if_diverged()


def test_a_diverging_run_exits_with_one_line(pipeline):
    # Mean squared error is unbounded: a huge SGD step overflows it to inf in the first epoch.
    done = pipeline(
        "task=regression",
        "data.num_images=200",
        "trainer.optimizer=sgd",
        "trainer.learning_rate=1e30",
        "trainer.epochs=2",
        "export.enabled=false",
        "tracking=none",
        check=False,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith("error: training loss became inf at epoch 1, batch ")
    assert "no epoch completed, so no checkpoint. Try a lower trainer.learning_rate" in done.stderr


def start(pipeline, *overrides):
    """The pipeline as a background process in the fixture's next run directory."""
    pipeline.count += 1
    pipeline.run_dir = pipeline.tmp / f"run{pipeline.count}"
    args = [
        sys.executable,
        "-m",
        "pipelines.run",
        f"hydra.run.dir={pipeline.run_dir}",
        f"tracking.uri=sqlite:///{pipeline.store}",
        f"tracking.artifact_root={pipeline.artifacts}",
        *overrides,
    ]
    return subprocess.Popen(
        args,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


def kill_during_epoch(process, run_dir, after_epochs: int, delay: float) -> int:
    """kill -9 the process `delay` seconds after it completed `after_epochs` epochs."""
    state_file = run_dir / "checkpoints" / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        if state_file.exists() and json.loads(state_file.read_text())["epochs_completed"] >= after_epochs:
            break
        assert process.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.05)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return json.loads(state_file.read_text())["epochs_completed"]


def kill_after_step_checkpoint(process, run_dir, epoch: int) -> dict:
    """kill -9 the process as soon as state.json names a step checkpoint of `epoch` (0-based); its position."""
    state_file = run_dir / "checkpoints" / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        if state_file.exists() and json.loads(state_file.read_text()).get("position", {}).get("epoch") == epoch:
            break
        assert process.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    state = json.loads(state_file.read_text())
    assert state.get("position", {}).get("epoch") == epoch, f"killed after epoch {epoch} ended: {state}"
    return state["position"]


def last_weights(run_dir: Path) -> list[np.ndarray]:
    return keras.saving.load_model(run_dir / "checkpoints" / LAST, compile=False).get_weights()


@pytest.mark.slow
def test_killed_mid_epoch_resumes_to_the_uninterrupted_weights(pipeline):
    pipeline(*STEPS)
    uninterrupted = pipeline.run_dir
    process = start(pipeline, *STEPS)
    run_dir = pipeline.run_dir
    position = kill_after_step_checkpoint(process, run_dir, epoch=1)
    assert 0 < position["step"] < 37 and (run_dir / "checkpoints" / position["file"]).is_file()

    done = pipeline(*STEPS, "resume=true", f"hydra.run.dir={run_dir}")
    assert f"resuming {run_dir} after epoch 1 of 3 and {position['step']} steps of epoch 2" in done.stdout
    # Resumed from inside epoch 2, the run trained the remaining batches of that epoch and all of epoch 3
    # with the weights, optimizer state and learning rate of the uninterrupted run, so the same batches
    # (samples, order and augmentation) give the same weights; any other batch would move them.
    for resumed, reference in zip(last_weights(run_dir), last_weights(uninterrupted), strict=True):
        np.testing.assert_allclose(resumed, reference, rtol=1e-5, atol=1e-6)
    assert json.loads((run_dir / "test_metrics.json").read_text()) == pytest.approx(
        json.loads((uninterrupted / "test_metrics.json").read_text()), abs=1e-6
    )
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.keras")) == ["best.keras", "last.keras"]

    client, runs = pipeline.mlflow_runs("classification")
    by_id = {run.info.run_id: run for run in runs}
    resumed_run = by_id[read_state(run_dir / "checkpoints")["run_id"]]
    reference_run = by_id[read_state(uninterrupted / "checkpoints")["run_id"]]
    assert resumed_run.data.tags["resumed_after_step"] == str(position["step"])
    val_loss = {
        name: {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_loss")}
        for name, run in (("resumed", resumed_run), ("reference", reference_run))
    }
    assert sorted(val_loss["resumed"]) == [0, 1, 2]  # the partial epoch logged as a whole one
    assert val_loss["resumed"] == pytest.approx(val_loss["reference"], rel=1e-5)


@pytest.fixture(scope="module")
def shared_pipeline(tmp_path_factory) -> PipelineRun:
    return PipelineRun(tmp_path_factory.mktemp("resume"))


@pytest.fixture(scope="module")
def uninterrupted(shared_pipeline) -> Path:
    """A finished run of SHORT: the result a resumed run must reach, and a run to refuse to resume differently."""
    shared_pipeline(*SHORT)
    return shared_pipeline.run_dir


def test_interrupted_run_resumes_to_the_same_result(shared_pipeline, uninterrupted):
    pipeline = shared_pipeline
    process = start(pipeline, *SHORT)
    run_dir = pipeline.run_dir
    completed = kill_during_epoch(process, run_dir, after_epochs=2, delay=0.4)
    assert 2 <= completed < 6
    done = pipeline(*SHORT, "resume=true", f"hydra.run.dir={run_dir}")
    assert f"resuming {run_dir} after epoch {completed} of 6" in done.stdout
    resumed, reference = (json.loads((path / "test_metrics.json").read_text()) for path in (run_dir, uninterrupted))
    assert resumed["test_accuracy"] == pytest.approx(reference["test_accuracy"], abs=0.02)

    client, runs = pipeline.mlflow_runs("classification")
    assert len(runs) == 2  # the resumed run continued its own MLflow run
    run = next(r for r in runs if r.info.run_id == read_state(run_dir / "checkpoints")["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["resumed_after_epoch"] == str(completed)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
    assert sorted(set(steps)) == list(range(6))


def test_resume_refuses_a_changed_experiment_and_an_empty_directory(tmp_path, uninterrupted):
    before = (uninterrupted / "checkpoints" / "state.json").read_text()
    changed, empty = run_in_one_process(
        [
            [*SHORT, "trainer.learning_rate=0.1", "resume=true", "tracking=none", f"hydra.run.dir={uninterrupted}"],
            ["resume=true", "tracking=none", f"hydra.run.dir={tmp_path / 'empty'}"],
        ]
    )
    assert changed.returncode == 2
    assert "resume=true with a different configuration (trainer.learning_rate: 0.002 -> 0.1)" in changed.stderr
    assert (uninterrupted / "checkpoints" / "state.json").read_text() == before  # refused before it trained
    assert empty.returncode == 2 and "resume=true: no checkpoint to resume in" in empty.stderr


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 0.2, 0.5, 0.9, 1.5])
def test_kill_and_resume_five_times(pipeline, delay):
    process = start(pipeline, *SHORT)
    run_dir = pipeline.run_dir
    kill_during_epoch(process, run_dir, after_epochs=1, delay=delay)
    pipeline(*SHORT, "resume=true", f"hydra.run.dir={run_dir}")
    assert json.loads((run_dir / "test_metrics.json").read_text())["test_accuracy"] > 0.8
