"""Typed views of the config sections: a value of the wrong type is a one-line error naming its key."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from visionkit.errors import UserError


@dataclass
class TrainerSettings:
    epochs: int
    batch_size: int
    optimizer: str
    learning_rate: float
    schedule: str
    warmup_epochs: int
    weight_decay: float
    momentum: float
    early_stopping: int
    seed: int
    workers: int
    precision: str = "float32"
    jit_compile: str = "auto"
    strategy: str = "none"
    cpu_devices: int = 0
    cpu_threads: int = 0
    multiprocessing: bool = False
    prefetch: int = 10
    checkpoint_every_steps: int = 0
    precise_bn: str = "auto"


@dataclass
class ExportSettings:
    enabled: bool
    verify: bool
    atol: float
    num_images: int


@dataclass
class PredictSettings:
    input: str | None
    output: str | None
    batch_size: int


@dataclass
class SummarySettings:
    input_shape: list[int] | None = None
    num_classes: int | None = None


@dataclass
class CompareSettings:
    experiment: str | None = None
    metric: str | None = None
    ascending: bool | None = None
    limit: int = 20
    columns: int = 2


@dataclass
class BenchmarkSettings:
    warmup_steps: int = 5
    steps: int = 20
    synthetic: bool = False
    image_shape: list[int] | None = None
    matmul_size: int = 2048
    matmul_repeats: int = 8
    matmul_trials: int = 5


@dataclass
class TrackingSettings:
    enabled: bool
    uri: str = ""
    artifact_root: str = ""
    system_metrics: bool = True
    system_metrics_interval: float = 10.0
    register: bool = False


S = TypeVar("S")


def typed(section: DictConfig, schema: type[S], where: str) -> S:
    """`section` as a `schema` instance; unknown keys, missing keys and wrong types are UserErrors."""
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), section))
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or getattr(error, "key", None) or "?"
        message = str(getattr(error, "msg", error)).strip().splitlines()[0]
        raise UserError(f"{where}.{key}: {message}") from None


def positive(value: int, key: str) -> int:
    if value < 1:
        raise UserError(f"{key} must be at least 1, received {value}")
    return value


def check_option_types(fn: Callable, options: Mapping[str, Any], where: str) -> None:
    """Compare options with the keyword defaults of `fn`: int, float, bool and str must match
    (an int is accepted for a float); unknown options are errors."""
    params = inspect.signature(fn).parameters
    for key, value in options.items():
        if key not in params:
            known = ", ".join(p for p in params if params[p].kind == inspect.Parameter.KEYWORD_ONLY)
            raise UserError(f"{where}.{key}: not an option of {fn.__name__}; options: {known}")
        default = params[key].default
        if default is None or default is inspect.Parameter.empty or value is None:
            continue
        expected = type(default)
        ok = isinstance(value, expected) and not (isinstance(value, bool) and expected is not bool)
        ok = ok or (expected is float and isinstance(value, int) and not isinstance(value, bool))
        if expected in (int, float, bool, str) and not ok:
            raise UserError(f"{where}.{key}: expected {expected.__name__}, received {value!r}")
