"""AlexNet and ZF-Net.

AlexNet: Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional Neural
Networks", NIPS 2012, section 3 and Figure 2. Faithful: five ReLU convolutions 96-256-384-384-256
(11x11 stride 4, 5x5, 3x3, 3x3, 3x3), local response normalisation after conv1 and conv2, overlapping
3x3 stride-2 max pooling after the LRNs and after conv5, FC 4096-4096-N with dropout 0.5 on the two
hidden layers. `groups=2` restores the paper's two-GPU split (conv2, conv4 and conv5 see only their
own GPU's half of the channels, as the Caffe bvlc_alexnet reference); the default `groups=1` is the
single tower everyone trains today: the split was a workaround for 3 GB GPUs, not a modelling choice.
`lrn=False` drops the normalisation layers.

ZF-Net: Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014
(arXiv:1311.2901), Figure 3: AlexNet with a 7x7 stride-2 conv1, a stride-2 conv2, normalisation after
the first two poolings, and one tower (no grouping).

Strided layers use the arithmetic of cuda-convnet, the code both papers trained with (and of Caffe's
pooling): ceil((n - k) / s) + 1 outputs, the last window reaching past the edge into zero padding.
With it the paper sizes come out exactly: AlexNet 55-27-13-6 from 227 and from the paper's 224, ZF-Net
110-55-26-13-6 from 224 (floor arithmetic would give 109-54-25-12-5). Max pooling sees ReLU outputs
and every window holds at least one real pixel, so its zero padding never changes a maximum.
Minimum inputs, the smallest where every strided layer's input is at least its kernel (pool5 then
gets 3x3 and keeps one pixel): 52 for AlexNet, 60 for ZF-Net; floor arithmetic would need 67 and 75.

Feature maps are tapped as in the rest of the zoo, the last map at each stride, before the next
down-sampling: conv5 at stride 16, the map Fast R-CNN (AlexNet) and Faster R-CNN (ZF-Net) pool
their regions from. AlexNet: norm1 (4), norm2 (8), conv5 (16), pool5 (32); ZF-Net: conv1 (2),
norm1 (4), conv2 (8), conv5 (16), pool5 (32).
"""

from __future__ import annotations

import keras
from keras import layers

from visionkit.layers.lrn import LocalResponseNormalization
from visionkit.models.common import IMAGE_TASKS, check_input_shape, check_top, image_input, predictions, scaled, tap
from visionkit.registry import MODELS


def ceil_mode_pad(x, kernel: int, stride: int, name: str):
    """Zero-pad bottom and right so that stride-`stride` windows of size `kernel` cover the whole map."""
    extra = [(kernel - size) % stride for size in x.shape[1:3]]
    return layers.ZeroPadding2D(((0, extra[0]), (0, extra[1])), name=name)(x) if any(extra) else x


def conv(x, filters: int, kernel: int, *, name: str, stride: int = 1, groups: int = 1):
    """A ReLU convolution: 'same' at stride 1, cuda-convnet arithmetic when strided."""
    if stride == 1:
        return layers.Conv2D(filters, kernel, padding="same", groups=groups, activation="relu", name=name)(x)
    x = ceil_mode_pad(x, kernel, stride, name=f"{name}_pad")
    return layers.Conv2D(filters, kernel, strides=stride, groups=groups, activation="relu", name=name)(x)


def max_pool(x, name: str):
    """Overlapping 3x3 stride-2 max pooling (AlexNet section 3.4)."""
    return layers.MaxPooling2D(3, strides=2, name=name)(ceil_mode_pad(x, 3, 2, name=f"{name}_pad"))


def normalize(x, name: str, lrn: bool):
    return LocalResponseNormalization(name=name)(x) if lrn else x


def dense_classifier(x, num_classes: int, *, names: tuple[str, str], width: float, dropout, activation):
    """AlexNet's classifier, reused by VGG: flatten, two ReLU FC-4096 layers each followed by dropout,
    and the predictions layer."""
    x = layers.Flatten(name="flatten")(x)
    for name in names:
        x = layers.Dense(scaled(4096, width), activation="relu", name=name)(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return predictions(x, num_classes, activation)


def conv3_to_top(x, channels, *, groups: int, include_top: bool, num_classes, width, dropout, activation):
    """conv3-conv5, pool5 and the classifier: the part AlexNet and ZF-Net share."""
    x = conv(x, channels(384), 3, name="conv3")
    x = conv(x, channels(384), 3, groups=groups, name="conv4")
    x = tap(conv(x, channels(256), 3, groups=groups, name="conv5"), 16)
    x = tap(max_pool(x, "pool5"), 32)
    if include_top:
        x = dense_classifier(x, num_classes, names=("fc6", "fc7"), width=width, dropout=dropout, activation=activation)
    return x


@MODELS.register(tasks=IMAGE_TASKS, paper="Krizhevsky et al. 2012", paper_input=(227, 227, 3), paper_classes=1000)
def alexnet(
    *,
    input_shape=(227, 227, 3),
    num_classes=None,
    include_top=True,
    width=1.0,
    dropout=0.5,
    classifier_activation="softmax",
    pixel_mean=None,
    pixel_std=None,
    groups=1,
    lrn=True,
) -> keras.Model:
    """AlexNet; `groups=2` is the paper's two-GPU split, `lrn=False` drops local response normalisation."""
    input_shape = check_input_shape(input_shape, min_size=52, model="alexnet")
    check_top(num_classes, include_top, model="alexnet")
    if groups not in (1, 2):
        raise ValueError(f"alexnet: groups must be 1 (one tower) or 2 (the paper's two GPUs), received {groups!r}")

    def channels(count):  # a multiple of `groups`, so that grouped layers split evenly
        return groups * scaled(count // groups, width)

    inputs, x = image_input(input_shape, pixel_mean, pixel_std)
    x = tap(normalize(conv(x, channels(96), 11, stride=4, name="conv1"), "norm1", lrn), 4)
    x = max_pool(x, "pool1")
    x = tap(normalize(conv(x, channels(256), 5, groups=groups, name="conv2"), "norm2", lrn), 8)
    x = max_pool(x, "pool2")
    x = conv3_to_top(
        x,
        channels,
        groups=groups,
        include_top=include_top,
        num_classes=num_classes,
        width=width,
        dropout=dropout,
        activation=classifier_activation,
    )
    return keras.Model(inputs, x, name="alexnet")


@MODELS.register(tasks=IMAGE_TASKS, paper="Zeiler & Fergus 2014", paper_input=(224, 224, 3), paper_classes=1000)
def zfnet(
    *,
    input_shape=(224, 224, 3),
    num_classes=None,
    include_top=True,
    width=1.0,
    dropout=0.5,
    classifier_activation="softmax",
    pixel_mean=None,
    pixel_std=None,
    lrn=True,
) -> keras.Model:
    """ZF-Net (Zeiler & Fergus 2014, Figure 3); `lrn=False` drops the contrast normalisation."""
    input_shape = check_input_shape(input_shape, min_size=60, model="zfnet")
    check_top(num_classes, include_top, model="zfnet")

    def channels(count):
        return scaled(count, width)

    inputs, x = image_input(input_shape, pixel_mean, pixel_std)
    x = tap(conv(x, channels(96), 7, stride=2, name="conv1"), 2)
    x = tap(normalize(max_pool(x, "pool1"), "norm1", lrn), 4)
    x = tap(conv(x, channels(256), 5, stride=2, name="conv2"), 8)
    x = normalize(max_pool(x, "pool2"), "norm2", lrn)
    x = conv3_to_top(
        x,
        channels,
        groups=1,
        include_top=include_top,
        num_classes=num_classes,
        width=width,
        dropout=dropout,
        activation=classifier_activation,
    )
    return keras.Model(inputs, x, name="zfnet")
