"""Task metrics and losses against independent computations (scikit-learn, numpy)."""

import keras
import numpy as np
import pytest
from sklearn import metrics as sk

from visionkit.tasks.classification import SparseCrossentropy, classification_metrics, confusion_matrix
from visionkit.tasks.regression import regression_metrics


@pytest.fixture
def classified():
    rng = np.random.default_rng(3)
    probabilities = rng.dirichlet(np.ones(6), size=300)
    y_true = np.where(rng.random(300) < 0.6, probabilities.argmax(1), rng.integers(0, 6, 300))
    y_true[y_true == 5] = 4  # class 5 never occurs: its recall is undefined (0, as scikit-learn's zero_division=0)
    return y_true, probabilities


def test_classification_metrics_match_scikit_learn(classified):
    y_true, probabilities = classified
    names = [f"c{i}" for i in range(6)]
    ours = classification_metrics(y_true, probabilities, names, top_k=3)
    y_pred = probabilities.argmax(1)
    precision, recall, f1, _ = sk.precision_recall_fscore_support(y_true, y_pred, labels=range(6), zero_division=0)
    assert ours["accuracy"] == pytest.approx(sk.accuracy_score(y_true, y_pred))
    assert ours["top3_accuracy"] == pytest.approx(sk.top_k_accuracy_score(y_true, probabilities, k=3, labels=range(6)))
    assert ours["macro_f1"] == pytest.approx(f1.mean())
    for i, name in enumerate(names):
        assert ours[f"precision_{name}"] == pytest.approx(precision[i])
        assert ours[f"recall_{name}"] == pytest.approx(recall[i])
        assert ours[f"f1_{name}"] == pytest.approx(f1[i])


def test_confusion_matrix_matches_scikit_learn(classified):
    y_true, probabilities = classified
    y_pred = probabilities.argmax(1)
    np.testing.assert_array_equal(
        confusion_matrix(y_true, y_pred, 6), sk.confusion_matrix(y_true, y_pred, labels=range(6))
    )


def test_top_k_is_named_by_the_requested_k_even_with_fewer_classes():
    probabilities = np.array([[0.1, 0.9], [0.8, 0.2]])
    ours = classification_metrics(np.array([0, 0]), probabilities, ["a", "b"], top_k=5)
    assert ours["top5_accuracy"] == 1.0 and ours["accuracy"] == 0.5


def test_regression_metrics_match_scikit_learn():
    rng = np.random.default_rng(5)
    y_true = rng.normal(size=(200, 3)) * [1.0, 5.0, 0.1]
    y_pred = y_true + rng.normal(scale=0.3, size=(200, 3))
    ours = regression_metrics(y_true, y_pred, ["a", "b", "c"])
    assert ours["mae"] == pytest.approx(sk.mean_absolute_error(y_true, y_pred))
    assert ours["rmse"] == pytest.approx(np.sqrt(sk.mean_squared_error(y_true, y_pred)))
    assert ours["r2"] == pytest.approx(sk.r2_score(y_true, y_pred))
    per_target = sk.r2_score(y_true, y_pred, multioutput="raw_values")
    assert [ours["r2_a"], ours["r2_b"], ours["r2_c"]] == pytest.approx(per_target)


def test_r2_of_a_constant_target_follows_scikit_learn():
    y_true = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0]])
    for y_pred in (y_true, y_true + [[0.5, 0.0]] * 3):
        assert regression_metrics(y_true, y_pred, ["a", "b"])["r2"] == pytest.approx(sk.r2_score(y_true, y_pred))


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_label_smoothed_cross_entropy_matches_numpy(smoothing):
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(4), size=8).astype("float32")
    labels = rng.integers(0, 4, 8)
    target = np.eye(4)[labels] * (1 - smoothing) + smoothing / 4
    expected = -(target * np.log(probabilities)).sum(axis=1).mean()
    loss = SparseCrossentropy(label_smoothing=smoothing)(labels, probabilities)
    assert float(keras.ops.convert_to_numpy(loss)) == pytest.approx(expected, rel=1e-5)
