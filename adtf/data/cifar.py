"""CIFAR-10 and CIFAR-100 as distributed, for the one-class protocol of the papers' natural-image tables.

Reads the official files, extracted or still in their ``.tar.gz``:

- the Python version (``cifar-10-batches-py``: ``data_batch_1``..``5``, ``test_batch``, ``batches.meta``;
  ``cifar-100-python``: ``train``, ``test``, ``meta``): pickles, read by a restricted unpickler that resolves
  only numpy's array and dtype reconstructors, each to a local stand-in, so no code a file names ever runs;
- the binary version (``cifar-10-batches-bin``: ``data_batch_1.bin``.., ``test_batch.bin``,
  ``batches.meta.txt``; ``cifar-100-binary``: ``train.bin``, ``test.bin``, ``*_label_names.txt``).

One class is normal, every other class anomalous (``defect`` = the class name). With both splits: the normal
class's training images train and the whole test split tests (paper 002's CIFAR-10 protocol: 5,000 and 10,000
images). With the test split alone, a seeded ``train_fraction`` of its normal-class images trains. CIFAR-100
uses its 20 superclasses by default (``labels=coarse``, the usual one-class protocol) or its 100 classes
(``labels=fine``).
"""
from __future__ import annotations

import io
import pickle
import re
import tarfile
from pathlib import Path

import numpy as np

from adtf.data.samples import one_class_dataset
from adtf.errors import DataError

CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_PIXELS = 32 * 32 * 3
# Each version's files: the training files (in order), the test file, and where the class names are.
_VERSIONS = {
    "cifar10-python": dict(train=tuple(f"data_batch_{i}" for i in range(1, 6)), test="test_batch",
                           meta="batches.meta"),
    "cifar10-binary": dict(train=tuple(f"data_batch_{i}.bin" for i in range(1, 6)), test="test_batch.bin",
                           meta="batches.meta.txt"),
    "cifar100-python": dict(train=("train",), test="test", meta="meta"),
    "cifar100-binary": dict(train=("train.bin",), test="test.bin", meta="{labels}_label_names.txt"),
}
# A folder holding any of these is a CIFAR copy, and so is an archive named like the official ones.
CIFAR_FILES = ("test_batch", "test_batch.bin", "data_batch_1", "data_batch_1.bin")
CIFAR_ARCHIVE = re.compile(r"^cifar.*\.(tar\.gz|tgz|tar)$", re.IGNORECASE)


def read_cifar(path, *, seed=0, normal_class=None, labels="coarse", train_fraction=0.8):
    """CIFAR-10 or CIFAR-100 (either version, a folder or the ``.tar.gz``) as an ``AnomalyDataset``.

    Args:
        path: the extracted folder (``cifar-10-batches-py``, ...), a folder holding it, or the ``.tar.gz``.
        seed: the split's seed where only the test split is present.
        normal_class: the normal class, by index or name (``3`` or ``cat``; default: the first, 0).
        labels: CIFAR-100 only: ``coarse`` (20 superclasses) or ``fine`` (100 classes).
        train_fraction: where the training files are absent, the share of the test split's normal images
            that trains.
    """
    files = _Files(path)
    version = files.version()
    cifar100 = version.startswith("cifar100")
    if labels not in ("coarse", "fine"):
        raise DataError(f"cifar: labels={labels!r} must be 'coarse' (CIFAR-100's 20 superclasses) or 'fine'")
    layout = _VERSIONS[version]
    names = _class_names(files, layout["meta"].format(labels=labels), cifar100, labels)
    read = _read_binary if version.endswith("binary") else _read_pickle
    splits = {}
    train_parts = [files.read(name) for name in layout["train"] if files.has(name)]
    if 0 < len(train_parts) < len(layout["train"]):
        raise DataError(f"{files.where}: {len(train_parts)} of the {len(layout['train'])} training files "
                        f"({', '.join(layout['train'])}); put all of them there, or none to split the test file")
    if train_parts:
        parts = [read(data, files.where / name, cifar100, labels) for data, name in zip(train_parts, layout["train"])]
        splits["train"] = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    if not files.has(layout["test"]):
        raise DataError(f"{files.where}: no {layout['test']} (the test split)")
    splits["test"] = read(files.read(layout["test"]), files.where / layout["test"], cifar100, labels)
    if normal_class is None:
        normal_class = 0
    elif isinstance(normal_class, str):  # a spec's options arrive as text
        normal_class = names.index(normal_class) if normal_class in names else (
            int(normal_class) if normal_class.isdigit() else normal_class)
    if not (isinstance(normal_class, int) and 0 <= normal_class < len(names)):
        raise DataError(f"cifar: normal_class={normal_class!r} must be a class index 0-{len(names) - 1} or one of "
                        f"{', '.join(names)}")
    kind = "cifar100" if cifar100 else "cifar10"
    return one_class_dataset(f"{kind}:{names[normal_class]}", kind, splits, normal_class, names, seed=seed,
                             train_fraction=train_fraction)


class _Files:
    """The dataset's files by name, from a folder (or the subfolder that holds them) or an archive (read in one
    pass: a gzipped archive read out of order is decompressed again for every step back). A file is named in
    messages as ``where / name``, an archive's as if the archive were its folder."""

    def __init__(self, path):
        from adtf.data.layouts import resolve_dir
        from adtf.paths import datasets_root

        archive = Path(str(path)).expanduser() if path else None
        if archive is not None and not archive.exists() and not archive.is_absolute():
            archive = datasets_root() / archive
        if archive is not None and archive.is_file():
            self.where, self._files = archive, {}
            known = {n for layout in _VERSIONS.values() for n in _names(layout)}
            try:
                with tarfile.open(archive) as tar:
                    for member in tar:
                        if member.isfile() and Path(member.name).name in known:
                            self._files[Path(member.name).name] = tar.extractfile(member).read()
            except (OSError, EOFError, tarfile.TarError) as e:
                raise DataError(f"{archive}: not a readable CIFAR archive ({type(e).__name__}: {e})") from None
            return
        root = resolve_dir(path, "CIFAR")
        folders = [root] + sorted(p for p in root.iterdir() if p.is_dir())
        holding = [f for f in folders if any((f / n).is_file() for n in CIFAR_FILES + ("train", "train.bin"))]
        self.where = holding[0] if holding else root
        self._files = {p.name: p for p in self.where.iterdir() if p.is_file()}

    def has(self, name):
        return name in self._files

    def read(self, name):
        data = self._files[name]
        return data if isinstance(data, bytes) else data.read_bytes()

    def version(self):
        for version, layout in _VERSIONS.items():
            if self.has(layout["test"]) or any(self.has(n) for n in layout["train"]):
                return version
        raise DataError(f"{self.where}: no CIFAR files (test_batch and data_batch_1..5 from cifar-10-python.tar.gz, "
                        "their .bin versions, or CIFAR-100's train and test), here or in a subfolder")


def _names(layout):
    return (*layout["train"], layout["test"], layout["meta"].format(labels="coarse"),
            layout["meta"].format(labels="fine"))


def _class_names(files, meta, cifar100, labels):
    """The classes' names from the version's metadata file; CIFAR-10's fixed names, or numbers, without it."""
    if files.has(meta):
        data = files.read(meta)
        if meta.endswith(".txt"):
            names = [line.strip() for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
        else:
            where = files.where / meta
            names = [_text(n) for n in _field(_unpickle(data, where), f"{labels}_label_names" if cifar100
                                              else "label_names", where)]
        if names:
            return names
    return list(CIFAR10_NAMES) if not cifar100 else [str(i) for i in range(20 if labels == "coarse" else 100)]


def _read_binary(data, name, cifar100, labels):
    """Records of 1 label byte (CIFAR-100: coarse, then fine) and 3,072 pixel bytes."""
    width = _PIXELS + (2 if cifar100 else 1)
    if not data or len(data) % width:
        raise DataError(f"{name}: {len(data)} bytes is not a whole number of {width}-byte CIFAR records (truncated?)")
    records = np.frombuffer(data, np.uint8).reshape(-1, width)
    label_column = (0 if labels == "coarse" else 1) if cifar100 else 0
    return _images(records[:, width - _PIXELS:], name), records[:, label_column].astype(np.int64)


def _read_pickle(data, name, cifar100, labels):
    batch = _unpickle(data, name)
    pixels = _field(batch, "data", name)
    label_list = np.asarray(_field(batch, f"{labels}_labels" if cifar100 else "labels", name))
    if not (isinstance(pixels, np.ndarray) and pixels.ndim == 2 and pixels.shape[1] == _PIXELS
            and pixels.dtype == np.uint8 and label_list.shape == (len(pixels),) and label_list.dtype.kind in "iu"):
        raise DataError(f"{name}: 'data' is not an [N, 3072] uint8 array with one integer label per row")
    return _images(pixels, name), label_list.astype(np.int64)


def _images(rows, name):
    # A row is the red plane, then green, then blue, each 32 rows of 32 pixels.
    return np.ascontiguousarray(rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def _field(batch, key, name):
    for candidate in (key, key.encode()):
        if isinstance(batch, dict) and candidate in batch:
            return batch[candidate]
    found = sorted(map(_text, batch)) if isinstance(batch, dict) else type(batch).__name__
    raise DataError(f"{name}: not a CIFAR file (no {key!r} in it; found {found})")


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


# --------------------------------------------------------------------------- a pickle that can only hold arrays


class _NDArrayType:
    """Stand-in for ``numpy.ndarray`` as a pickle names it: only ``_reconstruct`` may receive it."""

    @staticmethod
    def __setstate__(state):  # BUILD on the class itself would set attributes on it for every later load
        raise pickle.UnpicklingError("it sets state on numpy.ndarray itself, which no CIFAR file does")


class _DType:
    """Stand-in for ``numpy.dtype(spec, align, copy)``: plain numeric types only, never ``object``."""

    def __init__(self, spec, align=False, copy=False):
        spec = spec.decode("latin1") if isinstance(spec, bytes) else spec  # Python 2's str under encoding="bytes"
        if not (isinstance(spec, str) and re.fullmatch(r"[biuf]\d{1,2}|b1|\?", spec)):
            raise pickle.UnpicklingError(f"it asks for the dtype {spec!r:.40}, which no CIFAR array has")
        self.dtype = np.dtype(spec)

    def __setstate__(self, state):
        order = state[1] if isinstance(state, tuple) and len(state) > 1 else "|"
        order = order.decode("latin1") if isinstance(order, bytes) else order
        if order not in ("<", ">", "|", "="):
            raise ValueError(f"byte order {order!r:.20}")
        self.dtype = self.dtype.newbyteorder(order) if order in "<>" else self.dtype


class _Array:
    """What ``numpy.core.multiarray._reconstruct`` returns, before its state (shape, dtype, bytes) arrives."""

    def __init__(self, cls, *unused):
        if cls is not _NDArrayType:
            raise pickle.UnpicklingError("it asks for an array subclass, which no CIFAR file holds")
        self.array = None

    def __setstate__(self, state):
        _version, shape, dtype, fortran, raw = state
        self.array = _frombuffer(raw, dtype, shape, "F" if fortran else "C")


def _frombuffer(raw, dtype, shape, order="C"):
    if not isinstance(dtype, _DType):
        raise ValueError("an array without a plain numeric dtype")
    if isinstance(raw, str):  # how a Python 2 pickle's bytes arrive under encoding="latin1"
        raw = raw.encode("latin1")
    shape = tuple(int(n) for n in shape)
    if not isinstance(raw, (bytes, bytearray)) or len(raw) != int(np.prod(shape)) * dtype.dtype.itemsize:
        raise ValueError(f"array data of the wrong size for shape {shape}")
    return np.frombuffer(raw, dtype.dtype).reshape(shape, order=order).astype(dtype.dtype.newbyteorder("="))


def _latin1_bytes(text, encoding="latin1"):  # how a protocol-2 pickle written by Python 3 spells bytes
    if encoding != "latin1" or not isinstance(text, str):
        raise ValueError("only latin1-encoded bytes")
    return text.encode("latin1")


_SAFE_GLOBALS = {
    **{(module, "_reconstruct"): _Array for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "_frombuffer"): _frombuffer for module in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): _NDArrayType,
    ("numpy", "dtype"): _DType,
    ("_codecs", "encode"): _latin1_bytes,
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _SAFE_GLOBALS[module, name]
        except (KeyError, TypeError):
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, which a CIFAR file never needs (a pickle "
                                         "can run any such callable)") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("it refers to an outside object, which a CIFAR file never does")


def _unpickle(data, name):
    """A CIFAR pickle (dicts, lists, bytes and numeric arrays) read without running anything it names."""
    try:
        # Python 2 wrote the official files; "bytes" keeps their byte strings as bytes.
        return _materialize(_ArraysOnlyUnpickler(io.BytesIO(data), encoding="bytes").load())
    except pickle.UnpicklingError as e:
        raise DataError(f"{name}: refused to load: {e}") from None
    except Exception as e:  # a malformed or truncated pickle ends here, never as a deep traceback
        raise DataError(f"{name}: not a readable CIFAR pickle ({type(e).__name__}: {e})") from None


def _materialize(obj):
    if isinstance(obj, _Array):
        if obj.array is None:
            raise ValueError("an array without data")
        return obj.array
    if isinstance(obj, dict):
        return {key: _materialize(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(value) for value in obj)
    if isinstance(obj, _DType) or obj is _NDArrayType:
        raise ValueError("a bare numpy type")
    return obj
