import numpy as np
import pytest

from visionkit.errors import UserError
from visionkit.models import MODELS, available
from visionkit.models.common import feature_maps
from visionkit.tasks import build


def test_lenet5_has_the_published_parameter_count():
    # LeCun et al. 1998 as taught: C1 156 + C3 2,416 + C5 48,120 + F6 10,164 + output 850 = 61,706.
    model = build("lenet5", input_shape=(32, 32, 1), num_classes=10)
    assert model.count_params() == 61_706
    assert model.output_shape == (None, 10)


def test_resnet_parameter_counts():
    # ResNet-50 as keras.applications.ResNet50(weights=None): 25,636,712 parameters (BN statistics included).
    assert build("resnet50", input_shape=(224, 224, 3), num_classes=1000).count_params() == 25_636_712
    # ResNet-18: 11,689,512 trainable parameters, as the reference PyTorch implementation.
    resnet18 = build("resnet18", input_shape=(224, 224, 3), num_classes=1000)
    assert sum(int(np.prod(w.shape)) for w in resnet18.trainable_weights) == 11_689_512


@pytest.mark.parametrize("name", [n for n in available("classification") if MODELS.meta(n).get("modality") != "series"])
def test_trunks_name_their_feature_maps_by_stride(name):
    trunk = MODELS.get(name)(input_shape=(64, 64, 3), include_top=False, width=0.25)
    maps = feature_maps(trunk)
    assert maps, f"{name} exposes no strideN feature maps"
    for stride, tensor in maps.items():
        # Valid (unpadded) convolutions, as LeNet-5's, trim a few pixels off 64 / stride.
        assert 64 // stride - 4 <= tensor.shape[1] <= 64 // stride, (name, stride, tensor.shape)


def test_bad_arguments_quote_the_received_value():
    with pytest.raises(ValueError, match=r"lenet5: input height and width must be at least 16, received \(8, 8, 1\)"):
        build("lenet5", input_shape=(8, 8, 1), num_classes=10)
    with pytest.raises(ValueError, match=r"include_top=True needs num_classes >= 1, received None"):
        MODELS.get("resnet18")(input_shape=(64, 64, 3))


def test_a_model_that_does_not_support_the_task_is_named():
    with pytest.raises(
        UserError,
        match=r"model 'lenet5' does not support task 'segmentation'; it supports: "
        r"classification, regression",
    ):
        build("lenet5", input_shape=(32, 32, 1), num_classes=2, task="segmentation")


def test_preprocessing_is_inside_the_model():
    model = build("lenet5", input_shape=(32, 32, 1), num_classes=10, pixel_mean=100.0, pixel_std=50.0)
    normalize = model.get_layer("normalize")
    raw = np.full((1, 32, 32, 1), 200.0, "float32")
    np.testing.assert_allclose(np.asarray(normalize(raw)), 2.0, rtol=1e-6)
