"""MLflow tracking: one experiment per task, one run per pipeline call.

The store URI and artifact root are absolute, so every run and multirun job, whatever its working
directory, writes to the same place.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

import keras
import numpy as np

from visionkit.outputs import MAIN_OUTPUT
from visionkit.tracking.runs import opened_store

MAX_PARAM_LENGTH = 6000  # MLflow's limit on a parameter value
LOCKED_RETRIES = 8  # waits from 0.1-0.2 s, doubling: 13-25 s in all before the error is raised
# The experiment tag by which the MLflow 3 UI chooses an experiment's page: model training opens on the
# runs table (metrics, parameters, datasets); without the tag the UI may open on the GenAI traces overview.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
SERVING_CODE = Path(__file__).with_name("savedmodel_pyfunc.py")
INPUT_EXAMPLE_IMAGES = 2  # images of the registered model's input example (a request body `mlflow models serve` takes)


def retry_when_locked(call, *args, **kwargs):
    """`call(*args, **kwargs)`, retried with exponential backoff (and jitter, so that waiting jobs do not
    retry in step) while SQLite answers "database is locked": parallel multirun jobs share one store,
    and SQLite lets one writer in at a time, each waiting only a few seconds before giving up."""
    for attempt in range(LOCKED_RETRIES):
        try:
            return call(*args, **kwargs)
        except Exception as error:
            if "database is locked" not in str(error) or attempt == LOCKED_RETRIES - 1:
                raise
            time.sleep(0.1 * 2**attempt * (1 + random.random()))


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"trainer": {"epochs": 3}} -> {"trainer.epochs": 3}; lists are kept whole as values."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def metric_name(keras_name: str) -> str:
    """Keras log keys -> MLflow names: `loss` -> `train_loss`, `val_loss` stays.

    Models with auxiliary heads log their main output's metrics as `predictions_<metric>`; those
    get the plain name so runs of all models compare in one column (their losses keep the prefix,
    since `loss` there is the weighted total).
    """
    is_val = keras_name.startswith("val_")
    name = keras_name[len("val_") :] if is_val else keras_name
    if name.startswith(f"{MAIN_OUTPUT}_") and not name.endswith("loss"):
        name = name[len(MAIN_OUTPUT) + 1 :]
    return f"{'val' if is_val else 'train'}_{name}"


class EpochMetrics(keras.callbacks.Callback):
    """Logs each epoch's metrics as train_*/val_*, and the learning rate.

    mlflow.keras.MlflowCallback logs Keras's own names (`loss`, `val_loss`); the train_ prefix
    keeps names uniform across train/val/test in the MLflow UI, hence this small callback.
    """

    def __init__(self, tracker: MlflowTracker):
        super().__init__()
        self.tracker = tracker

    def on_epoch_end(self, epoch, logs=None):
        metrics = {metric_name(k): float(v) for k, v in (logs or {}).items()}
        metrics["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.tracker.log_metrics(metrics, step=epoch)


class MlflowTracker:
    enabled = True

    def __init__(
        self, uri: str, artifact_root: str, *, system_metrics: bool = True, system_metrics_interval: float = 10.0
    ):
        import mlflow

        self.mlflow = mlflow
        self.uri = uri
        self.artifact_root = Path(artifact_root)
        self.system_metrics = system_metrics
        opened_store(uri)
        mlflow.set_tracking_uri(uri)
        mlflow.set_system_metrics_sampling_interval(system_metrics_interval)
        mlflow.set_system_metrics_samples_before_logging(1)

    def experiment_id(self, name: str) -> str:
        """The experiment's id, created as a model-training experiment with the shared artifact root if new
        (tolerating a concurrent create); an experiment made before without a kind gets it."""
        for attempt in range(5):
            found = self.mlflow.get_experiment_by_name(name)
            if found is not None:
                if EXPERIMENT_KIND_TAG not in found.tags:
                    retry_when_locked(
                        self.mlflow.MlflowClient().set_experiment_tag,
                        found.experiment_id,
                        EXPERIMENT_KIND_TAG,
                        MODEL_TRAINING,
                    )
                return found.experiment_id
            try:
                return self.mlflow.create_experiment(
                    name,
                    artifact_location=(self.artifact_root / name).as_uri(),
                    tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING},
                )
            except Exception:  # another job created it first, or the SQLite store was briefly locked
                time.sleep(0.5 * 2**attempt)
        raise RuntimeError(f"could not create or find MLflow experiment '{name}' at {self.uri}")

    @contextmanager
    def run(
        self, *, experiment: str, run_name: str, tags: Mapping[str, str], run_id: str | None = None
    ) -> Iterator[MlflowTracker]:
        """A new run, or the run `run_id` continued (a resumed training)."""
        if run_id:
            started = retry_when_locked(self.mlflow.start_run, run_id=run_id, log_system_metrics=self.system_metrics)
        else:
            started = retry_when_locked(
                self.mlflow.start_run,
                experiment_id=self.experiment_id(experiment),
                run_name=run_name,
                tags=dict(tags),
                log_system_metrics=self.system_metrics,
            )
        with started:
            yield self

    @property
    def run_id(self) -> str | None:
        active = self.mlflow.active_run()
        return active.info.run_id if active else None

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        retry_when_locked(self.mlflow.set_tags, {k: str(v) for k, v in tags.items()})

    def log_params(self, params: Mapping[str, Any]) -> None:
        values = {k: str(v)[:MAX_PARAM_LENGTH] for k, v in params.items()}
        items = list(values.items())
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per call
            retry_when_locked(self.mlflow.log_params, dict(items[start : start + 100]))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        retry_when_locked(self.mlflow.log_metrics, {k: float(v) for k, v in metrics.items()}, step=step)

    def log_figure(self, figure, artifact_file: str) -> None:
        self.mlflow.log_figure(figure, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.mlflow.log_text(text, artifact_file)

    def log_artifacts(self, local_dir: Path, artifact_path: str) -> None:
        self.mlflow.log_artifacts(str(local_dir), artifact_path)

    def log_dataset(self, bundle, options: Mapping[str, Any]) -> None:
        """The bundle's splits as the run's dataset inputs; `options`: the data section (name and options)."""
        from visionkit.tracking.datasets import dataset_inputs

        datasets, contexts = dataset_inputs(bundle, options)
        retry_when_locked(self.mlflow.log_inputs, datasets, contexts, tags_list=[None] * len(datasets))

    def register_model(self, saved_model: Path, registered_name: str, images: np.ndarray) -> None:
        """Log the run's verified SavedModel as an MLflow model and register it in the Model Registry,
        with the first of `images` as its input example.

        The SavedModel, not the Keras model: a .keras file is rebuilt from its classes, so MLflow's loader
        would need visionkit's layers and losses importable (`mlflow models serve` fails on the task's loss),
        while the SavedModel is the graph itself, served by TensorFlow alone, and is the artifact the export
        verified. MLflow infers the signature from the input example by running the model.
        """
        self.mlflow.pyfunc.log_model(
            name="model",
            python_model=str(SERVING_CODE),
            artifacts={"saved_model": str(saved_model)},
            input_example=images[:INPUT_EXAMPLE_IMAGES],
            registered_model_name=registered_name,
            pip_requirements=[f"tensorflow=={version('tensorflow')}"],
        )

    def keras_callback(self) -> keras.callbacks.Callback:
        return EpochMetrics(self)


class NullTracker:
    """Tracking turned off (`tracking=none`): the same calls, doing nothing."""

    enabled = False

    @contextmanager
    def run(self, **_: Any) -> Iterator[NullTracker]:
        yield self

    run_id = None

    def log_params(self, *_: Any, **__: Any) -> None: ...
    def set_tags(self, *_: Any, **__: Any) -> None: ...
    def log_metrics(self, *_: Any, **__: Any) -> None: ...
    def log_figure(self, *_: Any, **__: Any) -> None: ...
    def log_text(self, *_: Any, **__: Any) -> None: ...
    def log_artifacts(self, *_: Any, **__: Any) -> None: ...
    def log_dataset(self, *_: Any, **__: Any) -> None: ...
    def register_model(self, *_: Any, **__: Any) -> None: ...

    def keras_callback(self) -> keras.callbacks.Callback:
        return keras.callbacks.Callback()
