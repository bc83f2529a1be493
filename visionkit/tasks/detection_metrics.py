"""COCO detection metrics for in-memory predictions, computed by pycocotools' COCOeval, and the
precision-recall curves they are computed from.

Boxes are pixel xyxy (the project's contract) and turn into COCO's xywh here, at the edge. Category
ids are class index + 1 (COCO ids start at 1); areas are w * h, which COCO compares with 32^2 and 96^2
for small / medium / large (bounds inclusive, so a 32x32 box counts as small and as medium).

Pascal VOC's `difficult` objects are kept out of the scores, as VOC's devkit keeps them: COCOeval's ignore
flag, so that a detection matching one is neither a true nor a false positive (however many detections
match it: VOC's devkit counts none of them) and an undetected one is no miss. Matching follows COCOeval,
which prefers a regular object to an ignored one above the IoU threshold, where VOC's devkit takes the
highest IoU of all; the two differ only for a detection overlapping both kinds.

Where pycocotools reports -1 (no ground truth in a category or area range, so no AP can be
computed) the metric is NaN: every call returns the same keys, and a NaN is never mistaken for a
score of 0. Use `math.isnan` to leave them out when logging.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
from matplotlib.figure import Figure
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

# Index in COCOeval.stats of each summary metric (see COCOeval.summarize).
SUMMARY_STATS = {"map": 0, "map50": 1, "map75": 2, "map_small": 3, "map_medium": 4, "map_large": 5, "mar100": 8}


def coco_metrics(
    truths: list[dict], predictions: list[dict], class_names: list[str], image_size: tuple[int, int]
) -> dict[str, float]:
    """COCO box metrics: map (AP@[.5:.95]), map50, map75, map_small/medium/large, mar100 (AR, 100
    detections per image) and ap_<class name> (AP@[.5:.95] of each class).

    truths: one dict per image, {"boxes": [N, 4] xyxy, "classes": [N] int, optionally "iscrowd": [N] and
    "difficult": [N] (Pascal VOC's flag: kept out of the scores)};
    predictions: one dict per image, {"boxes": [M, 4] xyxy, "scores": [M], "classes": [M] int};
    image_size: (height, width) of the images, written into COCO's image records.
    """
    evaluation = _evaluate(truths, predictions, class_names, image_size)
    metrics = {name: _nan_if_absent(evaluation.stats[index]) for name, index in SUMMARY_STATS.items()}
    precision = _precision(evaluation)  # [T, R, K]
    for k, name in enumerate(class_names):
        metrics[f"ap_{name}"] = _mean_precision(precision[:, :, k])
    return metrics


def precision_recall_figure(
    truths: list[dict], predictions: list[dict], class_names: list[str], iou: float = 0.5
) -> Figure:
    """Precision against recall for each class at one of COCO's IoU thresholds (0.50, 0.55, ... 0.95):
    COCOeval's 101-point interpolated curves, all areas, 100 detections per image."""
    evaluation = _evaluate(truths, predictions, class_names)
    thresholds = evaluation.params.iouThrs
    matches = np.flatnonzero(np.isclose(thresholds, iou))
    if not matches.size:
        raise ValueError(
            f"iou must be one of COCO's thresholds {', '.join(f'{t:.2f}' for t in thresholds)}, received {iou!r}"
        )
    precision = _precision(evaluation)[matches[0]]  # [R, K]
    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.add_subplot()
    for k, name in enumerate(class_names):
        if precision[0, k] >= 0:  # -1: no ground truth of this class
            ax.plot(evaluation.params.recThrs, precision[:, k], label=f"{name} (AP {precision[:, k].mean():.3f})")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.02),
        xlabel="recall",
        ylabel="precision",
        title=f"Precision-recall at IoU {thresholds[matches[0]]:.2f}",
    )
    if ax.lines:
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


# ---- COCOeval on in-memory data ------------------------------------------------------------------


def _evaluate(truths, predictions, class_names, image_size=None) -> COCOeval:
    if len(truths) != len(predictions):
        raise ValueError(
            f"truths and predictions must cover the same images, received {len(truths)} and {len(predictions)} entries"
        )
    unscored = [i for i, entry in enumerate(predictions) if "scores" not in entry]
    if unscored:
        first = unscored[0]
        raise ValueError(f"predictions[{first}] has no 'scores', received keys {sorted(predictions[first])}")
    size = {} if image_size is None else {"height": int(image_size[0]), "width": int(image_size[1])}
    images = [{"id": i + 1, **size} for i in range(len(truths))]
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(class_names)]
    truth_records = _annotations(truths, len(class_names), "truths")
    prediction_records = _annotations(predictions, len(class_names), "predictions")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools reports progress with print
        evaluation = _DifficultAwareEval(
            _coco(images, categories, truth_records), _coco(images, categories, prediction_records), iouType="bbox"
        )
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation


class _DifficultAwareEval(COCOeval):
    """COCOeval that also ignores the truths marked `difficult` (Pascal VOC), as it ignores crowds."""

    def _prepare(self):
        super()._prepare()  # sets each truth's ignore flag from iscrowd alone
        for truths in self._gts.values():
            for truth in truths:
                truth["ignore"] = truth["ignore"] or truth["difficult"]

    def evaluateImg(self, imgId, catId, aRng, maxDet):  # noqa: N803  (COCOeval's names)
        # The IoUs are computed by now, plainly (crowds aside), as VOC computes them. From here a difficult
        # object is matched as COCOeval matches a crowd: by any number of detections, each of them ignored.
        for truth in self._gts[imgId, catId]:
            truth["iscrowd"] = truth["iscrowd"] or truth["difficult"]
        return super().evaluateImg(imgId, catId, aRng, maxDet)


def _coco(images, categories, annotations) -> COCO:
    """A COCO object built in memory (COCO() reads files; loadRes cannot take zero detections)."""
    coco = COCO()
    coco.dataset = {"images": images, "categories": categories, "annotations": annotations}
    coco.createIndex()
    return coco


def _annotations(per_image, num_classes, what):
    """COCO annotation records (xywh boxes, ids from 1: COCOeval takes id 0 for 'unmatched')."""
    records = []
    for image_index, entry in enumerate(per_image):
        boxes = np.asarray(entry["boxes"], dtype="float64").reshape(-1, 4)
        classes = np.asarray(entry["classes"], dtype="int64").reshape(-1)
        columns = {
            key: np.asarray(entry[key]).reshape(-1) for key in ("scores", "iscrowd", "difficult") if key in entry
        }
        _check_entry(boxes, classes, columns, num_classes, f"{what}[{image_index}]")
        for n, ((x1, y1, x2, y2), cls) in enumerate(zip(boxes, classes)):
            record = {
                "id": len(records) + 1,
                "image_id": image_index + 1,
                "category_id": int(cls) + 1,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": (x2 - x1) * (y2 - y1),
                "iscrowd": int(columns["iscrowd"][n]) if "iscrowd" in columns else 0,
                "difficult": int(columns["difficult"][n]) if "difficult" in columns else 0,
            }
            if "scores" in columns:
                record["score"] = float(columns["scores"][n])
            records.append(record)
    return records


def _check_entry(boxes, classes, columns, num_classes, where):
    lengths = {"boxes": len(boxes), "classes": len(classes), **{key: len(value) for key, value in columns.items()}}
    if len(set(lengths.values())) > 1:
        raise ValueError(
            f"{where}: boxes, classes and {', '.join(columns)} must have one entry per box, received lengths {lengths}"
        )
    if classes.size and (classes.min() < 0 or classes.max() >= num_classes):
        raise ValueError(
            f"{where}: classes must lie in 0..{num_classes - 1} (one per class name), "
            f"received {sorted(set(classes.tolist()))}"
        )
    if np.any(boxes[:, 2:] < boxes[:, :2]):
        raise ValueError(
            f"{where}: boxes must be xyxy with x2 >= x1 and y2 >= y1, received "
            f"{boxes[np.any(boxes[:, 2:] < boxes[:, :2], axis=1)][0].tolist()}"
        )


def _precision(evaluation) -> np.ndarray:
    """COCOeval's precision [T IoU thresholds, R recall thresholds, K classes] over all areas at 100
    detections per image; -1 where a class has no ground truth."""
    return evaluation.eval["precision"][:, :, :, 0, -1]


def _mean_precision(precision) -> float:
    """AP as COCOeval.summarize computes it: the mean over the entries that exist."""
    present = precision[precision > -1]
    return float(present.mean()) if present.size else float("nan")


def _nan_if_absent(value) -> float:
    return float("nan") if value == -1 else float(value)
