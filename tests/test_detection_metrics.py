import math

import numpy as np
import pytest

from visionkit.analysis.plots import detection_gallery
from visionkit.tasks.detection_metrics import coco_metrics, precision_recall_figure

SIZE = (100, 100)


def truth(boxes, classes):
    return {"boxes": np.asarray(boxes, "float32").reshape(-1, 4), "classes": np.asarray(classes, "int64")}


def prediction(boxes, classes, scores):
    return {**truth(boxes, classes), "scores": np.asarray(scores, "float32")}


def perfect(truths, score=0.9):
    return [prediction(t["boxes"], t["classes"], np.full(len(t["classes"]), score)) for t in truths]


# ---- an independent AP: greedy matching by score, 101-point interpolated precision -----------------


def area(boxes):
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def iou(box, boxes):
    top_left = np.maximum(box[:2], boxes[:, :2])
    bottom_right = np.minimum(box[2:], boxes[:, 2:])
    intersection = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
    return intersection / (area(box) + area(boxes) - intersection)


def average_precision(truths, predictions, cls, threshold):
    """Each image's detections, best first, take the unmatched truth they overlap most (IoU >= threshold);
    then precision at recall r = 0, 0.01, ..., 1 is the best precision at any recall >= r."""
    outcomes, total = [], 0
    for t, p in zip(truths, predictions):
        gt = t["boxes"][t["classes"] == cls]
        total += len(gt)
        matched = np.zeros(len(gt), bool)
        for i in np.argsort(-p["scores"], kind="stable"):
            if p["classes"][i] != cls:
                continue
            overlaps = np.where(matched, -1.0, iou(p["boxes"][i], gt)) if len(gt) else np.zeros(0)
            hit = bool(overlaps.size) and overlaps.max() >= threshold
            if hit:
                matched[np.argmax(overlaps)] = True
            outcomes.append((p["scores"][i], hit))
    outcomes.sort(key=lambda o: -o[0])
    hits = np.array([h for _, h in outcomes], bool)
    tp, fp = np.cumsum(hits), np.cumsum(~hits)
    recall = tp / total
    precision = tp / np.maximum(tp + fp, 1)
    best_after = np.maximum.accumulate(precision[::-1])[::-1]
    points = [best_after[recall >= r].max() if np.any(recall >= r) else 0.0 for r in np.linspace(0, 1, 101)]
    return float(np.mean(points))


# ---- a hand-made case: 3 images, cat (0) and dog (1) -------------------------------------------

CAT_A, DOG_B, CAT_C, CAT_D, DOG_E, DOG_F = (
    [10, 10, 50, 50],
    [60, 60, 90, 90],
    [0, 0, 40, 40],
    [20, 20, 60, 60],
    [30, 30, 70, 70],
    [0, 0, 10, 10],
)
HAND_TRUTHS = [truth([CAT_A, DOG_B], [0, 1]), truth([CAT_C], [0]), truth([CAT_D, DOG_E, DOG_F], [0, 1, 1])]
HAND_PREDICTIONS = [
    prediction([CAT_A, [12, 12, 52, 52], DOG_B], [0, 0, 1], [0.9, 0.8, 0.6]),  # hit, duplicate, hit
    prediction([[50, 50, 90, 90], CAT_C, CAT_C], [0, 0, 1], [0.95, 0.7, 0.85]),  # miss, hit, wrong class
    prediction([DOG_E, [25, 20, 65, 60]], [1, 0], [0.5, 0.3]),  # hit, hit at IoU 1400 / 1800 = 0.78
]
# cat, by score: .95 miss, .9 hit, .8 miss, .7 hit, .3 hit -> precision 0, 1/2, 1/3, 1/2, 3/5 at recall
#   0, 1/3, 1/3, 2/3, 1: the best precision at any recall >= r is 3/5 for every r -> AP50 0.6.
# dog, by score: .85 miss, .6 hit, .5 hit -> precision 0, 1/2, 2/3 at recall 0, 1/3, 2/3 (F is never
#   found): 2/3 for r = 0, 0.01, ..., 0.66 (67 of 101 points), 0 above -> AP50 2/3 * 67/101.
HAND_MAP50 = (0.6 + 2 / 3 * 67 / 101) / 2


def test_perfect_predictions_score_one():
    metrics = coco_metrics(HAND_TRUTHS, perfect(HAND_TRUTHS), ["cat", "dog"], SIZE)
    for key in ("map", "map50", "map75", "mar100", "ap_cat", "ap_dog"):
        assert metrics[key] == pytest.approx(1.0), key


def test_map50_of_a_hand_made_case_matches_hand_and_numpy_computations():
    metrics = coco_metrics(HAND_TRUTHS, HAND_PREDICTIONS, ["cat", "dog"], SIZE)
    by_numpy = np.mean([average_precision(HAND_TRUTHS, HAND_PREDICTIONS, cls, 0.5) for cls in (0, 1)])
    assert by_numpy == pytest.approx(HAND_MAP50)
    assert metrics["map50"] == pytest.approx(HAND_MAP50)


def test_map_and_per_class_ap_match_numpy_on_random_boxes():
    rng = np.random.default_rng(0)
    truths, predictions = [], []
    for _ in range(6):
        corners = rng.uniform(0, 60, (5, 2))
        boxes = np.concatenate([corners, corners + rng.uniform(10, 40, (5, 2))], axis=1)
        classes = rng.integers(0, 3, 5)
        jittered = boxes[:4] + rng.normal(0, 2.5, (4, 4))
        noise = np.concatenate([corners[:2], corners[:2] + 20], axis=1)[:, [1, 0, 3, 2]]
        truths.append(truth(boxes, classes))
        predictions.append(
            prediction(np.concatenate([jittered, noise]), np.concatenate([classes[:4], [0, 1]]), rng.uniform(0, 1, 6))
        )
    metrics = coco_metrics(truths, predictions, ["a", "b", "c"], SIZE)
    thresholds = np.linspace(0.5, 0.95, 10)
    per_class = [[average_precision(truths, predictions, cls, t) for t in thresholds] for cls in range(3)]
    assert metrics["map50"] == pytest.approx(np.mean([ap[0] for ap in per_class]))
    assert metrics["map75"] == pytest.approx(np.mean([ap[5] for ap in per_class]))
    assert metrics["map"] == pytest.approx(np.mean(per_class))
    for name, ap in zip("abc", per_class):
        assert metrics[f"ap_{name}"] == pytest.approx(np.mean(ap))


def test_a_shifted_box_counts_at_iou_50_but_not_at_75():
    # Shifted 20 px: IoU 8000 / 12000 = 0.67, a hit at thresholds 0.50, 0.55, 0.60, 0.65 of ten.
    truths = [truth([[0, 0, 100, 100]], [0])]
    predictions = [prediction([[20, 0, 120, 100]], [0], [0.9])]
    metrics = coco_metrics(truths, predictions, ["box"], (100, 120))
    assert (metrics["map50"], metrics["map75"]) == (pytest.approx(1.0), pytest.approx(0.0))
    assert metrics["map"] == pytest.approx(0.4)


def test_small_medium_and_large_follow_cocos_areas():
    # 20x20 = 400 < 32^2 (small), 50x50 = 2500 (medium), 120x120 = 14400 > 96^2 (large); the medium
    # object is not found.
    truths = [truth([[0, 0, 20, 20]], [0]), truth([[0, 0, 50, 50]], [0]), truth([[0, 0, 120, 120]], [0])]
    predictions = [truths[0], truth([[100, 100, 150, 150]], [0]), truths[2]]
    predictions = [{**p, "scores": np.array([0.9])} for p in predictions]
    metrics = coco_metrics(truths, predictions, ["thing"], (200, 200))
    assert metrics["map_small"] == pytest.approx(1.0)
    assert metrics["map_medium"] == pytest.approx(0.0)
    assert metrics["map_large"] == pytest.approx(1.0)
    # COCO's ranges include their bounds: a 32x32 box is small and medium; no large truth -> NaN.
    edge = [truth([[0, 0, 32, 32]], [0])]
    metrics = coco_metrics(edge, perfect(edge), ["thing"], (200, 200))
    assert metrics["map_small"] == pytest.approx(1.0) and metrics["map_medium"] == pytest.approx(1.0)
    assert math.isnan(metrics["map_large"])


def test_empty_predictions_score_zero_and_absent_classes_are_nan():
    empty = [prediction(np.zeros((0, 4)), [], []) for _ in HAND_TRUTHS]
    metrics = coco_metrics(HAND_TRUTHS, empty, ["cat", "dog", "bird"], SIZE)
    for key in ("map", "map50", "map75", "mar100", "ap_cat", "ap_dog"):
        assert metrics[key] == 0.0, key
    assert math.isnan(metrics["ap_bird"])


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"same images, received 3 and 2 entries"):
        coco_metrics(HAND_TRUTHS, HAND_PREDICTIONS[:2], ["cat", "dog"], SIZE)
    with pytest.raises(
        ValueError,
        match=r"truths\[0\]: classes must lie in 0..0 \(one per class name\), "
        r"received \[0, 1\]",
    ):
        coco_metrics(HAND_TRUTHS, HAND_PREDICTIONS, ["cat"], SIZE)
    with pytest.raises(ValueError, match=r"predictions\[0\]: boxes, classes and scores must have one entry per box"):
        coco_metrics(HAND_TRUTHS, [prediction([CAT_A], [0], [0.9, 0.1])] + HAND_PREDICTIONS[1:], ["cat", "dog"], SIZE)
    with pytest.raises(ValueError, match=r"predictions\[0\] has no 'scores'"):
        coco_metrics(HAND_TRUTHS, HAND_TRUTHS, ["cat", "dog"], SIZE)
    with pytest.raises(ValueError, match=r"iou must be one of COCO's thresholds 0.50, 0.55"):
        precision_recall_figure(HAND_TRUTHS, HAND_PREDICTIONS, ["cat", "dog"], iou=0.52)


def test_figures_render(tmp_path):
    figure = precision_recall_figure(HAND_TRUTHS, HAND_PREDICTIONS, ["cat", "dog", "bird"])
    assert [line.get_label() for line in figure.axes[0].lines] == ["cat (AP 0.600)", "dog (AP 0.442)"]
    figure.savefig(tmp_path / "pr.png")
    images = [np.zeros((100, 100, 3), "uint8"), np.zeros((100, 100, 1), "uint8"), np.zeros((100, 100), "uint8")]
    figure = detection_gallery(images, HAND_TRUTHS, HAND_PREDICTIONS, ["cat", "dog"], score_threshold=0.6, max_images=2)
    assert len(figure.axes) == 2
    # image 1: 2 truths, 3 predictions >= 0.6; image 2: 1 truth, 3 predictions >= 0.6
    assert [len(ax.patches) for ax in figure.axes] == [5, 4]
    figure.savefig(tmp_path / "gallery.png")
    assert (tmp_path / "pr.png").stat().st_size > 0 and (tmp_path / "gallery.png").stat().st_size > 0
