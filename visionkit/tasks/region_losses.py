"""The two losses of Faster R-CNN (Ren et al. 2015, eq. 1; visionkit.models.faster_rcnn), trained
together ("approximate joint training", section 3.2: the proposals are constants of the second stage).

- ProposalLoss, on the region proposal network's output [B, A, 9] (anchor xyxy, box deltas,
  objectness logit): an anchor with IoU > 0.7 with a truth box, or a truth's best anchor, is an
  object; one below 0.3 with every truth is background; the rest are ignored (section 3.1.2).
- RegionLoss, on the detection head's output [B, R, 1 + K, 9] (per region and per class, background
  first: region xyxy, class-specific deltas, softmax logit): a region with IoU >= 0.5 with a truth box
  is of that truth's class, any other is background (Fast R-CNN, section 2.3).

Both are the log loss of the classes plus smooth L1 of the box deltas of the objects (Fast R-CNN eq. 3);
smooth L1 and the focal loss are defined here for both kinds of detector.
The paper samples a minibatch per image — 256 anchors, up to half of them objects; 128 regions, up to
a quarter of them objects — and averages over it. These losses compute that minibatch loss's
expectation instead, deterministically: the mean over the objects weighted by the share they would
take in the minibatch, plus the mean over the background weighted by the rest. The same gradient in
expectation, without random sampling inside the loss (which would need a seed under XLA and JAX).

Where the paper adds the truth boxes to the proposals while training, these losses cannot (the
model's input is the image alone): the detection head learns from the network's own proposals,
which cover the objects once the proposal network has learned its first epoch.
"""

from __future__ import annotations

import keras
from keras import ops

from visionkit.layers.box_coding import encode_deltas, iou_with_truths, match_anchors, matched_truths

# ---- element-wise losses, shared with the dense detector's DetectionLoss (visionkit.tasks.detection) ----


def sigmoid_focal_loss(targets, logits, alpha: float, gamma: float):
    """Lin et al. 2017, eq. 5: -alpha_t (1 - p_t)^gamma log(p_t), element-wise on sigmoid logits."""
    probability = ops.sigmoid(logits)
    cross_entropy = ops.binary_crossentropy(targets, logits, from_logits=True)
    p_t = targets * probability + (1 - targets) * (1 - probability)
    alpha_t = targets * alpha + (1 - targets) * (1 - alpha)
    return alpha_t * ops.power(1 - p_t, gamma) * cross_entropy


def smooth_l1(difference, beta: float = 1.0):
    absolute = ops.abs(difference)
    return ops.where(absolute < beta, 0.5 * difference * difference / beta, absolute - 0.5 * beta)


# ---- Faster R-CNN ----


def minibatch_expectation(losses, objects, background, size: int, object_fraction: float):
    """Per image, the expected mean loss over a minibatch of `size` examples of which at most
    `object_fraction` are objects (fewer where fewer exist), the rest background (fewer where fewer
    exist), and the objects' share of it. losses, objects, background: [B, N]; returns two [B]."""
    object_count, background_count = ops.sum(objects, axis=-1), ops.sum(background, axis=-1)
    taken_objects = ops.minimum(object_count, object_fraction * size)
    taken_background = ops.minimum(background_count, size - taken_objects)
    taken = ops.maximum(taken_objects + taken_background, 1.0)
    object_mean = ops.sum(losses * objects, axis=-1) / ops.maximum(object_count, 1.0)
    background_mean = ops.sum(losses * background, axis=-1) / ops.maximum(background_count, 1.0)
    return (taken_objects * object_mean + taken_background * background_mean) / taken, taken_objects / taken


def object_box_loss(reference_boxes, truth_boxes, deltas, objects):
    """Per image, the mean smooth L1 (beta 1, Fast R-CNN eq. 3) of the deltas of the objects. [B]"""
    error = ops.sum(smooth_l1(encode_deltas(reference_boxes, truth_boxes) - deltas), axis=-1)
    return ops.sum(error * objects, axis=-1) / ops.maximum(ops.sum(objects, axis=-1), 1.0)


@keras.saving.register_keras_serializable(package="visionkit")
class ProposalLoss(keras.losses.Loss):
    """The region proposal network's loss (section 3.1.2): object-or-not log loss over the expected
    minibatch of `anchors_per_image` anchors, plus `box_weight` x smooth L1 of the objects' deltas.
    y_true: [B, M, 5] padded truths (their classes do not matter); y_pred: [B, A, 9]."""

    def __init__(
        self,
        positive_iou: float = 0.7,
        negative_iou: float = 0.3,
        anchors_per_image: int = 256,
        object_fraction: float = 0.5,
        box_weight: float = 1.0,
        name: str = "proposal_loss",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if not 0 < negative_iou <= positive_iou <= 1 or anchors_per_image < 1 or not 0 < object_fraction <= 1:
            raise ValueError(
                f"need 0 < negative_iou <= positive_iou <= 1, anchors_per_image >= 1 and object_fraction "
                f"in (0, 1], received {negative_iou!r}, {positive_iou!r}, {anchors_per_image!r}, "
                f"{object_fraction!r}"
            )
        self.positive_iou, self.negative_iou = float(positive_iou), float(negative_iou)
        self.anchors_per_image, self.object_fraction = int(anchors_per_image), float(object_fraction)
        self.box_weight = float(box_weight)

    def call(self, y_true, y_pred):
        anchors, deltas, logits = y_pred[..., :4], y_pred[..., 4:8], y_pred[..., 8]
        boxes, classes = y_true[..., :4], y_true[..., 4]
        matched, positive, negative = match_anchors(anchors, boxes, classes >= 0, self.positive_iou, self.negative_iou)
        objects, background = ops.cast(positive, y_pred.dtype), ops.cast(negative, y_pred.dtype)
        log_loss = ops.binary_crossentropy(objects, logits, from_logits=True)
        class_loss, object_share = minibatch_expectation(
            log_loss, objects, background, self.anchors_per_image, self.object_fraction
        )
        truth_boxes, _ = matched_truths(boxes, classes, matched)
        box_loss = object_share * object_box_loss(anchors, truth_boxes, deltas, objects)
        return class_loss + self.box_weight * box_loss

    def get_config(self):
        return {
            **super().get_config(),
            "positive_iou": self.positive_iou,
            "negative_iou": self.negative_iou,
            "anchors_per_image": self.anchors_per_image,
            "object_fraction": self.object_fraction,
            "box_weight": self.box_weight,
        }


@keras.saving.register_keras_serializable(package="visionkit")
class RegionLoss(keras.losses.Loss):
    """The detection head's loss (Fast R-CNN, section 2.3): softmax log loss over background and the
    K classes for the expected minibatch of the regions (up to `object_fraction` of them objects),
    plus `box_weight` x smooth L1 of the objects' deltas for their true class.
    y_true: [B, M, 5] padded truths; y_pred: [B, R, 1 + K, 9]."""

    def __init__(
        self,
        foreground_iou: float = 0.5,
        object_fraction: float = 0.25,
        box_weight: float = 1.0,
        name: str = "region_loss",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if not 0 < foreground_iou <= 1 or not 0 < object_fraction <= 1:
            raise ValueError(
                f"need foreground_iou and object_fraction in (0, 1], received {foreground_iou!r} and "
                f"{object_fraction!r}"
            )
        self.foreground_iou, self.object_fraction = float(foreground_iou), float(object_fraction)
        self.box_weight = float(box_weight)

    def call(self, y_true, y_pred):
        regions, logits, deltas = y_pred[:, :, 0, :4], y_pred[..., 8], y_pred[:, :, 1:, 4:8]
        boxes, classes = y_true[..., :4], y_true[..., 4]
        iou = iou_with_truths(regions, boxes, classes >= 0)
        objects = ops.cast(ops.max(iou, axis=-1) >= self.foreground_iou, y_pred.dtype)  # [B, R]
        truth_boxes, truth_classes = matched_truths(boxes, classes, ops.argmax(iou, axis=-1))
        labels = ops.cast(objects * (truth_classes + 1), "int32")  # 0: background
        log_loss = ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        class_loss, object_share = minibatch_expectation(
            log_loss, objects, 1.0 - objects, regions.shape[1], self.object_fraction
        )
        class_deltas = ops.sum(
            deltas * ops.one_hot(ops.maximum(labels - 1, 0), deltas.shape[2], dtype=deltas.dtype)[..., None], axis=2
        )
        box_loss = object_share * object_box_loss(regions, truth_boxes, class_deltas, objects)
        return class_loss + self.box_weight * box_loss

    def get_config(self):
        return {
            **super().get_config(),
            "foreground_iou": self.foreground_iou,
            "object_fraction": self.object_fraction,
            "box_weight": self.box_weight,
        }
