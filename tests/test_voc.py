"""data=voc as the VOCdevkit, labelImg and CVAT write it (1-based inclusive boxes, difficult/truncated/segmented
fields, palette PNG masks), and VOC's protocol for difficult objects: out of training and out of the metrics."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image
from test_verify import cache_dir, noise, save, snapshot  # noqa: F401  (cache_dir: autouse fixture)

from visionkit.data import load
from visionkit.data.augment import build_augmenter
from visionkit.data.core import IGNORE_INDEX
from visionkit.data.sizing import Sizing
from visionkit.data.sources.voc import VOC_CLASSES, read_annotation
from visionkit.errors import UserError
from visionkit.tasks.detection import DetectionLoss, truth_lists
from visionkit.tasks.detection_metrics import coco_metrics


def voc_xml(filename: str, width: int, height: int, objects: list[dict], *, cvat: bool = False) -> str:
    """An annotation as labelImg writes it (integer corners, pose/truncated/difficult), or as CVAT does
    (decimal corners, an <occluded> field)."""
    parts = [
        "<annotation>",
        "\t<folder>JPEGImages</folder>",
        f"\t<filename>{filename}</filename>",
        f"\t<path>/home/someone/VOC/JPEGImages/{filename}</path>",
        "\t<source><database>Unknown</database></source>",
        f"\t<size><width>{width}</width><height>{height}</height><depth>3</depth></size>",
        "\t<segmented>0</segmented>",
    ]
    for obj in objects:
        x1, y1, x2, y2 = obj["box"]
        corners = (f"{v:.2f}" if cvat else str(v) for v in (x1, y1, x2, y2))
        parts += [
            "\t<object>",
            f"\t\t<name>{obj['name']}</name>",
            "\t\t<pose>Unspecified</pose>",
            f"\t\t<truncated>{obj.get('truncated', 0)}</truncated>",
            f"\t\t<difficult>{obj.get('difficult', 0)}</difficult>",
            *(["\t\t<occluded>0</occluded>"] if cvat else []),
            "\t\t<bndbox>"
            + "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), corners))
            + "</bndbox>",
            "\t</object>",
        ]
    return "\n".join([*parts, "</annotation>\n"])


# id -> (width, height, objects); boxes 1-based inclusive, as VOC writes them
IMAGES = {
    "000001": (40, 30, [{"name": "dog", "box": (1, 1, 40, 30)}]),
    "000002": (
        36,
        28,
        [{"name": "cat", "box": (5, 6, 20, 22)}, {"name": "dog", "box": (10, 3, 30, 25), "difficult": 1}],
    ),
    "000003": (44, 32, [{"name": "person", "box": (2, 2, 12, 30), "truncated": 1}]),
    "000004": (32, 32, [{"name": "cat", "box": (3, 4, 28, 30)}]),
    "000005": (30, 40, [{"name": "dog", "box": (4, 4, 26, 36)}]),
    "000006": (40, 30, [{"name": "person", "box": (1, 5, 15, 25), "difficult": 1}]),
    "000007": (34, 34, [{"name": "cat", "box": (6, 6, 30, 30)}]),
    "000008": (38, 30, [{"name": "dog", "box": (2, 2, 36, 28)}]),
}
LISTS = {"train": ["000001", "000002", "000003", "000004"], "val": ["000005", "000006"], "test": ["000007", "000008"]}


def palette_mask(width: int, height: int, objects: list[dict]) -> Image.Image:
    """VOC's SegmentationClass PNG: palette indices = class (VOC order, 0 background), 255 the object borders."""
    mask = np.zeros((height, width), np.uint8)
    for obj in objects:
        x1, y1, x2, y2 = obj["box"]
        mask[y1 - 1 : y2, x1 - 1 : x2] = IGNORE_INDEX
        mask[y1 : y2 - 1, x1 : x2 - 1] = VOC_CLASSES.index(obj["name"]) + 1
    image = Image.fromarray(mask, mode="P")
    palette = np.zeros((256, 3), np.uint8)
    palette[1:21] = np.random.default_rng(0).integers(0, 256, (20, 3))
    palette[255] = (224, 224, 192)  # VOC's border colour
    image.putpalette(palette.ravel().tolist())
    return image


def voc_fixture(root, images=IMAGES, lists=LISTS, cvat=False, masks=True):
    for image_id, (width, height, objects) in images.items():
        save(root / "JPEGImages" / f"{image_id}.jpg", noise(height, width, int(image_id)))
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{image_id}.xml").write_text(
            voc_xml(f"{image_id}.jpg", width, height, objects, cvat=cvat)
        )
        if masks:
            save(root / "SegmentationClass" / f"{image_id}.png", palette_mask(width, height, objects))
    for image_set in ("Main", "Segmentation"):
        for name, ids in lists.items():
            (root / "ImageSets" / image_set).mkdir(parents=True, exist_ok=True)
            (root / "ImageSets" / image_set / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def detection(root, **options):
    return load("voc", task="detection", path=str(root), image_size=32, cache="none", **options)


def test_boxes_are_read_as_0_based_pixel_edges_from_the_split_lists(tmp_path):
    root = voc_fixture(tmp_path / "voc")
    before = snapshot(root)
    bundle = detection(root)
    assert bundle.class_names == list(VOC_CLASSES)  # every name is VOC's: its 20 classes, in its order
    assert [len(bundle.train), len(bundle.val), len(bundle.test)] == [4, 2, 2]
    first = bundle.train.targets
    # 000001's box covers the whole 40x30 image: pixels 1..40 and 1..30, edges 0..40 and 0..30.
    np.testing.assert_array_equal(first["boxes"][0], [[0, 0, 40, 30]])
    np.testing.assert_array_equal(first["boxes"][1], [[4, 5, 20, 22], [9, 2, 30, 25]])
    assert first["classes"][1].tolist() == [VOC_CLASSES.index("cat"), VOC_CLASSES.index("dog")]
    assert first["difficult"][1].tolist() == [False, True]
    assert bundle.verification.findings["difficult_objects"] == 2
    sample = bundle.train.sample(1)  # sized to 32x32 from 36x28, the flags beside their boxes
    np.testing.assert_allclose(sample["boxes"][0], [4 * 32 / 36, 5 * 32 / 28, 20 * 32 / 36, 22 * 32 / 28], rtol=1e-5)
    assert sample["difficult"].tolist() == [False, True]
    assert snapshot(root) == before


def test_cvat_decimals_trainval_and_a_carved_val(tmp_path):
    root = voc_fixture(tmp_path / "voc", lists={**LISTS, "trainval": LISTS["train"] + LISTS["val"]}, cvat=True)
    bundle = detection(root, train_list="trainval", val_list="", val_fraction=0.25)
    assert [len(bundle.train), len(bundle.val), len(bundle.test)] == [4, 2, 2]
    parsed = read_annotation(root / "Annotations" / "000003.xml")
    assert parsed.size == (32, 44) and not parsed.segmented
    assert parsed.objects[0].truncated and not parsed.objects[0].difficult and parsed.objects[0].pose == "Unspecified"
    assert parsed.objects[0].box == (1.0, 1.0, 12.0, 30.0)
    with pytest.raises(UserError, match=r"data.train_list: .*trainval2.txt does not exist; lists in .*: test, train"):
        detection(voc_fixture(tmp_path / "other"), train_list="trainval2")
    # CVAT, for a task without subsets, lists every image in ImageSets/Main/default.txt.
    cvat = voc_fixture(tmp_path / "cvat", lists={"default": list(IMAGES)}, cvat=True)
    assert sum(len(split) for split in detection(cvat, val_fraction=0.25, test_fraction=0.25).splits().values()) == 8


def test_a_labelling_tool_export_names_its_own_classes(tmp_path):
    images = {
        f"{i:06d}": (32, 32, [{"name": ("tomato", "leaf")[i % 2], "box": (2, 2, 20 + i, 20)}]) for i in range(1, 9)
    }
    root = voc_fixture(tmp_path / "export", images=images, lists={}, masks=False)  # labelImg writes no split lists
    bundle = detection(root, val_fraction=0.25, test_fraction=0.25)
    assert bundle.class_names == ["leaf", "tomato"]
    assert [len(bundle.train), len(bundle.val), len(bundle.test)] == [4, 2, 2]
    named = detection(root, val_fraction=0.25, test_fraction=0.25, class_names=["tomato"])
    assert named.class_names == ["tomato"] and named.verification.findings["unknown_category"] == 4
    assert all(len(c) == 0 or c.tolist() == [0] for c in named.train.targets["classes"])


def test_xml_files_beside_their_images_as_roboflow_and_labelimg_write_them(tmp_path):
    root = tmp_path / "roboflow"
    for split, ids in (("train", LISTS["train"]), ("valid", LISTS["val"]), ("test", LISTS["test"])):
        for image_id in ids:
            width, height, objects = IMAGES[image_id]
            stem = f"{image_id}_jpg.rf.{image_id[-2:]}ab"  # Roboflow's renaming
            save(root / split / f"{stem}.jpg", noise(height, width, int(image_id)))
            (root / split / f"{stem}.xml").write_text(voc_xml(f"{stem}.jpg", width, height, objects))
    bundle = detection(root)
    assert [len(bundle.train), len(bundle.val), len(bundle.test)] == [4, 2, 2]
    np.testing.assert_array_equal(bundle.train.targets["boxes"][0], [[0, 0, 40, 30]])
    flat = detection(root / "train", val_fraction=0.25, test_fraction=0.25)  # labelImg: one folder
    assert [len(flat.train), len(flat.val), len(flat.test)] == [2, 1, 1]
    with pytest.raises(UserError, match="has no Annotations/ folder and no .xml files beside its images"):
        (tmp_path / "photos").mkdir()
        detection(tmp_path / "photos")


def test_broken_annotations_are_named_skips(tmp_path):
    root = voc_fixture(tmp_path / "voc")
    (root / "Annotations" / "000002.xml").write_text("<annotation><object><name>dog</name>")  # truncated
    (root / "Annotations" / "000003.xml").write_bytes(b"\x00\xff garbage")
    text = voc_xml("000004.jpg", 64, 64, IMAGES["000004"][2])  # the image is 32x32
    (root / "Annotations" / "000004.xml").write_text(text)
    (root / "Annotations" / "000001.xml").write_text(
        voc_xml("000001.jpg", 40, 30, [{"name": "dog", "box": ("one", 1, 40, 30)}])
    )
    (root / "ImageSets" / "Main" / "train.txt").write_text("000001\n000002\n000003\n000004\n000009\n000005 1\n")
    before = snapshot(root)
    bundle = detection(root)
    skipped = bundle.verification.skipped
    assert skipped == {"bad_annotation": 3, "size_mismatch": 1, "annotation_missing": 1}, skipped
    issues = "\n".join(bundle.verification.issues)
    assert "000002.xml: not readable XML" in issues and "000003.xml: not readable XML" in issues
    assert "000001.xml: object 1 (dog): <bndbox/xmin> is 'one', not a number" in issues
    assert "000004.xml gives 64x64 for a 32x32 image" in issues
    assert len(bundle.train) == 1 and snapshot(root) == before


def test_segmentation_reads_the_palette_indices_with_255_as_ignore(tmp_path):
    root = voc_fixture(tmp_path / "voc")
    bundle = load("voc", task="segmentation", path=str(root), targets="segmentation", image_size=32, cache="none")
    assert bundle.mask_names == ["background", *VOC_CLASSES] and bundle.class_names == list(VOC_CLASSES)
    mask = bundle.train.targets["mask"][1]  # 000002: a cat, then a dog over it, each inside a 255 border
    assert mask.shape == (28, 36)
    assert set(np.unique(mask)) == {0, VOC_CLASSES.index("cat") + 1, VOC_CLASSES.index("dog") + 1, IGNORE_INDEX}
    assert mask[2, 9] == IGNORE_INDEX and mask[10, 15] == VOC_CLASSES.index("dog") + 1 and mask[27, 0] == 0
    assert bundle.train.sample(1)["mask"].shape == (32, 32)
    (root / "SegmentationClass" / "000003.png").unlink()
    save(root / "SegmentationClass" / "000004.png", palette_mask(20, 20, []))
    bundle = load("voc", task="segmentation", path=str(root), targets="segmentation", cache="none")
    assert bundle.verification.skipped == {"mask_missing": 1, "mask_size": 1} and len(bundle.train) == 2


def cvat_labels(height: int, width: int) -> np.ndarray:
    labels = np.zeros((height, width), np.uint8)
    labels[5:20, 5:15], labels[10:25, 18:28], labels[0, :] = 1, 2, 3  # leaf, tomato, a colour labelmap.txt lacks
    return labels


def test_colour_masks_as_cvat_exports_them(tmp_path):
    """CVAT writes SegmentationClass as RGB colours and names them in labelmap.txt; without it, RGB masks are read
    through VOC's own colours (person: 192, 128, 128; border: 224, 224, 192)."""
    root = voc_fixture(tmp_path / "cvat", masks=False)
    colours = np.array([[0, 0, 0], [10, 200, 10], [250, 50, 50], [1, 2, 3]], np.uint8)
    for image_id, (width, height, _) in IMAGES.items():
        save(root / "SegmentationClass" / f"{image_id}.png", colours[cvat_labels(height, width)])
    (root / "labelmap.txt").write_text(
        "# label:color_rgb:parts:actions\nbackground:0,0,0::\nleaf:10,200,10::\ntomato:250,50,50::\n"
    )
    bundle = load("voc", task="segmentation", path=str(root), targets="segmentation", cache="none")
    assert bundle.mask_names == ["background", "leaf", "tomato"]
    labels = cvat_labels(28, 36)  # 000002's
    np.testing.assert_array_equal(bundle.train.targets["mask"][1], np.where(labels == 3, IGNORE_INDEX, labels))
    assert bundle.verification.findings["mask_pixels_out_of_range"] == sum(w for w, _, _ in IMAGES.values())
    (root / "labelmap.txt").unlink()
    person = np.zeros((28, 36, 3), np.uint8)
    person[4:20, 4:20] = (224, 224, 192)
    person[6:18, 6:18] = (192, 128, 128)
    save(root / "SegmentationClass" / "000002.png", person)
    mask = load("voc", task="segmentation", path=str(root), targets="segmentation", cache="none").train.targets["mask"]
    assert mask[1][10, 10] == VOC_CLASSES.index("person") + 1 and mask[1][4, 4] == IGNORE_INDEX and mask[1][0, 0] == 0


# ---- difficult objects: out of training, out of the metrics ------------------------------------------------


def test_a_difficult_box_is_no_training_target():
    from visionkit.tasks import get_task

    task = get_task("detection")
    box = {"boxes": np.array([[2.0, 2.0, 20.0, 20.0], [30.0, 30.0, 60.0, 60.0]]), "classes": np.array([0, 1])}
    with_difficult = task.encode_targets([{**box, "difficult": np.array([False, True])}])
    without = task.encode_targets([{"boxes": box["boxes"][:1], "classes": box["classes"][:1]}])
    anchors = np.tile(np.random.default_rng(0).uniform(0, 64, (1, 50, 2)), 2) + [0, 0, 16, 16]
    outputs = np.concatenate([anchors, np.random.default_rng(1).normal(size=(1, 50, 4 + 2))], -1).astype("float32")
    loss = DetectionLoss()
    assert float(loss(with_difficult, outputs)) == pytest.approx(float(loss(without, outputs)))
    truths = truth_lists(with_difficult)[0]
    assert truths["classes"].tolist() == [0, 1] and truths["difficult"].tolist() == [False, True]
    np.testing.assert_array_equal(truths["boxes"], box["boxes"])


def test_difficult_flags_follow_boxes_a_crop_drops():
    sample = {
        "image": noise(40, 40),
        "boxes": np.array([[0, 0, 8, 8], [30, 30, 40, 40], [12, 12, 28, 28]], np.float32),
        "classes": np.array([0, 1, 2]),
        "difficult": np.array([True, False, True]),
    }
    cropped = Sizing((20, 20), "center_crop", crop_ratio=0.5).apply(sample, (40, 40))
    assert cropped["classes"].tolist() == [2] and cropped["difficult"].tolist() == [True]
    augmenter = build_augmenter(
        [{"name": "CenterCrop", "height": 20, "width": 20}, {"name": "Resize", "height": 40, "width": 40}], seed=0
    )
    augmented = augmenter([sample], epoch=0, batch=0)[0]
    assert augmented["classes"].tolist() == [2] and augmented["difficult"].tolist() == [True]


def scored(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics that have a value (NaN: no truth of that class or area)."""
    return {key: value for key, value in metrics.items() if not np.isnan(value)}


def test_a_detection_of_a_difficult_object_is_neither_true_nor_false_positive():
    """One class, two regular objects and a difficult one; detections: the difficult object (twice: VOC's devkit
    ignores every detection of it), a regular object, a false positive, the other regular object. Without the
    difficult ones the ranking is TP, FP, TP: precision 1 up to recall 0.5, then 2/3 up to 1; COCO's 101-point
    interpolation gives (51 x 1 + 50 x 2/3) / 101 at every IoU threshold (the boxes match exactly)."""
    truths = [
        {
            "boxes": np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], float),
            "classes": np.array([0, 0, 0]),
            "difficult": np.array([False, False, True]),
        }
    ]
    found = {
        "boxes": np.array([[40, 40, 50, 50], [40, 40, 50, 50], [0, 0, 10, 10], [60, 0, 70, 10], [20, 20, 30, 30]]),
        "scores": np.array([0.95, 0.9, 0.8, 0.7, 0.6]),
        "classes": np.zeros(5, int),
    }
    metrics = coco_metrics(truths, [found], ["thing"], (80, 80))
    expected = (51 + 50 * 2 / 3) / 101
    assert metrics["map"] == pytest.approx(expected) and metrics["map50"] == pytest.approx(expected)
    assert metrics["mar100"] == pytest.approx(1.0)  # both regular objects found
    # The same as pycocotools given neither the difficult box nor the detections of it.
    regular = {key: value[:2] for key, value in truths[0].items() if key != "difficult"}
    rest = {key: value[2:] for key, value in found.items()}
    assert scored(coco_metrics([regular], [rest], ["thing"], (80, 80))) == pytest.approx(scored(metrics))
    # An undetected difficult object is no miss: recall stays whole.
    missed = coco_metrics(truths, [rest], ["thing"], (80, 80))
    assert missed["mar100"] == pytest.approx(1.0) and missed["map"] == pytest.approx(expected)


def test_difficult_metrics_match_pycocotools_without_them_on_random_boxes():
    """Objects in separate cells, each detected with a little jitter, plus false positives: the metrics equal
    pycocotools' on the data without the difficult objects and without the detections of them."""
    rng = np.random.default_rng(3)
    truths, predictions, kept_truths, kept_predictions = [], [], [], []
    for _ in range(12):
        cells = np.array([[0, 0], [20, 0], [40, 0], [0, 20], [20, 20]], float)
        corners = cells + rng.uniform(0, 4, (5, 2))
        boxes = np.concatenate([corners, corners + rng.uniform(8, 16, (5, 2))], 1)
        classes, difficult = rng.integers(0, 2, 5), rng.random(5) < 0.3
        corner = rng.uniform(60, 80, (2, 2))
        false_positives = np.concatenate([corner, corner + 6], 1)  # far from every object
        predicted = {
            # regular objects found a little off; difficult ones exactly, so that they match at every IoU
            "boxes": np.concatenate([boxes + rng.normal(0, 0.3, boxes.shape) * ~difficult[:, None], false_positives]),
            "scores": rng.random(7),
            "classes": np.concatenate([classes, rng.integers(0, 2, 2)]),
        }
        keep = np.concatenate([~difficult, [True, True]])
        truths.append({"boxes": boxes, "classes": classes, "difficult": difficult})
        predictions.append(predicted)
        kept_truths.append({"boxes": boxes[~difficult], "classes": classes[~difficult]})
        kept_predictions.append({key: value[keep] for key, value in predicted.items()})
    names = ["a", "b"]
    expected = scored(coco_metrics(kept_truths, kept_predictions, names, (100, 100)))
    assert scored(coco_metrics(truths, predictions, names, (100, 100))) == pytest.approx(expected)


# ---- the real command -------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "task, model",
    [
        ("detection", ("model=faster_rcnn", "model.width=0.125", "model.proposals=16", "model.fc_units=16")),
        ("segmentation", ("model=unet", "model.width=0.125")),
    ],
    ids=["detection", "segmentation"],
)
def test_voc_trains_evaluates_and_exports(pipeline, tmp_path, task, model):
    root = voc_fixture(tmp_path / "VOC2007")
    before = snapshot(root)
    done = pipeline(
        f"task={task}",
        "data=voc",
        f"data.path={root}",
        *model,
        "mode=train",
        "trainer.epochs=1",
        "trainer.batch_size=2",
        "data.image_size=32",
        "tracking=none",
        "export.num_images=2",
        *(("task.val_map_images=2",) if task == "detection" else ()),
    )
    assert "verification of 'voc'" in done.stdout and "export verified" in done.stdout, done.stdout[-2000:]
    assert ("test_map50=" if task == "detection" else "test_") in done.stdout
    assert snapshot(root) == before


@pytest.mark.timeout(60)  # a mask opened as a file would wait for a writer for ever
def test_a_pipe_named_like_a_mask_is_a_named_skip(tmp_path):
    root = voc_fixture(tmp_path / "voc")
    (root / "SegmentationClass" / "000002.png").unlink()
    os.mkfifo(root / "SegmentationClass" / "000002.png")
    bundle = load("voc", task="segmentation", path=str(root), targets="segmentation", cache="none")
    assert bundle.verification.skipped == {"mask_unreadable": 1} and len(bundle.train) == 3
    assert any("000002.png: not a regular file" in issue for issue in bundle.verification.issues)
