"""The series modality: a sample's input is `series`, float32 [T, C] (time steps x channels).

Readers for the UCR/UEA `.ts` format (Bagnall et al.'s archive, as aeon ships it), for CSV tables of series
(one series a row, the label in the first column: the UCR archive's own text layout) and for NPZ arrays.
Series of several lengths are padded at the end with NaN to the longest; a NaN is a missing value the models
mask out (visionkit.models.sequences), so padding needs no second input. Problems are reported with the
file's line numbers in the dataset's VerificationReport: a missing value, a ragged (shorter) series, a label
the header does not declare, a line with the wrong number of channels or an unreadable number.

The 1-NN baselines (Euclidean and dynamic time warping, full window) are the UCR archive's reference
classifiers: computed with aeon.distances on the official train and test splits, they reproduce its
published error rates.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from visionkit.data.verify import VerificationReport
from visionkit.errors import UserError

SERIES_KEY = "series"
MISSING = {"?", "nan", "NaN", ""}


@dataclass
class SeriesFile:
    """The usable series of one file, their labels (class name strings, or regression targets) and lines."""

    series: list[np.ndarray] = field(default_factory=list)  # float32 [T_i, C]
    labels: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    class_names: list[str] | None = None  # declared by a .ts header (@classLabel true ...)
    regression: bool = False  # a .ts header with @targetLabel true


def read_series(path: Path, report: VerificationReport) -> SeriesFile:
    """A .ts or .csv file of labelled series."""
    suffix = path.suffix.lower()
    if suffix == ".ts":
        return read_ts(path, report)
    if suffix in (".csv", ".tsv", ".txt"):
        return read_table(path, report, delimiter="\t" if suffix == ".tsv" else ",")
    raise UserError(f"data.path: {path} is neither a .ts nor a .csv file of series")


def read_ts(path: Path, report: VerificationReport) -> SeriesFile:
    """A .ts file: `@` header lines, then after `@data` one case a line, channels separated by ':', values by ','
    and the label last (when @classLabel or @targetLabel is true)."""
    header, found, in_data = {}, SeriesFile(), False
    for number, line in enumerate(_lines(path), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            key, _, value = line.partition(" ")
            header[key.lower()] = value.split()
            in_data = key.lower() == "@data"
            continue
        _read_case(line, number, header, found, path, report)
    if not in_data:
        raise UserError(f"data.path: {path} has no @data line; is it a .ts file?")
    if header.get("@timestamps", ["false"])[0].lower() == "true":
        raise UserError(f"data.path: {path} has time stamps (@timeStamps true), which are not supported")
    return found


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as error:
        raise UserError(f"data.path: cannot read {path} ({error})") from None


def _read_case(line: str, number: int, header: dict, found: SeriesFile, path: Path, report) -> None:
    classes = header.get("@classlabel", ["false"])
    targets = header.get("@targetlabel", ["false"])
    labelled = classes[0].lower() == "true" or targets[0].lower() == "true"
    found.class_names = classes[1:] if classes[0].lower() == "true" else None
    found.regression = targets[0].lower() == "true"
    parts = line.split(":")
    label = parts.pop().strip() if labelled else ""
    where = f"{path.name} line {number}"
    channels = int(header["@dimensions"][0]) if "@dimensions" in header else len(parts)
    if len(parts) != channels:
        report.skip("bad_channels", where, f"{len(parts)} channels, the header says {channels}")
        return
    if found.class_names is not None and label not in found.class_names:
        report.skip("bad_label", where, f"label {label!r} is not one of @classLabel {' '.join(found.class_names)}")
        return
    values = [_numbers(part.split(","), where, report) for part in parts]
    if any(v is None for v in values):
        return
    _add(found, _channels_last(values), label, number, where, report)


def _numbers(texts: list[str], where: str, report) -> np.ndarray | None:
    try:
        return np.asarray([np.nan if t.strip() in MISSING else float(t) for t in texts], np.float32)
    except ValueError:
        bad = next(t for t in texts if t.strip() not in MISSING and not _is_number(t))
        report.skip("bad_value", where, f"{bad.strip()!r} is not a number")
        return None


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _channels_last(channels: list[np.ndarray]) -> np.ndarray:
    """[T, C] from C channel arrays, the shorter ones padded with NaN (a channel that ends early)."""
    steps = max(len(c) for c in channels)
    return np.stack([np.pad(c, (0, steps - len(c)), constant_values=np.nan) for c in channels], axis=-1)


def _add(found: SeriesFile, series: np.ndarray, label: str, number: int, where: str, report) -> None:
    steps = _observed_length(series)
    if steps == 0:
        report.skip("empty", where, "no values")
        return
    series = series[:steps]
    missing = int(np.isnan(series).sum())
    if missing:
        report.find("missing_values", missing, where, f"{missing} missing values (NaN), masked out")
    found.series.append(series)
    found.labels.append(label)
    found.lines.append(number)
    report.kept += 1


def _observed_length(series: np.ndarray) -> int:
    """Steps up to the last one with any value: trailing all-missing steps are padding."""
    observed = np.flatnonzero(~np.isnan(series).all(axis=1))
    return int(observed[-1]) + 1 if len(observed) else 0


def read_table(path: Path, report: VerificationReport, delimiter: str = ",") -> SeriesFile:
    """One univariate series a row, its label in the first column; shorter rows end early (ragged)."""
    found = SeriesFile()
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle, delimiter=delimiter))
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"data.path: cannot read {path} ({error})") from None
    for number, row in enumerate(rows, start=1):
        if not row or not "".join(row).strip():
            continue
        where = f"{path.name} line {number}"
        if number == 1 and not all(_is_number(t) or t.strip() in MISSING for t in row[1:]):
            continue  # a header row
        values = _numbers(row[1:], where, report)
        if values is not None:
            _add(found, values[:, None], row[0].strip(), number, where, report)
    return found


def report_ragged(files: list[SeriesFile], report: VerificationReport, where: str) -> None:
    """One finding per series shorter than the longest (it is padded with NaN, and masked)."""
    longest = max((len(s) for f in files for s in f.series), default=0)
    shorter = sum(len(s) < longest for f in files for s in f.series)
    if shorter:
        report.find("ragged_lengths", shorter, where, f"{shorter} series shorter than {longest} steps, padded")


def padded(series: list[np.ndarray], steps: int | None = None) -> np.ndarray:
    """float32 [N, T, C]: each series padded at the end with NaN to `steps` (default: the longest)."""
    steps = steps or max(len(s) for s in series)
    out = np.full((len(series), steps, series[0].shape[1]), np.nan, np.float32)
    for i, s in enumerate(series):
        out[i, : len(s)] = s[:steps]
    return out


def series_stats(series: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of the observed values of [N, T, C] (what the models standardise
    with), the deviation at least 1e-6."""
    flat = series.reshape(-1, series.shape[-1]).astype(np.float64)
    mean = np.nan_to_num(np.nanmean(flat, axis=0))
    std = np.maximum(np.nan_to_num(np.nanstd(flat, axis=0)), 1e-6)
    return mean.tolist(), std.tolist()


def unpadded(series: np.ndarray) -> list[np.ndarray]:
    """Each series of [N, T, C] without its trailing padding, as [C, T_i] (aeon's layout)."""
    return [s[: _observed_length(s)].T.astype(np.float64) for s in series]


def nearest_neighbour_accuracy(
    reference: np.ndarray, reference_labels: np.ndarray, queries: np.ndarray, labels: np.ndarray, metric: str
) -> float | None:
    """Accuracy of 1-NN with `metric` ("euclidean" or "dtw", full window) from `reference` to `queries`;
    None for Euclidean on series of several lengths (it is undefined there). Ties go to the first neighbour,
    as in the UCR archive's reference code."""
    from aeon.distances import dtw_pairwise_distance, euclidean_pairwise_distance

    x, y = unpadded(queries), unpadded(reference)
    equal = len({s.shape for s in x + y}) == 1
    if metric == "euclidean" and not equal:
        return None
    if np.isnan(np.concatenate([s.ravel() for s in x + y])).any():
        return None  # missing values inside a series: neither distance is defined
    if equal:
        x, y = np.stack(x), np.stack(y)
    pairwise = euclidean_pairwise_distance if metric == "euclidean" else dtw_pairwise_distance
    nearest = np.argmin(pairwise(x, y), axis=1)
    return float(np.mean(np.asarray(reference_labels)[nearest] == np.asarray(labels)))


def nearest_neighbour_baselines(bundle, evaluated: int) -> dict[str, float]:
    """1-NN Euclidean and DTW accuracy on the test split of a bundle of series, with train + val (the
    official train split) as the reference, when `evaluated` samples are that test split; else nothing."""
    test = getattr(bundle, "test", None)
    if test is None or test.input_key != "series" or len(test) != evaluated or "label" not in test.targets:
        return {}
    reference = np.concatenate([bundle.train.images, bundle.val.images])
    reference_labels = np.concatenate([bundle.train.targets["label"], bundle.val.targets["label"]])
    found = {}
    for metric in ("euclidean", "dtw"):
        accuracy = nearest_neighbour_accuracy(
            reference, reference_labels, bundle.test.images, bundle.test.targets["label"], metric
        )
        if accuracy is not None:
            found[f"1nn_{metric}_accuracy"] = accuracy
    print("baselines: " + "  ".join(f"{name}={value:.4f}" for name, value in found.items()))
    return found


def read_predict_file(path: Path, steps: int, channels: int) -> np.ndarray:
    """The series of a .ts, .csv or .npz file (any labels ignored) as float32 [N, steps, channels], padded or
    cut at the end to the model's length."""
    if path.suffix.lower() == ".npz":
        with np.load(path) as arrays:
            key = SERIES_KEY if SERIES_KEY in arrays.files else arrays.files[0]
            values = np.asarray(arrays[key], np.float32)
        values = values[None] if values.ndim == 2 and channels > 1 else values
        values = values[..., None] if values.ndim == 2 else values
        series = list(values)
    else:
        series = read_series(path, VerificationReport("predict", str(path))).series
    if not series or series[0].shape[-1] != channels:
        got = series[0].shape[-1] if series else 0
        raise UserError(f"predict.input: {path} holds series of {got} channels, the model takes {channels}")
    return padded(series, steps)
