"""Datasets for anomaly detection: sources (``load``), the tf.data ``pipeline``, manifests.

Example:
    >>> import adtf.data
    >>> ds = adtf.data.load("mvtec:mvtec_bottle")                          # doctest: +SKIP
    >>> train = adtf.data.pipeline(ds.train, arrays=ds.arrays, image_size=(224, 224))  # doctest: +SKIP
"""
from adtf.data.samples import AnomalyDataset, Sample, SourceKind, split_off  # noqa: F401
from adtf.data.sources import load, parse_spec  # noqa: F401
from adtf.data.pipeline import MASK_THRESHOLD, Batch, decode_image, pipeline, unpack_batch  # noqa: F401
from adtf.data.manifests import VerifyReport, manifest_names, read_manifest, verify  # noqa: F401
