"""Augmentation of series (float32 [T, C], NaN-padded at the end): jitter, scaling, magnitude warping, time
warping and window slicing, after Um et al., "Data augmentation of wearable sensor data for Parkinson's
disease monitoring using convolutional neural networks", ICMI 2017, and Le Guennec, Malinowski & Tavenard,
"Data augmentation for time series classification using convolutional neural networks", 2016.

Declared as data, like the image presets: augment.series is a list of {name: <transform>, p: <probability>,
<its arguments>}. Each sample's draws come from a generator seeded by (seed, epoch, batch, position in the
batch), so a run is reproducible whatever the number of loader workers, as the image Augmenter's are.
Only the observed steps are transformed: a shorter series keeps its length and its padding.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.interpolate import CubicSpline

from visionkit.errors import UserError
from visionkit.registry import unknown_name_message


def jitter(x: np.ndarray, rng: np.random.Generator, sigma: float = 0.03) -> np.ndarray:
    """Gaussian noise of standard deviation `sigma` added to every value."""
    return x + rng.normal(0.0, sigma, x.shape)


def scaling(x: np.ndarray, rng: np.random.Generator, sigma: float = 0.1) -> np.ndarray:
    """Each channel multiplied by a factor drawn from N(1, sigma)."""
    return x * rng.normal(1.0, sigma, (1, x.shape[1]))


def _smooth_curve(steps: int, rng: np.random.Generator, sigma: float, knots: int, channels: int) -> np.ndarray:
    """[steps, channels] cubic splines through knots + 2 evenly spaced values drawn from N(1, sigma)."""
    at = np.linspace(0, steps - 1, knots + 2)
    values = rng.normal(1.0, sigma, (knots + 2, channels))
    return CubicSpline(at, values, axis=0)(np.arange(steps))


def magnitude_warp(x: np.ndarray, rng: np.random.Generator, sigma: float = 0.2, knots: int = 4) -> np.ndarray:
    """Each channel multiplied by a smooth random curve around 1."""
    return x * _smooth_curve(len(x), rng, sigma, knots, x.shape[1])


def _resample(x: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """x read at fractional time `positions` (linear interpolation), per channel."""
    steps = np.arange(len(x))
    return np.stack([np.interp(positions, steps, x[:, c]) for c in range(x.shape[1])], axis=1)


def time_warp(x: np.ndarray, rng: np.random.Generator, sigma: float = 0.2, knots: int = 4) -> np.ndarray:
    """Time itself runs at a smooth random speed around 1: the series is read at the warped times, which
    still start at the first step and end at the last."""
    speed = np.maximum(_smooth_curve(len(x), rng, sigma, knots, 1)[:, 0], 1e-3)
    warped = np.cumsum(speed) - speed[0]
    return _resample(x, warped * (len(x) - 1) / max(warped[-1], 1e-9))


def window_slice(x: np.ndarray, rng: np.random.Generator, ratio: float = 0.9) -> np.ndarray:
    """A random window of `ratio` of the steps, stretched back to the whole length."""
    if not 0 < ratio <= 1:
        raise ValueError(f"window_slice: ratio must be in (0, 1], received {ratio!r}")
    width = max(2, int(round(ratio * len(x))))
    if width >= len(x):
        return x
    start = rng.integers(0, len(x) - width + 1)
    return _resample(x, np.linspace(start, start + width - 1, len(x)))


TRANSFORMS = {f.__name__: f for f in (jitter, scaling, magnitude_warp, time_warp, window_slice)}


def _checked(spec: Mapping[str, Any], position: int) -> tuple[Any, float, dict[str, Any]]:
    spec = dict(spec)
    where = f"augment.series[{position}]"
    name = spec.pop("name", None)
    if name not in TRANSFORMS:
        raise UserError(f"{where}: " + unknown_name_message("series transform", name, TRANSFORMS))
    probability = spec.pop("p", 1.0)
    if not 0 <= probability <= 1:
        raise UserError(f"{where} ({name}): p must be in [0, 1], received {probability!r}")
    known = list(inspect.signature(TRANSFORMS[name]).parameters)[2:]
    unknown = sorted(set(spec) - set(known))
    if unknown:
        raise UserError(f"{where} ({name}): unknown argument {', '.join(unknown)}; it takes {', '.join(known)}")
    return TRANSFORMS[name], float(probability), spec


class SeriesAugmenter:
    """Applies augment.series to the "series" of samples, seeded per sample by its place in the epoch."""

    def __init__(self, transforms: Iterable[Mapping[str, Any]], seed: int = 0):
        self.transforms = [_checked(spec, i) for i, spec in enumerate(transforms)]
        self.seed = seed
        probe = np.linspace(0, 1, 16, dtype=np.float32)[:, None]
        for transform, _, options in self.transforms:  # a bad argument value fails now, not in a worker
            try:
                transform(probe, np.random.default_rng(0), **options)
            except (TypeError, ValueError) as error:
                raise UserError(f"augment.series ({transform.__name__}): {error}") from None

    def augment(self, series: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        steps = np.flatnonzero(~np.isnan(series).all(axis=1))
        length = int(steps[-1]) + 1 if len(steps) else 0
        x = series[:length].astype(np.float64)
        for transform, probability, options in self.transforms:
            if rng.random() < probability:
                x = transform(x, rng, **options)
        out = series.copy()
        out[:length] = x
        return out

    def __call__(
        self,
        samples: list[dict[str, Any]],
        *,
        epoch: int,
        batch: int,
        positions: Sequence[int] | None = None,
        batch_length: int | None = None,
    ) -> list[dict[str, Any]]:
        positions = range(len(samples)) if positions is None else positions
        return [
            {**sample, "series": self.augment(sample["series"], np.random.default_rng([self.seed, epoch, batch, p]))}
            for sample, p in zip(samples, positions)
        ]


def build_series_augmenter(transforms: Iterable[Mapping[str, Any]] | None, seed: int) -> SeriesAugmenter | None:
    """The augmenter of augment.series, or None when it lists nothing (the default: no augmentation)."""
    transforms = list(transforms or [])
    return SeriesAugmenter(transforms, seed) if transforms else None
