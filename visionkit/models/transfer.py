"""Moving weights between models whose layers share names (keras.applications -> visionkit)."""

from __future__ import annotations

from pathlib import Path

import keras

import visionkit.layers  # noqa: F401  (registers the custom layers a .keras file may use)
from visionkit.errors import UserError
from visionkit.registry import MODELS, unknown_name_message


def copy_weights(source: keras.Model, target: keras.Model, *, skip: tuple[str, ...] = ()) -> list[str]:
    """Copy every weighted layer of `source` into the same-named layer of `target`, one to one.

    Returns the names of the copied layers. A layer missing from `target`, or with weights of other
    shapes, is an error naming the layer: a partial transfer would silently give wrong outputs.
    """
    copied = []
    for layer in source.layers:
        if not layer.weights or layer.name in skip:
            continue
        try:
            destination = target.get_layer(layer.name)
        except ValueError:
            raise ValueError(f"layer '{layer.name}' of {source.name} has no counterpart in {target.name}") from None
        theirs, ours = layer.get_weights(), destination.get_weights()
        shapes_theirs, shapes_ours = [w.shape for w in theirs], [w.shape for w in ours]
        if shapes_theirs != shapes_ours:
            raise ValueError(
                f"layer '{layer.name}': weight shapes {shapes_theirs} in {source.name} "
                f"but {shapes_ours} in {target.name}"
            )
        destination.set_weights(theirs)
        copied.append(layer.name)
    return copied


# The preprocessing that ImageNet weights expect, per the mode of a model's `imagenet` metadata
# (registered with the model): "caffe" = BGR channel order minus the ImageNet mean, "torch" = RGB
# scaled to 0..1 and standardised per channel.
CAFFE_MEAN_RGB = [123.68, 116.779, 103.939]
TORCH_MEAN_RGB = [0.485 * 255, 0.456 * 255, 0.406 * 255]
TORCH_STD_RGB = [0.229 * 255, 0.224 * 255, 0.225 * 255]


def imagenet_pixel_stats(name: str) -> tuple[list[float], list[float]]:
    """The in-model normalisation (mean, std, RGB order) that ImageNet weights of `name` expect."""
    _, mode = imagenet_source(name)
    return (CAFFE_MEAN_RGB, [1.0] * 3) if mode == "caffe" else (TORCH_MEAN_RGB, TORCH_STD_RGB)


def imagenet_models() -> list[str]:
    """The zoo models whose ImageNet weights keras.applications has (their `imagenet` metadata)."""
    return [name for name in MODELS.names() if MODELS.meta(name).get("imagenet")]


def imagenet_source(name: str) -> tuple[str, str]:
    """(keras.applications class, preprocessing mode) of the ImageNet weights of model `name`."""
    source = MODELS.meta(name).get("imagenet")
    if source is None:
        raise UserError(
            f"model.weights=imagenet is available for {', '.join(imagenet_models())}, not '{name}'; "
            f"use model.weights=<path> to start from a local weights file"
        )
    return source


def load_imagenet_weights(model: keras.Model, name: str, *, weights: str | None = "imagenet") -> list[str]:
    """Copy keras.applications' ImageNet weights of `name` into `model` (downloads on first use).

    The classifier is copied only when it has the same shape (1000 classes at 224x224). Caffe-mode
    weights were trained on BGR input: the first convolution's input channels are reversed so the
    model keeps taking RGB. `weights=None` builds the source without weights (for tests).
    """
    application, mode = imagenet_source(name)
    height, width, channels = model.input_shape[1:]
    if channels != 3:
        raise UserError(f"model.weights=imagenet needs 3-channel images, the data has {channels}")
    constructor = getattr(keras.applications, application)
    full = (height, width) == (224, 224) and model.output_shape[-1] == 1000
    try:
        source = constructor(weights=weights, include_top=full, input_shape=(height, width, 3))
    except Exception as error:  # network, certificate and cache errors all mean the same to the user
        raise UserError(
            f"could not get ImageNet weights for {name} from keras.applications ({error}); "
            f"download them once with network access or pass model.weights=<path>"
        ) from None
    copied = copy_weights(source, model)
    if mode == "caffe":
        first_conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
        kernel, *rest = first_conv.get_weights()
        first_conv.set_weights([kernel[:, :, ::-1, :], *rest])
    return copied


def load_weights_file(model: keras.Model, path: str | Path) -> list[str]:
    """Initial weights from a local file: a `.keras` model (layers matched by name and shape, so a
    trained trunk moves to a new head) or a `.weights.h5` file of the same architecture."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"model.weights: no such file: {path}")
    if path.name.endswith(".weights.h5"):
        try:
            model.load_weights(path)
        except ValueError as error:
            raise UserError(f"model.weights: {path} does not fit this model: {error}") from None
        return [layer.name for layer in model.layers if layer.weights]
    if path.suffix != ".keras":
        raise UserError(f"model.weights: expected a .keras or .weights.h5 file, received {path}")
    source = keras.saving.load_model(path, safe_mode=True, compile=False)  # uncompiled: no loss to find
    fitting = [layer.name for layer in source.layers if layer.weights and _same_shapes(layer, model)]
    if not fitting:
        raise UserError(f"model.weights: no layer of {path} matches this model by name and shape")
    return copy_weights(source, model, skip=tuple(layer.name for layer in source.layers if layer.name not in fitting))


def _same_shapes(layer, model: keras.Model) -> bool:
    try:
        other = model.get_layer(layer.name)
    except ValueError:
        return False
    return [w.shape for w in layer.weights] == [w.shape for w in other.weights]


def freeze(model: keras.Model, until: int | str) -> int:
    """Freeze the first `until` layers, or the layers up to and including the one named `until`,
    for fine-tuning; returns how many layers were frozen. Frozen batch normalisation layers run
    in inference mode, as fine-tuning needs."""
    names = [layer.name for layer in model.layers]
    if isinstance(until, str):
        if until not in names:
            raise UserError(unknown_name_message(f"layer of {model.name} for model.freeze", until, names))
        count = names.index(until) + 1
    elif isinstance(until, int) and not isinstance(until, bool) and 0 <= until <= len(names):
        count = until
    else:
        raise UserError(f"model.freeze must be a layer name or a layer count 0..{len(names)}, received {until!r}")
    for layer in model.layers[:count]:
        layer.trainable = False
    return count
