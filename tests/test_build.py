"""visionkit.models.build passes every builder keyword through; visionkit.tasks.build adds the task's
head and refuses the keywords that make it."""

from __future__ import annotations

import pytest

from visionkit import models, tasks
from visionkit.errors import UserError
from visionkit.models.common import feature_maps

TINY = {"input_shape": (32, 32, 3), "width": 0.125}


def test_models_build_with_include_top_false_gives_the_trunk():
    trunk = models.build("vgg16", include_top=False, **TINY)
    assert trunk.output.shape == (None, 1, 1, 64)
    assert list(feature_maps(trunk)) == [2, 4, 8, 16, 32]
    assert not any(layer.name == "predictions" for layer in trunk.layers)


def test_models_build_gives_the_papers_classifier_as_the_classification_task_does():
    bare = models.build("vgg16", num_classes=3, **TINY)
    for_task = tasks.build("vgg16", num_classes=3, task="classification", **TINY)
    assert bare.get_layer("predictions").get_config()["activation"] == "softmax"
    assert bare.count_params() == for_task.count_params()


@pytest.mark.parametrize(
    "task, keyword, value",
    [
        ("classification", "include_top", False),
        ("regression", "classifier_activation", "relu"),
        ("segmentation", "classifier_activation", None),
    ],
)
def test_a_keyword_the_task_sets_is_refused_by_name(task, keyword, value):
    name = "unet" if task == "segmentation" else "vgg16"
    with pytest.raises(
        UserError,
        match=rf"^task '{task}' sets the model's {keyword} itself; leave it out, or build "
        rf"the architecture alone with visionkit.models.build$",
    ):
        tasks.build(name, num_classes=3, task=task, **{keyword: value}, **TINY)


def test_num_classes_given_to_a_task_as_a_builder_keyword_is_refused():
    task = tasks.get_task("classification")
    with pytest.raises(UserError, match=r"^task 'classification' sets the model's num_classes itself"):
        task.build_model(models.MODELS.get("vgg16"), input_shape=(32, 32, 3), num_outputs=3, num_classes=4)
