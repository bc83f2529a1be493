"""Does memory stay flat as a dataset grows, and how soon does training start? Peak RSS of one training
epoch at 224 on a small and a large folder of JPEGs, the time to the first training step, and the
rate of a cold verification.

    .venv/bin/python benchmarks/jpeg_folder.py /tmp/vk_bench/jpeg_2000 --count 2000
    .venv/bin/python benchmarks/jpeg_folder.py /tmp/vk_bench/jpeg_20000 --count 20000
    .venv/bin/python benchmarks/streaming.py /tmp/vk_bench/jpeg_2000 /tmp/vk_bench/jpeg_20000
    .venv/bin/python benchmarks/streaming.py SMALL LARGE --caches none trainer.workers=2   # any config override

Each measurement is `python -m pipelines.run data=folder data.path=<folder> data.image_size=224
model=lenet5 trainer.epochs=1 export.enabled=false tracking=none` in a child process, run from the
project root with the verification cache ($VISIONKIT_CACHE_DIR) in a temporary folder:
1. verification: `mode=verify` on each folder with an empty cache (cold), then on the large one again
   (warm); the difference of the large folder's two wall times is the verification's work:
   files/s = files / (cold - warm). The training runs below find every verdict cached.
2. memory: one epoch on each folder, for each data.cache setting of --caches ("default" = the
   configured one); the peak RSS of the process tree (the pipeline and any loader processes), polled
   every 0.1 s, and the difference large - small. The issue asks for under 300 MB.
3. start-up: from launching the large folder's training to the line the pipeline prints right before
   model.fit ("<task>: <model> on <data> (...) -> <run dir>"), with the warm verification cache.
   The issue asks for under 30 s.

A child passing --max-rss-gb (default 16) is killed, and its peak reported as "over".
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["data.image_size=224", "model=lenet5", "trainer.epochs=1", "export.enabled=false", "tracking=none"]
BEFORE_FIT = (" on folder (", " -> ")  # pipelines/train.py: "<task>: <model> on <data> (...) -> <run dir>"


@dataclass
class Child:
    """What one child run did: its exit status, wall time, peak RSS and the time each printed line appeared."""

    returncode: int | None = None
    seconds: float = 0.0
    peak_rss: int = 0
    killed: bool = False
    lines: list[tuple[float, str]] = field(default_factory=list)

    def first_line_with(self, texts: tuple[str, ...]) -> float | None:
        return next((at for at, line in self.lines if all(text in line for text in texts)), None)

    def tail(self, count: int = 15) -> str:
        return "\n".join(line for _, line in self.lines[-count:])


def tree_rss(process: psutil.Process) -> int:
    """Resident memory of a process and all its descendants, in bytes (0 for those already gone)."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_child(arguments: list[str], cache_dir: Path, max_rss: int, run_dir: Path) -> Child:
    """`python -m pipelines.run <arguments>`, its output read line by line while its RSS is polled."""
    command = [sys.executable, "-m", "pipelines.run", *arguments, f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "VISIONKIT_CACHE_DIR": str(cache_dir), "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    child, start = Child(), time.perf_counter()
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )

    def read() -> None:
        for line in process.stdout:
            child.lines.append((time.perf_counter() - start, line.rstrip()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    watched = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            child.peak_rss = max(child.peak_rss, tree_rss(watched))
        except psutil.NoSuchProcess:
            break
        if child.peak_rss > max_rss:
            kill_tree(watched)
            child.killed = True
        time.sleep(0.1)
    child.returncode = process.wait()
    child.seconds = time.perf_counter() - start
    reader.join()
    return child


def kill_tree(process: psutil.Process) -> None:
    for member in [*process.children(recursive=True), process]:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass


def check(child: Child, what: str) -> None:
    if child.returncode != 0 and not child.killed:
        raise SystemExit(f"{what} failed (exit {child.returncode}):\n{child.tail()}")


def jpeg_count(folder: Path) -> int:
    return sum(1 for _ in folder.rglob("*.jpg"))


def gb(size: int) -> str:
    return f"{size / 1e9:.2f} GB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("small", type=Path, help="the small folder of JPEGs (e.g. 2,000)")
    parser.add_argument("large", type=Path, help="the large folder of JPEGs (e.g. 20,000)")
    parser.add_argument("--caches", nargs="+", default=["none", "default"], help="data.cache settings to measure")
    parser.add_argument("--max-rss-gb", type=float, default=16.0, help="a child above this is killed")
    parser.add_argument("overrides", nargs="*", help="config overrides for every training run")
    args = parser.parse_args()
    max_rss = int(args.max_rss_gb * 1e9)
    small, large = args.small.resolve(), args.large.resolve()
    print(f"{jpeg_count(small)} and {jpeg_count(large)} JPEGs; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="vk_streaming_") as scratch:
        cache, runs = Path(scratch) / "cache", Path(scratch) / "runs"
        for size, folder in (("small", small), ("large", large)):  # every training run below finds its verdicts cached
            cold = run_child(["mode=verify", "data=folder", f"data.path={folder}"], cache, max_rss, runs / size)
            check(cold, f"cold verification of {folder}")
        warm = run_child(["mode=verify", "data=folder", f"data.path={large}"], cache, max_rss, runs / "warm")
        check(warm, f"warm verification of {large}")
        files = jpeg_count(large)
        print(
            f"verification of {files} files: cold {cold.seconds:.1f} s, warm {warm.seconds:.1f} s -> "
            f"{files / max(cold.seconds - warm.seconds, 1e-9):.0f} files/s cold (peak RSS {gb(cold.peak_rss)})"
        )
        for setting in args.caches:
            peaks = {}
            for size, folder in (("small", small), ("large", large)):
                arguments = ["data=folder", f"data.path={folder}", *TRAIN, *args.overrides]
                if setting != "default":
                    arguments.append(f"data.cache={setting}")
                child = run_child(arguments, cache, max_rss, runs / f"{setting}_{size}")
                check(child, f"training on {folder} (data.cache={setting})")
                peaks[folder] = child.peak_rss
                state = f"KILLED over {args.max_rss_gb:g} GB" if child.killed else f"{child.seconds:.0f} s"
                print(f"data.cache={setting:7s} {folder}: peak RSS {gb(child.peak_rss)} ({state})")
                started = child.first_line_with(BEFORE_FIT)
                if size == "large" and started is not None:
                    print(f"  start-up: {started:.1f} s from the command to the line before model.fit (target < 30 s)")
            print(f"data.cache={setting:7s} difference: {(peaks[large] - peaks[small]) / 1e6:.0f} MB (target < 300 MB)")


if __name__ == "__main__":
    main()
