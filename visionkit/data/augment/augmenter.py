"""Albumentations pipelines declared as data: a list of {name: <transform class>, <its arguments>}.

A sample's `mask` (class indices) and `boxes` (pixel xyxy, with their `classes`) go through the same
geometric transforms as its `image`: masks with nearest-neighbour interpolation and IGNORE_INDEX
where a transform creates new border pixels, boxes clipped to the image and dropped when too little
of them stays visible. Augmentation is seeded by (seed, epoch, batch, position in the batch): a run is
reproducible whatever the number of loader workers, and a worker that augments some rows of a batch
(its shard under several training processes) gets exactly those rows of the whole batch's result.

Lists made only of transforms with a batched equivalent (batched.py: Affine, RandomBrightnessContrast
and the flips) run a batch at a time, about eight times cheaper on small images; `batched=False` keeps
one Albumentations call per sample.
"""

from __future__ import annotations

import inspect
import random
import threading
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np

from visionkit.data.augment.batched import BatchedPipeline
from visionkit.data.augment.transforms import TRANSFORMS
from visionkit.data.augment.window import augment_undecoded, leading_crop
from visionkit.data.core import IGNORE_INDEX
from visionkit.data.index import EncodedImage
from visionkit.errors import UserError
from visionkit.registry import unknown_name_message

# Image size the specs are checked with before the first sample arrives (it fills `size: null`).
CHECK_SIZE = (64, 64)
BASE_CLASSES = {A.BasicTransform, A.DualTransform, A.ImageOnlyTransform, A.Transform3D}  # not transforms themselves


def _is_transform(found: Any) -> bool:
    return isinstance(found, type) and issubclass(found, A.BasicTransform) and found not in BASE_CLASSES


def _transform_class(name: Any, where: str) -> type:
    if isinstance(name, str):
        found = TRANSFORMS.get(name) if name in TRANSFORMS else getattr(A, name, None)
        if _is_transform(found):
            return found
    choices = [*TRANSFORMS.names(), *(n for n in dir(A) if _is_transform(getattr(A, n)))]
    raise UserError(f"{where}: " + unknown_name_message("Albumentations transform", name, choices))


def _transform(spec: Mapping[str, Any], position: int, image_size: tuple[int, int]) -> A.BasicTransform:
    spec = dict(spec)
    name = spec.pop("name", None)
    where = f"augment.transforms[{position}]"
    cls = _transform_class(name, where)
    if "size" in spec and spec["size"] is None:  # `size: null`: the image's own size, e.g. crop and resize back
        spec["size"] = image_size
    parameters = inspect.signature(cls.__init__).parameters
    if "fill_mask" not in spec and {"fill_mask", "border_mode"} <= parameters.keys():
        spec["fill_mask"] = IGNORE_INDEX  # pixels moved in from outside the image have no label
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            transform = cls(**spec)
    except Exception as error:  # pydantic and TypeError messages name the bad argument
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{where} ({name}): {first_line}") from None
    # Albumentations only warns about unknown arguments; a silently ignored typo is worse than an error.
    for warning in caught:
        if "not valid for transform" in str(warning.message):
            raise UserError(f"{where} ({name}): {warning.message}")
    return transform


def _undecoded(sample: dict[str, Any]) -> bool:
    return isinstance(sample["image"], EncodedImage)


def _size(image: np.ndarray) -> str:
    return "x".join(str(d) for d in image.shape)


def _apply(compose: A.Compose, sample: dict[str, Any], output_size: tuple[int, int] | None = None) -> dict[str, Any]:
    image = sample["image"]
    if _undecoded(sample):  # full resolution: decoded here, only the first crop's window if it can be
        crop = leading_crop(compose, sample)
        if crop is not None:
            return {**sample, "image": _checked(image, augment_undecoded(compose, crop, image), output_size)}
        sample = {**sample, "image": image.decode()}
    inputs = {"image": sample["image"]}
    if "mask" in sample:
        inputs["mask"] = sample["mask"]
    if "boxes" in sample:
        inputs["bboxes"] = np.asarray(sample["boxes"], np.float32).reshape(-1, 4)
        inputs["classes"] = np.asarray(sample["classes"], np.int64).reshape(-1)
        inputs["difficult"] = np.asarray(sample.get("difficult", np.zeros(len(inputs["classes"]))), bool).reshape(-1)
    result = compose(**inputs)
    augmented = {**sample, "image": _checked(sample["image"], result["image"], output_size)}
    if "mask" in sample:
        augmented["mask"] = result["mask"].astype(np.uint8, copy=False)
    if "boxes" in sample:  # kept boxes only; [0, 4] when every box left the image
        augmented["boxes"] = np.asarray(result["bboxes"], np.float32).reshape(-1, 4)
        augmented["classes"] = np.asarray(result["classes"], np.int64).reshape(-1)
        if "difficult" in sample:  # Pascal VOC's flags follow their boxes
            augmented["difficult"] = np.asarray(result["difficult"], bool).reshape(-1)
    return augmented


def _checked(image, result: np.ndarray, output_size: tuple[int, int] | None) -> np.ndarray:
    """The transforms' result for `image`, which must come out at output_size (default: its own size)."""
    expected = image.shape if output_size is None else (*output_size, *image.shape[2:])
    if result.shape != expected:  # a batch needs one image size, and the model was built for it
        raise UserError(
            f"augment: the transforms turned a {_size(image)} image into {_size(result)} (e.g. RandomRotate90 "
            f"on a non-square image); follow them with a resize back to the input size, e.g. "
            f"{{name: RandomResizedCrop, size: null}}"
        )
    return result


def _restart_generators(compose: A.Compose, high: int, low: int, increment: int, python: int) -> None:
    """Restarts the generators the Compose shares with its transforms at a sample's own state, in place,
    from four random 64-bit words: 6 µs, where compose.set_random_seed takes 40 (it makes a new pair
    of generators for the Compose and for each transform)."""
    compose.random_generator.bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": high << 64 | low, "inc": increment | 1},
        "has_uint32": 0,
        "uinteger": 0,
    }
    compose.py_random.seed(python)


def _batch_seed(stream: tuple[int, int, int]) -> int:
    """The batched pipeline's seed for the batch of (seed, epoch, batch)."""
    return int(np.random.SeedSequence(stream).generate_state(1)[0])


class Augmenter:
    """Applies the transforms to samples. Each thread gets its own Composes, reseeded for every sample.

    min_visibility: a transformed box is kept when at least this share of its area is still in the image.
    min_area: ... and when its area in pixels is at least this.
    batched: augment a batch at once when every transform can be (same distributions, far less Python).
    """

    def __init__(
        self,
        transforms: Iterable[Mapping[str, Any]],
        seed: int = 0,
        *,
        min_visibility: float = 0.0,
        min_area: float = 0.0,
        batched: bool = True,
        output_size: tuple[int, int] | None = None,
    ):
        if not 0.0 <= min_visibility <= 1.0:
            raise UserError(f"augment.min_visibility must be between 0 and 1, received {min_visibility!r}")
        if min_area < 0:
            raise UserError(f"augment.min_area must be at least 0, received {min_area!r}")
        if not isinstance(batched, bool):
            raise UserError(f"augment.batched must be true or false, received {batched!r}")
        self.specs = [dict(t) for t in transforms]
        self.seed = seed
        self.min_visibility = min_visibility
        self.min_area = min_area
        self.batched = batched
        # Set when samples arrive at their files' own sizes (augment.full_resolution): the size the transforms
        # must end at, which `size: null` means; else they keep the size samples arrive at.
        self.output_size = None if output_size is None else tuple(output_size)
        checked = self._compose(CHECK_SIZE, with_boxes=True)  # fail early on a bad spec
        # Built from the transforms' settings alone; stateless (each batch brings its own generator),
        # so the threads share it.
        # The batched transforms keep an image's size: samples of their own sizes need Albumentations.
        self._pipeline = BatchedPipeline.build(checked) if batched and output_size is None else None
        self._local = threading.local()

    def _compose(self, image_size: tuple[int, int], with_boxes: bool) -> A.Compose:
        boxes = (
            A.BboxParams(
                format="pascal_voc",
                label_fields=["classes", "difficult"],
                min_visibility=self.min_visibility,
                min_area=self.min_area,
                clip=True,
                filter_invalid_bboxes=True,
            )
            if with_boxes
            else None
        )
        size = self.output_size or image_size
        transforms = [_transform(spec, i, size) for i, spec in enumerate(self.specs)]
        with warnings.catch_warnings():  # colour-only lists leave boxes alone, as they should
            warnings.filterwarnings("ignore", "Got processor for bboxes, but no transform to process it")
            # Class indices must never be blended: nearest neighbour for every mask, whatever a spec says.
            return A.Compose(transforms, bbox_params=boxes, mask_interpolation=cv2.INTER_NEAREST)

    def _thread_compose(self, key: tuple[tuple[int, int], bool]) -> A.Compose:
        composes = self._local.__dict__.setdefault("composes", {})
        if key not in composes:
            composes[key] = self._compose(*key)
            # One generator pair for the Compose and its transforms, restarted for every sample.
            composes[key].set_random_state(np.random.default_rng(), random.Random())
        return composes[key]

    def __call__(
        self,
        samples: list[dict[str, Any]],
        *,
        epoch: int,
        batch: int,
        positions: Sequence[int] | None = None,
        batch_length: int | None = None,
    ) -> list[dict[str, Any]]:
        """The samples augmented, as rows `positions` (default 0, 1, ...) of batch `batch` of `epoch`, a
        batch of `batch_length` rows (default: the samples'). A row's augmentation depends on (seed,
        epoch, batch, position) alone, so any rows of a batch come out as they do in the whole batch."""
        positions = np.arange(len(samples)) if positions is None else np.asarray(positions, dtype=np.int64)
        batch_length = len(samples) if batch_length is None else batch_length
        if len(positions) != len(samples) or np.any((positions < 0) | (positions >= batch_length)):
            raise ValueError(
                f"positions must give each of the {len(samples)} samples a row of the batch of {batch_length}, "
                f"received {positions.tolist()}"
            )
        stream = (self.seed, epoch, batch)
        augmented = self._augment_at_once(samples, stream, positions, batch_length)
        return augmented if augmented is not None else self._augment_one_by_one(samples, stream, positions)

    def _augment_at_once(
        self, samples: list[dict[str, Any]], stream: tuple[int, int, int], positions: np.ndarray, batch_length: int
    ) -> list[dict[str, Any]] | None:
        """The batched path, or None when the transforms or the samples need Albumentations itself
        (boxes, images of several sizes or types, masks of another size). The parameters are drawn for
        the whole batch, so the rows at hand must take the path the whole batch takes: they do where it
        matters, since a batch whose rows differ in size or type cannot be stacked for the model anyway."""
        if self._pipeline is None or not samples or any("boxes" in s or _undecoded(s) for s in samples):
            return None
        images = [s["image"] for s in samples]
        masks = [s.get("mask") for s in samples]
        first, with_masks = images[0], masks[0] is not None
        if not self.augments_at_once(first.shape, first.dtype, masks[0].shape if with_masks else None):
            return None
        if any(image.shape != first.shape or image.dtype != first.dtype for image in images):
            return None
        if any((mask is not None) != with_masks or (with_masks and mask.shape != masks[0].shape) for mask in masks):
            return None
        images = np.stack(images)  # copies: the samples' arrays stay as they were
        masks = np.stack(masks).astype(np.uint8, copy=False) if with_masks else None
        self._pipeline(images, masks, _batch_seed(stream), positions, batch_length)
        if not with_masks:
            return [{**sample, "image": image} for sample, image in zip(samples, images)]
        return [{**sample, "image": image, "mask": mask} for sample, image, mask in zip(samples, images, masks)]

    def augments_at_once(
        self, image_shape: tuple[int, ...], dtype: np.dtype, mask_shape: tuple[int, ...] | None = None
    ) -> bool:
        """Whether images of this shape ([H, W(, C)]) and type, with masks of `mask_shape` ([H, W]) when
        given and without boxes, are augmented a batch at once (augment_arrays)."""
        return (
            self._pipeline is not None
            and dtype == np.uint8
            and (len(image_shape) == 2 or image_shape[2] <= 4)  # OpenCV warps up to 4 channels at once
            and (mask_shape is None or tuple(mask_shape) == tuple(image_shape[:2]))
        )

    def augment_arrays(
        self,
        images: np.ndarray,
        masks: np.ndarray | None,
        *,
        epoch: int,
        batch: int,
        positions: np.ndarray,
        batch_length: int,
    ) -> None:
        """Augments images [n, H, W(, C)] and uint8 masks [n, H, W] (or None) in place, as __call__ augments
        such samples at rows `positions` of batch `batch` of `epoch`; only where augments_at_once says so."""
        self._pipeline(images, masks, _batch_seed((self.seed, epoch, batch)), positions, batch_length)

    def _augment_one_by_one(
        self, samples: list[dict[str, Any]], stream: tuple[int, int, int], positions: np.ndarray
    ) -> list[dict[str, Any]]:
        if not samples:
            return []
        # Four words per position, for positions 0 to the last here: a position's words are the same
        # however many are generated.
        words = np.random.SeedSequence(stream).generate_state(4 * (int(positions.max()) + 1), np.uint64)
        words = words.reshape(-1, 4).tolist()
        augmented = []
        for sample, position in zip(samples, positions):
            compose = self._thread_compose((tuple(sample["image"].shape[:2]), "boxes" in sample))
            _restart_generators(compose, *words[position])
            augmented.append(_apply(compose, sample, self.output_size))
        return augmented

    def __getstate__(self):  # worker processes build their own thread-local Composes
        return {
            "specs": self.specs,
            "seed": self.seed,
            "min_visibility": self.min_visibility,
            "min_area": self.min_area,
            "batched": self.batched,
            "output_size": self.output_size,
        }

    def __setstate__(self, state):
        self.__init__(state.pop("specs"), **state)


def build_augmenter(
    transforms: Iterable[Mapping[str, Any]] | None,
    seed: int = 0,
    *,
    min_visibility: float = 0.0,
    min_area: float = 0.0,
    batched: bool = True,
    output_size: tuple[int, int] | None = None,
) -> Augmenter | None:
    """The Augmenter of an `augment` config section (`build_augmenter(**section, seed=...)`); None
    when it has no transforms."""
    transforms = list(transforms or [])
    options = dict(min_visibility=min_visibility, min_area=min_area, batched=batched, output_size=output_size)
    return Augmenter(transforms, seed, **options) if transforms else None
