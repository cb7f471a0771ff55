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
from adtf.paths import expand_user

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
# A folder holding any of these is a CIFAR-10 copy (CIFAR-100: ``is_cifar_folder``), and an archive named like the
# official ones is a CIFAR copy.
_CIFAR10_FILES = ("test_batch", "test_batch.bin", "data_batch_1", "data_batch_1.bin")
CIFAR_ARCHIVE = re.compile(r"^cifar.*\.(tar\.gz|tgz|tar)$", re.IGNORECASE)
_KNOWN = {name for layout in _VERSIONS.values() for name in (*layout["train"], layout["test"],
                                                              layout["meta"].format(labels="coarse"),
                                                              layout["meta"].format(labels="fine"))}
_LARGEST = 200 * 2**20


def read_cifar(path, *, seed=0, normal_class=None, labels=None, train_fraction=0.8):
    """CIFAR-10 or CIFAR-100 (either version, a folder or the ``.tar.gz``) as an ``AnomalyDataset``.

    Args:
        path: the extracted folder (``cifar-10-batches-py``, ...), a folder holding it, or the ``.tar.gz``.
        seed: the split's seed where only the test split is present.
        normal_class: the normal class, by index or name (``3`` or ``cat``; default: the first, 0).
        labels: CIFAR-100 only: ``coarse`` (20 superclasses, the default) or ``fine`` (100 classes).
        train_fraction: where the training files are absent, the share of the test split's normal images
            that trains.
    """
    files = _Files(path)
    version = files.version()
    cifar100 = version.startswith("cifar100")
    if not cifar100 and labels is not None:
        raise DataError(f"{files.where}: labels={labels!r} applies to CIFAR-100 only; this is CIFAR-10")
    labels = labels or "coarse"
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
            int(normal_class) if normal_class.isdecimal() else normal_class)
    if not (isinstance(normal_class, int) and 0 <= normal_class < len(names)):
        hint = f" (the {labels} labels; labels=fine names CIFAR-100's 100 classes)" if cifar100 and labels == "coarse" \
            else ""
        raise DataError(f"cifar: normal_class={normal_class!r} must be a class index 0-{len(names) - 1} or one of "
                        f"{', '.join(names)}{hint}")
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

        given = expand_user(str(path)) if path else None
        if given is not None and not given.exists() and not given.is_absolute():
            given = datasets_root() / given
        if given is not None and given.is_file() and given.name in _KNOWN:  # one of the files: its folder
            given = given.parent
        if given is not None and given.is_dir() and not any(
                map(is_cifar_folder, (given, *(p for p in given.iterdir() if p.is_dir())))):
            archives = sorted(p for p in given.iterdir() if p.is_file() and CIFAR_ARCHIVE.search(p.name))
            if len(archives) > 1:
                raise DataError(f"{given}: holds more than one CIFAR archive ({', '.join(p.name for p in archives)})"
                                "; give the one to read")
            given = archives[0] if archives else given  # the folder the archive was downloaded to
        if given is not None and given.is_file():
            self.where, self._files = given, {}
            try:
                with tarfile.open(given) as tar:
                    for member in tar:
                        name = Path(member.name).name
                        if member.isfile() and name in _KNOWN:
                            _check_size(member.size, given / name)
                            self._files[name] = tar.extractfile(member).read()
            except (OSError, EOFError, tarfile.TarError) as e:
                raise DataError(f"{given}: not a readable CIFAR archive ({type(e).__name__}: {e}); give the "
                                "cifar-*.tar.gz, or the folder its files were extracted to") from None
            return
        root = resolve_dir(given if given is not None and given.is_dir() else path, "CIFAR")
        holding = [f for f in [root] + sorted(p for p in root.iterdir() if p.is_dir()) if is_cifar_folder(f)]
        if len(holding) > 1 and holding[0] != root:
            raise DataError(f"{root}: holds more than one CIFAR copy ({', '.join(f.name for f in holding)}); "
                            "give the one to read")
        self.where = holding[0] if holding else root
        self._files = {p.name: p for p in self.where.iterdir() if p.is_file()}

    def has(self, name):
        return name in self._files

    def read(self, name):
        data = self._files[name]
        if isinstance(data, bytes):
            return data
        _check_size(data.stat().st_size, data)
        return data.read_bytes()

    def version(self):
        for version, layout in _VERSIONS.items():
            if self.has(layout["test"]) or any(self.has(n) for n in layout["train"]):
                return version
        raise DataError(f"{self.where}: no CIFAR files (test_batch and data_batch_1..5 from cifar-10-python.tar.gz, "
                        "their .bin versions, or CIFAR-100's train and test), here or in a subfolder")


def is_cifar_folder(folder):
    """Whether ``folder`` holds a CIFAR copy's files (CIFAR-100's ``train``/``test`` only beside its ``meta`` or its
    label names: alone, such names say little)."""
    files = {name for name in _KNOWN if (folder / name).is_file()}
    return bool(files & set(_CIFAR10_FILES)) or bool(files & {"test", "train", "test.bin", "train.bin"}) and bool(
        files & {"meta", "coarse_label_names.txt", "fine_label_names.txt"})


def _check_size(size, where):
    # The largest official file (CIFAR-100's train) is 158 MB; a larger one is not CIFAR, and reading it whole
    # (an archive's member expands without bound) could take all the memory there is.
    if size > _LARGEST:
        raise DataError(f"{where}: {size / 2**20:.0f} MiB, larger than any CIFAR file ({_LARGEST / 2**20:.0f} MiB "
                        "at most): not a CIFAR file")


def _class_names(files, meta, cifar100, labels):
    """The classes' names from the version's metadata file; CIFAR-10's fixed names, or numbers, without it."""
    if files.has(meta):
        data = files.read(meta)
        if meta.endswith(".txt"):
            names = [line.strip() for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
        else:
            where = files.where / meta
            found = _field(_unpickle(data, where), f"{labels}_label_names" if cifar100 else "label_names", where)
            if not isinstance(found, (list, tuple)):
                raise DataError(f"{where}: the class names are not a list (found {type(found).__name__})")
            names = [_text(n) for n in found]
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
    label_list = _field(batch, f"{labels}_labels" if cifar100 else "labels", name)
    try:
        label_list = np.asarray(label_list)
    except ValueError:  # a ragged list
        label_list = np.zeros(0, np.float32)
    if not (isinstance(pixels, np.ndarray) and pixels.ndim == 2 and pixels.shape[1] == _PIXELS and len(pixels)
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


class _Refused(pickle.UnpicklingError):
    """The pickle asks for something no CIFAR file does (as against one that is merely broken)."""


class _NDArrayType:
    """Stand-in for ``numpy.ndarray`` as a pickle names it: only ``_reconstruct`` may receive it."""

    @staticmethod
    def __setstate__(state):  # BUILD on the class itself would set attributes on it for every later load
        raise _Refused("it sets state on numpy.ndarray itself, which no CIFAR file does")


class _DType:
    """Stand-in for ``numpy.dtype(spec, align, copy)``: plain numeric types only, never ``object``."""

    def __init__(self, spec, align=False, copy=False):
        spec = spec.decode("latin1") if isinstance(spec, bytes) else spec  # Python 2's str under encoding="bytes"
        if not (isinstance(spec, str) and re.fullmatch(r"[biuf]\d{1,2}|b1|\?", spec)):
            raise _Refused(f"it asks for the dtype {spec!r:.40}, which no CIFAR array has")
        self.dtype = np.dtype(spec)

    def __setstate__(self, state):
        order = state[1] if isinstance(state, tuple) and len(state) > 1 else "|"
        order = order.decode("latin1") if isinstance(order, bytes) else order
        if order not in ("<", ">", "|", "="):
            raise ValueError(f"byte order {order!r:.20}")
        self.dtype = self.dtype.newbyteorder(order) if order in "<>" else self.dtype


class _Array:
    """What ``numpy.core.multiarray._reconstruct`` returns, before its state (shape, dtype, bytes) arrives."""

    def __init__(self, unpickler):
        self.unpickler, self.array = unpickler, None

    def __setstate__(self, state):
        _version, shape, dtype, fortran, raw = state
        self.array = self.unpickler.frombuffer(raw, dtype, shape, "F" if fortran else "C")


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Resolves only numpy's array, dtype and scalar reconstructors (and how Python spells bytes), each to a
    stand-in bound to this load: a BUILD on one cannot reach the next load. Everything it makes is charged to
    a budget of a few times the file's size, so a small file cannot claim gigabytes by rebuilding one array
    many times; official files make about their own size."""

    def __init__(self, data):
        super().__init__(io.BytesIO(data), encoding="bytes")  # Python 2 wrote the official files
        self.budget = 3 * len(data) + 2**20
        array_modules = ("numpy.core.multiarray", "numpy._core.multiarray")
        self.safe_globals = {
            **{(module, "_reconstruct"): _fresh(self.reconstruct) for module in array_modules},
            **{(module, "scalar"): _fresh(self.scalar) for module in array_modules},
            **{(module, "_frombuffer"): _fresh(self.frombuffer) for module in ("numpy.core.numeric",
                                                                                "numpy._core.numeric")},
            ("numpy", "ndarray"): _NDArrayType,
            ("numpy", "dtype"): _DType,
            ("_codecs", "encode"): _fresh(self.latin1_bytes),
            **{(module, "bytes"): _fresh(self.empty_bytes) for module in ("__builtin__", "builtins")},
        }

    def find_class(self, module, name):
        try:
            return self.safe_globals[module, name]
        except (KeyError, TypeError):
            raise _Refused(f"it asks for {module}.{name}, which a CIFAR file never needs (a pickle can run any "
                           "such callable)") from None

    def persistent_load(self, pid):
        raise _Refused("it refers to an outside object, which a CIFAR file never does")

    def spend(self, n):
        self.budget -= n
        if self.budget < 0:
            raise _Refused("it builds far more data than the file holds")

    def reconstruct(self, cls, *unused):
        if cls is not _NDArrayType:
            raise _Refused("it asks for an array subclass, which no CIFAR file holds")
        return _Array(self)

    def frombuffer(self, raw, dtype, shape, order="C"):
        if not isinstance(dtype, _DType):
            raise ValueError("an array without a plain numeric dtype")
        if isinstance(raw, str):  # how a Python 2 pickle's bytes arrive under encoding="latin1"
            raw = raw.encode("latin1")
        shape = tuple(int(n) for n in shape)
        if not isinstance(raw, (bytes, bytearray)) or min(shape, default=0) < 0 or \
                len(raw) != int(np.prod(shape, dtype=object)) * dtype.dtype.itemsize:
            raise ValueError(f"array data of the wrong size for shape {shape}")
        self.spend(len(raw))
        return np.frombuffer(raw, dtype.dtype).reshape(shape, order=order).astype(dtype.dtype.newbyteorder("="))

    def scalar(self, dtype, raw):  # numpy's integer scalars (np.int64 labels), as Python 3 pickles them
        return self.frombuffer(self.latin1_bytes(raw) if isinstance(raw, str) else raw, dtype, (1,))[0]

    def latin1_bytes(self, text, encoding="latin1"):  # how a protocol-2 pickle written by Python 3 spells bytes
        if encoding != "latin1" or not isinstance(text, str):
            raise ValueError("only latin1-encoded bytes")
        self.spend(len(text))
        return text.encode("latin1")

    @staticmethod
    def empty_bytes(*args):  # how a protocol-2 pickle written by Python 3 spells b""; bytes(n) would allocate n
        if args:
            raise _Refused("it calls bytes() with arguments, which no CIFAR file does")
        return b""


def _fresh(method):
    """A new function object per load: a pickle's BUILD on a bound method would set attributes on the function
    shared by every load."""
    return lambda *args: method(*args)


def _unpickle(data, name):
    """A CIFAR pickle (dicts, lists, bytes and numeric arrays) read without running anything it names."""
    try:
        return _materialize(_ArraysOnlyUnpickler(data).load(), {})
    except _Refused as e:
        raise DataError(f"{name}: refused to load: {e}") from None
    except Exception as e:  # a malformed or truncated pickle ends here, never as a deep traceback
        raise DataError(f"{name}: not a readable CIFAR pickle ({type(e).__name__}: {e})") from None


def _materialize(obj, memo):
    """``obj`` with its arrays in place; each object once (``memo``, by id), so that lists sharing their items do
    not unfold exponentially and cycles end."""
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, _Array):
        if obj.array is None:
            raise ValueError("an array without data")
        result = obj.array
    elif isinstance(obj, dict):
        result = memo[id(obj)] = {}
        result.update((key, _materialize(value, memo)) for key, value in obj.items())
    elif isinstance(obj, list):
        result = memo[id(obj)] = []
        result.extend(_materialize(value, memo) for value in obj)
    elif isinstance(obj, tuple):
        result = tuple(_materialize(value, memo) for value in obj)
    elif isinstance(obj, _DType) or obj is _NDArrayType:
        raise ValueError("a bare numpy type")
    else:
        result = obj
    memo[id(obj)] = result
    return result
