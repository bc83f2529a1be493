"""Datasets as an index of files: a split keeps, per sample, an image's path and size and its annotations in
the file's own pixels (a few hundred bytes), and decodes a sample only when the loader reads it.

Memory then no longer grows with the number of images: decoded pixels live in the batches in flight, or in
the cache the user chose (`data.cache`): `memory` decodes each split once into an array (today's small
datasets: the fastest path), `disk` keeps each decoded image in a memory-mapped file outside the dataset
the first time it is read, so later epochs skip the decoder, `none` decodes every time, and `auto` is
`memory` when the decoded splits fit `data.cache_memory_mb`, else `none`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from visionkit.data.core import DataBundle, Split, stack_samples
from visionkit.data.images import DecodeError, decode_image, jpeg_reduction
from visionkit.data.sizing import Sizing, check_sizing
from visionkit.errors import UserError

CACHE_MODES = ("auto", "memory", "disk", "none")
STREAM_OPTIONS = ("resize", "crop_ratio", "cache", "cache_memory_mb")  # data keys of every source, for data.load
PIXEL_STATS_IMAGES = 256  # images the normalisation statistics of a streamed split are estimated from


@dataclass(frozen=True)
class FileSpec:
    """How a source's image files become samples: the model's input size and channels."""

    size: tuple[int, int]
    channels: int


@dataclass(frozen=True)
class ImageFile:
    """A verified image file: what an index keeps of it."""

    path: Path
    original_size: tuple[int, int]  # (height, width) of the file: the pixels its annotations are in
    spec: FileSpec

    @staticmethod
    def column(files: Sequence[ImageFile]) -> ImageFiles:
        """A split's images from its verified files, stretched to their spec's size."""
        spec = files[0].spec
        return ImageFiles(
            [f.path for f in files],
            np.array([f.original_size for f in files], np.int32),
            sizing=Sizing(spec.size, "stretch"),
            channels=spec.channels,
        )


@dataclass(frozen=True)
class EncodedImage:
    """An image read but not decoded: what training's full-resolution samples carry, so that the transforms
    decode only as much of it as their first crop keeps (augment/window.py)."""

    path: str  # what messages name it by
    data: bytes
    shape: tuple[int, int, int]  # (height, width, channels) of the decoded image: the index's size

    def decode(self, at_least: tuple[int, int] | None = None) -> np.ndarray:
        """The pixels; a JPEG at 1/2, 1/4 or 1/8 of its size where that is still at least `at_least` (h, w)."""
        try:
            image, _ = decode_image(self.data, self.shape[2], at_least=at_least)
        except (DecodeError, cv2.error) as error:
            raise changed_after_verification(self.path, error) from None
        size, factor = self.shape[:2], jpeg_reduction(self.shape[:2], at_least)
        if image.shape[:2] not in {size, tuple(-(-side // factor) for side in size)}:  # whole, or reduced as asked
            found = DecodeError("size", f"{image.shape[1]}x{image.shape[0]} pixels, {size[1]}x{size[0]} when verified")
            raise changed_after_verification(self.path, found)
        return image


def changed_after_verification(path: str, error: Exception) -> UserError:
    why = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return UserError(f"{path} cannot be decoded any more ({why}); it changed after verification")


class LazyColumn:
    """A per-sample target built when the sample is read (a mask file, a COCO mask painted from its
    polygons): `load(item)` is a module-level function, so the column travels to worker processes."""

    def __init__(self, items: Sequence[Any], load: Callable[[Any], np.ndarray]):
        self.items, self.load = list(items), load

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.load(self.items[i])

    def take(self, indices: Sequence[int]) -> LazyColumn:
        return LazyColumn([self.items[i] for i in indices], self.load)

    def fingerprint(self) -> bytes:
        return repr((self.load.__qualname__, self.items)).encode()


class ImageFiles:
    """A split's images as files: decoded and sized (`sizing`, None for the file's own size) when read.

    Looks like the uint8 [N, H, W, C] array it stands for (len, shape, dtype, indexing, np.asarray), so that
    code showing a few images needs no change; the loader reads samples through Split.sample. Deferred
    (at_own_size(deferred=True)), a sample's image is its EncodedImage, which the transforms decode.
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, paths: Sequence[str], original_sizes: np.ndarray, *, sizing: Sizing | None, channels: int):
        self.paths = np.asarray([str(p) for p in paths], dtype=object)
        self.original_sizes = np.asarray(original_sizes, np.int32).reshape(-1, 2)
        self.sizing = sizing
        self.channels = channels
        self.deferred = False
        self.disk_cache: DiskCache | None = None

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple:
        size = self.sizing.size if self.sizing is not None else (None, None)
        return (len(self), *size, self.channels)

    def take(self, indices: Sequence[int]) -> ImageFiles:
        indices = np.asarray(indices, dtype=np.int64)
        return self._deferred(self._like(self.paths[indices], self.original_sizes[indices], self.sizing), self.deferred)

    def fingerprint(self) -> bytes:
        """What identifies the images without reading them: paths, sizes, sizing, channels."""
        return repr((self.paths.tolist(), self.original_sizes.tolist(), self.sizing, self.channels)).encode()

    def at_own_size(self, *, deferred: bool = False) -> ImageFiles:
        return self._deferred(self._like(self.paths, self.original_sizes, None), deferred)

    @staticmethod
    def _deferred(images: ImageFiles, deferred: bool) -> ImageFiles:
        if deferred and images.sizing is not None:
            raise ValueError("only images at their own size can be deferred: a sizing needs their pixels")
        images.deferred = deferred
        return images

    def with_sizing(self, sizing: Sizing) -> ImageFiles:
        return self._like(self.paths, self.original_sizes, sizing)

    def _like(self, paths, original_sizes, sizing) -> ImageFiles:
        return ImageFiles(paths, original_sizes, sizing=sizing, channels=self.channels)

    def read(self, i: int) -> np.ndarray:
        """The decoded image of sample i: at its own size, or reduced where its sizing loses nothing by it."""
        at_least = self.sizing.decode_at_least(self._original_size(i)) if self.sizing is not None else None
        return self.undecoded(i).decode(at_least)

    def undecoded(self, i: int) -> EncodedImage:
        """Image i read (encoded()), with the size and channels it decodes to."""
        try:
            data = self.encoded(i)
        except OSError as error:
            raise changed_after_verification(self.paths[i], error) from None
        return EncodedImage(self.paths[i], data, (*self._original_size(i), self.channels))

    def encoded(self, i: int) -> bytes:
        """The encoded image of sample i: its file's bytes."""
        with open(self.paths[i], "rb") as handle:
            return handle.read()

    def source_stamp(self) -> bytes:
        """What changes when an image does: each file's path, size and modification time (names the disk cache)."""
        stats = ((path, os.stat(path)) for path in self.paths)
        return "".join(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n" for path, stat in stats).encode()

    def sample(self, i: int, targets: dict[str, Any]) -> dict[str, Any]:
        """Sample i: the decoded image with its targets (in the file's pixels), both sized; deferred, the image
        is its EncodedImage."""
        if self.sizing is None:
            return {"image": self.undecoded(i) if self.deferred else self.read(i), **targets}
        if self.disk_cache is not None:
            cached = self.disk_cache.get(i)
            if cached is not None:
                return {"image": cached, **self.sized_targets(i, targets)}
        sized = self.sizing.apply({"image": self.read(i), **targets}, self._original_size(i))
        if self.disk_cache is not None:
            self.disk_cache.put(i, sized["image"])
        return sized

    def _original_size(self, i: int) -> tuple[int, int]:
        return int(self.original_sizes[i, 0]), int(self.original_sizes[i, 1])

    def sized_targets(self, i: int, targets: dict[str, Any]) -> dict[str, Any]:
        """Sample i's targets as sample(i) gives them, without decoding its image."""
        if self.sizing is None or not targets.keys() & {"boxes", "mask"}:
            return targets
        return {k: v for k, v in self.sizing.apply(targets, self._original_size(i)).items() if k != "image"}

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self._pixels(int(key))
        indices = np.arange(len(self))[key]
        return np.stack([self._pixels(int(i)) for i in indices]) if len(indices) else self._empty()

    def _pixels(self, i: int) -> np.ndarray:
        return self.read(i) if self.sizing is None else self.sample(i, {})["image"]

    def _empty(self) -> np.ndarray:
        return np.zeros((0, *self.shape[1:]), np.uint8)

    def __array__(self, dtype=None, copy=None):
        array = self[:]
        return array if dtype is None else array.astype(dtype)


def files_split(records: Sequence[dict[str, Any]], list_targets: Sequence[str]) -> Split:
    """A Split of records whose "image" is an ImageFile: the index, sized to the spec with `stretch`."""
    files = [r["image"] for r in records]
    images = type(files[0]).column(files)  # a source whose images are no files (tfds) brings its own column
    targets = {}
    for key in (k for k in records[0] if k != "image"):
        values = [r[key] for r in records]
        if isinstance(values[0], LazyItem):
            targets[key] = LazyColumn([v.item for v in values], values[0].load)
        elif key in list_targets:
            targets[key] = values
        else:
            targets[key] = np.asarray(values)
    return Split(images, targets)


@dataclass(frozen=True)
class LazyItem:
    """A record's target that is built when the sample is read (see LazyColumn)."""

    item: Any
    load: Callable[[Any], np.ndarray]


# ---- what data.load applies to every source's bundle -------------------------------------------------


def check_stream_options(resize: str, crop_ratio: float, cache: str, cache_memory_mb: float) -> None:
    check_sizing(resize, crop_ratio)  # before the source is read, for every source
    if cache not in CACHE_MODES:
        raise UserError(f"data.cache must be one of {', '.join(CACHE_MODES)}, received {cache!r}")
    if cache_memory_mb < 0:
        raise UserError(f"data.cache_memory_mb must be at least 0, received {cache_memory_mb!r}")


def is_streamed(split: Split) -> bool:
    return isinstance(split.images, ImageFiles)


def resized(bundle: DataBundle, mode: str, crop_ratio: float) -> DataBundle:
    """The bundle's streamed splits sized by `mode` (data.resize) at the size their source was given."""
    if mode == "stretch" or not is_streamed(bundle.train):
        return bundle
    return replace(
        bundle,
        **{
            name: replace(split, images=split.images.with_sizing(Sizing(split.images.sizing.size, mode, crop_ratio)))
            for name, split in bundle.splits().items()
        },
    )


def decoded_bytes(split: Split) -> int:
    height, width = split.images.shape[1:3]
    per_image = height * width * (split.images.shape[3] + ("mask" in split.targets))
    return len(split) * per_image


def cached(bundle: DataBundle, mode: str, memory_mb: float) -> DataBundle:
    """The bundle with data.cache applied to its streamed splits (in-memory sources are returned as they are)."""
    if not is_streamed(bundle.train) or mode == "none":
        return bundle
    if mode == "auto":
        total = sum(decoded_bytes(split) for split in bundle.splits().values())
        mode = "memory" if total <= memory_mb * 2**20 else "none"
        if mode == "none":
            return bundle
    if mode == "memory":
        return replace(bundle, **{name: decoded(split) for name, split in bundle.splits().items()})
    for name, split in bundle.splits().items():
        split.images.disk_cache = DiskCache.for_split(split.images, name)
    return bundle


def decoded(split: Split) -> Split:
    """The split decoded and sized into arrays, as in-memory sources hold theirs; it keeps its index, so that
    training can still read the files at their own size (augment.full_resolution)."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        samples = list(pool.map(split.sample, range(len(split))))
    return replace(stack_samples(samples), index=split)


def own_size_split(split: Split) -> Split:
    """The split with every image at its file's own size, for training's full-resolution transforms: its samples
    carry their images undecoded (EncodedImage), for the transforms to decode; a split that was never files is
    returned as it is."""
    files = split.index if split.index is not None else split
    if not is_streamed(files):
        return split
    return replace(files, images=files.images.at_own_size(deferred=True))


def sampled_pixel_stats(split: Split) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of up to PIXEL_STATS_IMAGES training images spread evenly over a
    streamed split (all of them for a small one), in pixel units."""
    picks = np.unique(np.linspace(0, len(split) - 1, min(len(split), PIXEL_STATS_IMAGES)).round().astype(int))
    channels = split.images.shape[-1]
    pixels = np.concatenate([split.images[int(i)].reshape(-1, channels) for i in picks]).astype(np.float64)
    return pixels.mean(axis=0).tolist(), np.maximum(pixels.std(axis=0), 1.0).tolist()


class DiskCache:
    """Decoded, sized images of one split in a memory-mapped file under $VISIONKIT_CACHE_DIR/decoded, filled the
    first time each image is read (by any worker thread or process) and reused after that. The file is named by
    a digest of the split's paths, their sizes and modification times and the sizing, so a changed file or
    setting gets a new cache; nothing is written into the dataset."""

    def __init__(self, file: Path, shape: tuple[int, ...]):
        self.file, self.shape = file, shape
        self._images = self._filled = None

    @classmethod
    def for_split(cls, images: ImageFiles, split_name: str) -> DiskCache:
        from visionkit.data.verify import cache_directory

        hasher = hashlib.sha256(repr((images.sizing, images.channels, split_name)).encode())
        hasher.update(images.source_stamp())
        directory = cache_directory().parent / "decoded"
        directory.mkdir(parents=True, exist_ok=True)
        cache = cls(directory / hasher.hexdigest()[:24], images.shape)
        cache._create()
        return cache

    def _create(self) -> None:
        """Both files at full size (sparse until written), before any worker opens them."""
        for suffix, shape in ((".pixels", self.shape), (".filled", (self.shape[0],))):
            if not self.file.with_suffix(suffix).exists():
                np.memmap(self.file.with_suffix(suffix), np.uint8, "w+", shape=shape).flush()

    def _open(self) -> None:
        if self._images is None:
            self._filled = np.memmap(self.file.with_suffix(".filled"), np.uint8, "r+", shape=(self.shape[0],))
            self._images = np.memmap(self.file.with_suffix(".pixels"), np.uint8, "r+", shape=self.shape)

    def get(self, i: int) -> np.ndarray | None:
        self._open()
        return np.array(self._images[i]) if self._filled[i] else None

    def put(self, i: int, image: np.ndarray) -> None:
        self._open()
        self._images[i] = image
        self._filled[i] = 1  # after the pixels: a reader never sees a flag without its image

    def __getstate__(self):
        return {"file": self.file, "shape": self.shape, "_images": None, "_filled": None}
