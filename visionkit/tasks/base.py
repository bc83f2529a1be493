"""What every task provides. The pipeline code is the same for all tasks; what differs lives here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from visionkit.errors import UserError
from visionkit.outputs import AUX_LOSS_WEIGHT, MAIN_OUTPUT


class Task:
    """Head, loss, metrics, target encoding, evaluation, pictures and serving outputs of one task."""

    name: str = ""
    target_key: str = ""  # the sample key holding this task's target
    monitor: str = "val_loss"  # the validation metric that picks the best checkpoint
    monitor_mode: str = "min"  # "min" or "max": whether a lower or a higher monitor value is better
    monitor_from_callback: bool = False  # the monitor is added to the logs by a task callback, not a Keras metric
    headline_metrics: tuple[str, ...] = ()  # evaluate() keys printed at the end of a run
    averages_views: bool = True  # whether outputs of augmented views can be averaged (test-time augmentation)
    # The serving output that is the model's raw output, unchanged: what test-time augmentation of a served
    # model averages before serving_outputs() derives the others from it. Set by every task that averages views.
    raw_serving_output: str = ""
    # The builder keywords that make the architecture's head this task's head; the task sets them, and
    # num_classes, itself.
    head: dict[str, Any] = {}

    def num_outputs(self, data) -> int:
        raise NotImplementedError

    def build_model(self, builder: Callable[..., keras.Model], *, input_shape, num_outputs, **kwargs) -> keras.Model:
        """The architecture `builder` makes, with this task's head of `num_outputs` outputs; `kwargs` are
        the builder's other keywords."""
        fixed = sorted(kwargs.keys() & {"num_classes", *self.head})
        if fixed:
            raise UserError(
                f"task '{self.name}' sets the model's {', '.join(fixed)} itself; leave it out, or build "
                f"the architecture alone with visionkit.models.build"
            )
        return builder(input_shape=input_shape, num_classes=num_outputs, **self.head, **kwargs)

    def loss(self) -> keras.losses.Loss:
        raise NotImplementedError

    def output_losses(self, output_names: list[str]) -> tuple[dict, dict]:
        """({output: loss}, {output: loss weight}) of a model with several outputs: by default the main
        output and its auxiliary heads (GoogLeNet) learn the same targets, the heads with a smaller weight."""
        return (
            {name: self.loss() for name in output_names},
            {name: 1.0 if name == MAIN_OUTPUT else AUX_LOSS_WEIGHT for name in output_names},
        )

    def metrics(self, num_outputs: int) -> list[keras.metrics.Metric]:
        raise NotImplementedError

    def encode_targets(self, samples: list[dict[str, Any]]) -> np.ndarray:
        return np.stack([np.asarray(s[self.target_key]) for s in samples])

    def training_callbacks(self, data, log_figure: Callable) -> list[keras.callbacks.Callback]:
        """Callbacks the task adds to training, e.g. pictures logged with `log_figure(figure, path)`."""
        return []

    def serving_metadata(self, data) -> dict[str, Any]:
        """What prediction needs besides the class and target names (stored beside checkpoints and exports)."""
        return {}

    def evaluate(self, y_true: np.ndarray, y_pred: np.ndarray, data) -> dict[str, float]:
        """Final metrics computed with numpy on the whole split; keys without the `test_` prefix."""
        raise NotImplementedError

    def figures(self, y_true: np.ndarray, y_pred: np.ndarray, data) -> dict:
        """{file name: matplotlib figure} pictures of the evaluation."""
        return {}

    def serving_outputs(self, outputs) -> dict:
        """Named outputs of the exported model, from the model's raw output (keras.ops only)."""
        raise NotImplementedError

    def prediction_rows(self, outputs: dict[str, np.ndarray], data) -> list[dict[str, Any]]:
        """One CSV row per image from the serving outputs."""
        raise NotImplementedError
