"""Pieces every model builder shares: the input with its in-model preprocessing, argument checks,
stride-named feature taps and the classifier top."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import keras
from keras import layers

from visionkit.outputs import MAIN_OUTPUT
from visionkit.registry import MODELS, unknown_name_message

IMAGE_TASKS = ("classification", "regression")
SEGMENTATION_TASKS = ("segmentation",)

# Pixel statistics used when the caller gives none: maps 0..255 to -1..1.
DEFAULT_PIXEL_MEAN = 127.5
DEFAULT_PIXEL_STD = 127.5


def check_input_shape(input_shape: Sequence[int], *, min_size: int, model: str) -> tuple[int, int, int]:
    """Validate an HxWxC input shape; raise ValueError quoting the received value."""
    shape = tuple(input_shape) if input_shape is not None else ()
    if len(shape) != 3 or any(not isinstance(d, int) or d <= 0 for d in shape):
        raise ValueError(f"{model}: input_shape must be (height, width, channels), received {input_shape!r}")
    if min(shape[:2]) < min_size:
        raise ValueError(f"{model}: input height and width must be at least {min_size}, received {input_shape!r}")
    return shape


def check_top(num_classes: int | None, include_top: bool, *, model: str) -> None:
    if include_top and (not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"{model}: include_top=True needs num_classes >= 1, received {num_classes!r}")


def scaled(channels: int, width: float) -> int:
    """Channel count under a width multiplier; never below one."""
    return max(1, int(round(channels * width)))


def image_input(input_shape, pixel_mean=None, pixel_std=None) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """The model input (raw pixel values 0..255) and its normalised version.

    Normalisation is the model's first layer so that an exported model takes raw pixels and
    nothing outside the model has to be copied to serve it.
    """
    channels = input_shape[-1]
    mean = _per_channel(DEFAULT_PIXEL_MEAN if pixel_mean is None else pixel_mean, channels, "pixel_mean")
    std = _per_channel(DEFAULT_PIXEL_STD if pixel_std is None else pixel_std, channels, "pixel_std")
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Normalization(mean=mean, variance=[s * s for s in std], name="normalize")(inputs)
    return inputs, x


def _per_channel(value, channels: int, what: str) -> list[float]:
    values = [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)] * channels
    if len(values) != channels:
        raise ValueError(f"{what} needs {channels} values (one per channel), received {value!r}")
    return values


def tap(x, stride: int):
    """Name a feature map by its stride so dense and detection heads can find it."""
    return layers.Identity(name=f"stride{stride}")(x)


def feature_maps(model: keras.Model) -> dict[int, keras.KerasTensor]:
    """The stride-named feature maps of a trunk, {stride: tensor}, smallest stride first."""
    found = {
        int(layer.name[len("stride") :]): layer.output
        for layer in model.layers
        if layer.name.startswith("stride") and layer.name[len("stride") :].isdigit()
    }
    return dict(sorted(found.items()))


def predictions(x, num_classes: int, activation: str | None, name: str = "predictions"):
    """The last dense layer; float32 so that mixed precision keeps a stable softmax and loss."""
    return layers.Dense(num_classes, activation=activation, dtype="float32", name=name)(x)


def pooled_classifier(x, num_classes: int, dropout: float | None, activation: str | None):
    """Global average pooling, optional dropout and the last dense layer (ResNet, DenseNet, GoogLeNet)."""
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    return predictions(x, num_classes, activation)


def register_variants(
    namespace: dict,
    family: Callable[..., keras.Model],
    variants,
    *,
    describe: Callable[[str], str],
    imagenet: dict[str, tuple[str, str]] | None = None,
    **meta,
) -> None:
    """Register a builder per variant of a family, as module-level functions named after them.

    `family(variant, *, input_shape=..., ...)` builds any variant; each builder is that function with
    the variant fixed and the same keyword-only options and defaults, so option types are checked
    against its signature and `help(vgg16)` shows them. `imagenet` maps the variants whose ImageNet
    weights keras.applications has to (its class name, the preprocessing they expect: "caffe" or
    "torch"): their `imagenet` metadata, which visionkit.models.transfer reads; other variants get None.
    """
    options = list(inspect.signature(family).parameters.values())[1:]
    for variant in variants:
        variant_meta = {**meta, "imagenet": (imagenet or {}).get(variant)}
        namespace[variant] = MODELS.register(variant, **variant_meta)(
            _variant_builder(family, variant, options, describe)
        )


def _variant_builder(family, variant: str, options, describe) -> Callable[..., keras.Model]:
    def builder(**kwargs) -> keras.Model:
        return family(variant, **kwargs)

    builder.__signature__ = inspect.Signature(options, return_annotation=keras.Model)
    builder.__name__ = builder.__qualname__ = variant
    builder.__doc__ = describe(variant)
    return builder


def auxiliary_outputs(model: keras.Model) -> list[str]:
    """Names of a model's auxiliary training outputs (empty for single-output models)."""
    names = getattr(model, "output_names", None) or []
    return [n for n in names if n != MAIN_OUTPUT] if isinstance(model.output, dict) else []


def inference_model(model: keras.Model) -> keras.Model:
    """The model without its auxiliary heads: what is evaluated, saved for serving and exported."""
    if not isinstance(model.output, dict):
        return model
    return keras.Model(model.input, model.output[MAIN_OUTPUT], name=model.name)


# What the dense (segmentation and detection) builders share: argument checks, a zoo trunk as
# encoder, the per-pixel classifier.


def check_classes(num_classes, *, model: str) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"{model}: num_classes must be an integer >= 1 (one output channel per class), received {num_classes!r}"
        )


def check_input_multiple(input_shape, multiple: int, *, model: str, why: str) -> tuple[int, int, int]:
    """Validate an HxWxC shape whose height and width must be multiples of `multiple`; the error
    names the nearest valid sizes."""
    shape = check_input_shape(input_shape, min_size=multiple, model=model)
    wrong = [
        f"{axis} {size} -> {size // multiple * multiple} or {(size // multiple + 1) * multiple}"
        for axis, size in zip(("height", "width"), shape[:2])
        if size % multiple
    ]
    if wrong:
        raise ValueError(
            f"{model}: input height and width must be multiples of {multiple} ({why}), received "
            f"{input_shape!r}; nearest valid sizes: {', '.join(wrong)}"
        )
    return shape


def zoo_trunk(name, input_shape, *, width, pixel_mean, pixel_std, model: str, option: str):
    """A classification trunk of the zoo without its top, and its stride-named maps {stride: tensor}.

    The trunk must name its maps by stride (common.tap) and keep them at exactly 1/stride of the
    input ('same' padding), so that the decoder's up-sampled maps line up with them.
    """
    trunks = [n for n in MODELS.names() if "classification" in MODELS.meta(n)["tasks"]]
    if name not in trunks:
        message = (
            f"{option} '{name}' is not a classification trunk; available: {', '.join(trunks)}"
            if name in MODELS
            else unknown_name_message(option, name, trunks)
        )
        raise ValueError(f"{model}: {message}")
    trunk = MODELS.get(name)(
        input_shape=input_shape, include_top=False, width=width, pixel_mean=pixel_mean, pixel_std=pixel_std
    )
    maps = feature_maps(trunk)
    if max(maps, default=1) == 1:
        raise ValueError(
            f"{model}: {option} {name!r} is unsuitable: it names no down-sampled (stride 2 or more) "
            f"feature maps to decode from"
        )
    input_shape = check_input_multiple(
        input_shape, max(maps), model=model, why=f"{option} {name!r} down-samples to stride {max(maps)}"
    )
    for stride, tensor in maps.items():
        expected = (input_shape[0] // stride, input_shape[1] // stride)
        if tuple(tensor.shape[1:3]) != expected:
            raise ValueError(
                f"{model}: {option} {name!r} is unsuitable: its stride-{stride} map is "
                f"{tensor.shape[1]}x{tensor.shape[2]}, not {expected[0]}x{expected[1]} (unpadded "
                f"convolutions or poolings); use a trunk with 'same' padding such as vgg16 or resnet34"
            )
    return trunk, maps


def pixel_classifier(x, num_classes: int, activation: str | None):
    """The last layer: a 1x1 convolution giving each pixel its class scores; float32 so that mixed
    precision keeps a stable softmax and loss."""
    return layers.Conv2D(num_classes, 1, activation=activation, dtype="float32", name="predictions")(x)
