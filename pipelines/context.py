"""Config in, visionkit objects out: what every mode needs, built the same way for every task."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from visionkit.errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
METADATA_FILE = "visionkit.json"
INITIALISATION_KEYS = ("weights", "freeze")  # model options that act after the builder, not in it
PROFILES = ("auto", "cpu", "full")


def output_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def options(section: DictConfig, *drop: str) -> dict[str, Any]:
    """A config section as keyword arguments, without the given keys."""
    return {k: v for k, v in OmegaConf.to_container(section, resolve=True).items() if k not in drop}


@contextmanager
def as_user_error(where: str) -> Iterator[None]:
    """Argument errors raised while building things from the config are the user's to fix."""
    try:
        yield
    except UserError:
        raise
    except (ValueError, TypeError) as error:
        raise UserError(f"{where}: {str(error).strip().splitlines()[0]}") from None


def command_line_keys() -> set[str]:
    """The config keys set explicitly on the command line (`trainer.epochs=3` -> trainer.epochs)."""
    return {override.split("=", 1)[0].lstrip("+~") for override in HydraConfig.get().overrides.task}


def apply_profile(cfg: DictConfig) -> str:
    """Resolve `profile=auto` (cpu without a GPU, else full) and apply that profile's settings.

    A profile is a nested block of config values under `profiles.<name>`, declared by task and
    tuning files (a CPU profile: a narrower network, fewer epochs). Keys the user set on the
    command line keep the user's value. Says in one line what it chose and changed; the config,
    and with it the MLflow run's params, records the result.
    """
    from visionkit.tracking import flatten
    from visionkit.training.devices import accelerators

    choice = cfg.get("profile", "auto")
    if choice not in PROFILES:
        raise UserError(f"profile must be one of {', '.join(PROFILES)}, received {choice!r}")
    reason = "chosen"
    if choice == "auto":
        found = accelerators()
        choice, reason = ("full", f"found {', '.join(found)}") if found else ("cpu", "no GPU found")
    explicit = command_line_keys()
    changed = {}
    for key, value in flatten(options(cfg.get("profiles", {}).get(choice) or OmegaConf.create())).items():
        if key in explicit:
            continue
        if OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT:
            raise UserError(f"profiles.{choice}.{key}: not a config key")
        OmegaConf.update(cfg, key, value, merge=False)
        changed[key] = value
    cfg.profile = choice
    if changed:
        hint = "; profile=full for the paper-size network" if choice == "cpu" else ""
        print(f"profile {choice} ({reason}): {' '.join(f'{k}={v}' for k, v in changed.items())}{hint}")
    return choice


_ABSENT = object()


def load_task(cfg: DictConfig):
    from visionkit.tasks import TASKS, get_task

    with as_user_error(f"task '{cfg.task.name}'"):
        TASKS.get(cfg.task.name)
        return get_task(cfg.task.name, **options(cfg.task, "name"))


def data_options(cfg: DictConfig) -> dict[str, Any]:
    """The data section as data.load's keyword arguments, each checked against the source's (or, for the keys
    every source has, data.load's) keyword defaults."""
    from pipelines.settings import check_option_types
    from visionkit import data
    from visionkit.registry import DATASETS

    kwargs = options(cfg.data, "name", "limit")
    streaming = {k: v for k, v in kwargs.items() if k in data.STREAM_OPTIONS}
    check_option_types(DATASETS.get(cfg.data.name), {k: v for k, v in kwargs.items() if k not in streaming}, "data")
    check_option_types(data.load, streaming, "data")
    return kwargs


def load_data(cfg: DictConfig, task):
    from visionkit import data

    kwargs = data_options(cfg)
    with as_user_error(f"dataset '{cfg.data.name}'"):
        bundle = data.load(cfg.data.name, task=task.name, limit=cfg.data.get("limit"), **kwargs)
    bundle.check_task(task.target_key, task.name)
    return bundle


def build_model(cfg: DictConfig, task, bundle):
    from pipelines.settings import check_option_types
    from visionkit.models import MODELS, check_supports, transfer

    name = cfg.model.name
    builder = MODELS.get(name)
    check_supports(name, task.name)
    kwargs = options(cfg.model, "name", *INITIALISATION_KEYS)
    check_option_types(builder, kwargs, "model")
    weights, frozen = cfg.model.get("weights"), cfg.model.get("freeze")
    # ImageNet weights come with the normalisation they were trained with, not the data's statistics.
    mean, std = transfer.imagenet_pixel_stats(name) if weights == "imagenet" else bundle.pixel_stats()
    with as_user_error(f"model '{name}'"):
        model = task.build_model(
            builder,
            input_shape=bundle.image_shape,
            num_outputs=task.num_outputs(bundle),
            pixel_mean=mean,
            pixel_std=std,
            **kwargs,
        )
    if weights == "imagenet":
        print(f"model.weights: {len(transfer.load_imagenet_weights(model, name))} layers from ImageNet")
    elif weights:
        print(f"model.weights: {len(transfer.load_weights_file(model, weights))} layers from {weights}")
    if frozen is not None:
        print(f"model.freeze: {transfer.freeze(model, frozen)} layers frozen")
    return model


def model_metadata(cfg: DictConfig, task, bundle, model) -> dict[str, Any]:
    """What serving and prediction need besides the weights."""
    return {
        "task": cfg.task.name,
        "model": cfg.model.name,
        "data": cfg.data.name,
        "input_shape": list(model.input_shape[1:]),
        "class_names": bundle.class_names,
        "target_names": bundle.target_names,
        **task.serving_metadata(bundle),
    }


def write_metadata(directory: Path, metadata: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2))


def make_tracker(cfg: DictConfig):
    from pipelines.settings import TrackingSettings, typed
    from visionkit.tracking import MlflowTracker, NullTracker

    settings = typed(cfg.tracking, TrackingSettings, "tracking")
    if settings.register and not cfg.export.enabled:
        raise UserError("tracking.register=true registers the exported SavedModel; it needs export.enabled=true")
    if not settings.enabled:
        return NullTracker(), settings
    return MlflowTracker(
        settings.uri,
        settings.artifact_root,
        system_metrics=settings.system_metrics,
        system_metrics_interval=settings.system_metrics_interval,
    ), settings


def git_commit() -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5)
        return done.stdout.strip() if done.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def run_identity(cfg: DictConfig) -> dict[str, Any]:
    """Experiment, run name and tags of this pipeline call."""
    overrides = " ".join(HydraConfig.get().overrides.task)
    commit = git_commit()
    return {
        "experiment": cfg.task.name,
        "run_name": run_name(cfg, HydraConfig.get()),
        "tags": {
            "task": cfg.task.name,
            "model": cfg.model.name,
            "data": cfg.data.name,
            "mode": cfg.mode,
            "profile": cfg.get("profile", "full"),
            "git_commit": commit,
            "mlflow.source.git.commit": commit,
            "overrides": overrides or "(none)",
            "run_dir": str(output_dir()),
        },
    }


# Overrides that do not tell the jobs of a sweep apart: where they log, and the choices the name starts with.
NAMELESS_OVERRIDES = ("tracking.", "hydra.", "hydra/")
NAMED_CHOICES = ("task", "model", "data")


def run_name(cfg: DictConfig, hydra: DictConfig) -> str:
    """`lenet5-digits-20261202-123211` for a single run. A sweep's jobs start at the same time, so each is
    named by its overrides, as Hydra's job.override_dirname (`lenet5-digits-trainer.seed=1`), less those
    that name no difference between the jobs; a job with none left is named by its model and data alone."""
    name = f"{cfg.model.name}-{cfg.data.name}"
    if hydra.mode != RunMode.MULTIRUN:
        return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    telling = sorted(
        override
        for override in hydra.overrides.task
        if not override.startswith(NAMELESS_OVERRIDES) and override.split("=", 1)[0].lstrip("+~") not in NAMED_CHOICES
    )
    return "-".join([name, ",".join(telling)]) if telling else name


@dataclass
class Checkpoint:
    model_path: Path
    metadata: dict[str, Any]


def resolve_checkpoint(cfg: DictConfig) -> Checkpoint:
    """The .keras file (or run directory) named by `checkpoint=`, with its metadata."""
    if not cfg.checkpoint:
        raise UserError(f"mode={cfg.mode} needs checkpoint=<a .keras file or a run directory>")
    return resolve_checkpoint_path(Path(cfg.checkpoint).expanduser())


def resolve_checkpoint_path(path: Path) -> Checkpoint:
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    if path.is_dir():
        run_dir, path = path, path / "checkpoints" / "best.keras"
        if not path.is_file():
            raise UserError(f"no checkpoints/best.keras in run directory {run_dir}")
    meta_path = path.parent / METADATA_FILE
    if not meta_path.is_file():
        raise UserError(f"checkpoint {path} has no {METADATA_FILE} beside it (written by mode=train)")
    return Checkpoint(path, json.loads(meta_path.read_text()))


def check_checkpoint_matches(cfg: DictConfig, checkpoint: Checkpoint) -> None:
    """Evaluating on other data than the model was trained for is a mistake worth a clear message."""
    trained = {key: checkpoint.metadata[key] for key in ("task", "data")}
    asked = {"task": cfg.task.name, "data": cfg.data.name}
    if trained != asked:
        raise UserError(
            f"checkpoint {checkpoint.model_path} was trained for task={trained['task']} "
            f"data={trained['data']}; pass those (received task={asked['task']} data={asked['data']})"
        )


def load_checkpoint_model(checkpoint: Checkpoint):
    import keras

    import visionkit.layers  # noqa: F401  (registers the custom layers and losses the .keras file refers to)
    import visionkit.tasks  # noqa: F401
    from visionkit.models.common import inference_model

    try:
        model = keras.saving.load_model(checkpoint.model_path, safe_mode=True, compile=False)
    except ValueError as error:
        if "safe_mode" not in str(error):
            raise
        raise UserError(
            f"checkpoint {checkpoint.model_path} was refused: it holds Python code (such as a Lambda "
            "layer's function) that Keras's safe_mode will not run"
        ) from None
    return inference_model(model)  # a training checkpoint may still carry auxiliary heads
