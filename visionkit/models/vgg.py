"""VGG: Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
ICLR 2015 (arXiv:1409.1556), Table 1.

Configurations A (vgg11), A-LRN (vgg11_lrn: local response normalisation after the first
convolution, with AlexNet's constants as section 2.1 says), B (vgg13), C (vgg16_c: the last
convolution of blocks 3-5 is 1x1), D (vgg16) and E (vgg19). Faithful: 'same' 3x3 ReLU convolutions
in five blocks of 64-128-256-512-512 channels, each closed by 2x2 stride-2 max pooling, then
FC 4096-4096-N with dropout 0.5 after both hidden layers (section 3.1). Layer names are those of
keras.applications VGG16/VGG19, whose weights therefore transfer one to one (dropout layers carry
no weights). Minimum input 32: five poolings leave one pixel.

Feature maps are tapped as in the rest of the zoo, the last map at each stride, before the next
down-sampling: block2's last convolution (stride 2) to block5's (stride 16), then block5_pool
(stride 32). Block 1 (stride 1) is not tapped. These are the maps the detectors built on VGG-16 use:
Faster R-CNN pools regions from conv5_3 (block5_conv3, stride 16), SSD predicts from conv4_3
(block4_conv3, stride 8).
"""

from __future__ import annotations

import keras
from keras import layers

from visionkit.layers.lrn import LocalResponseNormalization
from visionkit.models.alexnet import dense_classifier
from visionkit.models.common import (
    IMAGE_TASKS,
    check_input_shape,
    check_top,
    image_input,
    register_variants,
    scaled,
    tap,
)

FILTERS = (64, 128, 256, 512, 512)

# name: (Table 1 column, kernel sizes of the convolutions in blocks 1-5, LRN after block1_conv1)
VARIANTS = {
    "vgg11": ("A", ((3,), (3,), (3, 3), (3, 3), (3, 3)), False),
    "vgg11_lrn": ("A-LRN", ((3,), (3,), (3, 3), (3, 3), (3, 3)), True),
    "vgg13": ("B", ((3, 3), (3, 3), (3, 3), (3, 3), (3, 3)), False),
    "vgg16_c": ("C", ((3, 3), (3, 3), (3, 3, 1), (3, 3, 1), (3, 3, 1)), False),
    "vgg16": ("D", ((3, 3), (3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3)), False),
    "vgg19": ("E", ((3, 3), (3, 3), (3, 3, 3, 3), (3, 3, 3, 3), (3, 3, 3, 3)), False),
}


def vgg(
    variant,
    *,
    input_shape=(224, 224, 3),
    num_classes=None,
    include_top=True,
    width=1.0,
    dropout=0.5,
    classifier_activation="softmax",
    pixel_mean=None,
    pixel_std=None,
) -> keras.Model:
    _, blocks, lrn = VARIANTS[variant]
    input_shape = check_input_shape(input_shape, min_size=32, model=variant)
    check_top(num_classes, include_top, model=variant)
    inputs, x = image_input(input_shape, pixel_mean, pixel_std)
    for block, (filters, kernels) in enumerate(zip(FILTERS, blocks), start=1):
        for index, kernel in enumerate(kernels, start=1):
            x = layers.Conv2D(
                scaled(filters, width), kernel, padding="same", activation="relu", name=f"block{block}_conv{index}"
            )(x)
            if lrn and block == index == 1:
                x = LocalResponseNormalization(name="block1_lrn")(x)
        if block > 1:
            x = tap(x, 2 ** (block - 1))
        x = layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)
    x = tap(x, 32)
    if include_top:
        x = dense_classifier(
            x, num_classes, names=("fc1", "fc2"), width=width, dropout=dropout, activation=classifier_activation
        )
    return keras.Model(inputs, x, name=variant)


register_variants(
    globals(),
    vgg,
    VARIANTS,
    paper="Simonyan & Zisserman 2015",
    tasks=IMAGE_TASKS,
    paper_input=(224, 224, 3),
    paper_classes=1000,
    imagenet={"vgg16": ("VGG16", "caffe"), "vgg19": ("VGG19", "caffe")},
    describe=lambda v: f"{v}: configuration {VARIANTS[v][0]} of Simonyan & Zisserman 2015, Table 1.",
)
