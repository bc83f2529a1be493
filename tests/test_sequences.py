"""The sequence models: causality of the dilated stack, its receptive field measured by an impulse, the
TDNN's shift-equivariance, masking of padded steps, and every model on TensorFlow and on JAX."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from visionkit.models import MODELS
from visionkit.models.sequences import wavenet_dilations, wavenet_receptive_field
from visionkit.tasks import build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERIES_MODELS = [name for name in MODELS.names() if MODELS.meta(name).get("modality") == "series"]
SMALL = {
    "tdnn": {},
    "wavenet": {"filters": 4, "skip_filters": 4, "layers_per_block": 3, "blocks": 2},
    "fcn1d": {"width": 0.0625},
    "resnet1d": {"width": 0.0625},
    "inception_time": {"width": 0.125, "depth": 3},
}
SMALL_STACK = {"filters": 3, "skip_filters": 3, "kernel_size": 3, "layers_per_block": 3, "blocks": 2}


def series(steps: int, channels: int, batch: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, steps, channels)).astype("float32")


def run(model, x) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(x, training=False))


def test_the_registry_holds_the_five_series_models():
    assert SERIES_MODELS == ["fcn1d", "inception_time", "resnet1d", "tdnn", "wavenet"]


def test_the_wavenet_stack_is_causal():
    trunk = MODELS.get("wavenet")(input_shape=(40, 2), include_top=False, **SMALL_STACK)
    x, t0 = series(40, 2), 23
    changed = x.copy()
    changed[:, t0] += 5.0
    before, after = run(trunk, x), run(trunk, changed)
    np.testing.assert_array_equal(before[:, :t0], after[:, :t0])
    assert np.abs(before[:, t0] - after[:, t0]).max() > 1e-4  # ... and the step itself does see it


@pytest.mark.parametrize("kernel_size, layers_per_block, blocks", [(2, 4, 1), (3, 3, 2), (2, 5, 2)])
def test_the_wavenet_receptive_field_is_measured_by_an_impulse(kernel_size, layers_per_block, blocks):
    dilations = wavenet_dilations(kernel_size, layers_per_block, blocks)
    expected = 1 + (kernel_size - 1) * sum(dilations)
    assert wavenet_receptive_field(kernel_size, dilations) == expected
    steps = expected + 20
    options = {**SMALL_STACK, "kernel_size": kernel_size, "layers_per_block": layers_per_block, "blocks": blocks}
    trunk = MODELS.get("wavenet")(input_shape=(steps, 1), include_top=False, **options)
    # Zero biases: a zero series gives zeros everywhere, so the impulse response is not rounded against a
    # constant; positive kernels: no path cancels another.
    for weight in trunk.weights:
        positive = np.random.default_rng(1).uniform(0.2, 0.4, size=weight.shape)
        weight.assign(np.zeros(weight.shape) if weight.path.endswith("bias") else positive)
    impulse, t0 = np.zeros((1, steps, 1), "float32"), 5
    impulse[0, t0] = 1.0
    response = np.abs(run(trunk, impulse))[0].max(axis=-1)
    reached = np.flatnonzero(response > 0)
    assert reached.min() == t0 and reached.max() == t0 + expected - 1


def test_the_tdnn_is_shift_equivariant_before_its_integration():
    trunk = MODELS.get("tdnn")(input_shape=(30, 16), include_top=False, hidden_units=(8, 3), delays=(3, 5, 2))
    x, shift = series(30, 16, seed=3), 4
    shifted = np.roll(x, shift, axis=1)
    out, out_shifted = run(trunk, x), run(trunk, shifted)
    assert out.shape == (2, 30 - 2 - 4, 3)
    np.testing.assert_allclose(out_shifted[:, shift:], out[:, : out.shape[1] - shift], rtol=1e-5, atol=1e-6)


def test_the_tdnn_has_the_papers_layout():
    model = build("tdnn", input_shape=(15, 16), num_classes=3)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv1D)]
    assert [(c.filters, c.kernel_size[0]) for c in convs] == [(8, 3), (3, 5)]
    assert model.count_params() == (16 * 3 * 8 + 8) + (8 * 5 * 3 + 3)
    assert model.get_layer("hidden1_conv").output.shape[1:] == (13, 8)


def test_fcn1d_has_the_reference_parameter_count():
    # Wang et al.'s FCN on one channel, 2 classes: convolutions (1*8+1)*128, (128*5+1)*256, (256*3+1)*128,
    # batch norms 4 * (128 + 256 + 128) (moving statistics included, as Keras counts), softmax (128+1)*2.
    expected = 9 * 128 + 641 * 256 + 769 * 128 + 4 * 512 + 129 * 2
    assert build("fcn1d", input_shape=(150, 1), num_classes=2).count_params() == expected == 265_986


@pytest.mark.parametrize("name", SERIES_MODELS)
def test_padding_after_a_series_changes_no_causal_prediction(name):
    """Steps padded with NaN are not seen by the integration: a causal or 'valid' model predicts the same
    for the series alone and the series padded; the others stay finite."""
    model = build(name, input_shape=(40, 2), num_classes=3, **SMALL[name])
    short = series(40, 2, batch=1, seed=4)
    short[:, 30:] = np.nan
    alone = build(name, input_shape=(30, 2), num_classes=3, **SMALL[name])
    alone.set_weights(model.get_weights())
    padded, unpadded = run(model, short), run(alone, short[:, :30])
    assert np.isfinite(padded).all()
    if name in ("wavenet", "tdnn"):
        np.testing.assert_allclose(padded, unpadded, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", SERIES_MODELS)
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_every_series_model_builds_for_its_tasks(name, task):
    shape = (15, 16) if name == "tdnn" else (32, 3)
    model = build(name, input_shape=shape, num_classes=4, task=task, **SMALL[name])
    out = run(model, series(*shape))
    assert out.shape == (2, 4) and np.isfinite(out).all()
    if task == "classification":
        np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_bad_arguments_quote_the_received_value():
    with pytest.raises(ValueError, match=r"fcn1d: input_shape must be \(time steps, channels\), received \(8, 8, 1\)"):
        build("fcn1d", input_shape=(8, 8, 1), num_classes=2)
    with pytest.raises(ValueError, match=r"tdnn: the series must have at least 7 time steps, received \(6, 16\)"):
        build("tdnn", input_shape=(6, 16), num_classes=2)
    with pytest.raises(ValueError, match=r"tdnn: delays needs one entry per hidden layer and one for the output"):
        build("tdnn", input_shape=(15, 16), num_classes=2, delays=(3,))


@pytest.mark.slow  # a fresh process importing JAX, Keras and the zoo: minutes on a busy 2-core machine
def test_the_models_run_on_jax(tmp_path):
    x = series(20, 2, seed=5)
    np.save(tmp_path / "x.npy", x)
    expected = {}
    for name in SERIES_MODELS:
        shape = (15, 16) if name == "tdnn" else (20, 2)
        model = build(name, input_shape=shape, num_classes=3, **SMALL[name])
        model.save_weights(tmp_path / f"{name}.weights.h5")
        expected[name] = run(model, x if name != "tdnn" else series(15, 16, seed=5))
    script = textwrap.dedent(f"""
        import numpy as np, keras
        from visionkit.models import build
        small = {SMALL!r}
        for name in {SERIES_MODELS!r}:
            shape = (15, 16) if name == "tdnn" else (20, 2)
            model = build(name, input_shape=shape, num_classes=3, **small[name])  # the classification head
            model.load_weights("{tmp_path}/" + name + ".weights.h5")
            x = np.load("{tmp_path}/x.npy") if name != "tdnn" else np.random.default_rng(5).normal(
                size=(2, 15, 16)).astype("float32")
            np.save("{tmp_path}/" + name + ".jax.npy", keras.ops.convert_to_numpy(model(x, training=False)))
        print(keras.backend.backend())
    """)
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "jax"
    for name, values in expected.items():
        np.testing.assert_allclose(np.load(tmp_path / f"{name}.jax.npy"), values, rtol=1e-4, atol=1e-5, err_msg=name)
