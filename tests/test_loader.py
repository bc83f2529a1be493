"""The batch loader: the same batches whatever the workers, prefetching, OpenCV threads in workers."""

import multiprocessing

import cv2
import keras
import numpy as np
import pytest

from visionkit.data.augment import build_augmenter
from visionkit.data.core import Split
from visionkit.data.loader import BatchLoader

AFFINE = [{"name": "Affine", "rotate": [-20, 20], "scale": [0.9, 1.1], "p": 1.0}, {"name": "GaussNoise", "p": 0.5}]
BATCHED = [  # transforms with a batched equivalent
    {"name": "Affine", "rotate": [-20, 20], "scale": [0.9, 1.1], "p": 0.9},
    {"name": "HorizontalFlip", "p": 0.5},
    {"name": "RandomBrightnessContrast", "p": 0.5},
]


def labels(samples):
    return np.array([s["label"] for s in samples])


@pytest.fixture(scope="module")
def split():
    rng = np.random.default_rng(0)
    return Split(rng.integers(0, 255, (50, 20, 20, 3), dtype=np.uint8), {"label": np.arange(50)})


def flatten_model(shape) -> keras.Model:
    inputs = keras.Input(shape)
    return keras.Model(inputs, keras.layers.Flatten()(keras.layers.Rescaling(1.0)(inputs)))


@pytest.mark.parametrize("workers, processes", [(2, False), (2, True)])
def test_workers_threads_or_processes_give_the_same_augmented_batches(split, workers, processes):
    def seen(**kwargs):
        loader = BatchLoader(
            split, labels, batch_size=8, augmenter=build_augmenter(AFFINE, seed=4), shuffle=True, seed=1, **kwargs
        )
        return flatten_model(split.images.shape[1:]).predict(loader, verbose=0)

    one = seen(workers=1)
    np.testing.assert_array_equal(seen(workers=workers, use_multiprocessing=processes, max_queue_size=2), one)
    assert one.shape == (50, 20 * 20 * 3) and not np.array_equal(
        np.sort(one, axis=0), np.sort(split.images.reshape(50, -1), axis=0)
    )


def test_samples_are_the_augmented_samples_of_a_batch(split):
    loader = BatchLoader(split, labels, batch_size=16, augmenter=build_augmenter(AFFINE, seed=2), shuffle=True)
    samples = loader.samples(1)
    images, targets = loader[1]
    np.testing.assert_array_equal(images, np.stack([s["image"] for s in samples]))
    np.testing.assert_array_equal(targets, loader.order[16:32])  # labels are the indices
    assert loader.max_queue_size == 10


class ReadByColumns(Split):
    """A split held in memory whose samples must not be read one by one."""

    def sample(self, i):
        raise AssertionError("this batch should be read a column at a time")


@pytest.mark.parametrize("with_masks", [False, True])
def test_batches_read_as_columns_are_the_samples_augmented_as_a_batch(split, with_masks):
    targets = dict(split.targets)
    if with_masks:  # int64 class indices: augmented as uint8, as the sample path has them
        targets["mask"] = (split.images[..., 0] % 3).astype(np.int64)
    by_sample = Split(split.images, targets)
    augmenter = build_augmenter(BATCHED, seed=5)
    loader = BatchLoader(
        ReadByColumns(split.images, targets), labels, batch_size=16, augmenter=augmenter, shuffle=True, seed=3
    )
    loader.on_epoch_end()
    for index, rows in [(0, None), (3, [1, 0])]:  # batch 3 is the last, of 2 rows
        ids = loader.order[index * 16 : (index + 1) * 16]
        positions = np.arange(len(ids)) if rows is None else np.array(rows)
        expected = augmenter(
            [by_sample.sample(i) for i in ids[positions]],
            epoch=1,
            batch=index,
            positions=positions,
            batch_length=len(ids),
        )
        images, targets_read = loader.batch(index, rows)
        np.testing.assert_array_equal(images, np.stack([s["image"] for s in expected]))
        np.testing.assert_array_equal(targets_read, ids[positions])
        for sample, want in zip(loader.samples(index, rows), expected, strict=True):
            assert list(sample) == list(want)
            for key in want:
                np.testing.assert_array_equal(sample[key], want[key])
                assert np.asarray(sample[key]).dtype == np.asarray(want[key]).dtype


def test_a_resumed_loader_gives_the_batches_of_its_epoch(split):
    def loader(**kwargs):
        return BatchLoader(
            split, labels, batch_size=8, augmenter=build_augmenter(AFFINE, seed=4), shuffle=True, **kwargs
        )

    uninterrupted = loader()
    uninterrupted.on_epoch_end()
    uninterrupted.on_epoch_end()
    resumed = loader()
    resumed.start_at_epoch(2)
    for index in range(len(resumed)):
        np.testing.assert_array_equal(resumed[index][0], uninterrupted[index][0])
        np.testing.assert_array_equal(resumed[index][1], uninterrupted[index][1])
    assert not np.array_equal(loader()[0][0], resumed[0][0])


def opencv_threads_after_a_batch(loader: BatchLoader) -> int:
    loader[0]
    return cv2.getNumThreads()


def test_each_worker_process_runs_one_opencv_thread(split):
    before = cv2.getNumThreads()
    cv2.setNumThreads(3)
    try:
        loader = BatchLoader(
            split, labels, batch_size=8, augmenter=build_augmenter(AFFINE), workers=2, use_multiprocessing=True
        )
        with multiprocessing.get_context("fork").Pool(1) as pool:
            assert pool.apply(opencv_threads_after_a_batch, (loader,)) == 1
        assert opencv_threads_after_a_batch(loader) == 3  # the main process keeps its own setting
    finally:
        cv2.setNumThreads(before)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"batch_size": 0}, "batch_size must be at least 1, received 0"),
        ({"batch_size": 4, "max_queue_size": 0}, "max_queue_size must be at least 1, received 0"),
    ],
)
def test_bad_loader_options_are_named(split, options, message):
    with pytest.raises(ValueError, match=message):
        BatchLoader(split, labels, **options)
