"""The pipeline's configuration, task, data and model as `python -m pipelines.run` sets them up, for
the benchmark scripts: one place, so that every benchmark measures what the pipeline runs (the
CPU/GPU profile, TensorFlow's threads set before it starts, the precision, the seed, and the model
compiled by pipelines.trainer.compile_for_training, as mode=train compiles it)."""

from __future__ import annotations

import math

import numpy as np
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from pipelines import context
from pipelines.run import CONF_DIR  # also registers the config resolvers
from pipelines.settings import TrainerSettings
from pipelines.trainer import compile_for_training, start_engine, trainer_settings
from visionkit.training.fit import training_targets


def load_config(overrides: list[str]):
    """conf/config.yaml with `overrides`, then the CPU/GPU profile, which keeps the keys given here."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    context.apply_profile(cfg)
    return cfg


def prepare(cfg) -> tuple[TrainerSettings, object, object]:
    """(trainer settings, task, data bundle) as mode=train prepares them: TensorFlow's threads before
    anything starts it, then the precision, the seed, the task and the data (on one device: no strategy)."""
    trainer = trainer_settings(cfg)
    start_engine(trainer, distribute=False)
    task = context.load_task(cfg)
    return trainer, task, context.load_data(cfg, task)


def model_on_arrays(cfg, trainer: TrainerSettings, task, bundle):
    """(model compiled as mode=train compiles it, its target encoder, training images as one array,
    their encoded targets): training on pre-decoded, unaugmented data."""
    model = context.build_model(cfg, task, bundle)
    targets = training_targets(task.encode_targets, model)
    train = bundle.train
    compile_for_training(model, task, trainer, steps_per_epoch=math.ceil(len(train) / trainer.batch_size))
    return model, targets, np.ascontiguousarray(train.images), targets([train.sample(i) for i in range(len(train))])
