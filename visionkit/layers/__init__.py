"""Custom layers the classic architectures need. Each uses keras.ops only (TensorFlow and JAX
backends) and is registered as Keras-serializable, so `.keras` files load with safe_mode=True
after importing this package (and visionkit.tasks for the losses)."""

from visionkit.layers.anchors import AnchorBoxes
from visionkit.layers.fixed_filter import FixedFilter, apply_filter
from visionkit.layers.initializers import BilinearUpsampling, ContextIdentity
from visionkit.layers.lrn import LocalResponseNormalization
from visionkit.layers.pooling_indices import MaxPoolingWithArgmax2D, MaxUnpooling2D
from visionkit.layers.position_bias import PositionBias
from visionkit.layers.region_proposals import FeatureCells, RegionOutputs, RegionProposals
from visionkit.layers.roi_pooling import ROIPooling
from visionkit.layers.series_masking import ObservedMean, StandardizeSeries

__all__ = [
    "AnchorBoxes",
    "BilinearUpsampling",
    "ContextIdentity",
    "FeatureCells",
    "FixedFilter",
    "LocalResponseNormalization",
    "MaxPoolingWithArgmax2D",
    "MaxUnpooling2D",
    "ObservedMean",
    "PositionBias",
    "ROIPooling",
    "RegionOutputs",
    "RegionProposals",
    "StandardizeSeries",
    "apply_filter",
]
