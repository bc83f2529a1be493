"""The semantic-segmentation architectures (U-Net, SegNet, FCN-32s/16s/8s, dilated convolutions) and
SegNet's pooling-with-indices layers, against numpy references and parameter counts worked out by hand.

Published figures used: VGG-16's 13 convolutions have 14,714,688 parameters (keras.applications
VGG16(include_top=False); "14.7M" in the SegNet paper, section 3); Yu & Koltun 2016, section 3: the
basic context module has 64·C² weights and a 67x67 receptive field (Table 1); Distill 2019
(Araujo et al.): VGG-16's pool5 sees 212 pixels with a jump of 32.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from visionkit.analysis import layer_table, totals
from visionkit.layers import MaxPoolingWithArgmax2D, MaxUnpooling2D
from visionkit.layers.initializers import BilinearUpsampling, ContextIdentity
from visionkit.models import MODELS, available

SEGMENTATION_MODELS = ("dilated", "fcn16s", "fcn32s", "fcn8s", "segnet", "unet")
SMALL = (64, 64, 3)
CLASSES = 3
VGG16_CONVOLUTIONS = 14_714_688  # keras.applications.VGG16(include_top=False, weights=None).count_params()
VGG16_LAYERS = (
    (3, 64),
    (64, 64),
    (64, 128),
    (128, 128),
    (128, 256),
    (256, 256),
    (256, 256),
    (256, 512),
    (512, 512),
    (512, 512),
    (512, 512),
    (512, 512),
    (512, 512),
)  # (c_in, c_out) of the 13 convolutions


def conv(kernel, c_in, c_out, bias=True):
    """The lectures' formula: K*K*C_in*C_out weights (+ C_out biases)."""
    return kernel * kernel * c_in * c_out + (c_out if bias else 0)


def shapes_only(name, **kwargs):
    with keras.StatelessScope(initialize_variables=False):
        return MODELS.get(name)(**kwargs)


def small(name, **kwargs):
    return MODELS.get(name)(input_shape=SMALL, num_classes=CLASSES, width=0.125, **kwargs)


# --- pooling with indices -------------------------------------------------------------------------------


def numpy_pool(x):
    """2x2 stride-2 max pooling and the row-major index (0..3) of each window's first maximum."""
    b, h, w, c = x.shape
    windows = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4).reshape(b, h // 2, w // 2, c, 4)
    return windows.max(-1), windows.argmax(-1)


def argmax_mask(x):
    """1 where a 2x2 window's (first) maximum is, 0 elsewhere, by plain loops."""
    mask = np.zeros_like(x)
    for b, i, j, c in np.ndindex(x.shape[0], x.shape[1] // 2, x.shape[2] // 2, x.shape[3]):
        window = x[b, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2, c]
        di, dj = np.unravel_index(np.argmax(window), (2, 2))
        mask[b, 2 * i + di, 2 * j + dj, c] = 1
    return mask


def pool_input():
    x = np.random.default_rng(0).normal(size=(2, 6, 8, 3)).astype("float32")
    x[0, :2, :2, 0] = 0.0  # a window of ties, as ReLU makes: the first position wins
    return x


def test_pooling_with_indices_matches_numpy():
    x = pool_input()
    maxima, indices = MaxPoolingWithArgmax2D()(x)
    expected_maxima, expected_indices = numpy_pool(x)
    assert indices.dtype == tf.int32 and tuple(indices.shape) == (2, 3, 4, 3)
    np.testing.assert_array_equal(np.asarray(indices), expected_indices)
    np.testing.assert_array_equal(np.asarray(maxima), expected_maxima)
    assert np.asarray(indices)[0, 0, 0, 0] == 0


def test_unpooling_puts_each_maximum_back_and_zeros_elsewhere():
    x = pool_input()
    restored = np.asarray(MaxUnpooling2D()(list(MaxPoolingWithArgmax2D()(x))))
    np.testing.assert_array_equal(restored, x * argmax_mask(x))
    assert (restored != 0).sum() == (x * argmax_mask(x) != 0).sum()


def test_gradient_of_unpool_after_pool_is_one_at_the_maxima():
    x = tf.constant(pool_input())
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(MaxUnpooling2D()(list(MaxPoolingWithArgmax2D()(x))))
    np.testing.assert_array_equal(tape.gradient(total, x).numpy(), argmax_mask(pool_input()))


def test_pooling_with_indices_needs_an_even_size():
    with pytest.raises(
        ValueError,
        match=r"2x2 pooling with indices needs an even height, received input shape "
        r"\(None, 7, 8, 3\)",
    ):
        MaxPoolingWithArgmax2D(name="pool")(keras.Input((7, 8, 3)))


JAX_CHECK = textwrap.dedent("""
    import json, os
    os.environ["KERAS_BACKEND"] = "jax"
    import jax, jax.numpy as jnp, numpy as np
    from visionkit.layers import MaxPoolingWithArgmax2D, MaxUnpooling2D
    x = jnp.asarray(np.array(json.loads(input()), dtype="float32"))
    pool, unpool = MaxPoolingWithArgmax2D(), MaxUnpooling2D()
    maxima, indices = pool(x)
    grad = jax.grad(lambda v: jnp.sum(unpool(list(pool(v)))))(x)
    print(json.dumps({"maxima": np.asarray(maxima).tolist(), "indices": np.asarray(indices).tolist(),
                      "grad": np.asarray(grad).tolist()}))
""")


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
def test_pooling_with_indices_on_jax():
    x = pool_input()
    done = subprocess.run(
        [sys.executable, "-c", JAX_CHECK],
        input=json.dumps(x.tolist()),
        capture_output=True,
        text=True,
        env={**os.environ, "KERAS_BACKEND": "jax"},
        timeout=300,
        check=True,
    )
    got = json.loads(done.stdout.strip().splitlines()[-1])
    expected_maxima, expected_indices = numpy_pool(x)
    np.testing.assert_array_equal(np.array(got["indices"]), expected_indices)
    np.testing.assert_allclose(np.array(got["maxima"]), expected_maxima)
    np.testing.assert_array_equal(np.array(got["grad"]), argmax_mask(x))


# --- every segmentation model -------------------------------------------------------------------------


def test_the_segmentation_models_are_registered_for_segmentation_only():
    assert set(SEGMENTATION_MODELS) <= set(available("segmentation"))
    for name in SEGMENTATION_MODELS:
        meta = MODELS.meta(name)
        assert meta["tasks"] == ("segmentation",) and meta["paper"] and meta["paper_classes"] >= 2


@pytest.mark.parametrize("name", SEGMENTATION_MODELS)
def test_model_gives_per_pixel_probabilities_and_trains_one_step(name):
    model = small(name)
    again = small(name)
    assert [layer.name for layer in model.layers] == [layer.name for layer in again.layers]
    last = model.layers[-1]
    assert (last.name, last.dtype_policy.compute_dtype) == ("predictions", "float32")
    assert model.layers[1].name == "normalize"  # raw pixels in: the normalisation is the first layer

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, *SMALL)).astype("float32")
    masks = rng.integers(0, CLASSES, (2, *SMALL[:2]))
    probabilities = np.asarray(model(images, training=False))
    assert probabilities.shape == (2, *SMALL[:2], CLASSES)
    assert (probabilities >= 0).all()
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, rtol=1e-5)

    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(), run_eagerly=True
    )  # one eager step takes seconds; compiling SegNet's training graph, longer
    history = model.fit(images, masks, epochs=1, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize("name", SEGMENTATION_MODELS)
def test_every_segmentation_model_has_a_complete_report_at_its_paper_size(name):
    # What tests/test_layer_table.py checks for every model, called without a task.
    meta = MODELS.meta(name)
    model = shapes_only(name, input_shape=meta["paper_input"], num_classes=meta["paper_classes"])
    rows = layer_table(model)
    total = totals(rows)
    assert [row["name"] for row in rows[1:]] == [layer.name for layer in model.layers[1:]]
    assert total["params"] == model.count_params()
    assert total["macs"] > 0 and total["receptive_field"] is not None
    assert rows[-1]["output_shape"] == (*meta["paper_input"][:2], meta["paper_classes"])


def test_logits_when_the_activation_is_dropped():
    model = small("fcn8s", classifier_activation=None)
    scores = np.asarray(model(np.full((1, *SMALL), 128.0, "float32")))
    assert model.layers[-1].activation is keras.activations.linear
    assert not np.allclose(scores.sum(axis=-1), 1.0)


# --- parameter counts ------------------------------------------------------------------------------------


def test_unet_parameter_count_by_hand():
    # Ronneberger et al. 2015, Fig. 1: a 1-channel input, two 3x3 convolutions per level at 64-128-256-512-1024,
    # 2x2 up-convolutions halving the channels, concatenation (doubling them again), 1x1 to 2 classes.
    # 'Same' padding changes no parameter.
    filters = (64, 128, 256, 512, 1024)
    contracting = sum(conv(3, c_in, c) + conv(3, c, c) for c_in, c in zip((1, *filters), filters))
    expanding = sum(conv(2, 2 * c, c) + conv(3, 2 * c, c) + conv(3, c, c) for c in filters[-2::-1])
    expected = contracting + expanding + conv(1, 64, 2)
    assert expected == 31_030_658
    # The 31,031,685 quoted for the popular Keras U-Net (zhixuhao/unet) ends in a 3x3 convolution to 2 channels
    # and a 1x1 sigmoid instead of the paper's 1x1 to 2 classes.
    assert expected - conv(1, 64, 2) + conv(3, 64, 2) + conv(1, 2, 1) == 31_031_685
    model = shapes_only("unet", input_shape=(512, 512, 1), num_classes=2, batch_norm=False)
    assert model.count_params() == expected
    assert [model.get_layer(f"dec{level}_upconv").filters for level in (4, 3, 2, 1)] == [512, 256, 128, 64]
    # With batch norm: bias-free 3x3 convolutions, 4 values per channel (2 trainable).
    with_bn = shapes_only("unet", input_shape=(512, 512, 1), num_classes=2)
    channels = 2 * sum(filters) + 2 * sum(filters[:-1])
    assert with_bn.count_params() == expected - channels + 4 * channels


def test_fcn_parameter_counts_by_hand():
    # Long et al. 2015 on VGG-16, 21 PASCAL VOC classes, as the reference Caffe models: fc6 7x7x512x4096, fc7,
    # 1x1 score layers with bias, bias-free deconvolutions of kernel 4 (2x) and 2f (the final f x); the same layer
    # list as the PyTorch port of those models (pytorch-fcn's FCN8s: score_pool3 256 -> 21, upscore8 16x16).
    assert sum(conv(3, c_in, c_out) for c_in, c_out in VGG16_LAYERS) == VGG16_CONVOLUTIONS
    classifier = VGG16_CONVOLUTIONS + conv(7, 512, 4096) + conv(1, 4096, 4096) + conv(1, 4096, 21)
    up2 = conv(4, 21, 21, bias=False)
    expected = {
        "fcn32s": classifier + conv(64, 21, 21, bias=False),
        "fcn16s": classifier + up2 + conv(1, 512, 21) + conv(32, 21, 21, bias=False),  # + score_pool4
        "fcn8s": classifier + 2 * up2 + conv(1, 512, 21) + conv(1, 256, 21) + conv(16, 21, 21, bias=False),
    }
    assert expected["fcn8s"] == 134_489_759
    for name, count in expected.items():
        model = shapes_only(name, input_shape=(512, 512, 3), num_classes=21)
        assert model.count_params() == count, name
    # The paper's skips: pool4 (512 channels) and pool3 (256), not the trunk's conv5_3 and conv4_3 taps.
    assert model.get_layer("score8").input.shape[-1] == 256


def test_segnet_parameter_count_by_hand():
    # Encoder: VGG-16's 13 convolutions (the paper's 14.7M), each with batch norm (4 values per channel).
    # Decoder: the same convolutions mirrored, each block's last narrowing to the next block's width.
    model = shapes_only("segnet", input_shape=(352, 480, 3), num_classes=11)
    encoder = VGG16_CONVOLUTIONS + 4 * sum(c for _, c in VGG16_LAYERS)
    mirrored = [(c_out, c_in) for c_in, c_out in VGG16_LAYERS[::-1]]
    mirrored[-1] = (64, 64)  # decoder1_conv1 keeps 64 channels for the classifier
    decoder = sum(conv(3, c_in, c_out) + 4 * c_out for c_in, c_out in mirrored)
    assert model.count_params() == encoder + decoder + conv(1, 64, 11)
    convolutions = [layer for layer in model.layers if layer.name.startswith("block") and "_conv" in layer.name]
    assert sum(layer.count_params() for layer in convolutions) == VGG16_CONVOLUTIONS


def test_dilated_parameter_count_by_hand():
    front_end = VGG16_CONVOLUTIONS + conv(7, 512, 4096) + conv(1, 4096, 4096) + conv(1, 4096, 21)
    basic = 7 * conv(3, 21, 21) + conv(1, 21, 21)
    model = shapes_only("dilated", input_shape=(512, 512, 3), num_classes=21)
    assert model.count_params() == front_end + basic
    # Yu & Koltun, section 3: the basic module has 64 C^2 weights (7 layers of 9 C^2, one of C^2), plus biases.
    context = [layer for layer in model.layers if layer.name.startswith("ctx_")]
    assert sum(int(np.prod(layer.kernel.shape)) for layer in context) == 64 * 21**2
    large = shapes_only("dilated", input_shape=(512, 512, 3), num_classes=21, context="large")
    widths = (1, 2, 2, 4, 8, 16, 32, 32)
    assert large.count_params() == front_end + sum(conv(3, 21 * a, 21 * b) for a, b in zip(widths, widths[1:])) + conv(
        1, 32 * 21, 21
    )
    assert shapes_only("dilated", input_shape=(512, 512, 3), num_classes=21, context="none").count_params() == front_end


# --- geometry ------------------------------------------------------------------------------------------


def test_receptive_fields_through_pooling_indices_and_dilations():
    segnet = {row["name"]: row for row in layer_table(shapes_only("segnet", input_shape=(352, 480, 3), num_classes=11))}
    # The encoder is VGG-16 with batch norm: pool5 sees 212 pixels, jump 32 (Distill 2019); unpooling halves the
    # jump and, each output coming from one input, keeps the field.
    assert (segnet["block5_pool"]["receptive_field"], segnet["block5_pool"]["jump"]) == (212, 32)
    assert (segnet["decoder5_unpool"]["receptive_field"], segnet["decoder5_unpool"]["jump"]) == (212, 16)
    assert segnet["block5_pool"]["output_shape"] == ((11, 15, 512), (11, 15, 512))

    rows = {row["name"]: row for row in layer_table(shapes_only("dilated", input_shape=(512, 512, 3), num_classes=21))}
    # Table 1: the context module's layer 7 sees 67x67 of its stride-8 input, i.e. 66 steps of 8 pixels more.
    assert rows["ctx_conv7"]["receptive_field"] - rows["fc_final"]["receptive_field"] == 66 * 8
    assert rows["fc_final"]["jump"] == 8 and rows["fc6"]["dilation"] == (4, 4)
    assert rows["block5_conv1"]["output_shape"] == (64, 64, 512)  # no pool4: still stride 8


def test_bilinear_initialisation_interpolates_like_upsampling2d():
    x = np.random.default_rng(0).normal(size=(1, 8, 8, 2)).astype("float32")
    for factor in (2, 8, 32):
        up = keras.layers.Conv2DTranspose(
            2, 2 * factor, strides=factor, padding="same", use_bias=False, kernel_initializer=BilinearUpsampling()
        )
        bilinear = keras.layers.UpSampling2D(factor, interpolation="bilinear")
        inner = slice(factor, -factor)  # at the borders the transposed convolution sees zero padding
        np.testing.assert_allclose(
            np.asarray(up(x))[:, inner, inner], np.asarray(bilinear(x))[:, inner, inner], atol=1e-5
        )


def test_identity_initialisation_passes_the_input_through():
    x = np.random.default_rng(0).normal(size=(1, 16, 16, 5)).astype("float32")
    basic = keras.layers.Conv2D(5, 3, dilation_rate=4, padding="same", kernel_initializer=ContextIdentity(5))
    np.testing.assert_allclose(np.asarray(basic(x)), x, atol=1e-6)
    # The large module (eq. 4): C -> 4C copies channel a to outputs 4a..4a+3 at weight C / 4C = 1/4, 4C -> C sums
    # each group of copies back at weight 1; elsewhere, and off the centre tap, noise of 1% of that weight.
    widen = np.asarray(ContextIdentity(5, seed=1)((3, 3, 5, 20)))
    copies = np.zeros((3, 3, 5, 20), "float32")
    copies[1, 1] = np.kron(np.eye(5), np.ones(4)) / 4
    assert 0 < np.abs(widen - copies).std() < 0.01 / 4 * 1.2 and np.abs(widen - copies).max() < 0.01 / 4 * 5
    narrow = np.asarray(ContextIdentity(5, seed=2)((1, 1, 20, 5)))
    np.testing.assert_allclose(narrow[0, 0], np.kron(np.eye(5), np.ones(4)).T, atol=0.01 * 5)


# --- encoders and errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("encoder, decoder_levels", [("resnet18", (5, 4, 3, 2, 1)), ("vgg11", (5, 4, 3, 2, 1))])
def test_unet_on_a_zoo_encoder(encoder, decoder_levels):
    model = small("unet", encoder=encoder)
    assert model.output_shape == (None, *SMALL[:2], CLASSES)
    assert [
        level for level in decoder_levels if f"dec{level}_upconv" in {layer.name for layer in model.layers}
    ] == list(decoder_levels)
    # the trunk's stride-2 map is concatenated at stride 2; nothing at stride 1
    concat = model.get_layer("dec2_concat")
    assert concat.input[0].shape[1:3] == (32, 32) and "dec1_concat" not in {layer.name for layer in model.layers}
    probabilities = np.asarray(model(np.zeros((1, *SMALL), "float32")))
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        (
            "unet",
            {"input_shape": (100, 64, 3)},
            r"unet: input height and width must be multiples of 16 \(four 2x2 "
            r"poolings\), received \(100, 64, 3\); nearest valid sizes: height 100 "
            r"-> 96 or 112$",
        ),
        (
            "segnet",
            {"input_shape": (48, 80, 3)},
            r"segnet: input height and width must be multiples of 32 .*received "
            r"\(48, 80, 3\); nearest valid sizes: height 48 -> 32 or 64, width 80 "
            r"-> 64 or 96$",
        ),
        ("fcn8s", {"input_shape": (64, 72, 3)}, r"fcn8s: .* multiples of 32 .*width 72 -> 64 or 96$"),
        ("dilated", {"input_shape": (60, 64, 3)}, r"dilated: .* multiples of 8 .*height 60 -> 56 or 64$"),
        (
            "unet",
            {"input_shape": (64, 64, 3), "num_classes": None},
            r"unet: num_classes must be an integer >= 1 .*"
            r"received None",
        ),
        ("unet", {"encoder": "resnt34"}, r"unet: unknown encoder 'resnt34' \(did you mean 'resnet34'\?\); available: "),
        ("unet", {"encoder": "segnet"}, r"unet: encoder 'segnet' is not a classification trunk; available: alexnet"),
        ("unet", {"encoder": "lenet5"}, r"unet: encoder 'lenet5' is unsuitable: its stride-2 map is 30x30, not 32x32"),
        (
            "fcn16s",
            {"backbone": "alphago_policy"},
            r"fcn16s: backbone 'alphago_policy' is unsuitable: it names no "
            r"down-sampled",
        ),
        ("fcn8s", {"backbone": "vgg16x"}, r"fcn8s: unknown backbone 'vgg16x' \(did you mean 'vgg16'\?\)"),
        ("dilated", {"context": "huge"}, r"dilated: context must be one of basic, large, none, received 'huge'"),
    ],
)
def test_bad_arguments_are_named(name, kwargs, message):
    arguments = {"input_shape": SMALL, "num_classes": CLASSES, "width": 0.125, **kwargs}
    with pytest.raises(ValueError, match=message):
        MODELS.get(name)(**arguments)


# --- saving -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["segnet", "fcn8s", "dilated"])
def test_keras_file_round_trip_in_safe_mode(name, tmp_path):
    # Custom layers (SegNet) and initialisers (FCN, dilated) are registered, so safe_mode=True loads them.
    model = small(name)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    images = np.random.default_rng(0).integers(0, 256, (1, *SMALL)).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(images)), np.asarray(model(images)), atol=1e-6)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
