"""`tfds`: any TensorFlow Datasets image-classification set, by its TFDS name (classification).

The first use downloads and prepares the set into data_dir (default ~/tensorflow_datasets): that
needs network access, and happens only when data.download is true; afterwards it loads offline. The
examples are decoded into memory, converted to the configured channels and size: choose a split
slice (data.train_split='train[:20%]') for sets that do not fit.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import numpy as np

from visionkit.data.core import DataBundle, bundle_from_samples
from visionkit.data.images import check_channels, image_size_pair, resize_image, to_channels
from visionkit.data.verify import VerificationReport
from visionkit.errors import UserError
from visionkit.registry import DATASETS


@DATASETS.register("tfds", tasks=("classification",))
def tfds(
    *,
    name_in_tfds: str = "mnist",
    image_key: str = "image",
    label_key: str = "label",
    train_split: str = "train",
    val_split: str = "",
    test_split: str = "test",
    data_dir: str = "",
    download: bool = False,
    image_size: int | Sequence[int] = (32, 32),
    channels: int = 3,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> DataBundle:
    """An empty val_split or test_split is carved from train by its fraction, stratified by class."""
    import tensorflow_datasets as tensorflow_datasets  # heavy; only for users of this source

    size, channels = image_size_pair(image_size), check_channels(channels)
    builder = _builder(tensorflow_datasets, name_in_tfds, data_dir or None)
    if not builder.is_prepared():
        _prepare(builder, name_in_tfds, download)
    features = builder.info.features
    for key, option in ((image_key, "image_key"), (label_key, "label_key")):
        if key not in features:
            raise UserError(
                f"data.{option}: '{name_in_tfds}' has no feature '{key}'; its features: {', '.join(features)}"
            )
    class_names = list(getattr(features[label_key], "names", None) or [])
    if not class_names:
        raise UserError(f"data.label_key: feature '{label_key}' of '{name_in_tfds}' is not a class label")
    report = VerificationReport("tfds", f"tensorflow_datasets:{name_in_tfds}")
    wanted = {split: name for split, name in (("train", train_split), ("val", val_split), ("test", test_split)) if name}
    pools = {
        split: _samples(tensorflow_datasets, builder, name, image_key, label_key, size, channels, report)
        for split, name in wanted.items()
    }
    report.require_images()
    report.require_every_class([s["label"] for s in pools["train"]], class_names)
    return bundle_from_samples(
        "tfds",
        pools,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        stratify_key="label",
        class_names=class_names,
        verification=report,
    )


def _builder(tensorflow_datasets, name: str, data_dir: str | None):
    try:
        return tensorflow_datasets.builder(name, data_dir=data_dir)
    except tensorflow_datasets.core.registered.DatasetNotFoundError:
        close = difflib.get_close_matches(name, tensorflow_datasets.list_builders(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"data.name_in_tfds: unknown TensorFlow Datasets name '{name}'{hint}") from None


def _prepare(builder, name: str, download: bool) -> None:
    where = builder.data_dir
    if not download:
        raise UserError(
            f"TensorFlow Datasets '{name}' is not prepared in {where}; run once with "
            f"data.download=true (needs network) or point data.data_dir at a prepared copy"
        )
    try:
        builder.download_and_prepare()
    except Exception as error:  # noqa: BLE001  (network, missing extras: many kinds, all the user's to fix)
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise UserError(
            f"TensorFlow Datasets '{name}' could not be downloaded and prepared into {where} "
            f"({type(error).__name__}: {message}); this needs network access"
        ) from None


def _samples(
    tensorflow_datasets,
    builder,
    split: str,
    image_key: str,
    label_key: str,
    size: tuple[int, int],
    channels: int,
    report: VerificationReport,
) -> list[dict[str, Any]]:
    try:
        dataset = builder.as_dataset(split=split)
    except (ValueError, KeyError) as error:
        raise UserError(
            f"TensorFlow Datasets split '{split}': {str(error).splitlines()[0]}; "
            f"splits: {', '.join(builder.info.splits)}"
        ) from None
    samples = []
    for example in tensorflow_datasets.as_numpy(dataset):
        image, conversions = to_channels(np.asarray(example[image_key]), channels)
        report.converted.update(conversions)
        report.kept += 1
        samples.append({"image": resize_image(image, size), "label": np.int64(example[label_key])})
    return samples
