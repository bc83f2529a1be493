"""mode=compare: the runs of an experiment as a table sorted by a metric."""

import math

import mlflow
import pytest

from visionkit.errors import UserError
from visionkit.tracking.runs import experiment_runs, lower_is_better, run_table

TINY = ("trainer.epochs=1", "data.limit=48", "export.enabled=false", "tracking.system_metrics=false")


def table_rows(stdout: str) -> list[list[str]]:
    """The rows under the heading and the dashed line of the printed table, split on runs of spaces."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("run "))
    return [line.split() for line in lines[start + 2 :] if line.strip()]


def test_compare_lists_the_runs_of_the_experiment_sorted_by_the_metric(pipeline):
    # Both runs from one process: a sweep starts Python, TensorFlow and MLflow's store once.
    sweep = ("hydra.mode=MULTIRUN", "model=lenet5,allconv", "model.width=0.25", f"hydra.sweep.dir={pipeline.tmp}/sweep")
    pipeline(*sweep, *TINY)
    _, runs = pipeline.mlflow_runs("classification")
    accuracy = {run.info.run_name: run.data.metrics["test_accuracy"] for run in runs}
    params = {run.info.run_name: int(run.data.params["model.total_params"]) for run in runs}
    assert len(accuracy) == 2

    done = pipeline("mode=compare")
    assert "experiment classification: 2 runs by test_accuracy, descending" in done.stdout
    heading = next(line for line in done.stdout.splitlines() if line.startswith("run "))
    assert heading.split() == [
        "run",
        "model",
        "data",
        "status",
        "test_accuracy",
        "test_top5_accuracy",
        "test_macro_f1",
        "params",
        "duration",
    ]
    rows = table_rows(done.stdout)
    assert sorted(row[0] for row in rows) == sorted(accuracy)
    assert [float(row[4]) for row in rows] == sorted((float(row[4]) for row in rows), reverse=True)
    for row in rows:
        assert row[1] in ("lenet5", "allconv") and row[2] == "digits" and row[3] == "FINISHED"
        assert float(row[4]) == pytest.approx(accuracy[row[0]], abs=5e-5)
        assert row[-2] == f"{params[row[0]]:,}"  # model.total_params, thousands separated

    runs = experiment_runs(f"sqlite:///{pipeline.store}", "classification")
    f1 = {run.info.run_name: run.data.metrics["test_macro_f1"] for run in runs}
    table = run_table(runs, "test_macro_f1", ascending=True, limit=1)
    assert [f1[row[0]] for row in table.rows] == [min(f1.values())] and table.total_runs == 2
    with pytest.raises(
        UserError,
        match=r"^compare.metric: no run has a metric 'test_accurcy'; metrics there: .*"
        r"test_accuracy, .*test_macro_f1",
    ):
        run_table(runs, "test_accurcy")


def test_unknown_experiment_lists_the_experiments(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.MlflowClient(uri).create_experiment("regression")
    with pytest.raises(
        UserError,
        match=r"^compare.experiment: no experiment 'segmentation' in sqlite:.*; "
        r"experiments there: Default, regression$",
    ):
        experiment_runs(uri, "segmentation")
    missing = tmp_path / "elsewhere" / "mlflow.db"
    with pytest.raises(UserError, match=f"^tracking.uri: no MLflow store at {missing}; runs of mode=train"):
        experiment_runs(f"sqlite:///{missing}", "classification")
    assert not missing.parent.exists()


def test_runs_without_the_metric_come_last_and_errors_sort_ascending(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("regression")
    for name, mae in [("a", 0.3), ("b", None), ("c", 0.1), ("d", 0.2)]:
        run = client.create_run(experiment, run_name=name, tags={"model": "lenet5", "data": "shapes"})
        if mae is not None:
            client.log_metric(run.info.run_id, "test_mae", mae)
            client.log_metric(run.info.run_id, "test_r2", 1 - mae)
        client.set_terminated(run.info.run_id)
    runs = experiment_runs(uri, "regression")
    assert lower_is_better("test_mae") and lower_is_better("val_loss") and not lower_is_better("test_r2")

    table = run_table(runs, "test_mae")
    assert [row[0] for row in table.rows] == ["c", "d", "a", "b"]
    assert table.headings[4:6] == ["test_mae", "test_r2"]
    assert table.rows[0][4:6] == ["0.1000", "0.9000"] and table.rows[-1][4:6] == ["", ""]
    assert [row[0] for row in run_table(runs, "test_r2").rows] == ["c", "d", "a", "b"]
    assert [row[0] for row in run_table(runs, "test_r2", ascending=True, limit=2).rows] == ["a", "d"]
    assert not any(math.isnan(float(cell)) for row in table.rows for cell in row[4:6] if cell)
    text = table.format().splitlines()
    assert text[0].split() == table.headings and set(text[1]) == {"-", " "} and len(text) == 2 + 4
