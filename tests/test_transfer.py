"""Initial weights (keras.applications ImageNet, local files) and freezing for fine-tuning."""

import keras
import numpy as np
import pytest

from visionkit.errors import UserError
from visionkit.models import build, transfer


def random_images(shape, count=2, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, *shape)).astype("float32")


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=[] if name in ("resnet50", "densenet121") else [pytest.mark.slow])
        for name in transfer.imagenet_models()
    ],
)
def test_applications_weights_transfer_one_to_one_with_their_preprocessing(monkeypatch, name):
    # keras.applications built with weights=None stands in for the downloaded weights: every weighted
    # layer copies one to one, and our model on raw RGB pixels equals the application on its own
    # preprocess_input (BGR minus mean for VGG and ResNet, torch-style standardisation for DenseNet).
    application, _ = transfer.imagenet_source(name)
    constructor, sources = getattr(keras.applications, application), []
    monkeypatch.setattr(
        keras.applications,
        application,
        lambda **kw: sources.append(constructor(**{**kw, "weights": None})) or sources[-1],
    )
    mean, std = transfer.imagenet_pixel_stats(name)
    ours = build(name, input_shape=(64, 64, 3), num_classes=10, pixel_mean=mean, pixel_std=std)
    copied = transfer.load_imagenet_weights(ours, name)
    source = sources[0]
    assert len(copied) == sum(1 for layer in source.layers if layer.weights)
    images = random_images((64, 64, 3))
    family = name if name.startswith("vgg") else name.rstrip("0123456789")
    module = getattr(keras.applications, family)  # keras.applications.vgg16, .resnet, .densenet
    features = source.predict(module.preprocess_input(images.copy()), verbose=0)
    trunk = keras.Model(ours.input, ours.get_layer(source.layers[-1].name).output)
    np.testing.assert_allclose(trunk.predict(images, verbose=0), features, atol=2e-4, rtol=1e-4)


def test_imagenet_weights_offline_is_one_clear_error(monkeypatch):
    def offline(**kwargs):
        raise OSError("URL fetch failure: no network")

    monkeypatch.setattr(keras.applications, "ResNet50", offline)
    model = build("resnet50", input_shape=(32, 32, 3), num_classes=2, width=0.25)
    with pytest.raises(
        UserError, match=r"could not get ImageNet weights for resnet50 .*no network.*model.weights=<path>"
    ):
        transfer.load_imagenet_weights(model, "resnet50")


def test_imagenet_weights_for_a_model_without_them_name_the_ones_that_have_them():
    with pytest.raises(
        UserError,
        match=r"model.weights=imagenet is available for densenet121, densenet169, "
        r"densenet201, resnet101, resnet152, resnet50, vgg16, vgg19, not 'lenet5'",
    ):
        transfer.imagenet_pixel_stats("lenet5")


def test_a_trained_trunk_moves_to_a_new_head(tmp_path):
    source = build("lenet5", input_shape=(32, 32, 1), num_classes=10)
    source.save(tmp_path / "digits.keras")
    target = build("lenet5", input_shape=(32, 32, 1), num_classes=4)
    copied = transfer.load_weights_file(target, tmp_path / "digits.keras")
    assert copied == ["c1_conv", "c3_conv", "c5_fc", "f6_fc"]  # not the 10-class predictions layer
    for name in copied:
        for ours, theirs in zip(target.get_layer(name).get_weights(), source.get_layer(name).get_weights()):
            np.testing.assert_array_equal(ours, theirs)


def test_weights_files_that_do_not_fit_are_clear_errors(tmp_path):
    model = build("lenet5", input_shape=(32, 32, 1), num_classes=10)
    with pytest.raises(UserError, match="model.weights: no such file: .*missing.keras"):
        transfer.load_weights_file(model, tmp_path / "missing.keras")
    other = build("resnet18", input_shape=(32, 32, 3), num_classes=10, width=0.25)
    other.save(tmp_path / "resnet.keras")
    with pytest.raises(UserError, match="no layer of .*resnet.keras matches this model by name and shape"):
        transfer.load_weights_file(model, tmp_path / "resnet.keras")
    (tmp_path / "weights.txt").write_text("x")
    with pytest.raises(UserError, match="expected a .keras or .weights.h5 file"):
        transfer.load_weights_file(model, tmp_path / "weights.txt")


def test_weights_h5_round_trip(tmp_path):
    source = build("lenet5", input_shape=(32, 32, 1), num_classes=10)
    source.save_weights(tmp_path / "lenet.weights.h5")
    target = build("lenet5", input_shape=(32, 32, 1), num_classes=10)
    transfer.load_weights_file(target, tmp_path / "lenet.weights.h5")
    images = random_images((32, 32, 1))
    np.testing.assert_array_equal(target.predict(images, verbose=0), source.predict(images, verbose=0))


def test_freeze_by_count_and_by_name():
    model = build("lenet5", input_shape=(32, 32, 1), num_classes=10)
    assert transfer.freeze(model, "c3_conv") == [layer.name for layer in model.layers].index("c3_conv") + 1
    assert not model.get_layer("c3_conv").trainable and model.get_layer("c5_fc").trainable
    model = build("lenet5", input_shape=(32, 32, 1), num_classes=10)
    transfer.freeze(model, 3)
    assert [layer.trainable for layer in model.layers[:4]] == [False, False, False, True]
    with pytest.raises(
        UserError, match=r"unknown layer of lenet5 for model.freeze 'c3_cnv' \(did you mean 'c3_conv'\?\)"
    ):
        transfer.freeze(model, "c3_cnv")
    with pytest.raises(UserError, match="model.freeze must be a layer name or a layer count"):
        transfer.freeze(model, 1000)
