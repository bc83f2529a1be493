"""Full-resolution training decodes only what its first RandomResizedCrop keeps (augment/window.py): the same
crops and the same later draws as Albumentations on the decoded photo, the same pixels where the photo is
decoded whole, and a reduced JPEG decode, checked against resizing the full decode, where the crop allows."""

import math
import random

import albumentations as A
import cv2
import numpy as np
import pytest
import simplejpeg

from visionkit.data.augment import build_augmenter
from visionkit.data.augment.window import leading_crop, reduction, resampled
from visionkit.data.core import Split
from visionkit.data.images import decode_image
from visionkit.data.index import EncodedImage, ImageFiles, own_size_split
from visionkit.data.loader import BatchLoader
from visionkit.errors import UserError

IMAGENET = [
    {"name": "RandomResizedCrop", "size": None, "scale": [0.08, 1.0], "ratio": [0.75, 1.3333333]},
    {"name": "HorizontalFlip", "p": 0.5},
]


def photo(rng, height, width, channels=3, noise=6.0):
    """Smooth colours plus sensor-like noise: decodes like a photograph."""
    cells = rng.integers(0, 256, (5, 5, channels), dtype=np.uint8)
    base = cv2.resize(cells, (width, height), interpolation=cv2.INTER_CUBIC).reshape(height, width, channels)
    return np.clip(base + rng.normal(0, noise, base.shape), 0, 255).astype(np.uint8)


def files(tmp_path, sizes, suffix=".jpg", channels=3, noise=6.0) -> ImageFiles:
    rng = np.random.default_rng(0)
    paths = []
    for i, (height, width) in enumerate(sizes):
        paths.append(tmp_path / f"{i}{suffix}")
        cv2.imwrite(str(paths[-1]), photo(rng, height, width, channels, noise))
    return ImageFiles(paths, np.array(sizes), sizing=None, channels=channels)


def batches(images: ImageFiles, augmenter, count=3):
    split = Split(images, {"label": np.arange(len(images))})
    loader = BatchLoader(split, lambda samples: np.zeros(len(samples)), batch_size=4, augmenter=augmenter, shuffle=True)
    return [loader[i][0] for i in range(count)]


@pytest.mark.parametrize(("suffix", "channels"), [(".jpg", 3), (".jpg", 1), (".png", 3)])
def test_decoding_after_the_crop_gives_what_the_decoded_photo_gives(tmp_path, suffix, channels):
    """Crops under twice the output: decoded whole, so bit for bit the pixels, crops and flips (and the colour
    draws after them) that the Compose makes of the decoded photo."""
    images = files(tmp_path, [(60, 80), (80, 60), (70, 70), (45, 90)] * 3, suffix, channels)
    transforms = [*IMAGENET, {"name": "RandomBrightnessContrast", "p": 0.5}]
    augmenter = build_augmenter(transforms, seed=1, output_size=(40, 40))
    deferred = images.at_own_size(deferred=True)
    assert isinstance(deferred.sample(0, {})["image"], EncodedImage)
    for fast, decoded in zip(batches(deferred, augmenter), batches(images, augmenter), strict=True):
        assert fast.shape == (4, 40, 40, channels)
        np.testing.assert_array_equal(fast, decoded)


def test_the_crops_are_distributed_as_torchvision_and_albumentations_draw_them():
    """The fast path draws its crops with RandomResizedCrop's own code; an independent reading of that sampling
    (area share uniform in scale, log aspect uniform in ratio, ten tries, then the centre at a clamped ratio)
    gives the same crops from the same generator, on a landscape photo and on strips that need the fallback."""
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    crop = A.RandomResizedCrop(size=(32, 32), scale=scale, ratio=ratio)
    crop.set_random_state(np.random.default_rng(0), random.Random(0))
    independent = random.Random(0)
    for size in ((300, 400), (20, 400), (400, 20)):
        for _ in range(500):
            x1, y1, x2, y2 = crop.get_params_dependent_on_data({"shape": size}, {})["crop_coords"]
            assert (x1, y1, x2, y2) == torchvision_crop(size, scale, ratio, independent)
            assert 0 <= x1 < x2 <= size[1] and 0 <= y1 < y2 <= size[0]


def torchvision_crop(size, scale, ratio, rng: random.Random) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) as torchvision's RandomResizedCrop.get_params samples it, with Python's generator."""
    height, width = size
    area = height * width
    for _ in range(10):
        target = rng.uniform(scale[0] * area, scale[1] * area)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int((height - h + 1) * rng.random())
            left = int((width - w + 1) * rng.random())
            return left, top, left + w, top + h
    if width / height < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif width / height > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return left, top, left + w, top + h


def test_a_crop_twice_the_output_is_decoded_reduced_within_a_grey_level(tmp_path, monkeypatch):
    """Big crops of smooth big photos: decoded at 1/2 or 1/4, and within a grey level of what the Compose makes
    of the full decode (on noisy photos a reduced decode averages where bilinear resizing skips pixels: the
    next test holds it to the area average)."""
    images = files(tmp_path, [(600, 800), (800, 600)] * 4, noise=0.0)
    asked = []
    decode = EncodedImage.decode

    def recorded(self, at_least=None):
        asked.append(at_least)
        return decode(self, at_least)

    monkeypatch.setattr(EncodedImage, "decode", recorded)
    augmenter = build_augmenter(IMAGENET[:1], seed=0, output_size=(64, 64))
    fast = augmenter([images.at_own_size(deferred=True).sample(i, {}) for i in range(len(images))], epoch=0, batch=0)
    slow = augmenter([images.sample(i, {}) for i in range(len(images))], epoch=0, batch=0)
    reduced = [i for i, at_least in enumerate(asked[: len(images)]) if at_least is not None]
    assert len(reduced) >= 3, "the seed should draw several crops of at least 128 x 128"
    for i in reduced:
        difference = np.abs(fast[i]["image"].astype(int) - slow[i]["image"]).mean()
        assert difference < 1.0, f"image {i}: {difference:.2f} grey levels from the full decode's crop"


@pytest.mark.parametrize(("box", "factor"), [((101, 37, 401, 294), 2), ((3, 250, 523, 780), 4)])
def test_a_reduced_decode_resamples_the_box_of_the_full_decode(tmp_path, box, factor):
    """A noisy photo's box, resampled from its decode at 1/factor, is within a grey level of the full decode's
    box averaged down to the output (INTER_AREA), and closer to it than the box one file pixel over."""
    path = files(tmp_path, [(900, 700)]).paths[0]
    encoded = EncodedImage(path, open(path, "rb").read(), (900, 700, 3))
    crop = A.RandomResizedCrop(size=(128, 128))
    assert reduction(crop, box) == factor
    x1, y1, x2, y2 = box
    averaged = cv2.resize(encoded.decode()[y1:y2, x1:x2], (128, 128), interpolation=cv2.INTER_AREA).astype(int)
    reduced = encoded.decode((-(-900 // factor), -(-700 // factor)))
    fast = np.abs(resampled(reduced, factor, box, crop) - averaged).mean()
    assert fast < 1.0
    assert np.abs(resampled(reduced, factor, (x1 + 1, y1 + 1, x2 + 1, y2 + 1), crop) - averaged).mean() > fast


def test_the_reduction_is_the_largest_that_keeps_the_crop_at_the_output_size():
    crop = A.RandomResizedCrop(size=(224, 224))
    assert reduction(crop, (0, 0, 447, 1000)) == 1
    assert reduction(crop, (10, 20, 10 + 448, 20 + 900)) == 2
    assert reduction(crop, (0, 0, 1800, 1792)) == 8
    assert reduction(A.RandomResizedCrop(size=(224, 224), area_for_downscale="image"), (0, 0, 1800, 1792)) == 1


def test_other_transform_lists_and_annotated_samples_are_decoded_whole(tmp_path):
    compose = A.Compose([A.RandomResizedCrop(size=(8, 8))])
    assert leading_crop(compose, {"image": None}) is compose.transforms[0]
    assert leading_crop(compose, {"image": None, "mask": None}) is None
    assert leading_crop(compose, {"image": None, "boxes": None}) is None
    assert leading_crop(A.Compose([A.RandomResizedCrop(size=(8, 8), p=0.5)]), {"image": None}) is None
    assert leading_crop(A.Compose([A.HorizontalFlip(), A.RandomResizedCrop(size=(8, 8))]), {"image": None}) is None
    images = files(tmp_path, [(50, 70), (70, 50)] * 2)
    flipped_first = build_augmenter(IMAGENET[::-1], seed=2, output_size=(24, 24))
    fast, decoded = batches(images.at_own_size(deferred=True), flipped_first, 1), batches(images, flipped_first, 1)
    np.testing.assert_array_equal(fast[0], decoded[0])


def test_a_file_that_changed_after_verification_is_named_when_the_transforms_decode_it(tmp_path):
    images = files(tmp_path, [(60, 80), (80, 60)])
    augmenter = build_augmenter(IMAGENET, seed=0, output_size=(32, 32))
    resized = tmp_path / "0.jpg"
    resized.write_bytes(simplejpeg.encode_jpeg(np.zeros((30, 40, 3), np.uint8)))  # another size than indexed
    truncated = tmp_path / "1.jpg"
    truncated.write_bytes(truncated.read_bytes()[:20])
    for i, path in enumerate((resized, truncated)):
        sample = images.at_own_size(deferred=True).sample(i, {})
        with pytest.raises(UserError, match=f"{path}.*changed after verification"):
            augmenter([sample], epoch=0, batch=0)


def test_the_training_split_defers_decoding_and_still_reads_as_an_array(tmp_path):
    images = files(tmp_path, [(60, 80), (80, 60)])
    train = own_size_split(Split(images, {"label": np.zeros(2, np.int64)}))
    assert isinstance(train.sample(1)["image"], EncodedImage) and train.sample(1)["image"].shape == (80, 60, 3)
    assert train.take([1]).images.deferred and not images.deferred
    np.testing.assert_array_equal(train.images[1], decode_image((tmp_path / "1.jpg").read_bytes(), 3)[0])
