"""`ucr`: time series of the UCR/UEA classification archive (Dau et al. 2019; Bagnall et al. 2018) from the
`.ts` files the aeon package ships inside its wheel (GunPoint, ArrowHead, ItalyPowerDemand, OSULeaf, ACSF1,
BasicMotions, JapaneseVowels, ...), or any `.ts` or CSV file of series (`path=`). `dataset=` names the
archive's dataset: `name` is the source's key (ucr), as for every data source.

Samples are {"series": float32 [T, C], "label": int} (or "target" for a .ts file with @targetLabel true).
The archive's official train/test split is kept: <name>_TRAIN.ts and <name>_TEST.ts (for `path=` a file
named *_TRAIN.* uses its *_TEST.* sibling; without one the test split is carved by `test_fraction`); the
validation split is carved from train, stratified by class. Nothing is written beside the files.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from visionkit.data.core import DataBundle, bundle_from_samples
from visionkit.data.files import existing_path
from visionkit.data.series import SeriesFile, padded, read_series, report_ragged
from visionkit.data.verify import VerificationReport
from visionkit.errors import UserError
from visionkit.registry import DATASETS, unknown_name_message


def archive_folder() -> Path:
    """aeon's folder of shipped datasets, found without importing aeon (numba compiles on import)."""
    spec = importlib.util.find_spec("aeon")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("data=ucr reads the datasets the aeon package ships: pip install aeon")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data"


def shipped_names() -> list[str]:
    return sorted(p.parent.name for p in archive_folder().glob("*/*_TRAIN.ts") if p.stem == f"{p.parent.name}_TRAIN")


def split_files(dataset: str, path: str | None) -> dict[str, Path]:
    """{"train": file[, "test": file]} of an archive name or of data.path."""
    if path:
        train = existing_path(path, "a .ts or .csv file of series")
        test = train.with_name(train.name.replace("_TRAIN", "_TEST")) if "_TRAIN" in train.name else None
        return {"train": train, **({"test": test} if test is not None and test.is_file() else {})}
    folder = archive_folder() / dataset
    if not (folder / f"{dataset}_TRAIN.ts").is_file():
        raise UserError("data.dataset: " + unknown_name_message("UCR/UEA dataset", dataset, shipped_names()))
    return {split: folder / f"{dataset}_{split.upper()}.ts" for split in ("train", "test")}


@DATASETS.register("ucr", tasks=("classification", "regression"))
def ucr(
    *,
    dataset: str = "GunPoint",
    path: str | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.3,
    seed: int = 0,
) -> DataBundle:
    files = split_files(dataset, path)
    name = files["train"].stem.replace("_TRAIN", "")
    report = VerificationReport(name, str(files["train"].parent))
    read = {split: read_series(file, report) for split, file in files.items()}
    report_ragged(list(read.values()), report, name)
    for split, found in read.items():
        if not found.series:
            raise UserError(f"dataset '{name}': {files[split]} holds no usable series")
    regression = read["train"].regression
    class_names = None if regression else _class_names(read)
    steps = max(len(s) for found in read.values() for s in found.series)
    pools = {
        split: [
            {"series": series, **_target(label, class_names, regression)}
            for series, label in zip(padded(found.series, steps), found.labels)
        ]
        for split, found in read.items()
    }
    return bundle_from_samples(
        name,
        pools,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        stratify_key=None if regression else "label",
        class_names=class_names,
        target_names=["target"] if regression else [],
        verification=report,
    )


def _class_names(read: dict[str, SeriesFile]) -> list[str]:
    """The header's declared classes, else the labels found (integers in numeric order)."""
    declared = read["train"].class_names
    if declared:
        return list(declared)
    labels = {label for found in read.values() for label in found.labels}
    try:
        return [str(v) for v in sorted(int(label) for label in labels)]
    except ValueError:
        return sorted(labels)


def _target(label: str, class_names: list[str] | None, regression: bool) -> dict:
    if regression:
        return {"target": np.asarray([float(label)], np.float32)}
    if label not in class_names:
        raise UserError(f"label {label!r} of the test split is not among the training labels {class_names}")
    return {"label": np.int64(class_names.index(label))}
