"""`tfds`: a TensorFlow Datasets set by its TFDS name, for classification, detection or segmentation.

The first use downloads and prepares the set into data_dir (default ~/tensorflow_datasets): that
needs network access, and happens only when data.download is true; afterwards it loads offline.

A set prepared as ArrayRecord files (data.file_format=array_record, the default for a new preparation) is
streamed like the file sources: the split keeps an index (example numbers, image sizes, labels and boxes),
the loader's workers read and decode each example when its batch is due, and data.resize and data.cache
apply. A set prepared as TFRecord files allows no random access: its examples are decoded into memory,
stretched to image_size (choose a split slice, data.train_split='train[:20%]', for sets that do not fit),
and a line in the run's output says so. Either way every example is read once first to verify it (its pixels
are not kept when streaming). A streamed split's verified index and report are cached in
$VISIONKIT_CACHE_DIR/verify/tfds (IndexCache), so a second load of unchanged prepared files reads no example.

`targets` picks what a sample holds:
- classification: the class label `label_key`.
- detection: the boxes of `objects_key` (voc, coco/2017, ...): TFDS's `bbox`, normalised [ymin, xmin, ymax,
  xmax], becomes pixel xyxy; `label` the class. Crowd boxes (`is_crowd`, COCO) are no training boxes, as in
  data=coco; `is_difficult` (VOC) becomes the sample's `difficult` flags.
- segmentation: the class-index mask `mask_key`. oxford_iiit_pet's trimap (1 pet, 2 background, 3 the
  uncertain border) becomes 1 pet, 0 background, 255 ignore (its class: "pet"); other sets' mask values are
  the classes as they are (0 background, data.class_names naming 1, 2, ...).
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from visionkit.data.core import IGNORE_INDEX, DataBundle, bundle_from_samples
from visionkit.data.images import DecodeError, check_channels, decode_image, image_size_pair, to_channels
from visionkit.data.index import FileSpec, ImageFiles, LazyItem
from visionkit.data.sizing import Sizing
from visionkit.data.verify import VerificationReport, cache_directory_outside, clean_boxes, clean_mask
from visionkit.errors import UserError
from visionkit.registry import DATASETS

logger = logging.getLogger("visionkit.data")

TARGETS = ("classification", "detection", "segmentation")
FILE_FORMATS = ("array_record", "tfrecord")  # how a new preparation writes the set: random access, or only iteration
# Sets whose mask values are not class indices: their value -> class index (IGNORE_INDEX: ignore), class names.
MASK_VALUES = {"oxford_iiit_pet": ({1: 1, 2: 0, 3: IGNORE_INDEX}, ["pet"])}
FLAGS = ("is_crowd", "is_difficult")  # COCO's and VOC's per-object flags in TFDS
VERIFY_CHUNK = 256  # examples read at once (in parallel, by ArrayRecord's threads) while verifying


@DATASETS.register("tfds", tasks=TARGETS)
def tfds(
    *,
    name_in_tfds: str = "mnist",
    targets: str = "classification",
    image_key: str = "image",
    label_key: str = "label",
    objects_key: str = "objects",
    mask_key: str = "segmentation_mask",
    class_names: Sequence[str] | None = None,
    train_split: str = "train",
    val_split: str = "",
    test_split: str = "test",
    data_dir: str = "",
    download: bool = False,
    file_format: str = "array_record",
    image_size: int | Sequence[int] = (32, 32),
    channels: int = 3,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> DataBundle:
    """An empty val_split or test_split is carved from train by its fraction (classification: stratified)."""
    import tensorflow_datasets as tensorflow_datasets  # heavy; only for users of this source

    if targets not in TARGETS:
        raise UserError(f"data.targets must be one of {', '.join(TARGETS)}, received {targets!r}")
    if file_format not in FILE_FORMATS:
        raise UserError(f"data.file_format must be one of {', '.join(FILE_FORMATS)}, received {file_format!r}")
    spec = FileSpec(image_size_pair(image_size), check_channels(channels))
    builder = _builder(tensorflow_datasets, name_in_tfds, data_dir or None)
    if not builder.is_prepared():
        _prepare(builder, name_in_tfds, download, file_format)
    keys = {"classification": label_key, "detection": objects_key, "segmentation": mask_key}[targets]
    _require_features(builder.info.features, name_in_tfds, image_key=image_key, **{_OPTION[targets]: keys})
    convert, names, mask_names = _converter(targets, builder.info.features, name_in_tfds, keys, class_names)
    report = VerificationReport("tfds", f"tensorflow_datasets:{name_in_tfds}")
    wanted = {split: name for split, name in (("train", train_split), ("val", val_split), ("test", test_split)) if name}
    if _random_access(tensorflow_datasets, builder):
        read = functools.partial(_indexed_split, builder, image_key, spec, convert, report)
    else:
        logger.info(
            f"data=tfds: '{name_in_tfds}' in {builder.data_dir} is TFRecord files, which allow no random access, so "
            f"its examples are decoded into memory; to stream it, prepare it anew as ArrayRecord files "
            f"(data.file_format=array_record data.download=true, with another data.data_dir)"
        )
        read = functools.partial(_decoded_split, tensorflow_datasets, builder, image_key, spec, convert, report)
    pools = {split: read(name, f"{name_in_tfds} {name}") for split, name in wanted.items()}
    report.require_images()
    if targets == "classification":
        report.require_every_class([s["label"] for s in pools["train"]], names)
    return bundle_from_samples(
        "tfds",
        pools,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        stratify_key="label" if targets == "classification" else None,
        class_names=names,
        mask_names=mask_names,
        verification=report,
    )


_OPTION = {"classification": "label_key", "detection": "objects_key", "segmentation": "mask_key"}
# example, its image's (height, width), the report, where it is -> its targets in the image's pixels, or None
Converter = Callable[[dict, tuple[int, int], VerificationReport, str], "dict[str, Any] | None"]


def _require_features(features, name: str, **keys: str) -> None:
    for option, key in keys.items():
        if key not in features:
            raise UserError(f"data.{option}: '{name}' has no feature '{key}'; its features: {', '.join(features)}")


def _converter(targets: str, features, name: str, key: str, class_names) -> tuple[Converter, list[str], list[str]]:
    """(the converter of an example's targets, class names, mask names) for data.targets."""
    if targets == "classification":
        names = list(getattr(features[key], "names", None) or [])
        if not names:
            raise UserError(f"data.label_key: feature '{key}' of '{name}' is not a class label")
        return LabelRule(key), names, []
    if targets == "detection":
        objects = features[key]
        if not all(field in getattr(objects, "keys", list)() for field in ("bbox", "label")):
            raise UserError(f"data.objects_key: feature '{key}' of '{name}' has no 'bbox' and 'label' per object")
        names = list(class_names or getattr(objects["label"], "names", None) or [])
        if not names:
            raise UserError(f"data.class_names: '{name}' does not name the classes of '{key}/label'; give them")
        return BoxRule(key, len(names)), names, []
    values, names = MASK_VALUES.get(name.split("/")[0].split(":")[0], (None, list(class_names or [])))
    if not names:
        raise UserError(f"data.class_names: name the classes of '{name}' mask values 1, 2, ... (0 is background)")
    return MaskRule(key, tuple(values.items()) if values else None, len(names) + 1), names, ["background", *names]


# The converters are values (their repr is part of the index cache's key), not closures.


@dataclass(frozen=True)
class LabelRule:
    """The class label `key` of an example."""

    key: str

    def __call__(self, example, original_size, report, where) -> dict[str, np.ndarray]:
        return {"label": np.int64(example[self.key])}


@dataclass(frozen=True)
class BoxRule:
    """The boxes of the objects `key` in the image's pixels (xyxy), with their classes and `difficult` flags; crowd
    boxes are counted and left out, boxes beyond the image clipped or dropped (clean_boxes)."""

    key: str
    num_classes: int

    def __call__(self, example, original_size, report, where) -> dict[str, np.ndarray] | None:
        objects = example[self.key]
        normalised = np.asarray(objects["bbox"], np.float64).reshape(-1, 4)  # [ymin, xmin, ymax, xmax] in 0..1
        classes = np.asarray(objects["label"], np.int64).reshape(-1)
        flags = {field: np.asarray(objects.get(field, np.zeros(len(classes))), bool).reshape(-1) for field in FLAGS}
        lengths = {len(normalised), len(classes), *(len(v) for v in flags.values())}
        if len(lengths) > 1 or (classes.size and not 0 <= classes.min() <= classes.max() < self.num_classes):
            detail = f"objects of differing counts or classes outside 0..{self.num_classes - 1}"
            report.skip("bad_target", where, detail)
            return None
        report.find("crowd_annotations", int(flags["is_crowd"].sum()))
        regular = ~flags["is_crowd"]
        height, width = original_size
        boxes = normalised[regular][:, [1, 0, 3, 2]] * np.array([width, height, width, height])
        sources = [f"{where} object {i}" for i in np.flatnonzero(regular)]
        boxes, kept = clean_boxes(report, boxes, np.arange(len(boxes)), original_size, sources)
        return {"boxes": boxes, "classes": classes[regular][kept], "difficult": flags["is_difficult"][regular][kept]}


@dataclass(frozen=True)
class MaskRule:
    """How a set's mask feature becomes class indices: `values` maps the set's values to classes (oxford_iiit_pet's
    trimap; unlisted values become ignore), None keeps them; values outside 0..num_values-1 become ignore."""

    key: str
    values: tuple[tuple[int, int], ...] | None
    num_values: int

    def indices(self, example: dict) -> np.ndarray:
        mask = np.asarray(example[self.key])
        mask = mask[..., 0] if mask.ndim == 3 else mask
        if self.values is None:
            return mask
        lookup = np.full(max(256, int(mask.max()) + 1), -1, np.int64)
        lookup[[value for value, _ in self.values]] = [index for _, index in self.values]
        return lookup[mask]

    def __call__(self, example, original_size, report, where) -> dict[str, np.ndarray] | None:
        """The example's mask, values out of range reported and set to ignore; None when it is not the image's size."""
        mask = self.indices(example)
        if mask.shape != tuple(original_size):
            report.skip(
                "mask_size", where, f"mask {mask.shape[1]}x{mask.shape[0]}, image {original_size[1]}x{original_size[0]}"
            )
            return None
        return {"mask": clean_mask(report, mask, self.num_values, where)}

    def read(self, example: dict) -> np.ndarray:
        """The mask as verification gave it, without reporting (verification did)."""
        mask = self.indices(example)
        return np.where((mask < 0) | (mask >= self.num_values), IGNORE_INDEX, mask).astype(np.uint8)


def _builder(tensorflow_datasets, name: str, data_dir: str | None):
    try:
        return tensorflow_datasets.builder(name, data_dir=data_dir)
    except tensorflow_datasets.core.registered.DatasetNotFoundError:
        close = difflib.get_close_matches(name, tensorflow_datasets.list_builders(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"data.name_in_tfds: unknown TensorFlow Datasets name '{name}'{hint}") from None


def _prepare(builder, name: str, download: bool, file_format: str) -> None:
    where = builder.data_dir
    if not download:
        raise UserError(
            f"TensorFlow Datasets '{name}' is not prepared in {where}; run once with "
            f"data.download=true (needs network) or point data.data_dir at a prepared copy"
        )
    try:
        builder.download_and_prepare(file_format=file_format)
    except Exception as error:  # noqa: BLE001  (network, missing extras: many kinds, all the user's to fix)
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise UserError(
            f"TensorFlow Datasets '{name}' could not be downloaded and prepared into {where} "
            f"({type(error).__name__}: {message}); this needs network access"
        ) from None


# ---- TFRecord files: every example decoded into memory -------------------------------------------------


def _decoded_split(tensorflow_datasets, builder, image_key, spec, convert, report, split, where) -> list[dict]:
    """The split's samples, decoded and stretched to spec's size."""
    try:
        dataset = builder.as_dataset(split=split)
    except (ValueError, KeyError) as error:
        raise UserError(
            f"TensorFlow Datasets split '{split}': {str(error).splitlines()[0]}; "
            f"splits: {', '.join(builder.info.splits)}"
        ) from None
    sizing, samples = Sizing(spec.size), []
    for n, example in enumerate(tensorflow_datasets.as_numpy(dataset)):
        image, conversions = to_channels(np.asarray(example[image_key]), spec.channels)
        targets = convert(example, image.shape[:2], report, f"{where} example {n}")
        if targets is not None:
            report.converted.update(conversions)
            report.kept += 1
            samples.append(sizing.apply({"image": image, **targets}, image.shape[:2]))
    return samples


# ---- ArrayRecord files: an index of example numbers, read when the loader needs them -------------------


def _random_access(tensorflow_datasets, builder) -> bool:
    array_record = tensorflow_datasets.core.file_adapters.FileFormat.ARRAY_RECORD
    return array_record in builder.info.available_file_formats()


@dataclass(frozen=True)
class Examples:
    """One prepared split's examples by number, from its ArrayRecord files, which a process opens once (see
    _opened). Images stay encoded (the loader decodes them as it decodes files); the other features are decoded
    on request."""

    directory: str  # the prepared set: <data_dir>/<name>/<version>
    split: str
    image_key: str

    def __len__(self) -> int:
        return len(_opened(self)[0])

    def image(self, number: int) -> bytes:
        return _opened(self)[0][number][self.image_key]

    def examples(self, numbers: Sequence[int]) -> list[dict]:
        """The examples, read in parallel (verification); their image encoded, every other feature decoded."""
        return [self._decoded(example) for example in _opened(self)[0].__getitems__(list(numbers))]

    def example(self, number: int) -> dict:
        """One example, read in the calling thread (the loader's workers), decoded as examples() decodes them."""
        return self._decoded(_opened(self)[0][number])

    def _decoded(self, example: dict) -> dict:
        _, features, encoded = _opened(self)
        return {
            k: features[k].decode_example_np(v) if k in encoded and k != self.image_key else v
            for k, v in example.items()
        }


@functools.cache
def _opened(examples: Examples) -> tuple[Sequence[dict], Any, frozenset[str]]:
    """(the split's data source, the set's features, the features it leaves encoded), once per process.

    The readers of every file are built here, by reading the first example of each, so they exist before the
    loader forks its worker processes, which use them as they inherit them (verification, which reads every
    example, may come from the cache and read none): the readers read by position (pread), so processes do not
    disturb each other, while building a reader in a worker forked from a process running TensorFlow crashed
    it (a segmentation fault). A spawned worker unpickles the names and opens the files anew."""
    import tensorflow_datasets
    from array_record.python.array_record_data_source import ArrayRecordDataSource
    from tensorflow_datasets.core.data_sources.base import file_instructions

    builder = tensorflow_datasets.builder_from_directory(examples.directory)
    features = builder.info.features
    encoded = frozenset(k for k, f in features.items() if isinstance(f, tensorflow_datasets.features.Image))
    skip = {key: tensorflow_datasets.decode.SkipDecoding() for key in encoded}
    try:
        source = builder.as_data_source(examples.split, decoders=skip)
    except (ValueError, KeyError) as error:
        raise UserError(
            f"TensorFlow Datasets split '{examples.split}': {str(error).splitlines()[0]}; "
            f"splits: {', '.join(builder.info.splits)}"
        ) from None
    # Readers without ArrayRecord's global thread pool, which a forked worker would inherit without its threads
    # (ArrayRecord's advice for random access, besides).
    instructions = file_instructions(builder.info, examples.split)
    source.data_source = ArrayRecordDataSource(instructions, reader_options={"max_parallelism": "0"})
    starts = np.cumsum([0, *(i.take for i in instructions)])
    firsts = [int(start) for start, instruction in zip(starts, instructions) if instruction.take]
    if firsts:  # ArrayRecord builds a file's reader at its first read
        source.data_source.__getitems__(firsts)
    return source, features, encoded


@dataclass(frozen=True)
class Example:
    """A verified example: what the index keeps of it (the record an ImageFile is for a file)."""

    source: Examples
    number: int
    original_size: tuple[int, int]
    spec: FileSpec

    @staticmethod
    def column(records: Sequence[Example]) -> ExampleImages:
        spec = records[0].spec
        return ExampleImages(
            records[0].source,
            np.array([r.number for r in records], np.int64),
            np.array([r.original_size for r in records], np.int32),
            sizing=Sizing(spec.size, "stretch"),
            channels=spec.channels,
        )


class ExampleImages(ImageFiles):
    """A split's images as examples of a prepared TFDS split, read by number: decoded, sized and cached as
    ImageFiles does files. Its `paths` name the examples (messages, fingerprints)."""

    def __init__(self, source: Examples, numbers: np.ndarray, original_sizes: np.ndarray, *, sizing, channels: int):
        where = f"tfds {source.directory} {source.split} example"
        super().__init__([f"{where} {n}" for n in numbers], original_sizes, sizing=sizing, channels=channels)
        self.source, self.numbers = source, np.asarray(numbers, np.int64)

    def take(self, indices: Sequence[int]) -> ExampleImages:
        indices = np.asarray(indices, dtype=np.int64)
        taken = ExampleImages(
            self.source, self.numbers[indices], self.original_sizes[indices], sizing=self.sizing, channels=self.channels
        )
        return self._deferred(taken, self.deferred)  # as ImageFiles.take: a subset of undecoded images stays so

    def _like(self, paths, original_sizes, sizing) -> ExampleImages:  # the same examples, sized otherwise
        return ExampleImages(self.source, self.numbers, original_sizes, sizing=sizing, channels=self.channels)

    def encoded(self, i: int) -> bytes:
        return self.source.image(int(self.numbers[i]))

    def source_stamp(self) -> bytes:
        """The prepared set's files (path, size, modification time), the split and the example numbers."""
        stats = "".join(f"{path}\0{size}\0{mtime}\n" for path, size, mtime in _file_stamps(Path(self.source.directory)))
        return f"{stats}{self.source.split}\n{','.join(map(str, self.numbers.tolist()))}".encode()


def mask_of_example(item: tuple[Examples, int, MaskRule]) -> np.ndarray:
    """The class-index mask of an example (a LazyItem's load: it runs in the loader's workers)."""
    source, number, rule = item
    return rule.read(source.example(number))


def _indexed_split(builder, image_key, spec, convert, report, split, where) -> list[dict]:
    """The split's records: every example read once to verify it; its image's size and its targets are kept, not
    its pixels (nor its mask, read again when the loader needs it). While the prepared files are unchanged, the
    next load takes the records and the verdicts from the cache instead (IndexCache)."""
    source = Examples(str(builder.data_dir), split, image_key)
    count = len(source)  # opens the readers of every file before the loader forks its workers (see _opened)
    cache = IndexCache(source, spec, convert, where, Path(builder.data_dir_root))
    cached = cache.read(count)
    records, verified = cached or _verified(source, spec, convert, where)
    if cached:
        report.cached += count
    else:
        cache.write(records, verified, count)
    verified.add_to(report)
    return records


def _verified(source, spec, convert, where) -> tuple[list[dict], SplitReport]:
    """Every example of the split read and checked: the records of those kept, and the split's report."""
    report, records = SplitReport("tfds", where), []
    inspect = functools.partial(_inspect, channels=spec.channels)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # decoders release the GIL
        for start in range(0, len(source), VERIFY_CHUNK):
            numbers = range(start, min(start + VERIFY_CHUNK, len(source)))
            examples = source.examples(numbers)
            images = pool.map(inspect, [e[source.image_key] for e in examples])
            for number, example, inspected in zip(numbers, examples, images):
                record = _record(source, number, example, inspected, spec, convert, report, f"{where} example {number}")
                records += [record] if record is not None else []
    return records, report


def _inspect(data: bytes, channels: int) -> tuple[tuple[int, int], list[str]] | DecodeError:
    """The image's (height, width) and the conversions it takes, or why it cannot be decoded; no pixels kept."""
    try:
        image, conversions = decode_image(data, channels)
    except DecodeError as error:
        return error
    return image.shape[:2], conversions


def _record(source, number, example, inspected, spec, convert, report, where) -> dict | None:
    """The index's record of a verified example, or None when it is skipped (the report says why)."""
    if isinstance(inspected, DecodeError):
        report.skip(inspected.reason, where, inspected.detail)
        return None
    size, conversions = inspected
    targets = convert(example, size, report, where)
    if targets is None:
        return None
    report.converted.update(conversions)
    report.kept += 1
    return _index_record(source, number, size, spec, convert, targets)


def _index_record(source, number, size, spec, convert, targets) -> dict:
    """The record of an example kept, its mask (segmentation) left to be read by the loader."""
    if isinstance(convert, MaskRule):
        targets["mask"] = LazyItem((source, number, convert), mask_of_example)
    return {"image": Example(source, number, size, spec), **targets}


# ---- the cache of a split's verified index -------------------------------------------------------------


@dataclass
class SplitReport(VerificationReport):
    """One split's verification, kept apart so the cache can store it: its issues keep their kinds, and are logged
    when the split's report is added to the set's (add_to), whether verified now or taken from the cache."""

    kinds: list[str] = field(default_factory=list)
    COUNTERS = ("skipped", "converted", "findings")

    def issue(self, kind: str, message: str) -> None:
        self.kinds.append(kind)
        self.issues.append(message)

    def add_to(self, report: VerificationReport) -> None:
        report.kept += self.kept
        for name in self.COUNTERS:
            getattr(report, name).update(getattr(self, name))
        for kind, message in zip(self.kinds, self.issues):
            report.issue(kind, message)

    def to_json(self, examples: int) -> str:
        counters = {name: getattr(self, name) for name in self.COUNTERS}
        return json.dumps({"examples": examples, "kept": self.kept, **counters, "issues": [self.kinds, self.issues]})

    @classmethod
    def from_json(cls, text: str, where: str) -> tuple[SplitReport, int]:
        """(the report, the number of examples it is about)."""
        content = json.loads(text)
        report = cls("tfds", where, kept=int(content["kept"]), kinds=list(content["issues"][0]))
        for name in cls.COUNTERS:
            getattr(report, name).update({str(k): int(n) for k, n in content[name].items()})
        report.issues.extend(content["issues"][1])
        if len(report.kinds) != len(report.issues):
            raise ValueError("issues and their kinds differ in number")
        return report, int(content["examples"])


class IndexCache:
    """A split's verified index (each kept example's number, image size and targets) and its report, in one npz
    file in $VISIONKIT_CACHE_DIR/verify/tfds named by a hash of all they depend on: the prepared files' paths,
    sizes and modification times, the split, the image feature, the channels and the target converter. A cache
    that cannot be read or written is a warning, and the split is verified as if there were none; a cache folder
    inside the data directory is refused, as for files."""

    VERSION = 1  # of the file's content; a change of what it stores or of how records are built bumps it

    def __init__(self, source: Examples, spec: FileSpec, convert: Converter, where: str, data_dir: Path):
        self.source, self.spec, self.convert, self.where = source, spec, convert, where
        directory = cache_directory_outside(data_dir.resolve()) / "tfds"
        key = [self.VERSION, _file_stamps(Path(source.directory)), source.split, source.image_key, spec.channels]
        digest = hashlib.sha256(json.dumps([*key, repr(convert), where]).encode()).hexdigest()[:32]
        self.file = directory / f"{digest}.npz"

    def read(self, count: int) -> tuple[list[dict], SplitReport] | None:
        """The records and the report stored for this split of `count` examples; None when there are none."""
        try:
            with np.load(self.file, allow_pickle=False) as content:
                arrays = {name: content[name] for name in content.files}
            report, examples = SplitReport.from_json(str(arrays.pop("report")), self.where)
            if examples != count:
                raise ValueError(f"{examples} examples stored, the split has {count}")
            return self._records(arrays), report
        except (FileNotFoundError, NotADirectoryError):  # nothing stored yet (or no cache directory to hold it)
            return None
        except Exception as error:  # noqa: BLE001  (a damaged file fails in many ways; none may stop a load)
            logger.warning(f"data=tfds: index cache {self.file} unreadable ({error!r}); verifying the split anew")
            return None

    def write(self, records: list[dict], report: SplitReport, count: int) -> None:
        try:
            _write_atomically(self.file, {"report": np.array(report.to_json(count)), **_columns(records)})
        except OSError as error:
            logger.warning(f"data=tfds: index cache not written ({error}); the next load verifies again")

    def _records(self, arrays: dict[str, np.ndarray]) -> list[dict]:
        numbers, sizes = arrays.pop("number"), arrays.pop("original_size")
        targets = {key: _per_example(arrays, key) for key in _stored_targets(arrays)}
        if any(len(values) != len(numbers) for values in targets.values()) or sizes.shape != (len(numbers), 2):
            raise ValueError("columns of differing lengths")
        return [
            _index_record(
                self.source, int(n), (int(h), int(w)), self.spec, self.convert, {k: v[i] for k, v in targets.items()}
            )
            for i, (n, (h, w)) in enumerate(zip(numbers, sizes))
        ]


def _file_stamps(directory: Path) -> list[tuple[str, int, int]]:
    """(path, size, modification time) of each file of a prepared set: what its content is known by."""
    return [(str(f), stat.st_size, stat.st_mtime_ns) for f in sorted(directory.iterdir()) for stat in [f.stat()]]


def _columns(records: list[dict]) -> dict[str, np.ndarray]:
    """The records as arrays: a target with a count per example (boxes) concatenated, its counts beside it."""
    columns = {
        "number": np.array([r["image"].number for r in records], np.int64),
        "original_size": np.array([r["image"].original_size for r in records], np.int64).reshape(-1, 2),
    }
    stored = [k for k, v in records[0].items() if k != "image" and not isinstance(v, LazyItem)] if records else []
    for key in stored:  # a mask is read again by the loader (LazyItem), not stored
        values = [np.asarray(r[key]) for r in records]
        if values[0].ndim:
            columns[f"count.{key}"] = np.array([len(v) for v in values], np.int64)
        columns[f"target.{key}"] = np.concatenate(values) if values[0].ndim else np.stack(values)
    return columns


def _stored_targets(arrays: dict[str, np.ndarray]) -> list[str]:
    return [name.removeprefix("target.") for name in arrays if name.startswith("target.")]


def _per_example(arrays: dict[str, np.ndarray], key: str) -> list:
    values, counts = arrays[f"target.{key}"], arrays.get(f"count.{key}")
    return list(values) if counts is None else np.split(values, np.cumsum(counts)[:-1])


def _write_atomically(file: Path, arrays: dict[str, np.ndarray]) -> None:
    """A concurrent reader sees the old file or the new one, never a part of it."""
    file.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=file.parent, suffix=".tmp", delete=False)
    try:
        with handle:
            np.savez(handle, **arrays)
        os.replace(handle.name, file)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
