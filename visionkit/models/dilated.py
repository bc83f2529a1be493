"""Dilated convolutions for dense prediction: Yu & Koltun, "Multi-Scale Context Aggregation by
Dilated Convolutions", ICLR 2016 (arXiv:1511.07122), sections 3-4 and Table 1.

Front end (section 4): VGG-16 with its last two poolings removed, so the output stays at stride 8;
the convolutions after each removed pooling are dilated by the factor it would have down-sampled,
2 for the conv5 block and 4 for fc6, a 7x7 convolution of 4096 channels; fc7 is 1x1, both with
dropout 0.5, and a 1x1 layer gives C = num_classes score maps. Layer names are VGG-16's, so
ImageNet VGG-16 convolution weights transfer by name as the paper initialises them.

Context module (section 3, Table 1): seven 3x3 convolutions with dilations 1, 1, 2, 4, 8, 16, 1 and
ReLU, then a 1x1 convolution, on C channels: the receptive field grows exponentially (to 67x67 at
stride 8) with a linear number of parameters, and the resolution is kept. The "basic" module has C
channels in every layer; the "large" one 2C, 2C, 4C, 8C, 16C, 32C, 32C; "none" is the front end
alone. The module is initialised to pass its input through (the paper's identity initialisation,
eq. 3-4), the property that made it trainable where standard initialisations failed.

The stride-8 scores are up-sampled bilinearly to the input size, then the softmax. Differences from
the paper: 'same' padding instead of the paper's reflection-padded 1396x1396 input and unpadded
convolutions, so the output has the input's size and any input divisible by 8 works; `width`
scales the front end's channels (4096 in fc6/fc7 at 1.0), the context module stays in units of C.
"""

from __future__ import annotations

import keras
from keras import layers

from visionkit.layers.initializers import ContextIdentity
from visionkit.models.common import SEGMENTATION_TASKS, check_classes, check_input_multiple, image_input, scaled
from visionkit.models.vgg import FILTERS
from visionkit.models.vgg import VARIANTS as VGG_VARIANTS
from visionkit.registry import MODELS

OUTPUT_STRIDE = 8
FC_CHANNELS = 4096
# Convolutions per VGG-16 block (2, 2, 3, 3, 3); blocks 1-3 keep their pooling, 4 and 5 lose it.
CONVOLUTIONS = tuple(len(kernels) for kernels in VGG_VARIANTS["vgg16"][1])
POOLED_BLOCKS = 3
BLOCK5_DILATION, FC6_DILATION = 2, 4
CONTEXT_DILATIONS = (1, 1, 2, 4, 8, 16, 1)
# channels of the seven 3x3 layers, in units of C (Table 1)
CONTEXT_MODULES = {"basic": (1, 1, 1, 1, 1, 1, 1), "large": (2, 2, 4, 8, 16, 32, 32), "none": ()}


def front_end(x, num_classes: int, *, width: float, dropout: float | None):
    """VGG-16 without pool4 and pool5, dilated after them, fc6/fc7 as convolutions, C score maps at stride 8."""
    for block, (filters, count) in enumerate(zip(FILTERS, CONVOLUTIONS), start=1):
        dilation = BLOCK5_DILATION if block == 5 else 1
        for index in range(1, count + 1):
            x = layers.Conv2D(
                scaled(filters, width),
                3,
                padding="same",
                dilation_rate=dilation,
                activation="relu",
                name=f"block{block}_conv{index}",
            )(x)
        if block <= POOLED_BLOCKS:
            x = layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)
    for name, kernel, dilation in (("fc6", 7, FC6_DILATION), ("fc7", 1, 1)):
        x = layers.Conv2D(
            scaled(FC_CHANNELS, width), kernel, padding="same", dilation_rate=dilation, activation="relu", name=name
        )(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"drop{name[2:]}")(x)
    return layers.Conv2D(num_classes, 1, name="fc_final")(x)


def context_module(x, num_classes: int, multiples: tuple[int, ...]):
    """Table 1: 3x3 convolutions of growing dilation with ReLU, then a 1x1 back to C channels."""
    if not multiples:
        return x
    for index, (multiple, dilation) in enumerate(zip(multiples, CONTEXT_DILATIONS), start=1):
        x = layers.Conv2D(
            multiple * num_classes,
            3,
            padding="same",
            dilation_rate=dilation,
            activation="relu",
            kernel_initializer=ContextIdentity(num_classes),
            name=f"ctx_conv{index}",
        )(x)
    return layers.Conv2D(num_classes, 1, kernel_initializer=ContextIdentity(num_classes), name="ctx_final")(x)


@MODELS.register(
    "dilated", tasks=SEGMENTATION_TASKS, paper="Yu & Koltun 2016", paper_input=(512, 512, 3), paper_classes=21
)
def dilated(
    *,
    input_shape=(512, 512, 3),
    num_classes=None,
    width=1.0,
    context="basic",
    dropout=0.5,
    classifier_activation="softmax",
    pixel_mean=None,
    pixel_std=None,
) -> keras.Model:
    """Yu & Koltun 2016: dilated VGG-16 front end and context module; see the module docstring.

    context: "basic", "large" (Table 1) or "none" (the front end alone).
    """
    check_classes(num_classes, model="dilated")
    if context not in CONTEXT_MODULES:
        raise ValueError(f"dilated: context must be one of {', '.join(CONTEXT_MODULES)}, received {context!r}")
    input_shape = check_input_multiple(
        input_shape, OUTPUT_STRIDE, model="dilated", why=f"the scores are computed at stride {OUTPUT_STRIDE}"
    )
    inputs, x = image_input(input_shape, pixel_mean, pixel_std)
    x = front_end(x, num_classes, width=width, dropout=dropout)
    x = context_module(x, num_classes, CONTEXT_MODULES[context])
    x = layers.UpSampling2D(OUTPUT_STRIDE, interpolation="bilinear", name="upsample")(x)
    outputs = layers.Activation(classifier_activation, dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name="dilated")
