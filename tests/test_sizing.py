"""Sizing: each mode against an independent computation (Albumentations, or the functions every source used
before images were kept at their own size), and reduced JPEG decoding against the full decode."""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import pytest

from visionkit.data.core import IGNORE_INDEX
from visionkit.data.images import decode_image, jpeg_reduction, resize_image, resize_mask, scale_boxes
from visionkit.data.sizing import Sizing
from visionkit.errors import UserError

ORIGINAL = (90, 120)  # (height, width) of the fixture image


def sample(seed: int = 0) -> dict[str, np.ndarray]:
    """An image of ORIGINAL size with a class-index mask and boxes: inside, straddling the left edge of a
    64x64 centre crop at 0.875 (the file's x from 19.7 to 98.6), and in the strips that crop cuts away."""
    rng = np.random.default_rng(seed)
    boxes = np.array([[30, 20, 80, 70], [5, 10, 40, 50], [1, 30, 9, 60], [100, 5, 119, 89]], np.float32)
    return {
        "image": rng.integers(0, 256, (*ORIGINAL, 3), np.uint8),
        "mask": rng.integers(0, 5, ORIGINAL, np.uint8),
        "boxes": boxes,
        "classes": np.array([1, 2, 3, 4], np.int64),
        "label": np.int64(7),
    }


def albumentations_result(transforms: list, original: dict) -> dict[str, np.ndarray]:
    pipeline = A.Compose(transforms, bbox_params=A.BboxParams(format="pascal_voc", label_fields=["classes"]))
    done = pipeline(
        image=original["image"], mask=original["mask"], bboxes=original["boxes"], classes=original["classes"]
    )
    return {
        "image": done["image"],
        "mask": done["mask"],
        "boxes": np.asarray(done["bboxes"], np.float32).reshape(-1, 4),
        "classes": np.asarray(done["classes"]),
    }


def assert_same(sized: dict, expected: dict) -> None:
    np.testing.assert_array_equal(sized["image"], expected["image"])
    np.testing.assert_array_equal(sized["mask"], expected["mask"])
    np.testing.assert_allclose(sized["boxes"], expected["boxes"], atol=1e-3)
    np.testing.assert_array_equal(sized["classes"], expected["classes"])


@pytest.mark.parametrize("size", [(40, 56), (120, 100)])  # shrinking, and enlarging one side
def test_stretch_is_the_resize_every_source_did_before(size):
    original = sample()
    sized = Sizing(size, "stretch").apply(original, ORIGINAL)
    np.testing.assert_array_equal(sized["image"], resize_image(original["image"], size))
    np.testing.assert_array_equal(sized["mask"], resize_mask(original["mask"], size))
    np.testing.assert_array_equal(sized["boxes"], scale_boxes(original["boxes"], ORIGINAL, size))
    np.testing.assert_array_equal(sized["classes"], original["classes"])
    assert sized["label"] == 7


@pytest.mark.parametrize("size", [64, (48, 80)])
def test_center_crop_is_smallest_max_size_then_center_crop(size):
    sizing, original = Sizing(size, "center_crop"), sample(1)
    height, width = sizing.size
    cover = (round(height / 0.875), round(width / 0.875))  # Resize(256) before CenterCrop(224), in general form
    expected = albumentations_result(
        [A.SmallestMaxSize(max_size_hw=cover, area_for_downscale="image"), A.CenterCrop(height, width)], original
    )
    sized = sizing.apply(original, ORIGINAL)
    assert_same(sized, expected)
    assert sized["image"].shape == (height, width, 3)


def test_center_crop_clips_straddling_boxes_and_drops_those_cut_away():
    sized = Sizing(64, "center_crop").apply(sample(), ORIGINAL)
    assert sizing_geometry(Sizing(64, "center_crop")) == ((73, 97), (4, 16))  # 90x120 covers 73 on its short side
    np.testing.assert_array_equal(sized["classes"], [1, 2])  # 3 and 4 lie in the strips cut away
    straddling = sized["boxes"][list(sized["classes"]).index(2)]
    assert straddling[0] == 0 and straddling[2] > 0  # clipped at the crop's left edge
    assert ((sized["boxes"] >= 0) & (sized["boxes"] <= 64)).all()


def sizing_geometry(sizing: Sizing) -> tuple[tuple[int, int], tuple[int, int]]:
    """(resized size, (top, left) of the crop), computed by hand for ORIGINAL."""
    resized = sizing.resized_size(ORIGINAL)
    return resized, ((resized[0] - sizing.size[0]) // 2, (resized[1] - sizing.size[1]) // 2)


@pytest.mark.parametrize("size", [64, (60, 200)])  # padded below, and padded at the right
def test_letterbox_is_longest_max_size_then_pad_bottom_right(size):
    sizing, original = Sizing(size, "letterbox"), sample(2)
    height, width = sizing.size
    expected = albumentations_result(
        [
            A.LongestMaxSize(max_size_hw=(height, width), area_for_downscale="image"),
            A.PadIfNeeded(height, width, position="top_left", border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=255),
        ],
        original,
    )
    sized = sizing.apply(original, ORIGINAL)
    assert_same(sized, expected)
    resized = sizing.resized_size(ORIGINAL)
    assert (resized[0] < height) != (resized[1] < width)  # padding on exactly one side
    for key, fill in (("mask", IGNORE_INDEX), ("image", 0)):
        below, right = sized[key][resized[0] :], sized[key][:, resized[1] :]
        assert (below == fill).all() and (right == fill).all(), key


def test_a_sample_without_targets_or_image_is_sized_by_what_it_has():
    original = sample()
    only_image = Sizing(64, "letterbox").apply({"image": original["image"]}, ORIGINAL)
    assert set(only_image) == {"image"} and only_image["image"].shape == (64, 64, 3)
    only_boxes = Sizing(64, "center_crop").apply({"boxes": original["boxes"], "classes": original["classes"]}, ORIGINAL)
    assert set(only_boxes) == {"boxes", "classes"} and len(only_boxes["boxes"]) == 2


def test_bad_settings_are_one_line_errors_naming_the_key():
    with pytest.raises(UserError, match=r"data.resize must be one of stretch, center_crop, letterbox, received 'fit'"):
        Sizing(32, "fit")
    for ratio in (0, 1.5, "x", True):
        with pytest.raises(UserError, match=r"data.crop_ratio must be"):
            Sizing(32, "center_crop", ratio)
    with pytest.raises(UserError, match=r"data.image_size"):
        Sizing((0, 32))


def photo_jpeg(size: tuple[int, int], seed: int = 0) -> bytes:
    """A photo-like JPEG (quality 90): a smooth random colour field with fine noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (9, 12, 3)).astype(np.float32)
    smooth = cv2.resize(coarse, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
    image = np.clip(smooth + rng.normal(0, 4, smooth.shape), 0, 255).astype(np.uint8)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


@pytest.mark.parametrize(
    ("sizing", "factor"),
    [
        (Sizing(32, "stretch"), 8),
        (Sizing(64, "stretch"), 4),
        (Sizing(112, "center_crop"), 2),
        (Sizing(96, "letterbox"), 4),
        (Sizing(224, "center_crop"), 1),  # 375 / 2 < 256: no reduction
    ],
)
def test_decoding_at_least_the_resized_size_changes_the_result_by_under_two_grey_levels(sizing, factor):
    original = (375, 500)
    data = photo_jpeg(original, seed=factor)
    at_least = sizing.decode_at_least(original)
    assert jpeg_reduction(original, at_least) == factor
    reduced, _ = decode_image(data, 3, at_least=at_least)
    full, _ = decode_image(data, 3)
    assert reduced.shape[:2] == tuple(-(-side // factor) for side in original)
    boxes = {"boxes": np.array([[50, 40, 300, 200]], np.float32), "classes": np.array([1])}
    from_reduced = sizing.apply({"image": reduced, **boxes}, original)
    from_full = sizing.apply({"image": full, **boxes}, original)
    assert from_reduced["image"].shape == from_full["image"].shape == (*sizing.size, 3)
    np.testing.assert_array_equal(from_reduced["boxes"], from_full["boxes"])
    difference = np.abs(from_reduced["image"].astype(np.int16) - from_full["image"]).mean()
    assert difference < 2.0, difference
