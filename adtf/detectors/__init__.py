"""Detectors: one module per paper, all keeping the contract of ``adtf.detectors.base``.

A new method is one module plus one line in ``REGISTRY``.
"""
from adtf.detectors.base import Detector, load
from adtf.detectors.flow_dictionary import FlowDictionary
from adtf.detectors.mon import ModelOfNormality
from adtf.detectors.piade import PIADE
from adtf.detectors.pyramid_ae import PyramidAE
from adtf.detectors.simplenet import SimpleNet

REGISTRY = {
    "flow_dictionary": FlowDictionary,
    "mon": ModelOfNormality,
    "piade": PIADE,
    "pyramid_ae": PyramidAE,
    "simplenet": SimpleNet,
}


def create(method, preset=None, **options):
    """Build a detector by registry name (``adtf-fit --method``), from a preset when it has them."""
    from adtf.errors import AdtfError

    if method not in REGISTRY:
        raise AdtfError(f"unknown method {method!r}; available: {sorted(REGISTRY)}")
    cls = REGISTRY[method]
    if preset is not None and hasattr(cls, "from_preset"):
        return cls.from_preset(preset, **options)
    return cls(**options)


__all__ = ["Detector", "FlowDictionary", "ModelOfNormality", "PIADE", "PyramidAE", "REGISTRY", "SimpleNet", "create", "load"]
