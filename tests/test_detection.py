"""task=detection and the RetinaNet builder: target encoding, box deltas, anchor matching, the loss
against a numpy reference, decoding with non-maximum suppression, COCO evaluation, one training step,
and the .keras round trip."""

import json
import math

import keras
import numpy as np
import pytest

from visionkit.data import load
from visionkit.errors import UserError
from visionkit.layers.anchors import AnchorBoxes
from visionkit.layers.box_coding import BOX_VARIANCE, decode_deltas, encode_deltas, match_anchors
from visionkit.models import MODELS
from visionkit.tasks import get_task
from visionkit.tasks.detection import DetectionLoss, truth_lists
from visionkit.tasks.detection_metrics import coco_metrics
from visionkit.training.fit import CompileSettings, compile_model

CLASS_NAMES = ["circle", "square", "triangle", "star"]
SMALL = dict(backbone="resnet18", width=0.125, strides=(8, 16), anchor_size=2.0, aspect_ratios=(1.0,), head_depth=1)


def sample(boxes, classes):
    return {"boxes": np.asarray(boxes, np.float32).reshape(-1, 4), "classes": np.asarray(classes, np.int64)}


def test_targets_are_padded_with_minus_one():
    task = get_task("detection", max_boxes=3)
    targets = task.encode_targets([sample([[1, 2, 10, 12], [20, 20, 30, 31]], [2, 0]), sample([], [])])
    assert targets.shape == (2, 3, 5) and targets.dtype == np.float32
    np.testing.assert_array_equal(targets[0, :2], [[1, 2, 10, 12, 2], [20, 20, 30, 31, 0]])
    assert (targets[0, 2] == -1).all() and (targets[1] == -1).all()
    truths = truth_lists(targets)
    np.testing.assert_array_equal(truths[0]["classes"], [2, 0])
    assert truths[1]["boxes"].shape == (0, 4)


def test_more_boxes_than_max_boxes_is_the_users_to_fix():
    with pytest.raises(UserError, match=r"an image has 2 boxes, more than task.max_boxes=1; raise task.max_boxes"):
        get_task("detection", max_boxes=1).encode_targets([sample([[0, 0, 4, 4], [5, 5, 9, 9]], [0, 1])])


def test_bad_task_options_quote_the_received_value():
    with pytest.raises(ValueError, match=r"max_detections must be an integer >= 1, received 0"):
        get_task("detection", max_detections=0)
    with pytest.raises(ValueError, match=r"negative_iou=0.6, positive_iou=0.5"):
        get_task("detection", negative_iou=0.6)


def test_box_deltas_follow_faster_rcnn_and_invert():
    anchors = np.array([[[0, 0, 16, 16], [8, 4, 40, 20]]], np.float32)
    boxes = np.array([[[2, 4, 18, 24], [10, 2, 30, 22]]], np.float32)
    # By hand: anchor 1 centre (8, 8) size 16x16, box centre (10, 14) size 16x20.
    expected = np.array([2 / 16, 6 / 16, 0.0, math.log(20 / 16)]) / BOX_VARIANCE
    deltas = keras.ops.convert_to_numpy(encode_deltas(anchors, boxes))
    np.testing.assert_allclose(deltas[0, 0], expected, rtol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(decode_deltas(anchors, deltas)), boxes, atol=1e-4)


def test_matching_by_iou_with_each_truths_best_anchor_kept():
    anchors = np.array([[[0, 0, 10, 10], [0, 0, 10, 20], [20, 20, 30, 30], [40, 40, 50, 50]]], np.float32)
    # Truth 0 is anchor 0 (IoU 1), and overlaps anchor 1 by 0.5; truth 1, a 2x2 speck, overlaps anchor 2
    # by only 0.04 (ignored by IoU, but it is the speck's best anchor); the third row is padding.
    boxes = np.array([[[0, 0, 10, 10], [20, 20, 22, 22], [-1, -1, -1, -1]]], np.float32)
    valid = np.array([[True, True, False]])
    matched, positive, negative = (
        keras.ops.convert_to_numpy(t) for t in match_anchors(anchors, boxes, valid, 0.5, 0.4)
    )
    np.testing.assert_array_equal(positive[0], [True, True, True, False])
    np.testing.assert_array_equal(negative[0], [False, False, False, True])
    np.testing.assert_array_equal(matched[0, :3], [0, 0, 1])
    # Between the thresholds: IoU 0.45 is neither.
    _, positive, negative = match_anchors(
        anchors, np.array([[[0, 0, 10, 9], [20, 20, 30, 30]]], np.float32), np.array([[True, True]]), 0.95, 0.4
    )
    assert keras.ops.convert_to_numpy(positive)[0, 1] == np.False_
    assert keras.ops.convert_to_numpy(negative)[0, 1] == np.False_


def numpy_loss(y_true, y_pred, alpha=0.25, gamma=2.0):
    """The RetinaNet loss written out for one image with every anchor matched by hand."""
    anchors, deltas, logits = y_pred[..., :4], y_pred[..., 4:8], y_pred[..., 8:]
    # Anchor 0 matches truth 0 (IoU 1), anchor 1 truth 1 (IoU 1), anchor 2 is background.
    targets = np.zeros_like(logits)
    targets[0, 0, int(y_true[0, 0, 4])] = 1
    targets[0, 1, int(y_true[0, 1, 4])] = 1
    p = 1 / (1 + np.exp(-logits))
    p_t = np.where(targets == 1, p, 1 - p)
    focal = -np.where(targets == 1, alpha, 1 - alpha) * (1 - p_t) ** gamma * np.log(p_t)
    encoded = []
    for a, b in zip(anchors[0, :2], y_true[0, :2, :4]):
        aw, ah, bw, bh = a[2] - a[0], a[3] - a[1], b[2] - b[0], b[3] - b[1]
        encoded.append(
            np.array(
                [
                    ((b[0] + b[2]) - (a[0] + a[2])) / 2 / aw,
                    ((b[1] + b[3]) - (a[1] + a[3])) / 2 / ah,
                    np.log(bw / aw),
                    np.log(bh / ah),
                ]
            )
            / BOX_VARIANCE
        )
    difference = np.abs(np.array(encoded) - deltas[0, :2])
    smooth = np.where(difference < 1, 0.5 * difference**2, difference - 0.5)
    return (focal.sum() + smooth.sum()) / 2


def test_loss_matches_a_numpy_reference():
    rng = np.random.default_rng(0)
    anchors = np.array([[[0, 0, 16, 16], [16, 16, 48, 48], [40, 0, 56, 16]]], np.float32)
    y_true = np.array([[[0, 0, 16, 16, 1], [16, 16, 48, 48, 3], [-1, -1, -1, -1, -1]]], np.float32)
    y_pred = np.concatenate([anchors, rng.normal(0, 0.5, (1, 3, 4)), rng.normal(0, 2, (1, 3, 4))], -1).astype("float32")
    value = float(keras.ops.convert_to_numpy(DetectionLoss()(y_true, y_pred)))
    assert value == pytest.approx(numpy_loss(y_true, y_pred), rel=1e-4)


def perfect_outputs(targets, num_classes=4, duplicate=True):
    """Raw detector outputs whose anchors are the truth boxes (and a shifted copy of each, scoring
    lower), with zero deltas and a confident logit for the true class."""
    rows = []
    for image in targets:
        anchors, logits = [], []
        for x1, y1, x2, y2, cls in image:
            for shift, logit in ((0, 6.0), (1, 3.0)) if duplicate else ((0, 6.0),):
                anchors.append([x1 + shift, y1, x2 + shift, y2])
                logits.append(np.where(np.arange(num_classes) == cls, logit if cls >= 0 else -9, -9))
        rows.append(np.concatenate([anchors, np.zeros((len(anchors), 4)), logits], -1))
    return np.asarray(rows, np.float32)


def test_serving_outputs_decode_and_suppress():
    task = get_task("detection", max_detections=5)
    targets = task.encode_targets([sample([[4, 4, 20, 20], [30, 30, 60, 50]], [1, 3]), sample([[8, 8, 24, 40]], [2])])
    served = {k: keras.ops.convert_to_numpy(v) for k, v in task.serving_outputs(perfect_outputs(targets)).items()}
    assert served["boxes"].shape == (2, 5, 4) and served["boxes"].dtype == np.float32
    assert served["scores"].shape == (2, 5) and served["classes"].dtype == np.int32
    assert served["num_detections"].dtype == np.int32
    np.testing.assert_array_equal(served["num_detections"], [2, 1])  # the shifted copies are suppressed
    order = np.argsort(served["boxes"][0, :2, 0])  # equal scores: either order
    np.testing.assert_allclose(served["boxes"][0, order], [[4, 4, 20, 20], [30, 30, 60, 50]], atol=1e-4)
    np.testing.assert_array_equal(served["classes"][0, order], [1, 3])
    np.testing.assert_allclose(served["scores"][0, :2], 1 / (1 + np.exp(-6.0)), rtol=1e-5)
    rows = task.prediction_rows(served, type("Names", (), {"class_names": CLASS_NAMES}))
    assert rows[1]["num_detections"] == 1
    assert json.loads(rows[1]["detections"])[0]["class"] == "triangle"


def test_suppression_works_within_each_class():
    task = get_task("detection")
    # One place, two classes likely (star 0.95, square 0.6), and a slightly shifted box of the same
    # classes scoring lower: per class, the better box of each class is kept.
    boxes = np.array([[[10, 10, 30, 30], [11, 10, 31, 30]]], np.float32)
    logits = np.log(
        np.array([[[0.01, 0.6, 0.01, 0.95], [0.01, 0.5, 0.01, 0.9]]])
        / (1 - np.array([[[0.01, 0.6, 0.01, 0.95], [0.01, 0.5, 0.01, 0.9]]]))
    )
    outputs = np.concatenate([boxes, np.zeros((1, 2, 4)), logits], -1).astype("float32")
    served = {k: keras.ops.convert_to_numpy(v) for k, v in task.serving_outputs(outputs).items()}
    assert served["num_detections"][0] == 2
    np.testing.assert_array_equal(served["classes"][0, :2], [3, 1])
    np.testing.assert_allclose(served["scores"][0, :2], [0.95, 0.6], rtol=1e-5)
    np.testing.assert_allclose(served["boxes"][0, :2], [[10, 10, 30, 30]] * 2, atol=1e-4)
    assert (served["boxes"][0, 2:] == -1).all() and (served["classes"][0, 2:] == -1).all()


def test_evaluate_is_coco_metrics_of_the_decoded_detections():
    data = load("shapes", task="detection", num_images=40, image_size=64)
    task = get_task("detection")
    targets = task.encode_targets([data.test.sample(i) for i in range(len(data.test))])
    outputs = perfect_outputs(targets)
    outputs[::2, :, 8:] *= -1  # every other image: the true class is now the least likely
    metrics = task.evaluate(targets, outputs, data)
    expected = coco_metrics(truth_lists(targets), task.detections(outputs), CLASS_NAMES, (64, 64))
    assert metrics == {k: v for k, v in expected.items() if not math.isnan(v)}
    assert 0 < metrics["map50"] < 1
    assert task.evaluate(targets, perfect_outputs(targets), data)["map"] == pytest.approx(1.0)
    assert set(task.figures(targets, outputs, data)) == {"detections.png", "precision_recall.png"}


def test_anchor_boxes_follow_the_subnet_order():
    anchors = AnchorBoxes([8, 16], [16, 32], [1.0], [1.0])(np.zeros((2, 32, 32, 3), "float32"))
    anchors = keras.ops.convert_to_numpy(anchors)
    assert anchors.shape == (2, 16 + 4, 4)
    np.testing.assert_allclose(anchors[0, 0], [-4, -4, 12, 12])  # level 8, row 0, column 0
    np.testing.assert_allclose(anchors[0, 1], [4, -4, 20, 12])  # level 8, row 0, column 1
    np.testing.assert_allclose(anchors[0, 16], [-8, -8, 24, 24])  # level 16, row 0, column 0


def test_retinanet_argument_errors_name_the_value():
    builder = MODELS.get("retinanet")
    with pytest.raises(ValueError, match=r"strides must double .* received \[8, 24\]"):
        builder(input_shape=(64, 64, 3), num_classes=4, backbone="resnet18", width=0.125, strides=(8, 24))
    with pytest.raises(ValueError, match=r"feature maps at strides \[2, 4, 8, 16, 32\], received strides \[1, 2\]"):
        builder(input_shape=(64, 64, 3), num_classes=4, backbone="resnet18", width=0.125, strides=(1, 2))
    with pytest.raises(ValueError, match=r"backbone 'unet' is not a classification trunk"):
        builder(input_shape=(64, 64, 3), num_classes=4, backbone="unet")
    assert MODELS.meta("retinanet")["tasks"] == ("detection",)


def test_retinanet_adds_pyramid_levels_above_the_trunk():
    model = MODELS.get("retinanet")(
        input_shape=(64, 64, 3),
        num_classes=3,
        backbone="resnet18",
        width=0.125,
        strides=(16, 32, 64, 128),
        aspect_ratios=(1.0,),
        head_depth=1,
    )
    names = {layer.name for layer in model.layers}
    assert {"fpn_output64", "fpn_relu128", "fpn_output128", "fpn_lateral16", "fpn_upsample16"} <= names
    # 4x4 + 2x2 + 1x1 + 1x1 locations, three scales each; 4 + 4 + 3 values per anchor.
    assert model.output_shape == (None, (16 + 4 + 1 + 1) * 3, 11)


def test_retinanet_trains_one_step_and_round_trips_through_a_keras_file(tmp_path):
    data = load("shapes", task="detection", num_images=24, image_size=64)
    task = get_task("detection")
    model = task.build_model(MODELS.get("retinanet"), input_shape=(64, 64, 3), num_outputs=4, **SMALL)
    compile_model(model, task, CompileSettings(epochs=1, learning_rate=1e-3), steps_per_epoch=1)
    images = data.train.images[:8]
    targets = task.encode_targets([data.train.sample(i) for i in range(8)])
    history = model.fit(images, targets, epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True, compile=False)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-5)
