"""Image decoding: JPEGs by libjpeg-turbo at full or reduced size, every other format and mode as before,
and image sizes read from headers alone."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from visionkit.data.images import (
    DecodeError,
    check_integrity,
    decode_image,
    image_size_of,
    jpeg_reduction,
    resize_decoded,
    resize_image,
)


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)


def encode(image: np.ndarray | Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buffer, fmt, **options)
    return buffer.getvalue()


def opencv_rgb(data: bytes) -> np.ndarray:
    """The decode every JPEG took before libjpeg-turbo was called directly: OpenCV, BGR -> RGB."""
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize(
    ("original", "at_least", "factor"),
    [
        ((375, 500), (224, 224), 1),  # 375 / 2 < 224
        ((375, 500), (256, 341), 1),  # ImageNet evaluation at 224: Resize(256) first
        ((375, 500), (94, 125), 4),  # 1/4 rounds up to 94 x 125, exactly enough
        ((375, 500), (95, 125), 2),
        ((375, 500), (64, 64), 4),
        ((375, 500), (47, 63), 8),
        ((101, 131), (13, 17), 8),
        ((101, 131), (14, 17), 4),
        ((375, 500), None, 1),
        ((6, 400), (1, 1), 1),  # under 8 pixels on a side: never reduced
    ],
)
def test_the_reduction_is_the_largest_that_keeps_at_least_the_size(original, at_least, factor):
    assert jpeg_reduction(original, at_least) == factor


@pytest.mark.parametrize(
    ("original", "at_least"), [((101, 131), (13, 17)), ((101, 131), (14, 17)), ((64, 48), (30, 20))]
)
def test_a_reduced_jpeg_decode_has_the_size_libjpeg_rounds_up_to(original, at_least):
    data = encode(noise(*original), "JPEG", quality=90)
    factor = jpeg_reduction(original, at_least)
    image, conversions = decode_image(data, 3, at_least=at_least)
    assert factor > 1 and conversions == []
    assert image.shape == (-(-original[0] // factor), -(-original[1] // factor), 3)
    assert image.shape[0] >= at_least[0] and image.shape[1] >= at_least[1]
    grey, _ = decode_image(data, 1, at_least=at_least)
    assert grey.shape == (*image.shape[:2], 1)


def test_jpegs_decode_to_the_pixels_opencv_gave():
    colour = encode(noise(37, 53, 1), "JPEG", quality=90)
    progressive = encode(noise(37, 53, 2), "JPEG", quality=80, progressive=True)
    for data in (colour, progressive):
        image, conversions = decode_image(data, 3)
        assert conversions == [] and image.dtype == np.uint8
        np.testing.assert_array_equal(image, opencv_rgb(data))
    grey, conversions = decode_image(colour, 1)
    assert conversions == ["to_grayscale"]
    np.testing.assert_array_equal(grey[..., 0], cv2.cvtColor(opencv_rgb(colour), cv2.COLOR_RGB2GRAY))
    mono = encode(noise(37, 53, 3)[..., 0], "JPEG")
    image, conversions = decode_image(mono, 3)
    assert conversions == ["grayscale"] and image.shape == (37, 53, 3)
    np.testing.assert_array_equal(image[..., 1], cv2.imdecode(np.frombuffer(mono, np.uint8), cv2.IMREAD_UNCHANGED))


def test_other_formats_and_jpegs_libjpeg_turbo_refuses_take_the_general_path():
    png = encode(noise(40, 50, 4), "PNG")
    image, conversions = decode_image(png, 3, at_least=(5, 5))  # no reduction outside JPEG
    assert conversions == [] and image.shape == (40, 50, 3)
    np.testing.assert_array_equal(image, noise(40, 50, 4))
    cmyk = encode(Image.fromarray(noise(40, 50, 5)).convert("CMYK"), "JPEG")
    image, conversions = decode_image(cmyk, 3, at_least=(5, 5))
    assert conversions == ["cmyk"] and image.shape == (40, 50, 3)
    truncated = encode(noise(40, 50, 6), "JPEG")[:-200]
    with pytest.raises(DecodeError, match="corrupt: not a decodable image"):
        decode_image(truncated, 3)  # what OpenCV says of it
    with pytest.raises(DecodeError, match="truncated"):
        check_integrity(truncated)  # and what verification reports
    with pytest.raises(DecodeError, match="corrupt: not a decodable image"):
        decode_image(b"\xff\xd8\xff but no JPEG after the marker", 3)


def test_the_header_size_is_the_decoded_size():
    rgb = noise(23, 31, 7)
    files = {
        "jpeg": encode(rgb, "JPEG"),
        "grey jpeg": encode(rgb[..., 0], "JPEG"),
        "cmyk jpeg": encode(Image.fromarray(rgb).convert("CMYK"), "JPEG"),
        "png": encode(rgb, "PNG"),
        "palette": encode(Image.fromarray(rgb).convert("P"), "PNG"),
        "16-bit": encode(Image.fromarray(rgb[..., 0].astype(np.uint16) * 257), "PNG"),
        "rgba webp": encode(Image.fromarray(rgb).convert("RGBA"), "WEBP"),
        "bmp": encode(rgb, "BMP"),
    }
    for name, data in files.items():
        assert image_size_of(data) == decode_image(data, 3)[0].shape[:2] == (23, 31), name
    radiance = cv2.imencode(".hdr", np.ones((23, 31, 3), np.float32))[1].tobytes()  # a format only OpenCV reads
    assert image_size_of(radiance) == (23, 31)
    with pytest.raises(DecodeError, match="corrupt: not a decodable image"):
        image_size_of(b"<html>404 Not Found</html>")


@pytest.mark.parametrize("channels", [1, 3])
def test_a_reduced_decode_resizes_onto_the_full_decodes_geometry(channels):
    """A square whose edges lie on the 8x8 block grid: its 1/8 decode holds the exact block averages, so
    resized at the reduction's scale it gives what the full decode gives; resized plainly to the size it
    does not, since 500 columns are 62.5 blocks and the last decoded column covers only 4 of them."""
    image = np.full((375, 500, 3), 40, np.uint8)
    image[96:296, 152:448] = 220
    data = encode(image, "JPEG", quality=95)
    original, size = (375, 500), (40, 40)
    full, _ = decode_image(data, channels)
    reduced, _ = decode_image(data, channels, at_least=size)
    assert reduced.shape[:2] == (47, 63)
    expected = resize_image(full, size).astype(np.int16)
    assert np.abs(resize_decoded(reduced, original, size) - expected).mean() < 0.05
    assert np.abs(resize_image(reduced, size) - expected).mean() > 1.0
    np.testing.assert_array_equal(resize_decoded(full, original, size), resize_image(full, size))
    with pytest.raises(ValueError, match="no DCT reduction"):
        resize_decoded(full[:100], original, size)
