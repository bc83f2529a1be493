"""data=tfds streams a set prepared as ArrayRecord files, offline: a small TFDS builder defined here is prepared
into tmp_path twice, as ArrayRecord files (random access: an index, examples read by the loader) and as TFRecord
files (only iteration: decoded into memory), and the two must give the same samples."""

from __future__ import annotations

import logging
import pickle
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np
import pytest

from visionkit.data import load
from visionkit.data.core import IGNORE_INDEX
from visionkit.data.index import DiskCache
from visionkit.data.sources.tfds import ExampleImages
from visionkit.errors import UserError

tfds = pytest.importorskip("tensorflow_datasets")

NAME = "visionkit_stream_shapes"  # the builder below, registered by TFDS under its class name in snake case
OBJECT_CLASSES = ["square", "disc"]


def example(i: int) -> dict:
    """Example i: a noise image of its own size, one box, a mask with a value outside the classes (7: ignore)."""
    rng = np.random.default_rng(i)
    height, width = 20 + i % 5, 30 + 2 * (i % 3)
    mask = rng.integers(0, 3, (height, width, 1), dtype=np.uint8)
    mask[0, 0] = 7
    return {
        "image": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        "label": i % 2,
        "objects": {"bbox": [tfds.features.BBox(0.1, 0.2, 0.5, 0.6 + 0.01 * i)], "label": [i % 2]},
        "segmentation_mask": mask,
    }


class VisionkitStreamShapes(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3)),
                    "label": tfds.features.ClassLabel(names=["even", "odd"]),
                    "objects": tfds.features.Sequence(
                        {"bbox": tfds.features.BBoxFeature(), "label": tfds.features.ClassLabel(names=OBJECT_CLASSES)}
                    ),
                    "segmentation_mask": tfds.features.Image(shape=(None, None, 1)),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(range(24)), "test": self._generate_examples(range(24, 30))}

    def _generate_examples(self, numbers):
        for i in numbers:
            yield i, example(i)


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    """{file format: a data_dir holding the set prepared in it}."""
    tfds.disable_progress_bar()
    root = tmp_path_factory.mktemp("tfds")
    for file_format in ("array_record", "tfrecord"):
        VisionkitStreamShapes(data_dir=str(root / file_format)).download_and_prepare(file_format=file_format)
    return {file_format: str(root / file_format) for file_format in ("array_record", "tfrecord")}


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """A cache of verified indexes per test: a test starts with none, and leaves none in the user's cache."""
    monkeypatch.setenv("VISIONKIT_CACHE_DIR", str(tmp_path / "cache"))


def loaded(data_dir: str, task: str, **options):
    extra = {"class_names": ["a", "b"]} if task == "segmentation" else {}
    return load(
        "tfds", task=task, name_in_tfds=NAME, targets=task, data_dir=data_dir, image_size=[16, 24], **extra, **options
    )


def assert_same_samples(streamed, in_memory):
    for name, split in streamed.splits().items():
        other = in_memory.splits()[name]
        assert len(split) == len(other) > 0
        for i in range(len(split)):
            a, b = split.sample(i), other.sample(i)
            assert a.keys() == b.keys()
            for key in a:
                np.testing.assert_allclose(a[key], b[key], rtol=1e-6, err_msg=f"{name} sample {i} {key}")


@pytest.mark.parametrize("task", ["classification", "detection", "segmentation"])
def test_an_array_record_set_is_streamed_with_the_samples_of_the_in_memory_path(data_dirs, task):
    streamed = loaded(data_dirs["array_record"], task, cache="none")
    in_memory = loaded(data_dirs["tfrecord"], task)
    assert all(split.streamed and isinstance(split.images, ExampleImages) for split in streamed.splits().values())
    assert not in_memory.train.streamed and in_memory.train.images.shape[1:] == (16, 24, 3)
    assert streamed.image_shape == in_memory.image_shape and streamed.class_names == in_memory.class_names
    assert_same_samples(streamed, in_memory)
    assert streamed.verification.kept == in_memory.verification.kept == 30


def test_a_subset_of_full_resolution_examples_stays_undecoded(data_dirs):
    images = loaded(data_dirs["array_record"], "classification", cache="none").train.images
    taken = images.at_own_size(deferred=True).take([1, 0])
    assert taken.deferred and isinstance(taken, ExampleImages)
    assert taken.sample(0, {})["image"].data == images.encoded(1)


def test_targets_of_reads_no_image(data_dirs, monkeypatch):
    split = loaded(data_dirs["array_record"], "detection", cache="none").train
    expected = [split.sample(i) for i in range(len(split))]
    monkeypatch.setattr(ExampleImages, "encoded", lambda self, i: pytest.fail("targets_of decoded an image"))
    for i, sample in enumerate(expected):
        targets = split.targets_of(i)
        np.testing.assert_allclose(targets["boxes"], sample["boxes"])
        assert targets["classes"].tolist() == sample["classes"].tolist()


def test_boxes_and_masks_are_those_written(data_dirs):
    """Checked against the generator's examples (found by their pixels: TFDS shuffles them): the box in pixels of
    the 16x24 image, the mask resized by nearest neighbour with 7 (outside the classes) as ignore."""
    written = {example(i)["image"].tobytes(): example(i) for i in range(24, 30)}
    decode = tfds.features.Image(shape=(None, None, 3)).decode_example_np
    boxes = loaded(data_dirs["array_record"], "detection", cache="none").test
    masks = loaded(data_dirs["array_record"], "segmentation", cache="none").test
    for i in range(len(masks)):
        source = written[decode(masks.images.encoded(i)).tobytes()]
        (height, width), (ymin, xmin, ymax, xmax) = source["image"].shape[:2], source["objects"]["bbox"][0]
        np.testing.assert_allclose(boxes.sample(i)["boxes"], [[xmin * 24, ymin * 16, xmax * 24, ymax * 16]], rtol=1e-5)
        mask = source["segmentation_mask"][..., 0]
        rows, cols = (np.arange(16) * height) // 16, (np.arange(24) * width) // 24
        np.testing.assert_array_equal(masks.sample(i)["mask"], np.where(mask == 7, IGNORE_INDEX, mask)[rows][:, cols])


def test_cache_applies_as_for_files(data_dirs, monkeypatch):
    streamed = loaded(data_dirs["array_record"], "classification", cache="none")
    in_memory = loaded(data_dirs["array_record"], "classification", cache="auto")  # 30 small images fit
    assert not in_memory.train.streamed and in_memory.train.index.streamed
    assert_same_samples(streamed, in_memory)
    on_disk = loaded(data_dirs["array_record"], "classification", cache="disk")
    assert isinstance(on_disk.train.images.disk_cache, DiskCache)
    for i in range(len(on_disk.train)):  # the first reads fill the cache
        np.testing.assert_array_equal(on_disk.train.sample(i)["image"], streamed.train.sample(i)["image"])
    monkeypatch.setattr(ExampleImages, "encoded", lambda self, i: pytest.fail("a cached image was decoded again"))
    for i in range(len(on_disk.train)):
        np.testing.assert_array_equal(on_disk.train.sample(i)["image"], in_memory.train.images[i])


def sample_of(split, i: int):
    return split.sample(i)


def assert_a_forked_worker_reads_what_the_parent_reads(split) -> None:
    """The first samples of a segmentation split, read in a worker forked as the loader forks them."""
    copy = pickle.loads(pickle.dumps(split))
    with ProcessPoolExecutor(1, mp_context=get_context("fork")) as pool:
        in_worker = list(pool.map(sample_of, [copy] * 3, range(3)))
    for i, sample in enumerate(in_worker):
        np.testing.assert_array_equal(sample["image"], split.sample(i)["image"])
        np.testing.assert_array_equal(sample["mask"], split.sample(i)["mask"])


def test_a_forked_worker_reads_what_the_parent_reads(data_dirs):
    split = loaded(data_dirs["array_record"], "segmentation", cache="none").train
    assert_a_forked_worker_reads_what_the_parent_reads(split)


def test_a_tfrecord_set_says_why_it_is_in_memory(data_dirs, caplog):
    with caplog.at_level(logging.INFO, logger="visionkit.data"):
        bundle = loaded(data_dirs["tfrecord"], "classification", cache="none")
    assert not bundle.train.streamed
    assert "allow no random access" in caplog.text and "data.file_format=array_record" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="visionkit.data"):
        loaded(data_dirs["array_record"], "classification", cache="none")
    assert "random access" not in caplog.text


def test_bad_file_format_and_split_are_named(data_dirs):
    with pytest.raises(UserError, match="data.file_format must be one of array_record, tfrecord, received 'parquet'"):
        loaded(data_dirs["array_record"], "classification", file_format="parquet")
    with pytest.raises(UserError, match="TensorFlow Datasets split 'validation'"):
        loaded(data_dirs["array_record"], "classification", val_split="validation")


# The command runs in a fresh process, which must define the builder before TFDS reads the prepared set by name.
WITH_BUILDER = (
    "-c",
    "import sys\nsys.path.insert(0, 'tests')\nimport test_tfds_stream\nfrom pipelines.run import main\nmain()",
)


@pytest.mark.slow
def test_segmentation_trains_from_the_files_in_worker_processes(pipeline, data_dirs):
    """Forked workers read the examples through the readers the training process built before it forked them:
    a reader built in a worker forked from the training process crashed it (a segmentation fault), and the run
    waited for ever. The second run verifies from the cache, reading no example before the fork."""
    for cached in (0, 30):
        done = pipeline(
            "task=segmentation",
            "model=unet",
            "model.width=0.125",
            "data=tfds",
            f"data.name_in_tfds={NAME}",
            f"data.data_dir={data_dirs['array_record']}",
            "data.class_names=[a,b]",
            "data.cache=none",
            "trainer.epochs=1",
            "trainer.workers=2",
            "trainer.multiprocessing=true",
            entry=WITH_BUILDER,
        )
        assert f"(30 images, {cached} verdicts from the cache)" in done.stdout, done.stdout[-2000:]
        assert "export verified" in done.stdout, done.stdout[-2000:]
        assert (pipeline.run_dir / "test_metrics.json").exists()
