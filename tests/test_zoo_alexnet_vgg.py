"""AlexNet, ZF-Net and VGG: the papers' parameter counts and feature-map sizes, keras.applications
weight transfer, one training step per variant, stride taps, argument errors, .keras round trip."""

import keras
import numpy as np
import pytest

from visionkit.layers.lrn import LocalResponseNormalization
from visionkit.models import MODELS, build
from visionkit.models.common import feature_maps
from visionkit.models.transfer import copy_weights

VARIANTS = ("alexnet", "zfnet", "vgg11", "vgg11_lrn", "vgg13", "vgg16_c", "vgg16", "vgg19")
MIN_SIZE = {"alexnet": 52, "zfnet": 60}  # VGG: 32
TAPPED = {"alexnet": (4, 8, 16, 32), "zfnet": (2, 4, 8, 16, 32)}  # VGG: (2, 4, 8, 16, 32)


def spatial(model, layer):
    return model.get_layer(layer).output.shape[1:]


def test_alexnet_parameter_counts():
    # 227x227x3, 1000 classes, weights + biases:
    #   conv1 11*11*3*96+96 = 34,944       conv2 5*5*96*256+256 = 614,656    conv3 3*3*256*384+384 = 885,120
    #   conv4 3*3*384*384+384 = 1,327,488  conv5 3*3*384*256+256 = 884,992   fc6 6*6*256*4096+4096 = 37,752,832
    #   fc7 4096*4096+4096 = 16,781,312    fc8 4096*1000+1000 = 4,097,000    total 62,378,344 (one tower)
    model = MODELS.get("alexnet")(num_classes=1000)
    assert model.count_params() == 62_378_344
    assert [spatial(model, n) for n in ("conv1", "pool1", "pool2", "pool5")] == [
        (55, 55, 96),
        (27, 27, 96),
        (13, 13, 256),
        (6, 6, 256),
    ]
    # Two towers: conv2 sees 48 channels (saves 5*5*48*256 = 307,200), conv4 and conv5 192
    # (save 3*3*192*384 = 663,552 and 3*3*192*256 = 442,368): 62,378,344 - 1,413,120 = 60,965,224,
    # the figure of the Caffe bvlc_alexnet reference model.
    grouped = MODELS.get("alexnet")(num_classes=1000, groups=2)
    assert grouped.count_params() == 60_965_224
    assert grouped.get_layer("conv2").kernel.shape == (5, 5, 48, 256)
    assert grouped.get_layer("conv4").kernel.shape == (3, 3, 192, 384)


def test_alexnet_at_the_papers_224_input_has_the_papers_sizes():
    # The paper says 224 and 55; cuda-convnet's ceil arithmetic, 1 + ceil((224 - 11) / 4) = 55, reconciles them.
    trunk = MODELS.get("alexnet")(input_shape=(224, 224, 3), include_top=False)
    assert {s: tuple(t.shape[1:3]) for s, t in feature_maps(trunk).items()} == {
        4: (55, 55),
        8: (27, 27),
        16: (13, 13),
        32: (6, 6),
    }


def test_zfnet_matches_figure_3():
    # Zeiler & Fergus 2014, Fig. 3: 224 -> conv1 110 -> pool1 55 -> conv2 26 -> pool2 13 -> conv3-5 13 -> pool5 6.
    # Parameters, 1000 classes: conv1 7*7*3*96+96 = 14,208, then as AlexNet's one tower: conv2 614,656
    # + conv3 885,120 + conv4 1,327,488 + conv5 884,992 + fc6 37,752,832 + fc7 16,781,312 + fc8 4,097,000
    # = 62,357,608.
    model = MODELS.get("zfnet")(num_classes=1000)
    assert model.count_params() == 62_357_608
    assert [spatial(model, n) for n in ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5")] == [
        (110, 110, 96),
        (55, 55, 96),
        (26, 26, 256),
        (13, 13, 256),
        (13, 13, 384),
        (13, 13, 384),
        (13, 13, 256),
        (6, 6, 256),
    ]


# Exact counts at 224x224x3, 1000 classes: vgg16 138,357,544 and vgg19 143,667,240 as
# keras.applications.VGG16/VGG19(weights=None); vgg11 132,863,336 and vgg13 133,047,848 as torchvision's
# vgg11/vgg13. vgg11_lrn = vgg11 (LRN has no weights). vgg16_c = vgg16 minus the 3x3 -> 1x1 saving in
# block3_conv3 (8*256*256 = 524,288) and block4_conv3, block5_conv3 (8*512*512 = 2,097,152 each):
# 138,357,544 - 4,718,592 = 133,638,952. Millions, Table 2 of the paper: 133, 133, 133, 134, 138, 144.
VGG_PARAMETERS = {
    "vgg11": (132_863_336, 133),
    "vgg11_lrn": (132_863_336, 133),
    "vgg13": (133_047_848, 133),
    "vgg16_c": (133_638_952, 134),
    "vgg16": (138_357_544, 138),
    "vgg19": (143_667_240, 144),
}


@pytest.mark.parametrize("name", VGG_PARAMETERS)
def test_vgg_parameter_counts(name):
    exact, table_2_millions = VGG_PARAMETERS[name]
    count = MODELS.get(name)(num_classes=1000).count_params()
    assert count == exact
    assert round(count / 1e6) == table_2_millions


@pytest.mark.parametrize("name, reference", [("vgg16", keras.applications.VGG16), ("vgg19", keras.applications.VGG19)])
def test_keras_applications_vgg_weights_transfer(name, reference):
    theirs = reference(weights=None, input_shape=(64, 64, 3), classes=10)
    ours = MODELS.get(name)(input_shape=(64, 64, 3), num_classes=10, pixel_mean=0.0, pixel_std=1.0)
    copied = copy_weights(theirs, ours)
    assert copied == [layer.name for layer in theirs.layers if layer.weights]
    assert len(copied) == {"vgg16": 16, "vgg19": 19}[name]
    images = np.random.default_rng(0).uniform(0, 1, (2, 64, 64, 3)).astype("float32")
    expected = theirs.predict(images, verbose=0)
    assert expected.max() < 0.99  # a softmax that is not saturated compares something
    np.testing.assert_allclose(ours.predict(images, verbose=0), expected, rtol=0, atol=1e-5)


def test_grouped_alexnet_trains_one_step():
    # Every registered variant trains and exports in tests/test_zoo.py; this adds the grouped option.
    size = MIN_SIZE["alexnet"]
    model = build("alexnet", input_shape=(size, size, 3), num_classes=3, width=0.125, groups=2)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    images = np.random.default_rng(0).integers(0, 256, (4, size, size, 3)).astype("uint8")
    model.fit(images, np.array([0, 1, 2, 0]), epochs=1, verbose=0)
    predictions = model.predict(images, verbose=0)
    assert predictions.shape == (4, 3)
    np.testing.assert_allclose(predictions.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", VARIANTS)
def test_trunks_tap_every_stride(name):
    trunk = MODELS.get(name)(input_shape=(64, 64, 3), include_top=False, width=0.125)
    maps = feature_maps(trunk)
    assert tuple(maps) == TAPPED.get(name, (2, 4, 8, 16, 32))
    assert trunk.output is maps[32]  # the bare trunk: no pooling, no classifier
    for stride, tensor in maps.items():
        assert 64 // stride - 4 <= tensor.shape[1] <= 64 // stride, (stride, tensor.shape)


def test_vgg_taps_the_last_map_at_each_stride():
    trunk = MODELS.get("vgg16")(input_shape=(64, 64, 3), include_top=False, width=0.125)
    last = {2: "block2_conv2", 4: "block3_conv3", 8: "block4_conv3", 16: "block5_conv3", 32: "block5_pool"}
    for stride, layer in last.items():
        assert trunk.get_layer(f"stride{stride}").input is trunk.get_layer(layer).output, stride


def test_lrn_layers_are_where_the_papers_put_them():
    def lrn_layers(name, **options):
        model = MODELS.get(name)(input_shape=(64, 64, 3), include_top=False, width=0.125, **options)
        return [layer.name for layer in model.layers if isinstance(layer, LocalResponseNormalization)]

    assert lrn_layers("alexnet") == lrn_layers("zfnet") == ["norm1", "norm2"]
    assert lrn_layers("alexnet", lrn=False) == lrn_layers("zfnet", lrn=False) == lrn_layers("vgg11") == []
    assert lrn_layers("vgg11_lrn") == ["block1_lrn"]


def test_bad_arguments_quote_the_received_value():
    with pytest.raises(
        ValueError,
        match=r"alexnet: groups must be 1 \(one tower\) or 2 \(the paper's two GPUs\), "
        r"received 3",
    ):
        MODELS.get("alexnet")(num_classes=10, groups=3)
    with pytest.raises(
        ValueError, match=r"alexnet: input height and width must be at least 52, received \(51, 51, 3\)"
    ):
        MODELS.get("alexnet")(input_shape=(51, 51, 3), num_classes=10)
    with pytest.raises(ValueError, match=r"zfnet: input height and width must be at least 60, received \(59, 59, 3\)"):
        MODELS.get("zfnet")(input_shape=(59, 59, 3), num_classes=10)
    with pytest.raises(
        ValueError, match=r"vgg16_c: input height and width must be at least 32, received \(31, 31, 3\)"
    ):
        MODELS.get("vgg16_c")(input_shape=(31, 31, 3), num_classes=10)


def test_minimum_sizes_leave_one_pixel_after_pool5():
    # At the minimum size pool5 gets the 3x3 map that its single window needs.
    for name, size in MIN_SIZE.items():
        trunk = MODELS.get(name)(input_shape=(size, size, 3), include_top=False, width=0.125)
        assert tuple(feature_maps(trunk)[16].shape[1:3]) == (3, 3)
        assert tuple(trunk.output.shape[1:3]) == (1, 1)


def test_grouped_alexnet_survives_a_keras_round_trip(tmp_path):
    model = MODELS.get("alexnet")(input_shape=(52, 52, 3), num_classes=3, width=0.125, groups=2)
    assert model.get_layer("conv2").kernel.shape == (5, 5, 6, 32)  # width 0.125: 12 channels in, two groups
    model.save(tmp_path / "alexnet.keras")
    loaded = keras.saving.load_model(tmp_path / "alexnet.keras", safe_mode=True)
    assert isinstance(loaded.get_layer("norm1"), LocalResponseNormalization)
    images = np.random.default_rng(0).integers(0, 256, (2, 52, 52, 3)).astype("float32")
    np.testing.assert_array_equal(loaded.predict(images, verbose=0), model.predict(images, verbose=0))
