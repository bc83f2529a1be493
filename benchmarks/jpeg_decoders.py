"""Which JPEG decoder is fastest on this machine? Photos of about 500x375 (the size of VOC and ImageNet
photos) decoded by OpenCV, Pillow, simplejpeg (libjpeg-turbo) and TensorFlow, side by side in one run.

    .venv/bin/python benchmarks/jpeg_decoders.py                    # 200 photos, 3 rounds
    .venv/bin/python benchmarks/jpeg_decoders.py --count 400 --rounds 7

The photos are generated in a temporary folder: smooth random colour fields plus sensor-like noise,
encoded at quality 90 with 4:2:0 chroma subsampling, as cameras and datasets store them. Printed:
1. images/s of decoding alone, full size, and the ratio to OpenCV (imdecode + BGR->RGB);
2. images/s of decode + resize (area averaging) to a target square, for "target 224" (no 1/2^k DCT
   reduction possible: 375 / 2 < 224) and "target 64" (1/4 possible), with each library's reduced-size
   decoding where it has one (OpenCV IMREAD_REDUCED_COLOR_N, Pillow draft, simplejpeg
   min_height/min_width, tf.io.decode_jpeg ratio), and the mean absolute difference in grey levels
   from OpenCV's full decode resized the same way. A reduced decode is resized by
   visionkit.data.images.resize_decoded, at the reduction's exact scale, as the pipeline does.
   simplejpeg is shown twice: reduced by 1/2, 1/4, 1/8 only (what decode_image does), and left to
   choose any of libjpeg-turbo's M/8 scales for min_height/min_width (5/8 for 224 here, which has
   no SIMD code);
3. each decoder with 1 thread and with 2 (a ThreadPoolExecutor, as the loader's thread workers).
Tables 1 and 2 count images per second of this process's CPU time (one thread: one core's
throughput, and far less disturbed by other jobs on a shared machine than the wall clock); table 3
counts wall-clock time, which is what threads change. Each figure is the median over rounds; within
a round the candidates alternate, so that a change of machine load hits all of them.
tf.io.decode_jpeg runs eagerly, one call per image: the per-op dispatch is part of its figure, as it
would be when called from a Python loader.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import simplejpeg  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from visionkit.data.images import decode_image, jpeg_reduction, resize_decoded, resize_image  # noqa: E402

# A decoder: (encoded bytes, original (h, w), target side or None for full size) -> uint8 HxWx3 RGB.
Decoder = Callable[[bytes, tuple[int, int], "int | None"], np.ndarray]


def reduction(original: tuple[int, int], target: int | None) -> int:
    """The largest 1/2^k DCT reduction whose decoded size still covers target x target."""
    return jpeg_reduction(original, None if target is None else (target, target))


def opencv_full(data, original, target):
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def opencv_rgb(data, original, target):
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)


OPENCV_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                  8: cv2.IMREAD_REDUCED_COLOR_8}  # fmt: skip


def opencv_reduced(data, original, target):
    flag = OPENCV_REDUCED[reduction(original, target)]
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), flag), cv2.COLOR_BGR2RGB)


def pillow_full(data, original, target):
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def pillow_draft(data, original, target):
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (target, target))  # the largest reduction that keeps both sides >= target
        return np.asarray(image.convert("RGB"))


def simplejpeg_full(data, original, target):
    return simplejpeg.decode_jpeg(data, colorspace="RGB")


def simplejpeg_any_scale(data, original, target):
    return simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=target, min_width=target)


def visionkit_decode(data, original, target):
    return decode_image(data, 3, at_least=None if target is None else (target, target))[0]


def tf_full(data, original, target):
    return tf.io.decode_jpeg(data, channels=3).numpy()


def tf_ratio(data, original, target):
    return tf.io.decode_jpeg(data, channels=3, ratio=reduction(original, target)).numpy()


FULL: dict[str, Decoder] = {
    "opencv": opencv_full,
    "opencv IMREAD_COLOR_RGB": opencv_rgb,
    "pillow": pillow_full,
    "simplejpeg": simplejpeg_full,
    "tf.io (eager)": tf_full,
    "visionkit decode_image": visionkit_decode,  # simplejpeg, at 1/2, 1/4 or 1/8 where the target allows
}
REDUCED: dict[str, Decoder] = {
    "opencv IMREAD_REDUCED": opencv_reduced,
    "pillow draft": pillow_draft,
    "simplejpeg any M/8 scale": simplejpeg_any_scale,
    "tf.io ratio (eager)": tf_ratio,
}


def photo(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A photo-like RGB image: a smooth random colour field (bicubic from 12x16) with fine noise."""
    coarse = rng.uniform(0, 255, (12, 16, 3)).astype(np.float32)
    smooth = cv2.resize(coarse, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
    return np.clip(smooth + rng.normal(0, 8, smooth.shape), 0, 255).astype(np.uint8)


def write_photos(folder: Path, count: int, size: tuple[int, int], seed: int) -> list[bytes]:
    """`count` JPEGs (quality 90) written into `folder`; returns their bytes, read back from disk."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        image = photo(rng, size)[..., ::-1]  # OpenCV encodes BGR
        cv2.imwrite(str(folder / f"{index:05d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return [path.read_bytes() for path in sorted(folder.glob("*.jpg"))]


def resized(image: np.ndarray, original: tuple[int, int], target: int | None) -> np.ndarray:
    """The decoded image at target x target: a 1/2^k reduction at its exact scale, any other size stretched."""
    if target is None:
        return image
    if image.shape[:2] in {(-(-original[0] // f), -(-original[1] // f)) for f in (1, 2, 4, 8)}:
        return resize_decoded(image, original, (target, target))
    return resize_image(image, (target, target))


def rate(decoder: Decoder, files: list[bytes], original, target: int | None, threads: int = 1, wall=False) -> float:
    """Images/s of decoding (and resizing to target x target) every file once: per second of wall-clock
    time, or of this process's CPU time (all its threads)."""

    def one(data: bytes) -> np.ndarray:
        return resized(decoder(data, original, target), original, target)

    clock = time.perf_counter if wall else time.process_time
    start = clock()
    if threads == 1:
        for data in files:
            one(data)
    else:
        with ThreadPoolExecutor(threads) as pool:
            for _ in pool.map(one, files, chunksize=8):
                pass
    return len(files) / (clock() - start)


def median_rates(runs: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Each run `rounds` times, alternating; the median of each."""
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():  # warm-up: imports, TensorFlow's first op, caches
        run()
    for _ in range(rounds):
        for name, run in runs.items():
            rates[name].append(run())
    return {name: statistics.median(values) for name, values in rates.items()}


def mean_difference(decoder: Decoder, files: list[bytes], original: tuple[int, int], target: int | None) -> float:
    """Mean absolute difference (grey levels) from OpenCV's full decode, both resized to target."""
    diffs = [
        np.abs(
            resized(decoder(d, original, target), original, target).astype(np.int16)
            - resized(opencv_full(d, original, None), original, target)
        ).mean()
        for d in files[:20]
    ]
    return float(np.mean(diffs))


def table(title: str, files, original, target, decoders: dict[str, Decoder], rounds: int) -> None:
    runs = {name: (lambda d=decoder: rate(d, files, original, target)) for name, decoder in decoders.items()}
    rates = median_rates(runs, rounds)
    print(f"\n{title}")
    print(f"  {'decoder':<24}{'images/s':>10}{'vs opencv':>11}{'decoded':>12}{'|diff|':>8}")
    for name, decoder in decoders.items():
        height, width = decoder(files[0], original, target).shape[:2]
        print(
            f"  {name:<24}{rates[name]:>10.0f}{rates[name] / rates['opencv']:>11.2f}{f'{height}x{width}':>12}"
            f"{mean_difference(decoder, files, original, target):>8.2f}"
        )


def thread_table(files, original, rounds: int) -> None:
    runs = {
        (name, threads): (lambda d=decoder, t=threads: rate(d, files, original, None, t, wall=True))
        for name, decoder in FULL.items()
        for threads in (1, 2)
    }
    rates = median_rates(runs, rounds)
    print("\nfull-size decoding with 1 and 2 threads (images/s of wall-clock time)")
    print(f"  {'decoder':<24}{'1 thread':>10}{'2 threads':>11}{'ratio':>8}")
    for name in FULL:
        one, two = rates[(name, 1)], rates[(name, 2)]
        print(f"  {name:<24}{one:>10.0f}{two:>11.0f}{two / one:>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200, help="photos to generate")
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3, help="timed passes over the photos per candidate")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cv2.setNumThreads(1)  # one core per figure; the thread table measures two
    original = (args.height, args.width)
    with tempfile.TemporaryDirectory() as folder:
        files = write_photos(Path(folder), args.count, original, args.seed)
    megabytes = sum(map(len, files)) / 1e6
    print(
        f"{args.count} JPEGs of {args.width}x{args.height} (quality 90, {megabytes / args.count * 1e3:.0f} kB each), "
        f"{os.cpu_count()} CPUs; median of {args.rounds} rounds; opencv {cv2.__version__}, "
        f"pillow {Image.__version__}, simplejpeg {simplejpeg.__version__}, tensorflow {tf.__version__}"
    )
    table("decode only, full size (images per CPU-second)", files, original, None, FULL, args.rounds)
    for target in (224, 64):
        factor = reduction(original, target)
        table(
            f"decode + resize to {target}x{target} (images per CPU-second; 1/2^k reduction possible: 1/{factor})",
            files,
            original,
            target,
            {**FULL, **REDUCED},
            args.rounds,
        )
    thread_table(files, original, args.rounds)


if __name__ == "__main__":
    main()
