"""Each dataset format end to end through the real command, for each task it serves: a small dataset
generated here (with the problem files of tests/test_formats.py where its fixtures have them), one
epoch of a small model, the task's headline test metrics, a verified export, and not one byte of the
dataset changed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from test_formats import coco_fixture, colour, masks_fixture, write_csv, yolo_fixture
from test_verify import cache_dir, noise, save, snapshot  # noqa: F401  (cache_dir: autouse fixture)

from visionkit.tasks import get_task

RUN = (
    "mode=train",
    "trainer.epochs=1",
    "trainer.batch_size=4",
    "data.image_size=32",
    "tracking=none",
    "export.num_images=4",
)
SMALL_MODEL = {  # the smallest configuration of each task's model that still has every part
    "classification": ("model=lenet5",),
    "regression": ("model=lenet5",),
    "detection": (
        "model=retinanet",
        "model.width=0.125",
        "model.strides=[8,16]",
        "model.head_depth=1",
        "task.val_map_images=8",
    ),
    "segmentation": ("model=unet", "model.width=0.125"),
}
# TFDS's mock replaces the dataset builders of the process it is entered in, so the command runs inside
# it: `python -c` enters the mock and calls the entry point of `python -m pipelines.run`.
MOCKED_TFDS = (
    "-c",
    "import tensorflow_datasets as tfds\nfrom pipelines.run import main\n"
    "with tfds.testing.mock_data(num_examples=100):\n    main()",
)


def folder_dataset(root: Path) -> Path:
    """train/, valid/ and test/ folders of two classes, the class visible in the pixels, sizes varied."""
    for split, count in (("train", 6), ("valid", 2), ("test", 2)):
        for name, rgb in (("apple", (200, 30, 30)), ("banana", (220, 220, 40))):
            for i in range(count):
                save(root / split / name / f"{i}.png", colour(rgb, 24 + 4 * i, 30))
    return root


def table_dataset(root: Path) -> Path:
    """table.csv: image path, a string label (kind) and two numeric targets (x, y: the bright square's
    centre) for 16 images; no split column, so the splits are carved."""
    rows = [["image", "kind", "x", "y"]]
    rng = np.random.default_rng(0)
    for i in range(16):
        image = noise(32, 32, i) // 4
        x, y = (int(v) for v in rng.integers(4, 28, 2))
        image[y - 3 : y + 3, x - 3 : x + 3] = 255
        save(root / "pictures" / f"{i}.png", image)
        rows.append([f"pictures/{i}.png", ("cat", "dog")[i % 2], x, y])
    write_csv(root / "table.csv", rows)
    return root


def labelled_yolo_test_split(root: Path) -> Path:
    """tests/test_formats.py's YOLO fixture, whose test split has no objects, plus a test image with an
    ant: a split without a single box has no mAP to report."""
    yolo_fixture(root)
    save(root / "images" / "test" / "g.png", noise(20, 40, 7))
    (root / "labels" / "test" / "g.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "labels" / "test" / "g.txt").write_text("0 0.5 0.5 0.4 0.6\n")
    return root


def dataset(data: str, task: str, tmp: Path) -> tuple[Path | None, list[str]]:
    """(the folder of the dataset's files, or None for data generated in memory; its overrides)."""
    if data == "folder":
        root = folder_dataset(tmp / "folder")
        return root, [f"data.path={root}"]
    if data == "csv":
        root = table_dataset(tmp / "table")
        columns = "data.label_column=kind" if task == "classification" else "data.target_columns=[x,y]"
        return root, [f"data.path={root / 'table.csv'}", columns]
    writers = {"coco": coco_fixture, "masks": masks_fixture, "yolo": labelled_yolo_test_split}
    if data in writers:
        root = writers[data](tmp / data)
        return root, [f"data.path={root}"]
    if data == "tfds":
        return None, ["data.name_in_tfds=mnist", "data.download=true", f"data.data_dir={tmp / 'tfds'}"]
    if data == "digit_scenes":
        return None, ["data.num_images=40", "data.max_digits=2", "data.digit_size=[8,14]"]
    raise AssertionError(f"no dataset writer for {data}")


def case(data: str, task: str, slow: bool = True):
    return pytest.param(data, task, id=f"{data}-{task}", marks=[pytest.mark.slow] if slow else [])


# The csv classification case (about 13-23 s on a 2-core CPU) runs in `make test`; the other nine take
# 12-45 s each and are marked slow (regression end to end is tests/test_pipeline.py's, csv's regression
# targets tests/test_formats.py's).
@pytest.mark.parametrize(
    "data, task",
    [
        case("folder", "classification"),
        case("csv", "classification", slow=False),
        case("csv", "regression"),
        case("coco", "detection"),
        case("coco", "segmentation"),
        case("masks", "segmentation"),
        case("yolo", "detection"),
        case("tfds", "classification"),
        case("digit_scenes", "detection"),
        case("digit_scenes", "segmentation"),
    ],
)
def test_each_format_trains_evaluates_and_exports(pipeline, tmp_path, data, task):
    if data == "tfds":
        pytest.importorskip("tensorflow_datasets")
    root, overrides = dataset(data, task, tmp_path)
    before = snapshot(root) if root else None
    done = pipeline(
        f"task={task}",
        f"data={data}",
        *overrides,
        *SMALL_MODEL[task],
        *RUN,
        entry=MOCKED_TFDS if data == "tfds" else ("-m", "pipelines.run"),
    )
    stored = json.loads((pipeline.run_dir / "test_metrics.json").read_text())
    headline = [f"test_{name}" for name in get_task(task).headline_metrics]
    assert set(headline) <= set(stored), (headline, stored)
    assert all(math.isfinite(stored[key]) for key in headline), stored
    assert "export verified" in done.stdout, done.stdout[-2000:]
    if root:  # tfds and digit_scenes are generated in memory: no files to verify or to keep unchanged
        assert f"verification of '{data}'" in done.stdout  # file-based data is verified before training
        assert snapshot(root) == before


def test_a_headline_metric_the_test_split_cannot_define_prints_as_not_available(capsys):
    from pipelines.evaluation import print_metrics

    # Detection leaves out the mAP of a test split without boxes (YOLO's test images without label files).
    print_metrics(get_task("detection"), {"test_map50": 0.25, "test_mar100": 0.5})
    assert capsys.readouterr().out == "test_map=n/a  test_map50=0.2500  test_map75=n/a\n"
