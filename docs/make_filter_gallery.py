"""The picture of one image through each of FixedFilter's kinds, written as a PNG grid.

    python docs/make_filter_gallery.py [image] [--out docs/linear_filters.png] [--width 240]

Without an image it uses scikit-learn's sample photograph china.jpg. The image is downscaled to
`--width` pixels across and filtered in grey. Asymmetric kernels (emboss, Sobel) get one panel per
mode, convolution and correlation, since only there do they differ; edge and Sobel responses are
shown as absolute values, Sobel signed (mid grey is 0).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from visionkit.layers.fixed_filter import KINDS, apply_filter, filter_kernel  # noqa: E402

# A custom 1x31 "ghost" kernel: the image plus a faint copy 15 pixels to one side; which side shows the flip.
CUSTOM = [[0.0] * 15 + [0.6] + [0.0] * 14 + [0.4]]
ABSOLUTE = {"edge", "laplacian"}
SIGNED = {"sobel_x", "sobel_y"}


def load_grey(path: str | None, width: int) -> np.ndarray:
    if path is None:
        from sklearn.datasets import load_sample_image

        rgb = load_sample_image("china.jpg")
    else:
        rgb = plt.imread(path)
        rgb = rgb[..., :3] * (255.0 if rgb.dtype != np.uint8 and rgb.max() <= 1.0 else 1.0)
    rgb = np.asarray(rgb, dtype="float32")
    grey = rgb @ np.array([0.299, 0.587, 0.114], dtype="float32") if rgb.ndim == 3 else rgb
    step = max(1, round(grey.shape[1] / width))
    height, width = grey.shape[0] // step * step, grey.shape[1] // step * step
    return grey[:height, :width].reshape(height // step, step, width // step, step).mean(axis=(1, 3)) / 255.0


def panels(grey: np.ndarray) -> list[tuple[str, np.ndarray]]:
    out = [("input", grey)]
    for kind in KINDS:
        options = {"kernel": CUSTOM} if kind == "custom" else {"size": 5} if kind in ("box_blur", "gaussian") else {}
        kernel = filter_kernel(kind, **options)
        modes = ("convolution",) if np.array_equal(kernel, kernel[::-1, ::-1]) else ("convolution", "correlation")
        for mode in modes:
            result = apply_filter(grey, kind, mode=mode, **options)
            result = np.abs(result) if kind in ABSOLUTE else result
            label = kind if len(modes) == 1 else f"{kind} ({mode})"
            if kind == "custom":
                label = f"custom ghost ({mode})"
            out.append((label, result))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", help="an image file; scikit-learn's china.jpg when omitted")
    parser.add_argument("--out", default=str(Path(__file__).with_name("linear_filters.png")))
    parser.add_argument("--width", type=int, default=240, help="downscale the image to about this many pixels across")
    args = parser.parse_args(argv)
    items = panels(load_grey(args.image, args.width))
    columns = 4
    rows = -(-len(items) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 2.6, rows * 2.1))
    for axis in axes.flat:
        axis.axis("off")
    for axis, (label, image) in zip(axes.flat, items):
        if label in ("input", "box_blur", "gaussian") or label.startswith("custom"):
            low, high = 0.0, 1.0
        elif label.split()[0] in SIGNED:  # mid grey is 0: the sign flips between the modes
            high = np.percentile(np.abs(image), 99)
            low = -high
        else:
            low, high = np.percentile(image, [1, 99])
        axis.imshow(image, cmap="gray", vmin=low, vmax=high)
        axis.set_title(label, fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=72)
    Image.open(buffer).convert("L").save(args.out, optimize=True)  # every panel is grey: one channel
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
