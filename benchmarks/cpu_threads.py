"""Does a model gain from TensorFlow's threads on this CPU? Training throughput on pre-decoded arrays
with `trainer.cpu_threads=0` (one per core, TensorFlow's default) and with 1, side by side.

    .venv/bin/python benchmarks/cpu_threads.py                                 # lenet5 on digits
    .venv/bin/python benchmarks/cpu_threads.py model=resnet18 data=shapes   # any config override

TensorFlow fixes its thread pools when it starts, so each measurement is a child process; the two
settings alternate for --rounds rounds, so that a change of machine load hits both. Printed: the
median images/s of each setting (each child: the median epoch after its first) and their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

SETTINGS = (0, 1)


def child(task_name: str, overrides: list[str], epochs: int) -> None:
    """Trains on the training images as one array and prints {"rate": images/s} on its last line."""
    sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
    from configured import load_config, model_on_arrays, prepare
    from timing import EpochRates

    cfg = load_config([f"task={task_name}", *overrides])
    trainer, task, bundle = prepare(cfg)
    model, _, images, encoded = model_on_arrays(cfg, trainer, task, bundle)
    rates = EpochRates(len(bundle.train))
    model.fit(images, encoded, batch_size=trainer.batch_size, epochs=epochs, shuffle=True, verbose=0, callbacks=[rates])
    print(json.dumps({"rate": statistics.median(rates.rates), "model": cfg.model.name, "data": cfg.data.name}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="classification")
    parser.add_argument("--rounds", type=int, default=4, help="alternations of the two settings")
    parser.add_argument("--epochs", type=int, default=12, help="epochs per child (the first one is not timed)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model=resnet18 data=shapes")
    args = parser.parse_args()
    if args.child:
        child(args.task, args.overrides, args.epochs)
        return
    rates: dict[int, list[float]] = {threads: [] for threads in SETTINGS}
    for _ in range(args.rounds):
        for threads in SETTINGS:
            command = [
                sys.executable,
                __file__,
                "--child",
                "--task",
                args.task,
                "--epochs",
                str(args.epochs),
                *args.overrides,
                f"trainer.cpu_threads={threads}",
            ]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            rates[threads].append(result["rate"])
    print(
        f"model={result['model']} data={result['data']}: training images/s on pre-decoded arrays "
        f"(median of {args.rounds} processes)"
    )
    for threads in SETTINGS:
        label = "(one per core, TensorFlow's default)" if threads == 0 else "(one thread)"
        print(
            f"  trainer.cpu_threads={threads} {label:38s} {statistics.median(rates[threads]):9.0f}   "
            f"({' '.join(f'{r:.0f}' for r in rates[threads])})"
        )
    print(f"  ratio 1 thread / default: {statistics.median(rates[1]) / statistics.median(rates[0]):.2f}")


if __name__ == "__main__":
    main()
