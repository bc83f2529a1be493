"""What the machine offers the backend Keras runs on."""

from __future__ import annotations

import keras


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
