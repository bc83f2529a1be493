import pkgutil

import numpy as np
import pytest

from visionkit.data import DATASETS, load, sources
from visionkit.data.augment import build_augmenter
from visionkit.data.core import split_indices
from visionkit.data.loader import BatchLoader
from visionkit.data.sources.shapes import CLASS_NAMES
from visionkit.errors import UserError


@pytest.fixture(scope="module")
def scenes():
    return load("shapes", task="regression", num_images=200, image_size=48, seed=7)


def test_digits_are_the_real_scikit_learn_digits_split_stratified():
    bundle = load("digits", task="classification")
    assert bundle.image_shape == (32, 32, 1)
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 1797
    assert len(bundle.test) == 360 and bundle.class_names == [str(d) for d in range(10)]
    for split in bundle.splits().values():
        counts = np.bincount(split.targets["label"], minlength=10)
        assert counts.min() >= 0.8 * counts.mean()  # stratified: every digit near its share
    assert bundle.train.images.dtype == np.uint8 and bundle.train.images.max() == 255


def test_digits_split_is_seeded():
    a, b = load("digits", task="classification"), load("digits", task="classification")
    np.testing.assert_array_equal(a.test.images, b.test.images)
    c = load("digits", task="classification", seed=1)
    assert not np.array_equal(a.test.targets["label"], c.test.targets["label"])


def test_shapes_are_deterministic(scenes):
    again = load("shapes", task="regression", num_images=200, image_size=48, seed=7)
    np.testing.assert_array_equal(scenes.train.images, again.train.images)
    other = load("shapes", task="regression", num_images=200, image_size=48, seed=8)
    assert not np.array_equal(scenes.train.images, other.train.images)


def test_shapes_targets_boxes_and_masks_agree(scenes):
    split = scenes.train
    for i in range(len(split)):
        sample = split.sample(i)
        boxes, classes, mask = sample["boxes"], sample["classes"], sample["mask"]
        assert sample["label"] == classes[0] and mask.shape == sample["image"].shape[:2]
        for box, class_id in zip(boxes, classes):
            x1, y1, x2, y2 = box.astype(int)
            inside = mask[y1:y2, x1:x2] == class_id + 1
            # The box is tight: the object's pixels touch all four sides.
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
        main = boxes[0]
        expected = (
            np.array([(main[0] + main[2]) / 2, (main[1] + main[3]) / 2, main[2] - main[0], main[3] - main[1]]) / 48
        )
        np.testing.assert_allclose(sample["target"], expected, rtol=1e-6)
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        assert areas[0] == areas.max()  # the main object is the largest
    assert set(np.unique(split.targets["label"])) == set(range(len(CLASS_NAMES)))


def test_split_fractions_and_errors():
    train, val, test = split_indices(100, val_fraction=0.1, test_fraction=0.2, seed=0)
    assert (len(train), len(val), len(test)) == (70, 10, 20)
    assert len(set(train) | set(val) | set(test)) == 100
    with pytest.raises(
        UserError, match=r"data.val_fraction \+ data.test_fraction must be below 1, received 0.5 \+ 0.5"
    ):
        split_indices(100, val_fraction=0.5, test_fraction=0.5, seed=0)


def test_a_dataset_that_does_not_fit_the_task_is_named():
    with pytest.raises(
        UserError, match="dataset 'digits' does not support task 'regression'; it supports: classification"
    ):
        load("digits", task="regression")


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("digits", {"channels": 2}, "data.channels must be 1 or 3, received 2"),
        ("digits", {"digit_size": 40}, r"data.digit_size must be between 4 and data.image_size \(32\), received 40"),
        ("shapes", {"image_size": 8}, "data.image_size must be at least 16 for shapes, received 8"),
        ("shapes", {"max_objects": 0}, "data.max_objects must be at least 1, received 0"),
    ],
)
def test_bad_dataset_options_are_named(name, options, message):
    with pytest.raises(UserError, match=message):
        load(name, task="classification", **options)


def test_limit_keeps_the_first_samples(scenes):
    small = scenes.limit(5)
    assert [len(s) for s in small.splits().values()] == [5, 5, 5]
    np.testing.assert_array_equal(small.train.images, scenes.train.images[:5])
    with pytest.raises(UserError, match="data.limit must be a positive number of samples, received 0"):
        scenes.limit(0)


AFFINE = [{"name": "Affine", "rotate": [-20, 20], "p": 1.0}, {"name": "GaussNoise", "p": 1.0}]


def test_augmentation_is_seeded_per_batch(scenes):
    samples = [scenes.train.sample(i) for i in range(4)]
    first = build_augmenter(AFFINE, seed=3)(samples, epoch=1, batch=2)
    again = build_augmenter(AFFINE, seed=3)(samples, epoch=1, batch=2)
    other = build_augmenter(AFFINE, seed=3)(samples, epoch=2, batch=2)
    for a, b, c, original in zip(first, again, other, samples):
        np.testing.assert_array_equal(a["image"], b["image"])
        assert not np.array_equal(a["image"], c["image"]) and not np.array_equal(a["image"], original["image"])
    assert all(np.array_equal(s["image"], scenes.train.images[i]) for i, s in enumerate(samples))  # inputs untouched


def test_augmentation_spec_errors_name_the_transform():
    with pytest.raises(
        UserError,
        match=r"augment.transforms\[0\]: unknown Albumentations transform 'HorizontalFlp' "
        r"\(did you mean 'HorizontalFlip'\?\)",
    ):
        build_augmenter([{"name": "HorizontalFlp"}])
    with pytest.raises(UserError, match=r"augment.transforms\[1\] \(Affine\): .*rotat"):
        build_augmenter([{"name": "HorizontalFlip"}, {"name": "Affine", "rotat": 3}])


def test_loader_batches_and_shuffles_reproducibly(scenes):
    encode = lambda samples: np.stack([s["target"] for s in samples])  # noqa: E731
    loader = BatchLoader(scenes.train, encode, batch_size=32, shuffle=True, seed=1)
    images, targets = loader[0]
    assert images.dtype == np.uint8 and images.shape == (32, 48, 48, 3) and targets.shape == (32, 4)
    assert len(loader) == int(np.ceil(len(scenes.train) / 32))
    assert len(loader[len(loader) - 1][0]) == len(scenes.train) - 32 * (len(loader) - 1)
    twin = BatchLoader(scenes.train, encode, batch_size=32, shuffle=True, seed=1)
    np.testing.assert_array_equal(loader[0][0], twin[0][0])
    loader.on_epoch_end()
    assert not np.array_equal(loader[0][0], twin[0][0])
    seen = np.concatenate([loader[i][1] for i in range(len(loader))])
    np.testing.assert_array_equal(np.sort(seen, axis=0), np.sort(scenes.train.targets["target"], axis=0))


def test_every_source_module_is_discovered_and_registers_the_dataset_of_its_name():
    # The module, the registered name and the function are what the user types (data=csv), so a new
    # file in sources/ is a new dataset without being listed anywhere.
    modules = {module.name for module in pkgutil.iter_modules(sources.__path__)}
    assert modules == set(DATASETS.names())
    for name in modules:
        source = DATASETS.get(name)
        assert (source.__module__, source.__name__) == (f"visionkit.data.sources.{name}", name)
