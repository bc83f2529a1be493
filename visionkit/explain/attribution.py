"""Which pixels a prediction depends on: gradients (vanilla, guided, DeconvNet), Grad-CAM and occlusion.

What is explained is a score per image, the model's output weighted by `target_weights`:

- classification: the score of a class (`class_index`; default the predicted class), before the softmax;
- regression: one output (`class_index` picks it; default the first);
- segmentation: the mean score of a class over a region of pixels (`region`, a [B, H, W] mask; default
  the pixels predicted as that class, all pixels where there are none).

Images are what the model takes (raw pixels: the normalisation is inside visionkit's models). Every map
is float32, whatever the model's precision policy.

- saliency: |d score / d pixel|, the largest over the colour channels (Simonyan, Vedaldi & Zisserman 2014).
- guided_backprop: the gradient with guided ReLUs (Springenberg et al. 2015), [B, H, W, C].
- deconvnet: Zeiler & Fergus 2014's projection to pixels of one activation of a layer (its strongest,
  or a given channel's strongest): back through max-pooling switches (the pooling's gradient puts each
  value where the maximum was), rectification, and transposed filters (a convolution's gradient);
  [B, H, W, C]. Without a layer it projects the class score, as captum's Deconvolution does.
- gradcam: Selvaraju et al. 2017: the layer's channels weighted by the spatial mean of the score's
  gradient, summed, rectified, and resized to the image; [B, H, W].
- guided_gradcam: guided backpropagation times Grad-CAM, [B, H, W, C].
- occlusion: Zeiler & Fergus's grey square slid over the image; each pixel's value is the mean drop of
  the score (of the model's own output, probabilities for a softmax classifier) over the squares
  covering it; [B, H, W].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from keras import ops

from visionkit.errors import UserError
from visionkit.explain.gradients import gradient
from visionkit.explain.graph import Probe, last_spatial_layer, layer_output, resolve_layer

ClassIndex = int | Sequence[int] | None


def _numpy(value) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(value), np.float32)


def _images(images) -> np.ndarray:
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise UserError(f"images must be a batch [B, H, W, C], received shape {images.shape}")
    return images


def _per_image(class_index: ClassIndex, default: np.ndarray, count: int) -> np.ndarray:
    return default if class_index is None else np.broadcast_to(np.asarray(class_index, np.int64), (count,))


def target_weights(outputs: np.ndarray, class_index: ClassIndex = None, region=None) -> np.ndarray:
    """Weights over the outputs (same shape) whose weighted sum is each image's score (see module)."""
    outputs = np.asarray(outputs, np.float32)
    count, classes = outputs.shape[0], outputs.shape[-1]
    spatial = outputs.reshape(count, -1, classes)
    index = _per_image(class_index, spatial.mean(axis=1).argmax(axis=-1), count)
    if np.any((index < 0) | (index >= classes)):
        raise UserError(f"class_index {class_index} is outside the model's {classes} outputs")
    weights = np.zeros_like(spatial)
    if outputs.ndim == 2:
        weights[np.arange(count), 0, index] = 1.0
        return weights.reshape(outputs.shape)
    if region is None:
        region = spatial.argmax(axis=-1) == index[:, None]
        region[~region.any(axis=1)] = True  # the class is predicted nowhere: its score over the whole image
    region = np.asarray(region, np.float32).reshape(count, -1)
    weights[np.arange(count), :, index] = region / np.maximum(region.sum(axis=1, keepdims=True), 1.0)
    return weights.reshape(outputs.shape)


def _score_gradient(model, images, weights, rule: str) -> np.ndarray:
    def score(x):
        return ops.sum(Probe(rule=rule)(model, x) * weights), None

    return gradient(score, images)[0]


def _weights_for(model, images, class_index: ClassIndex, region) -> np.ndarray:
    return target_weights(_numpy(Probe()(model, images)), class_index, region)


def input_gradient(model, images, *, rule: str = "plain", class_index: ClassIndex = None, region=None) -> np.ndarray:
    """d score / d images under a ReLU rule ("plain", "guided", "deconvnet"), [B, H, W, C]."""
    images = _images(images)
    return _score_gradient(model, images, _weights_for(model, images, class_index, region), rule)


def saliency(model, images, *, class_index: ClassIndex = None, region=None) -> np.ndarray:
    return np.abs(input_gradient(model, images, class_index=class_index, region=region)).max(axis=-1)


def guided_backprop(model, images, *, class_index: ClassIndex = None, region=None) -> np.ndarray:
    return input_gradient(model, images, rule="guided", class_index=class_index, region=region)


def strongest_activation(activations: np.ndarray, channel: int | None = None) -> np.ndarray:
    """A one-hot mask over a layer's output at each image's largest activation (of `channel`, if given)."""
    count = activations.shape[0]
    flat = activations.reshape(count, -1, activations.shape[-1])
    if channel is not None and not 0 <= channel < flat.shape[-1]:
        raise UserError(f"channel {channel} is outside the layer's {flat.shape[-1]} channels")
    masked = flat if channel is None else np.where(np.arange(flat.shape[-1]) == channel, flat, -np.inf)
    mask = np.zeros_like(flat)
    mask.reshape(count, -1)[np.arange(count), masked.reshape(count, -1).argmax(axis=1)] = 1.0
    return mask.reshape(activations.shape)


def deconvnet(model, images, *, layer: str | None = None, channel: int | None = None, class_index=None) -> np.ndarray:
    """Zeiler & Fergus's projection of one activation of `layer` (or of the class score) to pixels."""
    images = _images(images)
    if layer is None:
        return input_gradient(model, images, rule="deconvnet", class_index=class_index)
    path = resolve_layer(model, layer)
    mask = strongest_activation(_numpy(layer_output(model, images, path)[1]), channel)

    def activation(x):
        return ops.sum(layer_output(model, x, path, rule="deconvnet")[1] * mask), None

    return gradient(activation, images)[0]


def _resize(maps: np.ndarray, size: tuple[int, int], interpolation: str) -> np.ndarray:
    return _numpy(ops.image.resize(maps[..., None], size, interpolation=interpolation))[..., 0]


def gradcam(
    model,
    images,
    *,
    layer: str | None = None,
    class_index: ClassIndex = None,
    region=None,
    relu: bool = True,
    resize: bool = True,
    interpolation: str = "bilinear",
) -> np.ndarray:
    """Grad-CAM at `layer` (default: the last layer with a spatial output), [B, H, W] (or the layer's size)."""
    images = _images(images)
    path = last_spatial_layer(model, images.shape[1:]) if layer is None else resolve_layer(model, layer)
    outputs, activations = layer_output(model, images, path)
    activations = _numpy(activations)
    if activations.ndim != 4:
        raise UserError(f"gradcam needs a layer with a spatial output; '{path}' gives shape {activations.shape[1:]}")
    weights = target_weights(_numpy(outputs), class_index, region)

    def score(a):
        return ops.sum(Probe(inject={path: a})(model, images) * weights), None

    grads = gradient(score, activations)[0]
    cam = (grads.mean(axis=(1, 2), keepdims=True) * activations).sum(axis=-1)
    if relu:
        cam = np.maximum(cam, 0.0)
    return _resize(cam, images.shape[1:3], interpolation) if resize else cam


def guided_gradcam(
    model, images, *, layer: str | None = None, class_index: ClassIndex = None, region=None, interpolation="bilinear"
) -> np.ndarray:
    """Guided backpropagation weighted by the (rectified, resized) Grad-CAM map, [B, H, W, C]."""
    cam = gradcam(model, images, layer=layer, class_index=class_index, region=region, interpolation=interpolation)
    return guided_backprop(model, images, class_index=class_index, region=region) * cam[..., None]


def _starts(length: int, size: int, stride: int) -> list[int]:
    starts = list(range(0, max(length - size, 0) + 1, stride))
    return starts if starts[-1] + size >= length else [*starts, length - size]  # the last square reaches the edge


def occlusion(
    model,
    images,
    *,
    size: int = 8,
    stride: int = 4,
    fill: float | None = None,
    class_index: ClassIndex = None,
    region=None,
    batch_size: int = 64,
) -> np.ndarray:
    """The drop of the score when a size x size square of `fill` (default: the images' mean) covers each pixel."""
    images = _images(images)
    height, width = images.shape[1:3]
    if not (isinstance(size, int) and isinstance(stride, int) and 0 < size <= min(height, width) and stride > 0):
        raise UserError(f"occlusion needs 0 < size <= {min(height, width)} and stride > 0, received {size}, {stride}")
    fill = float(images.mean()) if fill is None else float(fill)
    probe = Probe(logits=False)
    outputs = _numpy(probe(model, images))
    weights = target_weights(outputs, class_index, region)
    base = (outputs * weights).reshape(len(images), -1).sum(axis=1)
    squares = [(y, x) for y in _starts(height, size, stride) for x in _starts(width, size, stride)]
    maps = np.zeros(images.shape[:3], np.float32)
    for b, image in enumerate(images):
        drops, counts = np.zeros((height, width), np.float32), np.zeros((height, width), np.float32)
        for start in range(0, len(squares), batch_size):
            chunk = squares[start : start + batch_size]
            occluded = np.repeat(image[None], len(chunk), axis=0)
            for i, (y, x) in enumerate(chunk):
                occluded[i, y : y + size, x : x + size] = fill
            scores = (_numpy(probe(model, occluded)) * weights[b : b + 1]).reshape(len(chunk), -1).sum(axis=1)
            for (y, x), score in zip(chunk, scores):
                drops[y : y + size, x : x + size] += base[b] - score
                counts[y : y + size, x : x + size] += 1
        maps[b] = drops / np.maximum(counts, 1)
    return maps
