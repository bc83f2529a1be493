"""SavedModel export: the TF Serving layout, a uint8 serving signature, and verification in a
fresh process that does not import visionkit."""

import json

import keras
import numpy as np
import pytest

from visionkit.errors import ExportVerificationError
from visionkit.export import export_savedmodel, next_version_dir, verify_savedmodel
from visionkit.tasks import build, get_task


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    model = build("lenet5", input_shape=(32, 32, 1), num_classes=10)
    task = get_task("classification")
    directory = next_version_dir(root, "lenet5")
    export_savedmodel(model, directory, task.serving_outputs, {"task": "classification"})
    return root, directory, model, task


def test_layout_is_model_name_and_integer_version(exported):
    root, directory, *_ = exported
    assert directory == root / "lenet5" / "1" and (directory / "saved_model.pb").is_file()
    assert json.loads((directory / "assets.extra" / "visionkit.json").read_text()) == {"task": "classification"}
    assert next_version_dir(root, "lenet5") == root / "lenet5" / "2"


def test_export_serves_uint8_images_and_matches_in_a_fresh_process(exported):
    _, directory, model, task = exported
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 1)).astype(np.uint8)
    assert verify_savedmodel(directory, model, task.serving_outputs, images) <= 1e-4


def test_verification_catches_a_model_that_differs_from_its_export(exported):
    _, directory, model, task = exported
    changed = keras.models.clone_model(model)
    changed.set_weights([w + 0.05 for w in model.get_weights()])
    images = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 1)).astype(np.uint8)
    with pytest.raises(ExportVerificationError, match="differs from the trained model by"):
        verify_savedmodel(directory, changed, task.serving_outputs, images)


def test_native_keras_file_loads_in_safe_mode(tmp_path):
    model = build("lenet5", input_shape=(32, 32, 1), num_classes=3, task="classification")
    model.compile(optimizer="adam", loss=get_task("classification", label_smoothing=0.1).loss())
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    images = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 1)).astype("float32")
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)
