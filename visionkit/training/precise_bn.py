"""Precise batch-norm statistics: each BatchNormalization layer's moving mean and variance re-estimated with the
epoch's final weights, before validation (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021; the PreciseBN
of pycls and Detectron2, torch's `update_bn`).

Why: Keras's moving averages (momentum 0.99) forget their start (mean 0, variance 1) over hundreds of steps and
trail the weights as they change. On a small training split, a few batches an epoch, inference then uses
statistics that belong to neither: a UCR set's FCN reaches training accuracy 1.0 while its validation and test
accuracy stay at chance (GunPoint after 100 epochs: inference 0.53, re-estimated 0.92 after 30).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from visionkit.errors import UserError

MAX_BATCHES = 50  # batches averaged; also auto's limit on an epoch's steps (pycls averages ~200 x 32 images)


def batch_norm_layers(model: keras.Layer) -> list[keras.layers.BatchNormalization]:
    """The trainable BatchNormalization layers of `model`, nested models included (a frozen one keeps its
    statistics: Keras runs it in inference mode)."""
    found = []
    for layer in getattr(model, "layers", ()):
        if isinstance(layer, keras.layers.BatchNormalization):
            if layer.trainable:
                found.append(layer)
        else:
            found.extend(batch_norm_layers(layer))
    return found


def recompute_statistics(model: keras.Model, batches: Sequence, count: int = MAX_BATCHES) -> int:
    """Sets every trainable batch norm's moving mean and variance to the average of its batch statistics over the
    first `count` of `batches` (each `(inputs, targets)`), computed in one training-mode forward pass each; the
    weights do not change. Returns the number of batches averaged."""
    norms = batch_norm_layers(model)
    if not norms:
        return 0
    momenta = [layer.momentum for layer in norms]
    used = min(count, len(batches))
    try:
        for k in range(1, used + 1):
            for layer in norms:  # moving = moving * (k-1)/k + batch / k: the running arithmetic mean
                layer.momentum = (k - 1) / k
            inputs = batches[k - 1][0]
            model(inputs, training=True)
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
    return used


def precise_bn_setting(value: str | bool) -> str:
    """trainer.precise_bn as "true", "false" or "auto"; anything else is a UserError."""
    setting = str(value).lower()
    if setting not in ("true", "false", "auto"):
        raise UserError(f"trainer.precise_bn must be true, false or auto, received {value!r}")
    return setting


def wants_precise_statistics(setting: str, model: keras.Model, steps_per_epoch: int) -> bool:
    """true, false, or auto: on when the model has trainable batch norm and an epoch has at most MAX_BATCHES
    steps (the moving averages lag most there)."""
    if setting != "auto":
        return setting == "true"
    return bool(batch_norm_layers(model)) and steps_per_epoch <= MAX_BATCHES


class PreciseBatchNorm(keras.callbacks.Callback):
    """After an epoch's last training step, before Keras validates: recompute_statistics over the epoch's first
    MAX_BATCHES training batches (the loader's, seeded by epoch, so a resumed run averages the same ones)."""

    def __init__(self, batches: Sequence):
        super().__init__()
        self.batches = batches

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        steps = self.params.get("steps")
        if steps is not None and batch + 1 >= steps:
            recompute_statistics(self.model, self.batches)
