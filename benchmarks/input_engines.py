"""Which input engine for ImageNet-style training? Images/s of decode + RandomResizedCrop(224, scale
(0.08, 1), ratio (3/4, 4/3)) + horizontal flip + normalisation to float32, in batches of 64, through
visionkit's path, a plain tf.data pipeline and Grain, side by side in one run.

    .venv/bin/python benchmarks/jpeg_folder.py /tmp/vk_bench/jpeg_2000 --count 2000
    .venv/bin/python benchmarks/input_engines.py /tmp/vk_bench/jpeg_2000
    .venv/bin/python benchmarks/input_engines.py /tmp/vk_bench/jpeg_2000 --rounds 5 trainer.prefetch=4

Engines (each yields float32 batches normalised with the ImageNet mean and deviation):
1. visionkit: data=folder streamed (data.cache=none), augment=imagenet, the pipeline's own training
   BatchLoader (pipelines.trainer.training_loaders) with 2 thread workers, then with 2 processes;
   the loader yields uint8 (the model normalises on its device), so the batch is normalised here.
   Its training samples carry their files undecoded, and the leading RandomResizedCrop is drawn from the
   size the index holds before the photo is decoded (visionkit/data/augment/window.py); --whole-photo
   adds the same threads engine decoding every photo whole before the transforms, as it did before.
2. tf.data, as the issue states it: paths -> tf.io.read_file -> tf.io.decode_jpeg ->
   tf.image.stateless_sample_distorted_bounding_box crop -> resize 224 -> flip -> normalise, batch,
   AUTOTUNE parallel map and prefetch.
3. tf.data with tf.io.decode_and_crop_jpeg (decodes only the crop's part of the image): the recipe of
   TensorFlow's own ImageNet input pipelines, the strongest plain tf.data baseline.
4. Grain (when installed): the same per-sample work in NumPy/OpenCV, 2 worker processes (mp_prefetch),
   kept from round to round as Grain keeps them from epoch to epoch (the others start anew each round);
   after its round the script waits while they refill their buffers, and charges that CPU to Grain.
   Its workers send uint8 batches, normalised here as visionkit's are (a quarter of the bytes through
   its shared memory).

Every engine draws the same number of batches per round (one epoch of visionkit's training split);
the engines take turns for --rounds rounds after an untimed warm-up round each (thread pools, worker
processes, first-file reads), so that a change of machine load hits all of them. Printed: each
engine's median images/s, and the ratio of each to tf.data (2) per round and its median; then the same
for images per CPU-second (this process and its workers), which is what throughput becomes when no
core is idle, and which a machine shared with other jobs does not tilt towards the engine with the
most threads. The issue's floor for visionkit / tf.data is 0.8, its target 1.0.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
import tensorflow as tf  # noqa: E402
from configured import load_config, prepare  # noqa: E402  (benchmarks/configured.py)
from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter  # noqa: E402  (what fit uses)

from pipelines import context  # noqa: E402
from pipelines.trainer import training_loaders  # noqa: E402

SIZE = 224
BATCH = 64
SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)
MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
BASELINE = "tf.data, decode_jpeg"
INV_STD = 1 / (np.array([0.229, 0.224, 0.225], np.float32) * 255)


def normalise(images: np.ndarray) -> np.ndarray:
    """float32 (images - MEAN) * INV_STD. The constants are tiled along an image row: broadcast over the last
    axis alone they make NumPy's inner loop 3 elements long, at four times the CPU (1.1 against 0.3 ms a
    224x224 image), which would be charged to the engines that normalise here."""
    row = images.shape[-2]
    pixels = images.reshape(-1, row * images.shape[-1]).astype(np.float32)
    pixels -= np.tile(MEAN, row)
    pixels *= np.tile(INV_STD, row)
    return pixels.reshape(images.shape)


# ---------------------------------------------------------------- visionkit


def visionkit_loader(folder: Path, processes: bool, overrides: list[str]):
    """The training BatchLoader that `python -m pipelines.run data=folder augment=imagenet` builds."""
    cfg = load_config(
        [
            "data=folder",
            f"data.path={folder}",
            f"data.image_size={SIZE}",
            "data.cache=none",
            "augment=imagenet",
            "model=lenet5",
            f"trainer.batch_size={BATCH}",
            "trainer.workers=2",
            f"trainer.multiprocessing={str(processes).lower()}",
            *overrides,
        ]
    )
    trainer, task, bundle = prepare(cfg)
    model = context.build_model(cfg, task, bundle)  # only the target encoding reads it
    train, _ = training_loaders(cfg, trainer, task, bundle, model)
    return train


def visionkit_engine(loader) -> Callable[[int], int]:
    """Rounds of whole epochs through Keras's PyDataset adapter (its workers and queue, as fit runs them)."""
    adapter = PyDatasetAdapter(loader)

    def run(batches: int) -> int:
        adapter.on_epoch_begin()
        count = sum(len(normalise(images)) for images, _ in adapter.get_numpy_iterator())
        adapter.on_epoch_end()
        return count

    return run


def whole_photo_engine(folder: Path, overrides: list[str]) -> Callable[[int], int]:
    """The threads engine with every photo decoded whole before the transforms see it."""
    loader = visionkit_loader(folder, False, overrides)
    loader.split = replace(loader.split, images=loader.split.images.at_own_size(deferred=False))
    return visionkit_engine(loader)


# ---------------------------------------------------------------- tf.data


def tf_crop_window(data: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """[y, x, h, w] of a random crop of the JPEG's image: area share in SCALE, aspect ratio in RATIO."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.io.extract_jpeg_shape(data),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=RATIO,
        area_range=SCALE,
        max_attempts=10,
    )
    return tf.stack([begin[0], begin[1], size[0], size[1]])


def tf_sample(crop_in_decoder: bool) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    mean, inv_std = tf.constant(MEAN), tf.constant(INV_STD)

    def load(path: tf.Tensor, seeds: tf.Tensor) -> tf.Tensor:
        data = tf.io.read_file(path)
        window = tf_crop_window(data, seeds[0])
        if crop_in_decoder:
            image = tf.io.decode_and_crop_jpeg(data, window, channels=3)
        else:
            image = tf.io.decode_jpeg(data, channels=3)
            image = tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])
        image = tf.image.resize(image, (SIZE, SIZE))  # bilinear, float32
        image = tf.image.stateless_random_flip_left_right(image, seeds[1])
        return (image - mean) * inv_std

    return load


def tf_data_engine(paths: list[str], crop_in_decoder: bool, seed: int) -> Callable[[int], int]:
    """Rounds from a new iterator each (as an epoch's `for batch in dataset` makes one): its start is paid in
    every round, as visionkit's workers start every epoch, and nothing runs between rounds."""
    files = tf.data.Dataset.from_tensor_slices(paths).shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2).batch(2)  # [2, 2] per image
    dataset = (
        tf.data.Dataset.zip(files.repeat(), seeds)
        .map(tf_sample(crop_in_decoder), num_parallel_calls=tf.data.AUTOTUNE)
        .batch(BATCH)
        .prefetch(tf.data.AUTOTUNE)
    )

    def run(batches: int) -> int:
        return sum(len(batch) for batch in dataset.take(batches))

    return run


# ---------------------------------------------------------------- Grain


def random_crop_window(height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """[y, x, h, w] as torchvision's RandomResizedCrop samples it: ten tries, else the centre at a clamped ratio."""
    area = height * width
    for _ in range(10):
        target = area * rng.uniform(*SCALE)
        ratio = math.exp(rng.uniform(math.log(RATIO[0]), math.log(RATIO[1])))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    ratio = min(max(width / height, RATIO[0]), RATIO[1])
    w, h = (width, round(width / ratio)) if width / height < ratio else (round(height * ratio), height)
    return (height - h) // 2, (width - w) // 2, h, w


def numpy_sample(path: str, rng: np.random.Generator) -> np.ndarray:
    image = cv2.cvtColor(cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    y, x, h, w = random_crop_window(*image.shape[:2], rng)
    image = cv2.resize(image[y : y + h, x : x + w], (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    return image[:, ::-1] if rng.random() < 0.5 else image


def one_opencv_thread(*_) -> None:
    cv2.setNumThreads(1)  # the workers are the parallelism


class GrainStream:
    """Rounds drawn from one endless iterator: Grain keeps its worker processes from epoch to epoch. Between
    rounds the workers fill their buffers and wait; each round first takes those banked batches untimed,
    so that the round times the workers at work."""

    def __init__(self, iterator, banked: int, workers: list[psutil.Process]):
        self.iterator, self.banked, self.workers = iterator, banked, workers

    def drain(self) -> None:
        for _ in range(self.banked):
            next(self.iterator)

    def __call__(self, batches: int) -> int:
        return sum(len(normalise(next(self.iterator))) for _ in range(batches))

    def settle(self) -> float:
        """Waits while the workers refill their buffers after a round, so that the next engine has the cores
        to itself; returns the CPU seconds the refill took, Grain's to pay."""
        spent, last = 0.0, self.worker_cpu()
        while True:
            time.sleep(0.25)
            now = self.worker_cpu()
            if now - last < 0.01:
                return spent
            spent, last = spent + now - last, now

    def worker_cpu(self) -> float:
        return sum(sum(worker.cpu_times()[:2]) for worker in self.workers if worker.is_running())

    def close(self) -> None:
        self.iterator.close()


def grain_engine(paths: list[str], seed: int) -> GrainStream | str:
    """Grain's engine, or the reason it cannot run."""
    try:
        import grain
    except ImportError as error:
        return f"skipped: grain is not installed ({error}); pip install grain"
    from absl import flags

    flags.FLAGS.mark_as_parsed()  # Grain reads its options from absl flags, which a plain script never parses
    # One reading thread and one batch read ahead per worker: Grain's default (16 threads, 500 elements
    # ahead, here batches) oversubscribes 2 cores and holds gigabytes.
    read = grain.ReadOptions(num_threads=1, prefetch_buffer_size=1)
    processes = grain.MultiprocessingOptions(num_workers=2, per_worker_buffer_size=1)
    dataset = (
        grain.MapDataset.source(paths)
        .shuffle(seed=seed)
        .repeat()
        .random_map(numpy_sample, seed=seed)
        .batch(BATCH)
        .to_iter_dataset(read)
        .mp_prefetch(processes, worker_init_fn=one_opencv_thread)
    )
    banked = processes.num_workers * (processes.per_worker_buffer_size + read.prefetch_buffer_size)
    before = set(psutil.Process().children(recursive=True))
    iterator = iter(dataset)
    next(iterator)  # starts the worker processes
    workers = [child for child in psutil.Process().children(recursive=True) if child not in before]
    return GrainStream(iterator, banked, workers)


# ---------------------------------------------------------------- the comparison


def cpu_seconds() -> float:
    """CPU time of this process and its worker processes: those alive now, and those that ended (reaped)."""
    me, ended = psutil.Process(), os.times()
    total = ended.children_user + ended.children_system
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def timed(run: Callable[[int], int], batches: int) -> tuple[float, float]:
    """(images/s, CPU seconds per image) of one round."""
    if isinstance(run, GrainStream):
        run.drain()
    start, cpu_start = time.perf_counter(), cpu_seconds()
    count = run(batches)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    if isinstance(run, GrainStream):
        cpu += run.settle()
    return count / seconds, cpu / count


def report(unit: str, figures: dict[str, list[float]], rounds: int) -> None:
    baseline = figures[BASELINE]
    print(f"{unit} (median of {rounds} rounds) and ratio to {BASELINE} (median; per round):")
    for name, measured in figures.items():
        ratios = [value / base for value, base in zip(measured, baseline, strict=True)]
        print(
            f"  {name:30s} {statistics.median(measured):7.0f}   {statistics.median(ratios):5.2f}   "
            f"({' '.join(f'{r:.2f}' for r in ratios)})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a folder of JPEGs, <folder>/<class>/<image>.jpg")
    parser.add_argument("--rounds", type=int, default=3, help="turns of every engine (after a warm-up round)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--whole-photo", action="store_true", help="add visionkit threads decoding photos whole")
    parser.add_argument("overrides", nargs="*", help="config overrides for visionkit's engines")
    args = parser.parse_args()
    paths = sorted(str(p) for p in args.folder.glob("*/*.jpg"))
    threads_loader = visionkit_loader(args.folder, False, args.overrides)
    batches = len(threads_loader)
    engines = {
        "visionkit, 2 threads": visionkit_engine(threads_loader),
        "visionkit, 2 processes": visionkit_engine(visionkit_loader(args.folder, True, args.overrides)),
        BASELINE: tf_data_engine(paths, crop_in_decoder=False, seed=args.seed),
        "tf.data, decode_and_crop_jpeg": tf_data_engine(paths, crop_in_decoder=True, seed=args.seed),
    }
    if args.whole_photo:
        engines["visionkit, threads, whole photo"] = whole_photo_engine(args.folder, args.overrides)
    grain = grain_engine(paths, args.seed)
    if isinstance(grain, str):
        print(f"Grain: {grain}")
    else:
        engines["Grain, 2 processes"] = grain
    print(
        f"{len(paths)} JPEGs in {args.folder}; {batches} batches of {BATCH} per round (visionkit's "
        f"{len(threads_loader.split)} training images), {args.rounds} rounds; {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    for run in engines.values():
        run(batches)  # warm-up, not timed
    rates: dict[str, list[float]] = {name: [] for name in engines}
    cpu: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(args.rounds):
        for name, run in engines.items():
            rate, cpu_per_image = timed(run, batches)
            rates[name].append(rate)
            cpu[name].append(cpu_per_image)
    report("images/s", rates, args.rounds)
    # With no idle core (this machine shared with other jobs), throughput goes as 1 / CPU time per image;
    # and wall-clock shares of an oversubscribed CPU favour the engines that run the most threads.
    report("images per CPU-second", {name: [1 / c for c in cpu[name]] for name in engines}, args.rounds)
    print(f"load average after: {os.getloadavg()[0]:.1f}; issue: visionkit / tf.data >= 0.8 (floor), >= 1.0 (target)")
    if isinstance(grain, GrainStream):
        grain.close()  # before the interpreter's exit, which would find its worker pipes half torn down


if __name__ == "__main__":
    main()
