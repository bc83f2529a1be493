"""RetinaNet: Lin, Goyal, Girshick, He & Dollár, "Focal Loss for Dense Object Detection", ICCV 2017
(arXiv:1708.02002), section 4 and Fig. 3.

A single-stage detector: a zoo trunk (`backbone`, ResNet-50 in the paper) feeds a feature pyramid
(Lin et al. 2017, "Feature Pyramid Networks"): 1x1 lateral convolutions on the trunk's stride-named
maps, a top-down pathway that up-samples 2x (nearest) and adds, and a 3x3 convolution on each sum.
Levels coarser than the trunk's deepest map come from stride-2 3x3 convolutions (P6 on the deepest
trunk map, P7 on ReLU(P6), as in the paper). On every level the same two subnets run: a
classification subnet (`head_depth` 3x3 convolutions with ReLU, then K x A sigmoid logits, the last
bias set so that every anchor starts at probability `prior_probability`, section 4.1) and a box
subnet of the same shape giving 4 x A box deltas. A anchors per location: `scales` x
`aspect_ratios` boxes of side `anchor_size * stride` (keras_cv.layers.AnchorGenerator).

The output is one tensor [B, anchors, 8 + K]: for every anchor, its box (pixel xyxy), the 4 box
deltas relative to it and the K class logits (visionkit.tasks.detection.split_outputs). Carrying
the anchors in the output lets the loss (which matches truths to anchors) and the decoder (deltas
to boxes, then non-maximum suppression) work from the output alone, so the task's serving outputs
and the exported SavedModel need no anchor configuration. Levels, row, column, anchor is the order.

`width` scales the trunk and the pyramid and subnet channels (256 at 1.0, the paper's).

keras-cv provides the anchors (visionkit.layers.anchors), the IoU (visionkit.layers.box_coding) and the
non-maximum suppression (visionkit.tasks.detection).
Its own RetinaNet and YOLOV8Detector are not used: they return a dict of outputs and train through
their own compile(box_loss=..., classification_loss=...), where the pipeline compiles one loss on one
output (a dict output reads as auxiliary heads, models.common.auxiliary_outputs), and their presets
download weights at run time.
"""

from __future__ import annotations

import math

import keras
from keras import layers

from visionkit.layers.anchors import AnchorBoxes
from visionkit.models.common import check_classes, scaled, zoo_trunk
from visionkit.registry import MODELS

DETECTION_TASKS = ("detection",)
PYRAMID_CHANNELS = 256
PAPER_SCALES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
PAPER_ASPECT_RATIOS = (0.5, 1.0, 2.0)


def check_strides(strides, trunk_strides, *, backbone: str) -> list[int]:
    """Pyramid strides: consecutive doublings, those up to the trunk's deepest map taken from the trunk."""
    strides = [int(s) for s in strides]
    if not strides or any(b != 2 * a for a, b in zip(strides, strides[1:])):
        raise ValueError(
            f"retinanet: strides must double from level to level (e.g. [8, 16, 32, 64, 128]), received {strides!r}"
        )
    from_trunk = [s for s in strides if s <= max(trunk_strides)]
    missing = [s for s in from_trunk if s not in trunk_strides]
    if not from_trunk or missing:
        raise ValueError(
            f"retinanet: backbone {backbone!r} has feature maps at strides {sorted(trunk_strides)}, "
            f"received strides {strides!r}"
        )
    return strides


def feature_pyramid(maps, strides, channels: int) -> dict[int, keras.KerasTensor]:
    """{stride: pyramid map}: lateral 1x1 convolutions and the top-down pathway on the trunk's maps,
    3x3 stride-2 convolutions above its deepest map (FPN, and RetinaNet's P6 and P7)."""
    from_trunk = [s for s in strides if s in maps]
    pyramid, top_down = {}, None
    for stride in reversed(from_trunk):
        x = layers.Conv2D(channels, 1, name=f"fpn_lateral{stride}")(maps[stride])
        if top_down is not None:
            upsampled = layers.UpSampling2D(2, interpolation="nearest", name=f"fpn_upsample{stride}")(top_down)
            x = layers.Add(name=f"fpn_add{stride}")([x, upsampled])
        top_down = x
        pyramid[stride] = layers.Conv2D(channels, 3, padding="same", name=f"fpn_output{stride}")(x)
    x = maps[max(from_trunk)]
    for stride in (s for s in strides if s > max(from_trunk)):
        if stride != 2 * max(from_trunk):
            x = layers.Activation("relu", name=f"fpn_relu{stride}")(x)
        x = pyramid[stride] = layers.Conv2D(channels, 3, strides=2, padding="same", name=f"fpn_output{stride}")(x)
    return dict(sorted(pyramid.items()))


def subnet(
    pyramid,
    outputs_per_anchor: int,
    anchors_per_location: int,
    *,
    channels: int,
    depth: int,
    name: str,
    bias_initializer="zeros",
):
    """One subnet, its weights shared by every level; [B, anchors, outputs_per_anchor] over all levels."""
    convolutions = [
        layers.Conv2D(
            channels,
            3,
            padding="same",
            activation="relu",
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            name=f"{name}_conv{i + 1}",
        )
        for i in range(depth)
    ]
    last = layers.Conv2D(
        outputs_per_anchor * anchors_per_location,
        3,
        padding="same",
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        bias_initializer=bias_initializer,
        dtype="float32",
        name=f"{name}_output",
    )
    flat = []
    for stride, x in pyramid.items():
        for convolution in convolutions:
            x = convolution(x)
        flat.append(layers.Reshape((-1, outputs_per_anchor), name=f"{name}_flat{stride}")(last(x)))
    return layers.Concatenate(axis=1, name=f"{name}_all")(flat)


@MODELS.register(
    "retinanet", tasks=DETECTION_TASKS, paper="Lin et al. 2017", paper_input=(640, 640, 3), paper_classes=80
)
def retinanet(
    *,
    input_shape=(640, 640, 3),
    num_classes=None,
    backbone="resnet50",
    width=1.0,
    strides=(8, 16, 32, 64, 128),
    anchor_size=4.0,
    scales=PAPER_SCALES,
    aspect_ratios=PAPER_ASPECT_RATIOS,
    head_depth=4,
    prior_probability=0.01,
    pixel_mean=None,
    pixel_std=None,
) -> keras.Model:
    """RetinaNet (Lin et al. 2017) on a zoo trunk; see the module docstring. The defaults are the paper's:
    ResNet-50, pyramid levels P3-P7 (strides 8 to 128), anchors of side 4 x stride at 3 scales and
    3 aspect ratios, subnets of four 3x3 convolutions, prior probability 0.01."""
    check_classes(num_classes, model="retinanet")
    if head_depth < 0 or not 0 < prior_probability < 1 or anchor_size <= 0:
        raise ValueError(
            f"retinanet: head_depth must be >= 0, prior_probability in (0, 1) and anchor_size > 0, "
            f"received {head_depth!r}, {prior_probability!r} and {anchor_size!r}"
        )
    trunk, maps = zoo_trunk(
        backbone,
        input_shape,
        width=width,
        pixel_mean=pixel_mean,
        pixel_std=pixel_std,
        model="retinanet",
        option="backbone",
    )
    strides = check_strides(strides, maps, backbone=backbone)
    channels = scaled(PYRAMID_CHANNELS, width)
    pyramid = feature_pyramid(maps, strides, channels)
    per_location = len(scales) * len(aspect_ratios)
    prior = keras.initializers.Constant(-math.log((1 - prior_probability) / prior_probability))
    logits = subnet(
        pyramid, num_classes, per_location, channels=channels, depth=head_depth, name="class", bias_initializer=prior
    )
    deltas = subnet(pyramid, 4, per_location, channels=channels, depth=head_depth, name="box")
    anchors = AnchorBoxes(
        strides, [anchor_size * s for s in strides], scales, aspect_ratios, dtype="float32", name="anchors"
    )(trunk.input)
    outputs = layers.Concatenate(axis=-1, dtype="float32", name="detections")([anchors, deltas, logits])
    return keras.Model(trunk.input, outputs, name="retinanet")
