"""FixedFilter against scipy.signal, an independent 2-D correlation/convolution with the same zero border."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from scipy import signal

from visionkit.layers import FixedFilter, apply_filter
from visionkit.layers.fixed_filter import KINDS, filter_kernel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASYMMETRIC = [[1.0, 2.0, 0.0], [0.0, 0.0, -1.0], [3.0, 0.0, 0.5]]
CASES = [{"kind": kind} for kind in KINDS if kind != "custom"] + [
    {"kind": "box_blur", "size": 5},
    {"kind": "gaussian", "size": 5, "sigma": 1.5},
    {"kind": "custom", "kernel": ASYMMETRIC},
    {"kind": "custom", "kernel": [[1.0, -2.0, 0.5, 0.0, 1.0]]},
]


def scipy_reference(images, kernel, mode):
    reference = signal.correlate2d if mode == "correlation" else signal.convolve2d
    return np.stack(
        [
            np.stack(
                [reference(image[..., c], kernel, mode="same", boundary="fill") for c in range(image.shape[-1])],
                axis=-1,
            )
            for image in images
        ]
    )


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 1, size=(2, 11, 13, 3)).astype("float32")


@pytest.mark.parametrize("mode", ["correlation", "convolution"])
@pytest.mark.parametrize("case", CASES, ids=lambda case: "-".join(str(v)[:12] for v in case.values()))
def test_matches_scipy(images, case, mode):
    layer = FixedFilter(mode=mode, **case)
    kernel = filter_kernel(**case)
    out = keras.ops.convert_to_numpy(layer(images))
    np.testing.assert_allclose(out, scipy_reference(images, kernel, mode), rtol=1e-5, atol=1e-5)


def test_convolution_flips_the_kernel(images):
    convolution = apply_filter(images, "custom", mode="convolution", kernel=ASYMMETRIC)
    correlation = apply_filter(images, "custom", mode="correlation", kernel=ASYMMETRIC)
    rotated = apply_filter(images, "custom", mode="correlation", kernel=np.rot90(ASYMMETRIC, 2).tolist())
    assert np.abs(convolution - correlation).max() > 0.1
    np.testing.assert_allclose(convolution, rotated, rtol=1e-6, atol=1e-6)


def test_constant_image_interior():
    constant = np.full((9, 10, 3), 0.7, dtype="float32")
    inner = (slice(1, -1), slice(1, -1))
    np.testing.assert_allclose(apply_filter(constant, "sharpen")[inner], 0.7, rtol=1e-6)
    for kind in ("edge", "sobel_x", "sobel_y", "laplacian"):
        for mode in ("convolution", "correlation"):
            np.testing.assert_allclose(apply_filter(constant, kind, mode=mode)[inner], 0.0, atol=1e-6)
    # the zero border: the sharpened corner sees two zero neighbours
    assert apply_filter(constant, "sharpen")[0, 0, 0] == pytest.approx(0.7 * 3)


@pytest.mark.parametrize("kind", ["box_blur", "gaussian"])
@pytest.mark.parametrize("size", [1, 3, 5, 7])
def test_smoothing_kernels_sum_to_one(kind, size):
    assert filter_kernel(kind, size).sum() == pytest.approx(1.0, abs=1e-6)
    assert filter_kernel(kind, size).shape == (size, size)


def test_gaussian_sigma():
    narrow, wide = filter_kernel("gaussian", 5, 0.5), filter_kernel("gaussian", 5, 3.0)
    assert narrow[2, 2] > wide[2, 2]
    np.testing.assert_allclose(narrow, narrow.T)
    np.testing.assert_allclose(filter_kernel("gaussian", 3), filter_kernel("gaussian", 3, 0.8))


def test_apply_filter_shapes_and_uint8():
    gray = np.random.default_rng(1).integers(0, 256, size=(8, 9), dtype="uint8")
    out = apply_filter(gray, "box_blur")
    assert out.dtype == np.float32 and out.shape == (8, 9)
    np.testing.assert_allclose(
        out, signal.convolve2d(gray.astype("float64"), np.full((3, 3), 1 / 9), mode="same"), rtol=1e-5
    )
    rgb = np.random.default_rng(2).integers(0, 256, size=(6, 7, 3), dtype="uint8")
    assert apply_filter(rgb, "emboss", mode="correlation").shape == (6, 7, 3)
    assert keras.ops.convert_to_numpy(FixedFilter("sharpen")(rgb[None])).dtype == np.float32


def test_no_trainable_weights_and_frozen_in_a_model():
    layer = FixedFilter("gaussian", size=5)
    model = keras.Sequential([keras.Input((12, 12, 3)), layer, keras.layers.Conv2D(2, 3)])
    assert layer.weights == [] and layer.trainable_weights == []
    assert len(model.trainable_weights) == 2  # the Conv2D's kernel and bias only


def test_keras_round_trip_safe_mode(tmp_path, images):
    inputs = keras.Input((11, 13, 3))
    x = FixedFilter("custom", kernel=ASYMMETRIC, mode="correlation")(inputs)
    x = FixedFilter("gaussian", size=5, sigma=1.2)(x)
    model = keras.Model(inputs, FixedFilter("sobel_y")(x))
    model.save(tmp_path / "filters.keras")
    loaded = keras.saving.load_model(tmp_path / "filters.keras", safe_mode=True)
    assert [layer.get_config()["kind"] for layer in loaded.layers[1:]] == ["custom", "gaussian", "sobel_y"]
    assert loaded.layers[1].get_config()["kernel"] == ASYMMETRIC
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"kind": "blur"},
            "kind must be one of box_blur, gaussian, sharpen, edge, emboss, sobel_x, sobel_y, "
            "laplacian, custom, received 'blur'",
        ),
        ({"kind": "custom"}, "kind='custom' needs kernel= (a 2-D list), received kernel=None"),
        ({"kind": "box_blur", "size": 4}, "size must be a positive odd integer, received 4"),
        ({"kind": "gaussian", "size": 0}, "size must be a positive odd integer, received 0"),
        ({"kind": "gaussian", "sigma": 0}, "sigma must be positive, received 0"),
        ({"kind": "custom", "kernel": [1, 2, 3]}, "kernel must be 2-D with odd height and width, received shape (3,)"),
        (
            {"kind": "custom", "kernel": [[1, 2], [3, 4]]},
            "kernel must be 2-D with odd height and width, received shape (2, 2)",
        ),
        ({"kind": "sharpen", "kernel": [[1]]}, "kernel= is read only with kind='custom', received kind='sharpen'"),
        ({"kind": "edge", "mode": "conv"}, "mode must be 'convolution' or 'correlation', received 'conv'"),
    ],
)
def test_errors(kwargs, message):
    with pytest.raises(ValueError) as error:
        FixedFilter(**kwargs)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_apply_filter_rejects_bad_shape():
    with pytest.raises(ValueError, match=r"received shape \(5,\)"):
        apply_filter(np.zeros(5), "edge")


def test_jax_backend(tmp_path, images):
    np.save(tmp_path / "images.npy", images)
    script = textwrap.dedent(f"""
        import numpy as np
        from visionkit.layers import FixedFilter
        images = np.load({str(tmp_path / "images.npy")!r})
        layer = FixedFilter("custom", kernel={ASYMMETRIC!r}, mode="convolution")
        np.save({str(tmp_path / "out.npy")!r}, np.asarray(layer(images)))
    """)
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    np.testing.assert_allclose(
        np.load(tmp_path / "out.npy"), scipy_reference(images, np.asarray(ASYMMETRIC), "convolution"), atol=1e-5
    )
