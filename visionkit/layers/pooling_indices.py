"""Max pooling that remembers where each maximum came from, and the unpooling that puts it back:
Badrinarayanan, Kendall & Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder Architecture for
Image Segmentation", TPAMI 2017 (arXiv:1511.00561), section 3 and Fig. 3.

SegNet's decoder up-samples with the max-pooling indices of the matching encoder layer: each
value goes back to the position its maximum came from and the other three positions of the 2x2
window are zero. Storing the indices (2 bits per window) instead of the encoder's feature maps
is what makes SegNet's memory small, and it keeps the boundaries sharp without learning an
up-sampling.

Both layers work on 2x2 windows with stride 2 (SegNet's only pooling) and channels-last maps of
even height and width. The window is reshaped to a last axis of 4, so an index is local to its
window: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right. Keras ops only (TensorFlow and
JAX backends).
"""

from __future__ import annotations

import keras
from keras import ops

WINDOW = 2


def _windows(inputs):
    """[B, H, W, C] -> [B, H/2, W/2, C, 4], the four values of each 2x2 window on the last axis."""
    _, height, width, channels = ops.shape(inputs)
    x = ops.reshape(inputs, (-1, height // WINDOW, WINDOW, width // WINDOW, WINDOW, channels))
    x = ops.transpose(x, (0, 1, 3, 5, 2, 4))
    return ops.reshape(x, (-1, height // WINDOW, width // WINDOW, channels, WINDOW * WINDOW))


def _check_even(shape, layer: str) -> None:
    for axis, size in zip(("height", "width"), shape[1:3]):
        if size is not None and size % WINDOW:
            raise ValueError(
                f"{layer}: 2x2 pooling with indices needs an even {axis}, received input shape {tuple(shape)!r}"
            )


@keras.saving.register_keras_serializable(package="visionkit")
class MaxPoolingWithArgmax2D(keras.layers.Layer):
    """2x2 stride-2 max pooling returning (maxima, indices); indices are int32 in 0..3 (see module).

    The maximum is read through a one-hot of the index, so the gradient goes to exactly the position
    the index names (the first maximum on ties, as after a ReLU), as Caffe's pooling backward does.
    """

    # The geometry, as keras.layers.MaxPooling2D names it (the layer table reads it).
    pool_size = (WINDOW, WINDOW)
    strides = (WINDOW, WINDOW)
    padding = "valid"

    def build(self, input_shape):
        _check_even(input_shape, self.name)

    def call(self, inputs):
        windows = _windows(inputs)
        indices = ops.cast(ops.argmax(windows, axis=-1), "int32")
        maxima = ops.sum(windows * ops.one_hot(indices, WINDOW * WINDOW, dtype=windows.dtype), axis=-1)
        return maxima, indices

    def compute_output_spec(self, inputs):
        batch, height, width, channels = inputs.shape
        shape = (batch, height and height // WINDOW, width and width // WINDOW, channels)
        return keras.KerasTensor(shape, dtype=self.compute_dtype), keras.KerasTensor(shape, dtype="int32")


@keras.saving.register_keras_serializable(package="visionkit")
class MaxUnpooling2D(keras.layers.Layer):
    """Called on [maxima, indices] of a MaxPoolingWithArgmax2D: a map twice the size holding each
    maximum at its recorded position of the 2x2 window and zeros elsewhere."""

    size = (WINDOW, WINDOW)  # the up-sampling factor, as keras.layers.UpSampling2D names it

    def call(self, inputs):
        values, indices = inputs
        _, height, width, channels = ops.shape(values)
        scattered = ops.one_hot(indices, WINDOW * WINDOW, dtype=values.dtype) * ops.expand_dims(values, -1)
        x = ops.reshape(scattered, (-1, height, width, channels, WINDOW, WINDOW))
        x = ops.transpose(x, (0, 1, 4, 2, 5, 3))
        return ops.reshape(x, (-1, height * WINDOW, width * WINDOW, channels))

    def compute_output_spec(self, inputs):
        batch, height, width, channels = inputs[0].shape
        shape = (batch, height and height * WINDOW, width and width * WINDOW, channels)
        return keras.KerasTensor(shape, dtype=self.compute_dtype)
