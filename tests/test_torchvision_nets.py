"""torchvision nets in Keras: sizes, key mapping and layouts checked against independent numpy references.

Parity with real PyTorch is benchmarks/check_torch_parity.py (torch is not a test dependency).
"""
import math

import keras
import numpy as np
import pytest

from adtf.backbones import torch_conversion as conversion
from adtf.backbones import torchvision_nets as tv
from adtf.errors import AdtfError, WeightsError
from adtf.layers import SqueezeExcite

# sum(p.numel() for p in torchvision.models.<name>().parameters())
TORCHVISION_PARAMETERS = {
    "resnet18": 11_689_512, "vgg11": 132_863_336, "alexnet": 61_100_840, "wide_resnet50_2": 68_883_240,
}
# Each of ResNet18's 8 blocks adds W1 (C/4 x C) and W2 (C x C/4): C^2/2 weights, 2 blocks per width.
TORCHVISION_PARAMETERS["se_resnet18"] = TORCHVISION_PARAMETERS["resnet18"] + sum(
    2 * c * c // 2 for c in (64, 128, 256, 512))
SMALL = (64, 64, 3)


def _run(model, x):
    """Eager call: tracing a tf.function per model would cost more than these tiny batches."""
    out = model(x, training=False)
    return [o.numpy() for o in out] if isinstance(out, list) else out.numpy()


def _torch_layout(value):
    """Keras kernel -> torch weight, written independently of the module's converter."""
    return value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T if value.ndim == 2 else value


@pytest.fixture(scope="module")
def models():
    """name -> model with the classifier at 64x64, built once for the whole module."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = tv.ARCHITECTURES[name](SMALL, include_top=True)
        return cache[name]

    yield get
    cache.clear()


@pytest.fixture(scope="module")
def loaded(models):
    """name -> (model, its random state dict, input, SE weights and output before loading)."""
    cache = {}

    def get(name):
        if name not in cache:
            model = models(name)
            x = np.random.default_rng(1).standard_normal((2, *SMALL)).astype("float32")
            se_before = {v.path: v.numpy() for v in model.weights if "_se/" in v.path}
            output_before = _run(model, x)
            state = conversion.random_state_dict(name, seed=3)
            conversion.load_torchvision_state_dict(model, name, state)
            cache[name] = model, state, x, se_before, output_before
        return cache[name]

    yield get
    cache.clear()


@pytest.mark.parametrize("name", sorted(tv.ARCHITECTURES))
def test_parameter_counts_and_taps(name, models):
    model = models(name)
    assert sum(math.prod(w.shape) for w in model.trainable_weights) == TORCHVISION_PARAMETERS[name]
    assert set(tv.TORCHVISION_URLS) == set(tv.ARCHITECTURES) == set(tv.DEFAULT_TAPS)
    for tap in tv.DEFAULT_TAPS[name]:
        model.get_layer(tap)


# VGG11 maps exactly like AlexNet (features_i, classifier_i, a flattened first Linear) but would add
# 130M random weights; benchmarks/check_torch_parity.py covers it against torch.
@pytest.mark.parametrize("name", ["resnet18", "se_resnet18", "wide_resnet50_2", "alexnet"])
def test_every_key_assigned(name, loaded):
    model, state, x, se_before, output_before = loaded(name)
    assigned = set()
    for layer in model.layers:
        if isinstance(layer, SqueezeExcite):  # not in torchvision: must keep its random start
            for variable in layer.weights:
                np.testing.assert_array_equal(variable.numpy(), se_before[variable.path])
            continue
        torch_prefix = layer.name.replace("_", ".")
        for attribute, torch_name in (("kernel", "weight"), ("bias", "bias"), ("gamma", "weight"), ("beta", "bias"),
                                      ("moving_mean", "running_mean"), ("moving_variance", "running_var")):
            variable = getattr(layer, attribute, None)
            if not isinstance(variable, keras.Variable):
                continue
            key = f"{torch_prefix}.{torch_name}"
            assigned.add(key)
            if key != "classifier.1.weight":  # permuted rows: checked by test_first_linear_reads_torch_nchw_flatten
                np.testing.assert_array_equal(_torch_layout(variable.numpy()), state[key])
    assert assigned == {k for k in state if not k.endswith("num_batches_tracked")}
    assert len(se_before) == (16 if name == "se_resnet18" else 0)
    assert not np.allclose(_run(model, x), output_before)


def _conv_nchw(x, weight, stride, pad):
    """Direct cross-correlation in torch's layouts: x [N,C,H,W], weight [O,C,kh,kw]."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    kh, kw = weight.shape[2:]
    oh, ow = (x.shape[2] - kh) // stride + 1, (x.shape[3] - kw) // stride + 1
    out = np.zeros((x.shape[0], weight.shape[0], oh, ow))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
            out += np.einsum("nchw,oc->nohw", patch, weight[:, :, i, j])
    return out


def test_conv1_bn1_match_numpy_reference():
    model = tv.resnet18((18, 18, 3))  # even size: Keras "same" would pad stride 2 asymmetrically
    state = conversion.random_state_dict("resnet18", seed=5)
    conversion.load_torchvision_state_dict(model, "resnet18", state)
    x = np.random.default_rng(0).standard_normal((2, 3, 18, 18))
    conv = _conv_nchw(x, state["conv1.weight"], stride=2, pad=3)
    bn = [state[f"bn1.{p}"][None, :, None, None] for p in ("running_mean", "running_var", "weight", "bias")]
    expected = (conv - bn[0]) / np.sqrt(bn[1] + 1e-5) * bn[2] + bn[3]
    probe = keras.Model(model.input, model.get_layer("bn1").output)
    got = probe.predict(x.transpose(0, 2, 3, 1).astype("float32"), verbose=0).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_first_linear_reads_torch_nchw_flatten(loaded):
    model, state, x, *_ = loaded("alexnet")
    probe = keras.Model(model.input, [model.get_layer("avgpool").output, model.get_layer("classifier_1").output])
    pooled, got = _run(probe, x)
    torch_flat = pooled.transpose(0, 3, 1, 2).reshape(len(x), -1)  # torch.flatten of an NCHW tensor
    expected = torch_flat @ state["classifier.1.weight"].T + state["classifier.1.bias"]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size, out", [(1, 6), (2, 7), (5, 7), (13, 6)])
def test_adaptive_pool_uses_torch_bins(size, out):
    x = np.random.default_rng(size).standard_normal((1, size, size, 2)).astype("float32")
    edges = [(math.floor(i * size / out), math.ceil((i + 1) * size / out)) for i in range(out)]
    expected = np.array([[x[0, a:b, c:d].mean((0, 1)) for c, d in edges] for a, b in edges])
    np.testing.assert_allclose(keras.layers.AdaptiveAveragePooling2D(out)(x)[0], expected, atol=1e-6)


def test_se_block_follows_paper_002():
    model = tv.se_resnet18(SMALL)
    se = model.get_layer("layer2_0_se")
    assert isinstance(se, SqueezeExcite) and se.reduction == 4
    assert se.fc1.kernel.shape == (128, 32) and se.fc1.bias is None  # W1: C -> C/4, no bias
    x = np.random.default_rng(2).standard_normal((2, *SMALL)).astype("float32")
    probe = keras.Model(model.input, [model.get_layer("layer2_0_bn2").output,
                                      model.get_layer("layer2_0_se").output, model.output])
    u, got, output = _run(probe, x)
    w1, w2 = se.fc1.kernel.numpy(), se.fc2.kernel.numpy()
    s = 1 / (1 + np.exp(-(np.maximum(u.mean((1, 2)) @ w1, 0) @ w2)))
    np.testing.assert_allclose(got, u * s[:, None, None, :], rtol=1e-4, atol=1e-5)
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(_run(clone, x), output, atol=1e-5)


def test_headless_model_takes_full_checkpoint_and_se_keys_when_present():
    model = tv.se_resnet18(SMALL)
    state = conversion.random_state_dict("resnet18")  # has fc.*, no SE keys
    state["layer1.0.se.fc1.weight"] = np.full((16, 64), 0.25, np.float32)
    conversion.load_torchvision_state_dict(model, "se_resnet18", state)
    np.testing.assert_array_equal(model.get_layer("layer1_0_se").fc1.kernel, np.full((64, 16), 0.25))


def test_mismatches_raise_weights_error_naming_keys():
    model = tv.resnet18(SMALL)
    state = conversion.random_state_dict("resnet18")
    conv1 = model.get_layer("conv1").kernel.numpy()
    bad = dict(state, **{"layer2.0.conv1.weight": np.zeros((128, 64, 1, 1), np.float32)})
    with pytest.raises(WeightsError, match=r"layer2\.0\.conv1\.weight.*\(128, 64, 1, 1\).*\(128, 64, 3, 3\)"):
        conversion.load_torchvision_state_dict(model, "resnet18", bad)
    np.testing.assert_array_equal(model.get_layer("conv1").kernel, conv1)  # all or nothing

    partial = {k: v for k, v in state.items() if k != "layer3.1.bn2.running_var"}
    partial["head.weight"] = np.zeros(3, np.float32)
    with pytest.raises(WeightsError, match=r"missing keys \[layer3\.1\.bn2\.running_var\]; unexpected keys \[head"):
        conversion.load_torchvision_state_dict(model, "resnet18", partial)
    conversion.load_torchvision_state_dict(model, "resnet18", partial, strict=False)
    np.testing.assert_array_equal(model.get_layer("conv1").kernel, state["conv1.weight"].transpose(2, 3, 1, 0))
    with pytest.raises(AdtfError, match="unknown torchvision architecture 'resnet19'"):
        conversion.random_state_dict("resnet19")
