"""Model analysis: the layer table (shapes, parameters, MACs, receptive field) and evaluation plots."""

from visionkit.analysis.layer_table import format_table, layer_table, totals

__all__ = ["format_table", "layer_table", "totals"]
