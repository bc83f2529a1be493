"""Object detection with dense anchor-based detectors (RetinaNet, visionkit.models.retinanet): focal
loss and smooth L1 on anchors matched by IoU, decoding and non-maximum suppression within each class
(keras-cv's NonMaxSuppression, which works on every backend), COCO metrics through pycocotools, a
gallery of predicted and true boxes, precision-recall curves.

Targets: a batch of samples becomes one float32 array [B, max_boxes, 5] of (x1, y1, x2, y2, class)
in pixels, rows past an image's boxes padded with -1 (keras-cv's dense box format, boxes and classes
side by side in one array so that Keras pairs one target with the model's one output).

Model output: one tensor [B, anchors, 8 + K] holding, for every anchor, its box (pixel xyxy), the
box deltas relative to it and K class logits (sigmoid, one per class; no background class).
Deltas are Faster R-CNN's centre/size encoding divided by BOX_VARIANCE, as in keras-cv's RetinaNet.
"""

from __future__ import annotations

import json
import math
from typing import Any

import keras
import numpy as np
from keras import ops

from visionkit.analysis.detection_metrics import coco_metrics, detection_gallery, precision_recall_figure
from visionkit.errors import UserError
from visionkit.registry import TASKS
from visionkit.tasks.base import Task

BOX_VARIANCE = (0.1, 0.1, 0.2, 0.2)
PADDING = -1.0
EPSILON = 1e-7
DECODE_BATCH = 256  # images decoded (and suppressed) at once in the evaluation
# Best-scoring (anchor, class) pairs per image that enter non-maximum suppression (Lin et al. 2017,
# section 4: 1000 per level); suppression takes time quadratic in their number.
NMS_CANDIDATES = 1000


@keras.saving.register_keras_serializable(package="visionkit")
class AnchorBoxes(keras.layers.Layer):
    """Every anchor box of every pyramid level, pixel xyxy, [B, anchors, 4], in the order of the
    subnet outputs (level, row, column, scale, aspect ratio): the first part of a dense detector's
    output. Called on the image batch, of which only the batch size and the static height and width
    matter. It lives with the task so that loading a detector's .keras file finds it."""

    def __init__(self, strides, sizes, scales, aspect_ratios, **kwargs):
        super().__init__(**kwargs)
        self.strides = [int(s) for s in strides]
        self.sizes = [float(s) for s in sizes]
        self.scales = [float(s) for s in scales]
        self.aspect_ratios = [float(r) for r in aspect_ratios]

    def anchors(self, height: int, width: int):
        """[anchors, 4] for an image of this size."""
        from keras_cv.layers import AnchorGenerator

        generator = AnchorGenerator("xyxy", sizes=self.sizes, scales=self.scales,
                                    aspect_ratios=self.aspect_ratios, strides=self.strides)
        per_level = generator(image_shape=(height, width, 3))
        return ops.concatenate([per_level[level] for level in sorted(per_level)], axis=0)

    def call(self, images):
        anchors = ops.cast(self.anchors(images.shape[1], images.shape[2]), self.compute_dtype)
        return ops.broadcast_to(anchors[None], (ops.shape(images)[0], *anchors.shape))

    def compute_output_shape(self, input_shape):
        count = sum(-(-input_shape[1] // s) * -(-input_shape[2] // s) for s in self.strides)
        return (input_shape[0], count * len(self.scales) * len(self.aspect_ratios), 4)

    def get_config(self):
        return {**super().get_config(), "strides": self.strides, "sizes": self.sizes, "scales": self.scales,
                "aspect_ratios": self.aspect_ratios}


def split_outputs(outputs):
    """(anchors [B, A, 4], deltas [B, A, 4], class logits [B, A, K]) of a detector's output."""
    return outputs[..., :4], outputs[..., 4:8], outputs[..., 8:]


def _centre_size(boxes):
    width, height = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * width, boxes[..., 1] + 0.5 * height, width, height


def encode_deltas(anchors, boxes):
    """Box deltas of xyxy `boxes` relative to xyxy `anchors` (Girshick et al., Faster R-CNN eq. 2)."""
    anchor_x, anchor_y, anchor_w, anchor_h = _centre_size(anchors)
    box_x, box_y, box_w, box_h = _centre_size(boxes)
    deltas = ops.stack([(box_x - anchor_x) / anchor_w, (box_y - anchor_y) / anchor_h,
                        ops.log(ops.maximum(box_w, EPSILON) / anchor_w),
                        ops.log(ops.maximum(box_h, EPSILON) / anchor_h)], axis=-1)
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


def per_class_candidates(boxes, probabilities, count: int):
    """The `count` best (anchor, class) pairs, each a candidate of its own, for non-maximum
    suppression within each class (Detectron's RetinaNet inference): a box whose best class is wrong
    still competes, with its lower score, in the right class. Boxes [B, A, 4] -> [B, count, 4], each
    shifted by class x span so that boxes of different classes never overlap (torchvision's
    batched_nms); probabilities [B, A, K] -> one-hot scores [B, count, K]. Returns the unshifted
    boxes, the shifted ones and the scores."""
    num_classes = probabilities.shape[-1]
    batch = ops.shape(boxes)[0]
    scores, pairs = ops.top_k(ops.reshape(probabilities, (batch, -1)), min(count, boxes.shape[1] * num_classes))
    classes = pairs % num_classes
    span = 2.0 * ops.max(ops.abs(boxes)) + 1.0
    chosen = ops.take_along_axis(boxes, (pairs // num_classes)[..., None], axis=1)
    shifted = chosen + ops.cast(classes, boxes.dtype)[..., None] * span
    return chosen, shifted, ops.one_hot(classes, num_classes, dtype=scores.dtype) * scores[..., None]


def match_anchors(anchors, boxes, valid, positive_iou: float, negative_iou: float):
    """Assign each anchor [B, A, 4] a truth box [B, M, 4] (`valid` [B, M] marks the real ones).

    RetinaNet's rule (section 4): IoU >= positive_iou is a positive, below negative_iou a negative
    (background), in between ignored. As in Faster R-CNN, each truth's best anchors are positives
    whatever their IoU, so that objects smaller than every anchor are still learned.
    Returns (index of the matched truth [B, A], positive [B, A] bool, negative [B, A] bool).
    """
    from keras_cv import bounding_box

    iou = bounding_box.compute_iou(anchors, boxes, "xyxy")  # [B, A, M]
    iou = ops.where(valid[:, None, :], iou, -1.0)
    best_for_truth = ops.max(iou, axis=1, keepdims=True)
    is_best = ops.logical_and(ops.equal(iou, best_for_truth), best_for_truth > 0)
    matched = ops.argmax(iou + 2.0 * ops.cast(is_best, iou.dtype), axis=-1)
    best_iou = ops.max(iou, axis=-1)
    positive = ops.logical_or(best_iou >= positive_iou, ops.any(is_best, axis=-1))
    negative = ops.logical_and(best_iou < negative_iou, ops.logical_not(positive))
    return matched, positive, negative


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


@keras.saving.register_keras_serializable(package="visionkit")
class DetectionLoss(keras.losses.Loss):
    """RetinaNet's loss: the focal loss summed over every anchor that is not ignored, plus
    `box_weight` x smooth L1 of the box deltas of the positives, both divided by the number of
    positive anchors in the batch (section 4). y_true: [B, M, 5] padded truths; y_pred: [B, A, 8 + K]."""

    def __init__(self, positive_iou: float = 0.5, negative_iou: float = 0.4, focal_alpha: float = 0.25,
                 focal_gamma: float = 2.0, box_weight: float = 1.0, name: str = "detection_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if not 0 < negative_iou <= positive_iou <= 1:
            raise ValueError(f"need 0 < negative_iou <= positive_iou <= 1, received negative_iou={negative_iou!r}, "
                             f"positive_iou={positive_iou!r}")
        self.positive_iou, self.negative_iou = float(positive_iou), float(negative_iou)
        self.focal_alpha, self.focal_gamma, self.box_weight = float(focal_alpha), float(focal_gamma), float(box_weight)

    def call(self, y_true, y_pred):
        anchors, deltas, logits = split_outputs(y_pred)
        boxes, classes = y_true[..., :4], y_true[..., 4]
        matched, positive, negative = match_anchors(anchors, boxes, classes >= 0, self.positive_iou,
                                                    self.negative_iou)
        positive = ops.cast(positive, y_pred.dtype)
        counted = ops.maximum(ops.sum(positive), 1.0)
        # Gathers as one-hot products: several times faster than take_along_axis on the TF backend.
        picks = ops.one_hot(matched, ops.shape(boxes)[1], dtype=y_pred.dtype)  # [B, A, M]
        matched_class = ops.cast(ops.squeeze(ops.matmul(picks, classes[..., None]), axis=-1), "int32")
        targets = ops.one_hot(matched_class, ops.shape(logits)[-1], dtype=y_pred.dtype) * positive[..., None]
        focal = ops.sum(sigmoid_focal_loss(targets, logits, self.focal_alpha, self.focal_gamma), axis=-1)
        not_ignored = ops.cast(ops.logical_or(positive > 0, negative), y_pred.dtype)
        class_loss = ops.sum(focal * not_ignored) / counted
        box_error = ops.sum(smooth_l1(encode_deltas(anchors, ops.matmul(picks, boxes)) - deltas), axis=-1)
        box_loss = ops.sum(box_error * positive) / counted
        return class_loss + self.box_weight * box_loss

    def get_config(self):
        return {**super().get_config(), "positive_iou": self.positive_iou, "negative_iou": self.negative_iou,
                "focal_alpha": self.focal_alpha, "focal_gamma": self.focal_gamma, "box_weight": self.box_weight}


def truth_lists(y_true: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Per image {"boxes": [N, 4], "classes": [N]} from padded targets [B, M, 5]."""
    y_true = np.asarray(y_true)
    return [{"boxes": rows[rows[:, 4] >= 0, :4], "classes": rows[rows[:, 4] >= 0, 4].astype(np.int64)}
            for rows in y_true]


class ValidationMAP(keras.callbacks.Callback):
    """Adds val_map and val_map50 of the first validation images to each epoch's logs, for the
    callbacks after it (progress, and tracking and checkpoints where they come later). A Keras
    metric cannot run COCOeval, hence a callback."""

    def __init__(self, task: "Detection", images: np.ndarray, targets: np.ndarray, data):
        super().__init__()
        self.task, self.images, self.targets, self.data = task, images, targets, data

    def on_epoch_end(self, epoch, logs=None):
        predicted = self.task.detections(self.model.predict(self.images, verbose=0))
        metrics = coco_metrics(truth_lists(self.targets), predicted, self.data.class_names,
                               self.data.image_shape[:2])
        if logs is not None:
            logs.update({"val_map": metrics["map"], "val_map50": metrics["map50"]})


@TASKS.register("detection")
class Detection(Task):
    name = "detection"
    target_key = "boxes"
    monitor = "val_map50"  # added to the epoch logs by the task's own callback, which runs first
    monitor_mode = "max"
    averages_views = False  # raw anchor outputs of a mirrored image belong to other anchors
    headline_metrics = ("map", "map50", "map75")

    def __init__(self, max_boxes: int = 16, positive_iou: float = 0.5, negative_iou: float = 0.4,
                 focal_alpha: float = 0.25, focal_gamma: float = 2.0, box_loss_weight: float = 1.0,
                 score_threshold: float = 0.05, nms_iou: float = 0.5, max_detections: int = 100,
                 val_map_images: int = 256, gallery_images: int = 16):
        from keras_cv.layers import NonMaxSuppression

        for key, value in (("max_boxes", max_boxes), ("max_detections", max_detections),
                           ("val_map_images", val_map_images), ("gallery_images", gallery_images)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be an integer >= 1, received {value!r}")
        for key, value in (("score_threshold", score_threshold), ("nms_iou", nms_iou)):
            if not 0 <= value <= 1:
                raise ValueError(f"{key} must be in [0, 1], received {value!r}")
        self.loss_options = {"positive_iou": positive_iou, "negative_iou": negative_iou, "focal_alpha": focal_alpha,
                             "focal_gamma": focal_gamma, "box_weight": box_loss_weight}
        DetectionLoss(**self.loss_options)  # validates the options
        self.max_boxes, self.val_map_images, self.gallery_images = max_boxes, val_map_images, gallery_images
        self.suppression = {"score_threshold": score_threshold, "nms_iou": nms_iou, "max_detections": max_detections}
        self.nms = NonMaxSuppression("xyxy", from_logits=False, iou_threshold=nms_iou,
                                     confidence_threshold=score_threshold, max_detections=max_detections)

    def num_outputs(self, data) -> int:
        return len(data.class_names)

    def build_model(self, builder, *, input_shape, num_outputs, **kwargs):
        return builder(input_shape=input_shape, num_classes=num_outputs, **kwargs)

    def loss(self):
        return DetectionLoss(**self.loss_options)

    def metrics(self, num_outputs):
        return []  # val_map and val_map50 come from the ValidationMAP callback

    def encode_targets(self, samples: list[dict[str, Any]]) -> np.ndarray:
        targets = np.full((len(samples), self.max_boxes, 5), PADDING, dtype=np.float32)
        for i, sample in enumerate(samples):
            boxes = np.asarray(sample["boxes"], np.float32).reshape(-1, 4)
            if len(boxes) > self.max_boxes:
                raise UserError(f"an image has {len(boxes)} boxes, more than task.max_boxes={self.max_boxes}; "
                                f"raise task.max_boxes")
            targets[i, :len(boxes), :4] = boxes
            targets[i, :len(boxes), 4] = np.asarray(sample["classes"]).reshape(-1)
        return targets

    def training_callbacks(self, data, log_figure) -> list[keras.callbacks.Callback]:
        count = min(self.val_map_images, len(data.val))
        samples = [data.val.sample(i) for i in range(count)]
        return [ValidationMAP(self, data.val.images[:count], self.encode_targets(samples), data)]

    def serving_metadata(self, data):
        return dict(self.suppression)

    def detections(self, outputs: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Per image {"boxes", "scores", "classes"} after decoding and non-maximum suppression."""
        found = []
        for start in range(0, len(outputs), DECODE_BATCH):
            served = self.serving_outputs(ops.convert_to_tensor(outputs[start:start + DECODE_BATCH]))
            served = {k: ops.convert_to_numpy(v) for k, v in served.items()}
            found += [{"boxes": served["boxes"][i, :n], "scores": served["scores"][i, :n],
                       "classes": served["classes"][i, :n]} for i, n in enumerate(served["num_detections"])]
        return found

    def evaluate(self, y_true, y_pred, data):
        metrics = coco_metrics(truth_lists(y_true), self.detections(y_pred), data.class_names,
                               data.image_shape[:2])
        return {key: value for key, value in metrics.items() if not math.isnan(value)}  # NaN: no such truths

    def figures(self, y_true, y_pred, data):
        truths, predicted = truth_lists(y_true), self.detections(y_pred)
        return {"detections.png": detection_gallery(data.test.images, truths, predicted, data.class_names,
                                                    max_images=self.gallery_images),
                "precision_recall.png": precision_recall_figure(truths, predicted, data.class_names)}

    def serving_outputs(self, outputs):
        """boxes (pixel xyxy) [B, D, 4], scores [B, D], classes [B, D] int32 and num_detections [B] int32,
        D = max_detections, best first; the rows past num_detections are padded with -1."""
        anchors, deltas, logits = split_outputs(outputs)
        boxes, shifted, scores = per_class_candidates(decode_deltas(anchors, deltas), ops.sigmoid(logits),
                                                      NMS_CANDIDATES)
        found = self.nms(shifted, scores)
        classes = ops.cast(found["classes"], "int32")  # -1 past num_detections
        # The kept boxes are candidates' shifted boxes, copied exactly: find each one's candidate and
        # return its unshifted box (subtracting the shift would round to the shifted values' precision).
        same = ops.all(ops.equal(found["boxes"][:, :, None, :], shifted[:, None, :, :]), axis=-1)
        kept = ops.take_along_axis(boxes, ops.argmax(ops.cast(same, "int32"), axis=-1)[..., None], axis=1)
        boxes = ops.where(classes[..., None] >= 0, ops.cast(kept, "float32"), PADDING)
        return {"boxes": boxes, "scores": ops.cast(found["confidence"], "float32"), "classes": classes,
                "num_detections": ops.cast(found["num_detections"], "int32")}

    def prediction_rows(self, outputs, data) -> list[dict[str, Any]]:
        """Per image: the number of detections and a JSON list of {class, score, box}."""
        rows = []
        for boxes, scores, classes, count in zip(outputs["boxes"], outputs["scores"], outputs["classes"],
                                                 outputs["num_detections"]):
            found = [{"class": data.class_names[int(c)], "score": round(float(s), 4),
                      "box": [round(float(v), 1) for v in b]} for b, s, c in zip(boxes[:count], scores[:count],
                                                                                 classes[:count])]
            rows.append({"num_detections": int(count), "detections": json.dumps(found)})
        return rows
