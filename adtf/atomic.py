"""Write outputs atomically: a crash never leaves a half-written file behind."""
import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success.

    Works for files and for folders (a SavedModel, say): whatever the body writes at
    the yielded path replaces ``path`` in one rename.
    """
    path = Path(path)
    if path.is_symlink():  # a link to the run's folder (/models/current): replace what it points at, keep the link
        path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(path)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tmp = tmp_dir / (path.name + suffix)
    try:
        try:
            yield tmp
            _sync(tmp)
        except Exception as error:
            named = _as_system_error(error, tmp_dir, path)
            if named is None:
                raise
            raise named from error
        if path.is_dir() and not path.is_symlink():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _sync_folder(path.parent)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


_SYSTEM_ERRORS = {code: os.strerror(code) for code in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT)}


def _as_system_error(error, tmp_dir, path):
    """The system's one-line error naming the output ``path`` for a write into ``tmp_dir`` that failed, or None to
    pass ``error`` on as it is. A write() or fsync() on a full disk names no file; TensorFlow's writers (a
    SavedModel's variables) and h5py bury the system's words in a page of text naming the temporary file. A failure
    about any other file (an input that could not be read) is left as it is."""
    if isinstance(error, OSError) and error.errno is not None:
        return OSError(error.errno, os.strerror(error.errno), str(path)) if error.filename is None else None
    if not (isinstance(error, OSError) or type(error).__module__.startswith("tensorflow")) or str(tmp_dir) not in str(
            error):
        return None
    code = next((code for code, words in _SYSTEM_ERRORS.items() if words in str(error)), None)
    return None if code is None else OSError(code, _SYSTEM_ERRORS[code], str(path))


def _sync(path):
    """Flush what was written at ``path`` (every file and folder below a folder) to the disk before a rename
    publishes it: on a power cut, a renamed file whose data was still in memory can come back empty."""
    for entry in [path, *path.rglob("*")] if path.is_dir() else [path] if path.exists() else []:
        if entry.is_dir() and not entry.is_symlink():
            _sync_folder(entry)
        elif entry.is_file() and not entry.is_symlink():
            with open(entry, "rb") as handle:
                os.fsync(handle.fileno())


def _sync_folder(folder):
    """Flush a folder's entries (the renames); a no-op where folders cannot be opened or synced (Windows)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)
    except OSError:
        pass


def _remove_leftovers(path):
    """What a process killed inside ``atomic_path(path)`` left beside ``path``: its temporary folder (a whole
    SavedModel, say) and the renamed old copy. Hidden, so nobody would find them, and never used again; except an
    old copy whose replacement never arrived (killed between the two renames), which is put back."""
    old = path.with_name(f".{path.name}.old")
    if old.is_dir() and not old.is_symlink() and not path.exists():
        os.replace(old, path)
    leftover = re.compile(re.escape(f".{path.name}.") + r"([a-z0-9_]{8}|old)")
    for sibling in path.parent.iterdir():
        if leftover.fullmatch(sibling.name) and sibling.is_dir() and not sibling.is_symlink():
            shutil.rmtree(sibling, ignore_errors=True)


def write_json(path, obj):
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def write_text(path, text):
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _jsonable(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
