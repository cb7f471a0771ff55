"""The backbone builder: names, taps, preprocessing, weight sources, the conversion cache and failing fast offline.

The torchvision backbones are exercised through a stand-in ``adtf.backbones.torchvision_nets``
(one 1x1 convolution) so that this file tests the builder's side of that interface only.
"""
import hashlib
import socket
import sys
import time
import types
import warnings

import keras
import numpy as np
import pytest

from adtf.backbones import Backbone, ChannelAffine, available, build
from adtf.backbones import weights as weights_module
from adtf.errors import AdtfError, WeightsError
from test_checkpoint import fake_torch, save_zip, tensor  # noqa: F401  (fake_torch is a fixture)

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
STUB_URL = "https://download.invalid/models/tiny-0123abcd.pth"


@pytest.fixture
def homes(tmp_path, monkeypatch):
    """Empty Keras download cache and adtf cache."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("ADTF_HOME", str(tmp_path / "adtf"))
    return tmp_path


@pytest.fixture
def stub_nets(monkeypatch):
    """Stand-in torchvision_nets: input -> 'normalised' (identity) -> 'conv' (1x1, 2 filters)."""
    calls = []

    def tiny(input_shape=(224, 224, 3), include_top=False):
        images = keras.Input(input_shape)
        x = keras.layers.Activation("linear", name="normalised")(images)
        return keras.Model(images, keras.layers.Conv2D(2, 1, name="conv")(x))

    def load_state_dict(model, name, state_dict, strict=True):
        calls.append(name)
        model.get_layer("conv").set_weights([state_dict["conv.weight"].transpose(2, 3, 1, 0), state_dict["conv.bias"]])

    names = [b.value for b in Backbone if b.value in ("resnet18", "se_resnet18", "vgg11", "alexnet", "wide_resnet50_2")]
    module = types.SimpleNamespace(ARCHITECTURES=dict.fromkeys(names, tiny), TORCHVISION_URLS=dict.fromkeys(names, STUB_URL),
                                   DEFAULT_TAPS=dict.fromkeys(names, ("normalised", "conv")))
    monkeypatch.setitem(sys.modules, "adtf.backbones.torchvision_nets", module)
    monkeypatch.setitem(sys.modules, "adtf.backbones.torch_conversion",
                        types.SimpleNamespace(load_torchvision_state_dict=load_state_dict))
    return calls


def conv_state(seed=0):
    rng = np.random.default_rng(seed)
    return {"conv.weight": rng.normal(size=(2, 3, 1, 1)).astype(np.float32), "conv.bias": np.float32([0.5, -1.0])}


def expected_conv(images, state):
    normalised = (images - MEAN) / STD
    return normalised @ state["conv.weight"][:, :, 0, 0].T + state["conv.bias"]


def test_available_names_and_unknown_choices_listed():
    assert available() == ["efficientnet_b4", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
                           "resnet18", "se_resnet18", "vgg11", "alexnet", "wide_resnet50_2", "resnet50", "vgg16"]
    with pytest.raises(AdtfError, match="choose one of .*efficientnet_lite0"):
        build("efficientnet_b9")
    with pytest.raises(AdtfError, match="block6d_add.*stem_conv"):
        build("efficientnet_lite0", weights=None, input_shape=(32, 32, 3), layers=["block9z_add"])


def test_torchvision_backbones_get_torchvision_normalisation_and_default_taps(stub_nets):
    images = np.random.default_rng(1).random((2, 8, 8, 3), dtype=np.float32)
    features = build("resnet18", weights=None, input_shape=(8, 8, 3))
    out = features(images)
    assert sorted(out) == ["conv", "normalised"]
    np.testing.assert_allclose(out["normalised"].numpy(), (images - MEAN) / STD, rtol=1e-5, atol=1e-5)
    assert stub_nets == []  # weights=None converts nothing


def test_local_pytorch_checkpoint_is_converted(stub_nets, fake_torch, tmp_path):  # noqa: F811
    state = conv_state()
    path = save_zip({k: tensor(v) for k, v in state.items()}, tmp_path / "mine.pth")
    images = np.random.default_rng(2).random((1, 4, 4, 3), dtype=np.float32)
    features = build("vgg11", weights=str(path), input_shape=(4, 4, 3), layers=["conv"])
    np.testing.assert_allclose(features(images)["conv"].numpy(), expected_conv(images, state), rtol=1e-4, atol=1e-5)
    assert stub_nets == ["vgg11"]


def test_imagenet_checkpoint_is_converted_once_then_read_from_the_cache(stub_nets, fake_torch, homes,  # noqa: F811
                                                                         monkeypatch):
    state = conv_state(3)
    downloaded = weights_module.keras_cache_dir() / "tiny-0123abcd.pth"  # as if downloaded earlier
    downloaded.parent.mkdir(parents=True)
    save_zip({k: tensor(v) for k, v in state.items()}, downloaded)
    monkeypatch.setattr(weights_module, "_intact", lambda *args: True)  # the name's hash prefix is made up
    images = np.random.default_rng(4).random((1, 4, 4, 3), dtype=np.float32)
    first = build("alexnet", input_shape=(4, 4, 3), layers=["conv"])(images)["conv"].numpy()
    cache = homes / "adtf" / "weights" / "alexnet--tiny-0123abcd.weights.h5"
    assert cache.is_file() and stub_nets == ["alexnet"]
    downloaded.unlink()  # the converted cache alone must do now
    second = build("alexnet", input_shape=(4, 4, 3), layers=["conv"])(images)["conv"].numpy()
    assert stub_nets == ["alexnet"]  # not converted again
    np.testing.assert_allclose(first, expected_conv(images, state), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("name,url", [
    ("efficientnet_b4", "https://storage.googleapis.com/keras-applications/efficientnetb4_notop.h5"),
    ("resnet50", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    ("vgg16", "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    ("wide_resnet50_2", STUB_URL),
])
def test_imagenet_without_network_fails_fast_saying_what_to_put_where(stub_nets, homes, monkeypatch, name, url):
    monkeypatch.setattr(weights_module, "reachable", lambda *args, **kwargs: False)
    start = time.perf_counter()
    with pytest.raises(WeightsError) as error:
        build(name)
    assert time.perf_counter() - start < 5.0
    message = str(error.value)
    file_name = url.rsplit("/", 1)[-1]
    assert url in message and str(homes / "keras" / "models" / file_name) in message
    assert "--detector.weights PATH" in message and "weights=PATH" in message and message.startswith(name)
    assert "presets need no network" in message  # what works offline


def test_reachability_probe_is_bounded_even_when_connecting_hangs(monkeypatch):
    monkeypatch.setattr(socket, "create_connection", lambda *args, **kwargs: time.sleep(30))
    start = time.perf_counter()
    assert weights_module.reachable("https://example.com/file.h5", timeout=0.3) is False
    assert time.perf_counter() - start < 1.5
    monkeypatch.setenv("ADTF_OFFLINE", "1")
    monkeypatch.setattr(socket, "create_connection", lambda *args, **kwargs: pytest.fail("probed while offline"))
    assert weights_module.reachable("https://example.com/file.h5") is False


def test_downloads_are_checked_against_the_hash_in_their_name(homes, monkeypatch):
    monkeypatch.setattr(weights_module, "reachable", lambda *args, **kwargs: True)
    payload = b"pretend weights"

    def get_file(fname, origin, cache_dir, cache_subdir, file_hash):
        target = weights_module.Path(cache_dir) / cache_subdir / fname
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(payload)
        return str(target)

    monkeypatch.setattr(keras.utils, "get_file", get_file)
    good = f"https://example.com/net-{hashlib.sha256(payload).hexdigest()[:8]}.pth"
    assert weights_module.fetch(good, "net").read_bytes() == payload
    with pytest.raises(WeightsError, match="corrupt"):
        weights_module.fetch("https://example.com/net-00000000.pth", "net")
    assert not (weights_module.keras_cache_dir() / "net-00000000.pth").exists()
    # A download killed outright leaves a partial file under the final name: named, never used
    partial = weights_module.keras_cache_dir() / good.rsplit("/", 1)[-1]
    partial.write_bytes(payload[:5])
    with pytest.raises(WeightsError, match=f"{partial} is incomplete"):
        weights_module.fetch(good, "net")


def test_bad_local_weight_files_are_weights_errors(tmp_path, stub_nets):
    with pytest.raises(WeightsError, match="neither 'imagenet', None nor an existing file"):
        build("resnet18", weights=str(tmp_path / "absent.pth"), input_shape=(4, 4, 3))
    (tmp_path / "w.npz").write_bytes(b"")
    with pytest.raises(WeightsError, match=r"expected \.pth"):
        build("resnet18", weights=tmp_path / "w.npz", input_shape=(4, 4, 3))
    (tmp_path / "w.pth").write_bytes(b"")
    with pytest.raises(WeightsError, match="no PyTorch converter"):
        build("vgg16", weights=tmp_path / "w.pth", input_shape=(32, 32, 3))
    tiny = build("resnet18", weights=None, input_shape=(4, 4, 3)).get_layer("resnet18_network")
    tiny.save_weights(tmp_path / "tiny.weights.h5")
    with warnings.catch_warnings(record=True) as caught, pytest.raises(WeightsError, match="does not fit the "
                                                                                  "efficientnet_lite0"):
        warnings.simplefilter("always")
        build("efficientnet_lite0", weights=tmp_path / "tiny.weights.h5", input_shape=(32, 32, 3))
    assert not [w for w in caught if "Skipping" in str(w.message)], "Keras' per-layer warnings reached the user"


def test_caffe_preprocessing_matches_keras_preprocess_input():
    images = np.random.default_rng(5).random((2, 32, 32, 3), dtype=np.float32)
    features = build("vgg16", weights=None, input_shape=(32, 32, 3), layers=["block1_conv1"])
    network = features.get_layer("vgg16_network")
    reference = network(keras.applications.vgg16.preprocess_input(images * 255.0))["block1_conv1"]
    np.testing.assert_allclose(features(images)["block1_conv1"].numpy(), reference.numpy(), rtol=1e-4, atol=1e-3)


def test_saved_backbone_reloads_with_identical_outputs_and_trainability(tmp_path):
    features = build("efficientnet_lite0", weights=None, input_shape=(32, 32, 3), layers=["block2b_add", "top_conv"])
    assert features.trainable_weights == [] and len(features.non_trainable_weights) > 0
    features.save(tmp_path / "lite0.keras")
    reloaded = keras.saving.load_model(tmp_path / "lite0.keras")
    images = np.random.default_rng(6).random((1, 32, 32, 3), dtype=np.float32)
    for tap in ("block2b_add", "top_conv"):
        np.testing.assert_allclose(reloaded(images)[tap].numpy(), features(images)[tap].numpy(), rtol=1e-5, atol=1e-5)
    assert build("efficientnet_lite0", weights=None, input_shape=(32, 32, 3), trainable=True).trainable_weights
    layer = ChannelAffine(scale=[2, 3, 4], offset=[1, 0, -1], order=[2, 1, 0])
    np.testing.assert_allclose(ChannelAffine.from_config(layer.get_config())(np.float32([[0.1, 0.2, 0.3]])),
                               [[0.3 * 2 + 1, 0.2 * 3, 0.1 * 4 - 1]], rtol=1e-6)
