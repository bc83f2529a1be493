"""LeNet-5.

LeCun, Bottou, Bengio & Haffner, "Gradient-based learning applied to document recognition",
Proc. IEEE 86(11), 1998. As taught: a 32x32 input, 5x5 convolutions without padding, 2x2
average subsampling, tanh, and fully connected layers 120-84-N: 61,706 parameters for
10 classes on a one-channel 32x32 input.
"""

from __future__ import annotations

import keras
from keras import layers

from visionkit.models.common import IMAGE_TASKS, check_input_shape, check_top, image_input, predictions, scaled, tap
from visionkit.registry import MODELS


@MODELS.register(tasks=IMAGE_TASKS, paper="LeCun et al. 1998", paper_input=(32, 32, 1), paper_classes=10)
def lenet5(
    *,
    input_shape=(32, 32, 1),
    num_classes=None,
    include_top=True,
    width=1.0,
    dropout=None,
    classifier_activation="softmax",
    pixel_mean=None,
    pixel_std=None,
) -> keras.Model:
    """LeNet-5; `include_top=False` returns the convolutional trunk (C1-S2-C3-S4, stride 4)."""
    input_shape = check_input_shape(input_shape, min_size=16, model="lenet5")
    check_top(num_classes, include_top, model="lenet5")
    inputs, x = image_input(input_shape, pixel_mean, pixel_std)
    x = layers.Conv2D(scaled(6, width), 5, activation="tanh", name="c1_conv")(x)
    x = tap(layers.AveragePooling2D(2, name="s2_pool")(x), 2)
    x = layers.Conv2D(scaled(16, width), 5, activation="tanh", name="c3_conv")(x)
    x = tap(layers.AveragePooling2D(2, name="s4_pool")(x), 4)
    if include_top:
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(scaled(120, width), activation="tanh", name="c5_fc")(x)
        x = layers.Dense(scaled(84, width), activation="tanh", name="f6_fc")(x)
        if dropout:
            x = layers.Dropout(dropout, name="dropout")(x)
        x = predictions(x, num_classes, classifier_activation)
    return keras.Model(inputs, x, name="lenet5")
