"""PIADE (paper 002: Mishra, Piciarelli and Foresti, "A neural network for image anomaly detection
with deep pyramidal representations and dynamic routing", IJNS 2020).

Fig. 1: an ImageNet ResNet18 with an SE block after each of its five convolutional stages,
fine-tuned -> pyramid pooling (8x8, 4x4, 2x2, 1x1, each a 1x1 conv to 64 channels + BN) ->
the pooled values as 8-d capsules -> dynamic routing to two instantiation vectors in R^64 ->
three linear layers up to 512 x mf x mf (mf = the feature map's width) -> concatenated with the
ResNet features -> transposed-conv decoder. Loss and anomaly score: MSE + l1 VGG11 perceptual +
l2 (1 - SSIM). In training the first vector is decoded, at test the longer one.

Everything shared with paper 003 (encoder, decoder, losses, training) is in
``adtf.detectors.reconstruction``; the README's PIADE table lists paper / code / our choice.
"""
from typing import Literal

import keras
from keras import ops

from adtf.detectors.base import check_ranges
from adtf.detectors.reconstruction import ORTHOGONAL, Preset, ReconstructionDetector, flatten_channels_first
from adtf.errors import AdtfError
from adtf.layers.capsule_routing import CapsuleRouting
from adtf.layers.pyramid_pooling import PyramidPooling

RESNET18_SE_AFTER = ("maxpool", "layer1", "layer2", "layer3", "layer4")  # after conv1 (+ max-pool) and layer1-4
# The same five places in EfficientNet-Lite0: the end of each resolution (stride 2, 4, 8, 16, 32).
LITE0_SE_AFTER = ("block1a_project_bn", "block2b_add", "block3b_add", "block5c_add", "block6d_add")


def _dense_bn_relu(units, name):
    return [keras.layers.Dense(units, kernel_initializer=ORTHOGONAL(), name=f"{name}_dense"),
            keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=f"{name}_bn"),
            keras.layers.ReLU(name=f"{name}_relu")]


@keras.saving.register_keras_serializable("adtf")
class PIADE(ReconstructionDetector):
    """Paper 002's pyramidal image anomaly detector.

    Args:
        backbone: the encoder (``adtf.backbones.build``; default: the offline preset's EfficientNet-Lite0;
            paper: ResNet18).
        encoder_layer: the layer whose output is the feature map (``block6d_add``; paper: ``layer4``).
        train_backbone: fine-tune the encoder (the paper never freezes it).
        freeze_batch_norm: keep the encoder's pretrained BatchNorm layers in inference mode while it
            fine-tunes (the paper is silent; the authors' code trains them: ``False``).
        squeeze_excite: add the five SE blocks (``se_after``; the ablation of 002 Fig. 6 turns them off).
        se_after, se_reduction: where they go (default ``LITE0_SE_AFTER``; paper: ``RESNET18_SE_AFTER``)
            and their reduction (paper: C/4; code: 16).
        pyramid_bins, pyramid_filters, pyramid_relu: the pyramid (paper: 8, 4, 2, 1 with 64 channels
            each and no ReLU; the authors' code: ``pyramid_bins=(1, 1, 1, 1)`` with C/1, C/2, C/4,
            C/8 channels (``pyramid_filters=(-1, -2, -4, -8)``: a negative value divides C) and ReLU).
        capsule_dim: size of the capsules the pooled values are cut into (8).
        num_vectors, vector_dim: instantiation vectors (2, in R^64; 1 for the ablation of Fig. 5).
        routing_iterations, squash_constant: r = 3, a = 1.
        train_decode: the vector decoded in training: ``"first"`` (paper) or ``"longest"`` (code).
            At test time the longest one is always decoded.
        perceptual_backbone, perceptual_layer, perceptual_weights: the frozen perceptual network
            (default: Lite0's ``block1a_project_bn``; paper: VGG11 ``features[:4]`` = ``features_3``, the
            second conv before its ReLU).
        perceptual_weight, ssim_weight: l1 and l2 of eq. 5 (0 turns a term off).
        decoder: ``"mvtec"``: the authors' 8 -> 120 transposed convs; the output is resized to
            ``image_size`` when that differs (32-px CIFAR images: the encoder works at 32 px).
        image_size: the size everything works at (120 in the paper). The presets leave it to the data
            (``adtf-fit``): the images' own size up to 120, so CIFAR runs at 32 px, MVTec at 120.
        resize_crop: resize to this size and keep the centre ``image_size`` (the code: 156 -> 120).
        epochs, batch_size, learning_rate, weight_decay: the schedule (Table 1: 400, 120, 1e-3, 1e-4).

    Example:
    >>> detector = PIADE.from_preset("fast")
    >>> detector.fit(train_ds)
    >>> detector.calibrate(held_out_normal_ds)
    >>> out = detector(images)      # score (= the loss), anomaly_map, mse, perceptual, ssim, vector_norms, ...
    """

    short_name = "PIADE"
    presets = {
        Preset.PAPER: dict(backbone="resnet18", encoder_layer="layer4", se_after=RESNET18_SE_AFTER,
                           perceptual_backbone="vgg11", perceptual_layer="features_3", image_size=None, epochs=400,
                           batch_size=120),
        Preset.OFFLINE: dict(**ReconstructionDetector.LITE0_ENCODER, se_after=LITE0_SE_AFTER, image_size=None,
                             epochs=400, batch_size=120),
        Preset.FAST: dict(**ReconstructionDetector.LITE0_ENCODER, se_after=LITE0_SE_AFTER, image_size=None,
                          epochs=100, batch_size=32),
    }
    smoke_test_options = dict(backbone="efficientnet_lite0", encoder_layer="block3b_add", se_after=("block2b_add",),
                              perceptual_backbone="efficientnet_lite0", perceptual_layer="block1a_project_bn",
                              image_size=(32, 32), pyramid_bins=(2, 1), pyramid_filters=(8, 8), vector_dim=8,
                              epochs=2, batch_size=4)

    def __init__(self, backbone: str = "efficientnet_lite0", encoder_layer: str = "block6d_add",
                 squeeze_excite: bool = True,
                 se_after: tuple[str, ...] = LITE0_SE_AFTER, pyramid_bins: tuple[int, ...] = (8, 4, 2, 1),
                 pyramid_filters: tuple[int, ...] = (64, 64, 64, 64), pyramid_relu: bool = False,
                 capsule_dim: int = 8, num_vectors: int = 2, vector_dim: int = 64, routing_iterations: int = 3,
                 squash_constant: float = 1.0, train_decode: Literal["first", "longest"] = "first",
                 learning_rate: float = 1e-3, **kwargs):
        check_ranges("PIADE", capsule_dim=(capsule_dim, 1, False), num_vectors=(num_vectors, 1, False),
                     vector_dim=(vector_dim, 1, False), routing_iterations=(routing_iterations, 1, False),
                     squash_constant=(squash_constant, 0, True))
        self.squeeze_excite = bool(squeeze_excite)
        self.pyramid_bins, self.pyramid_filters = tuple(int(b) for b in pyramid_bins), tuple(int(f) for f in pyramid_filters)
        self.pyramid_relu, self.capsule_dim = bool(pyramid_relu), int(capsule_dim)
        self.num_vectors, self.vector_dim = int(num_vectors), int(vector_dim)
        self.routing_iterations, self.squash_constant = int(routing_iterations), float(squash_constant)
        if train_decode not in ("first", "longest"):
            raise AdtfError(f"PIADE: train_decode must be 'first' or 'longest', got {train_decode!r}")
        self.train_decode = train_decode
        super().__init__(backbone=backbone, encoder_layer=encoder_layer, learning_rate=learning_rate,
                         se_after=tuple(se_after) if squeeze_excite else (), **kwargs)
        self.se_after = tuple(se_after)

    def build_bottleneck(self):
        h, w, c = self.feature_shape
        filters = [f if f > 0 else c // -f for f in self.pyramid_filters]
        self.pyramid = PyramidPooling(self.pyramid_bins, filters, relu=self.pyramid_relu, name="pyramid")
        values = sum(b * b * f for b, f in zip(self.pyramid_bins, filters))
        if values % self.capsule_dim:
            raise AdtfError(f"PIADE: the pyramid gives {values} values, not a whole number of {self.capsule_dim}-d capsules")
        self.routing = CapsuleRouting(self.num_vectors, self.vector_dim, self.routing_iterations, self.squash_constant,
                                      name="routing")
        self.routing.build((None, values // self.capsule_dim, self.capsule_dim))
        # 64 -> 128 -> 512 -> 512 mf^2, mf = the feature map's width (the code's decoder1).
        self.upsample = keras.Sequential(_dense_bn_relu(128, "up1") + _dense_bn_relu(512, "up2") + [
            keras.layers.Dense(512 * w * w, kernel_initializer=ORTHOGONAL(), name="up3_dense"),
            keras.layers.ReLU(name="up3_relu")], name="upsampling")
        self.upsample.build((None, self.vector_dim))

    def code_sizes(self):
        return [512 * self.feature_shape[1] ** 2]

    def bottleneck(self, features, training=False):
        levels = self.pyramid(features, training=training)
        capsules = ops.reshape(ops.concatenate([flatten_channels_first(level) for level in levels], axis=-1),
                               (ops.shape(features)[0], -1, self.capsule_dim))
        vectors = self.routing(capsules)
        norms = ops.sqrt(ops.sum(ops.square(vectors), axis=-1))
        if training and self.train_decode == "first":
            chosen = vectors[:, 0]
        else:
            chosen = ops.take_along_axis(vectors, ops.argmax(norms, axis=1)[:, None, None], axis=1)[:, 0]
        return [self.upsample(chosen, training=training)], {"vector_norms": norms}

    def get_config(self):
        config = super().get_config()
        config.update(squeeze_excite=self.squeeze_excite, se_after=list(self.se_after),
                      pyramid_bins=list(self.pyramid_bins), pyramid_filters=list(self.pyramid_filters),
                      pyramid_relu=self.pyramid_relu, capsule_dim=self.capsule_dim, num_vectors=self.num_vectors,
                      vector_dim=self.vector_dim, routing_iterations=self.routing_iterations,
                      squash_constant=self.squash_constant, train_decode=self.train_decode)
        return config
