"""Numeric precision and XLA: the dtype policy a model is built and trained in, whether its train step is
compiled, and how closely an export can match a model that computes in 16 bits."""

from __future__ import annotations

import keras

from visionkit.errors import UserError

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
# A mixed-precision model computes in 16 bits, and the SavedModel's kernels round differently from
# the in-memory model's: outputs agree to about 1e-3 (float16) or 1e-2 (bfloat16), not 1e-4.
MIXED_PRECISION_ATOL = {"mixed_float16": 5e-3, "mixed_bfloat16": 3e-2}
JIT_COMPILE = {"auto": "auto", "true": True, "false": False}


def set_precision(precision: str) -> None:
    """float32, or mixed precision (float16 with loss scaling, which Keras's compile adds; or bfloat16)."""
    if precision not in PRECISIONS:
        raise UserError(f"trainer.precision must be one of {', '.join(PRECISIONS)}, received {precision!r}")
    keras.mixed_precision.set_dtype_policy(precision)


def jit_compile(value: str) -> bool | str:
    """trainer.jit_compile: true | false | auto (XLA where Keras finds it supported)."""
    if str(value).lower() not in JIT_COMPILE:
        raise UserError(f"trainer.jit_compile must be true, false or auto, received {value!r}")
    return JIT_COMPILE[str(value).lower()]


def export_tolerance(atol: float, precision: str) -> float:
    """The export check's absolute tolerance, widened to what 16-bit arithmetic allows under mixed precision."""
    return max(atol, MIXED_PRECISION_ATOL.get(precision, 0.0))
