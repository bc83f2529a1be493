"""How does our detector compare with a modern one? keras-cv's YOLOv8 and visionkit's detector trained on
the same `shapes` detection data for the same wall-clock budget, in one process, scored by the same code.

    .venv/bin/python benchmarks/yolov8_vs_visionkit.py                               # 300 s each, retinanet
    .venv/bin/python benchmarks/yolov8_vs_visionkit.py --seconds 600 --models retinanet faster_rcnn
    .venv/bin/python benchmarks/yolov8_vs_visionkit.py --seconds 20 --limit 64        # a smoke test

The same for every detector:
- data: the training split of task=detection's data (`shapes`, 64x64 scenes), batched by one BatchLoader
  setup: the same order, the task's augmentation (conf/task/detection.yaml), batch size and seed;
- budget: training stops at the first batch end after --seconds of wall clock, counted from the start of
  model.fit (tracing and compiling the train step count: they are part of what training costs);
- no validation while training, and the last weights are scored: the pipeline's per-epoch val_map50 and
  best-checkpoint choice would spend each side's budget differently;
- Adam at a constant learning rate: a cosine schedule is defined over a number of epochs that a
  wall-clock budget does not know;
- XLA or not as trainer.jit_compile says (auto: off on a CPU, on with a GPU);
- scoring: detections on the test split at the task's score threshold, NMS IoU and detections per image
  (conf/task/detection.yaml), truths from visionkit.tasks.detection.truth_lists, COCO metrics by
  visionkit.tasks.detection_metrics.coco_metrics.

visionkit side: config, data, model and compile as mode=train builds them (pipelines.context,
pipelines.trainer.compile_for_training: model=<name> with conf/model/<name>.yaml and the trainer section),
trained by visionkit.training.fit.fit; the served model (models.common.inference_model, without
Faster R-CNN's proposal output) is scored.

keras-cv side: keras_cv.models.YOLOV8Detector around a YOLOV8Backbone built from its constructor (every
from_preset downloads weights). What that means on 64x64 images:
- the detector reads the backbone's P3, P4 and P5 (strides 8, 16, 32; fixed in keras-cv), so the input
  side must be a multiple of 32: 64 is, and runs as it is (P5 is 2x2);
- its label encoder only assigns a truth to anchor points (cell centres) strictly inside the box: at
  stride 8 about 7% of the training boxes of `shapes` (sides of 4 to 7 pixels between two centres) get
  none, so YOLOv8 cannot learn them; ours has a stride-4 level for them;
- its non-maximum suppression (keras_cv.layers.NonMaxSuppression) is class-agnostic and keeps each
  box's best class; ours suppresses within each class. The thresholds are the same.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from functools import partial
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

import keras  # noqa: E402
import keras_cv  # noqa: E402
import numpy as np  # noqa: E402
from configured import load_config, prepare  # noqa: E402  (benchmarks/configured.py)
from hydra.core.hydra_config import HydraConfig  # noqa: E402

from pipelines import context  # noqa: E402
from pipelines.settings import TrainerSettings  # noqa: E402
from pipelines.trainer import compile_for_training, training_loaders  # noqa: E402  (mode=train's wiring)
from visionkit.data.augment import build_augmenter  # noqa: E402
from visionkit.data.loader import BatchLoader  # noqa: E402
from visionkit.models.common import inference_model  # noqa: E402
from visionkit.tasks.detection import truth_lists  # noqa: E402
from visionkit.tasks.detection_metrics import coco_metrics  # noqa: E402
from visionkit.training.fit import fit, progress_verbosity  # noqa: E402
from visionkit.training.precision import jit_compile  # noqa: E402

# A small YOLOv8 for 64x64 scenes of 4 to 40 pixel objects: half the width of keras-cv's smallest
# preset (yolo_v8_xs: [32, 64, 128, 256], depths [1, 2, 2, 1]) and one CSP block per stage and in the
# FPN. About 1.0 M parameters with 4 classes (the head's 64 box channels per level are a floor).
YOLO_CHANNELS = [16, 32, 64, 128]
YOLO_DEPTHS = [1, 1, 1, 1]
YOLO_FPN_DEPTH = 1
# Adam with keras.io's YOLOv8 example values: learning rate 1e-3 and global gradient clipping at 10
# (its losses are sums over the matched anchors; early steps give large gradients).
YOLO_LEARNING_RATE = 1e-3
YOLO_CLIPNORM = 10.0
EPOCH_CAP = 1_000_000  # fit's epochs: the budget, not this, ends training
METRICS = ("map50", "map", "map75")


class WallClockBudget(keras.callbacks.Callback):
    """Stops training at the first batch end `seconds` after fit began; counts the steps and times the fit."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds
        self.steps = 0
        self.elapsed = 0.0
        self.first_step = 0.0  # tracing (and XLA compiling) the train step: part of the budget, shown apart

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps == 1:
            self.first_step = time.perf_counter() - self.start
        if time.perf_counter() - self.start >= self.seconds:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        self.elapsed = time.perf_counter() - self.start


def detection_config(model: str, args: argparse.Namespace):
    """task=detection's configuration with our model, as `python -m pipelines.run` composes it."""
    overrides = [
        "task=detection",
        f"model={model}",
        "tracking=none",
        "trainer.schedule=constant",
        f"trainer.seed={args.seed}",
    ]
    if args.batch_size is not None:
        overrides.append(f"trainer.batch_size={args.batch_size}")
    if args.limit is not None:
        overrides.append(f"data.limit={args.limit}")
    return load_config(overrides)


def score_on_test_split(detections: list[dict], task, bundle) -> dict[str, float]:
    """COCO metrics of per-image detections on the test split: the one scoring code of every detector."""
    test = bundle.test
    truths = truth_lists(task.encode_targets([test.sample(i) for i in range(len(test))]))
    return coco_metrics(truths, detections, bundle.class_names, bundle.image_shape[:2])


def result_row(
    detector: str, model: keras.Model, budget: WallClockBudget, steps_per_epoch: int, metrics: dict[str, float]
) -> dict:
    return {
        "detector": detector,
        "parameters": model.count_params(),
        "epochs": budget.steps / steps_per_epoch,
        "train_s": budget.elapsed,
        "first_step_s": budget.first_step,
        **{name: metrics[name] for name in METRICS},
    }


# ---- visionkit ---------------------------------------------------------------------------------------


def train_visionkit(model_name: str, args: argparse.Namespace) -> dict:
    """Our detector, built, compiled and fitted by the library as mode=train does, within the budget."""
    cfg = detection_config(model_name, args)
    trainer, task, bundle = prepare(cfg)
    model = context.build_model(cfg, task, bundle)
    train_data, _ = training_loaders(cfg, trainer, task, bundle, model)
    compile_for_training(model, task, trainer, steps_per_epoch=len(train_data))
    budget = WallClockBudget(args.seconds)
    fit(model, train_data, None, epochs=EPOCH_CAP, callbacks=[budget])
    served = inference_model(model)  # Faster R-CNN without its proposal network's training output
    outputs = served.predict(bundle.test.images, batch_size=trainer.batch_size, verbose=0)
    metrics = score_on_test_split(task.detections(outputs), task, bundle)
    return result_row(f"{model_name} (visionkit)", served, budget, len(train_data), metrics)


# ---- keras-cv YOLOv8 ---------------------------------------------------------------------------------


def keras_cv_targets(encode_targets, samples: list[dict]) -> dict[str, np.ndarray]:
    """keras-cv's dense bounding-box dict from our padded [B, M, 5] targets; both pad with -1."""
    targets = encode_targets(samples)
    return {"boxes": targets[..., :4], "classes": targets[..., 4]}


def yolo_training_batches(cfg, trainer: TrainerSettings, task, bundle) -> BatchLoader:
    """The batches pipelines.trainer.training_loaders gives our detector (order, augmentation, batch size),
    with targets in keras-cv's format."""
    augmenter = build_augmenter(**context.options(cfg.augment), seed=trainer.seed)
    return BatchLoader(
        bundle.train,
        partial(keras_cv_targets, task.encode_targets),
        augmenter=augmenter,
        shuffle=True,
        seed=trainer.seed,
        batch_size=trainer.batch_size,
        workers=trainer.workers,
        use_multiprocessing=trainer.multiprocessing,
        max_queue_size=trainer.prefetch,
    )


def build_yolo(task, bundle) -> keras.Model:
    backbone = keras_cv.models.YOLOV8Backbone(
        stackwise_channels=YOLO_CHANNELS,
        stackwise_depth=YOLO_DEPTHS,
        include_rescaling=True,  # it gets uint8 pixels, as ours does
        input_shape=bundle.image_shape,
    )
    # keras-cv's default decoder keeps boxes above 0.2 confidence after NMS at IoU 0.7; COCO's AP counts
    # low-scoring detections too, so it gets the task's thresholds, the ones our detector is scored with.
    decoder = keras_cv.layers.NonMaxSuppression(
        "xyxy",
        from_logits=False,
        iou_threshold=task.suppression["nms_iou"],
        confidence_threshold=task.suppression["score_threshold"],
        max_detections=task.suppression["max_detections"],
    )
    return keras_cv.models.YOLOV8Detector(
        backbone=backbone,
        num_classes=len(bundle.class_names),
        bounding_box_format="xyxy",
        fpn_depth=YOLO_FPN_DEPTH,
        prediction_decoder=decoder,
    )


def yolo_detections(model: keras.Model, images: np.ndarray, batch_size: int) -> list[dict]:
    """Per image {"boxes", "scores", "classes"}: the decoder's padded rows up to num_detections."""
    found = model.predict(images, batch_size=batch_size, verbose=0)
    return [
        {
            "boxes": found["boxes"][i, :n],
            "scores": found["confidence"][i, :n],
            "classes": found["classes"][i, :n].astype(np.int64),
        }
        for i, n in enumerate(found["num_detections"])
    ]


def train_yolo(args: argparse.Namespace) -> dict:
    """keras-cv's YOLOv8 on the same batches, with the same budget and scoring."""
    cfg = detection_config("retinanet", args)  # only the task, data, augment and trainer sections are used
    trainer, task, bundle = prepare(cfg)
    print(
        f"{cfg.data.name}: {len(bundle.train)} training / {len(bundle.test)} test images of "
        f"{'x'.join(map(str, bundle.image_shape))}, batch {trainer.batch_size}, "
        f"augment={HydraConfig.get().runtime.choices.augment}"
    )
    model = build_yolo(task, bundle)
    # Keyword arguments: keras-cv's compile takes the two losses first, Keras's third positional is loss_weights.
    # XLA as for ours (trainer.jit_compile; "auto" is off on a CPU, on with a GPU): YOLOv8's train step compiles.
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=YOLO_LEARNING_RATE, global_clipnorm=YOLO_CLIPNORM),
        box_loss="ciou",
        classification_loss="binary_crossentropy",
        jit_compile=jit_compile(trainer.jit_compile),
    )
    train_data = yolo_training_batches(cfg, trainer, task, bundle)
    budget = WallClockBudget(args.seconds)
    model.fit(train_data, epochs=EPOCH_CAP, callbacks=[budget], verbose=progress_verbosity())
    metrics = score_on_test_split(yolo_detections(model, bundle.test.images, trainer.batch_size), task, bundle)
    return result_row("yolov8 (keras-cv)", model, budget, len(train_data), metrics)


# ---- report ------------------------------------------------------------------------------------------


def format_results(rows: list[dict]) -> str:
    """The table, then the ratio of each of our detectors' map50 to YOLOv8's (the first row). `train s`
    includes `1st step s`, the tracing of the train step."""
    header = ["parameters", "epochs", "train s", "1st step s", *(f"test {name}" for name in METRICS)]
    lines = [f"{'detector':<26}" + "".join(f"{title:>12}" for title in header)]
    for row in rows:
        cells = [
            f"{row['parameters']:,}",
            f"{row['epochs']:.2f}",
            f"{row['train_s']:.1f}",
            f"{row['first_step_s']:.1f}",
            *(f"{row[name]:.3f}" for name in METRICS),
        ]
        lines.append(f"{row['detector']:<26}" + "".join(f"{cell:>12}" for cell in cells))
    yolo = rows[0]["map50"]
    for row in rows[1:]:
        ratio = row["map50"] / yolo if yolo > 0 else math.nan
        lines.append(f"map50 {row['detector']} / yolov8: {ratio:.3f}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="wall-clock training budget per detector")
    parser.add_argument(
        "--models",
        nargs="+",
        default=["retinanet"],
        choices=["retinanet", "faster_rcnn"],
        help="our detectors (conf/model/<name>.yaml)",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="default: the trainer's (conf/trainer)")
    parser.add_argument("--seed", type=int, default=0, help="weights, shuffling and augmentation")
    parser.add_argument("--limit", type=int, default=None, help="first N images of each split (smoke tests)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    print(
        f"YOLOv8 (keras-cv {keras_cv.__version__}) against visionkit's {', '.join(args.models)} on shapes: "
        f"{args.seconds:g} s of training each, seed {args.seed}, keras {keras.__version__} "
        f"({keras.backend.backend()}), {os.cpu_count()} CPUs"
    )
    rows = [train_yolo(args)] + [train_visionkit(name, args) for name in args.models]
    print(format_results(rows))
    return rows


if __name__ == "__main__":
    main()
