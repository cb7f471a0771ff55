"""TensorFlow Datasets builders for MVTec AD, DAGM 2007 and MTD, built offline from a local copy.

None of these datasets may be downloaded automatically (licences and click-through
pages), so each builder reads a copy the user placed in ``manual_dir`` and splits it
exactly as ``adtf.data.load`` does (same readers, same validation, seed 0).

Features: ``image`` (as stored: RGB or gray), ``mask`` (gray, 0 or 255, zeros when the
image has no mask), ``label`` (good / anomalous), ``defect`` and ``path``.

Example:
    >>> import tensorflow_datasets as tfds
    >>> from adtf.data.tfds_builders import MVTecAD
    >>> builder = MVTecAD(config="bottle", data_dir="/tmp/tfds")          # doctest: +SKIP
    >>> builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
    ...     manual_dir="/data/mvtec_anomaly_detection"))                    # doctest: +SKIP
    >>> builder.as_dataset(split="test")                                   # doctest: +SKIP
"""
from __future__ import annotations

import io
import os

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from adtf.data.pipeline import MASK_THRESHOLD, read_mask
from adtf.data.sources import load

MVTEC_CATEGORIES = ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill",
                    "screw", "tile", "toothbrush", "transistor", "wood", "zipper")


class _AnomalyBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared part: features, and train/test splits from ``adtf.data.load``."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Built from a local copy with adtf.data.load's split."}
    _SPEC = ""  # the load() kind
    _DESCRIPTION = ""
    _HOMEPAGE = ""

    def _info(self):
        return self.dataset_info_from_configs(
            description=self._DESCRIPTION,
            homepage=self._HOMEPAGE,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, None)),
                "mask": tfds.features.Image(shape=(None, None, 1)),
                "label": tfds.features.ClassLabel(names=["good", "anomalous"]),
                "defect": tfds.features.Text(),
                "path": tfds.features.Text(),
            }),
            supervised_keys=("image", "label"),
        )

    def _load_options(self):
        return {"category": self.builder_config.name} if self.BUILDER_CONFIGS else {}

    def _split_generators(self, dl_manager):
        root = dl_manager.manual_dir
        dataset = load(f"{self._SPEC}:{root}", **self._load_options())
        return {"train": self._generate_examples(dataset.train, root),
                "test": self._generate_examples(dataset.test, root)}

    def _generate_examples(self, samples, root):
        for sample in samples:
            path = os.path.relpath(sample.path, root)  # portable: the same wherever the copy lives
            yield path, {"image": sample.path, "mask": _mask_png(sample), "label": sample.label,
                         "defect": sample.defect, "path": path}


def _mask_png(sample):
    """The sample's mask as a 0/255 gray PNG (zeros of the image's size without a mask)."""
    if sample.mask_path:
        with open(sample.mask_path, "rb") as file:  # the pipeline's rule: 0/255 masks and label maps alike
            mask = read_mask(file.read()).numpy() > MASK_THRESHOLD
    else:
        with Image.open(sample.path) as image:
            mask = np.zeros(image.size[::-1], bool)
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buffer, format="PNG")
    return buffer.getvalue()


class MVTecAD(_AnomalyBuilder):
    """MVTec AD, one config per category; train = ``train/good``, test = ``test/*``."""

    name = "mvtec_ad"
    _SPEC = "mvtec"
    _DESCRIPTION = "MVTec Anomaly Detection: 15 industrial categories, normal training images, pixel-annotated defects."
    _HOMEPAGE = "https://www.mvtec.com/company/research/datasets/mvtec-ad"
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=c, description=f"MVTec AD category {c}") for c in MVTEC_CATEGORIES]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download mvtec_anomaly_detection.tar.xz from https://www.mvtec.com/company/research/datasets/mvtec-ad
    (licence CC BY-NC-SA 4.0), extract it and pass the extracted folder (holding bottle/, cable/, ...)
    as manual_dir. A single category folder (holding train/good) also works as manual_dir.
    """


class Dagm2007(_AnomalyBuilder):
    """DAGM 2007, one config per class; split of paper 000 (500 normal train images)."""

    name = "dagm2007"
    _SPEC = "dagm"
    _DESCRIPTION = ("DAGM 2007 weakly supervised industrial optical inspection: 10 classes of statistically "
                    "textured 512x512 gray surfaces with one defect type each.")
    _HOMEPAGE = "https://hci.iwr.uni-heidelberg.de/content/weakly-supervised-learning-industrial-optical-inspection"
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=f"Class{n}", description=f"DAGM 2007 class {n}")
                       for n in range(1, 11)]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download the DAGM 2007 class archives (Class1.zip ... Class10.zip) from
    https://hci.iwr.uni-heidelberg.de/content/weakly-supervised-learning-industrial-optical-inspection
    (or the Zenodo mirror, record 12750201), extract them and pass the folder holding Class1/ ... Class10/
    (each with Train/, Test/ and their Label/Labels.txt) as manual_dir.
    """


class MagneticTileDefect(_AnomalyBuilder):
    """Magnetic Tile Defect (MTD); 80 % of MT_Free trains, the rest and all defects test."""

    name = "magnetic_tile_defect"
    _SPEC = "mtd"
    _DESCRIPTION = ("Magnetic tile surface defects (Huang et al., The Visual Computer 2020): 952 defect-free "
                    "tiles and 392 with blowhole, break, crack, fray or uneven defects, pixel annotated.")
    _HOMEPAGE = "https://github.com/abin24/Magnetic-tile-defect-datasets."
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Clone or download https://github.com/abin24/Magnetic-tile-defect-datasets. and pass the folder
    holding MT_Blowhole/, MT_Break/, MT_Crack/, MT_Fray/, MT_Free/ and MT_Uneven/ as manual_dir.
    """
