import keras
import numpy as np
import pytest

from visionkit.models import MODELS
from visionkit.models.common import auxiliary_outputs, feature_maps, inference_model
from visionkit.models.transfer import copy_weights
from visionkit.outputs import AUX_LOSS_WEIGHT, MAIN_OUTPUT

# Tracing the training step of these 150- to 700-layer graphs takes minutes on a 2-core CPU; one
# eager step runs the same forward and backward pass, losses and optimizer update in seconds.
EAGER = {"run_eagerly": True}

# Szegedy et al. 2015, Table 1, transcribed independently of googlenet.py: module -> (input channels,
# #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj, "params" column in thousands).
GOOGLENET_TABLE_1 = {
    "3a": (192, 64, 96, 128, 16, 32, 32, 159),
    "3b": (256, 128, 128, 192, 32, 96, 64, 380),
    "4a": (480, 192, 96, 208, 16, 48, 64, 364),
    "4b": (512, 160, 112, 224, 24, 64, 64, 437),
    "4c": (512, 128, 128, 256, 24, 64, 64, 463),
    "4d": (512, 112, 144, 288, 32, 64, 64, 580),
    "4e": (528, 256, 160, 320, 32, 128, 128, 840),
    "5a": (832, 256, 160, 320, 32, 128, 128, 1072),
    "5b": (832, 384, 192, 384, 48, 128, 128, 1388),
}


def conv_params(inputs, filters, kernel):
    return kernel * kernel * inputs * filters + filters


def inception_params(inputs, n1, r3, n3, r5, n5, proj):
    return (
        conv_params(inputs, n1, 1)
        + conv_params(inputs, r3, 1)
        + conv_params(r3, n3, 3)
        + conv_params(inputs, r5, 1)
        + conv_params(r5, n5, 5)
        + conv_params(inputs, proj, 1)
    )


def run(model, images):
    """A forward pass in inference mode, as numpy (eager: no predict function to trace)."""
    return keras.tree.map_structure(keras.ops.convert_to_numpy, model(images, training=False))


def googlenet(**kwargs):
    return MODELS.get("googlenet")(**kwargs)


@pytest.fixture(scope="module")
def googlenet_224():
    return googlenet(input_shape=(224, 224, 3), num_classes=1000, aux_classifiers=False)


def test_googlenet_inception_modules_have_table_1_filters(googlenet_224):
    for module, (inputs, *filters, table_thousands) in GOOGLENET_TABLE_1.items():
        prefix = f"inception_{module}_"
        ours = sum(layer.count_params() for layer in googlenet_224.layers if layer.name.startswith(prefix))
        assert ours == inception_params(inputs, *filters), module
        n1, _, n3, _, n5, proj = filters
        assert googlenet_224.get_layer(f"{prefix}concat").output.shape[-1] == n1 + n3 + n5 + proj
        # Table 1's "params" column does not follow from its own filter counts: the exact counts are
        # 2.3% (3b) to 10.2% (4c) above it and 2.7% below it for 5a, weights alone or with biases
        # (4c: 509,440 weights, table 463K). So the table figure is checked loosely; the filters exactly.
        assert abs(ours / (1000 * table_thousands) - 1) < 0.11, (module, ours, table_thousands)


def test_googlenet_parameter_count(googlenet_224):
    # Without auxiliary heads, at 224x224x3 and 1000 classes (weights + biases):
    #   conv1 7x7x3x64 + 64 = 9,472; conv2 1x1x64x64 + 64 = 4,160 and 3x3x64x192 + 192 = 110,784;
    #   inception 3a..5b (inception_params above) = 163,696 + 388,736 + 376,176 + 449,160 + 510,104
    #   + 605,376 + 868,352 + 1,043,456 + 1,444,080 = 5,849,136; linear 1024x1000 + 1000 = 1,025,000;
    #   total 6,998,552 -- the count of the reference Caffe model (BVLC GoogLeNet) without its side
    #   classifiers, and 3% above the 6.8M sum of Table 1's params column (see the test above).
    modules = sum(inception_params(inputs, *filters) for inputs, *filters, _ in GOOGLENET_TABLE_1.values())
    assert modules == 5_849_136
    assert 9_472 + 4_160 + 110_784 + modules + 1_025_000 == 6_998_552
    assert googlenet_224.count_params() == 6_998_552
    assert abs(6_998_552 / 6_797_700 - 1) < 0.03  # Table 1: 2.7K + 112K + sum of modules + 1000K = 6,797.7K
    # Section 5's heads: 1x1 conv 128 (on 512 and 528 channels), FC 4x4x128 -> 1024, linear 1024 -> 1000:
    #   65,664 + 2,098,176 + 1,025,000 = 3,188,840 and 67,712 + 2,098,176 + 1,025,000 = 3,190,888.
    with_aux = googlenet(input_shape=(224, 224, 3), num_classes=1000)
    assert with_aux.count_params() == 6_998_552 + 3_188_840 + 3_190_888 == 13_378_280
    assert with_aux.get_layer("aux1_pool").output.shape[1:3] == (4, 4)


@pytest.mark.parametrize("size", [64, 32])
def test_googlenet_trains_with_its_auxiliary_heads(size):
    model = googlenet(input_shape=(size, size, 3), num_classes=3, width=0.25)
    assert sorted(model.output) == ["aux1", "aux2", MAIN_OUTPUT]
    assert auxiliary_outputs(model) == ["aux1", "aux2"]
    # The 5x5/3 pooling needs a 5x5 map; at these sizes (4x4 and 2x2 at stride 16) it is skipped.
    assert "aux1_pool" not in [layer.name for layer in model.layers]
    names = [MAIN_OUTPUT, *auxiliary_outputs(model)]
    model.compile(
        optimizer="adam",
        loss={n: "sparse_categorical_crossentropy" for n in names},
        loss_weights={n: 1.0 if n == MAIN_OUTPUT else AUX_LOSS_WEIGHT for n in names},
        **EAGER,
    )
    images = np.random.default_rng(0).integers(0, 256, (4, size, size, 3)).astype("uint8")
    labels = np.array([0, 1, 2, 0])
    history = model.fit(images, {n: labels for n in names}, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    outputs = run(model, images)
    for name in names:
        assert outputs[name].shape == (4, 3)
        np.testing.assert_allclose(outputs[name].sum(axis=1), 1.0, rtol=1e-5)


def test_googlenet_inference_model_drops_the_auxiliary_heads():
    model = googlenet(input_shape=(64, 64, 3), num_classes=3, width=0.25)
    served = inference_model(model)
    assert not isinstance(served.output, dict) and served.output_shape == (None, 3)
    assert auxiliary_outputs(served) == []
    assert len(served.weights) < len(model.weights)
    images = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3)).astype("uint8")
    np.testing.assert_array_equal(run(served, images), run(model, images)[MAIN_OUTPUT])


def test_googlenet_regression_heads_are_linear():
    model = googlenet(input_shape=(64, 64, 3), num_classes=2, width=0.25, classifier_activation=None)
    for name in ("predictions", "aux1", "aux2"):
        layer = model.get_layer(name)
        assert layer.activation is keras.activations.linear and layer.dtype_policy.compute_dtype == "float32"
    single = googlenet(input_shape=(64, 64, 3), num_classes=2, width=0.25, aux_classifiers=False)
    assert not isinstance(single.output, dict) and auxiliary_outputs(single) == []


def test_googlenet_keras_file_round_trip(tmp_path):
    model = googlenet(input_shape=(64, 64, 3), num_classes=3, width=0.25)
    path = tmp_path / "googlenet.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    images = np.random.default_rng(2).integers(0, 256, (2, 64, 64, 3)).astype("uint8")
    expected, actual = run(model, images), run(loaded, images)
    assert sorted(actual) == sorted(expected)
    for name in expected:
        np.testing.assert_array_equal(actual[name], expected[name])


DENSENETS = {"densenet121": (6, 12, 24, 16), "densenet169": (6, 12, 32, 32), "densenet201": (6, 12, 48, 32)}
# Compiling the deeper variants' training step takes a while on a 2-core CPU.
DEEP = {"densenet169", "densenet201"}


def densenets():
    return [pytest.param(name, marks=[pytest.mark.slow] if name in DEEP else []) for name in DENSENETS]


@pytest.mark.parametrize(
    "name, expected", [("densenet121", 8_062_504), ("densenet169", 14_307_880), ("densenet201", 20_242_984)]
)
def test_densenet_parameter_counts(name, expected):
    # keras.applications.DenseNet121/169/201(weights=None), 224x224x3, 1000 classes (BN statistics included).
    assert MODELS.get(name)(input_shape=(224, 224, 3), num_classes=1000).count_params() == expected


@pytest.mark.parametrize("name", densenets())
def test_densenet_takes_keras_applications_weights(name):
    application = getattr(keras.applications, name.replace("densenet", "DenseNet"))
    theirs = application(weights=None, input_shape=(64, 64, 3), classes=10)
    rng = np.random.default_rng(3)
    for layer in theirs.layers:  # non-trivial batch normalisation, so a misplaced weight shows
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape),
                    rng.normal(0, 0.1, beta.shape),
                    rng.normal(0, 0.1, mean.shape),
                    rng.uniform(0.5, 1.5, variance.shape),
                ]
            )
    ours = MODELS.get(name)(input_shape=(64, 64, 3), num_classes=10, pixel_mean=0.0, pixel_std=1.0)
    copied = copy_weights(theirs, ours)
    blocks = DENSENETS[name]
    # conv1 conv+bn, 4 weighted layers per dense layer, conv+bn per transition, final bn, predictions.
    assert len(copied) == 2 + 4 * sum(blocks) + 2 * (len(blocks) - 1) + 2
    images = rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(run(ours, images), run(theirs, images), atol=1e-5)


@pytest.mark.parametrize("name", densenets())
def test_densenet_trains_one_step(name):
    model = MODELS.get(name)(input_shape=(64, 64, 3), num_classes=3, width=0.25)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", **EAGER)
    images = np.random.default_rng(4).integers(0, 256, (4, 64, 64, 3)).astype("uint8")
    model.fit(images, np.array([0, 1, 2, 0]), epochs=1, verbose=0)
    predictions = run(model, images)
    assert predictions.shape == (4, 3)
    np.testing.assert_allclose(predictions.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", ["googlenet", "densenet121"])
def test_trunks_tap_every_stride(name):
    trunk = MODELS.get(name)(input_shape=(64, 64, 3), include_top=False, width=0.25)
    maps = feature_maps(trunk)
    sizes = {stride: tuple(tensor.shape[1:3]) for stride, tensor in maps.items()}
    assert sizes == {s: (64 // s, 64 // s) for s in (2, 4, 8, 16, 32)}
    assert trunk.output is maps[32]


def test_densenet_taps_and_options():
    trunk = MODELS.get("densenet121")(input_shape=(64, 64, 3), include_top=False)
    # Taps sit on the BN-ReLU of each stage: the stem, each dense block's full output, the final one.
    expected = {
        2: ("conv1_relu", 64),
        4: ("pool2_relu", 256),
        8: ("pool3_relu", 512),
        16: ("pool4_relu", 1024),
        32: ("relu", 1024),
    }
    for stride, (source, channels) in expected.items():
        assert trunk.get_layer(f"stride{stride}").input is trunk.get_layer(source).output
        assert feature_maps(trunk)[stride].shape[-1] == channels
    narrow = MODELS.get("densenet121")(input_shape=(32, 32, 3), include_top=False, growth_rate=12, compression=1.0)
    assert narrow.get_layer("conv2_block6_concat").output.shape[-1] == 64 + 6 * 12
    assert narrow.get_layer("pool2_conv").output.shape[-1] == 64 + 6 * 12


def test_bad_arguments_quote_the_received_value():
    with pytest.raises(
        ValueError,
        match=r"googlenet: input height and width must be at least 32, "
        r"received \(16, 16, 3\)",
    ):
        googlenet(input_shape=(16, 16, 3), num_classes=3)
    with pytest.raises(ValueError, match=r"googlenet: aux_classifiers must be True or False, received 'yes'"):
        googlenet(input_shape=(64, 64, 3), num_classes=3, aux_classifiers="yes")
    with pytest.raises(ValueError, match=r"densenet121: compression must be in \(0, 1\], received 0.0"):
        MODELS.get("densenet121")(input_shape=(64, 64, 3), num_classes=3, compression=0.0)
    with pytest.raises(ValueError, match=r"densenet169: growth_rate must be a positive integer, received 0"):
        MODELS.get("densenet169")(input_shape=(64, 64, 3), num_classes=3, growth_rate=0)
    with pytest.raises(ValueError, match=r"include_top=True needs num_classes >= 1, received None"):
        MODELS.get("densenet201")(input_shape=(64, 64, 3))
