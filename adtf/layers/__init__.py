"""Keras layers the detectors are built from (serialisable, safe-mode loadable)."""
from adtf.layers.distance import DistanceToMean
from adtf.layers.flow import RealNVPFlow
from adtf.layers.gaussian_blur import GaussianBlur
from adtf.layers.local_aggregation import LocalAggregation
from adtf.layers.sparse_coding import SparseCoding
from adtf.layers.squeeze_excite import SqueezeExcite
from adtf.layers.top_regions import TopRegions
from adtf.layers.working_points import WorkingPoints

__all__ = ["DistanceToMean", "GaussianBlur", "LocalAggregation", "RealNVPFlow", "SparseCoding", "SqueezeExcite",
           "TopRegions", "WorkingPoints"]
