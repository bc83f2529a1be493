"""Faster R-CNN: the two losses against numpy references (and their minibatch expectation against
sampling), the proposal layer, the two-stage output's decoding, the builder's checks, one training
step and the .keras round trip."""

import keras
import numpy as np
import pytest

from visionkit.data import load
from visionkit.layers.box_coding import BOX_VARIANCE
from visionkit.layers.region_proposals import FeatureCells, RegionOutputs, RegionProposals
from visionkit.models import MODELS
from visionkit.models.common import inference_model
from visionkit.outputs import MAIN_OUTPUT, PROPOSALS_OUTPUT
from visionkit.tasks import get_task
from visionkit.tasks.region_losses import ProposalLoss, RegionLoss, minibatch_expectation
from visionkit.training.fit import CompileSettings, compile_model, monitored_metric

SMALL = dict(
    backbone="resnet18",
    width=0.125,
    feature_stride=8,
    anchor_sizes=(8, 16),
    aspect_ratios=(1.0,),
    pre_nms_proposals=100,
    proposals=16,
    pooled_size=2,
    pooling="align",
    fc_units=16,
    dropout=0.0,
)


def numpy_iou(a, b):
    """IoU of xyxy boxes a [N, 4] and b [M, 4] -> [N, M]."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=-1)
    area = lambda boxes: np.prod(boxes[:, 2:] - boxes[:, :2], axis=-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def numpy_deltas(reference, boxes):
    """Faster R-CNN eq. 2 over the variances, written independently of visionkit.layers.box_coding."""
    rw, rh = reference[:, 2] - reference[:, 0], reference[:, 3] - reference[:, 1]
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    raw = np.stack(
        [
            (boxes[:, 0] + bw / 2 - reference[:, 0] - rw / 2) / rw,
            (boxes[:, 1] + bh / 2 - reference[:, 1] - rh / 2) / rh,
            np.log(bw / rw),
            np.log(bh / rh),
        ],
        -1,
    )
    return raw / np.asarray(BOX_VARIANCE)


def smooth_l1(x):
    return np.where(np.abs(x) < 1, 0.5 * x * x, np.abs(x) - 0.5)


def test_minibatch_expectation_is_the_mean_loss_of_sampled_minibatches():
    rng = np.random.default_rng(0)
    losses = rng.uniform(0, 3, 40)
    objects = np.zeros(40)
    objects[:5] = 1
    background = 1 - objects
    background[35:] = 0  # ignored examples
    expected_loss, share = minibatch_expectation(losses[None], objects[None], background[None], 16, 0.25)
    # Sampling as the paper does: up to 4 objects (of 5), the rest of the 16 from the 30 background.
    draws = []
    for _ in range(20000):
        chosen = np.concatenate([rng.choice(5, 4, replace=False), 5 + rng.choice(30, 12, replace=False)])
        draws.append(losses[chosen].mean())
    assert float(expected_loss[0]) == pytest.approx(np.mean(draws), rel=5e-3)
    assert float(share[0]) == pytest.approx(4 / 16)
    # Fewer examples than the minibatch: the objects up to their cap (4 of 5), every background one.
    few_loss, few_share = minibatch_expectation(losses[None, :6], objects[None, :6], background[None, :6], 16, 0.25)
    assert float(few_loss[0]) == pytest.approx((4 * losses[:5].mean() + losses[5]) / 5, rel=1e-5)
    assert float(few_share[0]) == pytest.approx(4 / 5)


def region_case():
    """Three regions over two truths: one on the square (class 1), one near the circle (class 0), one on
    the background; K = 2 classes."""
    truths = np.full((1, 3, 5), -1, np.float32)
    truths[0, 0] = [10, 10, 30, 30, 1]
    truths[0, 1] = [40, 40, 56, 60, 0]
    regions = np.array([[12, 8, 30, 32], [41, 42, 55, 58], [0, 0, 6, 6]], np.float32)
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 1, (3, 3)).astype(np.float32)
    deltas = rng.normal(0, 0.5, (3, 2, 4)).astype(np.float32)
    outputs = np.zeros((1, 3, 3, 9), np.float32)
    outputs[0, :, :, :4] = regions[:, None]
    outputs[0, :, 1:, 4:8] = deltas
    outputs[0, :, :, 8] = logits
    return truths, regions, logits, deltas, outputs


def test_region_loss_matches_a_numpy_reference():
    truths, regions, logits, deltas, outputs = region_case()
    iou = numpy_iou(regions, truths[0, :2, :4])
    matched, objects = iou.argmax(1), iou.max(1) >= 0.5
    assert objects.tolist() == [True, True, False]
    labels = np.where(objects, truths[0, matched, 4] + 1, 0).astype(int)  # [2, 1, 0]
    log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    log_loss = -log_softmax[np.arange(3), labels]
    # 3 regions: at most a quarter (0.75) objects, the rest (2.25) of the 2 + 1 available background.
    objects_taken, background_taken = 0.75, 1.0
    class_loss = (objects_taken * log_loss[:2].mean() + background_taken * log_loss[2]) / 1.75
    error = smooth_l1(numpy_deltas(regions[:2], truths[0, matched[:2], :4]) - deltas[[0, 1], labels[:2] - 1]).sum(1)
    box_loss = objects_taken / 1.75 * error.mean()
    loss = RegionLoss(box_weight=2.0)(truths, outputs)
    assert float(loss) == pytest.approx(class_loss + 2.0 * box_loss, rel=1e-5)


def test_proposal_loss_on_a_hand_worked_case():
    truths = np.full((1, 2, 5), -1, np.float32)
    truths[0, 0] = [0, 0, 10, 10, 3]  # the class does not matter to the proposal network
    anchors = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [30, 30, 40, 40], [50, 50, 60, 60]], np.float32)
    logits = np.array([2.0, 0.5, -1.0, 0.0], np.float32)
    deltas = np.zeros((4, 4), np.float32)
    deltas[0] = [0.5, 0, 0, 2.0]
    outputs = np.concatenate([anchors, deltas, logits[:, None]], axis=-1)[None]
    # IoU 1 (object), 9/11 = 0.82 (object), 0 and 0 (background).
    bce = lambda target, z: np.log1p(np.exp(-z)) + (1 - target) * z  # noqa: E731
    objects_loss = (bce(1, 2.0) + bce(1, 0.5)) / 2
    background_loss = (bce(0, -1.0) + bce(0, 0.0)) / 2
    class_loss = (2 * objects_loss + 2 * background_loss) / 4  # minibatch of 4: everything, half objects
    truth = np.array([[0, 0, 10, 10]], np.float32)
    errors = [smooth_l1(numpy_deltas(anchors[i : i + 1], truth) - deltas[i]).sum() for i in (0, 1)]
    expected = class_loss + 0.5 * np.mean(errors)
    assert float(ProposalLoss(anchors_per_image=4)(truths, outputs)) == pytest.approx(expected, rel=1e-5)


def test_loss_options_are_checked():
    with pytest.raises(ValueError, match="negative_iou <= positive_iou"):
        ProposalLoss(positive_iou=0.3, negative_iou=0.7)
    with pytest.raises(ValueError, match="foreground_iou and object_fraction"):
        RegionLoss(object_fraction=0.0)


def test_proposals_are_decoded_clipped_suppressed_and_padded_with_the_best():
    anchors = np.array([[10, 10, 30, 30], [11, 10, 31, 30], [40, 40, 50, 50], [70, 70, 90, 90]], np.float32)
    logits = np.array([3.0, 2.0, 1.0, 5.0], np.float32)
    deltas = np.zeros((4, 4), np.float32)
    deltas[2] = [0.1 / BOX_VARIANCE[0], 0, 0, 0]  # moved right by 1 pixel (10% of its width)
    rpn = np.concatenate([anchors, deltas, logits[:, None]], axis=-1)[None]
    images = np.zeros((1, 64, 64, 3), np.float32)
    proposals = keras.ops.convert_to_numpy(RegionProposals(count=4, pre_nms=4, nms_iou=0.7)(rpn, images))
    # The best anchor lies outside the 64x64 image (clipped to nothing: dropped); anchor 1 overlaps
    # anchor 0 by IoU 0.9 (suppressed); the fourth row repeats the best.
    np.testing.assert_allclose(
        proposals[0], [[10, 10, 30, 30], [41, 40, 51, 50], [10, 10, 30, 30], [10, 10, 30, 30]], atol=1e-4
    )


def test_feature_cells_and_region_outputs():
    cells = keras.ops.convert_to_numpy(FeatureCells(8)(np.array([[[8, 16, 24, 40]]], np.float32)))
    np.testing.assert_allclose(cells, [[[2, 1, 5, 3]]])
    regions = np.arange(8, dtype=np.float32).reshape(1, 2, 4)
    logits = np.array([[[0.0, 1, 2], [3, 4, 5]]], np.float32)
    deltas = np.arange(16, dtype=np.float32).reshape(1, 2, 8)
    outputs = keras.ops.convert_to_numpy(RegionOutputs()(regions, logits, deltas))
    assert outputs.shape == (1, 2, 3, 9)
    np.testing.assert_array_equal(outputs[0, 1, 2], [4, 5, 6, 7, 12, 13, 14, 15, 5])
    np.testing.assert_array_equal(outputs[0, 0, 0, 4:8], 0)  # the background has no deltas


def test_two_stage_outputs_decode_per_class_boxes_and_suppress_within_each_class():
    task = get_task("detection", score_threshold=0.1)
    outputs = np.zeros((1, 2, 3, 9), np.float32)
    outputs[0, :, :, :4] = np.array([[10, 10, 30, 30], [40, 40, 60, 60]])[:, None]
    outputs[0, 0, 2, 4:8] = [0.2 / BOX_VARIANCE[0], 0, 0, 0]  # class 1's box for region 0 moves 4 px right
    outputs[0, 0, :, 8] = [0, 0, 4]  # region 0: class 1 (softmax over background, 0, 1)
    outputs[0, 1, :, 8] = [5, 0, 0]  # region 1: background
    found = task.detections(outputs)[0]
    assert found["classes"].tolist() == [1]
    np.testing.assert_allclose(found["boxes"][0], [14, 10, 34, 30], atol=1e-4)
    assert found["scores"][0] == pytest.approx(np.exp(4) / (np.exp(4) + 2), rel=1e-5)


def test_builder_checks_name_the_option():
    builder = MODELS.get("faster_rcnn")
    with pytest.raises(ValueError, match=r"feature maps at strides \[2, 4, 8, 16, 32\], received feature_stride=64"):
        builder(input_shape=(64, 64, 3), num_classes=4, **{**SMALL, "feature_stride": 64})
    with pytest.raises(ValueError, match="pooling in .* received 2, 'average'"):
        builder(input_shape=(64, 64, 3), num_classes=4, **{**SMALL, "pooling": "average"})
    with pytest.raises(
        ValueError,
        match=r"anchor_sizes and aspect_ratios must be non-empty lists of positive numbers, "
        r"received \[8, 0\] and \[1.0\]",
    ):
        builder(input_shape=(64, 64, 3), num_classes=4, **{**SMALL, "anchor_sizes": (8, 0)})
    with pytest.raises(ValueError, match="pre_nms_proposals >= proposals"):
        builder(input_shape=(64, 64, 3), num_classes=4, **{**SMALL, "pre_nms_proposals": 8})
    assert MODELS.meta("faster_rcnn")["tasks"] == ("detection",)


def test_paper_configuration_builds():
    model = MODELS.get("faster_rcnn")(num_classes=20)  # VGG-16 at stride 16 on 608 x 800, 9 anchors, 300 regions
    assert model.output[MAIN_OUTPUT].shape == (None, 300, 21, 9)
    assert model.output[PROPOSALS_OUTPUT].shape == (None, 38 * 50 * 9, 9)
    assert model.get_layer("roi_pooling").output.shape[1:] == (300, 7, 7, 512)
    assert model.get_layer("fc6").units == model.get_layer("fc7").units == 4096


def test_faster_rcnn_trains_one_step_and_round_trips_through_a_keras_file(tmp_path):
    data = load("shapes", task="detection", num_images=24, image_size=64)
    task = get_task("detection")
    model = task.build_model(MODELS.get("faster_rcnn"), input_shape=(64, 64, 3), num_outputs=4, **SMALL)
    compile_model(model, task, CompileSettings(epochs=1, learning_rate=1e-3), steps_per_epoch=1)
    assert monitored_metric(task, model) == "val_map50"  # from the task's callback, not a per-output metric
    images = data.train.images[:8]
    targets = task.encode_targets([data.train.sample(i) for i in range(8)])
    history = model.fit(images, {MAIN_OUTPUT: targets, PROPOSALS_OUTPUT: targets}, epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(history.history["rpn_loss"][0]) and np.isfinite(history.history["predictions_loss"][0])
    served = inference_model(model)
    served.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True, compile=False)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), served.predict(images, verbose=0), atol=1e-5)
    assert len(task.detections(served.predict(images, verbose=0))) == 8
