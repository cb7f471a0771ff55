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


def detector_class(method):
    """The class behind a registry name (``adtf-fit --method``); an unknown name is refused with the nearest one."""
    from adtf.errors import AdtfError, did_you_mean

    if method not in REGISTRY:
        raise AdtfError(f"unknown method {method!r}{did_you_mean(str(method).lower(), REGISTRY)} "
                        f"(available: {', '.join(sorted(REGISTRY))})")
    return REGISTRY[method]


def create(method, preset=None, **options):
    """Build a detector by registry name (``adtf-fit --method``), from a preset when it has them."""
    cls = detector_class(method)
    if preset is not None and hasattr(cls, "from_preset"):
        return cls.from_preset(preset, **options)
    return cls(**options)


__all__ = ["Detector", "FlowDictionary", "ModelOfNormality", "PIADE", "PyramidAE", "REGISTRY", "SimpleNet", "create", "load"]
