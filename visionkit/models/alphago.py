"""The AlphaGo policy network: Silver et al., "Mastering the game of Go with deep neural networks and
tree search", Nature 529, 484-489, 2016 (Methods, "Neural network architecture").

Input: 19x19x48 binary feature planes (stones, liberties, ladders, ...), not pixels, so the default
normalisation is the identity (mean 0, std 1). Layer 1 zero-pads to 23x23 and convolves k 5x5
filters of stride 1; layers 2-12 zero-pad to 21x21 and convolve k 3x3 filters of stride 1; every
hidden layer has a ReLU (zero-padding by 2 and 1 is "same" padding, which is what is used here). The
last layer is a 1x1 convolution with one filter and a different bias for each position (PositionBias),
then a softmax over the 19 x 19 = 361 board points. No pooling anywhere: the map stays at stride 1.

Faithful by default: k = 192 (`filters`; the paper also reports 128, 256 and 384) and 13 layers
(`depth`, counting the first and the last). Options beyond the paper: `width` multiplies k,
`dropout` (default none, as in the paper) drops out before the final 1x1 convolution, and any board
size or number of planes can be given as `input_shape`; the classes are always the board points.
"""

from __future__ import annotations

import keras

from visionkit.layers.position_bias import PositionBias
from visionkit.models.common import check_input_shape, check_top, image_input, scaled, tap
from visionkit.registry import MODELS


@MODELS.register(tasks=("classification",), paper="Silver et al. 2016", paper_input=(19, 19, 48), paper_classes=361)
def alphago_policy(
    *,
    input_shape=(19, 19, 48),
    num_classes=None,
    include_top=True,
    width=1.0,
    dropout=None,
    classifier_activation="softmax",
    pixel_mean=None,
    pixel_std=None,
    filters=192,
    depth=13,
) -> keras.Model:
    """The SL/RL policy network p(a|s); `include_top=False` returns the output of its `depth - 1`
    convolutional layers (stride 1, the board size)."""
    input_shape = check_input_shape(input_shape, min_size=1, model="alphago_policy")
    check_top(num_classes, include_top, model="alphago_policy")
    rows, cols = input_shape[:2]
    if include_top and num_classes != rows * cols:
        raise ValueError(
            f"alphago_policy: predicts one of the {rows}x{cols} = {rows * cols} board points, "
            f"so num_classes must be {rows * cols}, received {num_classes!r}"
        )
    if not isinstance(filters, int) or isinstance(filters, bool) or filters < 1:
        raise ValueError(f"alphago_policy: filters must be a positive int, received {filters!r}")
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 2:
        raise ValueError(
            f"alphago_policy: depth counts the first and the last layer, so it must be an int >= 2, received {depth!r}"
        )
    inputs, x = image_input(
        input_shape, 0.0 if pixel_mean is None else pixel_mean, 1.0 if pixel_std is None else pixel_std
    )
    k = scaled(filters, width)
    for i in range(1, depth):
        x = keras.layers.Conv2D(k, 5 if i == 1 else 3, padding="same", activation="relu", name=f"conv{i}")(x)
    x = tap(x, 1)
    if include_top:
        if dropout:
            x = keras.layers.Dropout(dropout, name="dropout")(x)
        x = keras.layers.Conv2D(1, 1, use_bias=False, name="position_conv")(x)
        x = PositionBias(name="position_bias")(x)
        x = keras.layers.Flatten(name="flatten")(x)
        # float32 so that mixed precision keeps a stable softmax and loss.
        x = keras.layers.Activation(classifier_activation or "linear", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, x, name="alphago_policy")
