"""`csv`: a table with an image-path column plus a label column (classification; string or integer
labels) and/or numeric target columns (regression; their names become the target names).

Image paths are relative to the CSV file's folder (absolute paths work too). An optional split
column (train / val / test) assigns rows to splits; without it the splits are carved by fraction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from csv import DictReader
from pathlib import Path

import numpy as np

from visionkit.data.core import DataBundle, bundle_from_samples
from visionkit.data.files import existing_path, split_name
from visionkit.data.verify import ImageVerifier
from visionkit.errors import UserError
from visionkit.registry import DATASETS


@DATASETS.register("csv", tasks=("classification", "regression"))
def csv(
    *,
    path: str = "",
    image_column: str = "image",
    label_column: str = "label",
    target_columns: Sequence[str] | None = None,
    split_column: str = "split",
    image_size: int | Sequence[int] = (64, 64),
    channels: int = 3,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> DataBundle:
    csv_path = existing_path(path, "a CSV file with an image-path column and label or target columns")
    rows, header = _read_rows(csv_path)
    target_columns = list(target_columns or [])
    missing = [c for c in (image_column, *target_columns) if c not in header]
    if missing:
        raise UserError(f"{csv_path} has no column {', '.join(map(repr, missing))}; its columns: {', '.join(header)}")
    has_labels = label_column in header
    if not has_labels and not target_columns:
        raise UserError(
            f"{csv_path} has neither the label column '{label_column}' (data.label_column) nor "
            f"data.target_columns; its columns: {', '.join(header)}"
        )
    label_index, class_names = _labels([row[label_column] for row in rows]) if has_labels else (None, [])
    verifier = ImageVerifier("csv", csv_path.parent, image_size=image_size, channels=channels)
    paths = [csv_path.parent / (row[image_column] or "").strip() for row in rows]
    pools: dict[str, list] = {}
    for line, (row, path, decoded) in enumerate(zip(rows, paths, verifier.read(paths)), start=2):  # 1: header
        if decoded is None:
            continue
        sample, problem = _targets(row, label_column, label_index, target_columns)
        if problem:
            verifier.drop(path, decoded, problem[0], f"{csv_path.name} line {line}: {problem[1]}")
            continue
        split = _row_split(row, split_column, csv_path, line)
        pools.setdefault(split, []).append({"image": decoded.file, **sample})
    report = verifier.finish()
    if has_labels:
        report.require_every_class([s["label"] for s in pools.get("train", [])], class_names)
    if "train" not in pools:
        raise UserError(f"{csv_path}: no usable row is in the train split (column '{split_column}')")
    return bundle_from_samples(
        "csv",
        pools,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        stratify_key="label" if has_labels else None,
        class_names=class_names,
        target_names=target_columns,
        verification=report,
    )


def _read_rows(csv_path: Path) -> tuple[list[dict[str, str]], list[str]]:
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as file:  # -sig: spreadsheets write a BOM
            reader = DictReader(file)
            return list(reader), list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"data.path: cannot read {csv_path} as CSV ({error})") from None


def _labels(labels: list[str]) -> tuple[dict[str, int], list[str]]:
    """Class index of each distinct label, and the class names: the sorted distinct labels, integers
    sorted by value (2 before 10, and "07" is 7)."""
    distinct = {label.strip() for label in labels if label.strip()}
    try:
        value = {label: int(label) for label in distinct}
    except ValueError:
        value = {label: label for label in distinct}
    ordered = sorted(set(value.values()))
    return {label: ordered.index(value[label]) for label in distinct}, [str(v) for v in ordered]


def _targets(
    row: dict[str, str], label_column: str, label_index: dict[str, int] | None, target_columns: list[str]
) -> tuple[dict, tuple[str, str] | None]:
    """The sample's label and/or target, or (reason, detail) of why the row cannot be used."""
    sample = {}
    if label_index is not None:
        label = (row[label_column] or "").strip()
        if label not in label_index:
            return sample, ("bad_label", f"empty label in column '{label_column}'")
        sample["label"] = np.int64(label_index[label])
    if target_columns:
        given = ", ".join(f"{c}={row[c]!r}" for c in target_columns)
        try:
            values = [float(row[c]) for c in target_columns]
        except (TypeError, ValueError):
            return sample, ("bad_target", f"non-numeric value in {given}")
        if not all(math.isfinite(v) for v in values):
            return sample, ("bad_target", f"non-finite value in {given}")
        sample["target"] = np.asarray(values, np.float32)
    return sample, None


def _row_split(row: dict[str, str], split_column: str, csv_path: Path, line: int) -> str:
    if split_column not in row:
        return "train"
    split = split_name(row[split_column].strip())
    if split is None:
        raise UserError(
            f"{csv_path} line {line}: column '{split_column}' must be train, val or test, "
            f"received {row[split_column]!r}"
        )
    return split
