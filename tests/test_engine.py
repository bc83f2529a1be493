"""The training engine's knobs: the JAX backend, mixed precision, XLA, and data-parallel training
(MirroredStrategy on two logical CPU devices)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ("trainer.epochs=1", "data.limit=64", "export.num_images=4", "tracking.system_metrics=false")


def run_with_env(pipeline, *overrides, env: dict, check=True):
    """The `pipeline` fixture's command with extra environment variables."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        return pipeline(*overrides, check=check)
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)


def test_training_evaluation_and_export_run_on_the_jax_backend(pipeline):
    done = run_with_env(pipeline, *TINY, env={"KERAS_BACKEND": "jax"})
    assert "export verified" in done.stdout and "test_accuracy=" in done.stdout


@pytest.mark.parametrize("precision", ["mixed_bfloat16", pytest.param("mixed_float16", marks=pytest.mark.slow)])
def test_mixed_precision_trains_with_float32_outputs(pipeline, precision):
    done = pipeline(*TINY, f"trainer.precision={precision}", "tracking=none")
    assert "export verified" in done.stdout
    import keras

    import visionkit.layers  # noqa: F401

    model = keras.saving.load_model(pipeline.run_dir / "model.keras", compile=False)
    assert model.get_layer("predictions").dtype_policy.compute_dtype == "float32"
    assert model.get_layer("c1_conv").dtype_policy.name == precision


@pytest.mark.parametrize(
    "check, value, message",
    [
        (
            "precision",
            "half",
            "trainer.precision must be one of float32, mixed_float16, mixed_bfloat16, received 'half'",
        ),
        ("jit_compile", "maybe", "trainer.jit_compile must be true, false or auto, received 'maybe'"),
        ("strategy", "horovod", "trainer.strategy must be one of none, mirrored, multi_worker, received 'horovod'"),
        ("strategy", "multi_worker", "trainer.strategy=multi_worker needs TF_CONFIG naming the workers and this one"),
    ],
)
def test_bad_engine_settings_are_one_line_errors(check, value, message, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    from visionkit.errors import UserError
    from visionkit.training.distribute import make_strategy
    from visionkit.training.precision import jit_compile, set_precision

    with pytest.raises(UserError) as error:
        {"precision": set_precision, "jit_compile": jit_compile, "strategy": make_strategy}[check](value)
    assert str(error.value).startswith(message)


MIRRORED_METRICS = textwrap.dedent("""
    import numpy as np, keras, tensorflow as tf
    from visionkit.training.distribute import make_strategy, strategy_scope
    strategy = make_strategy("mirrored", cpu_devices=2)
    assert strategy.num_replicas_in_sync == 2
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 6)).astype("float32"), rng.integers(0, 3, 50)
    with strategy_scope(strategy):
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, activation="softmax")])
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert model.optimizer.iterations.numpy() == 7  # 50 samples in global batches of 8
    _, accuracy = model.evaluate(x, y, batch_size=8, verbose=0)
    expected = np.mean(model.predict(x, batch_size=8, verbose=0).argmax(axis=1) == y)
    assert abs(accuracy - expected) < 1e-6, (accuracy, expected)
    print("ok")
""")


def test_mirrored_strategy_splits_global_batches_and_aggregates_metrics_over_replicas():
    done = subprocess.run(
        [sys.executable, "-c", MIRRORED_METRICS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=300,
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]


@pytest.mark.slow  # the strategy's batches and metrics are tested without the pipeline above
def test_the_pipeline_trains_with_a_mirrored_strategy(pipeline):
    done = pipeline(
        "trainer.epochs=1",
        "data.limit=128",
        "trainer.batch_size=32",
        "trainer.strategy=mirrored",
        "trainer.cpu_devices=2",
        "export.num_images=4",
        "tracking=none",
    )
    assert "trainer.strategy=mirrored: 2 replicas, global batch 32" in done.stdout
    assert "4/4" in done.stdout  # 128 samples in global batches of 32
    assert "export verified" in done.stdout
