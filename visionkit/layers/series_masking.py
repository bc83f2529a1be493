"""The two layers that let one float32 input carry a series and its mask: missing values and the padding of
shorter series are NaN (visionkit.data.series). StandardizeSeries standardises each channel and sets them to 0;
ObservedMean averages features over the observed steps only."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="visionkit")
class StandardizeSeries(keras.layers.Layer):
    """(x - mean) / std per channel, with missing values (NaN: gaps and the padding of shorter series) as 0."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], **kwargs):
        super().__init__(**kwargs)
        self.mean = [float(v) for v in mean]
        self.std = [float(v) for v in std]

    def call(self, x):
        x = (x - ops.convert_to_tensor(self.mean, x.dtype)) / ops.convert_to_tensor(self.std, x.dtype)
        return ops.where(ops.isnan(x), ops.zeros_like(x), x)

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std}


@keras.saving.register_keras_serializable(package="visionkit")
class ObservedMean(keras.layers.Layer):
    """Average of features [B, T', F] over the observed time steps of the raw series [B, T, C] (a step is
    observed when any channel is not NaN). T' < T for unpadded ('valid') convolutions, whose output t sees
    steps t .. t + T - T': it counts when the last of them is observed, as padding only ever follows a series."""

    def call(self, inputs):
        features, series = inputs
        observed = ops.any(ops.logical_not(ops.isnan(series)), axis=-1)
        observed = ops.cast(observed[:, ops.shape(series)[1] - ops.shape(features)[1] :], features.dtype)
        total = ops.sum(features * observed[..., None], axis=1)
        return total / ops.maximum(ops.sum(observed, axis=1, keepdims=True), 1.0)

    def compute_output_shape(self, input_shapes):
        return (input_shapes[0][0], input_shapes[0][-1])
