"""The MLflow model that `tracking.register=true` registers: the run's verified SavedModel, served by
TensorFlow alone (uint8 images [N, H, W, C] in, the task's named outputs out).

MLflow logs this file as the model's code (models from code) and runs it to load the model, in a process
that may have neither visionkit nor Keras's custom objects: it imports only MLflow, NumPy and TensorFlow.
"""

from __future__ import annotations

import mlflow
import numpy as np
import tensorflow as tf


class SavedModelServer(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        (saved_model,) = context.artifacts.values()  # the one artifact logged with this code: the SavedModel
        self.serve = tf.saved_model.load(saved_model).signatures["serving_default"]

    def predict(self, context, model_input: np.ndarray, params=None) -> dict[str, np.ndarray]:
        outputs = self.serve(images=tf.constant(np.asarray(model_input, dtype=np.uint8)))
        return {name: value.numpy() for name, value in outputs.items()}


mlflow.models.set_model(SavedModelServer())
