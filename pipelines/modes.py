"""The modes of `python -m pipelines.run mode=<name>`: the one list. Each mode is the pipelines module of the
same name, whose `run(cfg)` does it; the command line's check, its --help and the config refer here."""

from __future__ import annotations

MODES = {
    "train": "verify the data, train (or resume), evaluate on the test split, export a SavedModel and verify it",
    "evaluate": "metrics and pictures of a checkpoint on the test split",
    "predict": "a trained or exported model over a folder of images -> CSV",
    "export": "a checkpoint as a verified SavedModel",
    "summary": "the layer table: shapes, parameters, MACs, receptive field (no data, no training)",
    "preview": "the first augmented training samples, targets drawn, as one grid",
    "verify": "check the dataset as training would load it; report what was kept, converted and skipped",
    "compare": "the runs of an experiment as a table sorted by a metric",
    "benchmark": "training and inference images/s, the share of time waiting for data, and MFU",
    "explain": "what a checkpoint learned and where it looks: filters, DeconvNet, Grad-CAM, occlusion ... as PNGs",
}
# mode=benchmark logs to one experiment for every task (throughput compares across tasks and machines);
# mode=compare sorts that experiment's runs by these figures, and a multirun creates it before its jobs start.
BENCHMARK_EXPERIMENT = "benchmark"
BENCHMARK_METRICS = ("benchmark_train_images_per_s", "benchmark_inference_images_per_s", "benchmark_mfu")


def modes_help() -> str:
    """One line per mode, for --help."""
    width = max(map(len, MODES))
    return "\n".join(f"  mode={name:<{width}}  {description}" for name, description in MODES.items())
