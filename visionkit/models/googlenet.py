"""GoogLeNet: Szegedy, Liu, Jia, Sermanet, Reed, Anguelov, Erhan, Vanhoucke & Rabinovich,
"Going Deeper with Convolutions", CVPR 2015 (arXiv:1409.4842), Table 1 and Figure 3.

Faithful: the stem (7x7/2 convolution, 3x3/2 max pooling, local response normalisation, 1x1 and
3x3 convolutions, LRN, max pooling), the nine inception modules with Table 1's filter counts, max
pooling between stages, global average pooling, dropout 0.4 and a linear softmax classifier; ReLU
after every convolution and no batch normalisation (the paper has none). The two auxiliary
classifiers of section 5 sit on inception 4a and 4d: 5x5/3 average pooling, 1x1 convolution 128,
fully connected 1024, dropout 0.7 and a linear classifier with the main head's activation.

Options: `aux_classifiers=False` drops them. With them (and `include_top=True`) the model returns
{"predictions": main, "aux1": ..., "aux2": ...}; training weights the auxiliary losses by
visionkit.outputs.AUX_LOSS_WEIGHT (the paper's 0.3) and `common.inference_model` drops them for evaluation and
export. Pooling uses "same" padding, so a 224 input gives the paper's 112/56/28/14/7 maps and any
input of at least 32 pixels works. The auxiliary 5x5/3 pooling needs a stride-16 map of at least
5x5 (inputs above 64 pixels); on a smaller map (a 64x64 input gives 4x4) it is skipped and the 1x1
convolution reads the map as it is, so the model still trains on small images.
"""

from __future__ import annotations

import keras
from keras import layers

from visionkit.layers.lrn import LocalResponseNormalization
from visionkit.models.common import (
    IMAGE_TASKS,
    check_input_shape,
    check_top,
    image_input,
    pooled_classifier,
    predictions,
    scaled,
    tap,
)
from visionkit.outputs import MAIN_OUTPUT
from visionkit.registry import MODELS

# Table 1: module -> (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj).
INCEPTION = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
# Stages of modules, each followed by 3x3/2 max pooling except the last; stride of each stage.
STAGES = ((3, ("3a", "3b"), 8), (4, ("4a", "4b", "4c", "4d", "4e"), 16), (5, ("5a", "5b"), 32))
# Section 5: the auxiliary classifiers sit on the outputs of these modules.
AUX_AFTER = {"4a": "aux1", "4d": "aux2"}
AUX_POOL, AUX_POOL_STRIDE, AUX_DROPOUT = 5, 3, 0.7


def conv(x, filters, kernel_size, *, name, strides=1):
    return layers.Conv2D(filters, kernel_size, strides=strides, padding="same", activation="relu", name=name)(x)


def max_pool(x, name, strides=2):
    return layers.MaxPooling2D(3, strides=strides, padding="same", name=name)(x)


def inception(x, filters, width, *, name):
    """Figure 2(b): four parallel branches concatenated along channels."""
    n1x1, n3x3_reduce, n3x3, n5x5_reduce, n5x5, pool_proj = (scaled(f, width) for f in filters)
    branch1 = conv(x, n1x1, 1, name=f"{name}_1x1")
    branch3 = conv(conv(x, n3x3_reduce, 1, name=f"{name}_3x3_reduce"), n3x3, 3, name=f"{name}_3x3")
    branch5 = conv(conv(x, n5x5_reduce, 1, name=f"{name}_5x5_reduce"), n5x5, 5, name=f"{name}_5x5")
    branch_pool = conv(max_pool(x, f"{name}_pool", strides=1), pool_proj, 1, name=f"{name}_pool_proj")
    return layers.Concatenate(name=f"{name}_concat")([branch1, branch3, branch5, branch_pool])


def auxiliary_classifier(x, num_classes, width, activation, *, name):
    """Section 5's side classifier; the 5x5/3 pooling is skipped where the map is smaller than 5x5."""
    if min(x.shape[1:3]) >= AUX_POOL:
        x = layers.AveragePooling2D(AUX_POOL, strides=AUX_POOL_STRIDE, name=f"{name}_pool")(x)
    x = conv(x, scaled(128, width), 1, name=f"{name}_conv")
    x = layers.Flatten(name=f"{name}_flatten")(x)
    x = layers.Dense(scaled(1024, width), activation="relu", name=f"{name}_fc")(x)
    x = layers.Dropout(AUX_DROPOUT, name=f"{name}_dropout")(x)
    return predictions(x, num_classes, activation, name=name)


@MODELS.register(tasks=IMAGE_TASKS, paper="Szegedy et al. 2015", paper_input=(224, 224, 3), paper_classes=1000)
def googlenet(
    *,
    input_shape=(224, 224, 3),
    num_classes=None,
    include_top=True,
    width=1.0,
    dropout=0.4,
    classifier_activation="softmax",
    pixel_mean=None,
    pixel_std=None,
    aux_classifiers=True,
) -> keras.Model:
    """GoogLeNet (Inception v1); with `aux_classifiers` and a top, the output is a dict
    {"predictions", "aux1", "aux2"}; `include_top=False` returns the trunk up to inception 5b."""
    input_shape = check_input_shape(input_shape, min_size=32, model="googlenet")
    check_top(num_classes, include_top, model="googlenet")
    if not isinstance(aux_classifiers, bool):
        raise ValueError(f"googlenet: aux_classifiers must be True or False, received {aux_classifiers!r}")
    inputs, x = image_input(input_shape, pixel_mean, pixel_std)
    x = tap(conv(x, scaled(64, width), 7, strides=2, name="conv1"), 2)
    x = LocalResponseNormalization(name="norm1")(max_pool(x, "pool1"))
    x = conv(x, scaled(64, width), 1, name="conv2_reduce")
    x = tap(LocalResponseNormalization(name="norm2")(conv(x, scaled(192, width), 3, name="conv2")), 4)
    x = max_pool(x, "pool2")
    aux = {}
    for stage, modules, stride in STAGES:
        for module in modules:
            x = inception(x, INCEPTION[module], width, name=f"inception_{module}")
            if include_top and aux_classifiers and module in AUX_AFTER:
                aux[AUX_AFTER[module]] = auxiliary_classifier(
                    x, num_classes, width, classifier_activation, name=AUX_AFTER[module]
                )
        x = tap(x, stride)
        if stage < 5:
            x = max_pool(x, f"pool{stage}")
    if include_top:
        x = pooled_classifier(x, num_classes, dropout, classifier_activation)
        if aux:
            x = {MAIN_OUTPUT: x, **aux}
    return keras.Model(inputs, x, name="googlenet")
