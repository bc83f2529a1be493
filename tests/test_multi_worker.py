"""trainer.strategy=multi_worker: two worker processes on 127.0.0.1 train on exactly the batches one
process would (each its rows of every global batch, gradients summed over both), so the chief's
results match a single-process run's; each reads only its rows, every sample of an epoch once across
the two; the chief alone evaluates; TF_CONFIG errors are one line."""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from visionkit.data.augment import build_augmenter
from visionkit.data.core import Split
from visionkit.data.loader import BatchLoader
from visionkit.errors import UserError
from visionkit.training.distribute import worker_of, worker_steps

ROOT = Path(__file__).resolve().parents[1]
RUN = ("trainer.epochs=2", "data.limit=200", "trainer.batch_size=50", "tracking=none", "export.enabled=false")

# One worker's input pipeline under the real strategy: the rows it reads in one epoch, and which samples.
SHARD_READER = """
import sys
from collections import Counter

import numpy as np

from test_multi_worker import shard_loader
from visionkit.data.core import Split
from visionkit.training.distribute import make_strategy, multi_worker_dataset

reads = Counter()


class CountedSplit(Split):
    def sample(self, i):
        reads[int(i)] += 1
        return super().sample(i)


strategy = make_strategy("multi_worker")
dataset = multi_worker_dataset(shard_loader(CountedSplit), strategy)
reads.clear()  # the sample read for the dataset's signature
batches = [[t.numpy() for t in strategy.experimental_local_results(element)[0]] for element in dataset]
np.savez(
    sys.argv[1],
    reads=np.array(sorted(reads.elements())),
    images=np.concatenate([images for images, _ in batches]),
    labels=np.concatenate([labels for _, labels in batches]),
)
"""


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start(run_dir: Path, *overrides: str, tf_config: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.run", f"hydra.run.dir={run_dir}", *RUN, *overrides],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen) -> str:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    return out


def test_tf_config_is_read_and_checked():
    config = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 1}}
    assert worker_of(json.dumps(config)) == (1, 2)
    with pytest.raises(UserError, match="trainer.strategy=multi_worker needs TF_CONFIG naming the workers"):
        worker_of(None)
    with pytest.raises(UserError, match="task must be a worker with an index below 2"):
        worker_of(json.dumps({**config, "task": {"type": "worker", "index": 2}}))


def test_every_worker_takes_the_same_number_of_batches():
    assert worker_steps([64, 64, 8], 2) == 3
    assert worker_steps([64, 64, 1], 2) == 2  # a last batch of one row would leave a worker nothing
    assert worker_steps([64, 64], 4) == 2


@pytest.mark.slow
def test_two_workers_train_as_one_process_would(tmp_path):
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers = [
        start(
            tmp_path / f"worker{i}",
            "trainer.strategy=multi_worker",
            tf_config={"cluster": cluster, "task": {"type": "worker", "index": i}},
        )
        for i in range(2)
    ]
    outputs = [finish(w) for w in workers]
    assert "trainer.strategy=multi_worker: 2 replicas, global batch 50" in outputs[0]
    assert "worker 1: training done; worker 0 evaluates and exports" in outputs[1]
    assert not (tmp_path / "worker1" / "test_metrics.json").exists()

    single = finish(start(tmp_path / "single"))
    # The same batches, the gradients summed over both workers: the same training, epoch by epoch.
    assert len(epoch_figures(single)) == 2 * 6  # loss, accuracy, top-5, and their val_ twins
    assert epoch_figures(outputs[0]) == pytest.approx(epoch_figures(single), rel=1e-4)
    chief_metrics, single_metrics = (
        json.loads((tmp_path / d / "test_metrics.json").read_text()) for d in ("worker0", "single")
    )
    assert chief_metrics == pytest.approx(single_metrics, rel=1e-4)


def shard_loader(split_class=Split) -> BatchLoader:
    """45 samples in batches of 8 (the last of 5 rows), shuffled and augmented (Albumentations path);
    the labels are the sample indices."""
    rng = np.random.default_rng(0)
    split = split_class(rng.integers(0, 255, (45, 16, 16, 3), dtype=np.uint8), {"label": np.arange(45)})
    augmenter = build_augmenter([{"name": "Affine", "rotate": [-20, 20], "p": 0.9}, {"name": "GaussNoise", "p": 0.5}])
    return BatchLoader(
        split, lambda samples: np.array([s["label"] for s in samples]), batch_size=8, augmenter=augmenter, shuffle=True
    )


@pytest.mark.slow
def test_two_workers_read_each_sample_of_an_epoch_once(tmp_path):
    script = tmp_path / "shard_reader.py"
    script.write_text(SHARD_READER)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / f"worker{i}.npz")],
            cwd=ROOT,
            env={**env, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})},
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err[-3000:]
    shards = [np.load(tmp_path / f"worker{i}.npz") for i in range(2)]

    np.testing.assert_array_equal(np.sort(np.concatenate([s["reads"] for s in shards])), np.arange(45))
    single = shard_loader()
    single.on_epoch_end()  # fit ends a PyDataset's epoch before its first one
    batches = [single[i] for i in range(len(single))]
    for worker, shard in enumerate(shards):
        np.testing.assert_array_equal(shard["labels"], np.concatenate([labels[worker::2] for _, labels in batches]))
        np.testing.assert_array_equal(shard["images"], np.concatenate([images[worker::2] for images, _ in batches]))
        np.testing.assert_array_equal(np.sort(shard["reads"]), np.sort(shard["labels"]))  # read only its rows


def epoch_figures(stdout: str) -> list[float]:
    """Every loss and metric of every epoch line ("4/4 - 1s - ... - loss: 2.1188 - val_accuracy: 0.5950")."""
    return [float(value) for value in re.findall(r" - \w+: ([0-9.]+(?:e-?[0-9]+)?)", stdout)]
