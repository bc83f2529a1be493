"""Moving weights between models whose layers share names (keras.applications -> visionkit)."""

from __future__ import annotations

import keras


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
            raise ValueError(f"layer '{layer.name}': weight shapes {shapes_theirs} in {source.name} "
                             f"but {shapes_ours} in {target.name}")
        destination.set_weights(theirs)
        copied.append(layer.name)
    return copied
