"""The verification pass: decoding and conversion of every kind of image, the report, the cache
outside the dataset, and the errors a user gets. Fixture files are generated here."""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from test_fuzz import bomb_png

from visionkit.data import load
from visionkit.data import verify as verify_module
from visionkit.data.images import DecodeError, check_integrity, decode_image, image_size_of, read_mask
from visionkit.data.verify import VerificationReport, clean_boxes, clean_mask
from visionkit.errors import UserError


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)


def encode(image: Image.Image | np.ndarray, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buffer, fmt, **options)
    return buffer.getvalue()


def save(path: Path, content: bytes | np.ndarray | Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "JPEG" if path.suffix == ".jpg" else "PNG"
    path.write_bytes(content if isinstance(content, bytes) else encode(content, fmt))
    return path


def snapshot(root: Path) -> dict[str, tuple]:
    """(size, mtime, sha256) of every file under root: what "nothing was written" is checked against."""
    files = {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
    return files | {"<folders>": tuple(sorted(str(p) for p in root.rglob("*") if p.is_dir()))}


# Every kind of file a user's folder holds, and what verification must say about it.
PROBLEM_FILES = {
    "gray.png": lambda: encode(noise(24, 24, 1)[..., 0]),
    "rgba.png": lambda: encode(Image.fromarray(noise(24, 24, 2)).convert("RGBA")),
    "palette.png": lambda: encode(Image.fromarray(noise(24, 24, 3)).convert("P")),
    "cmyk.jpg": lambda: encode(Image.fromarray(noise(24, 24, 4)).convert("CMYK"), "JPEG"),
    "deep.png": lambda: encode(Image.fromarray(noise(24, 24, 5)[..., 0].astype(np.uint16) * 257)),
    "corrupt.jpg": lambda: b"<html>404 Not Found</html>",  # what a failed download saves
    "truncated.png": lambda: encode(noise(24, 24, 6))[:600],
    "truncated.jpg": lambda: encode(noise(24, 24, 7), "JPEG")[:400],
}
PROBLEM_COUNTS = {
    "verify_images": 14,
    "verify_kept": 11,
    "verify_skipped": 3,
    "verify_skipped_corrupt": 1,
    "verify_skipped_truncated": 2,
    "verify_converted_grayscale": 2,
    "verify_converted_rgba": 1,
    "verify_converted_palette": 1,
    "verify_converted_cmyk": 1,
    "verify_converted_16bit": 1,
}


def problem_folder(root: Path) -> Path:
    """Two classes of three good RGB images each, and the problem files in class 'cat'."""
    for c, name in enumerate(("cat", "dog")):
        for i in range(3):
            save(root / name / f"good{i}.png", noise(24 + 8 * i, 24, 10 * c + i))
    for name, make in PROBLEM_FILES.items():
        save(root / "cat" / name, make())
    return root


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("VISIONKIT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_each_kind_of_image_decodes_to_the_configured_channels():
    rgb = noise(6, 7)
    cases = {  # bytes -> (conversions with channels=3, expected RGB pixels)
        "png": (encode(rgb), [], rgb),
        "grey": (encode(rgb[..., 0]), ["grayscale"], np.repeat(rgb[..., :1], 3, axis=-1)),
        "rgba": (encode(Image.fromarray(rgb).convert("RGBA")), ["rgba"], rgb),
        "16bit": (
            encode(Image.fromarray(rgb[..., 0].astype(np.uint16) * 257 + 100)),
            ["16bit", "grayscale"],
            np.repeat(np.round((rgb[..., :1].astype(float) * 257 + 100) / 257), 3, axis=-1),
        ),
    }
    palette = Image.fromarray(rgb).convert("P")
    cases["palette"] = (encode(palette), ["palette"], np.asarray(palette.convert("RGB")))
    cmyk = encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95)
    cases["cmyk"] = (cmyk, ["cmyk"], np.asarray(Image.open(io.BytesIO(cmyk)).convert("RGB")))
    for name, (data, conversions, expected) in cases.items():
        image, done = decode_image(data, channels=3)
        assert done == conversions, name
        assert image.dtype == np.uint8 and image.shape == (6, 7, 3), name
        np.testing.assert_array_equal(image, expected.astype(np.uint8), err_msg=name)
    grey, done = decode_image(encode(rgb), channels=1)
    assert done == ["to_grayscale"] and grey.shape == (6, 7, 1)
    np.testing.assert_array_equal(grey[..., 0], cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    # 16-bit colour: OpenCV keeps the 16 bits (Pillow would not), and the channel order is RGB.
    deep = rgb.astype(np.uint16) * 257
    image, done = decode_image(cv2.imencode(".png", deep[..., ::-1])[1].tobytes(), channels=3)
    assert done == ["16bit"]
    np.testing.assert_array_equal(image, rgb)


def test_integrity_check_tells_truncated_from_corrupt():
    png = encode(noise(24, 24))
    for data, reason in (
        (encode(noise(24, 24), "JPEG")[:400], "truncated"),
        (png[:600], "truncated"),
        (png[:60] + bytes(200) + png[260:], "corrupt"),
    ):  # zeros inside the pixel data
        with pytest.raises(DecodeError) as caught:
            check_integrity(data)
        assert caught.value.reason == reason
    with pytest.raises(DecodeError, match="corrupt: not a decodable image"):
        decode_image(b"neither Pillow nor OpenCV reads this", 3)
    check_integrity(encode(noise(24, 24)))  # a whole file passes


def test_every_decode_path_refuses_an_empty_file_and_a_bomb_header_without_raising_anything_else():
    # OpenCV's imdecode raises cv2.error for an empty buffer: each entry point turns it into a DecodeError.
    for read in (check_integrity, lambda data: decode_image(data, 3), image_size_of):
        with pytest.raises(DecodeError, match="^empty: the file has 0 bytes$"):
            read(b"")
    side = int((2 * Image.MAX_IMAGE_PIXELS) ** 0.5) + 1  # above twice the limit Pillow refuses before reading pixels
    with pytest.raises(DecodeError) as caught:
        check_integrity(bomb_png(side, side))
    assert caught.value.reason == "too_large" and f"{side * side} pixels" in caught.value.detail


def test_problem_folder_report_counts_table_and_warnings(tmp_path, caplog):
    root = problem_folder(tmp_path / "data")
    before = snapshot(root)
    bundle = load(
        "folder",
        task="classification",
        path=str(root),
        image_size=[16, 20],
        channels=3,
        val_fraction=0.2,
        test_fraction=0.2,
    )
    report = bundle.verification
    counts = report.counts()
    assert {k: v for k, v in counts.items() if v} == PROBLEM_COUNTS
    assert counts["verify_boxes_clipped"] == 0  # every known key is present, zero when nothing happened
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 11 and bundle.image_shape == (16, 20, 3)
    table = report.format_table()
    for row in ("images kept", "skipped: corrupt", "skipped: truncated", "converted: cmyk", "converted: 16bit"):
        assert row in table
    assert "14 images, 0 verdicts from the cache" in table
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    for name in ("corrupt.jpg", "truncated.png", "truncated.jpg"):
        assert sum(str(root / "cat" / name) in message for message in warned) == 1, name
    assert snapshot(root) == before


def test_verdicts_are_cached_outside_the_dataset_and_a_touched_file_is_verified_again(tmp_path, cache_dir, monkeypatch):
    root = problem_folder(tmp_path / "data")
    before = snapshot(root)
    checked = []
    real_check = verify_module.check_integrity
    monkeypatch.setattr(verify_module, "check_integrity", lambda data: (checked.append(1), real_check(data)))

    def verify():
        checked.clear()
        report = load("folder", task="classification", path=str(root), image_size=16).verification
        return report.counts(), len(checked)

    first, checks = verify()
    assert first["verify_cached"] == 0 and checks == 14
    assert [p.parent for p in cache_dir.rglob("*.json")] == [cache_dir / "verify"]
    second, checks = verify()
    assert second["verify_cached"] == 14 and checks == 0
    first.pop("verify_cached"), second.pop("verify_cached")
    assert second == first
    # Touch a good file and repair a truncated one: those two are verified again, the rest reused.
    good = root / "dog" / "good0.png"
    os.utime(good, ns=(good.stat().st_atime_ns, good.stat().st_mtime_ns + 10**9))
    save(root / "cat" / "truncated.png", noise(24, 24, 6))
    third, checks = verify()
    assert third["verify_cached"] == 12 and checks == 2
    assert third["verify_kept"] == 12 and third["verify_skipped_truncated"] == 1
    assert not any(p.suffix == ".json" for p in root.rglob("*"))
    before.pop("cat/truncated.png"), before.pop("dog/good0.png")
    after = snapshot(root)
    assert {k: after[k] for k in before} == before


def test_a_cache_directory_inside_the_dataset_is_refused(tmp_path, monkeypatch):
    root = problem_folder(tmp_path / "data")
    monkeypatch.setenv("VISIONKIT_CACHE_DIR", str(root / ".cache"))
    with pytest.raises(UserError, match=r"the verification cache .* must lie outside the dataset"):
        load("folder", task="classification", path=str(root))
    assert not (root / ".cache").exists()


def test_empty_dataset_empty_class_and_missing_path_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match=r"^data.path: .*nowhere does not exist \(expected a folder"):
        load("folder", task="classification", path=str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="data.path is not set: pass data.path="):
        load("folder", task="classification")
    root = tmp_path / "broken"
    save(root / "cat" / "a.png", b"not a png")
    save(root / "dog" / "b.jpg", encode(noise(24, 24), "JPEG")[:300])
    with pytest.raises(UserError, match=r"at .*broken has no usable images \(1 corrupt, 1 truncated\)"):
        load("folder", task="classification", path=str(root))
    root = problem_folder(tmp_path / "lonely")
    (root / "zebra").mkdir()
    save(root / "bird" / "x.png", b"junk")
    with pytest.raises(UserError, match=r"classes 'bird', 'zebra' have no usable images"):
        load("folder", task="classification", path=str(root))


def test_boxes_are_clipped_within_tolerance_and_dropped_beyond_it():
    report = VerificationReport("t", "/data")
    boxes = np.array(
        [
            [-1.5, 0, 10, 10],  # 1.5 px out: clipped
            [5, 5, 42, 20],  # 2 px out (the tolerance): clipped
            [30, 5, 45, 20],  # 5 px out: dropped
            [10, 10, 10, 15],  # no width: dropped
            [41, 3, 41.5, 9],  # no width once clipped: dropped
            [2, 3, 8, 9],
        ]
    )  # inside: kept as is
    kept, classes = clean_boxes(report, boxes, np.arange(6), (30, 40), [f"line {i}" for i in range(6)])
    np.testing.assert_array_equal(kept, [[0, 0, 10, 10], [5, 5, 40, 20], [2, 3, 8, 9]])
    np.testing.assert_array_equal(classes, [0, 1, 5])
    assert boxes[0, 0] == -1.5  # the caller's array is left alone
    counts = report.counts()
    assert (
        counts["verify_boxes_clipped"],
        counts["verify_boxes_dropped_outside"],
        counts["verify_boxes_dropped_degenerate"],
    ) == (2, 1, 2)
    assert report.issues == [
        "line 2: box [30, 5, 45, 20] reaches 5 px beyond the 40x30 image (tolerance 2 px); dropped",
        "line 3: box [10, 10, 10, 15] has no area; dropped",
        "line 4: box [41, 3, 41.5, 9] has no area; dropped",
    ]


def test_mask_values_outside_the_classes_become_ignore():
    report = VerificationReport("t", "/data")
    mask = np.array([[0, 1, 2, 255], [3, 9, 1, 0]])
    cleaned = clean_mask(report, mask, 3, "m.png")
    np.testing.assert_array_equal(cleaned, [[0, 1, 2, 255], [255, 255, 1, 0]])
    assert cleaned.dtype == np.uint8 and report.counts()["verify_mask_pixels_out_of_range"] == 2
    assert report.issues == ["m.png: 2 pixels with values outside 0..2 (3, 9) set to 255 (ignore)"]


def test_mask_files_are_read_as_class_indices():
    indices = np.array([[0, 1, 2], [255, 1, 0]], np.uint8)
    palette = Image.fromarray(indices, "P")
    palette.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [224] * (253 * 3))  # VOC-like colours
    for image in (
        palette,
        Image.fromarray(indices),
        Image.fromarray(np.repeat(indices[..., None], 3, axis=-1)),
        Image.fromarray(indices.astype(np.uint16)),
    ):
        np.testing.assert_array_equal(read_mask(encode(image)), indices)
    with pytest.raises(DecodeError, match="holds colours, not class indices"):
        read_mask(encode(noise(4, 4)))
    with pytest.raises(DecodeError) as caught:
        read_mask(b"nothing")
    assert caught.value.reason == "mask_corrupt"


def test_mode_verify_prints_the_table_and_a_missing_path_is_one_line(pipeline, tmp_path):
    root = problem_folder(tmp_path / "data")
    before = snapshot(root)
    done = pipeline("mode=verify", "data=folder", f"data.path={root}", "data.image_size=32")
    assert "verification of 'folder' at" in done.stdout and "skipped: truncated" in done.stdout
    assert f"skipped {root / 'cat' / 'corrupt.jpg'}" in done.stdout  # the warning names the file
    assert snapshot(root) == before
    done = pipeline("mode=verify", "data=folder", f"data.path={tmp_path / 'missing'}", check=False)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: data.path: {tmp_path / 'missing'} does not exist (expected a folder with one "
        f"sub-folder of images per class)"
    ]


def test_a_folder_with_problem_files_trains(pipeline, tmp_path):
    root = problem_folder(tmp_path / "data")
    for c, name in enumerate(("cat", "dog")):  # enough images for a stratified three-way split
        for i in range(3, 8):
            save(root / name / f"more{i}.png", noise(30, 20, 100 + 10 * c + i))
    before = snapshot(root)
    done = pipeline(
        "task=classification",
        "data=folder",
        f"data.path={root}",
        "data.image_size=32",
        "trainer.epochs=1",
        "export.enabled=false",
        "tracking=none",
    )
    sizes = re.search(r"on folder \((\d+) train / (\d+) val / (\d+) test images of \(32, 32, 3\)\)", done.stdout)
    assert sizes and sum(map(int, sizes.groups())) == 21, done.stdout[-2000:]
    assert re.search(r"test_accuracy=\d\.\d{4}", done.stdout)
    assert snapshot(root) == before
