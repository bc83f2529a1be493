"""mode=benchmark and its measurements. The figures are checked for consistency, never for speed."""

import json
import math

import keras
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from pipelines import compare
from pipelines.run import CONF_DIR
from visionkit.data.core import DataBundle, Split
from visionkit.data.loader import BatchLoader
from visionkit.training.benchmark import (
    fit_batches,
    inference_rate,
    matmul_peak,
    synthetic_bundle,
    time_training,
    training_flops_per_s,
)

LENET5_MACS = 416520  # LeNet-5 on 32x32x1 (test_layer_table.py)


def test_benchmark_mode_logs_positive_consistent_figures(pipeline, capsys):
    done = pipeline(
        "mode=benchmark",
        "data.limit=48",
        "trainer.batch_size=16",
        "benchmark.warmup_steps=2",
        "benchmark.steps=4",
        "benchmark.matmul_size=128",
        "benchmark.matmul_trials=2",
        "tracking.system_metrics=false",
    )
    assert "benchmark: lenet5 on digits of 32x32x1, batch 16, median of 4 steps after 2" in done.stdout
    for line in ("  training ", "  inference ", "  MFU "):
        assert line in done.stdout

    client, runs = pipeline.mlflow_runs("benchmark")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    metrics, params = runs[0].data.metrics, runs[0].data.params
    assert runs[0].data.tags["mode"] == "benchmark"
    assert params["model.macs"] == str(LENET5_MACS) and params["benchmark.input_shape"] == "[32, 32, 1]"
    assert params["benchmark.compute_dtype"] == "float32" and params["benchmark.backend"] == "tensorflow"
    names = {
        "benchmark_train_images_per_s",
        "benchmark_train_step_ms",
        "benchmark_data_wait_share",
        "benchmark_inference_images_per_s",
        "benchmark_peak_tflops",
        "benchmark_achieved_tflops",
        "benchmark_mfu",
    }
    assert names == set(metrics)
    assert all(math.isfinite(metrics[name]) and metrics[name] > 0 for name in names - {"benchmark_data_wait_share"})
    assert 0 <= metrics["benchmark_data_wait_share"] < 1
    train = metrics["benchmark_train_images_per_s"]
    assert metrics["benchmark_train_step_ms"] == pytest.approx(1000 * 16 / train)
    assert metrics["benchmark_achieved_tflops"] * 1e12 == pytest.approx(6 * LENET5_MACS * train)
    assert metrics["benchmark_mfu"] == pytest.approx(
        metrics["benchmark_achieved_tflops"] / metrics["benchmark_peak_tflops"]
    )
    assert json.loads((pipeline.run_dir / "benchmark.json").read_text()) == pytest.approx(metrics)

    # mode=compare lists benchmark runs by their own headline figures.
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=["mode=compare", "compare.experiment=benchmark", f"tracking.uri=sqlite:///{pipeline.store}"],
        )
    heading = compare.run(cfg).splitlines()[0].split()
    assert heading[4:7] == ["benchmark_train_images_per_s", "benchmark_inference_images_per_s", "benchmark_mfu"]
    assert "experiment benchmark: 1 run by benchmark_train_images_per_s, descending" in capsys.readouterr().out


def test_benchmark_needs_one_full_batch(pipeline):
    done = pipeline("mode=benchmark", "data.limit=8", "trainer.batch_size=16", "tracking=none", check=False)
    assert done.returncode == 2
    assert (
        "error: mode=benchmark needs one full batch: 8 training images for trainer.batch_size=16; "
        "lower it or raise data.limit"
    ) in done.stderr


def tiny_model() -> keras.Model:
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    return model


def labels_of(samples):
    return np.asarray([s["label"] for s in samples])


def test_training_is_timed_on_full_batches_after_warm_up():
    split = Split(np.zeros((20, 8, 8, 1), np.uint8), {"label": np.arange(20) % 3})
    loader = BatchLoader(split, labels_of, batch_size=8, shuffle=True)
    # 20 images: two full batches and a partial one per epoch, which is skipped.
    batches = fit_batches(loader)
    assert {len(next(batches)[0]) for _ in range(5)} == {8}
    batches.close()

    times = time_training(tiny_model(), loader, warmup_steps=2, steps=5)
    assert len(times.step) == len(times.wait) == 5
    assert all(0 <= wait <= step for wait, step in zip(times.wait, times.step))
    assert times.images_per_s > 0 and 0 <= times.data_wait_share < 1
    assert inference_rate(tiny_model(), split.images[:8], warmup_steps=1, steps=3) > 0
    with pytest.raises(ValueError, match="the training split has 20 images, fewer than one batch of 32"):
        time_training(tiny_model(), BatchLoader(split, labels_of, batch_size=32), warmup_steps=0, steps=1)


def test_matmul_peak_and_flops():
    assert 0 < matmul_peak(64, repeats=2, trials=2) < math.inf
    assert training_flops_per_s(100, 10.0) == 6000.0  # 2 FLOPs per MAC, forward + backward = 3 forward


def test_synthetic_bundle_keeps_targets_and_rescales_masks_and_boxes():
    mask = np.zeros((10, 10), np.uint8)
    mask[2:6, 4:10] = 1
    boxes = [np.asarray([[4, 2, 10, 6]], np.float32), np.asarray([[0, 0, 5, 5], [1, 1, 2, 2]], np.float32)]
    train = Split(
        np.zeros((2, 10, 10, 1), np.uint8),
        {
            "label": np.asarray([0, 1]),
            "mask": np.stack([mask, mask]),
            "boxes": boxes,
            "classes": [np.asarray([0]), np.asarray([1, 0])],
        },
    )
    bundle = DataBundle("toy", train, train, train, class_names=["a", "b"])
    synthetic = synthetic_bundle(bundle, (20, 30, 3), num_images=5)
    assert synthetic.image_shape == (20, 30, 3) and len(synthetic.train) == len(synthetic.test) == 5
    assert synthetic.train.images.dtype == np.uint8 and synthetic.train.images.std() > 50  # random, not blank
    assert synthetic.train.targets["label"].tolist() == [0, 1, 0, 1, 0]
    expected_mask = np.zeros((20, 30), np.uint8)
    expected_mask[4:12, 12:30] = 1
    np.testing.assert_array_equal(synthetic.train.targets["mask"][2], expected_mask)
    np.testing.assert_allclose(synthetic.train.targets["boxes"][1], [[0, 0, 15, 10], [3, 2, 6, 4]])
    assert [c.tolist() for c in synthetic.train.targets["classes"]] == [[0], [1, 0], [0], [1, 0], [0]]
    assert synthetic.class_names == ["a", "b"]
