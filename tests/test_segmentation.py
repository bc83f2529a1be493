"""The segmentation task: metrics against scikit-learn's confusion matrix, losses against numpy, the
per-epoch Keras metrics against the final numpy evaluation, and the pictures."""

import keras
import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sklearn_confusion_matrix
from sklearn.metrics import jaccard_score

from visionkit.tasks import get_task
from visionkit.tasks.segmentation import (
    IGNORE_INDEX,
    ConfusionMatrixScore,
    SegmentationLoss,
    confusion_matrix,
    mask_class_names,
    segmentation_metrics,
)

NAMES = ["background", "circle", "square", "star"]


def random_case(seed=0, shape=(6, 16, 16), classes=4, ignored=0.1):
    """Masks, probabilities that agree with them most of the time, and some ignored pixels."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, classes, shape)
    logits = rng.normal(size=(*shape, classes)) + 2.5 * np.eye(classes)[truth]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    truth = np.where(rng.random(shape) < ignored, IGNORE_INDEX, truth).astype(np.uint8)
    return truth, probabilities.astype(np.float32)


def test_metrics_match_scikit_learn_on_the_labelled_pixels():
    truth, probabilities = random_case()
    predicted = probabilities.argmax(axis=-1)
    labelled = truth != IGNORE_INDEX
    expected = sklearn_confusion_matrix(truth[labelled], predicted[labelled], labels=range(4))
    np.testing.assert_array_equal(confusion_matrix(truth, predicted, 4), expected)

    metrics = segmentation_metrics(truth, probabilities, NAMES)
    per_class_iou = jaccard_score(truth[labelled], predicted[labelled], labels=range(4), average=None)
    assert metrics["mean_iou"] == pytest.approx(per_class_iou.mean())
    for name, iou in zip(NAMES, per_class_iou):
        assert metrics[f"iou_{name}"] == pytest.approx(iou)
    assert metrics["pixel_accuracy"] == pytest.approx(np.mean(truth[labelled] == predicted[labelled]))
    dice = 2 * np.diag(expected) / (expected.sum(axis=0) + expected.sum(axis=1))
    assert metrics["dice"] == pytest.approx(dice.mean())


def test_a_class_absent_from_truth_and_prediction_is_left_out_of_the_means():
    truth = np.array([[0, 0, 1, 1]])
    probabilities = np.eye(3)[np.array([[0, 1, 1, 1]])]
    metrics = segmentation_metrics(truth, probabilities, ["background", "a", "b"])
    assert metrics["mean_iou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert "iou_b" not in metrics and metrics["pixel_accuracy"] == pytest.approx(0.75)


def test_mask_values_beyond_the_classes_are_an_error():
    with pytest.raises(ValueError, match="mask values up to 7 for 4 classes"):
        confusion_matrix(np.array([7]), np.array([0]), 4)


@pytest.mark.parametrize("score", ["mean_iou", "dice", "pixel_accuracy"])
def test_epoch_metric_accumulated_over_batches_equals_the_numpy_evaluation(score):
    truth, probabilities = random_case(seed=1)
    metric = ConfusionMatrixScore(score, 4)
    for start in range(0, len(truth), 2):  # three batches
        metric.update_state(truth[start : start + 2], probabilities[start : start + 2])
    expected = segmentation_metrics(truth, probabilities, NAMES)[score]
    assert float(metric.result()) == pytest.approx(expected, rel=1e-5)


def numpy_losses(truth, probabilities, class_weights, gamma):
    labelled = truth != IGNORE_INDEX
    labels = np.where(labelled, truth, 0)
    p = np.take_along_axis(probabilities, labels[..., None].astype(np.int64), axis=-1)[..., 0]
    weights = np.asarray(class_weights)[labels] * labelled
    cross_entropy = (-np.log(p) * weights).sum() / weights.sum()
    focal = (-np.log(p) * (1 - p) ** gamma * labelled).sum() / labelled.sum()
    one_hot = np.eye(probabilities.shape[-1])[labels] * labelled[..., None]
    inside = probabilities * labelled[..., None]
    dice = 1 - np.mean((2 * (one_hot * inside).sum(axis=(0, 1, 2)) + 1) / ((one_hot + inside).sum(axis=(0, 1, 2)) + 1))
    return {"cross_entropy": cross_entropy, "focal": focal, "dice": dice, "cross_entropy_dice": cross_entropy + dice}


@pytest.mark.parametrize("kind", ["cross_entropy", "focal", "dice", "cross_entropy_dice"])
def test_losses_match_numpy_and_skip_ignored_pixels(kind):
    truth, probabilities = random_case(seed=2)
    weights = [0.5, 1.0, 2.0, 1.5] if kind == "cross_entropy" else [1.0] * 4
    loss = SegmentationLoss(kind, class_weights=weights if kind == "cross_entropy" else None, focal_gamma=2.0)
    expected = numpy_losses(truth, probabilities.astype(np.float64), weights, 2.0)[kind]
    assert float(loss(truth, probabilities)) == pytest.approx(expected, rel=1e-4)
    # Whatever the model predicts on ignored pixels changes nothing.
    scrambled = probabilities.copy()
    scrambled[truth == IGNORE_INDEX] = scrambled[truth == IGNORE_INDEX][:, ::-1]
    assert float(loss(truth, scrambled)) == pytest.approx(float(loss(truth, probabilities)), rel=1e-6)


def test_loss_round_trips_through_its_config():
    loss = SegmentationLoss("focal", class_weights=[1, 2], focal_gamma=1.5, ignore_index=0)
    assert keras.losses.deserialize(keras.losses.serialize(loss)).get_config() == loss.get_config()


def test_bad_options_are_reported():
    with pytest.raises(ValueError, match="segmentation loss must be one of .*received 'dise'"):
        get_task("segmentation", loss="dise")
    data = type("Data", (), {"class_names": ["a", "b"]})()
    with pytest.raises(ValueError, match=r"class_weights needs 3 values \(one per mask class: background, a, b\)"):
        get_task("segmentation", class_weights=[1.0, 2.0]).num_outputs(data)


def test_mask_names_default_to_background_then_the_object_classes():
    assert mask_class_names(type("D", (), {"class_names": ["cat"]})()) == ["background", "cat"]
    assert mask_class_names(type("D", (), {"class_names": [], "mask_names": ["road", "car"]})()) == ["road", "car"]


def test_figures_and_serving_outputs():
    from visionkit.data import load

    bundle = load("shapes", task="segmentation", num_images=40, image_size=32)
    task = get_task("segmentation", gallery_images=3)
    truth = np.stack(bundle.test.targets["mask"])
    probabilities = np.eye(5, dtype=np.float32)[truth]
    assert task.evaluate(truth, probabilities, bundle)["mean_iou"] == 1.0
    figures = task.figures(truth, probabilities, bundle)
    assert set(figures) == {"gallery.png", "iou_per_class.png"}
    served = task.serving_outputs(keras.ops.convert_to_tensor(probabilities))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(served["class_map"]), truth)
    rows = task.prediction_rows({k: keras.ops.convert_to_numpy(v) for k, v in served.items()}, bundle)
    assert sum(rows[0].values()) == pytest.approx(1.0) and "share_background" in rows[0]
