"""SegNet: Badrinarayanan, Kendall & Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder
Architecture for Image Segmentation", TPAMI 2017 (arXiv:1511.00561), section 3 and Fig. 2.

The encoder is VGG-16's 13 convolutions (its fully connected layers removed, which takes the
parameters from 134M to 14.7M), each followed by batch normalisation and ReLU, the five blocks
closed by 2x2 stride-2 max pooling that records the position of each maximum. The decoder mirrors
the encoder: each block up-samples with the indices of its encoder block (visionkit.layers.
MaxUnpooling2D: sparse maps, each value back where its maximum was) and densifies them with as
many 3x3 convolutions (+BN+ReLU) as the encoder block had, the last one narrowing to the next
block's width. A 1x1 convolution then gives the class scores of every pixel (the paper's
"trainable soft-max classifier"). Nothing is learned to up-sample and no encoder map is kept for
the decoder: only the indices.

Encoder layer names are VGG-16's (`block3_conv2`, with biases as in the authors' Caffe model), so
ImageNet VGG-16 convolution weights transfer to it by name, which is how the paper initialises the
encoder. Input height and width must be multiples of 32 (five poolings); the paper's CamVid
images are 360x480, for which 352x480 is the nearest valid size.

`dropout`, not in this paper, is Bayesian SegNet's (Kendall, Badrinarayanan & Cipolla 2017):
dropout on the central map, the encoder's last pooled output.
"""

from __future__ import annotations

import keras
from keras import layers

from visionkit.layers.pooling_indices import MaxPoolingWithArgmax2D, MaxUnpooling2D
from visionkit.models.common import (
    SEGMENTATION_TASKS,
    check_classes,
    check_input_multiple,
    image_input,
    pixel_classifier,
    scaled,
)
from visionkit.models.vgg import FILTERS
from visionkit.models.vgg import VARIANTS as VGG_VARIANTS
from visionkit.registry import MODELS

# Convolutions per block, VGG-16 (Simonyan & Zisserman 2015, Table 1, configuration D): (2, 2, 3, 3, 3).
CONVOLUTIONS = tuple(len(kernels) for kernels in VGG_VARIANTS["vgg16"][1])


def conv_bn_relu(x, filters: int, *, name: str, index: int):
    x = layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv{index}")(x)
    x = layers.BatchNormalization(name=f"{name}_bn{index}")(x)
    return layers.Activation("relu", name=f"{name}_relu{index}")(x)


def encoder(x, *, width: float):
    """VGG-16's convolutions with batch norm; returns the last pooled map and each block's indices."""
    indices = {}
    for block, (filters, count) in enumerate(zip(FILTERS, CONVOLUTIONS), start=1):
        for index in range(1, count + 1):
            x = conv_bn_relu(x, scaled(filters, width), name=f"block{block}", index=index)
        x, indices[block] = MaxPoolingWithArgmax2D(name=f"block{block}_pool")(x)
    return x, indices


def decoder(x, indices, *, width: float):
    """The encoder mirrored: unpooling with each block's indices, then its convolutions in reverse
    order (numbered as the encoder convolution they mirror), the last narrowing to the next block."""
    for block in reversed(range(1, len(CONVOLUTIONS) + 1)):
        x = MaxUnpooling2D(name=f"decoder{block}_unpool")([x, indices[block]])
        for index in reversed(range(1, CONVOLUTIONS[block - 1] + 1)):
            filters = FILTERS[block - 1] if index > 1 else FILTERS[max(block - 2, 0)]
            x = conv_bn_relu(x, scaled(filters, width), name=f"decoder{block}", index=index)
    return x


@MODELS.register(
    "segnet", tasks=SEGMENTATION_TASKS, paper="Badrinarayanan et al. 2015", paper_input=(352, 480, 3), paper_classes=11
)
def segnet(
    *,
    input_shape=(352, 480, 3),
    num_classes=None,
    width=1.0,
    dropout=None,
    classifier_activation="softmax",
    pixel_mean=None,
    pixel_std=None,
) -> keras.Model:
    """SegNet (Badrinarayanan et al. 2015): VGG-16 encoder, decoder up-sampling with max-pooling indices."""
    check_classes(num_classes, model="segnet")
    input_shape = check_input_multiple(
        input_shape, 2 ** len(CONVOLUTIONS), model="segnet", why="five 2x2 poolings with indices"
    )
    inputs, x = image_input(input_shape, pixel_mean, pixel_std)
    x, indices = encoder(x, width=width)
    if dropout:
        x = layers.Dropout(dropout, name="center_dropout")(x)
    x = decoder(x, indices, width=width)
    return keras.Model(inputs, pixel_classifier(x, num_classes, classifier_activation), name="segnet")
