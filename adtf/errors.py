"""Errors adtf raises on purpose: each names the file or option and what is wrong.

The CLI prints these as one line and exits with status 2 instead of a traceback.
"""
import difflib
import threading

# Set by the console scripts' SIGTERM handler before it raises SystemExit. Python runs a signal handler wherever the
# main thread is, a finalizer too (a dataset iterator's __del__ runs at every epoch's end), and an exception raised in
# a finalizer is printed and dropped: the likeliest reason why a fit went on after SIGTERM, its cache kept (seen
# under load, never caught with its stderr). adtf.callbacks.StopWhenTerminated raises it again at the next epoch's end.
TERMINATED = threading.Event()


class AdtfError(Exception):
    """Base class of every error adtf raises for bad input or a missing resource."""


class DataError(AdtfError, ValueError):
    """A dataset, image or mask cannot be used (names the path and the problem)."""


class WeightsError(AdtfError, RuntimeError):
    """Pretrained weights cannot be loaded (says which file to put where)."""


class UnsafeCheckpointError(WeightsError):
    """A checkpoint asks the unpickler for something a plain state dict never needs."""


def did_you_mean(name, choices):
    """``"; did you mean 'x'?"`` for the choice nearest a misspelt ``name`` (difflib's default closeness), or ``""``."""
    near = difflib.get_close_matches(str(name), list(choices), n=1)
    return f"; did you mean {near[0]!r}?" if near else ""
