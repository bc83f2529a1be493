"""Local response normalisation, Krizhevsky, Sutskever & Hinton 2012, section 3.3.

b[c] = a[c] / (k + alpha * sum(a[c']^2 for c' in c-n/2 .. c+n/2)) ** beta, across channels at each
pixel. The paper's constants are k=2, n=5, alpha=1e-4, beta=0.75. As in the paper (and
tf.nn.local_response_normalization), alpha multiplies the sum itself; Caffe divides it by n.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="visionkit")
class LocalResponseNormalization(keras.layers.Layer):
    """Across-channel LRN on channels-last feature maps; `size` is n, the window of channels."""

    def __init__(self, size: int = 5, bias: float = 2.0, alpha: float = 1e-4, beta: float = 0.75, **kwargs):
        super().__init__(**kwargs)
        if size < 1 or size % 2 == 0:
            raise ValueError(f"LocalResponseNormalization size must be a positive odd number, received {size!r}")
        self.size, self.bias, self.alpha, self.beta = size, bias, alpha, beta

    def call(self, inputs):
        squares = ops.square(inputs)
        half = self.size // 2
        padded = ops.pad(squares, [[0, 0]] * (len(inputs.shape) - 1) + [[half, half]])
        channels = inputs.shape[-1]
        window_sum = sum(padded[..., offset : offset + channels] for offset in range(self.size))
        return inputs / ops.power(self.bias + self.alpha * window_sum, self.beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "size": self.size, "bias": self.bias, "alpha": self.alpha, "beta": self.beta}
