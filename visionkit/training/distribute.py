"""Data-parallel training on TensorFlow's tf.distribute strategies.

`mirrored`: MirroredStrategy over every local GPU (or, with `cpu_devices=N` on a machine without
GPUs, over N logical CPU devices — how the strategy is tested without GPUs). `multi_worker`
(MultiWorkerMirroredStrategy over the workers in TF_CONFIG) is refused with the reason: Keras 3's
fit does not run under it.

The loader's batch is the global batch: the strategy splits it across the replicas and Keras
aggregates the metrics over all of them.
"""

from __future__ import annotations

import contextlib

import keras

from visionkit.errors import UserError

STRATEGIES = ("none", "mirrored", "multi_worker")


def configure_cpu_devices(count: int) -> None:
    """Split the CPU into `count` logical devices; must run before TensorFlow starts its runtime."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError as error:  # the runtime already started: too late to split
        raise UserError(f"trainer.cpu_devices={count}: {error}") from None


def make_strategy(name: str, *, cpu_devices: int = 0):
    """The tf.distribute strategy for `trainer.strategy`, or None for plain single-device training."""
    if name not in STRATEGIES:
        raise UserError(f"trainer.strategy must be one of {', '.join(STRATEGIES)}, received {name!r}")
    if name == "none":
        return None
    if keras.backend.backend() != "tensorflow":
        raise UserError(f"trainer.strategy={name} needs the TensorFlow backend (KERAS_BACKEND=tensorflow), "
                        f"not {keras.backend.backend()}")
    import tensorflow as tf

    if name == "multi_worker":
        # Keras 3's model.fit fails under MultiWorkerMirroredStrategy ("Attempt to convert a value
        # (PerReplica...)", keras-team/keras#20585, reproduced with TF 2.21 / Keras 3.15.1 and two
        # local workers), so the option is refused rather than left to crash mid-run.
        raise UserError("trainer.strategy=multi_worker: Keras 3's model.fit does not support "
                        "MultiWorkerMirroredStrategy (keras-team/keras#20585); use trainer.strategy=mirrored "
                        "on one machine")
    if cpu_devices > 1 and not tf.config.list_physical_devices("GPU"):
        configure_cpu_devices(cpu_devices)
        return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
    return tf.distribute.MirroredStrategy()


def strategy_scope(strategy):
    """Where variables must be created (model, optimizer, metrics) for `strategy`."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()
