"""Each dataset format on small generated fixtures: what comes out (images, labels, targets, boxes in
pixels of the resized image, nearest-resized masks), what the report counts, and that no file of
the dataset changes. Boxes and masks are checked against pycocotools and plain numpy."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from test_verify import cache_dir, noise, save, snapshot  # noqa: F401  (cache_dir: autouse fixture)

from visionkit.data import load
from visionkit.errors import UserError


def nonzero(report) -> dict[str, int]:
    return {k: v for k, v in report.counts().items() if v}


def colour(rgb: tuple[int, int, int], height: int = 20, width: int = 24) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, np.uint8), (height, width, 3)).copy()


# ---- folder ----


def test_folder_uses_its_split_folders_and_sorted_class_names(tmp_path):
    root = tmp_path / "data"
    colours = {"apple": (200, 0, 0), "banana": (0, 0, 200)}  # the label is visible in the pixels
    for split, count in (("train", 3), ("valid", 2), ("test", 1)):
        for name, rgb in colours.items():
            for i in range(count):
                save(root / split / name / f"{i}.png", colour(rgb, 20 + i, 30))
    before = snapshot(root)
    bundle = load("folder", task="classification", path=str(root), image_size=[10, 12])
    assert bundle.class_names == ["apple", "banana"] and bundle.image_shape == (10, 12, 3)
    assert [len(s) for s in bundle.splits().values()] == [6, 4, 2]
    for split in bundle.splits().values():
        red = split.images[:, 5, 6, 0] > 100
        np.testing.assert_array_equal(split.targets["label"], np.where(red, 0, 1))
    assert snapshot(root) == before


def test_folder_without_split_folders_is_split_stratified(tmp_path):
    root = tmp_path / "data"
    for c, name in enumerate(("a", "b", "c")):
        for i in range(10):
            save(root / name / "nested" / f"{i}.jpg", noise(16, 16, 10 * c + i))
    bundle = load(
        "folder", task="classification", path=str(root), image_size=16, channels=1, val_fraction=0.3, test_fraction=0.3
    )
    assert bundle.image_shape == (16, 16, 1) and nonzero(bundle.verification) == {
        "verify_images": 30,
        "verify_kept": 30,
        "verify_converted_to_grayscale": 30,
    }
    for split in bundle.splits().values():
        assert np.bincount(split.targets["label"]).tolist() == [len(split) // 3] * 3
    with pytest.raises(UserError, match=r"has class folders that train/ lacks: pear"):
        save(root / "train" / "a" / "x.png", noise(8, 8))
        save(root / "test" / "pear" / "x.png", noise(8, 8))
        load("folder", task="classification", path=str(root))


# ---- csv ----


def write_csv(path: Path, rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(",".join(map(str, row)) for row in rows) + "\n")
    return path


def test_csv_classification_with_string_labels_and_bad_rows(tmp_path):
    root = tmp_path / "data"
    rows = [["file", "kind"]]
    for i in range(12):
        kind = ("cat", "dog")[i % 2]
        save(root / "pics" / f"{i}.png", colour((250, 0, 0) if kind == "cat" else (0, 250, 0)))
        rows.append([f"pics/{i}.png", kind])
    rows += [["pics/missing.png", "cat"], ["pics/0.png", ""]]
    csv_path = write_csv(root / "labels.csv", rows)
    before = snapshot(root)
    bundle = load(
        "csv",
        task="classification",
        path=str(csv_path),
        image_column="file",
        label_column="kind",
        image_size=8,
        val_fraction=0.25,
        test_fraction=0.25,
    )
    assert bundle.class_names == ["cat", "dog"]
    assert nonzero(bundle.verification) == {
        "verify_images": 14,
        "verify_kept": 12,
        "verify_skipped": 2,
        "verify_skipped_missing": 1,
        "verify_skipped_bad_label": 1,
    }
    assert any("labels.csv line 15: empty label in column 'kind'" in issue for issue in bundle.verification.issues)
    for split in bundle.splits().values():
        np.testing.assert_array_equal(split.targets["label"], (split.images[:, 0, 0, 1] > 100).astype(int))
    assert snapshot(root) == before
    with pytest.raises(UserError, match=r"labels.csv has no column 'image'; its columns: file, kind"):
        load("csv", task="classification", path=str(csv_path))


def test_csv_regression_targets_integer_labels_and_split_column(tmp_path):
    root = tmp_path / "data"
    rows = [["image", "label", "x", "y", "split"]]
    for i in range(9):
        save(root / f"{i}.png", colour((10 * i, 0, 0)))
        rows.append(
            [
                f"{i}.png",
                (2, 10, 7)[i % 3],
                i / 10,
                -i,
                ("train", "train", "train", "val", "test", "train", "valid", "test", "train")[i],
            ]
        )
    rows.append(["0.png", 2, "n/a", 0, "train"])
    csv_path = write_csv(root / "table.csv", rows)
    bundle = load("csv", task="regression", path=str(csv_path), target_columns=["x", "y"], image_size=4)
    assert bundle.target_names == ["x", "y"] and bundle.class_names == ["2", "7", "10"]  # sorted by value
    assert [len(s) for s in bundle.splits().values()] == [5, 2, 2]
    assert nonzero(bundle.verification)["verify_skipped_bad_target"] == 1
    train = bundle.train
    index = np.round(train.images[:, 0, 0, 0] / 10).astype(int)
    np.testing.assert_allclose(train.targets["target"], np.stack([index / 10, -index], axis=1), rtol=1e-6)
    np.testing.assert_array_equal(train.targets["label"], [[0, 2, 1][i % 3] for i in index])
    assert train.targets["target"].dtype == np.float32
    rows[1][4] = "holdout"
    with pytest.raises(
        UserError,
        match=r"table.csv line 2: column 'split' must be train, val or test, "
        r"received 'holdout'",
    ):
        load("csv", task="regression", path=str(write_csv(root / "table.csv", rows)), target_columns=["x"])


# ---- coco ----


def uncompressed_rle(binary: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths in column-major order, starting with a run of zeros."""
    flat = binary.flatten(order="F").astype(np.int64)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return {"size": list(binary.shape), "counts": np.diff(np.concatenate([[0], edges])).tolist()}


def rectangle(height: int, width: int, x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    binary = np.zeros((height, width), np.uint8)
    binary[y1:y2, x1:x2] = 1
    return binary


def coco_fixture(root: Path) -> Path:
    """A train split of three images (40x30, 20x20, 30x30) and val and test of one each; categories
    7 'dog' and 3 'cat' (so cat is class 0), every kind of segmentation and every kind of problem."""
    compressed = mask_utils.encode(np.asfortranarray(rectangle(30, 40, 20, 2, 30, 12)))
    annotations = [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 3,
            "bbox": [2, 3, 10, 8],
            "iscrowd": 0,
            "segmentation": [[2, 3, 12, 3, 12, 11, 2, 11]],
        },  # polygon, cat
        {
            "id": 2,
            "image_id": 1,
            "category_id": 7,
            "bbox": [20, 2, 10, 10],
            "iscrowd": 0,
            "segmentation": {"size": [30, 40], "counts": compressed["counts"].decode()},
        },  # compressed RLE, dog
        {
            "id": 3,
            "image_id": 1,
            "category_id": 7,
            "bbox": [0, 20, 8, 8],
            "iscrowd": 1,
            "segmentation": uncompressed_rle(rectangle(30, 40, 0, 20, 8, 28)),
        },  # crowd: ignore
        {
            "id": 4,
            "image_id": 1,
            "category_id": 99,
            "bbox": [30, 20, 5, 5],
            "iscrowd": 0,
            "segmentation": [[30, 20, 35, 20, 35, 25, 30, 25]],
        },  # unknown category
        {
            "id": 5,
            "image_id": 2,
            "category_id": 3,
            "bbox": [-1, 5, 10, 15],
            "iscrowd": 0,
            "segmentation": uncompressed_rle(rectangle(20, 20, 0, 5, 9, 20)),
        },  # clipped box
        {
            "id": 6,
            "image_id": 2,
            "category_id": 7,
            "bbox": [15, 15, 10, 10],
            "iscrowd": 0,
            "segmentation": [[15, 15, 19, 15, 19, 19]],
        },  # 5 px out: dropped
        {"id": 7, "image_id": 2, "category_id": 7, "bbox": [4, 4, 0, 6], "iscrowd": 0, "segmentation": []},
        {"id": 8, "image_id": 42, "category_id": 3, "bbox": [0, 0, 2, 2], "iscrowd": 0, "segmentation": []},
    ]
    images = [
        {"id": 1, "file_name": "a.jpg", "width": 40, "height": 30},
        {"id": 2, "file_name": "sub/b.png", "width": 20, "height": 20},
        {"id": 3, "file_name": "c.png", "width": 99, "height": 30},
    ]  # wrong size
    categories = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]
    save(root / "train" / "images" / "a.jpg", noise(30, 40, 1))
    save(root / "train" / "images" / "sub" / "b.png", noise(20, 20, 2)[..., 0])
    save(root / "train" / "images" / "c.png", noise(30, 30, 3))
    train = {"images": images, "annotations": annotations, "categories": categories}
    (root / "train" / "annotations.json").write_text(json.dumps(train))
    for split in ("val", "test"):
        save(root / split / "images" / "d.png", noise(30, 30, 4))
        (root / split / "annotations.json").write_text(
            json.dumps(
                {
                    "images": [{"id": 1, "file_name": "d.png", "width": 30, "height": 30}],
                    "categories": categories,
                    "annotations": [
                        {
                            "id": 1,
                            "image_id": 1,
                            "category_id": 3,
                            "bbox": [1, 1, 5, 5],
                            "iscrowd": 0,
                            "segmentation": [[1, 1, 6, 1, 6, 6, 1, 6]],
                        }
                    ],
                }
            )
        )
    return root


def expected_coco_mask(json_path: Path, image_id: int, class_of: dict[int, int]) -> np.ndarray:
    """The class mask from pycocotools' own annToMask: largest object first, crowd and unknown
    categories 255."""
    coco = COCO(str(json_path))
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=None))
    anns = sorted(anns, key=lambda a: -a["bbox"][2] * a["bbox"][3])
    info = coco.loadImgs([image_id])[0]
    mask, ignore = np.zeros((info["height"], info["width"]), np.uint8), np.zeros((info["height"], info["width"]), bool)
    for ann in anns:
        if not ann["segmentation"]:
            continue
        pixels = coco.annToMask(ann).astype(bool)
        if ann["iscrowd"] or ann["category_id"] not in class_of:
            ignore |= pixels
        else:
            mask[pixels] = class_of[ann["category_id"]] + 1
    mask[ignore] = 255
    return mask


def test_coco_boxes_masks_crowd_and_unknown_categories(tmp_path):
    root = coco_fixture(tmp_path / "data")
    before = snapshot(root)
    bundle = load("coco", task="segmentation", path=str(root), image_size=[15, 20])
    assert bundle.class_names == ["cat", "dog"] and bundle.image_shape == (15, 20, 3)
    assert nonzero(bundle.verification) == {
        "verify_images": 5,
        "verify_kept": 4,
        "verify_skipped": 1,
        "verify_skipped_size_mismatch": 1,
        "verify_converted_grayscale": 1,
        "verify_boxes_clipped": 1,
        "verify_boxes_dropped_outside": 1,
        "verify_boxes_dropped_degenerate": 1,
        "verify_crowd_annotations": 1,
        "verify_unknown_category": 1,
        "verify_unknown_image": 1,
        "verify_no_segmentation": 1,
    }
    issues = "\n".join(bundle.verification.issues)
    assert "annotations.json annotation id 4: category id 99 is not in 'categories'" in issues
    assert "annotations.json annotation id 8: image id 42 is not in 'images'" in issues
    assert "c.png: annotations.json gives 99x30 for a 30x30 image" in issues
    train = bundle.train
    assert len(train) == 2 and [len(bundle.val), len(bundle.test)] == [1, 1]
    # Image 1 (40x30 -> 20x15: halved): the dog (area 100) and the cat (80); crowd and id 99 are no boxes.
    np.testing.assert_allclose(train.targets["boxes"][0], np.array([[20, 2, 30, 12], [2, 3, 12, 11]]) / 2)
    np.testing.assert_array_equal(train.targets["classes"][0], [1, 0])
    # Image 2 (20x20 -> 20x15): the box 1 px outside is clipped; the 5 px one and the empty one dropped.
    np.testing.assert_allclose(train.targets["boxes"][1], [[0, 5 * 0.75, 9, 20 * 0.75]])
    class_of = {3: 0, 7: 1}
    for i, image_id in enumerate((1, 2)):
        full = expected_coco_mask(root / "train" / "annotations.json", image_id, class_of)
        expected = cv2.resize(full, (20, 15), interpolation=cv2.INTER_NEAREST)
        if image_id == 2:  # annotation 7 has no outline: its box [4, 4, 4, 10] is empty, nothing to ignore
            assert (full == 255).sum() == 0
        np.testing.assert_array_equal(train.targets["mask"][i], expected)
    assert set(np.unique(train.targets["mask"][0])) == {0, 1, 2, 255}
    assert snapshot(root) == before


# ---- masks ----


def masks_fixture(root: Path) -> Path:
    """train (a-d), val (e) and test (f) images; palette masks for a, e, f; for b a mask with values
    beyond the classes, for c a mask of the wrong size, none for d."""
    (root / "classes.txt").parent.mkdir(parents=True)
    (root / "classes.txt").write_text("background\nroad\ncar\n")
    good = np.zeros((12, 16), np.uint8)
    good[2:6, 3:9], good[7:11, 10:15], good[0, 0] = 1, 2, 255
    palette = Image.fromarray(good, "P")
    palette.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [224] * (253 * 3))
    for split, stems in (("train", ("a", "b", "c", "d")), ("val", ("e",)), ("test", ("f",))):
        for stem in stems:
            save(root / split / "images" / f"{stem}.jpg", noise(12, 16, ord(stem)))
    for split, stem in (("train", "a"), ("val", "e"), ("test", "f")):
        save(root / split / "masks" / f"{stem}.png", palette)
    wild = good.copy()
    wild[0, 1:4] = 7
    save(root / "train" / "masks" / "b.png", wild)
    save(root / "train" / "masks" / "c.png", good[:10])  # 16x10 for a 16x12 image
    return root


def test_masks_palette_out_of_range_mismatch_and_missing(tmp_path):
    root = masks_fixture(tmp_path / "data")
    good = np.zeros((12, 16), np.uint8)
    good[2:6, 3:9], good[7:11, 10:15], good[0, 0] = 1, 2, 255
    before = snapshot(root)
    bundle = load("masks", task="segmentation", path=str(root), image_size=[6, 8])
    assert bundle.class_names == ["road", "car"] and bundle.mask_names == ["background", "road", "car"]
    assert nonzero(bundle.verification) == {
        "verify_images": 6,
        "verify_kept": 4,
        "verify_skipped": 2,
        "verify_skipped_mask_size": 1,
        "verify_skipped_mask_missing": 1,
        "verify_mask_pixels_out_of_range": 3,
    }
    issues = "\n".join(bundle.verification.issues)
    assert (
        f"mask {root / 'train' / 'masks' / 'c.png'} is 16x10, the image {root / 'train' / 'images' / 'c.jpg'} is 16x12"
    ) in issues
    expected = cv2.resize(good, (8, 6), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(bundle.train.targets["mask"][0], expected)
    wild_expected = good.copy()
    wild_expected[0, 1:4] = 255
    np.testing.assert_array_equal(
        bundle.train.targets["mask"][1], cv2.resize(wild_expected, (8, 6), interpolation=cv2.INTER_NEAREST)
    )
    assert bundle.train.images.shape == (2, 6, 8, 3) and bundle.train.targets["mask"].dtype == np.uint8
    assert snapshot(root) == before
    (root / "classes.txt").write_text("background\n")
    with pytest.raises(UserError, match=r"classes.txt must name the background \(line 0\) and at least one class"):
        load("masks", task="segmentation", path=str(root))


# ---- yolo ----


def yolo_fixture(root: Path) -> Path:
    """Images 40 wide and 20 high in images/{train,val,test}, labels beside them in labels/, two
    classes ant and bee in data.yaml; train c and d have bad label files, test f none."""
    labels = {  # image stem -> label text; images are 40 wide, 20 high
        "train/a": "0 0.5 0.5 0.5 0.5\n1 0.1 0.5 0.3 0.2\n",  # second box: 2 px left of the image: clipped
        "train/b": "1 0.9 0.5 0.5 0.5\n",  # 6 px beyond the right edge: dropped
        "train/c": "0 0.5 0.5 0.2 0.2\n2 0.5 0.5 0.2 0.2\n",  # class 2 of 2 classes: image skipped
        "train/d": "0 0.5 0.5\n",  # malformed: image skipped
        "val/e": "1 0.25 0.25 0.5 0.5\n",
        "test/f": None,  # no label file: no objects
    }
    for stem, text in labels.items():
        split, name = stem.split("/")
        save(root / "images" / split / f"{name}.png", noise(20, 40, ord(name)))
        if text is not None:
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{name}.txt").write_text(text)
    (root / "data.yaml").write_text(
        yaml.safe_dump(
            {
                "path": ".",
                "train": "images/train",
                "val": "images/val",
                "test": ["images/test"],
                "names": {0: "ant", 1: "bee"},
            }
        )
    )
    return root


def test_yolo_boxes_in_pixels_and_bad_label_lines(tmp_path):
    root = yolo_fixture(tmp_path / "data")
    before = snapshot(root)
    bundle = load("yolo", task="detection", path=str(root), image_size=[10, 20])
    assert bundle.class_names == ["ant", "bee"]
    assert nonzero(bundle.verification) == {
        "verify_images": 6,
        "verify_kept": 4,
        "verify_skipped": 2,
        "verify_skipped_bad_label": 2,
        "verify_boxes_clipped": 1,
        "verify_boxes_dropped_outside": 1,
    }
    issues = "\n".join(bundle.verification.issues)
    assert f"{root / 'labels' / 'train' / 'c.txt'} line 2: class id 2 is out of range 0..1" in issues
    assert f"{root / 'labels' / 'train' / 'd.txt'} line 1: expected 'class cx cy w h', received '0 0.5 0.5'" in issues
    a, b = bundle.train.targets["boxes"]
    np.testing.assert_allclose(a, np.array([[10, 5, 30, 15], [0, 8, 10, 12]]) / 2, atol=1e-5)
    assert b.shape == (0, 4) and bundle.train.targets["classes"][0].tolist() == [0, 1]
    np.testing.assert_allclose(bundle.val.targets["boxes"][0], [[0, 0, 10, 5]], atol=1e-5)
    assert bundle.test.targets["boxes"][0].shape == (0, 4)
    assert snapshot(root) == before


# ---- tfds ----


def test_tfds_reads_a_mocked_dataset_offline(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=100):  # download=true goes through the mock: no network
        bundle = load(
            "tfds",
            task="classification",
            name_in_tfds="mnist",
            image_size=12,
            channels=3,
            data_dir=str(tmp_path / "tfds"),
            download=True,
        )
    assert bundle.class_names == [str(d) for d in range(10)] and bundle.image_shape == (12, 12, 3)
    assert [len(s) for s in bundle.splits().values()] == [85, 15, 100]  # val carved from train
    assert nonzero(bundle.verification) == {"verify_images": 200, "verify_kept": 200, "verify_converted_grayscale": 200}
    with pytest.raises(UserError, match=r"'mnist' is not prepared in .*; run once with data.download=true"):
        load("tfds", task="classification", name_in_tfds="mnist", data_dir=str(tmp_path / "empty"), download=False)
    with pytest.raises(UserError, match=r"unknown TensorFlow Datasets name 'mnistt' \(did you mean 'mnist'\?\)"):
        load("tfds", task="classification", name_in_tfds="mnistt", data_dir=str(tmp_path / "empty"))


# ---- digit_scenes ----


def test_digit_scenes_are_seeded_real_digits_with_tight_boxes_and_stroke_masks():
    options = {"num_images": 40, "image_size": 48, "max_digits": 3, "digit_size": [12, 20]}
    bundle = load("digit_scenes", task="detection", **options)
    again = load("digit_scenes", task="segmentation", **options)
    np.testing.assert_array_equal(bundle.train.images, again.train.images)
    other = load("digit_scenes", task="detection", **options, seed=1)
    assert not np.array_equal(bundle.train.images, other.train.images)
    assert bundle.class_names == [str(d) for d in range(10)] and bundle.image_shape == (48, 48, 1)
    counts = []
    for i in range(len(bundle.train)):
        sample = bundle.train.sample(i)
        boxes, classes, mask = sample["boxes"], sample["classes"], sample["mask"]
        counts.append(len(boxes))
        assert 1 <= len(boxes) <= 3 and set(np.unique(mask)) <= set(range(11))
        stroke = mask > 0
        assert np.array_equal(stroke, sample["image"][..., 0] > 127)  # the mask is the bright stroke
        for box, digit in zip(boxes.astype(int), classes):
            x1, y1, x2, y2 = box
            inside = mask[y1:y2, x1:x2] == digit + 1
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()  # tight
            assert set(np.unique(mask[y1:y2, x1:x2])) <= {0, digit + 1}  # no other digit overlaps it
        assert sum((mask == c + 1).sum() for c in set(classes)) == stroke.sum()
    assert len(set(counts)) > 1
    with pytest.raises(
        UserError,
        match=r"data.digit_size must be \[min, max\] with 8 <= min <= max <= "
        r"data.image_size \(48\)",
    ):
        load("digit_scenes", task="detection", image_size=48, digit_size=[12, 60])
