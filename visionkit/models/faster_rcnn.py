"""Faster R-CNN: Ren, He, Girshick & Sun, "Faster R-CNN: Towards Real-Time Object Detection with Region
Proposal Networks", NIPS 2015 (arXiv:1506.01497), with the detection head of Fast R-CNN (Girshick 2015).

Stage one, the region proposal network (section 3.1): on the trunk's feature map of stride
`feature_stride` (VGG-16's conv5_3, stride 16, in the paper), a 3x3 convolution (512 channels for
VGG-16) with ReLU, then two sibling 1x1 convolutions: an objectness score and 4 box deltas for each
of the A = len(anchor_sizes) x len(aspect_ratios) anchors per location (3 x 3 in the paper: sides
128, 256, 512 pixels at ratios 1:2, 1:1, 2:1). The score is one sigmoid logit where the paper has a
two-way softmax: the same model with half the outputs. Proposals (visionkit.layers.RegionProposals):
decoded, clipped to the image, the `pre_nms_proposals` best kept, suppressed at IoU
`proposal_nms_iou` (0.7), the `proposals` best kept (300 at test time in the paper).

Stage two, the detection head (Fast R-CNN, section 2): RoI pooling of each proposal on the same
feature map to `pooled_size` x `pooled_size` (7 x 7; visionkit.layers.ROIPooling, the lecture's max
pooling, or RoI Align with `pooling: align`), two fully connected layers of `fc_units` (4096, VGG's
fc6 and fc7) with ReLU and dropout, then class scores (softmax over background and the K classes)
and per-class box deltas (4 per class).

Training is approximate joint training (section 3.2): one model, the sum of both stages' losses,
no gradient through the proposals' coordinates (visionkit.tasks.region_losses). Inference decodes
each region's deltas for each class and suppresses within each class (visionkit.tasks.detection).

Outputs: {"predictions": [B, R, 1 + K, 9] (regions, per-class deltas, class logits), "rpn": [B, A, 9]
(anchors, deltas, objectness logits)}; "rpn" is a training output, dropped for evaluation and export
like GoogLeNet's auxiliary heads (models.common.inference_model).

`width` scales the trunk and the proposal network's 512 channels; `fc_units` is absolute.
"""

from __future__ import annotations

import keras
from keras import layers

from visionkit.layers.anchors import AnchorBoxes
from visionkit.layers.region_proposals import FeatureCells, RegionOutputs, RegionProposals
from visionkit.layers.roi_pooling import METHODS, ROIPooling
from visionkit.models.common import check_classes, scaled, zoo_trunk
from visionkit.models.retinanet import DETECTION_TASKS
from visionkit.outputs import MAIN_OUTPUT, PROPOSALS_OUTPUT
from visionkit.registry import MODELS

RPN_CHANNELS = 512
PAPER_ANCHOR_SIZES = (128, 256, 512)
PAPER_ASPECT_RATIOS = (0.5, 1.0, 2.0)


def check_options(
    *,
    feature_stride,
    trunk_strides,
    backbone,
    anchor_sizes,
    aspect_ratios,
    proposals,
    pre_nms_proposals,
    proposal_nms_iou,
    pooled_size,
    pooling,
    fc_units,
    dropout,
) -> None:
    """One error per bad option, naming it and its value."""
    if feature_stride not in trunk_strides:
        raise ValueError(
            f"faster_rcnn: backbone {backbone!r} has feature maps at strides {sorted(trunk_strides)}, "
            f"received feature_stride={feature_stride!r}"
        )
    if not anchor_sizes or min(anchor_sizes) <= 0 or not aspect_ratios or min(aspect_ratios) <= 0:
        raise ValueError(
            f"faster_rcnn: anchor_sizes and aspect_ratios must be non-empty lists of positive numbers, "
            f"received {list(anchor_sizes)!r} and {list(aspect_ratios)!r}"
        )
    if proposals < 1 or pre_nms_proposals < proposals or not 0 < proposal_nms_iou <= 1:
        raise ValueError(
            f"faster_rcnn: need proposals >= 1, pre_nms_proposals >= proposals and proposal_nms_iou "
            f"in (0, 1], received {proposals!r}, {pre_nms_proposals!r} and {proposal_nms_iou!r}"
        )
    if pooled_size < 1 or pooling not in METHODS or fc_units < 1 or not 0 <= dropout < 1:
        raise ValueError(
            f"faster_rcnn: need pooled_size >= 1, pooling in {METHODS}, fc_units >= 1 and dropout in "
            f"[0, 1), received {pooled_size!r}, {pooling!r}, {fc_units!r} and {dropout!r}"
        )


def region_proposal_network(features, image, *, stride, channels, anchor_sizes, aspect_ratios):
    """[B, anchors, 9]: every anchor's box (pixel xyxy), its box deltas and its objectness logit."""
    per_location = len(anchor_sizes) * len(aspect_ratios)
    small = keras.initializers.RandomNormal(stddev=0.01)  # section 3.1.3: zero-mean Gaussian, std 0.01
    x = layers.Conv2D(channels, 3, padding="same", activation="relu", kernel_initializer=small, name="rpn_conv")(
        features
    )
    objectness = layers.Conv2D(per_location, 1, kernel_initializer=small, dtype="float32", name="rpn_objectness")(x)
    deltas = layers.Conv2D(4 * per_location, 1, kernel_initializer=small, dtype="float32", name="rpn_deltas")(x)
    objectness = layers.Reshape((-1, 1), name="rpn_objectness_flat")(objectness)
    deltas = layers.Reshape((-1, 4), name="rpn_deltas_flat")(deltas)
    smallest = float(min(anchor_sizes))
    anchors = AnchorBoxes(
        [stride],
        [smallest],
        [size / smallest for size in anchor_sizes],
        aspect_ratios,
        dtype="float32",
        name="rpn_anchors",
    )(image)
    return layers.Concatenate(axis=-1, dtype="float32", name=PROPOSALS_OUTPUT)([anchors, deltas, objectness])


def detection_head(features, proposals, *, stride, num_classes, pooled_size, pooling, fc_units, dropout):
    """[B, R, 1 + K, 9]: RoI pooling, fc6 and fc7, class logits and per-class deltas beside each region."""
    cells = FeatureCells(stride, name="proposal_cells")(proposals)
    pooled = ROIPooling((pooled_size, pooled_size), method=pooling, name="roi_pooling")(features, cells)
    x = layers.Reshape((proposals.shape[1], -1), name="roi_flat")(pooled)
    for name in ("fc6", "fc7"):
        x = layers.Dense(fc_units, activation="relu", name=name)(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    # Fast R-CNN, section 2.3: scores from N(0, 0.01^2), box deltas from N(0, 0.001^2), biases 0.
    logits = layers.Dense(
        num_classes + 1,
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        dtype="float32",
        name="class_logits",
    )(x)
    deltas = layers.Dense(
        4 * num_classes,
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
        dtype="float32",
        name="box_deltas",
    )(x)
    return RegionOutputs(dtype="float32", name=MAIN_OUTPUT)(proposals, logits, deltas)


@MODELS.register(
    "faster_rcnn", tasks=DETECTION_TASKS, paper="Ren et al. 2015", paper_input=(608, 800, 3), paper_classes=20
)
def faster_rcnn(
    *,
    input_shape=(608, 800, 3),
    num_classes=None,
    backbone="vgg16",
    width=1.0,
    feature_stride=16,
    anchor_sizes=PAPER_ANCHOR_SIZES,
    aspect_ratios=PAPER_ASPECT_RATIOS,
    pre_nms_proposals=6000,
    proposals=300,
    proposal_nms_iou=0.7,
    pooled_size=7,
    pooling="max",
    fc_units=4096,
    dropout=0.5,
    pixel_mean=None,
    pixel_std=None,
) -> keras.Model:
    """Faster R-CNN (Ren et al. 2015) on a zoo trunk; see the module docstring. The defaults are the
    paper's: VGG-16 at stride 16, anchors of 128, 256 and 512 pixels at 3 aspect ratios, 6000 regions
    before and 300 after suppression at IoU 0.7, 7 x 7 RoI max pooling, two 4096-unit layers with
    dropout 0.5, PASCAL VOC's 20 classes on a 600-pixel image side."""
    check_classes(num_classes, model="faster_rcnn")
    trunk, maps = zoo_trunk(
        backbone,
        input_shape,
        width=width,
        pixel_mean=pixel_mean,
        pixel_std=pixel_std,
        model="faster_rcnn",
        option="backbone",
    )
    check_options(
        feature_stride=feature_stride,
        trunk_strides=maps,
        backbone=backbone,
        anchor_sizes=anchor_sizes,
        aspect_ratios=aspect_ratios,
        proposals=proposals,
        pre_nms_proposals=pre_nms_proposals,
        proposal_nms_iou=proposal_nms_iou,
        pooled_size=pooled_size,
        pooling=pooling,
        fc_units=fc_units,
        dropout=dropout,
    )
    features = maps[feature_stride]
    rpn = region_proposal_network(
        features,
        trunk.input,
        stride=feature_stride,
        channels=scaled(RPN_CHANNELS, width),
        anchor_sizes=anchor_sizes,
        aspect_ratios=aspect_ratios,
    )
    regions = RegionProposals(proposals, pre_nms_proposals, proposal_nms_iou, name="proposals")(rpn, trunk.input)
    predictions = detection_head(
        features,
        regions,
        stride=feature_stride,
        num_classes=num_classes,
        pooled_size=pooled_size,
        pooling=pooling,
        fc_units=fc_units,
        dropout=dropout,
    )
    return keras.Model(trunk.input, {MAIN_OUTPUT: predictions, PROPOSALS_OUTPUT: rpn}, name="faster_rcnn")
