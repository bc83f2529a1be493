"""Does a map explain the model? Two checks with a figure each.

- Randomisation (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018): re-initialise the
  weights of the top layers and compare the maps before and after by Spearman rank correlation of
  their absolute values. A map that depends on what the model learned changes (low correlation); one
  that stays (near 1) shows the image's edges, not the model.
- The pointing game (Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016): a hit
  when a map's maximum falls inside the object's box; the rate over images, beside the rate of a
  map that always points at the image centre.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
from scipy.stats import spearmanr

from visionkit.errors import UserError
from visionkit.explain.graph import is_container, layer_paths


def weighted_layers(model: keras.Model) -> list[str]:
    """Paths of the layers holding weights of their own (not nested models), input to output."""
    return [path for path, layer in layer_paths(model).items() if layer.trainable_weights and not is_container(layer)]


def randomise(model: keras.Model, paths: list[str], seed: int = 0) -> None:
    """Replace the trainable weights of these layers by Gaussian noise of each weight's own spread (zero
    for a constant weight, such as a bias at zero, is kept at its mean)."""
    rng = np.random.default_rng(seed)
    layers = layer_paths(model)
    for path in paths:
        for weight in layers[path].trainable_weights:
            value = np.asarray(keras.ops.convert_to_numpy(weight), np.float32)
            spread = value.std() or 1e-2
            weight.assign(rng.normal(0.0, spread, value.shape).astype(value.dtype))


def rank_correlation(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per image, Spearman's rank correlation of |before| and |after| (maps with the batch first); 0 where a
    map is constant (a Grad-CAM map rectified to all zeros has lost every ranking it had)."""
    count = len(before)
    pairs = zip(np.abs(before).reshape(count, -1), np.abs(after).reshape(count, -1))
    return np.array([spearmanr(a, b).statistic if np.ptp(a) and np.ptp(b) else 0.0 for a, b in pairs], np.float32)


def randomisation_check(
    model: keras.Model, images, explain: Callable[[keras.Model, np.ndarray], np.ndarray], *, top: int = 2, seed=0
) -> float:
    """Mean Spearman correlation of `explain(model, images)` before and after the top `top` weighted layers
    are randomised. The model's weights are put back afterwards."""
    paths = weighted_layers(model)[-top:]
    if not paths or top < 1:
        raise UserError(f"randomisation_check needs top >= 1 and a model with weights, received top={top}")
    saved = [keras.ops.convert_to_numpy(weight) for weight in model.weights]
    before = explain(model, images)
    try:
        randomise(model, paths, seed)
        after = explain(model, images)
    finally:
        for weight, value in zip(model.weights, saved):
            weight.assign(value)
    return float(rank_correlation(before, after).mean())


def map_maxima(maps: np.ndarray) -> np.ndarray:
    """(y, x) of each map's maximum, [B, 2]."""
    count, _, width = maps.shape
    flat = maps.reshape(count, -1).argmax(axis=1)
    return np.stack([flat // width, flat % width], axis=1)


def pointing_hits(points: np.ndarray, boxes: np.ndarray, tolerance: float = 0.0) -> np.ndarray:
    """Whether each (y, x) pixel lies in its box (x0, y0, x1, y1 pixel corners), within `tolerance` pixels."""
    y, x = points[:, 0] + 0.5, points[:, 1] + 0.5  # the pixel's centre
    x0, y0, x1, y1 = np.asarray(boxes, np.float32).T
    return (x >= x0 - tolerance) & (x <= x1 + tolerance) & (y >= y0 - tolerance) & (y <= y1 + tolerance)


def pointing_game(maps: np.ndarray, boxes: np.ndarray, tolerance: float = 0.0) -> dict[str, float]:
    """Hit rate of the maps' maxima and of the image centre, over images with one box each."""
    maps = np.asarray(maps)
    centre = np.tile([[(maps.shape[1] - 1) // 2, (maps.shape[2] - 1) // 2]], (len(maps), 1))
    return {
        "pointing_game": float(pointing_hits(map_maxima(maps), boxes, tolerance).mean()),
        "pointing_game_centre": float(pointing_hits(centre, boxes, tolerance).mean()),
    }
