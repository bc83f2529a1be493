"""benchmarks/jpeg_folder.py: the folder the streaming benchmarks measure on is what they say it is."""

import importlib.util
from pathlib import Path

import cv2

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "jpeg_folder.py"


def load_script():
    spec = importlib.util.spec_from_file_location("jpeg_folder", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def jpegs(root: Path) -> list[Path]:
    return sorted(root.glob("*/*.jpg"))


def test_the_folder_holds_photo_sized_jpegs_one_class_per_subfolder(tmp_path):
    root = load_script().make_jpeg_folder(tmp_path / "photos", 12, threads=2)

    files = jpegs(root)
    assert len(files) == 12
    assert sorted({f.parent.name for f in files}) == [f"class_{k:02d}" for k in range(10)]
    assert not list(root.rglob("*.part"))
    for path in files:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        assert image.shape in [(375, 500, 3), (500, 375, 3)], path
        assert image.std() > 20  # not a flat colour: it must cost what a photo costs to decode
        assert path.stat().st_size > 30_000  # textured, as a photo at quality 90 is


def test_images_are_the_same_every_run_and_a_complete_folder_is_left_alone(tmp_path):
    script = load_script()
    first = script.make_jpeg_folder(tmp_path / "a", 3, threads=2)
    second = script.make_jpeg_folder(tmp_path / "b", 3, threads=1)
    assert [f.read_bytes() for f in jpegs(first)] == [f.read_bytes() for f in jpegs(second)]

    written = {f: f.stat().st_mtime_ns for f in jpegs(first)}
    script.make_jpeg_folder(first, 3)
    assert {f: f.stat().st_mtime_ns for f in jpegs(first)} == written


def test_an_interrupted_folder_is_completed(tmp_path):
    script = load_script()
    root = script.make_jpeg_folder(tmp_path / "photos", 4, threads=2)
    missing = jpegs(root)[1]
    expected = missing.read_bytes()
    missing.unlink()
    (root / "class_01" / "000001.part").write_bytes(b"half a JPEG")  # what a killed run leaves

    script.make_jpeg_folder(root, 4)
    assert len(jpegs(root)) == 4
    assert missing.read_bytes() == expected
