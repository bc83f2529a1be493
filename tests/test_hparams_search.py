"""hparams_search=optimizer: an Optuna search whose trials are runs of their own, maximising each run's
best validation monitor; a bad optimized_metric is one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from pipelines.run import CONF_DIR, sweep_objective
from visionkit.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def test_every_searched_key_is_a_real_setting():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["hparams_search=optimizer"], return_hydra_config=True)
    assert cfg.optimized_metric == "validation_score" and cfg.hydra.sweeper.direction == "maximize"
    for key in cfg.hydra.sweeper.params:
        assert OmegaConf.select(cfg, key) is not None, key


def test_the_objective_is_the_named_result():
    cfg = OmegaConf.create({"mode": "train", "optimized_metric": "validation_score"})
    assert sweep_objective(cfg, {"validation_score": 0.5, "test_accuracy": 0.4}) == 0.5
    assert sweep_objective(OmegaConf.create({"mode": "train", "optimized_metric": None}), {"a": 1}) is None
    with pytest.raises(
        UserError,
        match="optimized_metric=val_acc is not a result of mode=train; available: test_accuracy, validation_score",
    ):
        sweep_objective(
            OmegaConf.create({"mode": "train", "optimized_metric": "val_acc"}),
            {"validation_score": 0.5, "test_accuracy": 0.4},
        )


def test_a_search_runs_its_trials_and_reports_the_best_validation_score(tmp_path):
    sweep_dir = tmp_path / "sweep"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.run",
            "hparams_search=optimizer",
            "hydra.sweeper.n_trials=2",
            "trainer.epochs=1",
            "data.limit=48",
            "export.enabled=false",
            "tracking=none",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    trials = sorted(sweep_dir.glob("*_classification_lenet5"))
    assert len(trials) == 2
    # Each trial's best validation accuracy, read from its own checkpoint state: the search's best is their maximum.
    best = [json.loads((t / "checkpoints" / "state.json").read_text())["best"] for t in trials]
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(max(best))
    assert set(results["best_params"]) == {"trainer.learning_rate", "trainer.weight_decay", "trainer.batch_size"}
