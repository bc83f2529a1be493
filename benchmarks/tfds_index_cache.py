"""How long does a `data=tfds` load of a streamed set take, verified anew and from the index cache?

    .venv/bin/python benchmarks/tfds_index_cache.py                   # 2,000 JPEGs of 500x375
    .venv/bin/python benchmarks/tfds_index_cache.py --images 20000

A TFDS set of random JPEGs (ImageNet/VOC-sized photos) is prepared as ArrayRecord files in a temporary
folder, offline, then loaded as `data=tfds` loads it (classification, data.cache=none): first with an
empty cache (every example read and decoded once to verify it), then twice more with the split's
verified index cached. Each load starts as in a new process, with no file opened yet. Printed: seconds
per load, examples/s verified cold, and the ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tensorflow_datasets as tfds  # noqa: E402

from visionkit.data import load  # noqa: E402
from visionkit.data.sources import tfds as tfds_source  # noqa: E402

NAME = "visionkit_benchmark_photos"  # the builder below, as TFDS names it


class VisionkitBenchmarkPhotos(tfds.core.GeneratorBasedBuilder):
    """`images` JPEGs of `size` (width, height): a horizontal ramp with noise, labels 0-9 in turn."""

    VERSION = tfds.core.Version("1.0.0")
    images, size = 2000, (500, 375)

    def _info(self):
        features = {
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(names=[str(i) for i in range(10)]),
        }
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        width, height = self.size
        ramp = np.linspace(0, 255, width)[None, :, None]
        for i in range(self.images):
            noise = np.random.default_rng(i).normal(0, 20, (height, width, 3))
            yield i, {"image": np.clip(ramp + noise, 0, 255).astype(np.uint8), "label": i % 10}


def timed_load(data_dir: Path) -> tuple[float, int, int]:
    """(seconds, examples kept, verdicts from the cache) of one load, started with no file opened."""
    tfds_source._opened.cache_clear()
    start = time.perf_counter()
    bundle = load(
        "tfds",
        task="classification",
        name_in_tfds=NAME,
        data_dir=str(data_dir),
        image_size=[224, 224],
        test_split="",
        cache="none",
    )
    return time.perf_counter() - start, bundle.verification.kept, bundle.verification.cached


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", default="500x375", help="width x height of the photos")
    args = parser.parse_args()
    VisionkitBenchmarkPhotos.images = args.images
    VisionkitBenchmarkPhotos.size = tuple(int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="visionkit_tfds_cache_") as folder:
        root = Path(folder)
        os.environ["VISIONKIT_CACHE_DIR"] = str(root / "cache")  # an empty cache of its own
        tfds.disable_progress_bar()
        start = time.perf_counter()
        VisionkitBenchmarkPhotos(data_dir=str(root / "data")).download_and_prepare(file_format="array_record")
        prepared = time.perf_counter() - start
        print(f"{args.images} JPEGs of {args.size} prepared as ArrayRecord files in {prepared:.1f} s")
        loads = [timed_load(root / "data") for _ in range(3)]
    for name, (seconds, kept, cached) in zip(["cold", "warm", "warm again"], loads):
        print(f"  {name:10s} {seconds:7.2f} s  ({kept} kept, {cached} verdicts from the cache)")
    print(f"  verified cold: {args.images / loads[0][0]:.0f} examples/s; cold / warm: {loads[0][0] / loads[1][0]:.0f}x")


if __name__ == "__main__":
    main()
