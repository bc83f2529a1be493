"""mode=explain: what a trained network learned and where it looks (visionkit.explain), as PNGs in the run
directory and in MLflow. Images: predict.input's folder, else the test split of the checkpoint's data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from pipelines import context
from pipelines.explaining import DENSE_TASKS, folder_images, save_and_log, split_images
from visionkit.errors import UserError

TOP_PATCH_IMAGES = 512  # top_patches searches at most this many images
LAYER_METHODS = ("filters", "activations", "top_patches")  # what a layer holds: no score to explain


def run(cfg: DictConfig) -> dict[str, float]:
    from visionkit.explain.render import METHODS, RANDOMISABLE, Options, randomisation_spearman, render

    settings = OmegaConf.to_container(cfg.explain, resolve=True)
    method, count, output = settings.pop("method"), settings.pop("num_images"), settings.pop("output")
    if method not in METHODS:
        raise UserError(f"explain.method must be one of {', '.join(METHODS)}, received {method!r}")
    if not isinstance(count, int) or count < 1:
        raise UserError(f"explain.num_images must be at least 1, received {count!r}")
    with context.as_user_error("explain"):
        options = Options(**settings)
    checkpoint = context.resolve_checkpoint(cfg)
    if checkpoint.metadata["task"] not in DENSE_TASKS and method not in LAYER_METHODS:
        raise UserError(
            f"explain.method={method} explains {', '.join(DENSE_TASKS)} models; a {checkpoint.metadata['task']} "
            f"checkpoint has {', '.join(LAYER_METHODS)}"
        )
    images = explained_images(cfg, checkpoint, TOP_PATCH_IMAGES if method == "top_patches" else count)
    model = context.load_checkpoint_model(checkpoint)
    with context.as_user_error(f"explain.method={method}"):
        picture = render(model, images[:count], method, options, dataset=images)
    tracker, _ = context.make_tracker(cfg)
    with tracker.run(**context.run_identity(cfg)):
        explain = {f"explain.{k}": v for k, v in OmegaConf.to_container(cfg.explain, resolve=True).items()}
        tracker.log_params({"checkpoint": str(checkpoint.model_path), **explain})
        folder = Path(output) if output else context.output_dir() / "explain"
        (path,) = save_and_log({method: picture}, folder, tracker)
        metrics = {}
        if method in RANDOMISABLE:  # Adebayo et al.'s sanity check of the maps just drawn
            metrics["explain_randomisation_spearman"] = randomisation_spearman(model, images[:count], method, options)
            tracker.log_metrics(metrics)
    print(f"explain.method={method}: {len(images)} images -> {path}")
    for name, value in metrics.items():
        print(f"{name}={value:.4f} (Spearman rank correlation of the maps before and after randomising the top layer)")
    return metrics


def explained_images(cfg: DictConfig, checkpoint, count: int) -> np.ndarray:
    """Up to `count` images: predict.input's, else the test split's."""
    if cfg.predict.input:
        return folder_images(Path(cfg.predict.input).expanduser(), checkpoint.metadata["input_shape"], count)
    context.check_checkpoint_matches(cfg, checkpoint)
    test = context.load_data(cfg, context.load_task(cfg)).test
    if not len(test):
        raise UserError(f"the test split of data={cfg.data.name} is empty: pass predict.input=<folder of images>")
    return split_images(test, count)
