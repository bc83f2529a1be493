"""mode=benchmark: training and inference images/s, the share of the step spent waiting for data, and
model FLOPs utilisation, for the model, data, loader and trainer settings mode=train would use.
Nothing is checkpointed or exported; the figures go to the MLflow experiment `benchmark`.

    python -m pipelines.run mode=benchmark model=resnet18                 # on the configured dataset
    python -m pipelines.run mode=benchmark model=resnet50 benchmark.synthetic=true \
        'benchmark.image_shape=[224,224,3]' trainer.precision=mixed_float16 augment=none profile=full
"""

from __future__ import annotations

import json

import keras
from omegaconf import DictConfig, OmegaConf

from pipelines import context
from pipelines.modes import BENCHMARK_EXPERIMENT
from pipelines.settings import BenchmarkSettings, TrainerSettings, positive, typed
from pipelines.trainer import compile_for_training, start_engine, trainer_settings, training_loaders
from visionkit.analysis import layer_table, totals
from visionkit.data.loader import BatchLoader
from visionkit.errors import UserError
from visionkit.models.common import inference_model
from visionkit.tracking import flatten
from visionkit.training.benchmark import (
    device_name,
    inference_rate,
    matmul_peak,
    synthetic_bundle,
    time_training,
    training_flops_per_s,
)


def run(cfg: DictConfig) -> dict[str, float]:
    settings = checked_settings(cfg)
    trainer = trainer_settings(cfg, counts=("batch_size", "workers"))
    start_engine(trainer, distribute=False)  # one process on its own devices: trainer.strategy is not timed
    task = context.load_task(cfg)
    bundle = context.load_data(cfg, task)
    if settings.synthetic:
        shape = tuple(settings.image_shape or bundle.image_shape)
        # One epoch of distinct batches for all the steps: no epoch boundary (a new input iterator) among them.
        steps = settings.warmup_steps + settings.steps
        bundle = synthetic_bundle(bundle, shape, steps * trainer.batch_size, seed=trainer.seed)
    if len(bundle.train) < trainer.batch_size:
        raise UserError(
            f"mode=benchmark needs one full batch: {len(bundle.train)} training images for "
            f"trainer.batch_size={trainer.batch_size}; lower it or raise data.limit"
        )
    model = context.build_model(cfg, task, bundle)
    loader, _ = training_loaders(cfg, trainer, task, bundle, model)
    compile_for_training(model, task, trainer, steps_per_epoch=len(loader))
    size = totals(layer_table(inference_model(model)))
    tracker, _ = context.make_tracker(cfg)
    with tracker.run(**{**context.run_identity(cfg), "experiment": BENCHMARK_EXPERIMENT}):
        tracker.log_params(
            {
                **flatten(OmegaConf.to_container(cfg, resolve=True)),
                "model.total_params": size["params"],
                "model.macs": size["macs"],
                "benchmark.device": device_name(),
                "benchmark.backend": keras.backend.backend(),
                "benchmark.compute_dtype": keras.mixed_precision.global_policy().compute_dtype,
                "benchmark.input_shape": list(bundle.image_shape),
            }
        )
        metrics = measure(model, loader, settings, size["macs"])
        tracker.log_metrics(metrics)
    (context.output_dir() / "benchmark.json").write_text(json.dumps(metrics, indent=2))
    print(report(cfg, trainer, settings, bundle.image_shape, size["macs"], metrics))
    return metrics


def checked_settings(cfg: DictConfig) -> BenchmarkSettings:
    settings = typed(cfg.benchmark, BenchmarkSettings, "benchmark")
    for key in ("steps", "matmul_size", "matmul_repeats", "matmul_trials"):
        positive(getattr(settings, key), f"benchmark.{key}")
    if settings.warmup_steps < 0:
        raise UserError(f"benchmark.warmup_steps must be at least 0, received {settings.warmup_steps}")
    if settings.image_shape is not None and (len(settings.image_shape) != 3 or min(settings.image_shape) < 1):
        raise UserError(f"benchmark.image_shape must be [height, width, channels], received {settings.image_shape}")
    return settings


def measure(model: keras.Model, loader: BatchLoader, settings: BenchmarkSettings, macs: int | None) -> dict[str, float]:
    """The benchmark_* metrics; the FLOP-based ones only where the model's MACs are known (a fixed input size)."""
    steps = {"warmup_steps": settings.warmup_steps, "steps": settings.steps}
    training = time_training(model, loader, **steps)
    images = loader[0][0]
    metrics = {
        "benchmark_train_images_per_s": training.images_per_s,
        "benchmark_train_step_ms": 1000 * loader.batch_size / training.images_per_s,
        "benchmark_data_wait_share": training.data_wait_share,
        "benchmark_inference_images_per_s": inference_rate(inference_model(model), images, **steps),
    }
    peak = matmul_peak(settings.matmul_size, repeats=settings.matmul_repeats, trials=settings.matmul_trials)
    metrics["benchmark_peak_tflops"] = peak / 1e12
    if macs:
        achieved = training_flops_per_s(macs, training.images_per_s)
        metrics.update(benchmark_achieved_tflops=achieved / 1e12, benchmark_mfu=achieved / peak)
    return metrics


def report(
    cfg: DictConfig,
    trainer: TrainerSettings,
    settings: BenchmarkSettings,
    image_shape,
    macs: int | None,
    metrics: dict[str, float],
) -> str:
    data = "synthetic images" if settings.synthetic else cfg.data.name
    dtype = keras.mixed_precision.global_policy().compute_dtype
    lines = [
        f"benchmark: {cfg.model.name} on {data} of {'x'.join(map(str, image_shape))}, batch {trainer.batch_size}, "
        f"median of {settings.steps} steps after {settings.warmup_steps}; {device_name()}, "
        f"keras {keras.backend.backend()}, {dtype}",
        f"  training   {metrics['benchmark_train_images_per_s']:>12,.1f} images/s  (step "
        f"{metrics['benchmark_train_step_ms']:.1f} ms, {metrics['benchmark_data_wait_share']:.1%} of it waiting "
        f"for data)",
        f"  inference  {metrics['benchmark_inference_images_per_s']:>12,.1f} images/s",
    ]
    if "benchmark_mfu" in metrics:
        lines.append(
            f"  MFU        {metrics['benchmark_mfu']:>12.1%}  ({metrics['benchmark_achieved_tflops']:.4g} "
            f"TFLOP/s = 6 x {macs:,} MACs x images/s, of a {metrics['benchmark_peak_tflops']:.4g} TFLOP/s "
            f"{dtype} matmul peak)"
        )
    else:
        lines.append("  MFU        unknown: the model's MACs need a fixed input size")
    return "\n".join(lines)
