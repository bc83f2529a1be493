"""Object detection with a dense anchor-based detector (RetinaNet, visionkit.models.retinanet) or a
two-stage one (Faster R-CNN, visionkit.models.faster_rcnn): their losses on boxes matched by IoU,
decoding and non-maximum suppression within each class
(keras-cv's NonMaxSuppression, which works on every backend), COCO metrics through pycocotools, a
gallery of predicted and true boxes, precision-recall curves.

Targets: a batch of samples becomes one float32 array [B, max_boxes, 5] of (x1, y1, x2, y2, class)
in pixels, rows past an image's boxes padded with -1 (keras-cv's dense box format, boxes and classes
side by side in one array so that Keras pairs one target with the model's one output). A box a sample
marks `difficult` (Pascal VOC) has class -2 - c: the losses take only classes >= 0, so training leaves it
out, as py-faster-rcnn does (its VOC reader drops difficult objects unless told otherwise), and the
evaluation keeps it out of the metrics, as VOC's protocol does.

Model output, of one of two kinds, told apart by rank:
- dense, [B, anchors, 8 + K]: for every anchor, its box (pixel xyxy), the box deltas relative to it
  and K class logits (sigmoid, one per class; no background class). Loss: DetectionLoss.
- two-stage, [B, regions, 1 + K, 9]: for every proposed region and every class, background first,
  the region's box, the class-specific box deltas (zero for the background) and the class's softmax
  logit. While training, the model also has a "rpn" output [B, anchors, 9] (anchor box, deltas,
  objectness logit); losses: RegionLoss and ProposalLoss (visionkit.tasks.region_losses).
Deltas are Faster R-CNN's centre/size encoding divided by BOX_VARIANCE (visionkit.layers.box_coding).
"""

from __future__ import annotations

import json
import math
from typing import Any

import keras
import numpy as np
from keras import ops

from visionkit.analysis.plots import detection_gallery
from visionkit.errors import UserError
from visionkit.layers.box_coding import decode_deltas, encode_deltas, match_anchors, matched_truths
from visionkit.outputs import MAIN_OUTPUT, PROPOSALS_OUTPUT
from visionkit.registry import TASKS
from visionkit.tasks.base import Task
from visionkit.tasks.detection_metrics import coco_metrics, precision_recall_figure
from visionkit.tasks.region_losses import ProposalLoss, RegionLoss, sigmoid_focal_loss, smooth_l1

PADDING = -1.0
# Class column of a difficult box of class c: DIFFICULT_OFFSET - c, below PADDING.
DIFFICULT_OFFSET = -2
DECODE_BATCH = 256  # images decoded (and suppressed) at once in the evaluation
# Best-scoring (anchor, class) pairs per image that enter non-maximum suppression (Lin et al. 2017,
# section 4: 1000 per level); suppression takes time quadratic in their number.
NMS_CANDIDATES = 1000


def split_outputs(outputs):
    """(anchors [B, A, 4], deltas [B, A, 4], class logits [B, A, K]) of a detector's output."""
    return outputs[..., :4], outputs[..., 4:8], outputs[..., 8:]


def decoded_boxes_and_probabilities(outputs):
    """Boxes and class probabilities of either kind of model output: dense -> boxes [B, A, 4] and
    sigmoid probabilities [B, A, K]; two-stage -> per-class boxes [B, R, K, 4] and softmax
    probabilities without the background [B, R, K]."""
    if len(outputs.shape) == 4:
        regions, deltas, logits = outputs[:, :, 1:, :4], outputs[:, :, 1:, 4:8], outputs[..., 8]
        return decode_deltas(regions, deltas), ops.softmax(logits, axis=-1)[..., 1:]
    anchors, deltas, logits = split_outputs(outputs)
    return decode_deltas(anchors, deltas), ops.sigmoid(logits)


def per_class_candidates(boxes, probabilities, count: int):
    """The `count` best (box, class) pairs, each a candidate of its own, for non-maximum suppression
    within each class (Detectron's inference): a box whose best class is wrong still competes, with
    its lower score, in the right class. Boxes [B, A, 4], or one per class [B, A, K, 4], ->
    [B, count, 4], each shifted by class x span so that boxes of different classes never overlap
    (torchvision's batched_nms); probabilities [B, A, K] -> one-hot scores [B, count, K]. Returns the
    unshifted boxes, the shifted ones and the scores."""
    num_classes = probabilities.shape[-1]
    batch = ops.shape(boxes)[0]
    scores, pairs = ops.top_k(ops.reshape(probabilities, (batch, -1)), min(count, boxes.shape[1] * num_classes))
    classes = pairs % num_classes
    span = 2.0 * ops.max(ops.abs(boxes)) + 1.0
    if len(boxes.shape) == 4:  # one box per (region, class): the pair indexes the flattened boxes
        chosen = ops.take_along_axis(ops.reshape(boxes, (batch, -1, 4)), pairs[..., None], axis=1)
    else:
        chosen = ops.take_along_axis(boxes, (pairs // num_classes)[..., None], axis=1)
    shifted = chosen + ops.cast(classes, boxes.dtype)[..., None] * span
    return chosen, shifted, ops.one_hot(classes, num_classes, dtype=scores.dtype) * scores[..., None]


@keras.saving.register_keras_serializable(package="visionkit")
class DetectionLoss(keras.losses.Loss):
    """RetinaNet's loss: the focal loss summed over every anchor that is not ignored, plus
    `box_weight` x smooth L1 of the box deltas of the positives, both divided by the number of
    positive anchors in the batch (section 4). y_true: [B, M, 5] padded truths; y_pred: [B, A, 8 + K]."""

    def __init__(
        self,
        positive_iou: float = 0.5,
        negative_iou: float = 0.4,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        box_weight: float = 1.0,
        name: str = "detection_loss",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if not 0 < negative_iou <= positive_iou <= 1:
            raise ValueError(
                f"need 0 < negative_iou <= positive_iou <= 1, received negative_iou={negative_iou!r}, "
                f"positive_iou={positive_iou!r}"
            )
        self.positive_iou, self.negative_iou = float(positive_iou), float(negative_iou)
        self.focal_alpha, self.focal_gamma, self.box_weight = float(focal_alpha), float(focal_gamma), float(box_weight)

    def call(self, y_true, y_pred):
        anchors, deltas, logits = split_outputs(y_pred)
        boxes, classes = y_true[..., :4], y_true[..., 4]
        matched, positive, negative = match_anchors(anchors, boxes, classes >= 0, self.positive_iou, self.negative_iou)
        positive = ops.cast(positive, y_pred.dtype)
        counted = ops.maximum(ops.sum(positive), 1.0)
        truth_boxes, truth_classes = matched_truths(boxes, classes, matched)
        targets = (
            ops.one_hot(ops.cast(truth_classes, "int32"), ops.shape(logits)[-1], dtype=y_pred.dtype)
            * positive[..., None]
        )
        focal = ops.sum(sigmoid_focal_loss(targets, logits, self.focal_alpha, self.focal_gamma), axis=-1)
        not_ignored = ops.cast(ops.logical_or(positive > 0, negative), y_pred.dtype)
        class_loss = ops.sum(focal * not_ignored) / counted
        box_error = ops.sum(smooth_l1(encode_deltas(anchors, truth_boxes) - deltas), axis=-1)
        box_loss = ops.sum(box_error * positive) / counted
        return class_loss + self.box_weight * box_loss

    def get_config(self):
        return {
            **super().get_config(),
            "positive_iou": self.positive_iou,
            "negative_iou": self.negative_iou,
            "focal_alpha": self.focal_alpha,
            "focal_gamma": self.focal_gamma,
            "box_weight": self.box_weight,
        }


def truth_lists(y_true: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Per image {"boxes": [N, 4], "classes": [N], "difficult": [N] bool} from padded targets [B, M, 5]."""
    truths = []
    for rows in np.asarray(y_true):
        rows = rows[rows[:, 4] != PADDING]
        difficult = rows[:, 4] <= DIFFICULT_OFFSET
        classes = np.where(difficult, DIFFICULT_OFFSET - rows[:, 4], rows[:, 4]).astype(np.int64)
        truths.append({"boxes": rows[:, :4], "classes": classes, "difficult": difficult})
    return truths


class ValidationMAP(keras.callbacks.Callback):
    """Adds val_map and val_map50 of the first validation images to each epoch's logs, for the
    callbacks after it (progress, and tracking and checkpoints where they come later). A Keras
    metric cannot run COCOeval, hence a callback."""

    def __init__(self, task: Detection, images: np.ndarray, targets: np.ndarray, data):
        super().__init__()
        self.task, self.images, self.targets, self.data = task, images, targets, data

    def on_epoch_end(self, epoch, logs=None):
        outputs = self.model.predict(self.images, verbose=0)
        if isinstance(outputs, dict):  # a two-stage detector in training also outputs its proposal network's
            outputs = outputs[MAIN_OUTPUT]
        predicted = self.task.detections(outputs)
        metrics = coco_metrics(truth_lists(self.targets), predicted, self.data.class_names, self.data.image_shape[:2])
        if logs is not None:
            logs.update({"val_map": metrics["map"], "val_map50": metrics["map50"]})


@TASKS.register("detection")
class Detection(Task):
    name = "detection"
    target_key = "boxes"
    monitor = "val_map50"  # added to the epoch logs by the task's own callback, which runs first
    monitor_mode = "max"
    monitor_from_callback = True
    averages_views = False  # raw anchor outputs of a mirrored image belong to other anchors
    headline_metrics = ("map", "map50", "map75")

    def __init__(
        self,
        max_boxes: int = 16,
        positive_iou: float = 0.5,
        negative_iou: float = 0.4,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        box_loss_weight: float = 1.0,
        score_threshold: float = 0.05,
        nms_iou: float = 0.5,
        max_detections: int = 100,
        val_map_images: int = 256,
        gallery_images: int = 16,
    ):
        from keras_cv.layers import NonMaxSuppression

        for key, value in (
            ("max_boxes", max_boxes),
            ("max_detections", max_detections),
            ("val_map_images", val_map_images),
            ("gallery_images", gallery_images),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be an integer >= 1, received {value!r}")
        for key, value in (("score_threshold", score_threshold), ("nms_iou", nms_iou)):
            if not 0 <= value <= 1:
                raise ValueError(f"{key} must be in [0, 1], received {value!r}")
        self.loss_options = {
            "positive_iou": positive_iou,
            "negative_iou": negative_iou,
            "focal_alpha": focal_alpha,
            "focal_gamma": focal_gamma,
            "box_weight": box_loss_weight,
        }
        DetectionLoss(**self.loss_options)  # validates the options
        self.max_boxes, self.val_map_images, self.gallery_images = max_boxes, val_map_images, gallery_images
        self.suppression = {"score_threshold": score_threshold, "nms_iou": nms_iou, "max_detections": max_detections}
        self.nms = NonMaxSuppression(
            "xyxy",
            from_logits=False,
            iou_threshold=nms_iou,
            confidence_threshold=score_threshold,
            max_detections=max_detections,
        )

    def num_outputs(self, data) -> int:
        return len(data.class_names)

    def loss(self):
        return DetectionLoss(**self.loss_options)

    def output_losses(self, output_names):
        """A two-stage detector's outputs: the detection head's and the proposal network's losses, weighted
        equally (Ren et al. 2015, eq. 1)."""
        if set(output_names) != {MAIN_OUTPUT, PROPOSALS_OUTPUT}:
            raise ValueError(
                f"a detector's outputs are {MAIN_OUTPUT!r} and optionally {PROPOSALS_OUTPUT!r}, "
                f"received {list(output_names)}"
            )
        return {MAIN_OUTPUT: RegionLoss(), PROPOSALS_OUTPUT: ProposalLoss()}, {MAIN_OUTPUT: 1.0, PROPOSALS_OUTPUT: 1.0}

    def metrics(self, num_outputs):
        return []  # val_map and val_map50 come from the ValidationMAP callback

    def encode_targets(self, samples: list[dict[str, Any]]) -> np.ndarray:
        targets = np.full((len(samples), self.max_boxes, 5), PADDING, dtype=np.float32)
        for i, sample in enumerate(samples):
            boxes = np.asarray(sample["boxes"], np.float32).reshape(-1, 4)
            if len(boxes) > self.max_boxes:
                raise UserError(
                    f"an image has {len(boxes)} boxes, more than task.max_boxes={self.max_boxes}; raise task.max_boxes"
                )
            classes = np.asarray(sample["classes"]).reshape(-1)
            difficult = np.asarray(sample.get("difficult", np.zeros(len(classes), bool)), bool).reshape(-1)
            targets[i, : len(boxes), :4] = boxes
            targets[i, : len(boxes), 4] = np.where(difficult, DIFFICULT_OFFSET - classes, classes)
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
            served = self.serving_outputs(ops.convert_to_tensor(outputs[start : start + DECODE_BATCH]))
            served = {k: ops.convert_to_numpy(v) for k, v in served.items()}
            found += [
                {
                    "boxes": served["boxes"][i, :n],
                    "scores": served["scores"][i, :n],
                    "classes": served["classes"][i, :n],
                }
                for i, n in enumerate(served["num_detections"])
            ]
        return found

    def evaluate(self, y_true, y_pred, data):
        metrics = coco_metrics(truth_lists(y_true), self.detections(y_pred), data.class_names, data.image_shape[:2])
        return {key: value for key, value in metrics.items() if not math.isnan(value)}  # NaN: no such truths

    def figures(self, y_true, y_pred, data):
        truths, predicted = truth_lists(y_true), self.detections(y_pred)
        return {
            "detections.png": detection_gallery(
                data.test.images, truths, predicted, data.class_names, max_images=self.gallery_images
            ),
            "precision_recall.png": precision_recall_figure(truths, predicted, data.class_names),
        }

    def serving_outputs(self, outputs):
        """boxes (pixel xyxy) [B, D, 4], scores [B, D], classes [B, D] int32 and num_detections [B] int32,
        D = max_detections, best first; the rows past num_detections are padded with -1."""
        boxes, shifted, scores = per_class_candidates(*decoded_boxes_and_probabilities(outputs), NMS_CANDIDATES)
        found = self.nms(shifted, scores)
        classes = ops.cast(found["classes"], "int32")  # -1 past num_detections
        # The kept boxes are candidates' shifted boxes, copied exactly: find each one's candidate and
        # return its unshifted box (subtracting the shift would round to the shifted values' precision).
        same = ops.all(ops.equal(found["boxes"][:, :, None, :], shifted[:, None, :, :]), axis=-1)
        kept = ops.take_along_axis(boxes, ops.argmax(ops.cast(same, "int32"), axis=-1)[..., None], axis=1)
        boxes = ops.where(classes[..., None] >= 0, ops.cast(kept, "float32"), PADDING)
        return {
            "boxes": boxes,
            "scores": ops.cast(found["confidence"], "float32"),
            "classes": classes,
            "num_detections": ops.cast(found["num_detections"], "int32"),
        }

    def prediction_rows(self, outputs, data) -> list[dict[str, Any]]:
        """Per image: the number of detections and a JSON list of {class, score, box}."""
        rows = []
        for boxes, scores, classes, count in zip(
            outputs["boxes"], outputs["scores"], outputs["classes"], outputs["num_detections"]
        ):
            found = [
                {"class": data.class_names[int(c)], "score": round(float(s), 4), "box": [round(float(v), 1) for v in b]}
                for b, s, c in zip(boxes[:count], scores[:count], classes[:count])
            ]
            rows.append({"num_detections": int(count), "detections": json.dumps(found)})
        return rows
