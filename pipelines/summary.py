"""mode=summary: the layer table of a model (shapes, parameters, MACs, receptive field), printed and
written to the run directory as layer_table.txt and layer_table.csv. No data is loaded, nothing is
trained and no MLflow run is made."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import keras
from omegaconf import DictConfig

from pipelines import context
from pipelines.settings import SummarySettings, check_option_types, positive, typed
from visionkit.analysis import format_table, layer_table
from visionkit.analysis.layer_table import COLUMNS, format_cell
from visionkit.models import MODELS
from visionkit.models.common import inference_model
from visionkit.tasks import build


def run(cfg: DictConfig) -> list[dict[str, Any]]:
    settings = typed(cfg.summary, SummarySettings, "summary")
    meta = MODELS.meta(cfg.model.name)
    input_shape = tuple(settings.input_shape or meta["paper_input"])
    num_classes = meta["paper_classes"] if settings.num_classes is None else settings.num_classes
    positive(num_classes, "summary.num_classes")
    model = build_without_weights(cfg, input_shape, num_classes)
    rows = layer_table(model)
    text = format_table(rows)
    shape = "x".join(map(str, input_shape))
    print(f"{cfg.model.name} ({meta['paper']}) for {cfg.task.name}, {shape} input, {num_classes} outputs\n\n{text}")
    write_table(rows, text, context.output_dir())
    return rows


def build_without_weights(cfg: DictConfig, input_shape: tuple, num_classes: int) -> keras.Model:
    """The model as served (no auxiliary heads), with the options of cfg.model, its weights never filled.

    Inside a StatelessScope that does not initialise, Keras defers creating variable values: shapes and
    parameter counts are all there, and VGG16's 138M random numbers (seconds of CPU) are never drawn.
    """
    name = cfg.model.name
    kwargs = context.options(cfg.model, "name", *context.INITIALISATION_KEYS)
    check_option_types(MODELS.get(name), kwargs, "model")
    with context.as_user_error(f"model '{name}'"), keras.StatelessScope(initialize_variables=False):
        return inference_model(
            build(name, input_shape=input_shape, num_classes=num_classes, task=cfg.task.name, **kwargs)
        )


def write_table(rows: list[dict[str, Any]], text: str, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "layer_table.txt").write_text(text + "\n")
    with (directory / "layer_table.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(COLUMNS)
        writer.writerows([_csv_cell(key, row[key]) for key in COLUMNS] for row in rows)
    print(f"layer table written to {directory / 'layer_table.txt'} and layer_table.csv")


def _csv_cell(key: str, value: Any):
    return value if key in ("params", "macs") else format_cell(key, value)  # counts as plain numbers
