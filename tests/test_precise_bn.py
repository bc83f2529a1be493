"""trainer.precise_bn: batch norm's moving statistics re-estimated with the final weights
(visionkit.training.precise_bn), checked against numpy."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from pipelines.settings import TrainerSettings
from pipelines.train import precise_bn_unavailable
from visionkit.errors import UserError
from visionkit.training.precise_bn import (
    PreciseBatchNorm,
    batch_norm_layers,
    precise_bn_setting,
    recompute_statistics,
    wants_precise_statistics,
)


def dense_bn_model(features: int = 3, units: int = 4) -> keras.Model:
    inputs = keras.Input((features,))
    hidden = keras.layers.Dense(units, name="dense")(inputs)
    return keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(hidden))


def batches_of(rng: np.random.Generator, count: int, size: int = 8, features: int = 3) -> list:
    return [(rng.normal(5.0, 2.0, (size, features)).astype("float32"), None) for _ in range(count)]


def test_recompute_averages_each_batch_mean_and_variance_and_restores_momentum():
    keras.utils.set_random_seed(0)
    model, batches = dense_bn_model(), batches_of(np.random.default_rng(0), 5)
    used = recompute_statistics(model, batches, count=4)  # the fifth is not averaged
    dense = model.get_layer("dense")
    outputs = [np.asarray(dense(x)) for x, _ in batches[:4]]
    bn = model.get_layer("bn")
    assert used == 4
    np.testing.assert_allclose(bn.moving_mean, np.mean([o.mean(axis=0) for o in outputs], axis=0), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance, np.mean([o.var(axis=0) for o in outputs], axis=0), rtol=1e-4)
    assert bn.momentum == 0.99


def test_nested_batch_norms_are_found_and_frozen_ones_keep_their_statistics():
    inner = dense_bn_model()
    frozen = keras.layers.BatchNormalization(name="frozen")
    frozen.trainable = False
    inputs = keras.Input((3,))
    model = keras.Model(inputs, frozen(inner(inputs)))
    assert batch_norm_layers(model) == [inner.get_layer("bn")]
    recompute_statistics(model, batches_of(np.random.default_rng(1), 2))
    np.testing.assert_array_equal(frozen.moving_mean, np.zeros(4))
    np.testing.assert_array_equal(frozen.moving_variance, np.ones(4))
    assert not np.allclose(inner.get_layer("bn").moving_mean, 0.0)


def test_the_callback_recomputes_after_the_epochs_last_step_before_validation():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(2)
    x = rng.normal(5.0, 2.0, (24, 3)).astype("float32")
    model = dense_bn_model()
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    loader = [(x[i : i + 8], np.zeros((8, 4), "float32")) for i in range(0, 24, 8)]
    seen = []
    probe = keras.callbacks.LambdaCallback(on_test_begin=lambda logs: seen.append(np.asarray(bn.moving_mean)))
    bn = model.get_layer("bn")
    model.fit(
        x, np.zeros((24, 4), "float32"), batch_size=8, epochs=1, shuffle=False, verbose=0,
        validation_data=(x, np.zeros((24, 4), "float32")), callbacks=[PreciseBatchNorm(loader), probe],
    )  # fmt: skip
    expected = np.asarray(model.get_layer("dense")(x)).mean(axis=0)  # equal batches: the mean of their means
    np.testing.assert_allclose(seen[0], expected, rtol=1e-5)  # what validation saw
    # Keras's own averages after 3 steps would still be near their start, 0.
    assert np.abs(expected).max() > 1.0


def test_auto_turns_on_for_short_epochs_of_models_with_batch_norm():
    with_bn, without = dense_bn_model(), keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert wants_precise_statistics("auto", with_bn, 3)
    assert not wants_precise_statistics("auto", with_bn, 51)
    assert not wants_precise_statistics("auto", without, 3)
    assert wants_precise_statistics("true", with_bn, 500)
    assert not wants_precise_statistics("false", with_bn, 3)
    assert precise_bn_setting(True) == "true"
    with pytest.raises(UserError, match="trainer.precise_bn must be true, false or auto, received 'sometimes'"):
        precise_bn_setting("sometimes")


def test_detection_and_strategies_refuse_an_explicit_request_and_skip_auto():
    trainer = TrainerSettings(
        epochs=1, batch_size=8, optimizer="adam", learning_rate=1e-3, schedule="constant", warmup_epochs=0,
        weight_decay=0.0, momentum=0.9, early_stopping=0, seed=0, workers=1, precise_bn="true",
    )  # fmt: skip
    with pytest.raises(UserError, match="trainer.precise_bn=true is not available for detection"):
        precise_bn_unavailable(trainer, "detection")
    assert precise_bn_unavailable(trainer, "classification") is None
    trainer.strategy = "mirrored"
    with pytest.raises(UserError, match="not available for trainer.strategy=mirrored"):
        precise_bn_unavailable(trainer, "segmentation")
    trainer.precise_bn = "auto"
    assert precise_bn_unavailable(trainer, "segmentation") == "trainer.strategy=mirrored"
