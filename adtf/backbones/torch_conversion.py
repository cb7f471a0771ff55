"""PyTorch -> Keras weight conversion, in one place: torchvision nets and EfficientNet-Lite0.

Checkpoints are read by ``adtf.backbones.checkpoint.load_torch_state_dict`` (a restricted
unpickler); this module only maps their keys and layouts onto the Keras networks of
``adtf.backbones.torchvision_nets`` and ``adtf.backbones.efficientnet``: conv kernels
``[out, in, kh, kw]`` -> ``[kh, kw, in, out]``, depthwise ``[C, 1, k, k]`` -> ``[k, k, C, 1]``,
Linear ``[out, in]`` -> ``[in, out]``, BatchNorm weight/bias/running_mean/running_var ->
gamma/beta/moving_mean/moving_variance.
"""
import numpy as np
from keras import layers

from adtf.backbones.torchvision_nets import ARCHITECTURES
from adtf.errors import AdtfError, WeightsError
from adtf.layers.squeeze_excite import SqueezeExcite


# The Linear that follows torch's NCHW flatten; its input rows are reordered to Keras's HWC flatten.
_FLATTENED_LINEAR = {"vgg11": "classifier.0", "alexnet": "classifier.1"}
_CLASSIFIER_PREFIXES = ("fc.", "classifier.")
_TORCH_PARAMS = {
    layers.Conv2D: {"weight": "kernel", "bias": "bias"},
    layers.Dense: {"weight": "kernel", "bias": "bias"},
    layers.BatchNormalization: {
        "weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"
    },
}


def _torch_variables(model):
    """State-dict key -> Keras variable for every weight of `model`, in layer order."""
    found = {}
    for layer in model.layers:
        if isinstance(layer, SqueezeExcite):  # not in torchvision; a PIADE checkpoint names them <block>.se.fc1
            for fc in ("fc1", "fc2"):
                found[f"{layer.name.replace('_', '.')}.{fc}.weight"] = getattr(layer, fc).kernel
            continue
        params = next((p for cls, p in _TORCH_PARAMS.items() if isinstance(layer, cls)), {})
        for torch_name, attribute in params.items():
            if getattr(layer, attribute, None) is not None:
                found[f"{layer.name.replace('_', '.')}.{torch_name}"] = getattr(layer, attribute)
    return found


def _torch_shape(keras_shape):
    """Conv kernels are [kh, kw, in, out] in Keras and [out, in, kh, kw] in torch; Linear [in, out] vs [out, in]."""
    shape = tuple(keras_shape)
    return (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape[::-1]


def _to_keras(value, chw=None):
    if value.ndim == 4:
        return value.transpose(2, 3, 1, 0)
    if chw is not None:  # rows of torch's [out, C*H*W] -> Keras's [H*W*C, out]
        return value.reshape(len(value), *chw).transpose(2, 3, 1, 0).reshape(-1, len(value))
    return value.T


def _listing(keys, limit=8):
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def _check_name(name):
    if name not in ARCHITECTURES:
        raise AdtfError(f"unknown torchvision architecture {name!r}; choose one of {sorted(ARCHITECTURES)}")


def load_torchvision_state_dict(model, name, state_dict, strict=True):
    """Copy a torchvision state dict (numpy arrays keyed like `model.state_dict()`) into `model`.

    Conv kernels are transposed to [kh, kw, in, out], Linear weights to [in, out], BatchNorm
    weight/bias/running_mean/running_var become gamma/beta/moving_mean/moving_variance and
    `num_batches_tracked` is ignored. A headless model (`include_top=False`) takes a full
    checkpoint: the classifier keys are skipped. SE layers (`*.se.*`, not in torchvision) load
    when present and otherwise keep their values, even with `strict`. Nothing is assigned unless
    every present key fits.

    Args:
        model: a model from `ARCHITECTURES[name]`.
        name: its architecture name, a key of `ARCHITECTURES`.
        state_dict: mapping of torchvision key -> array, e.g. from
            `adtf.backbones.checkpoint.load_torch_state_dict`.
        strict: raise on missing or unexpected keys; shape mismatches always raise.

    Raises:
        WeightsError: naming missing/unexpected keys or the key whose shape does not fit.

    Example:
        >>> model = ARCHITECTURES["resnet18"]((64, 64, 3))
        >>> load_torchvision_state_dict(model, "resnet18", random_state_dict("resnet18"))
    """
    _check_name(name)
    variables = _torch_variables(model)
    has_top = any(key.startswith(_CLASSIFIER_PREFIXES) for key in variables)
    state_dict = {
        key: value for key, value in state_dict.items()
        if not key.endswith("num_batches_tracked") and (has_top or not key.startswith(_CLASSIFIER_PREFIXES))
    }
    missing = [key for key in variables if key not in state_dict and ".se." not in key]
    unexpected = [key for key in state_dict if key not in variables]
    if strict and (missing or unexpected):
        raise WeightsError(
            f"{name} state dict does not match the model {model.name!r}: "
            f"missing keys [{_listing(missing)}]; unexpected keys [{_listing(unexpected)}]"
        )
    flattened_key, converted = f"{_FLATTENED_LINEAR.get(name)}.weight", []
    for key, variable in variables.items():
        if key not in state_dict:
            continue
        value = np.asarray(state_dict[key])
        expected = _torch_shape(variable.shape)
        if value.shape != expected:
            raise WeightsError(f"{name} state dict key {key!r} has shape {value.shape}, the model needs {expected}")
        chw = None
        if key == flattened_key:
            height, width, channels = model.get_layer("avgpool").output.shape[1:]
            chw = (channels, height, width)
        converted.append((variable, np.ascontiguousarray(_to_keras(value, chw), variable.dtype)))
    for variable, value in converted:
        variable.assign(value)


def random_state_dict(name, seed=0):
    """Random arrays under exactly the keys (and shapes) of the torchvision checkpoint for `name`.

    Weights are He-scaled so activations stay finite through the depth; BatchNorm statistics are
    non-trivial (means around 0, variances in [0.5, 1.5]). For `se_resnet18` this is the ResNet18
    checkpoint: no SE keys, as in `TORCHVISION_URLS`.

    Args:
        name: a key of `ARCHITECTURES`.
        seed: seed of the numpy generator.

    Example:
        >>> state = random_state_dict("resnet18")
        >>> state["conv1.weight"].shape
        (64, 3, 7, 7)
    """
    _check_name(name)
    rng = np.random.default_rng(seed)
    # Weight shapes do not depend on the input size (the classifier follows an adaptive pool).
    model = ARCHITECTURES[name](input_shape=(64, 64, 3), include_top=True)
    state = {}
    for key, variable in _torch_variables(model).items():
        if ".se." in key:
            continue
        shape, kind = _torch_shape(variable.shape), key.rsplit(".", 1)[1]
        if kind == "weight" and len(shape) > 1:
            value = rng.standard_normal(shape, np.float32) * np.float32(np.sqrt(2.0 / np.prod(shape[1:])))
        elif kind in ("weight", "running_var"):
            value = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:
            value = 0.1 * rng.standard_normal(shape, np.float32)
        state[key] = value
        if kind == "running_var":
            state[key.replace("running_var", "num_batches_tracked")] = np.array(100, np.int64)
    return state


def load_lite0_state_dict(model, state_dict):
    """Assign a lukemelas-style EfficientNet-Lite0 state dict (numpy arrays) to ``efficientnet_lite0()``.

    Conv kernels go from PyTorch ``[out, in, kh, kw]`` to Keras ``[kh, kw, in, out]``,
    depthwise ones from ``[C, 1, k, k]`` to ``[k, k, C, 1]``, the classifier from
    ``[out, in]`` to ``[in, out]``. The classifier is skipped when ``model`` has none.

    Args:
        model: a model from ``efficientnet_lite0``, any variant: its blocks are read off its own layers.
        state_dict: ``{name: array}``, e.g. from ``load_torch_state_dict``.

    Raises:
        WeightsError: a key is missing, left over, or has the wrong shape.

    Example:
        >>> net = efficientnet_lite0(include_top=True)
        >>> load_lite0_state_dict(net, load_torch_state_dict(lite0_checkpoint()))  # doctest: +SKIP
    """
    pending = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}

    def take(key):
        if key not in pending:
            raise WeightsError(f"{model.name}: the checkpoint has no {key!r}")
        return pending.pop(key)

    def assign(layer, *arrays, key):
        try:
            model.get_layer(layer).set_weights(list(arrays))
        except ValueError as error:
            raise WeightsError(f"{model.name}: checkpoint {key!r} does not fit layer {layer!r}: {error}") from None

    def conv(layer, key, depthwise=False):
        assign(layer, take(key).transpose((2, 3, 0, 1) if depthwise else (2, 3, 1, 0)), key=key)

    def batch_norm(layer, prefix):
        assign(layer, *(take(f"{prefix}.{p}") for p in ("weight", "bias", "running_mean", "running_var")), key=prefix)

    conv("stem_conv", "_conv_stem.weight")
    batch_norm("stem_bn", "_bn0")
    names = [layer.name for layer in model.layers]  # functional models list layers in network order
    blocks = [name[:-len("project_conv")] for name in names if name.endswith("_project_conv")]
    for index, block in enumerate(blocks):
        prefix = f"_blocks.{index}."
        if f"{block}expand_conv" in names:
            conv(f"{block}expand_conv", prefix + "_expand_conv.weight")
            batch_norm(f"{block}expand_bn", prefix + "_bn0")
        conv(f"{block}dwconv", prefix + "_depthwise_conv.weight", depthwise=True)
        batch_norm(f"{block}bn", prefix + "_bn1")
        conv(f"{block}project_conv", prefix + "_project_conv.weight")
        batch_norm(f"{block}project_bn", prefix + "_bn2")
    conv("top_conv", "_conv_head.weight")
    batch_norm("top_bn", "_bn1")
    if "predictions" in names:
        assign("predictions", take("_fc.weight").T, take("_fc.bias"), key="_fc")
    else:
        pending.pop("_fc.weight", None), pending.pop("_fc.bias", None)
    if pending:
        raise WeightsError(f"{model.name}: the checkpoint has weights this network lacks: {sorted(pending)[:8]}")
