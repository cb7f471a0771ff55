"""Keras layers the detectors are built from (serialisable, safe-mode loadable)."""
from adtf.layers.distance import DistanceToMean

__all__ = ["DistanceToMean"]
