"""Reload a SavedModel with TensorFlow alone and run its serving signature.

Run as a script in a fresh process (never imported): it proves the export serves without visionkit.
usage: python reload_check.py EXPORT_DIR INPUTS.npz OUTPUTS.npz
"""

import sys

import numpy as np
import tensorflow as tf


def main(export_dir: str, inputs_path: str, outputs_path: str) -> None:
    serve = tf.saved_model.load(export_dir).signatures["serving_default"]
    images = np.load(inputs_path)["images"]
    (name,) = serve.structured_input_signature[1]  # "images", or "series" for a sequence model
    outputs = serve(**{name: tf.constant(images)})
    if any(name.startswith("visionkit") for name in sys.modules):
        sys.exit("reload check imported visionkit; the export must serve without it")
    np.savez(outputs_path, **{name: value.numpy() for name, value in outputs.items()})


if __name__ == "__main__":
    main(*sys.argv[1:4])
