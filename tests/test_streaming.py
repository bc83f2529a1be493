"""File sources as an index: samples decoded when read, the caches (data.cache), the sizings (data.resize), the
full-resolution training split, and the verification cache that lets a warm start read no image."""

import hashlib
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from visionkit.data import load
from visionkit.data.augment import build_augmenter
from visionkit.data.images import decode_image, resize_image
from visionkit.data.index import ImageFiles, own_size_split
from visionkit.data.loader import BatchLoader
from visionkit.errors import UserError

SIZES = [(37, 52), (60, 45), (48, 48), (80, 33)]  # (height, width) of the photos, none at the model's size


def photo(rng, height, width):
    base = cv2.resize(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture
def photos(tmp_path, monkeypatch) -> Path:
    """<root>/<class>/<i>.jpg and .png, 3 classes of 8 photos of differing sizes; the cache outside the root."""
    monkeypatch.setenv("VISIONKIT_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    for c in range(3):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(8):
            height, width = SIZES[(c + i) % len(SIZES)]
            cv2.imwrite(str(root / f"class{c}" / f"{i}.{'jpg' if i % 2 else 'png'}"), photo(rng, height, width))
    return root


def checksums(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def folder(root, **options):
    return load("folder", task="classification", path=str(root), image_size=32, seed=0, **options)


def test_a_file_source_is_an_index_that_decodes_when_read(photos):
    bundle = folder(photos, cache="none")
    split = bundle.train
    assert split.streamed and isinstance(split.images, ImageFiles)
    assert bundle.image_shape == (32, 32, 3) and split.images.shape == (len(split), 32, 32, 3)
    # What a split holds per sample is its path, size and label: a few hundred bytes, no pixels.
    assert len(pickle.dumps(split)) < 400 * len(split)
    for i in range(len(split)):
        sample = split.sample(i)
        data = Path(split.images.paths[i]).read_bytes()
        expected = resize_image(decode_image(data, 3)[0], (32, 32))
        if Path(split.images.paths[i]).suffix == ".png":  # lossless: bit for bit what loading it whole gave
            np.testing.assert_array_equal(sample["image"], expected)
        else:
            assert np.abs(sample["image"].astype(int) - expected).mean() < 2
        assert sample["label"] == split.targets["label"][i]


def test_memory_cache_holds_the_samples_the_index_reads(photos):
    streamed, held = folder(photos, cache="none"), folder(photos, cache="memory")
    assert not held.train.streamed and held.train.index is not None
    for name in ("train", "val", "test"):
        a, b = getattr(streamed, name), getattr(held, name)
        np.testing.assert_array_equal(np.asarray(a.images), b.images)
        np.testing.assert_array_equal(a.targets["label"], b.targets["label"])
    assert not folder(photos, cache="auto").train.streamed  # a few kB fit the budget
    assert folder(photos, cache="auto", cache_memory_mb=0).train.streamed


def test_disk_cache_fills_at_first_read_and_writes_nothing_into_the_dataset(photos, tmp_path):
    before = checksums(photos)
    split = folder(photos, cache="disk").train
    first = [split.sample(i)["image"] for i in range(len(split))]
    assert list((tmp_path / "cache" / "decoded").glob("*.pixels"))
    again = folder(photos, cache="disk").train  # a new run: same files, same cache
    assert again.images.disk_cache.file == split.images.disk_cache.file
    for i, image in enumerate(first):
        np.testing.assert_array_equal(again.images.disk_cache.get(i), image)
        np.testing.assert_array_equal(again.sample(i)["image"], image)
    assert checksums(photos) == before


def test_a_warm_verification_cache_reads_no_image(photos, monkeypatch):
    cold = folder(photos, cache="none")
    assert cold.verification.cached == 0

    def no_reading(self):
        raise AssertionError(f"{self} was read")

    monkeypatch.setattr(Path, "read_bytes", no_reading)
    warm = folder(photos, cache="none")
    assert warm.verification.cached == cold.verification.kept == 24
    np.testing.assert_array_equal(warm.train.images.original_sizes, cold.train.images.original_sizes)
    assert warm.verification.format_table().splitlines()[1:] == cold.verification.format_table().splitlines()[1:]


def test_center_crop_and_letterbox_size_every_split(photos):
    for resize in ("center_crop", "letterbox"):
        bundle = folder(photos, cache="none", resize=resize)
        for split in bundle.splits().values():
            assert split.images.sizing.mode == resize
            assert all(split.sample(i)["image"].shape == (32, 32, 3) for i in range(len(split)))
    with pytest.raises(UserError, match="data.resize must be one of"):
        folder(photos, resize="squash")
    with pytest.raises(UserError, match="data.cache must be one of"):
        folder(photos, cache="ram")


def test_full_resolution_training_crops_from_the_photo(photos):
    bundle = folder(photos, cache="memory")  # the cache keeps the index training reads the photos from
    train = own_size_split(bundle.train)
    shapes = {train.sample(i)["image"].shape[:2] for i in range(len(train))}
    assert shapes <= set(SIZES) and len(shapes) > 1
    augmenter = build_augmenter(
        [{"name": "RandomResizedCrop", "size": None, "scale": [0.08, 1.0]}, {"name": "HorizontalFlip"}],
        seed=0,
        output_size=(32, 32),
    )
    loader = BatchLoader(train, lambda samples: np.zeros(len(samples)), batch_size=8, augmenter=augmenter, shuffle=True)
    images, _ = loader[0]
    assert images.shape == (8, 32, 32, 3)
    again, _ = BatchLoader(train, lambda s: np.zeros(len(s)), batch_size=8, augmenter=augmenter, shuffle=True)[0]
    np.testing.assert_array_equal(images, again)  # seeded, as the resized path is


def test_a_file_that_changed_after_verification_is_named(photos):
    split = folder(photos, cache="none").train
    Path(split.images.paths[0]).write_bytes(b"")
    with pytest.raises(UserError, match=f"{split.images.paths[0]}.*changed after verification"):
        split.sample(0)


def test_the_letterbox_preset_trains_on_the_geometry_evaluation_uses():
    """augment=letterbox's resize and padding, its random steps off, equal data.resize=letterbox's sizing."""
    from omegaconf import OmegaConf

    from visionkit.data.core import IGNORE_INDEX
    from visionkit.data.sizing import Sizing

    preset = OmegaConf.merge(OmegaConf.load("conf/augment/letterbox.yaml"), {"data": {"image_size": 32}})
    transforms = OmegaConf.to_container(preset.augment.transforms, resolve=True)
    for spec in transforms[2:]:
        spec["p"] = 0.0
    augmenter = build_augmenter(transforms, seed=0, output_size=(32, 32))
    rng = np.random.default_rng(1)
    mask = rng.integers(0, 3, (40, 60), dtype=np.uint8)
    sample = {
        "image": photo(rng, 40, 60),
        "mask": mask,
        "boxes": np.array([[6.0, 4.0, 30.0, 36.0], [40.0, 10.0, 58.0, 20.0]], np.float32),
        "classes": np.array([0, 1]),
    }
    trained = augmenter([sample], epoch=0, batch=0)[0]
    evaluated = Sizing((32, 32), "letterbox").apply(sample, (40, 60))
    assert trained["image"].shape == evaluated["image"].shape == (32, 32, 3)
    assert np.abs(trained["image"].astype(int) - evaluated["image"]).max() <= 1
    np.testing.assert_array_equal(trained["mask"], evaluated["mask"])
    assert (evaluated["mask"][22:] == IGNORE_INDEX).all()  # the padding is ignored, not background
    np.testing.assert_allclose(trained["boxes"], evaluated["boxes"], atol=1e-4)


def test_targets_of_gives_the_sized_targets_without_decoding(tmp_path, monkeypatch):
    from test_formats import coco_fixture

    import visionkit.data.index as index

    monkeypatch.setenv("VISIONKIT_CACHE_DIR", str(tmp_path / "cache"))
    root = coco_fixture(tmp_path / "coco")
    options = dict(path=str(root), image_size=24, resize="center_crop", cache="none")
    split = load("coco", task="segmentation", **options).train
    samples = [split.sample(i) for i in range(len(split))]
    monkeypatch.setattr(index.ImageFiles, "read", lambda self, i: pytest.fail("an image was decoded"))
    for i, sample in enumerate(samples):
        targets = split.targets_of(i)
        assert targets.keys() == sample.keys() - {"image"}
        for key, value in targets.items():
            np.testing.assert_array_equal(value, sample[key])


def test_pixel_stats_of_a_held_split_are_exact():
    bundle = load("shapes", task="classification", num_images=600, image_size=24, seed=3)
    pixels = bundle.train.images.reshape(-1, 3).astype(np.float64)
    mean, std = bundle.pixel_stats()
    np.testing.assert_allclose(mean, pixels.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(std, pixels.std(axis=0), rtol=1e-7)
