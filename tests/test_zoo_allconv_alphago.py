import keras
import numpy as np
import pytest

from visionkit.layers.position_bias import PositionBias
from visionkit.models import MODELS, build
from visionkit.models.common import feature_maps


def test_allconv_has_the_parameter_count_of_all_cnn_c():
    # All-CNN-C, Springenberg et al. 2015 Table 2, at 32x32x3 with 10 classes (weights + biases):
    #   3x3 conv 96 on 3 channels:               3*3*3*96 + 96          =     2,688
    #   3x3 conv 96 on 96, twice (one stride 2): 2 * (3*3*96*96 + 96)   =   166,080
    #   3x3 conv 192 on 96:                      3*3*96*192 + 192       =   166,080
    #   3x3 conv 192 on 192, three times (one stride 2, one unpadded): 3 * (3*3*192*192 + 192) = 995,904
    #   1x1 conv 192:                            192*192 + 192          =    37,056
    #   1x1 conv 10:                             192*10 + 10            =     1,930
    # Total 1,369,738 = 1.37M. The paper quotes only rounded counts for its C models (about 1.3M-1.4M);
    # 1.37M fits them. An independent Keras All-CNN-C prints the same total in its model.summary().
    model = MODELS.get("allconv")(input_shape=(32, 32, 3), num_classes=10)
    assert model.count_params() == 2_688 + 166_080 + 166_080 + 995_904 + 37_056 + 1_930 == 1_369_738


def test_allconv_shapes_follow_table_2():
    model = MODELS.get("allconv")(input_shape=(32, 32, 3), num_classes=10)
    shapes = {
        name: model.get_layer(name).output.shape[1:]
        for name in ("block1_conv2", "block1_conv3", "block2_conv3", "block3_conv1", "block3_conv2", "predictions_pool")
    }
    assert shapes == {
        "block1_conv2": (32, 32, 96),
        "block1_conv3": (16, 16, 96),
        "block2_conv3": (8, 8, 192),
        "block3_conv1": (6, 6, 192),
        "block3_conv2": (6, 6, 192),
        "predictions_pool": (10,),
    }
    assert model.output_shape == (None, 10)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert not kinds & {"Dense", "MaxPooling2D", "AveragePooling2D"}  # no fully connected layer, no pooling
    assert [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)] == [0.2, 0.5, 0.5]


def test_allconv_trunk_names_its_feature_maps():
    trunk = MODELS.get("allconv")(input_shape=(32, 32, 3), include_top=False)
    maps = feature_maps(trunk)
    assert {stride: tuple(t.shape[1:]) for stride, t in maps.items()} == {2: (16, 16, 192), 4: (6, 6, 192)}
    assert trunk.output is maps[4]  # the trunk ends in its stride-4 map, after the 1x1 convolution of 192
    assert not any(layer.name.startswith("predictions") for layer in trunk.layers)


def test_alphago_policy_has_the_parameter_count_of_the_paper():
    # Silver et al. 2016, Methods "Neural network architecture", k = 192, 19x19x48 input:
    #   layer 1, 5x5 conv k on 48 planes:  5*5*48*192 + 192 =   230,592
    #   layers 2-12, 3x3 conv k on k:      11 * (3*3*192*192 + 192) = 3,651,648
    #   layer 13, 1x1 conv 1 without bias: 192
    #   one bias per board point:          19*19 = 361
    model = MODELS.get("alphago_policy")(num_classes=361)
    assert model.count_params() == 230_592 + 3_651_648 + 192 + 361 == 3_882_793
    assert not any("pool" in type(layer).__name__.lower() for layer in model.layers)


def random_planes(n, filters_in=48, seed=0):
    return np.random.default_rng(seed).integers(0, 2, (n, 19, 19, filters_in)).astype("float32")


def test_alphago_policy_is_a_distribution_over_the_board_points():
    model = MODELS.get("alphago_policy")(num_classes=361)
    assert model.output_shape == (None, 361)
    probabilities = model.predict(random_planes(2), verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    # Binary planes go in unchanged: the default normalisation is the identity.
    planes = random_planes(1)
    np.testing.assert_array_equal(np.asarray(model.get_layer("normalize")(planes)), planes)


def test_alphago_policy_trunk_and_depth_options():
    trunk = MODELS.get("alphago_policy")(include_top=False, filters=16, depth=5)
    assert {s: tuple(t.shape[1:]) for s, t in feature_maps(trunk).items()} == {1: (19, 19, 16)}
    assert [layer.name for layer in trunk.layers if isinstance(layer, keras.layers.Conv2D)] == [
        "conv1",
        "conv2",
        "conv3",
        "conv4",
    ]
    assert trunk.get_layer("conv1").kernel_size == (5, 5) and trunk.get_layer("conv4").kernel_size == (3, 3)


def test_alphago_policy_needs_one_class_per_board_point():
    with pytest.raises(
        ValueError,
        match=r"alphago_policy: predicts one of the 19x19 = 361 board points, "
        r"so num_classes must be 361, received 10",
    ):
        MODELS.get("alphago_policy")(num_classes=10)
    with pytest.raises(ValueError, match=r"so num_classes must be 81, received 361"):
        MODELS.get("alphago_policy")(input_shape=(9, 9, 48), num_classes=361)
    with pytest.raises(
        ValueError, match=r"depth counts the first and the last layer, so it must be an int >= 2, received 1"
    ):
        MODELS.get("alphago_policy")(num_classes=361, depth=1)


def test_position_bias_adds_a_learned_bias_per_position(tmp_path):
    layer = PositionBias(name="position_bias")
    layer.build((None, 3, 4, 1))
    assert layer.bias.shape == (3, 4, 1)
    np.testing.assert_array_equal(np.asarray(layer.bias), 0.0)  # zeros at initialisation
    bias = np.arange(12, dtype="float32").reshape(3, 4, 1)
    layer.set_weights([bias])
    np.testing.assert_array_equal(np.asarray(layer(np.zeros((2, 3, 4, 1), "float32"))), np.stack([bias, bias]))

    inputs = keras.Input((3, 4, 1))
    model = keras.Model(inputs, PositionBias(name="position_bias")(inputs))
    model.get_layer("position_bias").set_weights([bias])
    path = tmp_path / "position_bias.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(x)), x + bias, rtol=1e-6)


@pytest.mark.parametrize(
    "name, shape, classes, options, inputs",
    [
        (
            "allconv",
            (32, 32, 3),
            3,
            {"width": 0.25},
            lambda: np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("uint8"),
        ),
        ("alphago_policy", (19, 19, 48), 361, {"filters": 16}, lambda: random_planes(4)),
    ],
)
def test_trains_one_step(name, shape, classes, options, inputs):
    model = build(name, input_shape=shape, num_classes=classes, **options)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, y = inputs(), np.array([0, 1, 2, 0])
    before = [np.array(w) for w in model.trainable_weights]
    history = model.fit(x, y, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.allclose(b, np.asarray(w)) for b, w in zip(before, model.trainable_weights))
    predictions = model.predict(x, verbose=0)
    assert predictions.shape == (4, classes)
    np.testing.assert_allclose(predictions.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name, shape, classes", [("allconv", (32, 32, 3), 10), ("alphago_policy", (19, 19, 48), 361)])
def test_predictions_stay_float32_under_mixed_precision(name, shape, classes):
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        model = MODELS.get(name)(input_shape=shape, num_classes=classes, width=0.25)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert model.get_layer("predictions").compute_dtype == "float32"
    assert model.output.dtype == "float32"


def test_alphago_policy_round_trips_through_a_keras_file(tmp_path):
    model = MODELS.get("alphago_policy")(num_classes=361, filters=8, depth=3)
    model.get_layer("position_bias").set_weights([np.linspace(-1, 1, 361, dtype="float32").reshape(19, 19, 1)])
    model.save(tmp_path / "policy.keras")
    loaded = keras.saving.load_model(tmp_path / "policy.keras", safe_mode=True)
    planes = random_planes(2)
    np.testing.assert_allclose(loaded.predict(planes, verbose=0), model.predict(planes, verbose=0), rtol=1e-5)
