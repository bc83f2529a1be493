"""Fully convolutional networks: Long, Shelhamer & Darrell, "Fully Convolutional Networks for
Semantic Segmentation", CVPR 2015 (arXiv:1411.4038), sections 3-4 and Fig. 3.

A classification trunk (`backbone`, VGG-16 in the paper) with its classifier convolutionalised:
fc6 becomes a 7x7 convolution of 4096 channels on the stride-32 map, fc7 a 1x1 convolution, both
with ReLU and dropout 0.5, and a 1x1 "score" convolution gives class scores at stride 32.
FCN-32s up-samples them straight to the input size. FCN-16s first up-samples 2x, adds the scores
of the stride-16 map (pool4) and up-samples that 16x; FCN-8s adds the stride-8 map (pool3) the
same way and up-samples 8x. Up-sampling is a transposed convolution (the paper's
"deconvolution") of kernel 2f and stride f, initialised to bilinear interpolation and learned;
the skip score layers start at zero, so each finer net starts as the coarser one (section 4.2).

Differences from the reference Caffe models, none of which changes a parameter count: 'same'
padding everywhere (fc6 included) instead of conv1_1's 100-pixel padding and the crop layers, so
the output has the input's size and any input divisible by 32 works (PASCAL VOC's images, at most
500x500, fit in the registered 512x512), and the score maps line up without offsets. On VGG
trunks the skips are the paper's pool3 and pool4; on other trunks they are the stride-8 and
stride-16 maps the trunk names (common.tap). `width` scales the trunk and fc6/fc7 (4096 channels
at 1.0).
"""

from __future__ import annotations

import keras
from keras import layers

from visionkit.layers.initializers import BilinearUpsampling
from visionkit.models.common import (
    SEGMENTATION_TASKS,
    check_classes,
    check_input_multiple,
    register_variants,
    scaled,
    zoo_trunk,
)

FC_CHANNELS = 4096
SCORE_STRIDE = 32

# name: strides whose score maps are fused, coarsest first
VARIANTS = {"fcn32s": (), "fcn16s": (16,), "fcn8s": (16, 8)}
# The maps the paper fuses on a VGG trunk: pool4 and pool3, where the trunk's own stride taps are the
# last convolutions at those strides (conv5_3, conv4_3).
VGG_SKIPS = {16: "block4_pool", 8: "block3_pool"}


def upsample(x, factor: int, *, name: str, **kwargs):
    """Transposed convolution by `factor`, bilinear at the start; no bias, as in the reference models."""
    return layers.Conv2DTranspose(
        x.shape[-1],
        2 * factor,
        strides=factor,
        padding="same",
        use_bias=False,
        kernel_initializer=BilinearUpsampling(),
        name=name,
        **kwargs,
    )(x)


def skip_maps(trunk: keras.Model, maps: dict[int, keras.KerasTensor]) -> dict[int, keras.KerasTensor]:
    names = {layer.name for layer in trunk.layers}
    return {**maps, **{stride: trunk.get_layer(name).output for stride, name in VGG_SKIPS.items() if name in names}}


def convolutionalised_classifier(x, num_classes: int, *, width: float, dropout: float | None):
    """fc6 (7x7) and fc7 (1x1) as convolutions with ReLU and dropout, then the 1x1 score layer."""
    for name, kernel in (("fc6", 7), ("fc7", 1)):
        x = layers.Conv2D(scaled(FC_CHANNELS, width), kernel, padding="same", activation="relu", name=name)(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"drop{name[2:]}")(x)
    return layers.Conv2D(num_classes, 1, name="score_fr")(x)


def fcn(
    variant,
    *,
    input_shape=(512, 512, 3),
    num_classes=None,
    backbone="vgg16",
    width=1.0,
    dropout=0.5,
    classifier_activation="softmax",
    pixel_mean=None,
    pixel_std=None,
) -> keras.Model:
    check_classes(num_classes, model=variant)
    input_shape = check_input_multiple(
        input_shape, SCORE_STRIDE, model=variant, why=f"the scores are computed at stride {SCORE_STRIDE}"
    )
    trunk, maps = zoo_trunk(
        backbone, input_shape, width=width, pixel_mean=pixel_mean, pixel_std=pixel_std, model=variant, option="backbone"
    )
    needed = (SCORE_STRIDE, *VARIANTS[variant])
    if any(stride not in maps for stride in needed):
        raise ValueError(
            f"{variant}: backbone {backbone!r} is unsuitable: it names feature maps at strides "
            f"{sorted(maps)}, {variant} needs {sorted(needed)}"
        )
    maps = skip_maps(trunk, maps)
    x = convolutionalised_classifier(maps[SCORE_STRIDE], num_classes, width=width, dropout=dropout)
    stride = SCORE_STRIDE
    for skip in VARIANTS[variant]:
        x = upsample(x, stride // skip, name=f"upscore{stride}")
        score = layers.Conv2D(num_classes, 1, kernel_initializer="zeros", name=f"score{skip}")(maps[skip])
        x = layers.Add(name=f"fuse{skip}")([x, score])
        stride = skip
    outputs = upsample(x, stride, name="predictions", activation=classifier_activation, dtype="float32")
    return keras.Model(trunk.input, outputs, name=variant)


register_variants(
    globals(),
    fcn,
    VARIANTS,
    paper="Long et al. 2015",
    tasks=SEGMENTATION_TASKS,
    paper_input=(512, 512, 3),
    paper_classes=21,
    describe=lambda v: (
        f"{v}: FCN fusing the scores of strides {(32, *VARIANTS[v])} (Long, Shelhamer & Darrell 2015, Fig. 3)."
    ),
)
