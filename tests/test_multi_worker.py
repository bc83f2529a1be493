"""trainer.strategy=multi_worker: two worker processes on 127.0.0.1 train on exactly the batches one
process would (each its rows of every global batch, gradients summed over both), so the chief's
results match a single-process run's; the chief alone evaluates; TF_CONFIG errors are one line."""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from visionkit.errors import UserError
from visionkit.training.distribute import worker_of, worker_steps

ROOT = Path(__file__).resolve().parents[1]
RUN = ("trainer.epochs=2", "data.limit=200", "trainer.batch_size=50", "tracking=none", "export.enabled=false")


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


def epoch_figures(stdout: str) -> list[float]:
    """Every loss and metric of every epoch line ("4/4 - 1s - ... - loss: 2.1188 - val_accuracy: 0.5950")."""
    return [float(value) for value in re.findall(r" - \w+: ([0-9.]+(?:e-?[0-9]+)?)", stdout)]
