"""The layer table of a model: per layer its geometry, output shape, parameters, multiply-accumulates
and receptive field, read from the symbolic graph (nothing is run on data).

Conventions, stated once:

- Parameters are Keras's own count (`layer.count_params()`); a layer called twice is counted once.
  Batch normalisation has 4·C of them, 2·C trainable (gamma, beta; the moving statistics are not).
- MACs are the multiply-accumulates of one image's forward pass; FLOPs ≈ 2 × MACs.
  Convolution K·K·(C_in/groups)·C_out·H_out·W_out; depthwise K·K·C_in·multiplier·H_out·W_out;
  separable = depthwise + pointwise (C_in·multiplier·C_out·H_out·W_out); transposed convolution
  K·K·C_in·C_out·H_in·W_in (every input pixel scatters a K·K·C_out patch); dense in·out times any
  leading dimensions. Bias additions are not counted. Batch normalisation counts 0 (it folds into
  the preceding convolution at inference); pooling (comparisons or sums), activations, the input's
  normalisation, merges and every other element-wise or unknown layer count 0.
- Receptive field r (input pixels one output sees) and jump j (input pixels between neighbouring
  outputs), per spatial axis, after Araujo, Norris & Sim, "Computing Receptive Fields of
  Convolutional Neural Networks", Distill 2019. Input: r=1, j=1. A convolution or pooling with
  kernel k, stride s, dilation d: r += (d·(k-1)+1 - 1)·j and j *= s. Transposed convolution:
  j /= s, then r += (d·(k-1)+1 - 1)·j. Upsampling: j /= s; r += j_in for interpolating modes
  (two neighbours), unchanged for nearest. Global pooling is a pooling window over the whole
  feature map, r += (n-1)·j (so r covers at least the whole input; j is kept). Layers with several
  inputs (Add, Concatenate, Multiply ...) take the largest r and j of their inputs (the jumps agree
  whenever the shapes do). Every other layer (batch norm, activations, dropout, padding, Flatten,
  Dense ...) keeps r and j. `receptive_field` and `jump` are a number when equal along every
  axis, else a tuple per axis.
  SegNet's pooling with indices counts as max pooling, its unpooling as nearest up-sampling
  (each output comes from one input).
- Functional and Sequential models used as layers are expanded: their layers appear as
  "outer/inner" rows. Other (subclassed) models and unknown layers are one opaque row with their
  parameter count, 0 MACs and r, j unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from fractions import Fraction
from typing import Any

import keras
from keras import layers

from visionkit.layers.pooling_indices import MaxPoolingWithArgmax2D, MaxUnpooling2D

CONVOLUTIONS = (layers.Conv1D, layers.Conv2D, layers.Conv3D)
DEPTHWISE = (layers.DepthwiseConv1D, layers.DepthwiseConv2D)
SEPARABLE = (layers.SeparableConv1D, layers.SeparableConv2D)
TRANSPOSED = (layers.Conv1DTranspose, layers.Conv2DTranspose, layers.Conv3DTranspose)
POOLING = (
    layers.MaxPooling1D,
    layers.MaxPooling2D,
    layers.MaxPooling3D,
    MaxPoolingWithArgmax2D,
    layers.AveragePooling1D,
    layers.AveragePooling2D,
    layers.AveragePooling3D,
)
GLOBAL_POOLING = (
    layers.GlobalMaxPooling1D,
    layers.GlobalMaxPooling2D,
    layers.GlobalMaxPooling3D,
    layers.GlobalAveragePooling1D,
    layers.GlobalAveragePooling2D,
    layers.GlobalAveragePooling3D,
)
UPSAMPLING = (layers.UpSampling1D, layers.UpSampling2D, layers.UpSampling3D, MaxUnpooling2D)  # unpooling: nearest
ZERO_PADDING = (layers.ZeroPadding1D, layers.ZeroPadding2D, layers.ZeroPadding3D)

# A receptive field: (r, j) per spatial axis.
Field = tuple[tuple[Fraction, Fraction], ...]

COLUMNS = (
    "name",
    "kind",
    "kernel",
    "stride",
    "padding",
    "dilation",
    "output_shape",
    "params",
    "macs",
    "receptive_field",
    "jump",
)
HEADINGS = ("Layer", "Type", "Kernel", "Stride", "Pad", "Dil", "Output shape", "Params", "MACs", "RF", "Jump")
CONVENTIONS = (
    "MACs: multiply-accumulates per image of convolutions and dense layers (FLOPs ≈ 2 × MACs);\n"
    "batch norm (folded into the convolution at inference), pooling, activations and merges count 0.\n"
    "RF: receptive field in input pixels; Jump: input pixels between neighbouring outputs."
)


def layer_table(model: keras.Model) -> list[dict[str, Any]]:
    """One dict per layer (per call of a layer) of a functional or sequential model, in graph order.

    Keys: name, kind (class name), inputs (names of the layers feeding it), kernel, stride, padding,
    dilation (None where not applicable), output_shape (without the batch axis), params,
    trainable_params, macs (None where a size is unknown), receptive_field, jump, category
    ("input", "conv", "pool", "dense" or "other").
    """
    graph = _graph_of(model)
    if graph is None:
        raise ValueError(
            f"layer_table needs a functional or sequential model, received {type(model).__name__} "
            f"'{model.name}' (a subclassed model has no graph to walk)"
        )
    fields = [_input_field(tensor) for tensor in graph.inputs]
    rows, _ = _walk(graph, fields, prefix="", counted=set())
    return rows


def totals(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Parameters, MACs and FLOPs of the whole table, and the receptive field of its last convolution.

    "Last" is the convolution with the largest receptive field (the latest such in graph order): on a
    single path that is the last convolution; where branches meet (Inception, DenseNet) it is the
    widest branch feeding the output, whichever branch the builder happened to write last.
    """
    macs = [row["macs"] for row in rows]
    known = None if any(m is None for m in macs) else sum(macs)
    convolutions = [row for row in rows if row["category"] == "conv"]
    last = max(reversed(convolutions), key=lambda row: _largest(row["receptive_field"]), default=None)
    params = sum(row["params"] for row in rows)
    trainable = sum(row["trainable_params"] for row in rows)
    return {
        "params": params,
        "trainable_params": trainable,
        "non_trainable_params": params - trainable,
        "macs": known,
        "flops": None if known is None else 2 * known,
        "gflops": None if known is None else 2 * known / 1e9,
        "last_conv": last and last["name"],
        "receptive_field": last and last["receptive_field"],
        "jump": last and last["jump"],
        # A [T, C] input is a series: its one axis counts time steps.
        "field_unit": "time steps" if rows and len(rows[0]["output_shape"]) == 2 else "pixels",
    }


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The table as aligned text, with the totals and the counting conventions below it."""
    cells = [HEADINGS] + [tuple(format_cell(key, row[key]) for key in COLUMNS) for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    numeric = {"params", "macs", "receptive_field", "jump"}

    def line(values):
        return "  ".join(
            v.rjust(w) if key in numeric else v.ljust(w) for key, v, w in zip(COLUMNS, values, widths)
        ).rstrip()

    rule = "-" * len(line(cells[0]))
    return "\n".join([line(cells[0]), rule, *map(line, cells[1:]), rule, *totals_lines(totals(rows)), CONVENTIONS])


def totals_lines(total: dict[str, Any]) -> list[str]:
    lines = [
        f"Parameters: {total['params']:,} (trainable {total['trainable_params']:,}, "
        f"non-trainable {total['non_trainable_params']:,})"
    ]
    if total["macs"] is None:
        lines.append("MACs: unknown (the input size is not fixed)")
    else:
        lines.append(f"MACs: {total['macs']:,} ({_si(total['macs'])}); FLOPs ≈ 2 × MACs = {total['gflops']:.3g} GFLOPs")
    if total["last_conv"]:
        lines.append(
            f"Receptive field of the last convolution ({total['last_conv']}): "
            f"{format_cell('receptive_field', total['receptive_field'])} {total['field_unit']}, "
            f"jump {format_cell('jump', total['jump'])}"
        )
    return lines


def _si(count: int) -> str:
    for factor, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if count >= factor:
            return f"{count / factor:.3g} {unit}"
    return str(count)


def format_cell(key: str, value: Any) -> str:
    """Text of one table cell: tuples as 3x3, counts with thousands separators, None as blank."""
    if value is None:
        return "?" if key == "macs" else ""
    if key in ("params", "macs"):
        return f"{value:,}"
    if key == "padding" and not isinstance(value, str):  # ZeroPadding: ((top, bottom), (left, right))
        flat = [p for pair in value for p in (pair if isinstance(pair, tuple) else (pair,))]
        return str(flat[0]) if len(set(flat)) == 1 else ",".join(map(str, flat))
    if isinstance(value, tuple) and value and isinstance(value[0], tuple):  # several outputs
        return " ".join(format_cell(key, v) for v in value)
    if isinstance(value, tuple):
        values = ["?" if v is None else str(v) for v in value]
        if key in ("stride", "dilation", "receptive_field", "jump") and len(set(values)) == 1:
            return values[0]
        return "x".join(values)
    return str(value)


# --- walking the graph ------------------------------------------------------------------------------


def _graph_of(layer) -> keras.Model | None:
    """The functional graph of a functional or (built) sequential model, else None."""
    if isinstance(layer, keras.Sequential):
        layer = getattr(layer, "_functional", None)
    return layer if isinstance(layer, keras.Model) and hasattr(layer, "_nodes_by_depth") else None


def _input_field(tensor) -> Field:
    return ((Fraction(1), Fraction(1)),) * max(len(tensor.shape) - 2, 0)


def _walk(graph: keras.Model, input_fields: list[Field], *, prefix: str, counted: set[int]):
    """Rows of `graph` in graph order, and the fields of its outputs.

    Fields propagate through the nodes in Keras's own execution order (deepest first); rows are
    then emitted in `graph.operations` order, one per call of each operation in this graph.
    """
    fields = {id(t): f for t, f in zip(graph.inputs, input_fields)}
    rows_of_node: dict[int, list[dict[str, Any]]] = {}
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        for node in graph._nodes_by_depth[depth]:
            rows_of_node[id(node)] = _visit(node, fields, prefix, counted)
    rows = [
        row
        for op in graph.operations
        for node in op._inbound_nodes
        if id(node) in rows_of_node
        for row in rows_of_node[id(node)]
    ]
    return rows, [fields[id(t)] for t in graph.outputs]


def _visit(node, fields: dict[int, Field], prefix: str, counted: set[int]) -> list[dict[str, Any]]:
    op = node.operation
    if node.is_input:  # an InputLayer: its tensor's field is already set (r=1, j=1 or the outer one)
        return [] if prefix else [_row(op, node, prefix, counted, fields[id(node.outputs[0])], "input", 0)]
    field_in = _merge([fields[id(t)] for t in node.input_tensors])
    inner = _graph_of(op)
    if inner is not None:
        rows, outputs = _walk(
            inner, [fields[id(t)] for t in node.input_tensors], prefix=f"{prefix}{op.name}/", counted=counted
        )
        fields.update((id(t), f) for t, f in zip(node.outputs, outputs))
        return rows
    field_out = _propagate(op, node, field_in)
    fields.update((id(t), field_out) for t in node.outputs)
    return [_row(op, node, prefix, counted, field_out, _category(op), _macs(op, node))]


def _row(op, node, prefix: str, counted: set[int], field: Field, category: str, macs: int | None) -> dict[str, Any]:
    first_call = id(op) not in counted
    counted.add(id(op))
    weights = getattr(op, "weights", [])
    trainable = getattr(op, "trainable_weights", [])
    kernel, stride, padding, dilation = _geometry(op)
    shapes = [tuple(t.shape[1:]) for t in node.outputs]
    return {
        "name": prefix + op.name,
        "kind": type(op).__name__,
        "inputs": tuple(
            prefix + t._keras_history.operation.name
            for t in node.input_tensors
            if t._keras_history.operation is not None
        ),
        "kernel": kernel,
        "stride": stride,
        "padding": padding,
        "dilation": dilation,
        "output_shape": shapes[0] if len(shapes) == 1 else tuple(shapes),
        "params": sum(_size(w.shape) for w in weights) if first_call else 0,
        "trainable_params": sum(_size(w.shape) for w in trainable) if first_call else 0,
        "macs": macs,
        "receptive_field": _collapse(r for r, _ in field),
        "jump": _collapse(j for _, j in field),
        "category": category,
    }


def _category(op) -> str:
    if isinstance(op, CONVOLUTIONS + DEPTHWISE + SEPARABLE + TRANSPOSED):
        return "conv"
    if isinstance(op, POOLING + GLOBAL_POOLING):
        return "pool"
    return "dense" if isinstance(op, layers.Dense) else "other"


def _geometry(op):
    """(kernel, stride, padding, dilation) of a layer, None where it has no such thing."""
    if isinstance(op, CONVOLUTIONS + DEPTHWISE + SEPARABLE + TRANSPOSED):
        return tuple(op.kernel_size), tuple(op.strides), op.padding, tuple(op.dilation_rate)
    if isinstance(op, POOLING):
        return tuple(op.pool_size), tuple(op.strides), op.padding, None
    if isinstance(op, ZERO_PADDING):
        return None, None, op.padding, None
    return None, None, None, None


# --- receptive field ----------------------------------------------------------------------------------


def _merge(fields: list[Field]) -> Field:
    """The field seen by a layer with these inputs: the largest r and j per axis (see module docstring)."""
    if not fields:
        return ()
    rank = max(len(f) for f in fields)
    widest = [f for f in fields if len(f) == rank]
    return tuple((max(f[axis][0] for f in widest), max(f[axis][1] for f in widest)) for axis in range(rank))


def _propagate(op, node, field: Field) -> Field:
    if isinstance(op, CONVOLUTIONS + DEPTHWISE + SEPARABLE + POOLING):
        dilation = op.dilation_rate if hasattr(op, "dilation_rate") else (1,) * len(op.strides)
        kernel = op.kernel_size if hasattr(op, "kernel_size") else op.pool_size
        return _per_axis(field, kernel, op.strides, dilation, lambda r, j, k, s: (r + (k - 1) * j, j * s))
    if isinstance(op, TRANSPOSED):
        return _per_axis(
            field, op.kernel_size, op.strides, op.dilation_rate, lambda r, j, k, s: (r + (k - 1) * j / s, j / s)
        )
    if isinstance(op, UPSAMPLING):
        size = op.size if isinstance(op.size, tuple) else (op.size,)
        taps = 1 if getattr(op, "interpolation", "nearest") == "nearest" else 2
        return _per_axis(
            field, (taps,) * len(size), size, (1,) * len(size), lambda r, j, k, s: (r + (k - 1) * j, j / s)
        )
    if isinstance(op, GLOBAL_POOLING):
        sizes = _spatial(node.input_tensors[0].shape, getattr(op, "data_format", "channels_last"))
        if None in sizes:
            return field  # the map's size is unknown; the window cannot be placed
        return _per_axis(field, sizes, (1,) * len(sizes), (1,) * len(sizes), lambda r, j, k, s: (r + (k - 1) * j, j))
    return field


def _per_axis(field: Field, kernel, stride, dilation, rule) -> Field:
    if len(kernel) != len(field):  # e.g. a Conv1D over a reshaped map: the axes do not correspond
        return field
    return tuple(rule(r, j, d * (k - 1) + 1, s) for (r, j), k, s, d in zip(field, kernel, stride, dilation))


def _largest(value) -> float:
    return max(value) if isinstance(value, tuple) else value


def _collapse(values: Iterable[Fraction]):
    """A number when equal along every axis, else a tuple; integers stay integers."""
    values = tuple(int(v) if v.denominator == 1 else float(v) for v in values)
    if not values:
        return None
    return values[0] if len(set(values)) == 1 else values


# --- multiply-accumulates ----------------------------------------------------------------------------


def _macs(op, node) -> int | None:
    if not isinstance(op, CONVOLUTIONS + DEPTHWISE + SEPARABLE + TRANSPOSED + (layers.Dense,)):
        return 0
    shape_in, shape_out = node.input_tensors[0].shape, node.outputs[0].shape
    if isinstance(op, layers.Dense):
        return _product([*shape_in[1:-1], shape_in[-1], op.units])
    data_format = getattr(op, "data_format", "channels_last")
    c_in, c_out = _channels(shape_in, data_format), _channels(shape_out, data_format)
    kernel = math.prod(op.kernel_size)
    out_pixels, in_pixels = _spatial(shape_out, data_format), _spatial(shape_in, data_format)
    if isinstance(op, SEPARABLE):
        depthwise = _product([kernel, c_in, op.depth_multiplier, *out_pixels])
        pointwise = _product([c_in, op.depth_multiplier, c_out, *out_pixels])
        return None if depthwise is None or pointwise is None else depthwise + pointwise
    if isinstance(op, DEPTHWISE):
        return _product([kernel, c_in, op.depth_multiplier, *out_pixels])
    if isinstance(op, TRANSPOSED):
        return _product([kernel, c_in, c_out, *in_pixels])
    dense = _product([kernel, c_in, c_out, *out_pixels])
    return None if dense is None else dense // getattr(op, "groups", 1)  # each output sees C_in/groups inputs


def _spatial(shape, data_format: str) -> tuple:
    return tuple(shape[1:-1] if data_format == "channels_last" else shape[2:])


def _channels(shape, data_format: str):
    return shape[-1] if data_format == "channels_last" else shape[1]


def _product(values) -> int | None:
    return None if any(v is None for v in values) else math.prod(int(v) for v in values)


def _size(shape) -> int:
    return math.prod(int(d) for d in shape)
