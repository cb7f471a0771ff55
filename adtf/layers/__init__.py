"""Keras layers the detectors are built from (serialisable, safe-mode loadable)."""
from adtf.layers.capsule_routing import CapsuleRouting, squash
from adtf.layers.distance import DistanceToMean
from adtf.layers.flow import RealNVPFlow
from adtf.layers.gaussian_blur import GaussianBlur
from adtf.layers.local_aggregation import LocalAggregation
from adtf.layers.pyramid_pooling import PyramidPooling
from adtf.layers.sparse_coding import SparseCoding
from adtf.layers.squeeze_excite import SqueezeExcite
from adtf.layers.top_regions import TopRegions
from adtf.layers.working_points import WorkingPoints

__all__ = ["CapsuleRouting", "DistanceToMean", "GaussianBlur", "LocalAggregation", "PyramidPooling", "RealNVPFlow",
           "SparseCoding", "SqueezeExcite", "TopRegions", "WorkingPoints", "squash"]
