"""mode=compare: the runs of an experiment as a table sorted by a metric, next to the MLflow UI.

    python -m pipelines.run mode=compare                                   # the task's runs by its headline metric
    python -m pipelines.run mode=compare task=regression compare.metric=test_r2
    python -m pipelines.run mode=compare compare.experiment=benchmark      # mode=benchmark's runs by training images/s

Reads the store of tracking.uri; starts no run.
"""

from __future__ import annotations

from omegaconf import DictConfig

from pipelines import context
from pipelines.modes import BENCHMARK_EXPERIMENT, BENCHMARK_METRICS
from pipelines.settings import CompareSettings, TrackingSettings, positive, typed
from visionkit.tracking.runs import experiment_runs, run_table


def run(cfg: DictConfig) -> str:
    settings = typed(cfg.compare, CompareSettings, "compare")
    tracking = typed(cfg.tracking, TrackingSettings, "tracking")
    positive(settings.limit, "compare.limit")
    experiment = settings.experiment or cfg.task.name
    headline = headline_metrics(cfg, experiment)
    runs = experiment_runs(tracking.uri, experiment)
    table = run_table(
        runs,
        settings.metric or headline[0],
        ascending=settings.ascending,
        limit=settings.limit,
        columns=settings.columns,
        preferred=headline,
    )
    text = table.format()
    shown = f"the first {len(table.rows)} of " if len(table.rows) < table.total_runs else ""
    order = "ascending" if table.ascending else "descending"
    count = f"{table.total_runs} run{'s' if table.total_runs != 1 else ''}"
    print(f"experiment {experiment}: {shown}{count} by {table.metric}, {order}\n{text}")
    return text


def headline_metrics(cfg: DictConfig, experiment: str) -> list[str]:
    """The metrics a run of `experiment` is judged by, the first one the default sort key."""
    if experiment == BENCHMARK_EXPERIMENT:
        return list(BENCHMARK_METRICS)
    return [f"test_{name}" for name in context.load_task(cfg).headline_metrics]
