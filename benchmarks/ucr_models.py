"""Our sequence models beside aeon's InceptionTime on one UCR dataset: the same official train/test split, the
same epochs, batch size and learning rate; test accuracy, CPU seconds and wall seconds side by side, with the
1-NN Euclidean and DTW baselines of the same split (the DTW time includes numba's compilation on a first run).

    python benchmarks/ucr_models.py --dataset GunPoint --epochs 30

Each network trains on the official train split (train + val of data=ucr) with Adam at 1e-3; ours with a
constant rate, the visionkit loader and batch-norm statistics re-estimated after each epoch (as
`trainer.precise_bn=auto` does for sets of a few batches), aeon's IndividualInceptionClassifier (one network of
InceptionTime's ensemble of five; --no-aeon skips it) with its own fit, which also reduces the rate on plateaus.
CPU time is this process's (every thread), so a figure is comparable only with the others of the same run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from visionkit import data  # noqa: E402
from visionkit.data.core import Split  # noqa: E402
from visionkit.data.loader import BatchLoader  # noqa: E402
from visionkit.data.series import nearest_neighbour_accuracy  # noqa: E402
from visionkit.tasks import build, get_task  # noqa: E402
from visionkit.training.fit import CompileSettings, compile_model  # noqa: E402
from visionkit.training.precise_bn import PreciseBatchNorm  # noqa: E402

OURS = ("fcn1d", "resnet1d", "inception_time", "wavenet", "tdnn")


def official_train(bundle) -> Split:
    """train + val: the archive's train split, which both sides train on."""
    return Split(
        np.concatenate([bundle.train.images, bundle.val.images]),
        {"label": np.concatenate([bundle.train.targets["label"], bundle.val.targets["label"]])},
    )


def timed(work, *args):
    cpu, wall = time.process_time(), time.perf_counter()
    result = work(*args)
    return result, time.process_time() - cpu, time.perf_counter() - wall


def train_ours(name: str, bundle, epochs: int, batch_size: int, seed: int) -> tuple[float, int]:
    keras.utils.set_random_seed(seed)
    task = get_task("classification")
    mean, std = bundle.pixel_stats()
    model = build(
        name, input_shape=bundle.image_shape, num_classes=len(bundle.class_names), pixel_mean=mean, pixel_std=std
    )
    train = official_train(bundle)
    loader = BatchLoader(train, task.encode_targets, batch_size=batch_size, shuffle=True, seed=seed)
    settings = CompileSettings(epochs=epochs, learning_rate=1e-3, schedule="constant")
    compile_model(model, task, settings, steps_per_epoch=len(loader))
    model.fit(loader, epochs=epochs, verbose=0, callbacks=[PreciseBatchNorm(loader)])
    probabilities = model.predict(bundle.test.images, batch_size=64, verbose=0)
    return float(np.mean(probabilities.argmax(axis=1) == bundle.test.targets["label"])), model.count_params()


def train_aeon(bundle, epochs: int, batch_size: int, seed: int) -> tuple[float, int]:
    from aeon.classification.deep_learning import IndividualInceptionClassifier

    train = official_train(bundle)
    to_aeon = lambda series: np.nan_to_num(series).transpose(0, 2, 1).astype(np.float64)  # noqa: E731  [N, C, T]
    with tempfile.TemporaryDirectory() as folder:  # aeon's fit keeps its best model in a file while it trains
        classifier = IndividualInceptionClassifier(
            n_epochs=epochs, batch_size=batch_size, random_state=seed, file_path=folder + os.sep
        )
        classifier.fit(to_aeon(train.images), train.targets["label"])
        predicted = classifier.predict(to_aeon(bundle.test.images))
    return float(np.mean(predicted == bundle.test.targets["label"])), classifier.training_model_.count_params()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="GunPoint")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--models", default=",".join(OURS), help="ours, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--aeon", action=argparse.BooleanOptionalAction, default=True, help="train aeon's network too")
    args = parser.parse_args()
    bundle = data.load("ucr", task="classification", dataset=args.dataset)
    train_size = len(bundle.train) + len(bundle.val)
    print(
        f"{args.dataset}: {train_size} train / {len(bundle.test)} test series of {bundle.image_shape}, "
        f"{len(bundle.class_names)} classes; {args.epochs} epochs, batch {args.batch_size}, Adam 1e-3"
    )
    rows = []
    for name in args.models.split(","):
        (accuracy, params), cpu, wall = timed(train_ours, name, bundle, args.epochs, args.batch_size, args.seed)
        rows.append((f"visionkit {name}", params, accuracy, cpu, wall))
    if args.aeon:
        (accuracy, params), cpu, wall = timed(train_aeon, bundle, args.epochs, args.batch_size, args.seed)
        rows.append(("aeon IndividualInception", params, accuracy, cpu, wall))
    train, test = official_train(bundle), bundle.test
    for metric in ("euclidean", "dtw"):
        accuracy, cpu, wall = timed(
            nearest_neighbour_accuracy, train.images, train.targets["label"], test.images, test.targets["label"], metric
        )
        if accuracy is not None:  # Euclidean: series of one length only
            rows.append((f"1-NN {metric}", 0, accuracy, cpu, wall))
    print(f"{'model':<28}{'params':>10}{'test acc':>10}{'CPU s':>9}{'wall s':>9}")
    for model, params, accuracy, cpu, wall in rows:
        print(f"{model:<28}{params:>10,}{accuracy:>10.4f}{cpu:>9.1f}{wall:>9.1f}")


if __name__ == "__main__":
    main()
