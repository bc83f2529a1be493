"""Look inside a trained CNN: filters, activation maps, top-activating patches, DeconvNet projections,
vanilla and guided gradients, Grad-CAM, Guided Grad-CAM and occlusion, on the TensorFlow and JAX
backends, for functional, nested and Sequential models; and two checks of the maps (randomisation,
the pointing game). Layers are addressed by name or path (`encoder/stride16`)."""

from visionkit.explain.attribution import (
    deconvnet,
    gradcam,
    guided_backprop,
    guided_gradcam,
    input_gradient,
    occlusion,
    saliency,
    target_weights,
)
from visionkit.explain.checks import pointing_game, randomisation_check, rank_correlation
from visionkit.explain.features import TopPatches, activations, conv_kernel, top_patches
from visionkit.explain.graph import layer_paths, resolve_layer

__all__ = [
    "TopPatches",
    "activations",
    "conv_kernel",
    "deconvnet",
    "gradcam",
    "guided_backprop",
    "guided_gradcam",
    "input_gradient",
    "layer_paths",
    "occlusion",
    "pointing_game",
    "randomisation_check",
    "rank_correlation",
    "resolve_layer",
    "saliency",
    "target_weights",
    "top_patches",
]
