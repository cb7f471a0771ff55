"""Errors adtf raises on purpose: each names the file or option and what is wrong.

The CLI prints these as one line and exits with status 2 instead of a traceback.
"""
import contextlib
import difflib
import re
import threading
import warnings

# Set by the console scripts' SIGTERM handler before it raises SystemExit. Python runs a signal handler wherever the
# main thread is, a finalizer too (a dataset iterator's __del__ runs at every epoch's end), and an exception raised in
# a finalizer is printed and dropped: the likeliest reason why a fit went on after SIGTERM, its cache kept (seen
# under load, never caught with its stderr). adtf.callbacks.StopWhenTerminated raises it again at the next epoch's end.
TERMINATED = threading.Event()
INTERRUPTED = threading.Event()  # the same for Ctrl-C (SIGINT), whose KeyboardInterrupt a finalizer drops too


def raise_if_stopped():
    """Raise again what a signal raised, should a finalizer have dropped it: the SIGTERM handler's SystemExit, or
    Ctrl-C's KeyboardInterrupt."""
    if TERMINATED.is_set():
        raise SystemExit(128 + 15)  # SIGTERM's exit status
    if INTERRUPTED.is_set():
        raise KeyboardInterrupt


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


@contextlib.contextmanager
def unfilled_layers_refused(failure):
    """Keras' weight loaders warn once per part of a network that a file holds no weights for (a hundred lines
    before their own error, if any), and where they then succeed, those parts keep their random initial weights:
    raise ``failure(reason)`` instead, and pass every other warning on."""
    with warnings.catch_warnings(record=True) as caught:  # the user's filters still apply to every other warning
        warnings.filterwarnings("always", message=".*freshly-initialized")  # Keras' wording (keras 3.15 saving_lib)
        yield
    unfilled = [str(w.message) for w in caught if "freshly-initialized" in str(w.message)]
    if unfilled:
        raise failure(f"{len(unfilled)} parts of the network found no weights in it (e.g. {unfilled[0]})")
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def tensorflow_message(error):
    """A TensorFlow error's first line without its internal ``{{function_node ...}}`` prefix and ``[Op:...]``
    suffix ("Invalid PNG data, size 6210"), for a message that names the file itself."""
    first = (str(error).splitlines() or [""])[0]
    return re.sub(r"^.*?\}\}\s*|\s*\[Op:.*$", "", first).strip() or type(error).__name__
