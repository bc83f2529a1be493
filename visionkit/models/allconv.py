"""All-CNN-C: Springenberg, Dosovitskiy, Brox & Riedmiller, "Striving for Simplicity: The All
Convolutional Net", ICLR 2015 workshop track (arXiv:1412.6806), Table 2.

Nothing but convolutions: max pooling is replaced by 3x3 convolutions of stride 2 and the fully
connected layers by a 1x1 convolution to the classes followed by global average pooling.

Faithful: the layer sequence of Table 2 with ReLU after every hidden convolution; dropout of 20% on
the input and of 50% after each layer that replaces pooling (section 3.2). Padding: Table 2 ends in
"global averaging over 6 x 6", which at a 32x32 input fixes it: the first six 3x3 convolutions keep
the size ("same", so the stride-2 ones give 32 -> 16 -> 8) and the seventh is unpadded ("valid",
8 -> 6); the 1x1 convolutions need none.

Differences: Table 2 lists a ReLU on the 1x1 convolution to the classes; here it is linear, so that
the logits (and a regression head's outputs) may be negative. Options: `dropout` (the 50% rate),
`input_dropout` (the 20% rate), `width` (scales the 96 and 192 channels).
1,369,738 parameters for 10 classes on a 32x32x3 input.
"""

from __future__ import annotations

import keras
from keras import layers

from visionkit.models.common import IMAGE_TASKS, check_input_shape, check_top, image_input, scaled, tap
from visionkit.registry import MODELS

# Blocks of (filters, kernel, stride, padding); the dropout follows the blocks that end in a stride-2
# convolution (the layers that replace max pooling).
BLOCKS = (
    ((96, 3, 1, "same"), (96, 3, 1, "same"), (96, 3, 2, "same")),
    ((192, 3, 1, "same"), (192, 3, 1, "same"), (192, 3, 2, "same")),
    ((192, 3, 1, "valid"), (192, 1, 1, "valid")),
)


@MODELS.register(tasks=IMAGE_TASKS, paper="Springenberg et al. 2015", paper_input=(32, 32, 3), paper_classes=10)
def allconv(
    *,
    input_shape=(32, 32, 3),
    num_classes=None,
    include_top=True,
    width=1.0,
    dropout=0.5,
    input_dropout=0.2,
    classifier_activation="softmax",
    pixel_mean=None,
    pixel_std=None,
) -> keras.Model:
    """All-CNN-C; `include_top=False` returns the trunk up to the 1x1 convolution of 192 channels.

    Feature maps: stride 2 at the end of the 16x16 stage (before the second stride-2 convolution),
    stride 4 at the trunk's output (6x6 at a 32x32 input, the unpadded 3x3 convolution trims 8 -> 6).
    """
    # Smallest input: two "same" stride-2 convolutions then an unpadded 3x3 one: ceil(ceil(n/2)/2) >= 3.
    input_shape = check_input_shape(input_shape, min_size=9, model="allconv")
    check_top(num_classes, include_top, model="allconv")
    inputs, x = image_input(input_shape, pixel_mean, pixel_std)
    if input_dropout:
        x = layers.Dropout(input_dropout, name="input_dropout")(x)
    reached = 1  # the stride reached so far
    for b, block in enumerate(BLOCKS, start=1):
        for c, (filters, kernel, stride, padding) in enumerate(block, start=1):
            if stride == 2 and reached > 1:
                x = tap(x, reached)  # the last map at this stride, before the convolution that halves it
            x = layers.Conv2D(
                scaled(filters, width),
                kernel,
                strides=stride,
                padding=padding,
                activation="relu",
                name=f"block{b}_conv{c}",
            )(x)
            reached *= stride
        if block[-1][2] == 2 and dropout:
            x = layers.Dropout(dropout, name=f"block{b}_dropout")(x)
    x = tap(x, reached)
    if include_top:
        # The classifier: a 1x1 convolution to the classes, averaged over the whole map.
        x = layers.Conv2D(num_classes, 1, name="predictions_conv")(x)
        x = layers.GlobalAveragePooling2D(name="predictions_pool")(x)
        # float32 so that mixed precision keeps a stable softmax and loss.
        x = layers.Activation(classifier_activation or "linear", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, x, name="allconv")
