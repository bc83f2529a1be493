"""Decoding user images into the sample contract: uint8 HxWxC with the configured channels and size.

JPEGs are decoded by libjpeg-turbo through simplejpeg: the fastest decoder measured here
(benchmarks/jpeg_decoders.py), and the only one that takes "at least this size" and picks the DCT-domain
reduction itself. OpenCV decodes every other format (fast, and 16-bit aware with IMREAD_UNCHANGED) and
the JPEGs libjpeg-turbo reports errors in; Pillow decodes the palette and CMYK modes, whose pixel values
need its colour conversion, and is the strict judge of integrity: OpenCV returns a picture for some
truncated files, Pillow raises "image file is truncated". No decoder here applies EXIF orientation, so
the header's size is the decoded size.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import cv2
import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

from visionkit.errors import UserError

PILLOW_MODES = {"P": "palette", "PA": "palette", "CMYK": "cmyk"}  # decoded by Pillow; the conversion kind
MASK_MODES = ("L", "P", "1", "I", "I;16", "I;16B", "I;16L")  # single-channel modes that hold class indices
JPEG_START = b"\xff\xd8\xff"  # SOI marker and the first marker's prefix
JPEG_COLOURSPACES = {"YCbCr": "RGB", "RGB": "RGB", "Gray": "GRAY"}  # decoded by libjpeg-turbo; the output space
# libjpeg-turbo's DCT-domain reductions that have SIMD code; its other M/8 scales decode slower than full size.
JPEG_REDUCTIONS = (8, 4, 2)


class DecodeError(Exception):
    """A file that cannot be used: `reason` is the report's key, `detail` the human-readable why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def image_size_pair(image_size: int | Sequence[int]) -> tuple[int, int]:
    """data.image_size as (height, width): an int for square images or [height, width]."""
    pair = [image_size] * 2 if isinstance(image_size, int) and not isinstance(image_size, bool) else image_size
    if (
        not isinstance(pair, (list, tuple))
        or len(pair) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair)
    ):
        raise UserError(f"data.image_size must be a positive int or [height, width], received {image_size!r}")
    return int(pair[0]), int(pair[1])


def check_channels(channels: int) -> int:
    if channels not in (1, 3):
        raise UserError(f"data.channels must be 1 or 3, received {channels}")
    return channels


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def check_integrity(data: bytes) -> None:
    """Decode fully with Pillow, which refuses truncated data and, before allocating anything, headers that claim
    more than Image.MAX_IMAGE_PIXELS (a decompression bomb: a few bytes that would decode to gigabytes); raise
    DecodeError when it fails."""
    if not data:
        raise DecodeError("empty", "the file has 0 bytes")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except UnidentifiedImageError:
        return  # a format Pillow does not read: OpenCV's decoder is the only judge
    except Image.DecompressionBombError as error:
        raise DecodeError("too_large", _first_line(error)) from None
    except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError... for broken files
        raise DecodeError("truncated" if "truncated" in str(error).lower() else "corrupt", _first_line(error)) from None


def _pillow_header(data: bytes) -> tuple[str, tuple[int, int]] | None:
    """Pillow's mode and the (height, width) of an encoded image, from its header only."""
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            return image.mode, (image.height, image.width)
    except Exception:  # noqa: BLE001  (not a format Pillow reads; OpenCV decides)
        return None


def image_size_of(data: bytes) -> tuple[int, int]:
    """(height, width) of an encoded image without decoding its pixels (a format only OpenCV reads is decoded)."""
    header = _pillow_header(data)
    if header is not None:
        return header[1]
    array = _opencv_decode(data)
    return int(array.shape[0]), int(array.shape[1])


def _opencv_decode(data: bytes) -> np.ndarray:
    """OpenCV's decode of any format it reads, as stored (BGR order, 8 or 16 bits); DecodeError when it cannot:
    OpenCV returns None for most broken files but raises for some (an empty buffer, a header it rejects)."""
    if not data:
        raise DecodeError("empty", "the file has 0 bytes")
    try:
        array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as error:
        raise DecodeError("corrupt", f"not a decodable image ({_first_line(error)})") from None
    if array is None:
        raise DecodeError("corrupt", "not a decodable image")
    return array


def jpeg_reduction(original_size: tuple[int, int], at_least: tuple[int, int] | None) -> int:
    """The largest DCT-domain reduction (8, 4 or 2; else 1) whose decoded size, which libjpeg rounds up,
    is still at least `at_least` (h, w). Images under 8 pixels are not reduced: from 8 up, every M/8 scale
    below 1/f gives fewer pixels than 1/f, so asking libjpeg-turbo for that size selects exactly 1/f."""
    if at_least is None or min(original_size) < 8:
        return 1
    for factor in JPEG_REDUCTIONS:
        if all(-(-side // factor) >= need for side, need in zip(original_size, at_least)):
            return factor
    return 1


def _decode_jpeg(data: bytes, at_least: tuple[int, int] | None) -> np.ndarray | None:
    """Pixels of a JPEG by libjpeg-turbo, reduced where at_least allows; None for what the general path
    handles: CMYK and YCCK (Pillow's conversion) and files with errors (OpenCV decodes or refuses them, as
    before, and check_integrity judges them)."""
    try:
        height, width, colourspace, _ = simplejpeg.decode_jpeg_header(data)
        if colourspace not in JPEG_COLOURSPACES:
            return None
        factor = jpeg_reduction((height, width), at_least)
        smallest = {} if factor == 1 else {"min_height": -(-height // factor), "min_width": -(-width // factor)}
        return simplejpeg.decode_jpeg(data, colorspace=JPEG_COLOURSPACES[colourspace], **smallest)
    except ValueError:  # simplejpeg's one error type: corrupt, truncated, or an unsupported variant
        return None


def decode_image(
    data: bytes, channels: int, *, at_least: tuple[int, int] | None = None
) -> tuple[np.ndarray, list[str]]:
    """uint8 HxWxC RGB (or grey) pixels of an encoded image, and the conversions it took. A JPEG comes
    at 1/2, 1/4 or 1/8 of its size when that is still at least `at_least` (h, w): the reduced inverse
    DCT skips the detail that resizing to that size would average away, at a fraction of the work."""
    array = _decode_jpeg(data, at_least) if data[:3] == JPEG_START else None
    if array is not None:
        conversions = []
    else:
        array, conversions = _decode_any(data)
    array, more = to_channels(array, channels)
    return array, conversions + more


def _decode_any(data: bytes) -> tuple[np.ndarray, list[str]]:
    """Pixels of any format OpenCV or Pillow reads, at full size, and Pillow's conversion if it took one."""
    header = _pillow_header(data)
    mode = header[0] if header else None
    if mode in PILLOW_MODES:
        with Image.open(io.BytesIO(data)) as image:
            alpha = mode == "PA" or "transparency" in image.info
            array = np.asarray(image.convert("RGBA" if alpha else "RGB"))
        return array, [PILLOW_MODES[mode]]
    array = _opencv_decode(data)
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB if array.shape[-1] == 3 else cv2.COLOR_BGRA2RGBA)
    return array, []


def to_channels(array: np.ndarray, channels: int) -> tuple[np.ndarray, list[str]]:
    """8-bit pixels with `channels` channels from grey/RGB(A), 8- or 16-bit pixels; alpha is dropped
    (as PIL's convert("RGB") and torchvision do). Returns the conversions made."""
    conversions = []
    if array.dtype == np.uint16:
        array = ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)  # rounds v * 255 / 65535
        conversions.append("16bit")
    elif array.dtype != np.uint8:
        raise DecodeError("unsupported", f"{array.dtype} pixels (8- and 16-bit images are supported)")
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[-1] in (2, 4):  # grey + alpha, RGB + alpha
        array = array[..., :-1]
        conversions.append("rgba")
    if array.shape[-1] == 1 and channels == 3:
        array = np.repeat(array, 3, axis=-1)
        conversions.append("grayscale")
    elif array.shape[-1] == 3 and channels == 1:
        array = cv2.cvtColor(np.ascontiguousarray(array), cv2.COLOR_RGB2GRAY)[..., None]
        conversions.append("to_grayscale")
    return np.ascontiguousarray(array), conversions


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """HxWxC image at (height, width): area averaging to shrink, bilinear to enlarge."""
    if image.shape[:2] == tuple(size):
        return image
    shrink = size[0] <= image.shape[0] and size[1] <= image.shape[1]
    resized = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return resized.reshape(size[0], size[1], image.shape[-1])


def resize_decoded(image: np.ndarray, original_size: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """`image`, decoded from a file of original_size at full size or at a DCT reduction (decode_image's
    at_least), at (height, width) `size`: what resizing the full-size decode would give, within a grey level.
    A reduced pixel covers exactly f x f of the file's, the last row and column less (libjpeg pads the edge
    blocks), so the image is resized at the file's scale times f and the excess cut: stretching it to `size`
    would shift its content by up to f - 1 of the file's pixels."""
    factor = decoded_reduction(original_size, image.shape[:2])
    if factor == 1:
        return resize_image(image, size)
    scale_y, scale_x = size[0] * factor / original_size[0], size[1] * factor / original_size[1]
    resized = cv2.resize(image, (0, 0), fx=scale_x, fy=scale_y, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(resized[: size[0], : size[1]]).reshape(size[0], size[1], image.shape[-1])


def decoded_reduction(original_size: tuple[int, int], decoded_size: tuple[int, int]) -> int:
    """The DCT reduction (1, 2, 4 or 8) an image of decoded_size was decoded at from a file of original_size;
    ValueError when it is none of them."""
    for factor in (1, *JPEG_REDUCTIONS):
        if all(-(-side // factor) == got for side, got in zip(original_size, decoded_size)):
            return factor
    raise ValueError(f"an image of {decoded_size} is no DCT reduction of a file of {original_size}")


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Class-index mask at (height, width) by nearest neighbour, which never invents a class."""
    if mask.shape[:2] == tuple(size):
        return mask
    return cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


def scale_boxes(boxes: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """Pixel xyxy boxes of an image of from_size (h, w) in the pixels of the image resized to to_size."""
    sy, sx = to_size[0] / from_size[0], to_size[1] / from_size[1]
    return (np.asarray(boxes, np.float32).reshape(-1, 4) * np.array([sx, sy, sx, sy], np.float32)).astype(np.float32)


def read_mask(data: bytes) -> np.ndarray:
    """Class indices of a mask file: a single-channel image (grey, palette indices, 16-bit) or an
    RGB image whose three channels are equal."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            mode, array = image.mode, np.asarray(image)
    except Exception as error:  # noqa: BLE001  (Pillow raises many kinds for broken files)
        raise DecodeError("mask_corrupt", _first_line(error)) from None
    if mode in MASK_MODES:
        return array.astype(np.int64)
    if mode == "RGB" and (array == array[..., :1]).all():
        return array[..., 0].astype(np.int64)
    raise DecodeError("mask_colour", f"mode {mode} with differing channels holds colours, not class indices")
