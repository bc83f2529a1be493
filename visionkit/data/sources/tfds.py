"""`tfds`: a TensorFlow Datasets set by its TFDS name, for classification, detection or segmentation.

The first use downloads and prepares the set into data_dir (default ~/tensorflow_datasets): that
needs network access, and happens only when data.download is true; afterwards it loads offline. The
examples are decoded into memory (not streamed from files as the file sources are, so data.resize and
data.cache do not apply: images are stretched to image_size), converted to the configured channels and
size: choose a split slice (data.train_split='train[:20%]') for sets that do not fit.

`targets` picks what a sample holds:
- classification: the class label `label_key`.
- detection: the boxes of `objects_key` (voc, coco/2017, ...): TFDS's `bbox`, normalised [ymin, xmin, ymax,
  xmax], becomes pixel xyxy of the sized image; `label` the class. Crowd boxes (`is_crowd`, COCO) are no
  training boxes, as in data=coco; `is_difficult` (VOC) becomes the sample's `difficult` flags.
- segmentation: the class-index mask `mask_key`. oxford_iiit_pet's trimap (1 pet, 2 background, 3 the
  uncertain border) becomes 1 pet, 0 background, 255 ignore (its class: "pet"); other sets' mask values are
  the classes as they are (0 background, data.class_names naming 1, 2, ...).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import numpy as np

from visionkit.data.core import IGNORE_INDEX, DataBundle, bundle_from_samples
from visionkit.data.images import check_channels, image_size_pair, resize_image, resize_mask, to_channels
from visionkit.data.verify import VerificationReport, clean_boxes, clean_mask
from visionkit.errors import UserError
from visionkit.registry import DATASETS

TARGETS = ("classification", "detection", "segmentation")
# Sets whose mask values are not class indices: their value -> class index (IGNORE_INDEX: ignore), class names.
MASK_VALUES = {"oxford_iiit_pet": ({1: 1, 2: 0, 3: IGNORE_INDEX}, ["pet"])}
FLAGS = ("is_crowd", "is_difficult")  # COCO's and VOC's per-object flags in TFDS


@DATASETS.register("tfds", tasks=TARGETS)
def tfds(
    *,
    name_in_tfds: str = "mnist",
    targets: str = "classification",
    image_key: str = "image",
    label_key: str = "label",
    objects_key: str = "objects",
    mask_key: str = "segmentation_mask",
    class_names: Sequence[str] | None = None,
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
    """An empty val_split or test_split is carved from train by its fraction (classification: stratified)."""
    import tensorflow_datasets as tensorflow_datasets  # heavy; only for users of this source

    if targets not in TARGETS:
        raise UserError(f"data.targets must be one of {', '.join(TARGETS)}, received {targets!r}")
    size, channels = image_size_pair(image_size), check_channels(channels)
    builder = _builder(tensorflow_datasets, name_in_tfds, data_dir or None)
    if not builder.is_prepared():
        _prepare(builder, name_in_tfds, download)
    keys = {"classification": label_key, "detection": objects_key, "segmentation": mask_key}[targets]
    _require_features(builder.info.features, name_in_tfds, image_key=image_key, **{_OPTION[targets]: keys})
    convert, names, mask_names = _converter(targets, builder.info.features, name_in_tfds, keys, class_names)
    report = VerificationReport("tfds", f"tensorflow_datasets:{name_in_tfds}")
    wanted = {split: name for split, name in (("train", train_split), ("val", val_split), ("test", test_split)) if name}
    pools = {}
    for split, name in wanted.items():
        pools[split] = []
        for n, example in enumerate(_examples(tensorflow_datasets, builder, name)):
            image, conversions = to_channels(np.asarray(example[image_key]), channels)
            sample = convert(example, image.shape[:2], size, report, f"{name_in_tfds} {name} example {n}")
            if sample is not None:
                report.converted.update(conversions)
                report.kept += 1
                pools[split].append({"image": resize_image(image, size), **sample})
    report.require_images()
    if targets == "classification":
        report.require_every_class([s["label"] for s in pools["train"]], names)
    return bundle_from_samples(
        "tfds",
        pools,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        stratify_key="label" if targets == "classification" else None,
        class_names=names,
        mask_names=mask_names,
        verification=report,
    )


_OPTION = {"classification": "label_key", "detection": "objects_key", "segmentation": "mask_key"}


def _require_features(features, name: str, **keys: str) -> None:
    for option, key in keys.items():
        if key not in features:
            raise UserError(f"data.{option}: '{name}' has no feature '{key}'; its features: {', '.join(features)}")


def _converter(targets: str, features, name: str, key: str, class_names):
    """(example -> the sample's targets or None, class names, mask names) for data.targets."""
    if targets == "classification":
        names = list(getattr(features[key], "names", None) or [])
        if not names:
            raise UserError(f"data.label_key: feature '{key}' of '{name}' is not a class label")
        return lambda example, *_: {"label": np.int64(example[key])}, names, []
    if targets == "detection":
        objects = features[key]
        if not all(field in getattr(objects, "keys", list)() for field in ("bbox", "label")):
            raise UserError(f"data.objects_key: feature '{key}' of '{name}' has no 'bbox' and 'label' per object")
        names = list(class_names or getattr(objects["label"], "names", None) or [])
        if not names:
            raise UserError(f"data.class_names: '{name}' does not name the classes of '{key}/label'; give them")
        return _boxes_of(key, len(names)), names, []
    values, names = MASK_VALUES.get(name.split("/")[0].split(":")[0], (None, list(class_names or [])))
    if not names:
        raise UserError(f"data.class_names: name the classes of '{name}' mask values 1, 2, ... (0 is background)")
    return _mask_of(key, values, len(names) + 1), list(names), ["background", *names]


def _boxes_of(key: str, num_classes: int):
    def convert(example, original_size, size, report, where) -> dict[str, np.ndarray] | None:
        objects = example[key]
        normalised = np.asarray(objects["bbox"], np.float64).reshape(-1, 4)  # [ymin, xmin, ymax, xmax] in 0..1
        classes = np.asarray(objects["label"], np.int64).reshape(-1)
        flags = {field: np.asarray(objects.get(field, np.zeros(len(classes))), bool).reshape(-1) for field in FLAGS}
        lengths = {len(normalised), len(classes), *(len(v) for v in flags.values())}
        if len(lengths) > 1 or (classes.size and not 0 <= classes.min() <= classes.max() < num_classes):
            report.skip("bad_target", where, f"objects of differing counts or classes outside 0..{num_classes - 1}")
            return None
        report.find("crowd_annotations", int(flags["is_crowd"].sum()))
        regular = ~flags["is_crowd"]
        boxes = normalised[regular][:, [1, 0, 3, 2]] * np.array([size[1], size[0], size[1], size[0]])
        sources = [f"{where} object {i}" for i in np.flatnonzero(regular)]
        boxes, kept = clean_boxes(report, boxes, np.arange(len(boxes)), size, sources)
        return {"boxes": boxes, "classes": classes[regular][kept], "difficult": flags["is_difficult"][regular][kept]}

    return convert


def _mask_of(key: str, values: dict[int, int] | None, num_values: int):
    def convert(example, original_size, size, report, where) -> dict[str, np.ndarray] | None:
        mask = np.asarray(example[key])
        mask = mask[..., 0] if mask.ndim == 3 else mask
        if mask.shape != tuple(original_size):
            report.skip(
                "mask_size", where, f"mask {mask.shape[1]}x{mask.shape[0]}, image {original_size[1]}x{original_size[0]}"
            )
            return None
        if values is not None:
            lookup = np.full(max(256, int(mask.max()) + 1), -1, np.int64)
            lookup[list(values)] = list(values.values())
            mask = lookup[mask]
        return {"mask": resize_mask(clean_mask(report, mask, num_values, where), size)}

    return convert


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


def _examples(tensorflow_datasets, builder, split: str):
    try:
        dataset = builder.as_dataset(split=split)
    except (ValueError, KeyError) as error:
        raise UserError(
            f"TensorFlow Datasets split '{split}': {str(error).splitlines()[0]}; "
            f"splits: {', '.join(builder.info.splits)}"
        ) from None
    return tensorflow_datasets.as_numpy(dataset)
