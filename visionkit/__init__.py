"""visionkit: classic convolutional networks as practical Keras 3 tools."""

__version__ = "0.1.0"
