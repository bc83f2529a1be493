"""Box arithmetic the detectors share: the centre/size delta encoding of Faster R-CNN (Ren et al.
2015, eq. 2) divided by BOX_VARIANCE, as in keras-cv's RetinaNet and Detectron's (10, 10, 5, 5)
weights, and the matching of anchors (or proposals) to truth boxes by IoU. Used by the layers that
decode proposals and by the detection losses. Boxes are pixel xyxy; every function uses keras.ops
only (TensorFlow and JAX)."""

from __future__ import annotations

from keras import ops

BOX_VARIANCE = (0.1, 0.1, 0.2, 0.2)
EPSILON = 1e-7


def _centre_size(boxes):
    width, height = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * width, boxes[..., 1] + 0.5 * height, width, height


def encode_deltas(anchors, boxes):
    """Box deltas of xyxy `boxes` relative to xyxy `anchors` (Girshick et al., Faster R-CNN eq. 2)."""
    anchor_x, anchor_y, anchor_w, anchor_h = _centre_size(anchors)
    box_x, box_y, box_w, box_h = _centre_size(boxes)
    deltas = ops.stack(
        [
            (box_x - anchor_x) / anchor_w,
            (box_y - anchor_y) / anchor_h,
            ops.log(ops.maximum(box_w, EPSILON) / anchor_w),
            ops.log(ops.maximum(box_h, EPSILON) / anchor_h),
        ],
        axis=-1,
    )
    return deltas / ops.convert_to_tensor(BOX_VARIANCE, deltas.dtype)


def decode_deltas(anchors, deltas):
    """The xyxy boxes that `deltas` describe relative to `anchors` (the inverse of encode_deltas)."""
    deltas = deltas * ops.convert_to_tensor(BOX_VARIANCE, deltas.dtype)
    anchor_x, anchor_y, anchor_w, anchor_h = _centre_size(anchors)
    centre_x, centre_y = anchor_x + deltas[..., 0] * anchor_w, anchor_y + deltas[..., 1] * anchor_h
    # Clipped so that an untrained head cannot overflow exp (log(1000 / 16), as Detectron).
    half_w = 0.5 * anchor_w * ops.exp(ops.minimum(deltas[..., 2], 4.135))
    half_h = 0.5 * anchor_h * ops.exp(ops.minimum(deltas[..., 3], 4.135))
    return ops.stack([centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h], axis=-1)


def iou_with_truths(boxes, truths, valid):
    """IoU of each box [B, N, 4] with each truth [B, M, 4], -1 against padding rows (`valid` [B, M]
    false), so that a padded truth is never any box's best. [B, N, M]"""
    from keras_cv import bounding_box

    return ops.where(valid[:, None, :], bounding_box.compute_iou(boxes, truths, "xyxy"), -1.0)


def match_anchors(anchors, boxes, valid, positive_iou: float, negative_iou: float):
    """Assign each anchor [B, A, 4] a truth box [B, M, 4] (`valid` [B, M] marks the real ones).

    RetinaNet's rule (section 4): IoU >= positive_iou is a positive, below negative_iou a negative
    (background), in between ignored. As in Faster R-CNN, each truth's best anchors are positives
    whatever their IoU, so that objects smaller than every anchor are still learned.
    Returns (index of the matched truth [B, A], positive [B, A] bool, negative [B, A] bool).
    """
    iou = iou_with_truths(anchors, boxes, valid)  # [B, A, M]
    best_for_truth = ops.max(iou, axis=1, keepdims=True)
    is_best = ops.logical_and(ops.equal(iou, best_for_truth), best_for_truth > 0)
    matched = ops.argmax(iou + 2.0 * ops.cast(is_best, iou.dtype), axis=-1)
    best_iou = ops.max(iou, axis=-1)
    positive = ops.logical_or(best_iou >= positive_iou, ops.any(is_best, axis=-1))
    negative = ops.logical_and(best_iou < negative_iou, ops.logical_not(positive))
    return matched, positive, negative


def matched_truths(boxes, classes, matched):
    """The box [B, N, 4] and class [B, N] of each example's matched truth (index `matched` [B, N] into
    the M truths), as one-hot products: several times faster than take_along_axis on TensorFlow."""
    picks = ops.one_hot(matched, ops.shape(boxes)[1], dtype=boxes.dtype)  # [B, N, M]
    return ops.matmul(picks, boxes), ops.squeeze(ops.matmul(picks, classes[..., None]), axis=-1)
