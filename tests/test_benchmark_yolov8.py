"""benchmarks/yolov8_vs_visionkit.py end to end on a few images and seconds: the table's rows and the
range of its figures, never their values."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "yolov8_vs_visionkit.py"


def load_script():
    spec = importlib.util.spec_from_file_location("yolov8_vs_visionkit", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_yolov8_and_retinanet_are_trained_within_the_budget_and_scored(capsys):
    rows = load_script().main(["--seconds", "3", "--limit", "32", "--batch-size", "16"])

    assert [row["detector"] for row in rows] == ["yolov8 (keras-cv)", "retinanet (visionkit)"]
    for row in rows:
        assert row["parameters"] > 0 and row["epochs"] > 0
        assert row["train_s"] >= 3  # at least the budget: it is checked at the end of each batch
        for name in ("map50", "map", "map75"):
            assert 0 <= row[name] <= 1, (row["detector"], name, row[name])
    out = capsys.readouterr().out
    assert "yolov8 (keras-cv)" in out and "map50 retinanet (visionkit) / yolov8: " in out
