"""Broken files of every format a source reads: each is a skip that names the file, counted by its reason, the
load goes on with the good samples, and the folder is left as it was. Every fixture is made here, seeded:
mutations of valid files (0 bytes, truncations at random offsets, zeroed headers, random bytes, other content
under an image extension, a header above Pillow's decompression-bomb limit, no read permission, a name that
is not UTF-8, a symbolic link loop, a link to nothing, a pipe) of the images, masks, label files and CSV rows of
every source, and annotation files that are not valid JSON, XML or YAML. Loads go through data.load; one slow
test trains through the command line on a fuzzed folder."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import struct
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipelines.predict import read_image
from visionkit.data import load
from visionkit.data.sources.voc import VOC_CLASSES
from visionkit.data.verify import ImageVerifier
from visionkit.errors import UserError

FORMATS = {".jpg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP", ".gif": "GIF", ".tiff": "TIFF"}
SIZE = (24, 32)  # (height, width) of every fixture image
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
ROOT_SKIP = "running as root, where file permissions do not apply: a chmod 000 file is still read"


def encoded(suffix: str, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (*SIZE, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, FORMATS[suffix])
    return buffer.getvalue()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG signature and IHDR claiming width x height RGB pixels, then a few bytes of data: what a
    decompression bomb's header looks like, at no cost."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b"")
    )


# name -> (mutation of a valid file's bytes, the skip reasons it may be counted under)
MUTATIONS = {
    "empty": (lambda data, rng: b"", {"empty"}),
    # Up to 3 bytes short of the end: a GIF without its 1-byte trailer still holds a whole picture.
    "truncated": (lambda data, rng: data[: int(rng.integers(1, len(data) - 2))], {"truncated", "corrupt"}),
    "zeroed_header": (lambda data, rng: bytes(16) + data[16:], {"corrupt"}),
    "random": (lambda data, rng: rng.integers(0, 256, len(data), np.uint8).tobytes(), {"corrupt"}),
}


def write_mutations(folder: Path, seed: int, suffixes=tuple(FORMATS)) -> dict[Path, set[str]]:
    """Every mutation of every format, plus the files that are broken by what they are rather than by their
    bytes; each path with the reasons its skip may count under."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    expected = {}
    for suffix in suffixes:
        for name, (mutate, reasons) in MUTATIONS.items():
            path = folder / f"{name}{suffix}"
            path.write_bytes(mutate(encoded(suffix, seed), rng))
            expected[path] = reasons
    (folder / "page.png").write_bytes(b"<html><body>404 Not Found</body></html>\n")  # a download that failed
    (folder / "bomb.png").write_bytes(bomb_png())
    os.symlink("loop_b.png", folder / "loop_a.png")
    os.symlink("loop_a.png", folder / "loop_b.png")
    os.symlink("gone.png", folder / "dangling.png")
    os.mkfifo(folder / "pipe.png")  # reading a pipe nobody writes to would wait for ever
    named = os.fsencode(folder) + b"/caf\xe9.png"  # Latin-1 "café": not UTF-8
    with open(named, "wb") as handle:
        handle.write(encoded(".png", seed))
    expected |= {
        folder / "page.png": {"corrupt"},
        folder / "bomb.png": {"too_large"},
        folder / "loop_a.png": {"unreadable"},
        folder / "loop_b.png": {"unreadable"},
        folder / "dangling.png": {"missing"},
        folder / "pipe.png": {"unreadable"},
        Path(os.fsdecode(named)): {"bad_name"},
    }
    return expected


def shown(path: Path) -> str:
    """The path as the report writes it: a byte that is not UTF-8 as its surrogate escape, e.g. \\udce9."""
    return str(path).encode("utf-8", "backslashreplace").decode()


def snapshot(root: Path) -> dict[bytes, tuple]:
    """Every entry under root by its bytes name: kind, size, mtime, and the content's digest or the link's target."""
    entries = {}
    for folder, folders, files in os.walk(os.fsencode(root)):
        for name in folders + files:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                content = os.readlink(path)
            elif stat.S_ISREG(info.st_mode) and os.access(path, os.R_OK):
                with open(path, "rb") as handle:
                    content = hashlib.sha256(handle.read()).hexdigest()
            else:
                content = None
            entries[path] = (stat.S_IFMT(info.st_mode), info.st_size, info.st_mtime_ns, content)
    return entries


def assert_named_skips(report, expected: dict[Path, set[str]]) -> None:
    """Each broken file has its line in the report, and the counts by reason add up to exactly these files."""
    for path in expected:
        assert any(line.startswith(f"skipped {shown(path)}: ") for line in report.issues), shown(path)
    counts = Counter({reason: n for reason, n in report.skipped.items() if n})
    assert sum(counts.values()) == len(expected), counts
    for reason in set().union(*expected.values()):
        can = sum(reason in reasons for reasons in expected.values())
        must = sum(reasons == {reason} for reasons in expected.values())
        assert must <= counts[reason] <= can, (reason, counts)


def one_line_error(raised: pytest.ExceptionInfo, path: Path) -> None:
    message = str(raised.value)
    assert "\n" not in message and str(path) in message, message


@pytest.fixture(autouse=True)
def cache_outside(tmp_path, monkeypatch):
    monkeypatch.setenv("VISIONKIT_CACHE_DIR", str(tmp_path / "cache"))


def folder_dataset(root: Path) -> tuple[Path, dict[Path, set[str]], int]:
    """Two classes of one good image per format, twice; every broken file in each class."""
    good = 0
    expected = {}
    for c, name in enumerate(("ant", "bee")):
        for copy in range(2):
            for s, suffix in enumerate(FORMATS):
                (root / name).mkdir(parents=True, exist_ok=True)
                (root / name / f"good{copy}{suffix}").write_bytes(encoded(suffix, 100 * c + 10 * copy + s))
                good += 1
        expected |= write_mutations(root / name, seed=c)
    return root, expected, good


def test_every_broken_image_is_a_named_skip_and_the_load_goes_on(tmp_path):
    root, expected, good = folder_dataset(tmp_path / "photos")
    before = snapshot(root)
    for attempt in ("first", "cached"):  # the second load takes the verdicts from the cache: the same skips
        bundle = load("folder", task="classification", path=str(root), image_size=16, cache="none", seed=0)
        report = bundle.verification
        assert report.kept == good and sum(len(s) for s in bundle.splits().values()) == good, attempt
        assert_named_skips(report, expected)
        for split in bundle.splits().values():  # what the loader's workers do: every kept sample decodes
            assert all(split.sample(i)["image"].shape == (16, 16, 3) for i in range(len(split)))
    assert report.cached > 0
    assert snapshot(root) == before


@pytest.mark.parametrize("seed", [7, 8, 9, 10])  # other truncation offsets and random bytes
def test_each_mutation_is_counted_under_its_reason(tmp_path, seed):
    expected = write_mutations(tmp_path / "files", seed=seed)
    verifier = ImageVerifier("fuzz", tmp_path / "files", image_size=16, channels=3)
    for path, reasons in expected.items():
        before = Counter(verifier.report.skipped)
        assert verifier.read([path]) == [None]
        counted = Counter(verifier.report.skipped) - before
        assert len(counted) == 1 and set(counted) <= reasons, (shown(path), counted)


def test_an_image_under_another_format_s_extension_is_read_by_its_content(tmp_path):
    root = tmp_path / "photos"
    for c, name in enumerate(("ant", "bee")):
        (root / name).mkdir(parents=True)
        for s, suffix in enumerate(FORMATS):
            wrong = list(FORMATS)[(s + 1) % len(FORMATS)]  # a PNG named .jpg, a JPEG named .bmp...
            (root / name / f"{s}{wrong}").write_bytes(encoded(suffix, 10 * c + s))
    bundle = load("folder", task="classification", path=str(root), image_size=16, seed=0, val_fraction=0.2)
    assert bundle.verification.kept == 2 * len(FORMATS) and not bundle.verification.skipped


@pytest.mark.skipif(AS_ROOT, reason=ROOT_SKIP)
def test_files_without_read_permission_are_named_skips(tmp_path):
    root, expected, good = folder_dataset(tmp_path / "photos")
    locked = [root / "ant" / "good0.png", root / "bee" / "good1.jpg"]
    for path in locked:
        path.chmod(0)
    try:
        before = snapshot(root)
        report = load("folder", task="classification", path=str(root), image_size=16, seed=0).verification
        loops = sum(reasons == {"unreadable"} for reasons in expected.values())
        assert report.kept == good - len(locked) and report.skipped["unreadable"] == loops + len(locked)
        for path in locked:
            assert any(line.startswith(f"skipped {path}: cannot be read (Permission denied)") for line in report.issues)
        assert snapshot(root) == before
    finally:
        for path in locked:
            path.chmod(0o644)


@pytest.mark.skipif(AS_ROOT, reason=ROOT_SKIP)
def test_a_sub_folder_without_read_permission_is_a_warning_naming_it(tmp_path, caplog):
    root, _, good = folder_dataset(tmp_path / "photos")
    locked = root / "ant" / "more"
    (locked / "deeper").mkdir(parents=True)
    (locked / "deeper" / "good.png").write_bytes(encoded(".png", 1))
    locked.chmod(0)
    try:
        report = load("folder", task="classification", path=str(root), image_size=16, seed=0).verification
        assert report.kept == good
        assert f"{locked} cannot be read (Permission denied): the images in it are left out" in caplog.text
    finally:
        locked.chmod(0o755)


@pytest.mark.skipif(AS_ROOT, reason=ROOT_SKIP)
def test_a_dataset_folder_without_read_permission_is_a_one_line_error(tmp_path):
    root, _, _ = folder_dataset(tmp_path / "photos")
    root.chmod(0)
    try:
        with pytest.raises(UserError, match=r"^data.path: .* cannot be read \(permission denied\)$"):
            load("folder", task="classification", path=str(root), image_size=16)
    finally:
        root.chmod(0o755)


# ---- sources with annotation files ----


def yolo_dataset(root: Path) -> tuple[Path, dict[Path, set[str]], int]:
    """A names-only data.yaml, images/ and labels/; good images with good labels, broken images, and good
    images whose label file is broken."""
    images, labels = root / "images", root / "labels"
    labels.mkdir(parents=True)
    good = 0
    for s, suffix in enumerate(FORMATS):
        for copy in range(2):
            name = f"good{copy}{s}"
            images.mkdir(exist_ok=True)
            (images / f"{name}{suffix}").write_bytes(encoded(suffix, 10 * copy + s))
            (labels / f"{name}.txt").write_text(f"{copy} 0.5 0.5 0.25 0.5\n")
            good += 1
    (labels / "good00.txt").write_text("")  # an empty label file: an image without objects, kept
    expected = write_mutations(images, seed=3)
    rng = np.random.default_rng(4)
    broken_labels = {
        "random_bytes": rng.integers(0, 256, 64, np.uint8).tobytes(),  # not UTF-8
        "garbage_text": b"{not: a label line}\n",
        "truncated_line": b"0 0.5 0.5 0.2",
    }
    for stem, content in broken_labels.items():
        (images / f"{stem}.png").write_bytes(encoded(".png", len(stem)))
        (labels / f"{stem}.txt").write_bytes(content)
        expected[images / f"{stem}.png"] = {"bad_label"}
    (images / "looped_label.png").write_bytes(encoded(".png", 99))
    os.symlink("looped_label.txt", labels / "looped_label.txt")
    expected[images / "looped_label.png"] = {"bad_label"}
    (root / "data.yaml").write_text(yaml.safe_dump({"nc": 2, "names": ["ant", "bee"]}))
    return root, expected, good


def test_broken_yolo_images_and_label_files_are_named_skips(tmp_path):
    root, expected, good = yolo_dataset(tmp_path / "yolo")
    before = snapshot(root)
    bundle = load("yolo", task="detection", path=str(root), image_size=16, seed=0, val_fraction=0.2, test_fraction=0.2)
    assert bundle.verification.kept == good
    assert_named_skips(bundle.verification, expected)
    issues = "\n".join(bundle.verification.issues)
    assert f"{root / 'labels' / 'random_bytes.txt'} is not UTF-8 text" in issues
    assert f"{root / 'labels' / 'looped_label.txt'}: a symbolic link loop" in issues
    objects = sorted(len(boxes) for split in bundle.splits().values() for boxes in split.targets["boxes"])
    assert objects == [0] + [1] * (good - 1)
    assert snapshot(root) == before


@pytest.mark.parametrize(
    "content",
    [b"names: [ant, bee\n", b"\x89PNG\r\n\x1a\n" + bytes(range(256)), b"- ant\n- bee\n", b""],
    ids=["unclosed", "binary", "a_list", "empty"],
)
def test_a_yolo_yaml_that_is_not_valid_is_a_one_line_error(tmp_path, content):
    root, _, _ = yolo_dataset(tmp_path / "yolo")
    (root / "data.yaml").write_bytes(content)
    with pytest.raises(UserError) as raised:
        load("yolo", task="detection", path=str(root), image_size=16)
    one_line_error(raised, root / "data.yaml")


def coco_dataset(root: Path) -> tuple[Path, dict[Path, set[str]], int]:
    """annotations.json and images/: one box on each good image, and entries for every broken file."""
    expected = write_mutations(root / "images", seed=5)
    entries, annotations = [], []
    for s, suffix in enumerate(FORMATS):
        for copy in range(2):
            name = f"good{copy}{s}{suffix}"
            (root / "images" / name).write_bytes(encoded(suffix, 10 * copy + s))
            entries.append({"id": len(entries) + 1, "file_name": name, "height": SIZE[0], "width": SIZE[1]})
    for path in expected:  # a name that is not UTF-8 is in the JSON as Python reads it: a surrogate escape
        entries.append({"id": len(entries) + 1, "file_name": os.path.relpath(path, root / "images")})
    for entry in entries:
        annotations.append(
            {
                "id": entry["id"],
                "image_id": entry["id"],
                "category_id": 1,
                "bbox": [4, 4, 10, 8],
                "area": 80,
                "iscrowd": 0,
                "segmentation": [[4, 4, 14, 4, 14, 12, 4, 12]],
            }
        )
    document = {"images": entries, "annotations": annotations, "categories": [{"id": 1, "name": "ant"}]}
    (root / "annotations.json").write_text(json.dumps(document))
    return root, expected, 2 * len(FORMATS)


def test_broken_coco_images_are_named_skips(tmp_path):
    root, expected, good = coco_dataset(tmp_path / "coco")
    before = snapshot(root)
    bundle = load("coco", task="segmentation", path=str(root), image_size=16, seed=0)
    assert bundle.verification.kept == good
    assert_named_skips(bundle.verification, expected)
    assert all((split.sample(0)["mask"] == 1).any() for split in bundle.splits().values())
    assert snapshot(root) == before


@pytest.mark.parametrize(
    "content",
    [
        b'{"images": [{"id": 1, "file_name": "a.png"}',  # cut short
        bytes(range(256)),  # random bytes
        b"[1, 2, 3]",  # JSON, not COCO
        b'{"images": [{"id": 1, "file_name": 7}], "categories": [{"id": 1, "name": "ant"}]}',
        b'{"images": [], "annotations": {"id": 1}, "categories": [{"id": 1, "name": "ant"}]}',
        b'{"images": [], "categories": [{"id": [1], "name": "ant"}]}',
        b"",
    ],
    ids=["cut", "binary", "a_list", "file_name_number", "annotations_mapping", "category_id_list", "empty"],
)
def test_a_coco_json_that_is_not_valid_is_a_one_line_error(tmp_path, content):
    root, _, _ = coco_dataset(tmp_path / "coco")
    (root / "annotations.json").write_bytes(content)
    with pytest.raises(UserError) as raised:
        load("coco", task="detection", path=str(root), image_size=16)
    one_line_error(raised, root / "annotations.json")


def test_broken_masks_and_class_lists_of_a_masks_dataset(tmp_path):
    root = tmp_path / "masks"
    (root / "images").mkdir(parents=True)
    (root / "classes.txt").write_text("background\nant\n")
    buffer = io.BytesIO()
    Image.fromarray((np.arange(SIZE[0] * SIZE[1]).reshape(SIZE) % 2).astype(np.uint8)).save(buffer, "PNG")
    for i in range(6):
        (root / "images" / f"good{i}.png").write_bytes(encoded(".png", 50 + i))
        (root / "masks" / f"good{i}.png").parent.mkdir(exist_ok=True)
        (root / "masks" / f"good{i}.png").write_bytes(buffer.getvalue())
    as_mask = {"unreadable": "mask_unreadable", "missing": "mask_missing", "bad_name": "bad_name"}
    expected = {}
    for mask, kinds in write_mutations(root / "masks", seed=6, suffixes=(".png",)).items():
        image = root / "images" / mask.name  # a good image named as its broken mask (the image's name, if not UTF-8)
        with open(os.fsencode(image), "wb") as handle:
            handle.write(encoded(".png", len(expected)))
        expected[image] = {as_mask.get(kind, "mask_corrupt") for kind in kinds}
    before = snapshot(root)
    bundle = load("masks", task="segmentation", path=str(root), image_size=16, seed=0, val_fraction=0.2)
    assert bundle.verification.kept == 6
    assert_named_skips(bundle.verification, expected)
    assert snapshot(root) == before
    (root / "classes.txt").write_bytes(bytes(range(128, 256)))
    with pytest.raises(UserError) as raised:
        load("masks", task="segmentation", path=str(root))
    one_line_error(raised, root / "classes.txt")


def test_broken_rows_of_a_csv_dataset(tmp_path):
    root, expected, good = folder_dataset(tmp_path / "photos")
    expected = {path: reasons for path, reasons in expected.items() if reasons != {"bad_name"}}  # CSV is UTF-8 text
    rows = ["image,label"] + [f"{os.path.relpath(path, root)},{path.parent.name}" for path in expected]
    rows += [f"{path.parent.name}/{path.name},{path.parent.name}" for path in sorted(root.glob("*/good*"))]
    (root / "ant" / "folder.png").mkdir()
    rows += ["ant/with\0nul.png,ant", "ant/folder.png,ant"]  # the first: a name no file can have
    (root / "table.csv").write_text("\n".join(rows) + "\n")
    expected[root / "ant" / "with\0nul.png"] = {"bad_name"}
    expected[root / "ant" / "folder.png"] = {"unreadable"}
    before = snapshot(root)
    bundle = load("csv", task="classification", path=str(root / "table.csv"), image_size=16, seed=0)
    assert bundle.verification.kept == good
    assert_named_skips(bundle.verification, expected)
    assert snapshot(root) == before
    (root / "table.csv").write_bytes(bytes(range(128, 256)))
    with pytest.raises(UserError) as raised:
        load("csv", task="classification", path=str(root / "table.csv"))
    one_line_error(raised, root / "table.csv")


def voc_xml(filename: str) -> str:
    size = f"<size><width>{SIZE[1]}</width><height>{SIZE[0]}</height><depth>3</depth></size>"
    box = "<bndbox><xmin>3</xmin><ymin>4</ymin><xmax>20</xmax><ymax>18</ymax></bndbox>"
    return f"<annotation><filename>{filename}</filename>{size}<object><name>dog</name>{box}</object></annotation>"


def test_broken_images_and_xml_files_of_a_voc_folder_are_named_skips(tmp_path):
    """A labelImg-style VOC export (Annotations/ and JPEGImages/, no ImageSets): broken images, each named by its
    XML, and broken XML files, each with a good image."""
    root = tmp_path / "voc"
    images, annotations = root / "JPEGImages", root / "Annotations"
    annotations.mkdir(parents=True)
    broken = write_mutations(images, seed=8, suffixes=(".jpg", ".png", ".bmp"))
    # VOC finds an image by its XML's filename or its id, a regular file; a text XML cannot name a non-UTF-8 file.
    expected = {path: kinds for path, kinds in broken.items() if path.is_file() and "bad_name" not in kinds}
    for path in expected:
        (annotations / f"{path.stem}_{path.suffix[1:]}.xml").write_text(voc_xml(path.name))
    for i in range(8):
        (images / f"good{i}.jpg").write_bytes(encoded(".jpg", 60 + i))
        (annotations / f"good{i}.xml").write_text(voc_xml(f"good{i}.jpg"))
    broken_xml = {
        "cut_xml": voc_xml("cut_xml.jpg")[:50].encode(),
        "random_xml": np.random.default_rng(9).integers(0, 256, 300, np.uint8).tobytes(),
        "svg_xml": b"<svg><rect/></svg>",
        "empty_xml": b"",
    }
    for stem, content in broken_xml.items():
        (images / f"{stem}.jpg").write_bytes(encoded(".jpg", len(stem)))
        (annotations / f"{stem}.xml").write_bytes(content)
        expected[annotations / f"{stem}.xml"] = {"bad_annotation"}
    before = snapshot(root)
    bundle = load("voc", task="detection", path=str(root), image_size=16, seed=0, val_fraction=0.2, test_fraction=0.2)
    assert bundle.verification.kept == 8 and bundle.class_names == list(VOC_CLASSES)
    assert_named_skips(bundle.verification, expected)
    assert snapshot(root) == before


@pytest.mark.slow
def test_the_pipeline_trains_on_a_fuzzed_folder(pipeline, tmp_path):
    root, _, _ = folder_dataset(tmp_path / "photos")
    before = snapshot(root)
    done = pipeline(
        "task=classification",
        "data=folder",
        f"data.path={root}",
        "data.image_size=16",
        "trainer.epochs=1",
        "export.enabled=false",
        "tracking=none",
    )
    assert "images kept" in done.stdout and "skipped: empty" in done.stdout, done.stdout[-2000:]
    assert f"skipped {root / 'ant' / 'empty.png'}: the file has 0 bytes" in done.stdout + done.stderr
    assert "test_accuracy=" in done.stdout
    assert snapshot(root) == before


def test_predict_skips_every_broken_image_with_a_warning(tmp_path, capsys):
    # predict reads an image whatever its name (only a dataset's verification skips a name that is not UTF-8), and
    # lists regular files only: a pipe never reaches it.
    kept_out = {"caf\udce9.png", "pipe.png"}
    broken = [path for path in write_mutations(tmp_path / "inputs", seed=10) if path.name not in kept_out]
    for path in broken:
        assert read_image(path, (16, 16, 3)) is None, shown(path)
    warnings = capsys.readouterr().out.splitlines()
    assert len(warnings) == len(broken)
    assert all(line.startswith("warning: skipping unreadable image") for line in warnings)
