"""Kernel initialisers the segmentation models start from (visionkit.models.fcn, visionkit.models.dilated).
Registered as Keras-serializable, as the layers are: a saved model's configuration names them."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

INIT_NOISE = 1e-2  # ContextIdentity's noise standard deviation, relative to the identity's weight C / c_out


@keras.saving.register_keras_serializable(package="visionkit")
class BilinearUpsampling(keras.initializers.Initializer):
    """Kernel (k, k, channels, channels) of a transposed convolution that up-samples every channel by
    bilinear interpolation and mixes none (the FCN reference code's `upsample_filt`)."""

    def __call__(self, shape, dtype=None):
        size, _, out_channels, in_channels = shape
        factor = (size + 1) // 2
        centre = factor - 1 if size % 2 else factor - 0.5
        taps = 1 - np.abs(np.arange(size) - centre) / factor
        kernel = np.zeros(shape, dtype="float32")
        diagonal = np.arange(min(out_channels, in_channels))
        kernel[:, :, diagonal, diagonal] = np.outer(taps, taps)[:, :, None]
        return ops.convert_to_tensor(kernel, dtype=dtype)


@keras.saving.register_keras_serializable(package="visionkit")
class ContextIdentity(keras.initializers.Initializer):
    """Yu & Koltun's identity initialisation (eq. 3-4) of a context layer mapping c_in to c_out channels
    of a module on C = `classes` channels: centre tap C / c_out where floor(a C / c_in) = floor(b C / c_out),
    zero elsewhere, plus noise of standard deviation INIT_NOISE * C / c_out where c_in or c_out differs
    from C (eq. 4's noise breaks the ties between the copies; with c_in = c_out = C it is eq. 3's exact
    identity)."""

    def __init__(self, classes: int, seed=None):
        self.classes = classes
        self.seed = seed

    def __call__(self, shape, dtype=None):
        rows, cols, c_in, c_out = shape
        scale = self.classes / c_out
        same_group = (
            np.arange(c_in)[:, None] * self.classes // c_in == np.arange(c_out)[None, :] * self.classes // c_out
        )
        kernel = np.zeros(shape, dtype="float32")
        kernel[rows // 2, cols // 2] = scale * same_group
        kernel = ops.convert_to_tensor(kernel, dtype=dtype)
        if c_in == c_out == self.classes:
            return kernel
        return kernel + keras.random.normal(shape, stddev=INIT_NOISE * scale, dtype=dtype, seed=self.seed)

    def get_config(self):
        return {"classes": self.classes, "seed": self.seed}
