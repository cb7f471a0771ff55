"""Errors adtf raises on purpose: each names the file or option and what is wrong.

The CLI prints these as one line and exits with status 2 instead of a traceback.
"""


class AdtfError(Exception):
    """Base class of every error adtf raises for bad input or a missing resource."""


class DataError(AdtfError, ValueError):
    """A dataset, image or mask cannot be used (names the path and the problem)."""


class WeightsError(AdtfError, RuntimeError):
    """Pretrained weights cannot be loaded (says which file to put where)."""


class UnsafeCheckpointError(WeightsError):
    """A checkpoint asks the unpickler for something a plain state dict never needs."""
