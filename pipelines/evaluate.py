"""mode=evaluate: metrics and pictures of a checkpoint on the test split."""

from __future__ import annotations

from omegaconf import DictConfig

from pipelines import context
from pipelines.evaluation import checked_tta, evaluate_and_log, print_metrics


def run(cfg: DictConfig) -> dict[str, float]:
    from pipelines.settings import TrainerSettings, typed

    checkpoint = context.resolve_checkpoint(cfg)
    context.check_checkpoint_matches(cfg, checkpoint)
    task = context.load_task(cfg)
    tta = checked_tta(cfg, task)
    bundle = context.load_data(cfg, task)
    model = context.load_checkpoint_model(checkpoint)
    tracker, _ = context.make_tracker(cfg)
    trainer = typed(cfg.trainer, TrainerSettings, "trainer")
    identity = context.run_identity(cfg)
    with tracker.run(**identity):
        tracker.log_params({"checkpoint": str(checkpoint.model_path)})
        metrics = evaluate_and_log(model, task, bundle, tracker, batch_size=trainer.batch_size, tta=tta)
    print_metrics(task, metrics)
    return metrics
