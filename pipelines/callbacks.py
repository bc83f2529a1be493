"""Hydra callbacks (conf/config.yaml, hydra.callbacks)."""

from __future__ import annotations

from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from pipelines.modes import BENCHMARK_EXPERIMENT


class PrepareTrackingStore(Callback):
    """Before the jobs of a multirun start: the MLflow store's tables, and the experiments the jobs log to.

    Parallel jobs (hydra/launcher=joblib, a cluster launcher) that each found a new SQLite store would
    each create its tables, and jobs creating the same experiment at once would collide; done once here,
    the jobs only add their runs (and retry while another job holds SQLite's write lock).
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.tracking.enabled:
            return
        from visionkit.tracking import MlflowTracker

        tracker = MlflowTracker(config.tracking.uri, config.tracking.artifact_root, system_metrics=False)
        for name in experiment_names(config):
            tracker.experiment_id(name)


def experiment_names(config: DictConfig) -> list[str]:
    """The experiments the jobs of a sweep log to: one per task swept (task=a,b) and mode=benchmark's own."""
    tasks = swept_values(config, "task", config.task.name)
    names = set()
    for mode in swept_values(config, "mode", config.mode):
        names |= {BENCHMARK_EXPERIMENT} if mode == "benchmark" else set(tasks)
    return sorted(names)


def swept_values(config: DictConfig, key: str, default: str) -> list[str]:
    """The values a sweep gives `key` on the command line (`key=a,b` -> [a, b]), else [default]."""
    overrides = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    for override in overrides:
        if override.get_key_element() == key:
            return (
                [str(value) for value in override.sweep_iterator()]
                if override.is_sweep_override()
                else [str(override.value())]
            )
    return [default]
