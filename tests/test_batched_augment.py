"""The batched augmentation path against Albumentations itself: the same parameter distributions
(two-sample Kolmogorov-Smirnov tests on seeded draws) and the same pixels for the same parameters
(the transform's own apply), masks following their image, and the Augmenter choosing the path."""

import threading

import albumentations as A
import cv2
import numpy as np
import pytest
from albumentations.augmentations.geometric.functional import center, create_affine_transformation_matrix
from scipy.stats import ks_2samp

from visionkit.data.augment import build_augmenter
from visionkit.data.augment.batched import (
    BatchedAffine,
    BatchedBrightnessContrast,
    BatchedPipeline,
    affine_matrices,
    opencv_without_ipp,
)
from visionkit.data.core import IGNORE_INDEX
from visionkit.errors import UserError

DRAWS = 3000
# Asymmetric ranges, so that a sign or an axis mixed up shows in the distributions.
AFFINES = {
    "percent": dict(translate_percent=(0.05, 0.2), scale=(0.7, 0.9), rotate=(5, 30), shear=(2, 10)),
    "pixels": dict(
        translate_px={"x": (-3, 7), "y": (1, 4)},
        scale={"x": (0.8, 1.3), "y": (1.0, 1.5)},
        rotate=(-40, -10),
        shear={"x": (-12, 0), "y": (3, 6)},
    ),
    "balanced, keep ratio": dict(scale=(0.5, 1.5), balanced_scale=True, keep_ratio=True, rotate=(0, 90)),
    "balanced, enlarge only": dict(scale=(1.1, 1.6), balanced_scale=True, shear=(-5, 5)),
}


def albumentations_matrices(transform: A.Affine, shape: tuple[int, int]) -> np.ndarray:
    transform.set_random_seed(0)
    return np.stack([transform.get_params_dependent_on_data({"shape": shape}, {})["matrix"] for _ in range(DRAWS)])


def assert_same_distribution(ours: np.ndarray, theirs: np.ndarray, what: str) -> None:
    """Column by column: a p-value below 1e-3 means the draws come from different distributions."""
    for column in range(ours.shape[1]):
        if np.ptp(theirs[:, column]) == 0:
            np.testing.assert_allclose(ours[:, column], theirs[0, column], atol=1e-9, err_msg=what)
        else:
            assert ks_2samp(ours[:, column], theirs[:, column]).pvalue > 1e-3, f"{what}, entry {column}"


@pytest.mark.parametrize("name", AFFINES)
def test_affine_matrices_are_drawn_as_albumentations_draws_them(name):
    shape = (30, 44)
    transform = A.Affine(**AFFINES[name], p=1.0)
    ours = BatchedAffine(transform).draw(np.random.default_rng(0), DRAWS, shape)
    theirs = albumentations_matrices(transform, shape)
    assert_same_distribution(ours[:, :2].reshape(DRAWS, 6), theirs[:, :2].reshape(DRAWS, 6), name)
    np.testing.assert_array_equal(ours[:, 2], np.tile([0.0, 0.0, 1.0], (DRAWS, 1)))


def test_a_wrong_draw_fails_the_distribution_check():
    """The check can fail: shear drawn without Albumentations' sign flip is told apart."""
    shape = (30, 44)
    transform = A.Affine(shear={"x": (2, 10), "y": (0, 0)}, p=1.0)
    flipped = A.Affine(shear={"x": (-10, -2), "y": (0, 0)}, p=1.0)
    ours = BatchedAffine(flipped).draw(np.random.default_rng(0), DRAWS, shape)
    with pytest.raises(AssertionError):
        assert_same_distribution(
            ours[:, :2].reshape(DRAWS, 6), albumentations_matrices(transform, shape)[:, :2].reshape(DRAWS, 6), "flipped"
        )


def test_affine_matrices_are_albumentations_product_of_six_factors():
    rng = np.random.default_rng(1)
    count = 200
    translate, shear = np.trunc(rng.uniform(-5, 5, (count, 2))), rng.uniform(-20, 20, (count, 2))
    scale, rotate = rng.uniform(0.5, 2.0, (count, 2)), rng.uniform(-400, 400, count)
    shift = center((30, 44))
    expected = [
        create_affine_transformation_matrix(
            {"x": t[0], "y": t[1]}, {"x": s[0], "y": s[1]}, {"x": k[0], "y": k[1]}, r, shift
        )
        for t, s, k, r in zip(translate, shear, scale, rotate)
    ]
    np.testing.assert_allclose(affine_matrices(translate, shear, scale, rotate, shift), expected, atol=1e-12)


@pytest.mark.parametrize("shape", [(32, 32, 1), (30, 44, 3), (24, 20, 4)])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"interpolation": cv2.INTER_CUBIC, "fill": 17, "fill_mask": IGNORE_INDEX},
        {"border_mode": cv2.BORDER_REFLECT_101},
    ],
)
def test_warped_pixels_equal_the_transforms_own(shape, options):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (6, *shape), dtype=np.uint8)
    masks = rng.integers(0, 4, (6, *shape[:2]), dtype=np.uint8)
    transform = A.Affine(
        translate_percent=(-0.2, 0.2), scale=(0.7, 1.3), rotate=(-30, 30), shear=(-10, 10), p=1.0, **options
    )
    batched = BatchedAffine(transform)
    matrices = batched.draw(rng, len(images), shape[:2])
    chosen = np.array([0, 2, 3, 5])
    out_images, out_masks = images.copy(), masks.copy()
    with opencv_without_ipp():
        batched.warp(out_images, out_masks, matrices, chosen)
    for index in range(len(images)):
        if index in chosen:  # Albumentations as it runs by default, with OpenCV's IPP on
            params = {"matrix": matrices[index], "output_shape": shape[:2]}
            expected_image = transform.apply(images[index], **params)
            expected_mask = transform.apply_to_mask(masks[index], **params)
        else:
            expected_image, expected_mask = images[index], masks[index]
        np.testing.assert_array_equal(out_images[index], expected_image.reshape(shape))
        np.testing.assert_array_equal(out_masks[index], expected_mask)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"brightness_by_max": False},
        {"ensure_safe_range": True},
        {"brightness_limit": (0.1, 0.6), "contrast_limit": (-0.5, -0.1)},
    ],
)
def test_brightness_contrast_draws_and_pixels_match_albumentations(options):
    rng = np.random.default_rng(3)
    transform = A.RandomBrightnessContrast(**options, p=1.0)
    image = rng.integers(20, 200, (16, 16, 3), dtype=np.uint8)
    images = np.repeat(image[None], DRAWS, axis=0)
    alpha, beta = BatchedBrightnessContrast(transform).draw(rng, images)
    transform.set_random_seed(0)
    theirs = [transform.get_params_dependent_on_data({}, {"image": image}) for _ in range(DRAWS)]
    assert_same_distribution(
        np.stack([alpha, beta], axis=1), np.array([[p["alpha"], p["beta"]] for p in theirs]), str(options)
    )
    tables = BatchedBrightnessContrast.lookup_tables(alpha[:50], beta[:50])
    for a, b, table in zip(alpha[:50], beta[:50], tables):
        np.testing.assert_array_equal(cv2.LUT(image, table), transform.apply(image, alpha=a, beta=b))


def pipeline_of(transforms: list[A.BasicTransform]) -> BatchedPipeline:
    return BatchedPipeline.build(A.Compose(transforms, mask_interpolation=cv2.INTER_NEAREST))


def test_each_transform_is_applied_with_its_probability():
    pipeline = pipeline_of([A.HorizontalFlip(p=0.3)])
    images = np.arange(2000 * 2).reshape(2000, 1, 2, 1).astype(np.uint8) % 200
    flipped = images.copy()
    pipeline(flipped, None, seed=0)
    changed = (flipped != images).any(axis=(1, 2, 3))
    np.testing.assert_array_equal(flipped[changed], images[changed][:, :, ::-1])
    assert abs(changed.mean() - 0.3) < 0.03  # 2000 draws: 4.9 standard deviations


def test_only_lists_of_batched_transforms_are_batched():
    assert pipeline_of([A.Affine(), A.RandomBrightnessContrast(), A.HorizontalFlip(), A.VerticalFlip()])
    assert pipeline_of([A.Affine(), A.GaussNoise()]) is None
    assert pipeline_of([A.Affine(fit_output=True)]) is None  # changes the image size


def affine_preset() -> list[dict]:
    return [
        {
            "name": "Affine",
            "translate_percent": [-0.1, 0.1],
            "scale": [0.85, 1.15],
            "rotate": [-15, 15],
            "shear": [-8, 8],
            "p": 0.9,
        },
        {"name": "HorizontalFlip", "p": 0.5},
        {"name": "RandomBrightnessContrast", "brightness_limit": 0.2, "contrast_limit": 0.2, "p": 0.5},
    ]


def squares(count: int, size: int = 32) -> list[dict]:
    """Grey images with a bright square and its mask (class 2)."""
    rng = np.random.default_rng(4)
    samples = []
    for _ in range(count):
        x, y = rng.integers(4, size - 14, 2)
        image = rng.integers(0, 40, (size, size, 1), dtype=np.uint8)
        mask = np.zeros((size, size), np.uint8)
        image[y : y + 10, x : x + 10] = 220
        mask[y : y + 10, x : x + 10] = 2
        samples.append({"image": image, "mask": mask, "label": 1})
    return samples


def test_masks_follow_their_images_and_the_samples_stay_unchanged():
    samples = squares(64)
    originals = [(s["image"].copy(), s["mask"].copy()) for s in samples]
    out = build_augmenter(affine_preset(), seed=0)(samples, epoch=0, batch=0)
    for sample, (image, mask) in zip(samples, originals):
        np.testing.assert_array_equal(sample["image"], image)
        np.testing.assert_array_equal(sample["mask"], mask)
    moved = 0
    for before, after in zip(samples, out):
        assert after["image"].shape == before["image"].shape and after["mask"].dtype == np.uint8
        assert set(np.unique(after["mask"])) <= {0, 2, IGNORE_INDEX}  # nearest neighbour, ignore at borders
        square = after["mask"] == 2
        assert square.sum() > 40
        # Brightness/contrast moves 220 to 220 * alpha + beta, at least 220 * 0.8 - 51 = 125; background stays below
        assert after["image"][..., 0][square].mean() > 125 > after["image"][..., 0][after["mask"] == 0].mean()
        moved += not np.array_equal(after["mask"], before["mask"])
    assert moved > 50  # p = 0.9 affine, 0.5 flip


def test_batched_augmentation_is_seeded_and_the_same_in_every_thread():
    samples = squares(16)
    augmenter = build_augmenter(affine_preset(), seed=5)
    first = augmenter(samples, epoch=1, batch=2)
    results = []
    thread = threading.Thread(target=lambda: results.append(augmenter(samples, epoch=1, batch=2)))
    thread.start()
    thread.join()
    other = augmenter(samples, epoch=2, batch=2)
    for a, b in zip(first, results[0]):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["mask"], b["mask"])
    assert any(not np.array_equal(a["image"], b["image"]) for a, b in zip(first, other))
    assert cv2.ipp.useIPP()  # switched off for the batch only


def test_samples_the_batched_path_cannot_take_go_through_albumentations():
    augmenter = build_augmenter(affine_preset(), seed=0)
    calls = []
    one_by_one = augmenter._augment_one_by_one
    augmenter._augment_one_by_one = lambda samples, *seeding: (
        calls.append(len(samples)) or one_by_one(samples, *seeding)
    )
    boxes = {"boxes": np.array([[2, 2, 12, 12]], np.float32), "classes": np.array([0])}
    mixed_sizes = squares(2) + squares(1, size=40)
    assert len(augmenter(squares(4), epoch=0, batch=0)) == 4 and calls == []
    for batch in (
        [{**s, **boxes} for s in squares(3)],
        mixed_sizes,
        [{"image": np.zeros((8, 8, 6), np.uint8), "label": 0}] * 2,
    ):
        out = augmenter(batch, epoch=0, batch=0)
        assert [o["image"].shape for o in out] == [s["image"].shape for s in batch]
    assert calls == [3, 3, 2]
    assert build_augmenter(affine_preset(), batched=False)._pipeline is None


def test_batched_must_be_a_boolean():
    with pytest.raises(UserError, match=r"augment.batched must be true or false, received 'yes'"):
        build_augmenter(affine_preset(), batched="yes")
