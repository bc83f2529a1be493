"""Each method of visionkit.explain as one picture (uint8 RGB): what mode=explain and mode=train save."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from visionkit.errors import UserError
from visionkit.explain import attribution, checks, features
from visionkit.explain.graph import last_spatial_layer, resolve_layer
from visionkit.explain.pictures import (
    activation_grid,
    filter_grid,
    gradient_picture,
    grid,
    image_tile,
    overlay,
    unit_range,
)

METHODS = (
    "filters",
    "activations",
    "top_patches",
    "deconvnet",
    "saliency",
    "guided_backprop",
    "gradcam",
    "guided_gradcam",
    "occlusion",
)
MAX_CHANNELS = 16  # top_patches' rows


@dataclass
class Options:
    """What a picture explains: the layer (name or path; None for the method's default), the class or output,
    DeconvNet's channel, top_patches' patches per channel and occlusion's square."""

    layer: str | None = None
    class_index: int | None = None
    channel: int | None = None
    top_k: int = 9
    occlusion_size: int = 8
    occlusion_stride: int = 4


def _zoom(images: np.ndarray) -> int:
    """Small inputs drawn bigger: about 128 pixels a tile."""
    return max(1, 128 // max(images.shape[1:3]))


def _layer(model: keras.Model, images: np.ndarray, layer: str | None) -> str:
    return last_spatial_layer(model, images.shape[1:]) if layer is None else resolve_layer(model, layer)


def _pairs(images: np.ndarray, pictures) -> np.ndarray:
    """One row per image: the image, then its picture."""
    tiles = [tile for image, picture in zip(images, pictures) for tile in (image_tile(image), picture)]
    return grid(tiles, columns=2, gap=2, scale=_zoom(images))


def render(model: keras.Model, images, method: str, options: Options | None = None, dataset=None) -> np.ndarray:
    """The picture of `method` for `images` (raw pixels, [B, H, W, C]); top_patches searches `dataset`
    (default: the images)."""
    if method not in METHODS:
        raise UserError(f"unknown explain method '{method}'; available: {', '.join(METHODS)}")
    options = options or Options()
    images = np.asarray(images, np.float32)
    if method == "filters":
        return filter_grid(features.conv_kernel(model, options.layer)[1])
    layer = _layer(model, images, options.layer)
    if method == "activations":
        maps = features.activations(model, images, layer)
        return grid([activation_grid(m, scale=1) for m in maps], columns=1, gap=4, scale=2)
    if method == "top_patches":
        found = features.top_patches(model, images if dataset is None else dataset, layer, k=options.top_k)
        tiles = [image_tile(patch) for row in found.patches[:MAX_CHANNELS] for patch in row]
        return grid(tiles, columns=found.patches.shape[1], gap=2, scale=max(1, 48 // found.receptive_field))
    return _pairs(images, _maps(model, images, method, layer, options))


def _maps(model, images, method: str, layer: str, options: Options) -> list[np.ndarray]:
    target = {"class_index": options.class_index}
    if method == "deconvnet":
        return [gradient_picture(g) for g in attribution.deconvnet(model, images, layer=layer, channel=options.channel)]
    if method == "saliency":
        return [unit_range(m) for m in attribution.saliency(model, images, **target)]
    if method == "guided_backprop":
        return [gradient_picture(g) for g in attribution.guided_backprop(model, images, **target)]
    if method == "guided_gradcam":
        return [gradient_picture(g) for g in attribution.guided_gradcam(model, images, layer=layer, **target)]
    if method == "gradcam":
        heat = attribution.gradcam(model, images, layer=layer, **target)
    else:
        heat = attribution.occlusion(
            model, images, size=options.occlusion_size, stride=options.occlusion_stride, **target
        )
    return [overlay(image, h) / 255.0 for image, h in zip(images, heat)]


RANDOMISABLE = ("saliency", "gradcam")  # the maps whose randomisation check mode=explain reports


def randomisation_spearman(model: keras.Model, images, method: str, options: Options | None = None, top=1) -> float:
    """checks.randomisation_check of saliency or Grad-CAM maps, with the top `top` weighted layers re-initialised."""
    options = options or Options()
    images = np.asarray(images, np.float32)
    if method == "saliency":
        return checks.randomisation_check(
            model, images, lambda m, x: attribution.saliency(m, x, class_index=options.class_index), top=top
        )
    layer = _layer(model, images, options.layer)
    return checks.randomisation_check(
        model, images, lambda m, x: attribution.gradcam(m, x, layer=layer, class_index=options.class_index), top=top
    )
