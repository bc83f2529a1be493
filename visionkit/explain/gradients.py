"""The one backend-specific piece of visionkit.explain: taking a gradient, and a ReLU whose backward pass
follows another rule. Everything else is keras.ops.

Backward rules of a ReLU y = max(x, 0) for an incoming gradient g (Springenberg et al. 2015, Fig. 1):

- "plain": g * [x > 0], the true gradient (vanilla saliency, Grad-CAM);
- "guided": max(g, 0) * [x > 0], guided backpropagation;
- "deconvnet": max(g, 0), Zeiler & Fergus's DeconvNet, which rectifies the signal going down and
  ignores the forward pass's sign.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

from visionkit.errors import UserError

RULES = ("plain", "guided", "deconvnet")
BACKENDS = ("tensorflow", "jax")


def backend() -> str:
    name = keras.backend.backend()
    if name not in BACKENDS:
        raise UserError(f"visionkit.explain takes gradients on the {' or '.join(BACKENDS)} backend, not {name}")
    return name


def gradient(fn: Callable, x: np.ndarray):
    """(d fn(x)[0] / dx, fn(x)[1]) as numpy: fn returns a scalar and an auxiliary value."""
    if backend() == "jax":
        import jax

        grad, aux = jax.grad(fn, has_aux=True)(jax.numpy.asarray(x, "float32"))
        return np.asarray(grad), aux
    import tensorflow as tf

    x = tf.convert_to_tensor(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value, aux = fn(x)
    grad = tape.gradient(value, x)
    return (np.zeros(x.shape, np.float32) if grad is None else grad.numpy()), aux


def _backward(rule: str, x, incoming):
    if rule == "deconvnet":
        return keras.ops.relu(incoming)
    if rule == "guided":
        return keras.ops.relu(incoming) * keras.ops.cast(x > 0, incoming.dtype)
    return incoming * keras.ops.cast(x > 0, incoming.dtype)


def rule_relu(rule: str) -> Callable:
    """A ReLU whose gradient follows `rule` (see module)."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, received {rule!r}")
    if rule == "plain":
        return keras.ops.relu
    if backend() == "jax":
        return _jax_relu(rule)
    import tensorflow as tf

    @tf.custom_gradient
    def relu(x):
        return tf.nn.relu(x), lambda incoming: _backward(rule, x, incoming)

    return relu


def _jax_relu(rule: str) -> Callable:
    import jax

    @jax.custom_vjp
    def relu(x):
        return jax.nn.relu(x)

    def forward(x):
        return jax.nn.relu(x), x

    def backward(x, incoming):
        return (_backward(rule, x, incoming),)

    relu.defvjp(forward, backward)
    return relu
