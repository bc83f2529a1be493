"""Running a model's own layers with probes attached: read (or replace) any layer's output, change the
ReLUs' backward rule, bypass the final softmax, and compute in float32.

A model is executed by walking its graph, calling the original layers one by one, and descending into
the functional and Sequential models it holds. Nothing is rebuilt and no `keras.Model(model.input,
inner_layer.output)` is made, which is what fails for nested models (a zoo trunk inside U-Net: "Graph
disconnected") and for a Sequential model that was never called (it has no `.input`).

Layers are addressed by path: the names of the enclosing models below the top one, then the layer's
name (`encoder/stride16`); a name alone is enough when only one layer has it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
from keras import ops

from visionkit.errors import UserError
from visionkit.explain.gradients import rule_relu
from visionkit.outputs import MAIN_OUTPUT


def is_container(layer) -> bool:
    """A model whose layers are walked: Sequential or functional (a subclassed model is one opaque layer)."""
    return isinstance(layer, keras.Sequential) or (isinstance(layer, keras.Model) and hasattr(layer, "_nodes_by_depth"))


def _children(model) -> list:
    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def layer_paths(model: keras.Model, prefix: str = "") -> dict[str, keras.layers.Layer]:
    """Every layer of the model by path, nested models included (and their own layers after them), in order."""
    paths = {}
    for layer in _children(model):
        paths[prefix + layer.name] = layer
        if is_container(layer):
            paths.update(layer_paths(layer, f"{prefix}{layer.name}/"))
    return paths


def resolve_layer(model: keras.Model, name: str) -> str:
    """The path of the layer called `name`: a full path, or a name that only one layer has."""
    paths = layer_paths(model)
    if name in paths:
        return name
    matches = [path for path in paths if path.rsplit("/", 1)[-1] == name]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UserError(f"layer '{name}' is ambiguous in model '{model.name}'; give its path: {', '.join(matches)}")
    by_name = {path.rsplit("/", 1)[-1]: path for path in paths}
    close = difflib.get_close_matches(name, [*paths, *by_name], n=1, cutoff=0.7)
    hint = f" (did you mean '{by_name.get(close[0], close[0])}'?)" if close else ""
    raise UserError(f"unknown layer '{name}' in model '{model.name}'{hint}; available: {', '.join(paths)}")


def _activation_name(layer) -> str:
    return getattr(getattr(layer, "activation", None), "__name__", "")


def _is_standalone_relu(layer) -> bool:
    plain = isinstance(layer, keras.layers.ReLU) and not layer.max_value and not layer.negative_slope
    return plain and not layer.threshold


def _is_softmax(layer) -> bool:
    return isinstance(layer, keras.layers.Softmax) or (
        isinstance(layer, keras.layers.Activation) and _activation_name(layer) == "softmax"
    )


@contextmanager
def _swapped(layer, **attributes) -> Iterator[None]:
    """Set attributes of a layer for one call and put the originals back."""
    saved = {name: getattr(layer, name) for name in attributes}
    for name, value in attributes.items():
        setattr(layer, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(layer, name, value)


def _float32(value):
    if hasattr(value, "dtype") and "float" in str(value.dtype) and str(value.dtype) != "float32":
        return ops.cast(value, "float32")
    return value


@dataclass
class Probe:
    """One execution of a model: which layer outputs to keep, which to replace, and how ReLUs differentiate.

    rule: "plain", "guided" or "deconvnet" (visionkit.explain.gradients). logits: the softmax of a
    layer producing a model output is left out, so that gradients of a class score are not squashed by
    it (Selvaraju et al. 2017 take the score before the softmax). capture: paths whose first output is
    kept in `captured`; inject: {path: value} replaces that layer's output (gradients with respect to it).
    """

    rule: str = "plain"
    logits: bool = True
    capture: tuple[str, ...] = ()
    inject: dict[str, Any] = field(default_factory=dict)
    record_all: bool = False
    captured: dict[str, Any] = field(default_factory=dict)

    def __call__(self, model: keras.Model, images):
        """The model's main output for `images`, every float value in float32."""
        outputs = self._run_model(model, _float32(ops.convert_to_tensor(images)), prefix="", at_output=True)
        return main_output(outputs)

    def _run_model(self, model, inputs, prefix: str, at_output: bool):
        if isinstance(model, keras.Sequential):
            x = inputs
            layers = _children(model)
            for i, layer in enumerate(layers):
                x = self._run_layer(layer, prefix, at_output and i == len(layers) - 1, x)
            return x
        final = {id(t._keras_history.operation) for t in model.outputs} if at_output else set()
        return model._run_through_graph(
            model._standardize_inputs(inputs),
            operation_fn=lambda op: (
                lambda *args, **kwargs: self._run_layer(op, prefix, id(op) in final, *args, **kwargs)
            ),
        )

    def _run_layer(self, layer, prefix: str, at_output: bool, *args, **kwargs):
        path = prefix + layer.name
        args, kwargs = keras.tree.map_structure(_float32, (args, kwargs))
        if is_container(layer):
            out = self._run_model(layer, args[0], f"{path}/", at_output)
        else:
            out = self._call_leaf(layer, at_output, *args, **kwargs)
        return self._observe(path, keras.tree.map_structure(_float32, out))

    def _call_leaf(self, layer, at_output: bool, *args, **kwargs):
        if getattr(layer, "_call_has_training_arg", False):
            kwargs["training"] = False
        if self.logits and at_output and _is_softmax(layer):
            return args[0]
        relu = rule_relu(self.rule)
        if self.rule != "plain" and _is_standalone_relu(layer):
            return relu(args[0])
        swap = {"dtype_policy": keras.DTypePolicy("float32")} if layer.dtype_policy.name != "float32" else {}
        activation = _activation_name(layer)
        split_relu = self.rule != "plain" and activation == "relu"
        if split_relu or (self.logits and at_output and activation == "softmax"):
            swap["activation"] = keras.activations.linear
        with _swapped(layer, **swap):
            out = layer(*args, **kwargs)
        return relu(out) if split_relu else out

    def _observe(self, path: str, out):
        if path in self.inject:
            out = self.inject[path]
        if (self.record_all or path in self.capture) and path not in self.captured:
            self.captured[path] = out
        return out


def main_output(outputs):
    """The prediction a map explains: the main output of a model with several."""
    if isinstance(outputs, dict):
        return outputs[MAIN_OUTPUT] if MAIN_OUTPUT in outputs else next(iter(outputs.values()))
    if isinstance(outputs, (list, tuple)):
        return outputs[0]
    return outputs


def layer_output(model: keras.Model, images, path: str, **probe_options):
    """(main output, the output of the layer at `path`) for `images`."""
    probe = Probe(capture=(path,), **probe_options)
    outputs = probe(model, images)
    if path not in probe.captured:
        raise UserError(f"layer '{path}' of model '{model.name}' is not on the path from the input to the output")
    return outputs, probe.captured[path]


def output_shapes(model: keras.Model, image_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """The output shape (without the batch axis) of every layer that runs, by path, in execution order."""
    probe = Probe(record_all=True)
    probe(model, np.zeros((1, *image_shape), "float32"))
    return {path: tuple(value.shape[1:]) for path, value in probe.captured.items() if hasattr(value, "shape")}


def last_spatial_layer(model: keras.Model, image_shape: tuple[int, ...]) -> str:
    """Grad-CAM's default layer: the last one whose output is still a map (height and width above 1), a layer
    inside a nested model rather than the nested model itself."""
    containers = {path for path, layer in layer_paths(model).items() if is_container(layer)}
    maps = [
        path
        for path, shape in output_shapes(model, image_shape).items()
        if len(shape) == 3 and min(shape[:2]) > 1 and path not in containers
    ]
    if not maps:
        raise UserError(f"model '{model.name}' has no layer with a spatial output to explain")
    return maps[-1]


def conv_paths(model: keras.Model) -> list[str]:
    """The 2-D convolutions of a model by path, first to last."""
    return [path for path, layer in layer_paths(model).items() if isinstance(layer, keras.layers.Conv2D)]
