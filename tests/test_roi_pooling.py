import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from visionkit.layers import ROIPooling

ROOT = Path(__file__).resolve().parents[1]

# The lecture's example (after deepsense.ai's "Region of interest pooling explained", the classic
# illustration of Fast R-CNN's RoI pooling): an 8x8 feature map, a region of 5 rows x 7 columns
# (rows 3-7, columns 0-6; (x, y) corners (0, 3) and (7, 8)), pooled to 2x2. Rows split 2 + 3,
# columns 3 + 4, and each section gives its maximum.
LECTURE_MAP = np.array(
    [
        [0.88, 0.44, 0.14, 0.16, 0.37, 0.77, 0.96, 0.27],
        [0.19, 0.45, 0.57, 0.16, 0.63, 0.29, 0.71, 0.70],
        [0.66, 0.26, 0.82, 0.64, 0.54, 0.73, 0.59, 0.26],
        [0.85, 0.34, 0.76, 0.84, 0.29, 0.75, 0.62, 0.25],
        [0.32, 0.74, 0.21, 0.39, 0.34, 0.03, 0.33, 0.48],
        [0.20, 0.14, 0.16, 0.13, 0.73, 0.65, 0.96, 0.32],
        [0.19, 0.69, 0.09, 0.86, 0.88, 0.07, 0.01, 0.48],
        [0.83, 0.24, 0.97, 0.04, 0.24, 0.35, 0.50, 0.91],
    ],
    "float32",
)
LECTURE_ROI = (3, 0, 8, 7)  # (y1, x1, y2, x2), end-exclusive
# top-left: rows 3-4 x cols 0-2 -> 0.85; top-right: rows 3-4 x cols 3-6 -> 0.84;
# bottom-left: rows 5-7 x cols 0-2 -> 0.97; bottom-right: rows 5-7 x cols 3-6 -> 0.96.
LECTURE_POOLED = np.array([[0.85, 0.84], [0.97, 0.96]], "float32")
LECTURE_ARGMAX = [(3, 0), (3, 3), (7, 2), (5, 6)]


# ---- numpy references: plain loops over boxes, sections and cells ---------------------------------


def sections(start, end, n):
    step = (end - start) // n
    lows = [start + i * step for i in range(n)]
    return list(zip(lows, lows[1:] + [end]))


def snapped(low, high, size):
    low, high = int(np.clip(np.floor(low), 0, size)), int(np.clip(np.ceil(high), 0, size))
    return low, max(high, low)


def max_pool_reference(feature_maps, rois, pooled, upstream=None):
    """Pooled values and, for `upstream` output gradients, the gradient w.r.t. the feature maps."""
    batch, height, width, channels = feature_maps.shape
    out = np.zeros((batch, rois.shape[1], *pooled, channels), "float32")
    grad = np.zeros_like(feature_maps)
    for b, r in np.ndindex(batch, rois.shape[1]):
        y1, y2 = snapped(rois[b, r, 0], rois[b, r, 2], height)
        x1, x2 = snapped(rois[b, r, 1], rois[b, r, 3], width)
        for i, (top, bottom) in enumerate(sections(y1, y2, pooled[0])):
            for j, (left, right) in enumerate(sections(x1, x2, pooled[1])):
                if bottom == top or right == left:
                    continue
                for c in range(channels):
                    cell = feature_maps[b, top:bottom, left:right, c]
                    dy, dx = np.unravel_index(np.argmax(cell), cell.shape)
                    out[b, r, i, j, c] = cell[dy, dx]
                    if upstream is not None:
                        grad[b, top + dy, left + dx, c] += upstream[b, r, i, j, c]
    return out, grad


def bilinear(feature, y, x):
    """torchvision's roi_align bilinear_interpolate, one sample, all channels."""
    height, width = feature.shape[:2]
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(feature.shape[2])
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    y1, x1 = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    ly, lx = y - y0, x - x0
    return (
        (1 - ly) * (1 - lx) * feature[y0, x0]
        + (1 - ly) * lx * feature[y0, x1]
        + ly * (1 - lx) * feature[y1, x0]
        + ly * lx * feature[y1, x1]
    )


def align_reference(feature_maps, rois, pooled, ratio):
    out = np.zeros((feature_maps.shape[0], rois.shape[1], *pooled, feature_maps.shape[3]))
    for b, r in np.ndindex(*rois.shape[:2]):
        y1, x1, y2, x2 = rois[b, r] - 0.5  # pixel centres at i + 0.5 (aligned=True)
        bin_h, bin_w = (y2 - y1) / pooled[0], (x2 - x1) / pooled[1]
        for i, j in np.ndindex(*pooled):
            samples = [
                bilinear(feature_maps[b], y1 + (i + (sy + 0.5) / ratio) * bin_h, x1 + (j + (sx + 0.5) / ratio) * bin_w)
                for sy in range(ratio)
                for sx in range(ratio)
            ]
            out[b, r, i, j] = np.mean(samples, axis=0)
    return out


def random_case(seed, batch=2, rois=6, size=(11, 13), channels=3):
    """Distinct random values; boxes with fractional corners, tiny, large and partly outside the map."""
    rng = np.random.default_rng(seed)
    feature_maps = rng.permutation(batch * size[0] * size[1] * channels).reshape(batch, *size, channels)
    feature_maps = (feature_maps / feature_maps.size).astype("float32")
    y = np.sort(rng.uniform(-2, size[0] + 2, (batch, rois, 2)), axis=-1)
    x = np.sort(rng.uniform(-2, size[1] + 2, (batch, rois, 2)), axis=-1)
    boxes = np.stack([y[..., 0], x[..., 0], y[..., 1], x[..., 1]], axis=-1).astype("float32")
    boxes[:, 0] = (1.2, 2.7, 2.1, 3.3)  # smaller than the pooled grid: empty sections
    boxes[:, 1] = (0, 0, size[0], size[1])  # the whole map
    return feature_maps, boxes


def pooled_and_gradient(layer, feature_maps, rois, upstream):
    feature_maps = tf.constant(feature_maps)
    with tf.GradientTape() as tape:
        tape.watch(feature_maps)
        pooled = layer(feature_maps, tf.constant(rois))
        loss = tf.reduce_sum(pooled * upstream)
    return pooled.numpy(), tape.gradient(loss, feature_maps).numpy()


# ---- RoI max pooling ---------------------------------------------------------------------------


def test_the_lecture_example_and_its_gradient():
    feature_maps = LECTURE_MAP[None, :, :, None]
    rois = np.array([[LECTURE_ROI]], "float32")
    pooled, grad = pooled_and_gradient(ROIPooling((2, 2)), feature_maps, rois, np.ones((1, 1, 2, 2, 1), "float32"))
    np.testing.assert_allclose(pooled[0, 0, :, :, 0], LECTURE_POOLED)
    expected = np.zeros((8, 8), "float32")
    for cell in LECTURE_ARGMAX:
        expected[cell] = 1.0
    np.testing.assert_array_equal(grad[0, :, :, 0], expected)


def test_uneven_sides_give_the_first_sections_floor_and_the_last_the_rest():
    # 5 rows -> 2 + 3, 7 columns -> 3 + 4. On an increasing map each section's maximum is its last
    # cell, on a decreasing map its first one, which pins both ends of every section.
    increasing = np.arange(35, dtype="float32").reshape(1, 5, 7, 1)
    rois = np.array([[[0, 0, 5, 7]]], "float32")
    layer = ROIPooling((2, 2))
    np.testing.assert_array_equal(np.asarray(layer(increasing, rois))[0, 0, :, :, 0], [[9, 13], [30, 34]])
    np.testing.assert_array_equal(np.asarray(layer(-increasing, rois))[0, 0, :, :, 0], [[0, -3], [-14, -17]])


@pytest.mark.parametrize("pooled", [(3, 4), (7, 7), (1, 2)])
def test_values_and_gradients_match_a_loop_reference(pooled):
    feature_maps, rois = random_case(seed=sum(pooled))
    upstream = np.random.default_rng(1).normal(size=(*rois.shape[:2], *pooled, 3)).astype("float32")
    values, grad = pooled_and_gradient(ROIPooling(pooled), feature_maps, rois, upstream)
    expected_values, expected_grad = max_pool_reference(feature_maps, rois, pooled, upstream)
    np.testing.assert_array_equal(values, expected_values)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-6, atol=1e-6)


def test_each_section_sends_its_gradient_to_one_cell_even_on_ties():
    # A constant map: every cell of a section ties; the first one in row-major order gets it all.
    feature_maps = np.ones((1, 6, 6, 2), "float32")
    rois = np.array([[[0, 0, 6, 6], [1, 2, 4, 5]]], "float32")
    _, grad = pooled_and_gradient(ROIPooling((2, 3)), feature_maps, rois, np.ones((1, 2, 2, 3, 2), "float32"))
    expected = np.zeros((6, 6), "float32")
    for top, left in [(0, 0), (0, 2), (0, 4), (3, 0), (3, 2), (3, 4)]:  # 6x6 into 2x3: sections 3 x 2
        expected[top, left] += 1
    for top, left in [(1, 2), (1, 3), (1, 4), (2, 2), (2, 3), (2, 4)]:  # 3x3 into 2x3: rows 1 + 2
        expected[top, left] += 1
    np.testing.assert_array_equal(grad[0, :, :, 0], expected)
    np.testing.assert_array_equal(grad[0, :, :, 1], expected)


def test_boxes_partly_outside_the_map_are_clipped_and_boxes_outside_it_give_zeros():
    feature_maps, _ = random_case(seed=3, batch=1, size=(8, 8))
    rois = np.array([[[-3, -2, 4, 20], [0, 0, 4, 8], [9, 9, 12, 12], [5, 5, 5, 7]]], "float32")
    pooled = np.asarray(ROIPooling((2, 2))(feature_maps, rois))
    np.testing.assert_array_equal(pooled[0, 0], pooled[0, 1])
    np.testing.assert_array_equal(pooled[0, 2:], 0.0)  # wholly outside; zero height


def test_empty_sections_yield_zero_and_get_no_gradient():
    # One row x three columns into 2 x 2: rows 0 + 1 (the first row of sections is empty), columns 1 + 2.
    feature_maps = -np.arange(1, 17, dtype="float32").reshape(1, 4, 4, 1)  # all negative: 0 is no max
    rois = np.array([[[2, 1, 3, 4]]], "float32")
    pooled, grad = pooled_and_gradient(ROIPooling((2, 2)), feature_maps, rois, np.ones((1, 1, 2, 2, 1), "float32"))
    np.testing.assert_array_equal(pooled[0, 0, :, :, 0], [[0, 0], [-10, -11]])
    expected = np.zeros((4, 4), "float32")
    expected[2, 1] = expected[2, 2] = 1
    np.testing.assert_array_equal(grad[0, :, :, 0], expected)


def test_faster_rcnn_sizes():
    # B=1, R=300, 38x38x512, 7x7: the sizes the module docstring's memory figures are for.
    rng = np.random.default_rng(0)
    feature_maps = rng.normal(size=(1, 38, 38, 512)).astype("float32")
    corners = np.sort(rng.uniform(0, 38, (1, 300, 2, 2)), axis=2)
    rois = np.concatenate([corners[:, :, 0], corners[:, :, 1]], axis=-1).astype("float32")
    pooled = np.asarray(ROIPooling((7, 7))(feature_maps, rois))
    assert pooled.shape == (1, 300, 7, 7, 512)
    sample = slice(0, 300, 37)
    expected, _ = max_pool_reference(feature_maps[..., :4], rois[:, sample], (7, 7))
    np.testing.assert_array_equal(pooled[:, sample, ..., :4], expected)


# ---- RoI Align ---------------------------------------------------------------------------------


@pytest.mark.parametrize("pooled, ratio", [((2, 2), 2), ((3, 4), 1), ((7, 7), 3)])
def test_align_matches_torchvision_style_bilinear_sampling(pooled, ratio):
    feature_maps, rois = random_case(seed=ratio)
    rois[:, 2] = (-1.8, -1.5, 2.0, 3.0)  # samples more than a cell outside the map read 0
    rois[:, 3] = (9.6, 10.2, 14.0, 16.5)
    aligned = np.asarray(ROIPooling(pooled, method="align", sampling_ratio=ratio)(feature_maps, rois))
    np.testing.assert_allclose(aligned, align_reference(feature_maps, rois, pooled, ratio), rtol=1e-5, atol=1e-6)


def test_align_gradient_is_bilinear():
    # One sample at a cell centre reads that cell alone; the gradient is 1 there.
    feature_maps = np.random.default_rng(0).normal(size=(1, 5, 5, 1)).astype("float32")
    rois = np.array([[[2, 3, 3, 4]]], "float32")
    layer = ROIPooling((1, 1), method="align", sampling_ratio=1)
    pooled, grad = pooled_and_gradient(layer, feature_maps, rois, np.ones((1, 1, 1, 1, 1), "float32"))
    assert pooled[0, 0, 0, 0, 0] == pytest.approx(feature_maps[0, 2, 3, 0])
    expected = np.zeros((5, 5), "float32")
    expected[2, 3] = 1
    np.testing.assert_allclose(grad[0, :, :, 0], expected)


# ---- the layer ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["max", "align"])
def test_shapes_and_a_saved_model_round_trip(method, tmp_path):
    feature_input = keras.Input((9, 10, 4))
    roi_input = keras.Input((None, 4))
    pooled = ROIPooling((3, 2), method=method, name="roi_pool")(feature_input, roi_input)
    assert tuple(pooled.shape) == (None, None, 3, 2, 4)
    model = keras.Model([feature_input, roi_input], pooled)
    feature_maps, rois = random_case(seed=5, size=(9, 10), channels=4)
    model.save(tmp_path / "roi.keras")
    loaded = keras.saving.load_model(tmp_path / "roi.keras", safe_mode=True)
    np.testing.assert_array_equal(
        loaded.predict([feature_maps, rois], verbose=0), model.predict([feature_maps, rois], verbose=0)
    )
    config = loaded.get_layer("roi_pool").get_config()
    assert (config["pooled_size"], config["method"], config["sampling_ratio"]) == ([3, 2], method, 2)


def test_bad_arguments_quote_the_received_value():
    with pytest.raises(ValueError, match=r"pooled_size must be two positive integers, received \(7, 0\)"):
        ROIPooling((7, 0))
    with pytest.raises(ValueError, match=r"method must be one of max, align, received 'mean'"):
        ROIPooling(method="mean")
    with pytest.raises(ValueError, match=r"sampling_ratio must be a positive integer, received 0"):
        ROIPooling(method="align", sampling_ratio=0)
    with pytest.raises(
        ValueError,
        match=r"needs feature maps \[B, H, W, C\] with a known height and width, "
        r"received shape \(None, None, None, 8\)",
    ):
        ROIPooling()(keras.Input((None, None, 8)), keras.Input((5, 4)))
    with pytest.raises(ValueError, match=r"needs rois \[B, R, 4\] \(y1, x1, y2, x2\), received shape \(None, 5, 5\)"):
        ROIPooling()(keras.Input((8, 8, 8)), keras.Input((5, 5)))


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_the_jax_backend_gives_the_same_values(tmp_path):
    feature_maps, rois = random_case(seed=11)
    np.save(tmp_path / "maps.npy", feature_maps)
    np.save(tmp_path / "rois.npy", rois)
    script = textwrap.dedent(f"""
        import jax, numpy as np
        from visionkit.layers import ROIPooling
        maps, rois = np.load({str(tmp_path / "maps.npy")!r}), np.load({str(tmp_path / "rois.npy")!r})
        np.save({str(tmp_path / "max.npy")!r}, np.asarray(ROIPooling((3, 4))(maps, rois)))
        np.save({str(tmp_path / "align.npy")!r}, np.asarray(ROIPooling((3, 4), method="align")(maps, rois)))
        pool = ROIPooling((3, 4))
        grad = jax.grad(lambda m: (pool(m, rois) * np.arange(3 * 4 * 3).reshape(3, 4, 3)).sum())(maps)
        np.save({str(tmp_path / "grad.npy")!r}, np.asarray(grad))
    """)
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    upstream = np.broadcast_to(np.arange(36, dtype="float32").reshape(3, 4, 3), (*rois.shape[:2], 3, 4, 3))
    expected, expected_grad = max_pool_reference(feature_maps, rois, (3, 4), upstream)
    np.testing.assert_array_equal(np.load(tmp_path / "max.npy"), expected)
    np.testing.assert_allclose(np.load(tmp_path / "grad.npy"), expected_grad, rtol=1e-6)
    np.testing.assert_allclose(
        np.load(tmp_path / "align.npy"), align_reference(feature_maps, rois, (3, 4), 2), rtol=1e-5, atol=1e-6
    )
