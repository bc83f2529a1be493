"""ResNet: He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016
(arXiv:1512.03385), Table 1.

Basic blocks (two 3x3 convolutions) for 18 and 34 layers, bottleneck blocks (1x1-3x3-1x1) for
50, 101 and 152, batch normalisation after every convolution. Layer names follow
keras.applications (`conv3_block2_1_conv`) and the bottleneck variants keep its convolution
biases and stride placement, so keras.applications ResNet weights transfer one to one.
The basic variants have bias-free convolutions, as in the reference PyTorch implementation.
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

BN_EPSILON = 1.001e-5

# name: (block kind, blocks per stage conv2..conv5, convolutions with bias)
VARIANTS = {
    "resnet18": ("basic", (2, 2, 2, 2), False),
    "resnet34": ("basic", (3, 4, 6, 3), False),
    "resnet50": ("bottleneck", (3, 4, 6, 3), True),
    "resnet101": ("bottleneck", (3, 4, 23, 3), True),
    "resnet152": ("bottleneck", (3, 8, 36, 3), True),
}


def conv_bn(x, filters, kernel_size, *, strides=1, padding="valid", use_bias, name, relu=True):
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, use_bias=use_bias, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x) if relu else x


def basic_block(x, filters, *, stride, use_bias, name):
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = conv_bn(x, filters, 1, strides=stride, use_bias=use_bias, name=f"{name}_0", relu=False)
    x = conv_bn(x, filters, 3, strides=stride, padding="same", use_bias=use_bias, name=f"{name}_1")
    x = conv_bn(x, filters, 3, padding="same", use_bias=use_bias, name=f"{name}_2", relu=False)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def bottleneck_block(x, filters, *, stride, use_bias, name):
    shortcut = x
    if stride != 1 or x.shape[-1] != 4 * filters:
        shortcut = conv_bn(x, 4 * filters, 1, strides=stride, use_bias=use_bias, name=f"{name}_0", relu=False)
    x = conv_bn(x, filters, 1, strides=stride, use_bias=use_bias, name=f"{name}_1")
    x = conv_bn(x, filters, 3, padding="same", use_bias=use_bias, name=f"{name}_2")
    x = conv_bn(x, 4 * filters, 1, use_bias=use_bias, name=f"{name}_3", relu=False)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


BLOCKS = {"basic": basic_block, "bottleneck": bottleneck_block}


def resnet(
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
) -> keras.Model:
    kind, depths, use_bias = VARIANTS[variant]
    input_shape = check_input_shape(input_shape, min_size=32, model=variant)
    check_top(num_classes, include_top, model=variant)
    inputs, x = image_input(input_shape, pixel_mean, pixel_std)
    x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = tap(conv_bn(x, scaled(64, width), 7, strides=2, use_bias=use_bias, name="conv1"), 2)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for stage, depth in enumerate(depths):
        filters = scaled(64 * 2**stage, width)
        for block in range(depth):
            stride = 2 if stage > 0 and block == 0 else 1
            x = BLOCKS[kind](x, filters, stride=stride, use_bias=use_bias, name=f"conv{stage + 2}_block{block + 1}")
        x = tap(x, 4 * 2**stage)
    if include_top:
        x = pooled_classifier(x, num_classes, dropout, classifier_activation)
    return keras.Model(inputs, x, name=variant)


register_variants(
    globals(),
    resnet,
    VARIANTS,
    paper="He et al. 2016",
    tasks=IMAGE_TASKS,
    paper_input=(224, 224, 3),
    paper_classes=1000,
    imagenet={
        "resnet50": ("ResNet50", "caffe"),
        "resnet101": ("ResNet101", "caffe"),
        "resnet152": ("ResNet152", "caffe"),
    },
    describe=lambda v: f"{v} ({VARIANTS[v][0]} blocks {VARIANTS[v][1]}); He et al. 2016.",
)
