"""DenseNet: Huang, Liu, van der Maaten & Weinberger, "Densely Connected Convolutional Networks",
CVPR 2017 (arXiv:1608.06993), Table 1.

Faithful: DenseNet-BC for ImageNet — a 7x7/2 convolution with 64 filters, batch normalisation,
ReLU and 3x3/2 max pooling; four dense blocks whose layers are BN-ReLU-1x1 convolution (4k
filters)-BN-ReLU-3x3 convolution (k filters), each layer's output concatenated to its input;
transitions BN-ReLU-1x1 convolution (compression 0.5)-2x2 average pooling; a final BN-ReLU, global
average pooling and a linear softmax classifier. Growth rate k=32; blocks (6, 12, 24, 16),
(6, 12, 32, 32) and (6, 12, 48, 32) for 121, 169 and 201 layers. Layer names, padding and the
batch normalisation epsilon are those of keras.applications, so its weights transfer one to one.

Options: `growth_rate` and `compression` (the paper's k and theta), `width` (scales the stem and
the growth rate) and `dropout` before the classifier (the paper uses none on ImageNet).
Feature taps: stride 2 after the stem's ReLU; strides 4, 8 and 16 on the BN-ReLU of each dense
block's output (inside the transition, before its compressing convolution and pooling); stride 32
after the final BN-ReLU — the same block-output-BN-ReLU representation at every stage.
"""

from __future__ import annotations

import keras
from keras import layers

from visionkit.models.common import (
    IMAGE_TASKS,
    check_input_shape,
    check_top,
    image_input,
    pooled_classifier,
    register_variants,
    scaled,
    tap,
)

BN_EPSILON = 1.001e-5  # as keras.applications, whose weights this architecture loads

# name: layers per dense block (Table 1)
VARIANTS = {
    "densenet121": (6, 12, 24, 16),
    "densenet169": (6, 12, 32, 32),
    "densenet201": (6, 12, 48, 32),
}


def bn_relu(x, name):
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def conv_block(x, growth_rate, *, name):
    """One dense layer: BN-ReLU-1x1 conv (4k)-BN-ReLU-3x3 conv (k), concatenated to its input."""
    y = bn_relu(x, f"{name}_0")
    y = layers.Conv2D(4 * growth_rate, 1, use_bias=False, name=f"{name}_1_conv")(y)
    y = bn_relu(y, f"{name}_1")
    y = layers.Conv2D(growth_rate, 3, padding="same", use_bias=False, name=f"{name}_2_conv")(y)
    return layers.Concatenate(name=f"{name}_concat")([x, y])


def transition_block(x, compression, *, stride, name):
    """BN-ReLU (tapped at the block's stride), 1x1 conv keeping `compression` of the channels, 2x2 average pooling."""
    x = tap(bn_relu(x, name), stride)
    x = layers.Conv2D(max(1, int(x.shape[-1] * compression)), 1, use_bias=False, name=f"{name}_conv")(x)
    return layers.AveragePooling2D(2, strides=2, name=f"{name}_pool")(x)


def densenet(
    variant,
    *,
    input_shape=(224, 224, 3),
    num_classes=None,
    include_top=True,
    width=1.0,
    dropout=None,
    classifier_activation="softmax",
    pixel_mean=None,
    pixel_std=None,
    growth_rate=32,
    compression=0.5,
) -> keras.Model:
    blocks = VARIANTS[variant]
    input_shape = check_input_shape(input_shape, min_size=32, model=variant)
    check_top(num_classes, include_top, model=variant)
    if isinstance(growth_rate, bool) or not isinstance(growth_rate, int) or growth_rate < 1:
        raise ValueError(f"{variant}: growth_rate must be a positive integer, received {growth_rate!r}")
    if isinstance(compression, bool) or not isinstance(compression, (int, float)) or not 0 < compression <= 1:
        raise ValueError(f"{variant}: compression must be in (0, 1], received {compression!r}")
    growth = scaled(growth_rate, width)
    inputs, x = image_input(input_shape, pixel_mean, pixel_std)
    x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = layers.Conv2D(scaled(64, width), 7, strides=2, use_bias=False, name="conv1_conv")(x)
    x = tap(bn_relu(x, "conv1"), 2)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    for stage, depth in enumerate(blocks):
        for block in range(depth):
            x = conv_block(x, growth, name=f"conv{stage + 2}_block{block + 1}")
        if stage < len(blocks) - 1:
            x = transition_block(x, compression, stride=4 * 2**stage, name=f"pool{stage + 2}")
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name="bn")(x)
    x = tap(layers.Activation("relu", name="relu")(x), 4 * 2 ** (len(blocks) - 1))
    if include_top:
        x = pooled_classifier(x, num_classes, dropout, classifier_activation)
    return keras.Model(inputs, x, name=variant)


register_variants(
    globals(),
    densenet,
    VARIANTS,
    paper="Huang et al. 2017",
    tasks=IMAGE_TASKS,
    paper_input=(224, 224, 3),
    paper_classes=1000,
    imagenet={
        "densenet121": ("DenseNet121", "torch"),
        "densenet169": ("DenseNet169", "torch"),
        "densenet201": ("DenseNet201", "torch"),
    },
    describe=lambda v: f"{v} (DenseNet-BC, dense blocks {VARIANTS[v]}); Huang et al. 2017.",
)
