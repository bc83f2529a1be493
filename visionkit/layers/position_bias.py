"""A learned bias per spatial position, Silver et al. 2016 (Methods, "Neural network architecture"):
the AlphaGo policy network's last layer is a 1x1 convolution with one filter "with a different bias
for each position", so the prior of each board point is learned on its own, which a convolution
bias (one value shared by every position) cannot express.

Adds a bias of the input's shape without the batch axis, (H, W, C): for the policy head's single
channel that is one value per position, (H, W, 1).
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="visionkit")
class PositionBias(keras.layers.Layer):
    """y[h, w, c] = x[h, w, c] + bias[h, w, c]; needs fully defined spatial dimensions."""

    def __init__(self, bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        shape = tuple(input_shape[1:])
        if not shape or any(d is None for d in shape):
            raise ValueError(f"PositionBias needs fully defined (height, width, channels), received {input_shape!r}")
        self.bias = self.add_weight(shape=shape, initializer=self.bias_initializer, name="bias")

    def call(self, inputs):
        return ops.add(inputs, self.bias)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "bias_initializer": keras.initializers.serialize(self.bias_initializer)}
