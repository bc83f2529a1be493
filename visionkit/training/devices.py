"""What the machine offers the backend Keras runs on."""

from __future__ import annotations

import keras

from visionkit.errors import UserError


def accelerators() -> list[str]:
    """Names of the GPUs (or TPUs) the current Keras backend can use; empty on a CPU-only machine."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return [str(d) for d in jax.devices() if d.platform in ("gpu", "tpu")]
    if backend == "torch":
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    import tensorflow as tf

    return [d.name for d in tf.config.list_physical_devices("GPU")]


def set_cpu_threads(count: int) -> str | None:
    """Runs TensorFlow's ops on `count` CPU threads (within and across ops; 0 keeps its default, one
    per core). A network as small as LeNet-5 gains nothing from more threads per op, while the spare
    core keeps the loader's augmentation off the model's critical path. Must come before TensorFlow
    starts its runtime; returns why it could not be applied, for the caller to say."""
    if count < 0:
        raise UserError(f"trainer.cpu_threads must be at least 0, received {count}")
    if count == 0 or keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    try:  # TensorFlow accepts a count equal to the current one at any time, another only before it starts
        tf.config.threading.set_intra_op_parallelism_threads(count)
        tf.config.threading.set_inter_op_parallelism_threads(count)
    except RuntimeError:  # the runtime already started in this process (e.g. an earlier run in the same Python)
        return f"trainer.cpu_threads={count} not applied: TensorFlow already started in this process"
    return None
