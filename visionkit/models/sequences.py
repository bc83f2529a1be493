"""Convolutional networks for sequences: a sample is a float32 series [T, C] (time steps x channels).

- `tdnn`: the time-delay neural network of Waibel, Hanazawa, Hinton, Shikano & Lang, "Phoneme recognition
  using time-delay neural networks", IEEE TASSP 37(3), 1989: 16 mel coefficients x 15 frames in, 8 units over
  3 frames, one unit per class over 5 frames, then each class's evidence integrated over time.
- `wavenet`: the causal dilated stack of van den Oord et al., "WaveNet: a generative model for raw audio",
  2016: dilations 1, 2, 4, ... repeated in blocks, gated tanh x sigmoid units, residual and skip connections.
  Its receptive field is 1 + (k - 1) * sum(dilations) time steps.
- `fcn1d` and `resnet1d`: Wang, Yan & Oates, "Time series classification from scratch with deep neural
  networks: a strong baseline", IJCNN 2017.
- `inception_time`: one network of Fawaz et al., "InceptionTime: finding AlexNet for time series
  classification", DMKD 34, 2020 (the paper averages an ensemble of five).

Variable-length series arrive padded with NaN (visionkit.data.series): the first layer standardises the
observed values and sets missing ones to zero, and the pooling over time averages observed steps only, so
a causal network's prediction does not depend on how much padding follows the series.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from visionkit.layers import ObservedMean, StandardizeSeries
from visionkit.models.common import check_top, predictions, scaled
from visionkit.registry import MODELS

SERIES_TASKS = ("classification", "regression")
# The UCR GunPoint series: 150 steps of one channel, two classes (the 1-D classifiers' reference input).
GUNPOINT = {"paper_input": (150, 1), "paper_classes": 2, "modality": "series"}


def check_series_shape(input_shape, *, min_steps: int, model: str) -> tuple[int, int]:
    """Validate a (time steps, channels) input shape; raise ValueError quoting the received value."""
    shape = tuple(input_shape) if input_shape is not None else ()
    if len(shape) != 2 or any(not isinstance(d, int) or d <= 0 for d in shape):
        raise ValueError(f"{model}: input_shape must be (time steps, channels), received {input_shape!r}")
    if shape[0] < min_steps:
        raise ValueError(f"{model}: the series must have at least {min_steps} time steps, received {input_shape!r}")
    return shape


def series_input(input_shape, mean=None, std=None) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """The model input (raw float32 values, NaN where missing) and its standardised version: like images'
    normalisation, standardisation is in the model so that an export takes the raw series."""
    channels = input_shape[-1]
    mean = [0.0] * channels if mean is None else _per_channel(mean, channels, "pixel_mean")
    std = [1.0] * channels if std is None else _per_channel(std, channels, "pixel_std")
    inputs = keras.Input(shape=input_shape, name="series")
    return inputs, StandardizeSeries(mean, std, name="standardize")(inputs)


def _per_channel(value, channels: int, what: str) -> list[float]:
    values = [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)] * channels
    if len(values) != channels:
        raise ValueError(f"{what} needs {channels} values (one per channel), received {value!r}")
    return values


def series_top(features, inputs, num_classes, include_top, dropout, activation, name: str) -> keras.Model:
    """The per-step features as a trunk (`include_top=False`), or pooled over the observed steps and
    classified."""
    if not include_top:
        return keras.Model(inputs, layers.Identity(name="features")(features), name=name)
    x = ObservedMean(name="avg_pool")([features, inputs])
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    return keras.Model(inputs, predictions(x, num_classes, activation), name=name)


def conv_bn_relu(x, filters: int, kernel_size: int, name: str):
    x = layers.Conv1D(filters, kernel_size, padding="same", name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


@MODELS.register(
    tasks=SERIES_TASKS, paper="Waibel et al. 1989", paper_input=(15, 16), paper_classes=3, modality="series"
)
def tdnn(
    *,
    input_shape=(15, 16),
    num_classes=None,
    include_top=True,
    hidden_units=(8,),
    delays=(3, 5),
    activation="sigmoid",
    classifier_activation="softmax",
    pixel_mean=None,
    pixel_std=None,
) -> keras.Model:
    """Time-delay network: each hidden layer is a 'valid' convolution over `delays[i]` frames (weights shared
    over time); the output layer has one unit per class over `delays[-1]` frames, and each unit's evidence is
    averaged over time (the paper's integration) before `classifier_activation`. The paper: 16 x 15 in, 8 units
    over 3 frames, 3 over 5 (b, d, g). The output units are linear before integration (the paper's are
    sigmoid), so that a regression head is not bounded. `include_top=False` gives the last hidden layer's
    per-frame outputs."""
    if len(delays) != len(hidden_units) + 1:
        raise ValueError(
            f"tdnn: delays needs one entry per hidden layer and one for the output layer "
            f"({len(hidden_units) + 1}), received {delays!r}"
        )
    input_shape = check_series_shape(input_shape, min_steps=sum(d - 1 for d in delays) + 1, model="tdnn")
    check_top(num_classes, include_top, model="tdnn")
    inputs, x = series_input(input_shape, pixel_mean, pixel_std)
    for i, (units, delay) in enumerate(zip(hidden_units, delays), start=1):
        x = layers.Conv1D(units, delay, activation=activation, name=f"hidden{i}_conv")(x)
    if not include_top:
        return series_top(x, inputs, num_classes, False, None, None, "tdnn")
    x = layers.Conv1D(num_classes, delays[-1], name="output_conv")(x)
    x = ObservedMean(name="integration")([x, inputs])
    return keras.Model(
        inputs, layers.Activation(classifier_activation, dtype="float32", name="predictions")(x), name="tdnn"
    )


def wavenet_dilations(kernel_size: int, layers_per_block: int, blocks: int) -> list[int]:
    """1, 2, 4, ... 2^(layers_per_block - 1), repeated `blocks` times."""
    return [2**i for i in range(layers_per_block)] * blocks


def wavenet_receptive_field(kernel_size: int, dilations: Sequence[int]) -> int:
    """Time steps one output of a causal dilated stack sees: 1 + (k - 1) * sum(dilations)."""
    return 1 + (kernel_size - 1) * sum(dilations)


@MODELS.register(tasks=SERIES_TASKS, paper="van den Oord et al. 2016", **GUNPOINT)
def wavenet(
    *,
    input_shape=(150, 1),
    num_classes=None,
    include_top=True,
    filters=32,
    skip_filters=64,
    kernel_size=2,
    layers_per_block=6,
    blocks=2,
    dropout=None,
    classifier_activation="softmax",
    pixel_mean=None,
    pixel_std=None,
) -> keras.Model:
    """Causal dilated convolutions in `blocks` blocks of dilations 1, 2, ..., 2^(layers_per_block - 1); each
    layer a gated unit tanh(W_f * x) . sigmoid(W_g * x), a 1x1 residual back into the stack and a 1x1 skip
    output; the skips summed, ReLU, 1x1, ReLU. Output t sees steps t - r + 1 .. t only (r the receptive field)."""
    input_shape = check_series_shape(input_shape, min_steps=1, model="wavenet")
    check_top(num_classes, include_top, model="wavenet")
    dilations = wavenet_dilations(kernel_size, layers_per_block, blocks)
    print(f"wavenet: receptive field {wavenet_receptive_field(kernel_size, dilations)} time steps")
    inputs, x = series_input(input_shape, pixel_mean, pixel_std)
    x = layers.Conv1D(filters, 1, name="input_conv")(x)  # 1x1: the receptive field is the dilated stack's
    skips = []
    for i, dilation in enumerate(dilations):
        name = f"block{i // layers_per_block + 1}_layer{i % layers_per_block + 1}"
        causal = dict(padding="causal", dilation_rate=dilation)
        signal = layers.Conv1D(filters, kernel_size, activation="tanh", **causal, name=f"{name}_filter")(x)
        gate = layers.Conv1D(filters, kernel_size, activation="sigmoid", **causal, name=f"{name}_gate")(x)
        gated = layers.Multiply(name=f"{name}_gated")([signal, gate])
        skips.append(layers.Conv1D(skip_filters, 1, name=f"{name}_skip")(gated))
        x = layers.Add(name=f"{name}_residual")([x, layers.Conv1D(filters, 1, name=f"{name}_res")(gated)])
    x = layers.Activation("relu", name="skips_relu")(layers.Add(name="skips")(skips) if len(skips) > 1 else skips[0])
    x = layers.Conv1D(skip_filters, 1, activation="relu", name="post_conv")(x)
    return series_top(x, inputs, num_classes, include_top, dropout, classifier_activation, "wavenet")


@MODELS.register(tasks=SERIES_TASKS, paper="Wang, Yan & Oates 2017", **GUNPOINT)
def fcn1d(
    *,
    input_shape=(150, 1),
    num_classes=None,
    include_top=True,
    width=1.0,
    filters=(128, 256, 128),
    kernel_sizes=(8, 5, 3),
    dropout=None,
    classifier_activation="softmax",
    pixel_mean=None,
    pixel_std=None,
) -> keras.Model:
    """Fully convolutional network: convolution, batch norm, ReLU blocks ('same' padding), global average
    pooling, softmax. The paper: 128, 256, 128 filters of 8, 5, 3 steps."""
    _check_pairs(filters, kernel_sizes, "fcn1d")
    input_shape = check_series_shape(input_shape, min_steps=1, model="fcn1d")
    check_top(num_classes, include_top, model="fcn1d")
    inputs, x = series_input(input_shape, pixel_mean, pixel_std)
    for i, (count, size) in enumerate(zip(filters, kernel_sizes), start=1):
        x = conv_bn_relu(x, scaled(count, width), size, f"block{i}")
    return series_top(x, inputs, num_classes, include_top, dropout, classifier_activation, "fcn1d")


def _check_pairs(filters, kernel_sizes, model: str) -> None:
    if len(filters) != len(kernel_sizes) or not filters:
        raise ValueError(
            f"{model}: filters and kernel_sizes need one entry per convolution each, received {filters!r} "
            f"and {kernel_sizes!r}"
        )


@MODELS.register(tasks=SERIES_TASKS, paper="Wang, Yan & Oates 2017", **GUNPOINT)
def resnet1d(
    *,
    input_shape=(150, 1),
    num_classes=None,
    include_top=True,
    width=1.0,
    filters=(64, 128, 128),
    kernel_sizes=(8, 5, 3),
    dropout=None,
    classifier_activation="softmax",
    pixel_mean=None,
    pixel_std=None,
) -> keras.Model:
    """Residual network: one block per entry of `filters`, each three convolutions of `kernel_sizes` steps
    with batch norm, a shortcut (1x1 convolution and batch norm where the channels change, else batch norm)
    added before the last ReLU; global average pooling, softmax. The paper: blocks of 64, 128, 128 filters."""
    input_shape = check_series_shape(input_shape, min_steps=1, model="resnet1d")
    check_top(num_classes, include_top, model="resnet1d")
    if not filters or not kernel_sizes:
        raise ValueError(
            f"resnet1d: filters and kernel_sizes must not be empty, received {filters!r}, {kernel_sizes!r}"
        )
    inputs, x = series_input(input_shape, pixel_mean, pixel_std)
    for b, count in enumerate(filters, start=1):
        count, shortcut, y = scaled(count, width), x, x
        for i, size in enumerate(kernel_sizes, start=1):
            y = layers.Conv1D(count, size, padding="same", name=f"block{b}_conv{i}")(y)
            y = layers.BatchNormalization(name=f"block{b}_bn{i}")(y)
            if i < len(kernel_sizes):
                y = layers.Activation("relu", name=f"block{b}_relu{i}")(y)
        if shortcut.shape[-1] != count:
            shortcut = layers.Conv1D(count, 1, name=f"block{b}_shortcut_conv")(shortcut)
        shortcut = layers.BatchNormalization(name=f"block{b}_shortcut_bn")(shortcut)
        x = layers.Activation("relu", name=f"block{b}_out")(layers.Add(name=f"block{b}_add")([shortcut, y]))
    return series_top(x, inputs, num_classes, include_top, dropout, classifier_activation, "resnet1d")


def inception_module(x, filters: int, kernel_sizes: Sequence[int], bottleneck: int, name: str):
    """A 1x1 bottleneck, then convolutions of each kernel size beside a 3-step max pooling followed by a 1x1
    convolution; concatenated, batch norm, ReLU."""
    narrow = layers.Conv1D(bottleneck, 1, use_bias=False, name=f"{name}_bottleneck")(x) if x.shape[-1] > 1 else x
    branches = [
        layers.Conv1D(filters, size, padding="same", use_bias=False, name=f"{name}_conv{size}")(narrow)
        for size in kernel_sizes
    ]
    pooled = layers.MaxPooling1D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    branches.append(layers.Conv1D(filters, 1, use_bias=False, name=f"{name}_pool_conv")(pooled))
    x = layers.Concatenate(name=f"{name}_concat")(branches)
    return layers.Activation("relu", name=f"{name}_relu")(layers.BatchNormalization(name=f"{name}_bn")(x))


@MODELS.register(tasks=SERIES_TASKS, paper="Fawaz et al. 2020", **GUNPOINT)
def inception_time(
    *,
    input_shape=(150, 1),
    num_classes=None,
    include_top=True,
    width=1.0,
    depth=6,
    filters=32,
    kernel_sizes=(40, 20, 10),
    bottleneck=32,
    residual_every=3,
    dropout=None,
    classifier_activation="softmax",
    pixel_mean=None,
    pixel_std=None,
) -> keras.Model:
    """`depth` inception modules with a residual connection (1x1 convolution, batch norm) around every
    `residual_every` of them; global average pooling, softmax. The paper: depth 6, 32 filters per branch,
    kernels of 40, 20 and 10 steps, a 32-channel bottleneck, a shortcut every 3 modules."""
    input_shape = check_series_shape(input_shape, min_steps=1, model="inception_time")
    check_top(num_classes, include_top, model="inception_time")
    if depth < 1 or residual_every < 1:
        raise ValueError(
            f"inception_time: depth and residual_every must be >= 1, received {depth!r}, {residual_every!r}"
        )
    inputs, x = series_input(input_shape, pixel_mean, pixel_std)
    shortcut = x
    for d in range(1, depth + 1):
        x = inception_module(x, scaled(filters, width), kernel_sizes, scaled(bottleneck, width), f"module{d}")
        if d % residual_every == 0:
            projected = layers.Conv1D(x.shape[-1], 1, use_bias=False, name=f"shortcut{d}_conv")(shortcut)
            projected = layers.BatchNormalization(name=f"shortcut{d}_bn")(projected)
            x = layers.Activation("relu", name=f"shortcut{d}_relu")(layers.Add(name=f"shortcut{d}_add")([projected, x]))
            shortcut = x
    return series_top(x, inputs, num_classes, include_top, dropout, classifier_activation, "inception_time")
