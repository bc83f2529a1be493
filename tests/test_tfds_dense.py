"""data=tfds for detection and segmentation, offline through tfds.testing.mock_data: examples written here with
known boxes and masks (mock_data's as_dataset_fn) to check the conversion, and mock_data's own random examples,
whose fields disagree with each other, to check that they are named skips rather than a crash."""

from __future__ import annotations

import numpy as np
import pytest

from visionkit.data import load
from visionkit.data.core import IGNORE_INDEX
from visionkit.errors import UserError

tfds = pytest.importorskip("tensorflow_datasets")
tf = pytest.importorskip("tensorflow")


def mocked(examples: list[dict]):
    """mock_data serving `examples` for every split."""

    def spec(value):
        value = np.asarray(value)
        return tf.TensorSpec((None,) * value.ndim, tf.as_dtype(value.dtype))

    def as_dataset(self, split, **kwargs):
        signature = tf.nest.map_structure(spec, examples[0])
        return tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=signature)

    return tfds.testing.mock_data(as_dataset_fn=as_dataset)


def voc_example(i: int) -> dict:
    """A 40x60 VOC example: a regular box and a difficult one, TFDS's normalised [ymin, xmin, ymax, xmax]."""
    return {
        "image": np.full((40, 60, 3), 10 * i, np.uint8),
        "objects": {
            "bbox": np.array([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 0.5]], np.float32),
            "label": np.array([i % 20, 14], np.int64),
            "is_difficult": np.array([False, True]),
            "is_truncated": np.array([False, False]),
            "pose": np.array([0, 0], np.int64),
        },
    }


def test_voc_boxes_become_pixel_xyxy_with_their_difficult_flags():
    with mocked([voc_example(i) for i in range(10)]):
        bundle = load(
            "tfds",
            download=True,
            task="detection",
            name_in_tfds="voc/2007",
            targets="detection",
            image_size=[20, 30],
            test_split="test",
            val_split="validation",
        )
    assert bundle.class_names[14] == "person" and len(bundle.class_names) == 20
    assert not bundle.train.streamed and bundle.train.images.shape == (10, 20, 30, 3)
    boxes = bundle.train.targets["boxes"][3]
    np.testing.assert_allclose(boxes, [[0.2 * 30, 0.1 * 20, 0.6 * 30, 0.5 * 20], [0, 0, 15, 20]], rtol=1e-6)
    assert bundle.train.targets["classes"][3].tolist() == [3, 14]
    assert bundle.train.targets["difficult"][3].tolist() == [False, True]


def test_coco_crowds_are_no_training_boxes():
    example = {
        "image": np.zeros((32, 32, 3), np.uint8),
        "image/id": np.int64(1),
        "objects": {
            "bbox": np.array([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]], np.float32),
            "label": np.array([0, 2], np.int64),
            "is_crowd": np.array([False, True]),
            "area": np.array([256, 256], np.int64),
            "id": np.array([1, 2], np.int64),
        },
    }
    with mocked([example] * 8):
        bundle = load(
            "tfds",
            download=True,
            task="detection",
            name_in_tfds="coco/2017",
            targets="detection",
            image_size=32,
            val_split="validation",
            test_split="validation",
        )
    assert len(bundle.class_names) == 80  # the mock metadata names them by number
    np.testing.assert_allclose(bundle.train.targets["boxes"][0], [[0, 0, 16, 16]])
    assert bundle.train.targets["classes"][0].tolist() == [0]
    assert bundle.verification.findings["crowd_annotations"] == 3 * 8  # train, val and test read 8 each


def pets_example(i: int) -> dict:
    """A 24x36 oxford_iiit_pet example: trimap 2 background, 3 the border, 1 the pet (brighter in the image)."""
    trimap = np.full((24, 36, 1), 2, np.uint8)
    trimap[4:20, 6 + i % 4 : 30] = 3
    trimap[6:18, 8 + i % 4 : 28] = 1
    return {
        "image": np.where(trimap == 1, 200, 30).repeat(3, -1).astype(np.uint8),
        "label": np.int64(0),
        "species": np.int64(0),
        "segmentation_mask": trimap,
        "head_bbox": np.zeros(4, np.float32),
    }


def test_the_pets_trimap_becomes_pet_background_and_ignore():
    example = pets_example(0)
    trimap = example["segmentation_mask"]
    with mocked([example] * 8):
        bundle = load(
            "tfds",
            download=True,
            task="segmentation",
            name_in_tfds="oxford_iiit_pet",
            targets="segmentation",
            image_size=[24, 36],
        )
    assert bundle.class_names == ["pet"] and bundle.mask_names == ["background", "pet"]
    mask = bundle.train.targets["mask"][0]
    expected = np.where(trimap[..., 0] == 1, 1, np.where(trimap[..., 0] == 2, 0, IGNORE_INDEX))
    np.testing.assert_array_equal(mask, expected)


def test_a_set_without_the_feature_is_a_one_line_error():
    with mocked([voc_example(0)] * 4):
        with pytest.raises(UserError, match="data.mask_key: 'voc/2007' has no feature 'segmentation_mask'"):
            load("tfds", download=True, task="segmentation", name_in_tfds="voc/2007", targets="segmentation")
        with pytest.raises(UserError, match="data.targets must be one of"):
            load("tfds", download=True, task="detection", name_in_tfds="voc/2007", targets="boxes")


@pytest.mark.parametrize("name, task", [("voc/2007", "detection"), ("oxford_iiit_pet", "segmentation")])
def test_mock_datas_own_random_examples_are_counted_skips_not_a_crash(tmp_path, name, task):
    """mock_data's random examples disagree with themselves (objects' fields of differing counts, masks of
    another size than their image): each is a counted skip, and a set of nothing else a one-line error."""
    reason = {"detection": "bad_target", "segmentation": "mask_size"}[task]
    with tfds.testing.mock_data(num_examples=6):
        with pytest.raises(
            UserError, match=rf"tfds' at tensorflow_datasets:{name} has no usable images \(6 {reason}\)"
        ):
            load(
                "tfds", task=task, targets=task, name_in_tfds=name, download=True, data_dir=str(tmp_path), test_split=""
            )


# `python -m pipelines.run` inside the mock, which replaces the dataset builders of its own process only.
MOCKED_RUN = (
    "-c",
    "import sys\nsys.path.insert(0, 'tests')\nfrom test_tfds_dense import EXAMPLES, mocked\n"
    "from pipelines.run import main\nwith mocked(EXAMPLES[sys.argv[-1].split('=')[1]]):\n    main()",
)
EXAMPLES = {"voc/2007": [voc_example(i) for i in range(16)], "oxford_iiit_pet": [pets_example(i) for i in range(16)]}


@pytest.mark.slow
@pytest.mark.parametrize(
    "task, model",
    [
        ("detection", ("model=faster_rcnn", "model.width=0.125", "model.proposals=16", "model.fc_units=16")),
        ("segmentation", ("model=unet", "model.width=0.125")),
    ],
    ids=["voc-detection", "pets-segmentation"],
)
def test_tfds_trains_evaluates_and_exports(pipeline, tmp_path, task, model):
    name = "voc/2007" if task == "detection" else "oxford_iiit_pet"
    done = pipeline(
        f"task={task}",
        "data=tfds",
        "data.download=true",
        f"data.data_dir={tmp_path / 'tfds'}",
        *model,
        "mode=train",
        "trainer.epochs=1",
        "trainer.batch_size=4",
        "data.image_size=32",
        "tracking=none",
        "export.num_images=2",
        *(("task.val_map_images=4", "data.val_split=validation") if task == "detection" else ()),
        f"data.name_in_tfds={name}",  # last: the entry reads it
        entry=MOCKED_RUN,
    )
    assert "export verified" in done.stdout, done.stdout[-2000:]
    assert ("test_map50=" if task == "detection" else "test_") in done.stdout
