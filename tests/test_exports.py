"""Labelling tools' exports load as the tools write them: Roboflow, CVAT, Label Studio and supervision COCO files
(the JSON named by data.path or found in its folder, images where each tool puts them, category ids from 0 or 1,
`iscrowd`, `segmentation: []` on boxes), and YOLO folders from Roboflow, Label Studio and labelImg (a data.yaml
with only names, classes.txt, `../train/images`). A boxes-only export is refused for segmentation in one line."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from test_formats import rectangle, uncompressed_rle

from visionkit.data import load
from visionkit.errors import UserError

HEIGHT, WIDTH = 30, 40


@pytest.fixture(autouse=True)
def cache_outside(tmp_path, monkeypatch):
    monkeypatch.setenv("VISIONKIT_CACHE_DIR", str(tmp_path / "cache"))


def write_image(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG" if path.suffix == ".jpg" else "PNG")
    path.write_bytes(buffer.getvalue())
    return path


def checksums(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def polygon(x: float, y: float, w: float, h: float) -> list[list[float]]:
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def coco_document(
    file_names: list[str],
    categories: list[dict],
    *,
    first_id: int = 1,
    outlines: bool = True,
    extra_image: dict | None = None,
) -> dict:
    """A COCO file with one object per image, cycling through the categories that annotations use (those with a
    supercategory other than a placeholder's), box [5, 5, 10, 8] (xywh), its outline when `outlines`, else
    `segmentation: []` as box-only exporters write it."""
    used = [c for c in categories if not any(d.get("supercategory") == c["name"] for d in categories)]
    images, annotations = [], []
    for i, name in enumerate(file_names):
        image_id = first_id + i
        images.append({"id": image_id, "file_name": name, "height": HEIGHT, "width": WIDTH, **(extra_image or {})})
        category = used[i % len(used)]
        annotations.append(
            {
                "id": first_id + i,
                "image_id": image_id,
                "category_id": category["id"],
                "bbox": [5, 5, 10, 8],
                "area": 80.0,
                "segmentation": polygon(5, 5, 10, 8) if outlines else [],
                "iscrowd": 0,
            }
        )
    return {"images": images, "annotations": annotations, "categories": categories}


def write_json(path: Path, document: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


ROBOFLOW_CATEGORIES = [  # Roboflow: id 0 is the project, the supercategory of the real classes
    {"id": 0, "name": "insects", "supercategory": "none"},
    {"id": 1, "name": "ant", "supercategory": "insects"},
    {"id": 2, "name": "bee", "supercategory": "insects"},
]


def roboflow_coco(root: Path) -> Path:
    """train/ valid/ test/, each with _annotations.coco.json and its images beside it."""
    for split, count in (("train", 8), ("valid", 3), ("test", 2)):
        names = [f"{split}{i}_jpg.rf.{i:032x}.jpg" for i in range(count)]
        for i, name in enumerate(names):
            write_image(root / split / name, hash((split, i)) % 1000)
        document = coco_document(names, ROBOFLOW_CATEGORIES, first_id=0, extra_image={"license": 1})
        write_json(root / split / "_annotations.coco.json", document)
    return root


def test_roboflow_coco_by_its_folder_or_by_one_json_file(tmp_path):
    root = roboflow_coco(tmp_path / "export")
    before = checksums(root)
    bundle = load("coco", task="segmentation", path=str(root), image_size=16)
    assert bundle.class_names == ["ant", "bee"]  # the project's placeholder category is left out
    assert [len(s) for s in bundle.splits().values()] == [8, 3, 2]
    assert bundle.verification.kept == 13 and not bundle.verification.skipped
    classes = [int(c[0]) for split in bundle.splits().values() for c in split.targets["classes"]]
    assert classes == [0, 1] * 4 + [0, 1, 0] + [0, 1]
    sample = bundle.train.sample(1)  # a bee, class index 1: mask value 2 inside its outline
    np.testing.assert_allclose(sample["boxes"], [[5 * 16 / WIDTH, 5 * 16 / HEIGHT, 15 * 16 / WIDTH, 13 * 16 / HEIGHT]])
    assert set(np.unique(sample["mask"])) == {0, 2}
    one_file = load("coco", task="detection", path=str(root / "train" / "_annotations.coco.json"), image_size=16)
    assert sum(len(s) for s in one_file.splits().values()) == 8 and one_file.class_names == ["ant", "bee"]
    assert checksums(root) == before


def test_cvat_coco_with_annotations_and_images_folders(tmp_path):
    """CVAT's COCO 1.0: annotations/instances_default.json and images/, ids from 1, an empty supercategory."""
    root = tmp_path / "cvat"
    names = [f"frame_{i:06d}.PNG" for i in range(10)]
    for i, name in enumerate(names):
        write_image(root / "images" / name, i)
    categories = [{"id": 1, "name": "ant", "supercategory": ""}, {"id": 2, "name": "bee", "supercategory": ""}]
    document = coco_document(names, categories)
    for ann in document["annotations"]:
        ann["attributes"] = {"occluded": False}
    json_path = write_json(root / "annotations" / "instances_default.json", document)
    for path in (root, json_path):  # the export's folder, or its JSON file
        bundle = load("coco", task="segmentation", path=str(path), image_size=16)
        assert bundle.class_names == ["ant", "bee"] and bundle.verification.kept == 10
        assert not bundle.verification.skipped, bundle.verification.issues


def test_label_studio_coco_with_image_paths_relative_to_the_json(tmp_path):
    """Label Studio: result.json beside images/, file_name "images/<hash>-<name>", categories from 0; a file
    name written on Windows with backslashes, and one as an absolute upload path whose last part is the file."""
    root = tmp_path / "label_studio"
    files = [f"{i:08x}-photo{i}.jpg" for i in range(8)]
    for i, name in enumerate(files):
        write_image(root / "images" / name, i)
    names = [f"images/{name}" for name in files[:6]]
    names += [f"images\\{files[6]}", f"/label-studio/data/media/upload/1/{files[7]}"]
    categories = [{"id": 0, "name": "ant"}, {"id": 1, "name": "bee"}]
    write_json(root / "result.json", coco_document(names, categories, first_id=0, outlines=False))
    bundle = load("coco", task="detection", path=str(root / "result.json"), image_size=16)
    assert bundle.class_names == ["ant", "bee"]
    assert bundle.verification.kept == 8 and not bundle.verification.skipped, bundle.verification.issues
    assert bundle.verification.findings["no_segmentation"] == 8
    bundle = load("coco", task="detection", path=str(root), image_size=16)  # the folder's one JSON
    assert bundle.verification.kept == 8


def test_category_ids_from_zero_or_one_give_the_same_classes(tmp_path):
    names = [f"{i}.png" for i in range(8)]
    bundles = []
    for first in (0, 1):
        root = tmp_path / f"from{first}"
        for i, name in enumerate(names):
            write_image(root / "images" / name, i)
        categories = [{"id": first, "name": "ant"}, {"id": first + 1, "name": "bee"}]
        write_json(root / "annotations.json", coco_document(names, categories))
        bundles.append(load("coco", task="segmentation", path=str(root), image_size=16, seed=3))
    zero, one = bundles
    assert zero.class_names == one.class_names == ["ant", "bee"]
    for a, b in zip(zero.splits().values(), one.splits().values()):
        assert [c.tolist() for c in a.targets["classes"]] == [c.tolist() for c in b.targets["classes"]]
        for i in range(len(a)):
            np.testing.assert_array_equal(a.sample(i)["mask"], b.sample(i)["mask"])


def test_crowds_and_box_only_objects_are_ignored_in_masks_and_crowds_are_no_boxes(tmp_path):
    root = tmp_path / "coco"
    names = [f"{i}.png" for i in range(6)]
    for i, name in enumerate(names):
        write_image(root / "images" / name, i)
    document = coco_document(names, [{"id": 1, "name": "ant"}])
    document["annotations"] += [
        {"id": 100, "image_id": 1, "category_id": 1, "bbox": [20, 10, 10, 10], "area": 100, "iscrowd": 1,
         "segmentation": uncompressed_rle(rectangle(HEIGHT, WIDTH, 20, 10, 30, 20))},
        {"id": 101, "image_id": 1, "category_id": 1, "bbox": [30, 20, 6, 6], "area": 36, "iscrowd": 0,
         "segmentation": []},
    ]  # fmt: skip
    write_json(root / "annotations.json", document)
    bundle = load("coco", task="segmentation", path=str(root), image_size=[HEIGHT, WIDTH], cache="none")
    sample = sample_named(bundle, "0.png")
    np.testing.assert_allclose(sample["boxes"], [[5, 5, 15, 13], [30, 20, 36, 26]])  # the crowd is no box
    expected = np.zeros((HEIGHT, WIDTH), np.uint8)
    expected[5:13, 5:15] = 1
    expected[10:20, 20:30] = 255  # the crowd: ignored
    expected[20:26, 30:36] = 255  # the box without an outline: unlabelled pixels
    np.testing.assert_array_equal(sample["mask"], expected)
    assert bundle.verification.findings["crowd_annotations"] == 1
    assert bundle.verification.findings["no_segmentation"] == 1


def sample_named(bundle, name: str) -> dict:
    """The sample of the image file `name`, whichever split it went to (the bundle streamed: cache=none)."""
    for split in bundle.splits().values():
        for i, path in enumerate(split.images.paths):
            if Path(path).name == name:
                return split.sample(i)
    raise AssertionError(f"no sample of {name}")


def supervision_coco(root: Path) -> Path:
    """supervision's DetectionDataset.as_coco without masks: annotations.json and images/, each object with
    `segmentation: []`."""
    names = [f"image_{i}.jpg" for i in range(10)]
    for i, name in enumerate(names):
        write_image(root / "images" / name, i)
    categories = [{"id": 0, "name": "ant", "supercategory": "common-objects"}]
    write_json(root / "annotations.json", coco_document(names, categories, first_id=1, outlines=False))
    return root


def test_a_boxes_only_export_trains_detection_and_is_refused_for_segmentation(tmp_path):
    root = supervision_coco(tmp_path / "supervision")
    bundle = load("coco", task="detection", path=str(root), image_size=16)
    assert sum(len(s) for s in bundle.splits().values()) == 10 and "mask" not in bundle.train.targets
    with pytest.raises(UserError) as raised:
        load("coco", task="segmentation", path=str(root), image_size=16)
    assert str(raised.value) == (
        "dataset 'coco': no object of the train, val, test splits has a mask (an outline), which "
        "task=segmentation needs; its boxes serve task=detection"
    )


def test_a_split_of_boxes_only_is_refused_for_segmentation_by_name(tmp_path):
    root = tmp_path / "coco"
    for split, outlines in (("train", True), ("val", False)):
        names = [f"{split}{i}.png" for i in range(6)]
        for i, name in enumerate(names):
            write_image(root / split / "images" / name, i)
        document = coco_document(names, [{"id": 1, "name": "ant"}], outlines=outlines)
        write_json(root / split / "annotations.json", document)
    assert len(load("coco", task="detection", path=str(root), image_size=16).val) == 6
    with pytest.raises(UserError, match=r"^dataset 'coco': no object of the val split has a mask \(an outline\)"):
        load("coco", task="segmentation", path=str(root), image_size=16)


def test_a_folder_with_several_json_files_names_them(tmp_path):
    root = supervision_coco(tmp_path / "coco")
    (root / "annotations.json").rename(root / "instances_train.json")
    write_json(root / "instances_val.json", {"images": []})
    with pytest.raises(UserError) as raised:
        load("coco", task="detection", path=str(root))
    assert str(raised.value) == (
        f"{root} has no annotations.json (it holds instances_train.json, instances_val.json): "
        f"set data.annotations to the COCO JSON file"
    )
    bundle = load("coco", task="detection", path=str(root), annotations="instances_train.json", image_size=16)
    assert bundle.verification.kept == 10


# ---- YOLO ----


def yolo_labels(path: Path, class_id: int) -> None:
    """One object, 1-pixel-aligned: cx 0.5, cy 0.5, w 0.25, h 0.5 of a 40x30 image = box [15, 7.5, 25, 22.5]."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{class_id} 0.5 0.5 0.25 0.5\n")


def test_yolo_yaml_with_only_names_is_split_with_the_seed(tmp_path):
    """Label Studio and CVAT style: data.yaml with names and nc, images/ and labels/ beside it."""
    root = tmp_path / "yolo"
    for i in range(20):
        write_image(root / "images" / f"{i:02d}.jpg", i)
        yolo_labels(root / "labels" / f"{i:02d}.txt", i % 2)
    (root / "data.yaml").write_text(yaml.safe_dump({"names": ["ant", "bee"], "nc": 2}))
    before = checksums(root)

    def split_files(seed: int) -> list[list[str]]:
        bundle = load("yolo", task="detection", path=str(root / "data.yaml"), image_size=16, seed=seed, cache="none")
        assert bundle.class_names == ["ant", "bee"] and bundle.verification.kept == 20
        return [sorted(Path(p).name for p in s.images.paths) for s in bundle.splits().values()]

    first = split_files(0)
    assert [len(names) for names in first] == [14, 3, 3]
    assert sorted(sum(first, [])) == [f"{i:02d}.jpg" for i in range(20)]
    assert split_files(0) == first and split_files(1) != first
    bundle = load("yolo", task="detection", path=str(root), image_size=[HEIGHT, WIDTH])
    np.testing.assert_allclose(bundle.train.targets["boxes"][0], [[15, 7.5, 25, 22.5]])
    assert checksums(root) == before


def test_yolo_yaml_with_only_names_keeps_the_split_folders_beside_it(tmp_path):
    root = tmp_path / "yolo"
    for split, count in (("train", 8), ("val", 3)):
        for i in range(count):
            write_image(root / "images" / split / f"{i}.png", i)
            yolo_labels(root / "labels" / split / f"{i}.txt", 0)
    (root / "data.yaml").write_text("names:\n  0: ant\n")
    bundle = load("yolo", task="detection", path=str(root), image_size=16, test_fraction=0.25)
    assert [len(s) for s in bundle.splits().values()] == [6, 3, 2]


def test_roboflow_yolo_yaml_pointing_one_folder_up(tmp_path):
    root = tmp_path / "roboflow"
    for split, count in (("train", 6), ("valid", 2), ("test", 2)):
        for i in range(count):
            write_image(root / split / "images" / f"{i}_jpg.rf.{i:032x}.jpg", i)
            yolo_labels(root / split / "labels" / f"{i}_jpg.rf.{i:032x}.txt", 1)
    (root / "data.yaml").write_text(
        "train: ../train/images\nval: ../valid/images\ntest: ../test/images\n\nnc: 2\nnames: ['ant', 'bee']\n\n"
        "roboflow:\n  workspace: lab\n  project: insects\n  version: 1\n  license: CC BY 4.0\n"
        "  url: https://universe.roboflow.com/lab/insects/dataset/1\n"
    )
    bundle = load("yolo", task="detection", path=str(root / "data.yaml"), image_size=16)
    assert [len(s) for s in bundle.splits().values()] == [6, 2, 2]
    assert all(c.tolist() == [1] for s in bundle.splits().values() for c in s.targets["classes"])


def test_yolo_folders_named_by_classes_txt(tmp_path):
    """Label Studio: classes.txt, notes.json, images/ and labels/; labelImg: each .txt beside its image."""
    studio, label_img = tmp_path / "studio", tmp_path / "labelimg"
    for i in range(8):
        write_image(studio / "images" / f"{i}.jpg", i)
        yolo_labels(studio / "labels" / f"{i}.txt", 1)
        write_image(label_img / f"{i}.jpg", i)
        yolo_labels(label_img / f"{i}.txt", 0)
    for root in (studio, label_img):
        (root / "classes.txt").write_text("ant\nbee\n")
    (studio / "notes.json").write_text(json.dumps({"categories": [{"id": 0, "name": "ant"}, {"id": 1, "name": "bee"}]}))
    for root, class_id in ((studio, 1), (label_img, 0)):
        bundle = load("yolo", task="detection", path=str(root), image_size=16)
        assert bundle.class_names == ["ant", "bee"] and bundle.verification.kept == 8
        assert all(c.tolist() == [class_id] for s in bundle.splits().values() for c in s.targets["classes"])


def test_yolo_names_and_nc_that_disagree_are_one_line_errors(tmp_path):
    root = tmp_path / "yolo"
    write_image(root / "images" / "0.png", 0)
    (root / "data.yaml").write_text("nc: 3\nnames: [ant, bee]\n")
    with pytest.raises(UserError, match=r"data.yaml: 'nc' is 3 but 'names' lists 2 classes$"):
        load("yolo", task="detection", path=str(root))
    (root / "data.yaml").write_text("val: images\nnames: [ant]\n")
    with pytest.raises(UserError, match=r"data.yaml names val but no 'train'$"):
        load("yolo", task="detection", path=str(root))


def test_roboflow_yolo_polygon_labels_give_the_box_around_the_outline(tmp_path):
    """Roboflow exports outlined objects in YOLO's segmentation format: class, then x y of each point."""
    root = tmp_path / "yolo"
    for i in range(8):
        write_image(root / "images" / f"{i}.png", i)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        # A triangle with points (10, 6), (30, 12), (20, 24) of the 40x30 image.
        (root / "labels" / f"{i}.txt").write_text("1 0.25 0.2 0.75 0.4 0.5 0.8\n0 0.5 0.5 0.25 0.5\n")
    (root / "data.yaml").write_text("names: [ant, bee]\n")
    bundle = load("yolo", task="detection", path=str(root), image_size=[HEIGHT, WIDTH], cache="none")
    boxes, classes = bundle.train.targets["boxes"][0], bundle.train.targets["classes"][0]
    np.testing.assert_allclose(boxes, [[10, 6, 30, 24], [15, 7.5, 25, 22.5]], atol=1e-4)
    assert classes.tolist() == [1, 0]


def test_text_files_written_on_windows_load(tmp_path):
    """Notepad's byte-order mark and CRLF line ends in classes.txt, label files and a COCO JSON."""
    root = tmp_path / "studio"
    for i in range(8):
        write_image(root / "images" / f"{i}.jpg", i)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        (root / "labels" / f"{i}.txt").write_bytes(b"\xef\xbb\xbf1 0.5 0.5 0.25 0.5\r\n")
    (root / "classes.txt").write_bytes(b"\xef\xbb\xbfant\r\nbee\r\n")
    bundle = load("yolo", task="detection", path=str(root), image_size=16)
    assert bundle.class_names == ["ant", "bee"] and bundle.verification.kept == 8, bundle.verification.issues
    document = coco_document([f"{i}.jpg" for i in range(8)], [{"id": 1, "name": "ant"}])
    (root / "images" / "annotations.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(document).encode())
    bundle = load("coco", task="detection", path=str(root / "images" / "annotations.json"), image_size=16)
    assert bundle.class_names == ["ant"] and bundle.verification.kept == 8


def test_cvat_yolo_1_1_darknet_layout(tmp_path):
    """CVAT's YOLO 1.1 with images: obj.data, obj.names, train.txt and obj_train_data/ holding each image with its
    label file."""
    root = tmp_path / "cvat_yolo"
    for i in range(8):
        write_image(root / "obj_train_data" / f"frame_{i:06d}.jpg", i)
        yolo_labels(root / "obj_train_data" / f"frame_{i:06d}.txt", i % 2)
    (root / "obj.names").write_text("ant\nbee\n")
    (root / "obj.data").write_text("classes = 2\ntrain = data/train.txt\nnames = data/obj.names\nbackup = backup/\n")
    (root / "train.txt").write_text("".join(f"data/obj_train_data/frame_{i:06d}.jpg\n" for i in range(8)))
    bundle = load("yolo", task="detection", path=str(root), image_size=16, cache="none")
    assert bundle.class_names == ["ant", "bee"] and bundle.verification.kept == 8
    for split in bundle.splits().values():
        for path, classes in zip(split.images.paths, split.targets["classes"]):
            assert classes.tolist() == [int(Path(path).stem[-1]) % 2]
