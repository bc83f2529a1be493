"""The verification pass every file-based source runs before its data is used.

Every image is decoded once, in parallel threads, and the conversions it will take to the configured
channels are counted; its pixels are not kept: a source's result is an index of paths, sizes and annotations
(data/index.py). Annotations are checked (boxes clipped within BOX_TOLERANCE_PX, masks against the class
range). What was kept, converted and skipped, per reason, is a VerificationReport on the DataBundle. No file
stops a load: one that cannot be used (empty, truncated, corrupt, a header above Pillow's decompression-bomb
limit, unreadable, a link to nothing or a link loop, a pipe, a name that is not UTF-8) is a skip, counted by
reason, with a warning naming it.

The verdict on each image file (usable with its size and conversions, or skipped and why) is cached by the
file's size and modification time in $VISIONKIT_CACHE_DIR/verify (default ~/.cache/visionkit/verify), so a
second load of unchanged files reads none of them; a touched file is verified again. Nothing is ever
written into the dataset's folder.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG

import numpy as np

from visionkit.data.core import IGNORE_INDEX
from visionkit.data.images import DecodeError, check_channels, check_integrity, decode_image, image_size_pair
from visionkit.data.index import FileSpec, ImageFile
from visionkit.errors import UserError

logger = logging.getLogger("visionkit.data")

# A box may reach this far beyond the image (rounding in annotation tools) and is clipped; further out
# it is reported and dropped, since the annotation no longer matches the picture.
BOX_TOLERANCE_PX = 2.0
WARNINGS_SHOWN = 20  # per kind of issue; the report keeps them all
SKIP_REASONS = (
    "corrupt",
    "truncated",
    "empty",
    "too_large",
    "unsupported",
    "missing",
    "unreadable",
    "bad_name",
    "size_mismatch",
    "bad_label",
    "bad_target",
    "mask_missing",
    "mask_unreadable",
    "mask_corrupt",
    "mask_colour",
    "mask_size",
)
CONVERSIONS = ("grayscale", "to_grayscale", "rgba", "palette", "cmyk", "16bit")
FINDINGS = (
    "boxes_clipped",
    "boxes_dropped_outside",
    "boxes_dropped_degenerate",
    "crowd_annotations",
    "unknown_category",
    "unknown_image",
    "no_segmentation",
    "mask_pixels_out_of_range",
)
OK = ("ok", "")


@dataclass
class VerificationReport:
    """What a source kept, converted and skipped; `issues` holds one line per problem found."""

    dataset: str
    root: str
    kept: int = 0
    cached: int = 0  # verdicts reused from the cache
    skipped: Counter = field(default_factory=Counter)
    converted: Counter = field(default_factory=Counter)
    findings: Counter = field(default_factory=Counter)
    issues: list[str] = field(default_factory=list)
    _shown: Counter = field(default_factory=Counter, repr=False)

    def skip(self, reason: str, where: str, detail: str) -> None:
        self.skipped[reason] += 1
        self.issue(reason, f"skipped {where}: {detail}")

    def find(self, finding: str, count: int = 1, where: str = "", detail: str = "") -> None:
        """Count an annotation problem; with a detail, also report where it is."""
        self.findings[finding] += count
        if detail:
            self.issue(finding, f"{where}: {detail}")

    def issue(self, kind: str, message: str) -> None:
        self.issues.append(message)
        self._shown[kind] += 1
        if self._shown[kind] <= WARNINGS_SHOWN:
            logger.warning(message)

    def counts(self) -> dict[str, int]:
        """Flat metric names, every known one present (zero when nothing happened)."""
        counts = {
            "verify_images": self.kept + sum(self.skipped.values()),
            "verify_kept": self.kept,
            "verify_cached": self.cached,
            "verify_skipped": sum(self.skipped.values()),
        }
        for prefix, counter, names in (
            ("skipped_", self.skipped, SKIP_REASONS),
            ("converted_", self.converted, CONVERSIONS),
            ("", self.findings, FINDINGS),
        ):
            counts.update({f"verify_{prefix}{name}": int(counter[name]) for name in (*names, *sorted(counter))})
        return counts

    def format_table(self) -> str:
        rows = [("images kept", self.kept)]
        rows += [(f"skipped: {name}", n) for name, n in sorted(self.skipped.items()) if n]
        rows += [(f"converted: {name}", n) for name, n in sorted(self.converted.items()) if n]
        rows += [(name.replace("_", " "), n) for name, n in sorted(self.findings.items()) if n]
        total = self.kept + sum(self.skipped.values())
        width = max(len(name) for name, _ in rows) + 2
        lines = [
            f"verification of '{self.dataset}' at {self.root} ({total} images, {self.cached} verdicts from the cache)"
        ]
        lines += [f"  {name:<{width}}{n:>8}" for name, n in rows]
        hidden = sum(max(0, n - WARNINGS_SHOWN) for n in self._shown.values())
        if hidden:
            lines.append(f"  ({hidden} further issues not shown as warnings)")
        return "\n".join(lines)

    def require_images(self) -> None:
        if not self.kept:
            why = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items())) or "no image files found"
            raise UserError(f"dataset '{self.dataset}' at {self.root} has no usable images ({why})")

    def require_every_class(self, labels: Iterable[int], class_names: Sequence[str]) -> None:
        """Classification needs samples of every class it is asked to tell apart."""
        present = set(int(label) for label in labels)
        empty = [name for index, name in enumerate(class_names) if index not in present]
        if empty:
            raise UserError(
                f"dataset '{self.dataset}' at {self.root}: class{'es' if len(empty) > 1 else ''} "
                f"{', '.join(repr(n) for n in empty)} ha{'ve' if len(empty) > 1 else 's'} no usable images"
            )


def cache_directory() -> Path:
    root = os.environ.get("VISIONKIT_CACHE_DIR") or Path.home() / ".cache" / "visionkit"
    return Path(root).expanduser().resolve() / "verify"


def cache_directory_outside(dataset: Path) -> Path:
    """cache_directory(), refused when it lies in the (resolved) dataset folder: nothing is written into a dataset."""
    directory = cache_directory()
    if directory.is_relative_to(dataset):
        raise UserError(
            f"the verification cache {directory} (VISIONKIT_CACHE_DIR) must lie outside "
            f"the dataset {dataset}: nothing is written into a dataset"
        )
    return directory


class VerdictCache:
    """Verdicts on the image files under one dataset root, keyed by relative path, size and mtime,
    in one JSON file per root in the cache directory."""

    VERSION = 2  # entries: [size, mtime_ns, reason, detail, height, width, conversions]

    def __init__(self, root: Path):
        self.root = root.resolve()
        directory = cache_directory_outside(self.root)
        self.file = directory / f"{hashlib.sha256(os.fsencode(self.root)).hexdigest()[:24]}.json"
        self.stored = self._read()
        self.seen: dict[str, list] = {}

    def _read(self) -> dict[str, list]:
        try:
            content = json.loads(self.file.read_text())
        except (OSError, ValueError):
            return {}
        valid = content.get("version") == self.VERSION and content.get("root") == str(self.root)
        return content.get("files", {}) if valid else {}

    def key(self, path: Path) -> str:
        resolved = path.resolve()
        return resolved.relative_to(self.root).as_posix() if resolved.is_relative_to(self.root) else str(resolved)

    def get(self, path: Path, stat: os.stat_result) -> tuple[tuple[str, str], tuple[int, int] | None, tuple] | None:
        """(verdict, (height, width), conversions) stored for this unchanged file, else None."""
        entry = self.stored.get(self.key(path))
        if not entry or entry[:2] != [stat.st_size, stat.st_mtime_ns]:
            return None
        size = (entry[4], entry[5]) if entry[4] is not None else None
        return (entry[2], entry[3]), size, tuple(entry[6])

    def put(self, path: Path, stat: os.stat_result, verdict: tuple[str, str], size, conversions) -> None:
        height, width = size if size is not None else (None, None)
        self.seen[self.key(path)] = [stat.st_size, stat.st_mtime_ns, *verdict, height, width, list(conversions)]

    def save(self) -> None:
        # Merged with the stored verdicts: loads of different parts of one root (a YOLO YAML naming only
        # some folders) do not evict each other's; an entry of a deleted file is small and never matches.
        files = {**self.stored, **self.seen}
        if files == self.stored:
            return
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=self.file.parent, suffix=".tmp", delete=False) as handle:
                json.dump({"version": self.VERSION, "root": str(self.root), "files": files}, handle)
            os.replace(handle.name, self.file)  # atomic: a concurrent reader sees the old or the new file
        except OSError as error:
            logger.warning(f"verification cache not written ({error}); the next load verifies again")


@dataclass
class Checked:
    """What verification keeps of a usable image: the file for the index, and the conversions it takes."""

    file: ImageFile
    conversions: tuple[str, ...] = ()

    @property
    def original_size(self) -> tuple[int, int]:
        return self.file.original_size


@dataclass
class _Outcome:
    verdict: tuple[str, str]
    stat: os.stat_result | None = None
    from_cache: bool = False
    original_size: tuple[int, int] | None = None
    conversions: tuple[str, ...] = ()


class ImageVerifier:
    """Checks the images of one dataset root, recording into one report; what it keeps of each is its path,
    size and conversions (never its pixels), so verification holds no more than the index."""

    def __init__(self, dataset: str, root: Path, *, image_size, channels: int):
        self.size = image_size_pair(image_size)
        self.channels = check_channels(channels)
        self.spec = FileSpec(self.size, self.channels)
        self.report = VerificationReport(dataset, printable(root))
        self.cache = VerdictCache(root)

    def read(self, paths: Sequence[Path]) -> list[Checked | None]:
        """Every image checked, in order; None for a skipped file. Threads decode in parallel (OpenCV and
        Pillow release the GIL while they decode) and return only verdicts and sizes."""
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            outcomes = list(pool.map(self._inspect, paths))
        return [self._record(path, outcome) for path, outcome in zip(paths, outcomes)]

    def _inspect(self, path: Path) -> _Outcome:
        if not utf8_name(path):
            return _Outcome(("bad_name", "the file name is not valid UTF-8; rename the file to use it"))
        try:
            stat = path.stat()
            if not S_ISREG(stat.st_mode):  # a folder, a device or a pipe: reading it could block for ever
                return _Outcome(("unreadable", "not a regular file"))
            cached = self.cache.get(path, stat)
            if cached is not None:
                return _Outcome(cached[0], stat, True, cached[1], cached[2])
            data = path.read_bytes()
        except OSError as error:
            return _Outcome(unreadable(path, error))
        except ValueError as error:  # a name the OS cannot take: an embedded NUL (from a CSV or JSON)
            return _Outcome(("bad_name", f"not a file name ({error})"))
        try:
            check_integrity(data)
            image, conversions = decode_image(data, self.channels)
        except DecodeError as error:
            return _Outcome((error.reason, error.detail), stat)
        return _Outcome(OK, stat, False, image.shape[:2], tuple(conversions))

    def _record(self, path: Path, outcome: _Outcome) -> Checked | None:
        if outcome.stat is not None:
            self.cache.put(path, outcome.stat, outcome.verdict, outcome.original_size, outcome.conversions)
        self.report.cached += outcome.from_cache
        if outcome.verdict != OK:
            self.report.skip(outcome.verdict[0], printable(path), outcome.verdict[1])
            return None
        self.report.kept += 1
        self.report.converted.update(outcome.conversions)
        return Checked(ImageFile(path, tuple(outcome.original_size), self.spec), outcome.conversions)

    def drop(self, path: Path, checked: Checked, reason: str, detail: str) -> None:
        """A usable image that its annotations make unusable (bad label file, mismatched mask...)."""
        self.report.kept -= 1
        self.report.converted.subtract(checked.conversions)
        self.report.skip(reason, printable(path), detail)

    def finish(self) -> VerificationReport:
        """Store the verdicts and fail when nothing is left; the report for the bundle."""
        self.cache.save()
        self.report.require_images()
        return self.report


def utf8_name(path: Path) -> bool:
    """Whether the path's name is text: on Linux a name is bytes, and one that is not UTF-8 reaches Python with
    surrogate escapes, which no log, report or tracking server can write."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(path: Path) -> str:
    """The path as text that any output can write: a name's bytes that are not UTF-8 shown as \\udcNN escapes."""
    return str(path).encode("utf-8", "backslashreplace").decode("utf-8")


def unreadable(path: Path, error: OSError) -> tuple[str, str]:
    """The skip reason and detail of a file the OS refuses to open or read."""
    if isinstance(error, FileNotFoundError):
        return ("missing", "a link to nothing" if path.is_symlink() else "file not found")
    if error.errno == errno.ELOOP:
        return ("unreadable", "a symbolic link loop: the link leads back to itself")
    return ("unreadable", f"cannot be read ({error.strerror or error})")


def read_bytes(path: Path, prefix: str = "") -> bytes:
    """The bytes of a file an image depends on (a mask, a label file); DecodeError when the OS refuses it or it is
    no regular file, with the reason (missing, unreadable) prefixed by `prefix` ("mask_")."""
    try:
        if not S_ISREG(path.stat().st_mode):  # opening a pipe would wait for a writer
            raise DecodeError(prefix + "unreadable", "not a regular file")
        return path.read_bytes()
    except OSError as error:
        reason, detail = unreadable(path, error)
        raise DecodeError(prefix + reason, detail) from None


def clean_boxes(
    report: VerificationReport,
    boxes: np.ndarray,
    classes: np.ndarray,
    image_size: tuple[int, int],
    sources: Sequence[str],
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel xyxy boxes of an image of image_size (h, w): clipped when they reach at most
    BOX_TOLERANCE_PX beyond it, dropped (and reported with their source) when further out or
    without area after clipping."""
    height, width = image_size
    upper = np.array([width, height, width, height], np.float64)
    boxes = np.array(boxes, np.float64).reshape(-1, 4)  # a copy: the caller's array is left alone
    keep = []
    for i, (box, source) in enumerate(zip(boxes.copy(), sources)):
        text = "[" + ", ".join(f"{v:g}" for v in box) + "]"
        beyond = max(-box[0], -box[1], box[2] - width, box[3] - height) if np.isfinite(box).all() else 0.0
        if beyond > BOX_TOLERANCE_PX:
            report.find(
                "boxes_dropped_outside",
                1,
                source,
                f"box {text} reaches {beyond:g} px beyond the "
                f"{width}x{height} image (tolerance {BOX_TOLERANCE_PX:g} px); dropped",
            )
            continue
        clipped = np.clip(box, 0, upper)
        if not (np.isfinite(clipped).all() and clipped[2] > clipped[0] and clipped[3] > clipped[1]):
            report.find("boxes_dropped_degenerate", 1, source, f"box {text} has no area; dropped")
            continue
        if not np.array_equal(clipped, box):
            report.find("boxes_clipped")
        boxes[i] = clipped
        keep.append(i)
    return boxes[keep].astype(np.float32), np.asarray(classes, np.int64).reshape(-1)[keep]


def clean_mask(report: VerificationReport, mask: np.ndarray, num_values: int, where: str) -> np.ndarray:
    """uint8 class-index mask: values outside 0..num_values-1 (255 excepted) are reported, counted in
    pixels and set to 255, which no loss or metric counts."""
    bad = ((mask < 0) | (mask >= num_values)) & (mask != IGNORE_INDEX)
    count = int(bad.sum())
    if count:
        values = ", ".join(str(v) for v in np.unique(mask[bad])[:5])
        report.find(
            "mask_pixels_out_of_range",
            count,
            where,
            f"{count} pixels with values outside 0..{num_values - 1} ({values}) set to {IGNORE_INDEX} (ignore)",
        )
    return np.where(bad, IGNORE_INDEX, mask).astype(np.uint8)
