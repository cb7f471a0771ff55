"""torchvision classification networks as Keras functional models, and their weight conversion.

ResNet18, SE-ResNet18 (paper 002), Wide-ResNet50-2, VGG11 and AlexNet are rebuilt layer for
layer so that torchvision's ImageNet checkpoints give the same numbers in Keras. Layer names are
torchvision's module paths with ``.`` replaced by ``_`` (``layer1.0.conv1`` -> ``layer1_0_conv1``,
``features.3`` -> ``features_3``), so a state-dict key maps to a layer by a rename, and features
can be tapped where torchvision users expect them: ``layer1``..``layer4`` are the ResNet stage
outputs, ``layer2_1`` the output of one residual block, ``features_4`` the output of module 4 of
a VGG/AlexNet ``features`` stack.

Inputs are NHWC images already normalised the torchvision way, ``(x - mean) / std`` on [0, 1] RGB
with ``mean=(0.485, 0.456, 0.406)``, ``std=(0.229, 0.224, 0.225)``; the caller does that.

Faithfulness details: torch pads convolutions symmetrically, so padding is an explicit
``ZeroPadding2D`` before a "valid" convolution (Keras "same" pads stride-2 layers on one side
only); BatchNorm uses torch's ``eps=1e-5``; Bottleneck blocks put the stride on the 3x3 conv
(torchvision's ResNet v1.5); ``AdaptiveAvgPool2d`` is Keras's ``AdaptiveAveragePooling2D``, which
uses torch's bin edges for any input size; torch flattens NCHW before the first classifier
Linear, so that weight's input rows are permuted to Keras's HWC order on conversion.
"""
from typing import Callable

import keras
from keras import layers

from adtf.layers.squeeze_excite import SqueezeExcite

TORCHVISION_URLS = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    # The SE layers are not in any torchvision checkpoint: they start random.
    "se_resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "wide_resnet50_2": "https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth",
    "vgg11": "https://download.pytorch.org/models/vgg11-8a719358.pth",
    "alexnet": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
}

DEFAULT_TAPS = {
    "resnet18": ("layer1", "layer2", "layer3", "layer4"),
    "se_resnet18": ("layer1", "layer2", "layer3", "layer4"),
    # SimpleNet and PatchCore aggregate the two middle stages.
    "wide_resnet50_2": ("layer2", "layer3"),
    # ReLU outputs of the first four convolutions: the "first four layers of VGG11" of the
    # perceptual loss in papers 002 and 003.
    "vgg11": ("features_1", "features_4", "features_7", "features_9"),
    "alexnet": ("features_1", "features_4", "features_7", "features_9", "features_11"),
}

# The paper's SE block (002, eq. 2): W1 in R^{C/4 x C}, W2 in R^{C x C/4}, no biases.
SE_REDUCTION = 4


def _conv(x, filters, kernel, stride, padding, name, use_bias=False):
    if padding:
        x = layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
    return layers.Conv2D(filters, kernel, strides=stride, use_bias=use_bias, name=name)(x)


def _bn(x, name):
    # Keras momentum 0.9 is torch's momentum 0.1, should anyone fine-tune the statistics.
    return layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=name)(x)


def _basic_branch(x, planes, stride, width, name):
    x = layers.ReLU(name=f"{name}_relu1")(_bn(_conv(x, planes, 3, stride, 1, f"{name}_conv1"), f"{name}_bn1"))
    return _bn(_conv(x, planes, 3, 1, 1, f"{name}_conv2"), f"{name}_bn2")


def _bottleneck_branch(x, planes, stride, width, name):
    x = layers.ReLU(name=f"{name}_relu1")(_bn(_conv(x, width, 1, 1, 0, f"{name}_conv1"), f"{name}_bn1"))
    x = layers.ReLU(name=f"{name}_relu2")(_bn(_conv(x, width, 3, stride, 1, f"{name}_conv2"), f"{name}_bn2"))
    return _bn(_conv(x, planes * 4, 1, 1, 0, f"{name}_conv3"), f"{name}_bn3")


def _resnet(branch, blocks_per_stage, width_per_group, se_reduction, input_shape, include_top, name):
    """torchvision ResNet; `se_reduction` adds an SE block on each residual branch before the sum."""
    inputs = keras.Input(input_shape, name="images")
    x = layers.ReLU(name="relu")(_bn(_conv(inputs, 64, 7, 2, 3, "conv1"), "bn1"))
    # torch pads the max-pool with -inf; after a ReLU, zeros give the same maxima.
    x = layers.MaxPooling2D(3, 2, name="maxpool")(layers.ZeroPadding2D(1, name="maxpool_pad")(x))
    for stage, num_blocks in enumerate(blocks_per_stage, start=1):
        planes = 64 * 2 ** (stage - 1)
        for index in range(num_blocks):
            block = f"layer{stage}_{index}"
            stride = 2 if stage > 1 and index == 0 else 1
            out = branch(x, planes, stride, planes * width_per_group // 64, block)
            if se_reduction:
                out = SqueezeExcite(se_reduction, name=f"{block}_se")(out)
            shortcut = x
            if stride != 1 or x.shape[-1] != out.shape[-1]:
                shortcut = _conv(x, out.shape[-1], 1, stride, 0, f"{block}_downsample_0")
                shortcut = _bn(shortcut, f"{block}_downsample_1")
            x = layers.ReLU(name=block)(layers.Add(name=f"{block}_add")([out, shortcut]))
        x = layers.Identity(name=f"layer{stage}")(x)
    if include_top:
        x = layers.Dense(1000, name="fc")(layers.GlobalAveragePooling2D(name="avgpool")(x))
    return keras.Model(inputs, x, name=name)


def _conv_stack_net(features, pool_size, pooled_size, classifier, input_shape, include_top, name):
    """VGG/AlexNet: `features` lists (filters, kernel, stride, padding) convs and "M" max-pools."""
    inputs = keras.Input(input_shape, name="images")
    x, index = inputs, 0
    for item in features:
        if item == "M":
            x = layers.MaxPooling2D(pool_size, 2, name=f"features_{index}")(x)
            index += 1
        else:
            x = _conv(x, *item, name=f"features_{index}", use_bias=True)
            x = layers.ReLU(name=f"features_{index + 1}")(x)
            index += 2
    if include_top:
        if 1 in x.shape[1:3]:
            # Keras's adaptive pool fails on a length-1 axis; repeating it changes no bin average.
            x = layers.UpSampling2D(tuple(2 if n == 1 else 1 for n in x.shape[1:3]), name="avgpool_repeat")(x)
        x = layers.AdaptiveAveragePooling2D(pooled_size, name="avgpool")(x)
        x = layers.Flatten(name="flatten")(x)
        units = iter((4096, 4096, 1000))
        for index, kind in enumerate(classifier):
            module_name = f"classifier_{index}"
            if kind == "linear":
                x = layers.Dense(next(units), name=module_name)(x)
            elif kind == "relu":
                x = layers.ReLU(name=module_name)(x)
            else:
                x = layers.Dropout(0.5, name=module_name)(x)
    return keras.Model(inputs, x, name=name)


def resnet18(input_shape=(224, 224, 3), include_top=False, name=None):
    """torchvision ResNet18 (BasicBlock, 2-2-2-2); 11,689,512 parameters with the classifier.

    Args:
        input_shape: NHWC shape without the batch axis; `(None, None, 3)` works without the top.
        include_top: add torchvision's `avgpool` + `fc` (1000 ImageNet logits).
        name: model name, default `"resnet18"`.

    Example:
        >>> model = resnet18((64, 64, 3))
        >>> model.get_layer("layer3").output.shape
        (None, 4, 4, 256)
    """
    return _resnet(_basic_branch, (2, 2, 2, 2), 64, None, input_shape, include_top, name or "resnet18")


def se_resnet18(input_shape=(224, 224, 3), include_top=False, name=None, se_reduction=SE_REDUCTION):
    """ResNet18 with a Squeeze-and-Excitation block on every residual branch (paper 002).

    The SE block follows Hu et al.: it rescales the residual branch before the addition. Its two
    bias-free Dense layers (`layerS_B_se_fc1`, `layerS_B_se_fc2`) reduce the channels by
    `se_reduction` (4, as in paper 002). They are not in the torchvision ResNet18 checkpoint and
    stay randomly initialised when it is loaded.

    Args:
        input_shape: NHWC shape without the batch axis.
        include_top: add `avgpool` + `fc` (1000 logits).
        name: model name, default `"se_resnet18"`.
        se_reduction: channel reduction ratio r of the SE bottleneck (C -> C/r -> C).

    Example:
        >>> model = se_resnet18((64, 64, 3))
        >>> tuple(model.get_layer("layer1_0_se_fc1").kernel.shape)
        (64, 16)
    """
    return _resnet(_basic_branch, (2, 2, 2, 2), 64, se_reduction, input_shape, include_top, name or "se_resnet18")


def wide_resnet50_2(input_shape=(224, 224, 3), include_top=False, name=None):
    """torchvision Wide-ResNet50-2 (Bottleneck v1.5 twice as wide, 3-4-6-3); 68,883,240 parameters.

    Args:
        input_shape: NHWC shape without the batch axis.
        include_top: add `avgpool` + `fc` (1000 logits).
        name: model name, default `"wide_resnet50_2"`.

    Example:
        >>> model = wide_resnet50_2((64, 64, 3))
        >>> model.get_layer("layer2").output.shape
        (None, 8, 8, 512)
    """
    return _resnet(_bottleneck_branch, (3, 4, 6, 3), 128, None, input_shape, include_top, name or "wide_resnet50_2")


def vgg11(input_shape=(224, 224, 3), include_top=False, name=None):
    """torchvision VGG11 (configuration "A", no batch norm); 132,863,336 parameters with the top.

    Without the top the output is `features_20`, the last max-pool.

    Args:
        input_shape: NHWC shape without the batch axis; the top needs a static size.
        include_top: add `avgpool` (adaptive, 7x7) + `classifier_0`..`classifier_6`.
        name: model name, default `"vgg11"`.

    Example:
        >>> model = vgg11((64, 64, 3))
        >>> model.get_layer("features_9").output.shape
        (None, 16, 16, 256)
    """
    convs = [(c, 3, 1, 1) if c != "M" else c for c in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")]
    top = ("linear", "relu", "dropout", "linear", "relu", "dropout", "linear")
    return _conv_stack_net(convs, 2, 7, top, input_shape, include_top, name or "vgg11")


def alexnet(input_shape=(224, 224, 3), include_top=False, name=None):
    """torchvision AlexNet (the "one weird trick" variant); 61,100,840 parameters with the top.

    Without the top the output is `features_12`, the last max-pool.

    Args:
        input_shape: NHWC shape without the batch axis (at least 63x63); the top needs a static size.
        include_top: add `avgpool` (adaptive, 6x6) + `classifier_0`..`classifier_6`.
        name: model name, default `"alexnet"`.

    Example:
        >>> model = alexnet((224, 224, 3))
        >>> model.output.shape
        (None, 6, 6, 256)
    """
    convs = [(64, 11, 4, 2), "M", (192, 5, 1, 2), "M", (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1), "M"]
    top = ("dropout", "linear", "relu", "dropout", "linear", "relu", "linear")
    return _conv_stack_net(convs, 3, 6, top, input_shape, include_top, name or "alexnet")


ARCHITECTURES: dict[str, Callable[..., keras.Model]] = {
    "resnet18": resnet18,
    "se_resnet18": se_resnet18,
    "wide_resnet50_2": wide_resnet50_2,
    "vgg11": vgg11,
    "alexnet": alexnet,
}
