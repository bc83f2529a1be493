"""The classic linear filters as a frozen depthwise convolution: each channel is filtered on its own
by the same small kernel, which is a constant (no weights, nothing to train).

Kernels, written as they are applied by cross-correlation (the kernel laid on the image as is):

- box_blur: a size x size mean;
- gaussian: a size x size sampled Gaussian of standard deviation sigma, normalised to sum 1
  (sigma=None takes OpenCV's rule 0.3 * ((size - 1) / 2 - 1) + 0.8, 0.8 for size 3);
- sharpen: [[0,-1,0],[-1,5,-1],[0,-1,0]];
- edge: the 8-neighbour Laplacian edge detector [[-1,-1,-1],[-1,8,-1],[-1,-1,-1]];
- emboss: [[-2,-1,0],[-1,1,1],[0,1,2]];
- sobel_x: [[-1,0,1],[-2,0,2],[-1,0,1]] (positive where intensity rises left to right, in correlation);
- sobel_y: its transpose (positive where intensity rises downwards, in correlation);
- laplacian: the 4-neighbour Laplacian [[0,1,0],[1,-4,1],[0,1,0]];
- custom: any 2-D kernel with odd height and width, given as `kernel=`.

`mode="convolution"` (the default, as the filters are defined in signal processing) flips the kernel
by 180 degrees before sliding it; `mode="correlation"` slides it as is, which is what CNN layers
compute. The two differ only for asymmetric kernels (emboss, Sobel, custom ones).

Padding is "same" with zeros outside the image, so the output has the input's size, and pixels
within half a kernel of the border see zeros: a constant image stays constant under sharpen (and
gives 0 under edge, Sobel and Laplacian) only away from the border.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

KINDS = ("box_blur", "gaussian", "sharpen", "edge", "emboss", "sobel_x", "sobel_y", "laplacian", "custom")
MODES = ("convolution", "correlation")

_FIXED = {
    "sharpen": [[0, -1, 0], [-1, 5, -1], [0, -1, 0]],
    "edge": [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]],
    "emboss": [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]],
    "sobel_x": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
    "sobel_y": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
    "laplacian": [[0, 1, 0], [1, -4, 1], [0, 1, 0]],
}


def filter_kernel(kind: str, size: int = 3, sigma: float | None = None, kernel=None) -> np.ndarray:
    """The float32 kernel of `kind`, as correlation applies it; the one table FixedFilter and apply_filter use.

    `size` is read by box_blur and gaussian only, `sigma` by gaussian only, `kernel` by custom only.
    """
    if kind not in KINDS:
        raise ValueError(f"FixedFilter kind must be one of {', '.join(KINDS)}, received {kind!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1 or size % 2 == 0:
        raise ValueError(f"FixedFilter size must be a positive odd integer, received {size!r}")
    if sigma is not None and not sigma > 0:
        raise ValueError(f"FixedFilter sigma must be positive, received {sigma!r}")
    if kind == "custom":
        if kernel is None:
            raise ValueError("FixedFilter kind='custom' needs kernel= (a 2-D list), received kernel=None")
        array = np.asarray(kernel, dtype="float32")
        if array.ndim != 2 or array.shape[0] % 2 == 0 or array.shape[1] % 2 == 0:
            raise ValueError(
                f"FixedFilter kernel must be 2-D with odd height and width, received shape {array.shape} ({kernel!r})"
            )
        return array
    if kernel is not None:
        raise ValueError(f"FixedFilter kernel= is read only with kind='custom', received kind={kind!r}")
    if kind == "box_blur":
        return np.full((size, size), 1.0 / (size * size), dtype="float32")
    if kind == "gaussian":
        sigma = 0.3 * ((size - 1) / 2 - 1) + 0.8 if sigma is None else float(sigma)
        offsets = np.arange(size, dtype="float64") - size // 2
        profile = np.exp(-(offsets**2) / (2 * sigma**2))
        gauss = np.outer(profile, profile)
        return (gauss / gauss.sum()).astype("float32")
    return np.asarray(_FIXED[kind], dtype="float32")


@keras.saving.register_keras_serializable(package="visionkit")
class FixedFilter(keras.layers.Layer):
    """A frozen depthwise convolution applying one linear filter to every channel of (batch, H, W, C) inputs.

    See the module docstring for the kernels, the two modes and the zero border. Integer inputs
    (uint8 images) are cast to the layer's compute dtype; the output is neither rescaled nor clipped.
    """

    def __init__(
        self,
        kind: str = "box_blur",
        size: int = 3,
        sigma: float | None = None,
        mode: str = "convolution",
        kernel=None,
        **kwargs,
    ):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"FixedFilter mode must be 'convolution' or 'correlation', received {mode!r}")
        self.kernel_array = filter_kernel(kind, size, sigma, kernel)
        self.kind, self.size, self.sigma, self.mode = kind, size, sigma, mode

    def applied_kernel(self) -> np.ndarray:
        """The kernel as the depthwise correlation slides it: flipped by 180 degrees in convolution mode."""
        return self.kernel_array[::-1, ::-1].copy() if self.mode == "convolution" else self.kernel_array

    def call(self, inputs):
        if not keras.backend.is_float_dtype(keras.backend.standardize_dtype(inputs.dtype)):
            inputs = ops.cast(inputs, self.compute_dtype)
        channels = inputs.shape[-1]
        height, width = self.kernel_array.shape
        kernel = np.broadcast_to(self.applied_kernel()[:, :, None, None], (height, width, channels, 1))
        kernel = ops.convert_to_tensor(np.ascontiguousarray(kernel), dtype=inputs.dtype)
        return ops.depthwise_conv(inputs, kernel, strides=1, padding="same")

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "kind": self.kind,
            "size": self.size,
            "sigma": self.sigma,
            "mode": self.mode,
            "kernel": self.kernel_array.tolist() if self.kind == "custom" else None,
        }


def apply_filter(image, kind: str, mode: str = "convolution", **options) -> np.ndarray:
    """One filter on a numpy image, (H, W), (H, W, C) or (N, H, W, C), uint8 or float; float32 out, same shape.

    `options` are FixedFilter's (size, sigma, kernel). Values keep the input's scale (0-255 for
    uint8) and are not clipped: sharpen, edge and emboss overshoot the input's range.
    """
    array = np.asarray(image, dtype="float32")
    if array.ndim not in (2, 3, 4):
        raise ValueError(f"apply_filter needs an (H, W), (H, W, C) or (N, H, W, C) image, received shape {array.shape}")
    batch = array[None, :, :, None] if array.ndim == 2 else array[None] if array.ndim == 3 else array
    layer = FixedFilter(kind=kind, mode=mode, dtype="float32", **options)
    result = ops.convert_to_numpy(layer(batch)).astype("float32")
    return result.reshape(array.shape)
