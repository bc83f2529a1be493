"""Maps and filters as pictures: uint8 RGB numpy arrays (grids of tiles, heat-map overlays) and PNG files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

GREY = 0.5  # the value of a zero weight or gradient in a signed picture


def unit_range(values: np.ndarray, *, signed: bool = False) -> np.ndarray:
    """To 0..1: min-max, or for signed values (filters, gradients) 0.5 + x / (2 max|x|), so zero stays grey."""
    values = np.asarray(values, np.float32)
    if signed:
        scale = np.abs(values).max()
        return GREY + values / (2 * scale) if scale > 0 else np.full_like(values, GREY)
    low, high = values.min(), values.max()
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def to_rgb(picture: np.ndarray) -> np.ndarray:
    """[H, W], [H, W, 1] or [H, W, 3] in 0..1 -> uint8 [H, W, 3]."""
    picture = np.asarray(picture, np.float32)
    if picture.ndim == 2:
        picture = picture[..., None]
    if picture.shape[-1] == 1:
        picture = np.repeat(picture, 3, axis=-1)
    return np.round(np.clip(picture, 0, 1) * 255).astype(np.uint8)


def grid(tiles, columns: int | None = None, gap: int = 1, scale: int = 1) -> np.ndarray:
    """Tiles (each in 0..1, any of to_rgb's shapes, all the same size) side by side on white, uint8 RGB."""
    tiles = [to_rgb(tile) for tile in tiles]
    if scale > 1:
        tiles = [tile.repeat(scale, axis=0).repeat(scale, axis=1) for tile in tiles]
    columns = columns or math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    height, width = tiles[0].shape[:2]
    canvas = np.full((rows * (height + gap) - gap, columns * (width + gap) - gap, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        top, left = (i // columns) * (height + gap), (i % columns) * (width + gap)
        canvas[top : top + height, left : left + width] = tile
    return canvas


def filter_grid(
    kernel: np.ndarray, *, max_filters: int = 64, max_channels: int = 16, scale: int | None = None
) -> np.ndarray:
    """A convolution's filters [kh, kw, C_in, C_out]: with 1 or 3 input channels one (grey or colour)
    tile per filter, each scaled on its own; deeper layers one row per filter, one tile per input channel.
    Tiles are drawn `scale` times bigger, by default about 24 pixels across."""
    kernel = np.asarray(kernel, np.float32)[..., :max_filters]
    scale = scale or max(1, 24 // max(kernel.shape[:2]))
    filters = np.moveaxis(kernel, -1, 0)  # [C_out, kh, kw, C_in]
    if kernel.shape[2] in (1, 3):
        return grid([unit_range(f, signed=True) for f in filters], scale=scale)
    channels = min(kernel.shape[2], max_channels)
    tiles = [unit_range(f[..., c], signed=True) for f in filters for c in range(channels)]
    return grid(tiles, columns=channels, scale=scale)


def activation_grid(maps: np.ndarray, *, max_channels: int = 64, scale: int = 2) -> np.ndarray:
    """One image's activation maps [h, w, C], one tile per channel, each scaled on its own."""
    maps = np.asarray(maps, np.float32)
    return grid([unit_range(maps[..., c]) for c in range(min(maps.shape[-1], max_channels))], scale=scale)


def image_tile(image: np.ndarray) -> np.ndarray:
    """A model input (raw pixels 0..255) as a 0..1 tile."""
    return np.clip(np.asarray(image, np.float32) / 255.0, 0, 1)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """A heat map [H, W] (any range; scaled to 0..1) in the jet colour map over an image (raw pixels)."""
    from matplotlib import colormaps

    colours = colormaps["jet"](unit_range(heat))[..., :3]
    return to_rgb((1 - alpha) * to_rgb(image_tile(image)) / 255.0 + alpha * colours)


def gradient_picture(gradients: np.ndarray) -> np.ndarray:
    """A gradient image [H, W, C] (guided backpropagation, DeconvNet) as 0..1, zero grey."""
    return unit_range(gradients, signed=True)


def save_png(picture: np.ndarray, path: Path) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_rgb(picture) if picture.dtype != np.uint8 else picture).save(path)
    return path
