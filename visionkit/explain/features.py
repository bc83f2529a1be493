"""What the layers hold and respond to: filters, activation maps, and the dataset patches that excite
each filter most (Zeiler & Fergus 2014, Fig. 2), cut to the layer's receptive field."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from visionkit.analysis import layer_table
from visionkit.errors import UserError
from visionkit.explain.graph import conv_paths, layer_output, layer_paths, resolve_layer


def conv_kernel(model: keras.Model, layer: str | None = None) -> tuple[str, np.ndarray]:
    """(path, kernel [kh, kw, C_in, C_out]) of a 2-D convolution; default the first."""
    convolutions = conv_paths(model)
    if not convolutions:
        raise UserError(f"model '{model.name}' has no Conv2D layer whose filters could be shown")
    path = convolutions[0] if layer is None else resolve_layer(model, layer)
    found = layer_paths(model)[path]
    if not isinstance(found, keras.layers.Conv2D):
        raise UserError(f"layer '{path}' is a {type(found).__name__}, not a Conv2D: it has no filters to show")
    return path, np.asarray(ops.convert_to_numpy(found.kernel), np.float32)


def activations(model: keras.Model, images, layer: str, batch_size: int = 32) -> np.ndarray:
    """The output of `layer` for `images`, float32, batch first."""
    path = resolve_layer(model, layer)
    images = np.asarray(images, np.float32)
    parts = [
        ops.convert_to_numpy(layer_output(model, images[i : i + batch_size], path)[1])
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(parts).astype(np.float32)


@dataclass
class TopPatches:
    """Per channel (row) the top-k activations: value, image index, the cut patch and its box in the image."""

    layer: str
    receptive_field: int
    values: np.ndarray  # [channels, k]
    image_indices: np.ndarray  # [channels, k]
    boxes: np.ndarray  # [channels, k, 4] y0, x0, y1, x1 of the receptive field, clipped to the image
    patches: np.ndarray  # [channels, k, r, r, C], zero outside the image


def receptive_field(model: keras.Model, path: str, image_shape) -> tuple[int, int]:
    """(r, jump) of a layer's outputs from the layer table, the largest over the axes, at most the image size."""
    if isinstance(model, keras.Sequential) and not model.built:
        model.build((None, *image_shape))
    rows = {row["name"]: row for row in layer_table(model)}
    if path not in rows:
        raise UserError(f"layer '{path}' has no row in the layer table of model '{model.name}'")
    field, jump = (np.max(np.atleast_1d(rows[path][key])) for key in ("receptive_field", "jump"))
    return int(min(np.ceil(field), max(image_shape[:2]))), float(jump)


def _field_starts(index: np.ndarray, count: int, field: int, jump: float, size: int) -> np.ndarray:
    """Top-left pixel of the receptive field of output `index` along an axis of `count` outputs: the fields
    of all outputs span (count-1)*jump + field pixels, centred on the image (symmetric padding)."""
    excess = (count - 1) * jump + field - size
    return np.round(index * jump - excess / 2).astype(int)


def top_patches(model: keras.Model, images, layer: str, *, k: int = 9, batch_size: int = 32) -> TopPatches:
    """For each channel of `layer`, the k images whose strongest response is highest, and where it is."""
    images = np.asarray(images)
    path = resolve_layer(model, layer)
    maps = activations(model, images, path, batch_size)
    if maps.ndim != 4:
        raise UserError(f"top_patches needs a layer with a spatial output; '{path}' gives shape {maps.shape[1:]}")
    field, jump = receptive_field(model, path, images.shape[1:])
    count, rows, columns, channels = maps.shape
    flat = maps.reshape(count, rows * columns, channels)
    best_position, best_value = flat.argmax(axis=1), flat.max(axis=1)  # [images, channels]
    k = min(k, count)
    order = np.argsort(-best_value, axis=0, kind="stable")[:k].T  # [channels, k]
    values = np.take_along_axis(best_value.T, order, axis=1)
    positions = np.take_along_axis(best_position.T, order, axis=1)
    y0 = _field_starts(positions // columns, rows, field, jump, images.shape[1])
    x0 = _field_starts(positions % columns, columns, field, jump, images.shape[2])
    patches = np.zeros((channels, k, field, field, images.shape[-1]), images.dtype)
    boxes = np.zeros((channels, k, 4), int)
    for c, i in np.ndindex(channels, k):
        top, left = y0[c, i], x0[c, i]
        box = (max(top, 0), max(left, 0), min(top + field, images.shape[1]), min(left + field, images.shape[2]))
        boxes[c, i] = box
        patches[c, i, box[0] - top : box[2] - top, box[1] - left : box[3] - left] = images[
            order[c, i], box[0] : box[2], box[1] : box[3]
        ]
    return TopPatches(path, field, values, order, boxes, patches)
