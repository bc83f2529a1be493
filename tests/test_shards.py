"""Shards per worker under trainer.strategy=multi_worker: each worker reads and augments only its
replicas' rows of every global batch, every sample of an epoch is read once across the workers, and
the rows equal the single-process batch's rows bit for bit, whichever augmentation path runs."""

from collections import Counter

import numpy as np
import pytest
import tensorflow as tf

from visionkit.data.augment import build_augmenter
from visionkit.data.core import Split
from visionkit.data.loader import BatchLoader
from visionkit.training.distribute import multi_worker_dataset

COUNT, BATCH, MAX_BOXES = 45, 8, 3  # the last batch has 5 rows: 3 for worker 0, 2 for worker 1
AFFINE = {"name": "Affine", "translate_percent": [-0.1, 0.1], "rotate": [-20, 20], "scale": [0.9, 1.1], "p": 0.9}
AUGMENTATIONS = {
    "batched": ([AFFINE, {"name": "HorizontalFlip", "p": 0.5}, {"name": "RandomBrightnessContrast", "p": 0.5}], False),
    "albumentations": ([AFFINE, {"name": "GaussNoise", "p": 0.5}], False),
    "albumentations, boxes": ([AFFINE, {"name": "HorizontalFlip", "p": 0.5}], True),
}


class CountedSplit(Split):
    """A Split that counts the samples read, in a Counter shared with the other workers' splits."""

    def __init__(self, images, targets, reads: Counter):
        super().__init__(images, targets)
        self.reads = reads

    def sample(self, i):
        self.reads[int(i)] += 1
        return super().sample(i)

    def columns(self, ids):  # the loader reads in-memory batches a column at a time
        self.reads.update(int(i) for i in ids)
        return super().columns(ids)


def samples(with_boxes: bool) -> tuple[np.ndarray, dict]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (COUNT, 24, 24, 3), dtype=np.uint8)
    targets = {"label": np.arange(COUNT), "mask": rng.integers(0, 3, (COUNT, 24, 24), dtype=np.uint8)}
    if with_boxes:
        corners = [np.sort(rng.uniform(0, 24, (rng.integers(1, MAX_BOXES + 1), 2, 2)), axis=1) for _ in range(COUNT)]
        targets = {
            "label": np.arange(COUNT),
            "boxes": [c.transpose(0, 2, 1).reshape(-1, 4).astype(np.float32) for c in corners],
            "classes": [np.arange(len(c)) for c in corners],
        }
    return images, targets


def encode(samples: list[dict]) -> tuple[np.ndarray, ...]:
    """Labels (the sample indices), and masks or boxes padded to MAX_BOXES rows of (x0, y0, x1, y1, class)."""
    labels = np.array([s["label"] for s in samples])
    if "mask" in samples[0]:
        return labels, np.stack([s["mask"] for s in samples])
    boxes = np.full((len(samples), MAX_BOXES, 5), -1, np.float32)
    for row, sample in enumerate(samples):
        boxes[row, : len(sample["boxes"]), :4] = sample["boxes"]
        boxes[row, : len(sample["boxes"]), 4] = sample["classes"]
    return labels, boxes


def loader_of(augmentation: str, reads: Counter) -> BatchLoader:
    transforms, with_boxes = AUGMENTATIONS[augmentation]
    split = CountedSplit(*samples(with_boxes), reads)
    return BatchLoader(
        split, encode, batch_size=BATCH, augmenter=build_augmenter(transforms, seed=7), shuffle=True, seed=3
    )


class Worker:
    """Stands in for MultiWorkerMirroredStrategy on worker `index` of `count`, one replica each: builds
    this worker's input pipeline as the strategy would."""

    def __init__(self, index: int, count: int):
        self.index, self.count = index, count

    def distribute_datasets_from_function(self, dataset_fn):
        return dataset_fn(tf.distribute.InputContext(self.count, self.index, self.count))


@pytest.mark.parametrize("augmentation", AUGMENTATIONS)
def test_two_workers_read_each_sample_once_and_get_the_single_process_rows(augmentation):
    reads = Counter()
    shards = [multi_worker_dataset(loader_of(augmentation, reads), Worker(w, 2)) for w in range(2)]
    single = loader_of(augmentation, Counter())
    for _ in range(2):  # epochs: a new iterator of each dataset, as fit makes
        reads.clear()
        single.on_epoch_end()  # fit ends a PyDataset's epoch before its first one
        rows = [list(shard.as_numpy_iterator()) for shard in shards]
        assert reads == Counter(range(COUNT))  # every sample once, across both workers
        assert [len(r) for r in rows] == [len(single)] * 2
        for index in range(len(single)):
            images, targets = single[index]
            for worker in range(2):
                shard_images, shard_targets = rows[worker][index]
                np.testing.assert_array_equal(shard_images, images[worker::2])
                for shard_target, target in zip(shard_targets, targets):
                    np.testing.assert_array_equal(shard_target, target[worker::2])
    unaugmented = np.stack([single.split.images[i] for i in single.order[:BATCH]])
    assert not np.array_equal(single[0][0], unaugmented)  # augmentation ran


@pytest.mark.parametrize("augmentation", AUGMENTATIONS)
def test_any_rows_of_a_batch_are_those_rows_of_the_whole_batch(augmentation):
    reads = Counter()
    loader = loader_of(augmentation, reads)
    whole_images, whole_targets = loader.batch(2)
    reads.clear()
    rows = [6, 1, 4]
    images, targets = loader.batch(2, rows=rows)
    assert reads == Counter(loader.order[2 * BATCH + np.array(rows)].tolist())  # only those samples were read
    np.testing.assert_array_equal(images, whole_images[rows])
    for target, whole in zip(targets, whole_targets):
        np.testing.assert_array_equal(target, whole[rows])


def test_rows_outside_the_batch_are_refused():
    loader = loader_of("batched", Counter())
    with pytest.raises(IndexError, match=r"batch 5 has rows 0 to 4, received \[5\]"):
        loader.batch(5, rows=[5])
    augmenter = build_augmenter([AFFINE])
    with pytest.raises(ValueError, match="positions must give each of the 1 samples a row of the batch of 2"):
        augmenter([{"image": np.zeros((4, 4, 1), np.uint8)}], epoch=0, batch=0, positions=[2], batch_length=2)
