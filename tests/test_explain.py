"""visionkit.explain against independent computations: captum's expected tensors for a hand-set network,
numpy unpooling, scipy's Spearman; and the failures other libraries have (nested models, Sequential
models, mixed precision, standalone ReLU layers). The checks in BACKEND_CHECKS also run on JAX, in a
subprocess (the backend is fixed when keras is imported)."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from keras import layers
from scipy.stats import spearmanr

from visionkit.errors import UserError
from visionkit.explain import (
    activations,
    conv_kernel,
    deconvnet,
    gradcam,
    guided_backprop,
    guided_gradcam,
    input_gradient,
    layer_paths,
    occlusion,
    pointing_game,
    randomisation_check,
    rank_correlation,
    resolve_layer,
    saliency,
    target_weights,
    top_patches,
)
from visionkit.explain.pictures import activation_grid, filter_grid, overlay
from visionkit.explain.render import METHODS, RANDOMISABLE, Options, randomisation_spearman, render
from visionkit.models import MODELS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAPTUM_INPUT = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)


def captum_net() -> keras.Model:
    """captum's BasicModel_ConvNet_One_Conv (tests/attr/helpers/basic_models.py), channels last: conv1 (ones,
    bias -50, -75) -> relu1 -> flattened channel-first -> fc1 (five +1 and three -1 weights) -> relu2."""
    inputs = keras.Input((4, 4, 1))
    x = layers.ReLU(name="relu1")(layers.Conv2D(2, 3, name="conv1")(inputs))
    x = layers.Flatten()(layers.Permute((3, 1, 2))(x))  # PyTorch's view(-1, 8) of an NCHW map
    model = keras.Model(inputs, layers.ReLU(name="relu2")(layers.Dense(4, name="fc1")(x)))
    model.get_layer("conv1").set_weights([np.ones((3, 3, 1, 2)), np.array([-50.0, -75.0])])
    model.get_layer("fc1").set_weights([np.concatenate([np.ones((5, 4)), -np.ones((3, 4))]), np.zeros(4)])
    return model


def check_captum_guided_backprop():  # test_guided_backprop.py: test_simple_input_conv_gb
    expected = [[0, 1, 1, 1], [1, 3, 3, 2], [1, 3, 3, 2], [1, 2, 2, 1]]
    np.testing.assert_allclose(guided_backprop(captum_net(), CAPTUM_INPUT, class_index=0)[0, ..., 0], expected)


def check_captum_deconvolution():  # test_deconvolution.py: test_simple_input_conv_deconv and its neuron variant
    expected = [[2, 3, 3, 1], [3, 5, 5, 2], [3, 5, 5, 2], [1, 2, 2, 1]]
    model = captum_net()
    np.testing.assert_allclose(deconvnet(model, CAPTUM_INPUT, class_index=0)[0, ..., 0], expected)
    np.testing.assert_allclose(deconvnet(model, CAPTUM_INPUT, layer="fc1", channel=0)[0, ..., 0], expected)


def check_captum_grad_cam():  # layer/test_grad_cam.py: test_simple_input_conv, test_simple_input_conv_relu
    model = captum_net()
    conv = gradcam(model, CAPTUM_INPUT, layer="conv1", class_index=0, relu=False, resize=False)
    np.testing.assert_allclose(conv[0], [[11.25, 13.5], [20.25, 22.5]], rtol=1e-6)
    relu = gradcam(model, CAPTUM_INPUT, layer="relu1", class_index=0, relu=False, resize=False)
    np.testing.assert_allclose(relu[0], [[0.0, 4.0], [28.0, 32.5]], rtol=1e-6)


def check_captum_guided_grad_cam():  # test_guided_grad_cam.py: test_simple_input_conv
    expected = [[0, 0, 4, 4], [0, 0, 12, 8], [28, 84, 97.5, 65], [28, 56, 65, 32.5]]
    maps = guided_gradcam(captum_net(), CAPTUM_INPUT, layer="relu1", class_index=0, interpolation="nearest")
    np.testing.assert_allclose(maps[0, ..., 0], expected, rtol=1e-6)


def check_unpooling_at_switches():
    """The DeconvNet's pass down a max pooling puts each value at its window's maximum and 0 elsewhere."""
    rng = np.random.default_rng(0)
    images = rng.permutation(2 * 6 * 6 * 2).reshape(2, 6, 6, 2).astype("float32")  # no ties
    inputs = keras.Input((6, 6, 2))
    pooled = layers.MaxPooling2D(2, name="pool")(inputs)
    model = keras.Model(inputs, layers.Dense(1, name="out")(layers.Flatten()(pooled)))
    values = rng.uniform(0.5, 2.0, (18, 1)).astype("float32")
    model.get_layer("out").set_weights([values, np.zeros(1)])
    projected = deconvnet(model, images, class_index=0)
    windows = images.reshape(2, 3, 2, 3, 2, 2).transpose(0, 1, 3, 5, 2, 4).reshape(2, 3, 3, 2, 4)
    switches = windows.argmax(axis=-1)  # numpy's unpooling: the value at (2i + s // 2, 2j + s % 2)
    expected = np.zeros_like(images)
    for b, i, j, c in np.ndindex(2, 3, 3, 2):
        s = switches[b, i, j, c]
        expected[b, 2 * i + s // 2, 2 * j + s % 2, c] = values.reshape(3, 3, 2)[i, j, c]
    np.testing.assert_array_equal(projected, expected)


def block(name: str, relu: str) -> list[layers.Layer]:
    """A conv + ReLU with the ReLU written three ways: inside the conv, a ReLU layer, an Activation layer."""
    if relu == "inline":
        return [layers.Conv2D(4, 3, padding="same", activation="relu", name=name)]
    after = layers.ReLU(name=f"{name}_relu") if relu == "layer" else layers.Activation("relu", name=f"{name}_relu")
    return [layers.Conv2D(4, 3, padding="same", name=name), after]


def nested_model(relu: str = "layer", seed: int = 1) -> keras.Model:
    """A functional trunk and a Sequential block nested in a functional classifier with a softmax."""
    keras.utils.set_random_seed(seed)
    trunk_in = keras.Input((8, 8, 3))
    x = trunk_in
    for layer in block("conv1", relu):
        x = layer(x)
    x = layers.Identity(name="stride2")(layers.MaxPooling2D(2, name="pool1")(x))
    trunk = keras.Model(trunk_in, x, name="encoder")
    head = keras.Sequential(
        [*block("conv2", relu), layers.BatchNormalization(name="bn"), layers.Dropout(0.5, name="drop")], name="head"
    )
    inputs = keras.Input((8, 8, 3))
    x = layers.GlobalAveragePooling2D(name="gap")(head(trunk(inputs)))
    return keras.Model(inputs, layers.Dense(3, activation="softmax", name="predictions")(x), name="nested")


def images_for(model, count=2, seed=0) -> np.ndarray:
    shape = (count, *model.input_shape[1:]) if model.built else (count, 8, 8, 3)
    return np.random.default_rng(seed).uniform(0, 1, shape).astype("float32")


def every_method(model, images, layer: str) -> dict[str, np.ndarray]:
    return {
        "saliency": saliency(model, images),
        "guided_backprop": guided_backprop(model, images),
        "deconvnet": deconvnet(model, images, layer=layer),
        "gradcam": gradcam(model, images, layer=layer),
        "guided_gradcam": guided_gradcam(model, images, layer=layer),
        "occlusion": occlusion(model, images, size=4, stride=2),
        "activations": activations(model, images, layer),
    }


def check_methods_shapes(model, images, layer, activation_shape):
    maps = every_method(model, images, layer)
    expected = {
        "saliency": images.shape[:3],
        "gradcam": images.shape[:3],
        "occlusion": images.shape[:3],
        "activations": (len(images), *activation_shape),
    }
    for name, value in maps.items():
        assert value.dtype == np.float32, name
        assert value.shape == expected.get(name, images.shape), name
        assert np.all(np.isfinite(value)), name
        assert np.abs(value).max() > 0, name
    return maps


def check_nested_model():
    model = nested_model()
    assert resolve_layer(model, "stride2") == "encoder/stride2"
    assert resolve_layer(model, "head/conv2") == "head/conv2"
    check_methods_shapes(model, images_for(model), "encoder/stride2", (4, 4, 4))
    check_methods_shapes(model, images_for(model), "conv2_relu", (4, 4, 4))


def check_uncalled_sequential():
    keras.utils.set_random_seed(2)
    model = keras.Sequential(
        [*block("conv1", "layer"), layers.MaxPooling2D(2), layers.Flatten(), layers.Dense(3, activation="softmax")]
    )
    check_methods_shapes(model, images_for(model), "conv1_relu", (8, 8, 4))


def check_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = nested_model()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("encoder").get_layer("conv1").compute_dtype == "float16"
    maps = check_methods_shapes(model, images_for(model), "encoder/stride2", (4, 4, 4))
    float32_model = nested_model()  # the same seed: the same weights in float32
    np.testing.assert_allclose(maps["gradcam"], gradcam(float32_model, images_for(model), layer="stride2"), rtol=1e-5)
    assert model.get_layer("encoder").get_layer("conv1").compute_dtype == "float16"  # the policy is put back


def check_every_relu_is_overridden():
    """Guided backprop and DeconvNet give the same maps whichever way the ReLU is written, and differ
    from the plain gradient (an override that missed a ReLU layer would give the plain one there)."""
    images = images_for(nested_model())
    for rule in ("guided", "deconvnet"):
        maps = [input_gradient(nested_model(relu), images, rule=rule) for relu in ("inline", "layer", "activation")]
        np.testing.assert_allclose(maps[1], maps[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(maps[2], maps[0], rtol=1e-5, atol=1e-6)
        assert np.abs(maps[0] - input_gradient(nested_model("layer"), images)).max() > 1e-6


BACKEND_CHECKS = [
    check_captum_guided_backprop,
    check_captum_deconvolution,
    check_captum_grad_cam,
    check_captum_guided_grad_cam,
    check_unpooling_at_switches,
    check_nested_model,
    check_uncalled_sequential,
    check_mixed_precision,
    check_every_relu_is_overridden,
]


@pytest.mark.parametrize("check", BACKEND_CHECKS, ids=lambda check: check.__name__[len("check_") :])
def test_tensorflow(check):
    check()


JAX_GROUPS = {
    "hand_set": slice(0, 5),  # captum's network and the unpooling: small, so cheap to compile
    "models": slice(5, None),
}


@pytest.mark.parametrize(
    "group", [pytest.param("hand_set"), pytest.param("models", marks=pytest.mark.slow)]
)  # JAX compiles every new op shape on first use: the model checks take a minute on two CPU cores
def test_jax_backend(group):
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {os.path.join(ROOT, "tests")!r})
        from test_explain import BACKEND_CHECKS
        checks = BACKEND_CHECKS[{JAX_GROUPS[group].start}:{JAX_GROUPS[group].stop}]
        for check in checks:
            check()
        print("all", len(checks), "checks passed")
        """
    )
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"all {len(BACKEND_CHECKS[JAX_GROUPS[group]])} checks passed" in done.stdout


def test_softmax_is_bypassed():
    softmax = nested_model()
    linear = nested_model()
    linear.get_layer("predictions").activation = keras.activations.linear
    images = images_for(softmax)
    np.testing.assert_allclose(saliency(softmax, images), saliency(linear, images), rtol=1e-5)
    np.testing.assert_allclose(
        gradcam(softmax, images, layer="stride2", class_index=1),
        gradcam(linear, images, layer="stride2", class_index=1),
        rtol=1e-5,
    )


def test_target_weights_for_each_task():
    classes = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]])
    np.testing.assert_array_equal(target_weights(classes), [[0, 1, 0], [1, 0, 0]])
    np.testing.assert_array_equal(target_weights(classes, class_index=2), [[0, 0, 1], [0, 0, 1]])
    np.testing.assert_array_equal(target_weights(np.zeros((2, 2)), class_index=[1, 0]), [[0, 1], [1, 0]])
    logits = np.zeros((1, 2, 2, 3))
    logits[0, 0, :, 2] = 5.0  # the top row predicted as class 2
    by_prediction = target_weights(logits, class_index=2)
    np.testing.assert_array_equal(by_prediction[0, ..., 2], [[0.5, 0.5], [0, 0]])
    assert by_prediction[..., :2].sum() == 0
    region = target_weights(logits, class_index=1, region=np.array([[[1, 0], [1, 1]]]))
    np.testing.assert_allclose(region[0, ..., 1], [[1 / 3, 0], [1 / 3, 1 / 3]])
    with pytest.raises(UserError, match="class_index 3 is outside the model's 3 outputs"):
        target_weights(classes, class_index=3)


def segmentation_model() -> keras.Model:
    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.UpSampling2D(2, name="up")(x)
    return keras.Model(inputs, layers.Conv2D(3, 1, activation="softmax", name="predictions")(x))


def test_segmentation_gradcam_over_a_region():
    model, images = segmentation_model(), images_for(segmentation_model())
    left = np.zeros((2, 8, 8), bool)
    left[:, :, :4] = True
    whole = gradcam(model, images, layer="pool", class_index=1, relu=False)
    half = gradcam(model, images, layer="pool", class_index=1, region=left, relu=False)
    assert whole.shape == half.shape == (2, 8, 8) and np.abs(whole - half).max() > 0
    assert occlusion(model, images, size=4, stride=4, class_index=1, region=left).shape == (2, 8, 8)


def test_randomisation_changes_the_maps():
    model, images = nested_model(), images_for(nested_model(), count=3)
    weights = [w.numpy().copy() for w in model.weights]
    rho_saliency = randomisation_check(model, images, lambda m, x: saliency(m, x, class_index=0), top=2)
    rho_gradcam = randomisation_check(model, images, lambda m, x: gradcam(m, x, layer="stride2", class_index=0), top=2)
    assert -1 <= rho_saliency < 0.9 and -1 <= rho_gradcam < 0.9
    for before, after in zip(weights, model.weights):  # the model is put back
        np.testing.assert_array_equal(before, after.numpy())
    same = randomisation_check(model, images, lambda m, x: np.broadcast_to(x.sum(-1), x.shape[:3]), top=2)
    assert same == pytest.approx(1.0)  # a map that ignores the model passes the randomisation unchanged


def test_rank_correlation_matches_scipy():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(3, 5, 5)), rng.normal(size=(3, 5, 5))
    expected = [spearmanr(np.abs(x).ravel(), np.abs(y).ravel())[0] for x, y in zip(a, b)]
    np.testing.assert_allclose(rank_correlation(a, b), expected, rtol=1e-6)
    np.testing.assert_allclose(rank_correlation(a, np.exp(np.abs(a))), 1.0)


def test_pointing_game():
    maps = np.zeros((3, 10, 10))
    maps[0, 2, 3] = maps[1, 9, 9] = maps[2, 5, 5] = 1.0
    boxes = np.array([[2, 1, 5, 4], [0, 0, 4, 4], [6, 6, 10, 10]], float)  # x0, y0, x1, y1
    result = pointing_game(maps, boxes)
    assert result["pointing_game"] == pytest.approx(1 / 3)
    assert result["pointing_game_centre"] == pytest.approx(0.0)  # the centre pixel (4, 4) is in none
    assert pointing_game(maps, boxes, tolerance=2)["pointing_game"] == pytest.approx(2 / 3)


def test_top_patches_find_the_bright_dot():
    """A 3x3 filter weighting its centre twice responds most where a bright dot is; its patch is the dot's 3x3
    neighbourhood (receptive field 3 from the layer table), and images without a dot come last."""
    inputs = keras.Input((9, 9, 1))
    model = keras.Model(inputs, layers.Conv2D(1, 3, padding="same", use_bias=False, name="conv")(inputs))
    model.get_layer("conv").set_weights([np.pad([[[[2.0]]]], ((1, 1), (1, 1), (0, 0), (0, 0)), constant_values=1.0)])
    images = np.zeros((4, 9, 9, 1), "float32")
    images[1, 4, 6], images[3, 2, 2], images[3, 0, 0] = 100.0, 200.0, 10.0
    found = top_patches(model, images, "conv", k=3)
    assert found.receptive_field == 3
    assert list(found.image_indices[0]) == [3, 1, 0]
    np.testing.assert_array_equal(found.boxes[0, :2], [[1, 1, 4, 4], [3, 5, 6, 8]])
    assert found.patches.shape == (1, 3, 3, 3, 1) and found.patches[0, 0, 1, 1, 0] == 200.0


def test_filter_and_activation_pictures():
    model = nested_model()
    path, kernel = conv_kernel(model)
    assert path == "encoder/conv1" and kernel.shape == (3, 3, 3, 4)
    assert filter_grid(kernel, scale=1).shape == (2 * 3 + 1, 2 * 3 + 1, 3)  # 4 RGB tiles, 2x2
    assert filter_grid(conv_kernel(model, "conv2")[1], scale=1).shape == (4 * 4 - 1, 4 * 4 - 1, 3)
    maps = activations(model, images_for(model), "head/conv2_relu")
    assert activation_grid(maps[0], scale=1).shape == (9, 9, 3)
    picture = overlay(images_for(model)[0], maps[0, ..., 0].repeat(2, 0).repeat(2, 1))
    assert picture.dtype == np.uint8 and picture.shape == (8, 8, 3)


def test_layer_errors():
    model = nested_model()
    message = r"unknown layer 'conv_2' in model 'nested' \(did you mean 'head/conv2'\?\); available: encoder, "
    with pytest.raises(UserError, match=message):
        resolve_layer(model, "conv_2")
    assert list(layer_paths(model))[:4] == ["encoder", "encoder/conv1", "encoder/conv1_relu", "encoder/pool1"]
    with pytest.raises(UserError, match="'predictions' is a Dense, not a Conv2D"):
        conv_kernel(model, "predictions")
    with pytest.raises(UserError, match="gradcam needs a layer with a spatial output; 'gap' gives shape"):
        gradcam(model, images_for(model), layer="gap")


@pytest.mark.parametrize("method", METHODS)
def test_render_draws_every_method(method):
    model = nested_model()
    picture = render(model, images_for(model), method, Options(occlusion_size=4, occlusion_stride=4))
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[-1] == 3
    assert picture.min() < picture.max()


def test_render_errors_and_randomisation_figure():
    model = nested_model()
    with pytest.raises(UserError, match="unknown explain method 'gradcamm'; available: filters, activations, "):
        render(model, images_for(model), "gradcamm")
    for method in RANDOMISABLE:
        assert -1.0 <= randomisation_spearman(model, images_for(model), method) < 0.9


IMAGE_MODELS = [
    name
    for name in MODELS.names()
    if MODELS.meta(name).get("modality") != "series" and MODELS.meta(name)["tasks"] != ("detection",)
]


@pytest.mark.slow
@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_every_zoo_model(name):
    """Grad-CAM at the default layer and guided backprop of each image model of the zoo, at a quarter width."""
    meta, builder = MODELS.meta(name), MODELS.get(name)
    board = min(meta["paper_input"][:2]) < 32  # alphago_policy: its board size and classes are fixed
    shape = meta["paper_input"] if board else (64, 64, meta["paper_input"][-1])
    options = {"width": 0.25} if "width" in inspect.signature(builder).parameters else {}
    model = builder(input_shape=shape, num_classes=meta["paper_classes"] if board else 3, **options)
    images = np.random.default_rng(0).uniform(0, 255, (1, *shape)).astype("float32")
    cam, guided = gradcam(model, images), guided_backprop(model, images)
    assert cam.shape == (1, *shape[:2]) and guided.shape == images.shape
    assert np.all(np.isfinite(cam)) and np.all(np.isfinite(guided)) and np.abs(guided).max() > 0
