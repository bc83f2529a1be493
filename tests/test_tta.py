"""Test-time augmentation checked against numpy: flip averaging (dense outputs mirrored back) and
AlexNet's 10-crop averaging."""

import cv2
import keras
import numpy as np
import pytest

from pipelines.evaluation import predict_split
from visionkit.data.augment.tta import multicrop_views, predict_tta
from visionkit.data.core import Split
from visionkit.errors import UserError
from visionkit.tasks import get_task


def softmax_regression(shape=(16, 16, 1), classes=3) -> keras.Model:
    """Flatten -> Dense -> softmax, with random weights: depends on where each pixel is."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape)
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax", name="dense")(x))


def numpy_softmax_regression(model: keras.Model, images: np.ndarray) -> np.ndarray:
    kernel, bias = (np.asarray(w, np.float64) for w in model.get_layer("dense").get_weights())
    logits = images.reshape(len(images), -1) / 255 @ kernel + bias
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def images(n=6, shape=(16, 16, 1)) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 255, (n, *shape), dtype=np.uint8)


def test_flip_is_the_average_over_the_image_and_its_mirror():
    model, x = softmax_regression(), images()
    expected = (numpy_softmax_regression(model, x) + numpy_softmax_regression(model, x[:, :, ::-1])) / 2
    got = predict_tta(model.predict_on_batch, x, "flip")
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert not np.allclose(got, numpy_softmax_regression(model, x), atol=1e-3)  # the mirror did change something


def test_flip_leaves_a_mirror_invariant_model_unchanged():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 1))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(pooled))
    x = images()
    np.testing.assert_allclose(predict_tta(model.predict_on_batch, x, "flip"), model.predict(x, verbose=0), atol=1e-6)


def shift_right_model(shape=(6, 9, 1)) -> keras.Model:
    """Dense output [B, H, W, 1]: out[:, i, j] = x[:, i, j - 1] (0 in column 0): it depends on x position."""
    inputs = keras.Input(shape)
    conv = keras.layers.Conv2D(1, (1, 3), padding="same", use_bias=False, name="shift")
    model = keras.Model(inputs, conv(keras.layers.Rescaling(1.0)(inputs)))
    conv.set_weights([np.array([1.0, 0.0, 0.0]).reshape(1, 3, 1, 1)])
    return model


def test_dense_outputs_are_mirrored_back_before_averaging():
    x = images(4, (6, 9, 1))
    model = shift_right_model()
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (0, 0)))
    from_left, from_right = padded[:, :, :-2], padded[:, :, 2:]
    # The mirrored image shifted right and mirrored back is the image shifted left.
    np.testing.assert_allclose(predict_tta(model.predict_on_batch, x, "flip"), (from_left + from_right) / 2, atol=1e-4)
    identity = keras.Model(inputs := keras.Input((6, 9, 1)), keras.layers.Rescaling(1.0)(inputs))
    np.testing.assert_allclose(predict_tta(identity.predict_on_batch, x, "flip"), x, atol=1e-4)


def numpy_ten_crops(x: np.ndarray, scale: float = 256 / 224) -> list[np.ndarray]:
    n, h, w, c = x.shape
    big_h, big_w = round(h * scale), round(w * scale)
    big = np.stack(
        [cv2.resize(image, (big_w, big_h), interpolation=cv2.INTER_LINEAR).reshape(big_h, big_w, c) for image in x]
    )
    crops = []
    for top, left in [
        (0, 0),
        (0, big_w - w),
        (big_h - h, 0),
        (big_h - h, big_w - w),
        ((big_h - h) // 2, (big_w - w) // 2),
    ]:
        crops.append(big[:, top : top + h, left : left + w])
    return crops + [crop[:, :, ::-1] for crop in crops]


def test_multicrop_averages_exactly_the_ten_crops():
    model, x = softmax_regression(), images()
    crops = numpy_ten_crops(x)
    assert crops[0].shape == x.shape and crops[3][0, 0, 0, 0] != crops[0][0, 0, 0, 0]
    for view, crop in zip(multicrop_views(x), crops, strict=True):
        np.testing.assert_array_equal(view, crop)
    expected = np.mean([numpy_softmax_regression(model, crop) for crop in crops], axis=0)
    np.testing.assert_allclose(predict_tta(model.predict_on_batch, x, "multicrop"), expected, atol=1e-5)


@pytest.mark.parametrize(
    "mode, model, message",
    [
        (
            "multicrop",
            shift_right_model((16, 16, 1)),
            r"eval.tta=multicrop averages image-level \[batch, K\] outputs; this model's outputs have shape "
            r"\(6, 16, 16, 1\): use eval.tta=flip or none",
        ),
        (
            "flip",
            keras.Model(inputs := keras.Input((16, 16, 1)), [keras.layers.Flatten()(inputs)] * 2),
            "eval.tta=flip needs a model with a single output tensor; this one returns list",
        ),
        (
            "fip",
            softmax_regression(),
            r"eval.tta: unknown test-time augmentation 'fip' \(did you mean 'flip'\?\); "
            r"available: flip, multicrop, none",
        ),
    ],
)
def test_what_tta_cannot_average_is_refused(mode, model, message):
    with pytest.raises(UserError, match=message):
        predict_tta(model.predict_on_batch, images(), mode)


def test_predict_split_applies_tta_across_batches():
    model, x = softmax_regression(), images(13)
    split = Split(x, {"label": np.zeros(13, np.int64)})
    task = get_task("classification")
    plain = predict_split(model, task, split, batch_size=5)
    np.testing.assert_allclose(plain, numpy_softmax_regression(model, x), atol=1e-5)
    flipped = predict_split(model, task, split, batch_size=5, tta="flip")
    expected = (numpy_softmax_regression(model, x) + numpy_softmax_regression(model, x[:, :, ::-1])) / 2
    np.testing.assert_allclose(flipped, expected, atol=1e-5)
    with pytest.raises(UserError, match="eval.tta: unknown test-time augmentation 'ten_crop'"):
        predict_split(model, task, split, batch_size=5, tta="ten_crop")


def test_tta_is_refused_before_training_for_a_task_whose_outputs_cannot_be_averaged():
    from omegaconf import OmegaConf

    from pipelines.evaluation import checked_tta
    from visionkit.tasks import get_task

    cfg = OmegaConf.create({"eval": {"tta": "flip"}})
    assert checked_tta(cfg, get_task("segmentation")) == "flip"
    with pytest.raises(UserError, match=r"^eval.tta=flip is not available for task detection$"):
        checked_tta(cfg, get_task("detection"))
