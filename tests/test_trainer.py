"""The trainer section goes through one conversion to compile settings: mode=train and the benchmark scripts
(benchmarks/configured.py) compile the same optimizer, schedule and XLA setting for the same config."""

from pathlib import Path

import keras
import pytest
from omegaconf import OmegaConf

from pipelines.settings import TrainerSettings
from pipelines.trainer import compile_settings
from visionkit.errors import UserError
from visionkit.training.fit import CompileSettings

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
# Compile settings away from their defaults (warm-up is the cosine schedule's): a conversion that forgot one
# would compile differently.
TRAINER = [
    "trainer.optimizer=sgd",
    "trainer.schedule=step",
    "trainer.learning_rate=0.05",
    "trainer.weight_decay=1e-4",
    "trainer.momentum=0.8",
    "trainer.jit_compile=false",
    "trainer.epochs=4",
    "trainer.batch_size=16",
]


def trainer_of(**changes) -> TrainerSettings:
    values = dict(
        epochs=3,
        batch_size=8,
        optimizer="adamw",
        learning_rate=0.01,
        schedule="cosine",
        warmup_epochs=1,
        weight_decay=0.05,
        momentum=0.5,
        early_stopping=2,
        seed=0,
        workers=1,
        jit_compile="true",
    )
    return TrainerSettings(**{**values, **changes})


def test_compile_settings_take_every_field_from_the_trainer_section():
    assert compile_settings(trainer_of()) == CompileSettings(
        epochs=3,
        learning_rate=0.01,
        optimizer="adamw",
        schedule="cosine",
        warmup_epochs=1,
        weight_decay=0.05,
        momentum=0.5,
        jit_compile=True,
    )
    with pytest.raises(UserError, match="^trainer.jit_compile must be true, false or auto, received 'sometimes'$"):
        compile_settings(trainer_of(jit_compile="sometimes"))


def optimizer_config(model: keras.Model) -> dict:
    """The optimizer's settings, without the name Keras makes unique per instance (sgd, sgd_1)."""
    return {key: value for key, value in model.optimizer.get_config().items() if key != "name"}


def learning_rates(model: keras.Model, steps) -> list[float]:
    schedule = keras.optimizers.schedules.deserialize(model.optimizer.get_config()["learning_rate"])
    return [float(schedule(step)) for step in steps]


def test_mode_train_and_the_benchmarks_compile_the_same_way(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from configured import load_config, model_on_arrays, prepare

    from pipelines import context, train

    monkeypatch.setattr(context, "output_dir", lambda: tmp_path)  # the run directory Hydra would make
    cfg = load_config([*TRAINER, "data.limit=64", "tracking=none"])
    job = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])  # what Hydra passes a mode
    trained = train.prepare(job).model
    benchmarked = model_on_arrays(job, *prepare(job))[0]

    assert optimizer_config(trained) == optimizer_config(benchmarked)
    assert isinstance(trained.optimizer, keras.optimizers.SGD) and optimizer_config(trained)["momentum"] == 0.8
    assert optimizer_config(trained)["weight_decay"] == pytest.approx(1e-4)
    # 64 images in batches of 16 for 4 epochs: 16 steps, x0.1 at half and at three quarters of them.
    expected = pytest.approx([0.05, 0.05, 0.005, 0.0005])
    assert learning_rates(trained, [0, 7, 9, 13]) == expected == learning_rates(benchmarked, [0, 7, 9, 13])
    assert trained.jit_compile is False and benchmarked.jit_compile is False
