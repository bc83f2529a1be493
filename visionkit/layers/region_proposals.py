"""The layers between Faster R-CNN's two stages (Ren et al. 2015; visionkit.models.faster_rcnn).

- RegionProposals: the region proposal network's output -> the best regions after non-maximum
  suppression (section 3.3: decode every anchor's deltas, clip to the image, keep the
  `pre_nms` best-scoring, suppress at IoU 0.7, keep the `count` best).
- FeatureCells: pixel xyxy boxes -> (y1, x1, y2, x2) feature-map cells, ROIPooling's convention.
- RegionOutputs: the detection head's class logits and per-class deltas beside their regions, the
  two-stage output of visionkit.tasks.detection, [B, R, 1 + K, 9].

Proposals are constants for the second stage (approximate joint training, section 3.2): no gradient
flows through their coordinates.
"""

from __future__ import annotations

import keras
from keras import ops

from visionkit.layers.box_coding import decode_deltas


@keras.saving.register_keras_serializable(package="visionkit")
class RegionProposals(keras.layers.Layer):
    """`layer(rpn [B, A, 9], images) -> proposals [B, count, 4]`, pixel xyxy, best first. rpn holds each
    anchor's box, deltas and objectness logit; only the images' static height and width are used.
    Where suppression leaves fewer than `count` regions, the best region fills the remaining rows
    (duplicates change neither the loss's expectation nor the detections after suppression)."""

    def __init__(self, count: int = 300, pre_nms: int = 6000, nms_iou: float = 0.7, **kwargs):
        super().__init__(**kwargs)
        if count < 1 or pre_nms < count or not 0 < nms_iou <= 1:
            raise ValueError(
                f"RegionProposals needs count >= 1, pre_nms >= count and nms_iou in (0, 1], received "
                f"{count!r}, {pre_nms!r} and {nms_iou!r}"
            )
        self.count, self.pre_nms, self.nms_iou = int(count), int(pre_nms), float(nms_iou)

    def build(self, rpn_shape, images_shape):
        from keras_cv.layers import NonMaxSuppression

        if rpn_shape[1] is not None and rpn_shape[1] < self.count:
            raise ValueError(f"RegionProposals: {self.count} proposals asked of {rpn_shape[1]} anchors")
        # Scores are probabilities; a threshold of 0 keeps every box for suppression to decide.
        self.nms = NonMaxSuppression(
            "xyxy", from_logits=False, iou_threshold=self.nms_iou, confidence_threshold=0.0, max_detections=self.count
        )

    def call(self, rpn, images):
        rpn = ops.stop_gradient(ops.cast(rpn, "float32"))
        scores, best = ops.top_k(rpn[..., 8], min(self.pre_nms, rpn.shape[1]))
        chosen = ops.take_along_axis(rpn, best[..., None], axis=1)
        boxes = decode_deltas(chosen[..., :4], chosen[..., 4:8])
        height, width = images.shape[1], images.shape[2]
        boxes = ops.clip(boxes, 0.0, ops.convert_to_tensor([width, height, width, height], boxes.dtype))
        # Section 3.3 removes tiny proposals; here those under one pixel, which clipping leaves of
        # anchors outside the image and which no loss or pooling can use (zero width, log(0) deltas).
        usable = ops.logical_and(boxes[..., 2] - boxes[..., 0] >= 1.0, boxes[..., 3] - boxes[..., 1] >= 1.0)
        found = self.nms(boxes, ops.where(usable, ops.sigmoid(scores), -1.0)[..., None])
        # Rows past the regions found repeat the best one; with none at all (an untrained network
        # scoring every anchor outside the image), the whole image is the region.
        whole_image = ops.convert_to_tensor([[[0.0, 0.0, width, height]]], boxes.dtype)
        best = ops.where(found["num_detections"][:, None, None] > 0, found["boxes"][:, :1], whole_image)
        kept = ops.arange(self.count)[None, :] < ops.cast(found["num_detections"], "int32")[:, None]
        return ops.where(kept[..., None], found["boxes"], best)

    def compute_output_shape(self, rpn_shape, images_shape):
        return (rpn_shape[0], self.count, 4)

    def get_config(self):
        return {**super().get_config(), "count": self.count, "pre_nms": self.pre_nms, "nms_iou": self.nms_iou}


@keras.saving.register_keras_serializable(package="visionkit")
class FeatureCells(keras.layers.Layer):
    """Pixel xyxy boxes [B, R, 4] -> (y1, x1, y2, x2) in cells of a feature map of this `stride`."""

    def __init__(self, stride: int, **kwargs):
        super().__init__(**kwargs)
        self.stride = int(stride)

    def call(self, boxes):
        return ops.stack([boxes[..., 1], boxes[..., 0], boxes[..., 3], boxes[..., 2]], axis=-1) / self.stride

    def get_config(self):
        return {**super().get_config(), "stride": self.stride}


@keras.saving.register_keras_serializable(package="visionkit")
class RegionOutputs(keras.layers.Layer):
    """`layer(regions [B, R, 4], class_logits [B, R, 1 + K], deltas [B, R, 4K]) -> [B, R, 1 + K, 9]`:
    per region and class (background first) the region, the class's deltas (zero for the background)
    and its logit."""

    def call(self, regions, class_logits, deltas):
        classes = class_logits.shape[-1]
        deltas = ops.reshape(deltas, (-1, deltas.shape[1], classes - 1, 4))
        deltas = ops.concatenate([ops.zeros_like(deltas[:, :, :1]), deltas], axis=2)
        regions = ops.broadcast_to(regions[:, :, None, :], ops.shape(deltas))
        return ops.concatenate([regions, deltas, class_logits[..., None]], axis=-1)

    def compute_output_shape(self, regions_shape, class_logits_shape, deltas_shape):
        return (*class_logits_shape, 9)
