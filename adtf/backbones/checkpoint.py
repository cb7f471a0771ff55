"""Read PyTorch checkpoints into numpy arrays, without torch and without trusting the pickle.

A ``.pth`` file is a pickle, and unpickling calls whatever the file names. This reader
resolves only the few globals a state dict is made of, each to a local stand-in (no torch
code ever runs), and refuses everything else with ``UnsafeCheckpointError`` before it is
called. Both on-disk layouts torch has written are read:

- zip (torch >= 1.6): ``<archive>/data.pkl`` plus one raw file ``<archive>/data/<key>`` per storage;
- legacy: five records back to back: magic number, protocol version, sys-info dict, the
  main pickle (storages as persistent ids), the list of storage keys, then per storage an
  int64 element count followed by its raw bytes.
"""
import collections
import pickle
import zipfile
from pathlib import Path

import numpy as np

from adtf.errors import UnsafeCheckpointError, WeightsError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
# Where training scripts commonly put the state dict inside a bigger checkpoint dict.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "params")

_STORAGE_DTYPES = {
    "DoubleStorage": "f8", "FloatStorage": "f4", "HalfStorage": "f2", "BFloat16Storage": "u2",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?", "UntypedStorage": "u1",
}
_TORCH_DTYPES = {
    "float64": "f8", "float32": "f4", "float16": "f2", "bfloat16": "u2", "int64": "i8",
    "int32": "i4", "int16": "i2", "int8": "i1", "uint8": "u1", "bool": "?",
}


class _Immutable:
    """The stand-ins below are shared by every load: a pickle's BUILD opcode must not change them (it set a
    storage type's dtype, and every later checkpoint in the process was read as another type)."""

    __slots__ = ()

    def __setstate__(self, state):
        raise ValueError(f"the pickle sets state on {type(self).__name__}, which a plain state dict never does")


class _StorageType(_Immutable):
    """Stand-in for ``torch.FloatStorage`` and friends: only carries the element type."""

    __slots__ = ("name", "dtype")

    def __init__(self, name, dtype):
        self.name, self.dtype = name, np.dtype(dtype)


class _TorchDType(_Immutable):
    """Stand-in for ``torch.float32`` and friends, which a pickle may name; never numpy's own shared dtypes."""

    __slots__ = ("dtype",)

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)


class _Storage:
    """A storage named by the pickle; its bytes are attached once they are read."""

    def __init__(self, key, dtype, bfloat16=False, base=None, offset=0, numel=None):
        self.key, self.dtype, self.bfloat16 = key, dtype, bfloat16  # bfloat16 is read as uint16, widened later
        self.base, self.offset, self.numel = base, offset, numel
        self.data = None

    def array(self, byteorder):
        if self.base is not None:  # a legacy storage view (torch < 0.4)
            return self.base.array(byteorder)[self.offset:self.offset + self.numel]
        return np.frombuffer(self.data, self.dtype.newbyteorder("<" if byteorder == "little" else ">"))


class _Tensor(_Immutable):
    """What ``torch._utils._rebuild_tensor_v2`` would build: a strided view of a storage."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage, offset, size, stride, *unused):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def to_numpy(self, byteorder):
        if not isinstance(self.storage, _Storage):
            raise ValueError("tensor without a storage")
        data = self.storage.array(byteorder)
        size, stride, offset = tuple(map(int, self.size)), tuple(map(int, self.stride)), int(self.offset)
        if len(size) != len(stride) or min(size + stride + (offset,), default=0) < 0:
            raise ValueError(f"bad tensor geometry size={size} stride={stride} offset={offset}")
        # Bounds check before as_strided, which would otherwise read outside the buffer.
        if 0 not in size and offset + sum((n - 1) * s for n, s in zip(size, stride)) >= data.size:
            raise ValueError(f"tensor size={size} stride={stride} offset={offset} overruns its storage")
        view = np.lib.stride_tricks.as_strided(data[offset:], size, [s * data.itemsize for s in stride])
        array = np.array(view, dtype=data.dtype.newbyteorder("="), order="C")
        if self.storage.bfloat16:
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *state):
    return data


def _latin1_bytes(text, encoding="latin1"):  # how protocol-2 pickles spell ``bytes``
    if encoding != "latin1" or not isinstance(text, str):
        raise ValueError("only latin1-encoded bytes are accepted")
    return text.encode("latin1")


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _Tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _Tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): tuple,
    ("_codecs", "encode"): _latin1_bytes,
    **{("torch", name): _StorageType(name, dtype) for name, dtype in _STORAGE_DTYPES.items()},
    **{("torch.storage", name): _StorageType(name, "u1") for name in ("UntypedStorage", "_UntypedStorage")},
    **{("torch", name): _TorchDType(dtype) for name, dtype in _TORCH_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path, storages):
        super().__init__(file)
        self.path, self.storages = path, storages

    def find_class(self, module, name):
        try:
            return _SAFE_GLOBALS[module, name]
        except (KeyError, TypeError):
            raise UnsafeCheckpointError(
                f"{self.path}: refused to load: the checkpoint asks for the global {module}.{name}, which a "
                "plain PyTorch state dict never needs (a pickle can run any such callable). Re-save the "
                "weights with torch.save(model.state_dict(), path) from a trusted source."
            ) from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise UnsafeCheckpointError(f"{self.path}: refused to load: unexpected persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel, *view = pid
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = _Storage(key, storage_type.dtype, storage_type.name == "BFloat16Storage")
        if view and view[0] is not None:  # (view_key, offset, view_size) in very old files
            view_key, offset, view_size = view[0]
            return _Storage(view_key, storage.dtype, storage.bfloat16, storage, int(offset), int(view_size))
        return storage


def load_torch_state_dict(path):
    """Read a PyTorch checkpoint (zip or legacy format) into ``{name: numpy array}``.

    Only tensors are kept. A state dict wrapped in a training checkpoint (under
    ``"state_dict"``, ``"model"``, ...) is found, and the ``module.`` prefix that
    ``DataParallel`` adds is removed.

    Args:
        path: a ``.pth``/``.pt`` file written by ``torch.save``.

    Returns:
        dict mapping parameter names to numpy arrays (float32 for float32 weights).

    Raises:
        UnsafeCheckpointError: the pickle names a global a state dict never needs.
        WeightsError: the file is missing, truncated or not a PyTorch checkpoint.

    Example:
        >>> state = load_torch_state_dict("resnet18-f37072fd.pth")  # doctest: +SKIP
        >>> state["conv1.weight"].shape
        (64, 3, 7, 7)
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such checkpoint file")
    try:
        obj, byteorder = (_read_zip if zipfile.is_zipfile(path) else _read_legacy)(path)
        obj = _materialize(obj, byteorder)
    except (WeightsError, UnsafeCheckpointError):
        raise
    except Exception as error:  # any malformed pickle or zip ends here, never as a deep traceback
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({type(error).__name__}: {error})") from None
    return _state_dict_of(obj, path)


def _read_zip(path):
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise WeightsError(f"{path}: a zip file but not a PyTorch checkpoint (no <archive>/data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = archive.read(prefix + "byteorder").decode() if prefix + "byteorder" in names else "little"
        storages = {}
        with archive.open(pickles[0]) as file:
            obj = _RestrictedUnpickler(file, path, storages).load()
        for key, storage in storages.items():
            storage.data = archive.read(f"{prefix}data/{key}")
    return obj, byteorder


def _read_legacy(path):
    with open(path, "rb") as file:
        def record(storages=None):
            return _RestrictedUnpickler(file, path, {} if storages is None else storages).load()

        try:
            magic = record()
        except pickle.UnpicklingError:
            magic = None
        if magic != _LEGACY_MAGIC:
            raise WeightsError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor the legacy format)")
        if record() != _LEGACY_PROTOCOL:
            raise WeightsError(f"{path}: unsupported legacy PyTorch protocol version")
        byteorder = "little" if record().get("little_endian", True) else "big"
        storages = {}
        obj = record(storages)
        for key in record():
            storage = storages[key]
            count = int.from_bytes(file.read(8), byteorder, signed=True)
            nbytes = count * storage.dtype.itemsize
            storage.data = file.read(nbytes)
            if count < 0 or len(storage.data) != nbytes:
                raise WeightsError(f"{path}: truncated (storage {key} is shorter than its {count} elements)")
    return obj, byteorder


def _materialize(obj, byteorder):
    if isinstance(obj, _Tensor):
        return obj.to_numpy(byteorder)
    if isinstance(obj, dict):
        return {key: _materialize(value, byteorder) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(value, byteorder) for value in obj)
    return obj


def _state_dict_of(obj, path):
    while isinstance(obj, dict) and not any(isinstance(v, np.ndarray) for v in obj.values()):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    tensors = {k: v for k, v in obj.items() if isinstance(v, np.ndarray)} if isinstance(obj, dict) else {}
    if not tensors:
        keys = list(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
        raise WeightsError(f"{path}: holds no state dict of tensors (found {keys})")
    return {key.removeprefix("module."): value for key, value in tensors.items()}
