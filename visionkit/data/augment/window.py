"""Decoding only what a leading RandomResizedCrop keeps (augment.full_resolution, augment=imagenet).

Training then cuts 8-100 % of each photo and resizes it to the model's input. The crop is drawn before the
file is decoded: from the size the index holds (the size the decoded image has), by RandomResizedCrop's own
sampling code with the generators Albumentations would use for the sample, and after the one draw Compose
makes first; so a sample gets the crop, and the later transforms the draws, it gets on the decoded photo.
A JPEG whose crop is at least twice the output in both directions is decoded at 1/2, 1/4 or 1/8 of its size
(libjpeg-turbo's reduced inverse DCT, which averages each reduced pixel over its f x f block), and the crop
resampled from it in the file's geometry: a 12-megapixel photo costs a fraction of its full decode. Below
that it is decoded whole and cropped, exactly as without this path.

Only where the result is the same: a Compose that always runs, whose first transform is a RandomResizedCrop
that always applies, on a sample without mask or boxes. Anything else is decoded whole first.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np

from visionkit.data.images import JPEG_REDUCTIONS, decoded_reduction
from visionkit.data.index import EncodedImage

# Interpolations cv2.warpAffine resamples with: those a reduced decode can be cropped and resized by.
WARPED = (cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_LANCZOS4)


def leading_crop(compose: A.Compose, sample: dict[str, Any]) -> A.RandomResizedCrop | None:
    """The Compose's first transform when this path gives the sample what the Compose would, else None."""
    first = compose.transforms[0] if compose.transforms else None
    if type(first) is not A.RandomResizedCrop or first.p < 1 or compose.p < 1:
        return None
    return None if sample.keys() & {"mask", "boxes"} else first


def augment_undecoded(compose: A.Compose, crop: A.RandomResizedCrop, image: EncodedImage) -> np.ndarray:
    """The image `compose` makes of the file, its generators restarted at the sample's state; `crop` is
    leading_crop's answer."""
    compose.py_random.random()  # Compose.__call__'s draw of whether to run (it always does: p is 1)
    coords = crop.get_params_dependent_on_data({"shape": image.shape}, {})["crop_coords"]
    factor = reduction(crop, coords)
    height, width = image.shape[:2]
    decoded = image.decode(None if factor == 1 else (-(-height // factor), -(-width // factor)))
    factor = decoded_reduction((height, width), decoded.shape[:2])  # a format without reductions comes whole
    cropped = crop.apply(decoded, crop_coords=coords) if factor == 1 else resampled(decoded, factor, coords, crop)
    data = {"image": cropped}
    for transform in compose.transforms[1:]:  # as Compose runs them: for an image alone, one after the other
        data = transform(**data)
    return data["image"]


def reduction(crop: A.RandomResizedCrop, coords: tuple[int, int, int, int]) -> int:
    """The largest DCT reduction that leaves the crop (x1, y1, x2, y2) at least crop.size; 1 where the crop
    resizes otherwise than by an interpolation warpAffine has."""
    if crop.interpolation not in WARPED or crop.area_for_downscale is not None:
        return 1
    x1, y1, x2, y2 = coords
    out_height, out_width = crop.size
    fits = [f for f in JPEG_REDUCTIONS if y2 - y1 >= f * out_height and x2 - x1 >= f * out_width]
    return max(fits, default=1)


def resampled(
    decoded: np.ndarray, factor: int, coords: tuple[int, int, int, int], crop: A.RandomResizedCrop
) -> np.ndarray:
    """The crop (x1, y1, x2, y2, in the file's pixels) resized to crop.size from an image decoded at 1/factor:
    each output pixel samples the point cv2.resize of the full-size crop samples. A reduced pixel k covers
    the file's pixels [k f, (k + 1) f), so file coordinate x is reduced coordinate (x + 0.5) / f - 0.5."""
    x1, y1, x2, y2 = coords
    out_height, out_width = crop.size
    step_x, step_y = (x2 - x1) / out_width, (y2 - y1) / out_height  # file pixels per output pixel
    to_reduced = np.array(
        [
            [step_x / factor, 0.0, (x1 + 0.5 * step_x) / factor - 0.5],
            [0.0, step_y / factor, (y1 + 0.5 * step_y) / factor - 0.5],
        ]
    )
    flags = crop.interpolation | cv2.WARP_INVERSE_MAP
    warped = cv2.warpAffine(decoded, to_reduced, (out_width, out_height), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    return warped.reshape(out_height, out_width, decoded.shape[-1])
