"""The runs of an MLflow experiment as a table sorted by one metric, read with MlflowClient (no run is started).

What `mode=compare` prints: the terminal's view of the MLflow UI's run list, for a quick look after a sweep.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visionkit.errors import UserError

LOWER_IS_BETTER = ("loss", "mae", "mse", "rmse", "error")  # metric names with these words sort ascending
PAGE_SIZE = 1000  # MLflow's search_runs page
SQLITE_PREFIX = "sqlite:///"


@dataclass
class RunTable:
    headings: list[str]
    rows: list[list[str]]
    total_runs: int  # runs in the experiment, before the limit
    metric: str
    ascending: bool

    def format(self) -> str:
        """Aligned columns; numbers right-aligned."""
        widths = [max(len(line[i]) for line in [self.headings, *self.rows]) for i in range(len(self.headings))]
        numeric = [i for i in range(len(self.headings)) if all(_is_number(row[i]) for row in self.rows)]

        def line(cells: Sequence[str]) -> str:
            return "  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

        return "\n".join([line(self.headings), "  ".join("-" * w for w in widths), *map(line, self.rows)]).rstrip()


def lower_is_better(metric: str) -> bool:
    return any(word in metric.split("_") for word in LOWER_IS_BETTER)


def opened_store(uri: str):
    """MLflow's client of the store at `uri`. A store MLflow refuses (its file store, e.g. file:///path or ./mlruns, is
    closed to new runs unless MLFLOW_ALLOW_FILE_STORE=true) is a one-line error when the tracker is made, before any
    training, not a traceback when the first run starts."""
    import mlflow

    try:
        return mlflow.MlflowClient(tracking_uri=uri)
    except mlflow.exceptions.MlflowException as error:
        raise UserError(f"tracking.uri={uri}: {' '.join(error.message.split())}") from None


def experiment_runs(tracking_uri: str, experiment: str) -> list:
    """Every run of `experiment` in the store at `tracking_uri`; an unknown experiment is a UserError
    that lists the experiments there are."""
    database = Path(tracking_uri.removeprefix(SQLITE_PREFIX)) if tracking_uri.startswith(SQLITE_PREFIX) else None
    if database is not None and not database.is_file():  # reading would create an empty store there
        raise UserError(f"tracking.uri: no MLflow store at {database}; runs of mode=train are tracked there")
    client = opened_store(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = sorted(e.name for e in client.search_experiments())
        raise UserError(
            f"compare.experiment: no experiment '{experiment}' in {tracking_uri}; "
            f"experiments there: {', '.join(names) or '(none)'}"
        )
    runs, token = [], None
    while True:
        page = client.search_runs([found.experiment_id], max_results=PAGE_SIZE, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def run_table(
    runs: Sequence,
    metric: str,
    *,
    ascending: bool | None = None,
    limit: int = 20,
    columns: int = 2,
    preferred: Sequence[str] = (),
) -> RunTable:
    """Runs sorted by `metric` (runs without it last), at most `limit` rows.

    Beside the sort key, up to `columns` more metrics with the same prefix (`test_` for `test_accuracy`),
    the `preferred` ones first. `ascending=None` sorts losses and errors ascending, everything else descending.
    """
    present = sorted({name for run in runs for name in run.data.metrics})
    if metric not in present:
        raise UserError(
            f"compare.metric: no run has a metric '{metric}'; metrics there: {', '.join(present) or '(none)'}"
        )
    ascending = lower_is_better(metric) if ascending is None else ascending
    extras = _extra_metrics(metric, present, preferred)[:columns]

    def key(run) -> tuple[bool, float]:
        value = run.data.metrics.get(metric, math.nan)
        return math.isnan(value), value if ascending else -value

    ordered = sorted(runs, key=key)[:limit]
    headings = ["run", "model", "data", "status", metric, *extras, "params", "duration"]
    rows = [
        [
            run.info.run_name or run.info.run_id,
            run.data.tags.get("model", ""),
            run.data.tags.get("data", ""),
            run.info.status,
            *(_number(run.data.metrics.get(name)) for name in (metric, *extras)),
            _count(run.data.params.get("model.total_params")),
            _duration(run.info.start_time, run.info.end_time),
        ]
        for run in ordered
    ]
    return RunTable(headings, rows, len(runs), metric, ascending)


def _extra_metrics(metric: str, present: Sequence[str], preferred: Sequence[str]) -> list[str]:
    prefix = metric.split("_", 1)[0] + "_" if "_" in metric else None
    same_prefix = [name for name in present if prefix and name.startswith(prefix) and name != metric]
    return [name for name in preferred if name in same_prefix] + [name for name in same_prefix if name not in preferred]


def _number(value: float | None) -> str:
    if value is None or math.isnan(value):
        return ""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4f}"


def _count(value: Any) -> str:
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return ""


def _duration(start_ms: int | None, end_ms: int | None) -> str:
    if not start_ms or not end_ms:
        return "-"  # still running, or ended without telling MLflow (killed)
    seconds = round((end_ms - start_ms) / 1000)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def _is_number(cell: str) -> bool:
    return cell == "" or cell.replace(",", "").replace(".", "", 1).lstrip("-").isdigit()
