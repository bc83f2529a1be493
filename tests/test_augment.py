"""Augmentation: boxes and masks follow their image, seeded, every preset on every kind of sample,
visionkit's own transforms, and mode=preview end to end."""

import pickle

import cv2
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from pipelines.run import CONF_DIR
from visionkit.data.augment import build_augmenter
from visionkit.data.augment.transforms import SobelFilter
from visionkit.data.core import IGNORE_INDEX
from visionkit.errors import UserError

PRESETS = sorted(p.stem for p in (CONF_DIR / "augment").glob("*.yaml"))


def preset(name: str) -> dict:
    """The `augment` section of augment=<name> as the pipeline composes it (shared keys included)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides=[f"augment={name}"]).augment, resolve=True)


def preset_output_size(name: str) -> tuple[int, int]:
    """data.image_size as augment=<name> sets it: where full_resolution transforms must end."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        size = compose("config", overrides=[f"augment={name}"]).data.image_size
    return (size, size) if isinstance(size, int) else tuple(size)


def scene(height: int = 48, width: int = 40, channels: int = 3) -> dict:
    """Two rectangles: class 0 (mask 1) and class 2 (mask 3), with their tight boxes."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, (height, width, channels), dtype=np.uint8)
    mask = np.zeros((height, width), np.uint8)
    boxes = np.array([[4, 6, 20, 22], [24, 30, 36, 44]], np.float32)
    for (x1, y1, x2, y2), class_id in zip(boxes.astype(int), (0, 2)):
        mask[y1:y2, x1:x2] = class_id + 1
        image[y1:y2, x1:x2] = 200 + 20 * class_id
    mask[0, :] = IGNORE_INDEX
    return {"image": image, "mask": mask, "boxes": boxes, "classes": np.array([0, 2]), "label": 1}


def tight_box(mask: np.ndarray, value: int) -> np.ndarray:
    ys, xs = np.nonzero(mask == value)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


GEOMETRY = [
    {"name": "HorizontalFlip", "p": 0.5},
    {"name": "VerticalFlip", "p": 0.5},
    {"name": "Affine", "translate_px": [-6, 6], "scale": [0.8, 1.2], "p": 1.0},
    {"name": "RandomResizedCrop", "size": None, "scale": [0.6, 1.0], "p": 0.5},
]


@pytest.mark.parametrize("batch", range(6))
def test_boxes_and_masks_move_with_the_image(batch):
    sample = scene()
    out = build_augmenter(GEOMETRY, seed=1, min_visibility=0.0)([sample], epoch=0, batch=batch)[0]
    assert out["image"].shape == sample["image"].shape and out["mask"].shape == sample["mask"].shape
    assert out["boxes"].dtype == np.float32 and out["classes"].dtype == np.int64
    for box, class_id in zip(out["boxes"], out["classes"]):
        # The box is still the tight box of its object's pixels (to interpolation rounding) ...
        np.testing.assert_allclose(box, tight_box(out["mask"], class_id + 1), atol=1.5)
        x1, y1, x2, y2 = np.round(box).astype(int)
        # ... and the mask still marks the object's bright pixels.
        inside = out["mask"][y1 + 1 : y2 - 1, x1 + 1 : x2 - 1] == class_id + 1
        assert inside.mean() > 0.95
        assert out["image"][y1 + 1 : y2 - 1, x1 + 1 : x2 - 1][inside].min() >= 150
    assert set(np.unique(out["mask"])) <= {0, 1, 3, IGNORE_INDEX}  # nearest neighbour: no blended class indices


def test_augmentation_with_boxes_and_masks_is_seeded():
    transforms = [*GEOMETRY, {"name": "Rotate", "limit": 30, "p": 0.8}, {"name": "GaussNoise", "p": 1.0}]
    samples = [scene(), scene(channels=1)]
    first = build_augmenter(transforms, seed=3)(samples, epoch=1, batch=2)
    again = build_augmenter(transforms, seed=3)(samples, epoch=1, batch=2)
    other = build_augmenter(transforms, seed=3)(samples, epoch=2, batch=2)
    for a, b, c in zip(first, again, other):
        for key in ("image", "mask", "boxes", "classes"):
            np.testing.assert_array_equal(a[key], b[key])
        assert not np.array_equal(a["image"], c["image"])
    np.testing.assert_array_equal(samples[0]["mask"], scene()["mask"])  # inputs untouched


def test_boxes_that_leave_the_image_are_dropped_and_the_arrays_keep_their_shape():
    leave = [{"name": "Affine", "translate_px": {"x": 100, "y": 0}, "p": 1.0}]
    out = build_augmenter(leave)([scene()], epoch=0, batch=0)[0]
    assert out["boxes"].shape == (0, 4) and out["boxes"].dtype == np.float32
    assert out["classes"].shape == (0,) and out["classes"].dtype == np.int64
    assert set(np.unique(out["mask"])) == {IGNORE_INDEX}  # every pixel came from outside the image


@pytest.mark.parametrize("min_visibility, kept", [(0.1, [0, 2]), (0.5, [0])])
def test_min_visibility_drops_boxes_mostly_outside(min_visibility, kept):
    # 14 px to the right: box 0 (x 4..20) stays whole; box 2 (x 24..36) keeps 2 of its 12 columns in the image.
    shift = [{"name": "Affine", "translate_px": {"x": 14, "y": 0}, "p": 1.0}]
    out = build_augmenter(shift, min_visibility=min_visibility)([scene()], epoch=0, batch=0)[0]
    assert out["classes"].tolist() == kept


def test_geometric_transforms_fill_new_mask_pixels_with_ignore_unless_told():
    sample = scene()
    sample["mask"][0, :] = 0
    rotate = {"name": "Affine", "rotate": [30, 30], "p": 1.0}
    filled = build_augmenter([rotate])([sample], epoch=0, batch=0)[0]["mask"]
    assert filled[0, 0] == IGNORE_INDEX and filled[-1, -1] == IGNORE_INDEX
    told = build_augmenter([{**rotate, "fill_mask": 0}])([sample], epoch=0, batch=0)[0]["mask"]
    assert IGNORE_INDEX not in told and set(np.unique(told)) <= {0, 1, 3}


def test_size_null_means_the_images_own_size():
    crop = [{"name": "RandomResizedCrop", "size": None, "scale": [0.2, 0.5], "p": 1.0}]
    augmenter = build_augmenter(crop)
    for shape in [(48, 40, 3), (30, 50, 1)]:
        sample = {"image": np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)}
        assert augmenter([sample], epoch=0, batch=0)[0]["image"].shape == shape


def test_a_transform_that_changes_the_image_size_is_named():
    rotate = build_augmenter([{"name": "RandomRotate90", "p": 1.0}], seed=0)
    square = {"image": np.zeros((32, 32, 3), np.uint8)}
    assert all(rotate([square], epoch=0, batch=b)[0]["image"].shape == (32, 32, 3) for b in range(4))
    with pytest.raises(
        UserError,
        match=r"augment: the transforms turned a 48x40x3 image into 40x48x3 \(e.g. "
        r"RandomRotate90 on a non-square image\); follow them with a resize",
    ):
        for batch in range(8):  # rotations by 90 or 270 degrees among them
            rotate([scene()], epoch=0, batch=batch)


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("channels", [3, 1])
def test_every_preset_keeps_image_mask_and_boxes_consistent(name, channels):
    spec = preset(name)
    sample = scene(channels=channels)
    # Keys the pipeline reads, not the image Augmenter: full_resolution (samples come at their own size, the
    # transforms end at data.image_size) and series (the series transforms).
    full_resolution, series = spec.pop("full_resolution", False), spec.pop("series", None)
    output_size = preset_output_size(name) if full_resolution else None
    augmenter = build_augmenter(**spec, seed=0, output_size=output_size)
    if augmenter is None:
        assert spec["transforms"] == [] and (name == "none" or series)
        return
    height, width = output_size or sample["mask"].shape
    for batch in range(8):
        out = augmenter([sample], epoch=0, batch=batch)[0]
        assert out["image"].shape == (height, width, channels) and out["image"].dtype == np.uint8
        assert out["mask"].shape == (height, width) and out["mask"].dtype == np.uint8
        assert set(np.unique(out["mask"])) <= {0, 1, 3, IGNORE_INDEX}
        assert out["boxes"].shape == (len(out["classes"]), 4) and set(out["classes"]) <= {0, 2}
        assert (out["boxes"] >= 0).all() and (out["boxes"] <= [width, height, width, height]).all()  # in the image
        assert out["label"] == 1


def test_presets_named_by_the_task_files_exist():
    assert {"none", "affine", "photometric", "light", "strong", "lecture", "dense"} <= set(PRESETS)
    lecture = [t["name"] for t in preset("lecture")["transforms"]]
    assert lecture == [
        "RandomRotate90",
        "RandomResizedCrop",
        "HorizontalFlip",
        "ToGray",
        "ColorJitter",
        "CoarseDropout",
        "GaussNoise",
        "GaussianBlur",
        "SobelFilter",
    ]


def numpy_sobel_magnitude(grey: np.ndarray) -> np.ndarray:
    """3x3 Sobel gradient magnitude with reflect-101 borders, by explicit correlation."""
    kx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float64)
    padded = np.pad(grey.astype(np.float64), 1, mode="reflect")
    h, w = grey.shape
    gx = sum(kx[i, j] * padded[i : i + h, j : j + w] for i in range(3) for j in range(3))
    gy = sum(kx.T[i, j] * padded[i : i + h, j : j + w] for i in range(3) for j in range(3))
    return np.hypot(gx, gy)


@pytest.mark.parametrize("channels", [1, 3])
def test_sobel_filter_is_the_stretched_gradient_magnitude(channels):
    rng = np.random.default_rng(1)
    grey = cv2.GaussianBlur(rng.integers(0, 255, (20, 24), dtype=np.uint8), (5, 5), 1.5)
    image = np.repeat(grey[..., None], channels, axis=2)  # grey in RGB: the grey conversion gives it back
    out = SobelFilter(p=1.0)(image=image)["image"]
    magnitude = numpy_sobel_magnitude(grey)
    expected = np.round(magnitude * 255 / magnitude.max())
    assert out.shape == image.shape and out.dtype == np.uint8
    for c in range(channels):
        np.testing.assert_allclose(out[..., c], expected, atol=1)


def test_visionkit_transforms_are_found_by_name_and_checked():
    augmenter = build_augmenter([{"name": "SobelFilter", "p": 1.0}])
    flat = {"image": np.full((16, 16, 3), 90, np.uint8)}
    assert augmenter([flat], epoch=0, batch=0)[0]["image"].max() == 0  # no edges in a flat image
    with pytest.raises(
        UserError,
        match=r"augment.transforms\[0\]: unknown Albumentations transform 'SobelFiltr' "
        r"\(did you mean 'SobelFilter'\?\); available: .*HorizontalFlip",
    ) as error:
        build_augmenter([{"name": "SobelFiltr"}])
    assert "BasicTransform" not in str(error.value)  # base classes are not transforms to choose
    with pytest.raises(
        UserError,
        match=r"augment.transforms\[0\] \(SobelFilter\): .*ksize must be 1, 3, 5 or 7, "
        r"received 4",
    ):
        build_augmenter([{"name": "SobelFilter", "ksize": 4}])


@pytest.mark.parametrize(
    "options, message",
    [
        ({"min_visibility": 1.5}, r"augment.min_visibility must be between 0 and 1, received 1.5"),
        ({"min_area": -1.0}, r"augment.min_area must be at least 0, received -1.0"),
    ],
)
def test_box_options_are_checked(options, message):
    with pytest.raises(UserError, match=message):
        build_augmenter(GEOMETRY, **options)


def test_an_augmenter_survives_pickling_for_worker_processes():
    augmenter = build_augmenter(GEOMETRY, seed=5, min_visibility=0.4)
    copy = pickle.loads(pickle.dumps(augmenter))
    a, b = augmenter([scene()], epoch=0, batch=3)[0], copy([scene()], epoch=0, batch=3)[0]
    for key in ("image", "mask", "boxes"):
        np.testing.assert_array_equal(a[key], b[key])
    assert copy.min_visibility == 0.4


@pytest.mark.parametrize(
    "task, overrides, transforms, tile",
    [
        ("classification", ["augment=lecture"], 9, 128),  # 32-pixel digits, enlarged 4 times
        pytest.param(
            "segmentation",
            ["data=shapes", "data.num_images=200", "augment=dense"],
            6,
            128,  # 64-pixel scenes
            marks=pytest.mark.slow,
        ),
    ],
)
def test_preview_writes_the_grid_and_logs_it(pipeline, task, overrides, transforms, tile):
    done = pipeline("mode=preview", f"task={task}", "preview.num_images=6", *overrides)
    png = pipeline.run_dir / "preview.png"
    assert png.is_file(), done.stdout
    grid = cv2.imread(str(png))
    assert grid.shape == (2 * (tile + 4) + 4, 3 * (tile + 4) + 4, 3)  # six tiles, 3 by 2, 4 pixels apart
    assert (
        f"preview: 6 augmented training samples of {'digits' if task == 'classification' else 'shapes'} "
        f"(augment: {transforms} transforms)" in done.stdout
    )
    client, runs = pipeline.mlflow_runs(task)
    assert len(runs) == 1 and runs[0].data.tags["mode"] == "preview"
    assert [a.path for a in client.list_artifacts(runs[0].info.run_id)] == ["preview.png"]
    assert runs[0].data.params["augment.min_visibility"] == "0.3"
