"""SavedModel export for TF Serving, and the metadata that travels with it.

``serving_default`` takes float32 images ``[B, H, W, 3]`` in ``[0, 1]``;
``serve_image_bytes`` takes encoded PNG/JPEG/BMP/GIF/WebP bytes ``[B]``. Both return every
output of the detector's ``call`` (for MoN: ``score``, ``d_mean``, ``d_max``,
``anomaly_map``, ``decisions`` for the six working points, ``anomalous`` at the
active one). The thresholds are variables inside the SavedModel; their names and
rules are also written to ``assets.extra/adtf.json`` (TF Serving ignores that folder).
"""
import contextlib
import json
import logging
import math
import os
import re
from pathlib import Path

import keras
import tensorflow as tf

from adtf.atomic import atomic_path
from adtf.data.pipeline import decode_image, is_complete_image_file, prepare_image
from adtf.errors import AdtfError
from adtf.paths import run_files


def _check_replaceable(path):
    """A SavedModel replaces its folder whole: only an earlier adtf export or an empty folder may stand there. (A
    user's `--out` at TF Serving's model_base_path, or at the run folder itself, deleted every version or the whole
    run.)"""
    path = Path(os.path.realpath(path))
    exported = (path / "saved_model.pb").is_file() and (path / "assets.extra" / "adtf.json").is_file()
    if exported and re.fullmatch(r"[0-9]+", path.name):  # another model written into models/adtf/1 went on being served as the old
        raise AdtfError(f"{path} is version {int(path.name)} of a served model and holds a SavedModel already: TF "
                        "Serving never reloads a version it has loaded, so a replacement would not be served. Export "
                        f"the next version, {path.parent / str(_next_version(os.listdir(path.parent)))}, or delete "
                        f"{path} first where no server has loaded it")
    if not path.exists() or (path.is_dir() and (exported or not any(path.iterdir()))):
        return
    if path.is_dir():
        held = sorted(entry.name for entry in path.iterdir())
        if run_files(path):  # a version folder below it would sit inside the run
            raise AdtfError(f"{path} is a run folder ({', '.join(run_files(path))}) "
                            "and no SavedModel: exporting there would delete the run. Give a new folder, or leave "
                            "out --out: adtf-export then writes the run's saved_model-<working point>/")
        raise AdtfError(f"{path} holds {', '.join(held[:5])}{', ...' if len(held) > 5 else ''} and is no adtf SavedModel: "
                        "exporting there would delete it. Give a new folder (for TF Serving, a version folder "
                        f"below the model's base path, e.g. {path / str(_next_version(held))})")
    raise AdtfError(f"{path} is a file: a SavedModel is a folder; give a folder's path")


def _next_version(names):
    return max((int(name) for name in names if re.fullmatch(r"[0-9]+", name)), default=0) + 1  # not "²"


@contextlib.contextmanager
def _without_temporary_folder_logs():
    """TensorFlow logs "Assets written to: <folder>" at INFO, which its logger shows in a notebook or a Python
    prompt: it named the export's temporary folder (``atomic_path``), gone a moment later, not the SavedModel."""
    def keep(record):
        return not record.getMessage().startswith("Assets written to")

    logger = logging.getLogger("tensorflow")
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def metadata(detector):
    """What a user needs to read the outputs: method, input size, working points, the active one."""
    config = detector.get_config()
    return {
        "class": type(detector).__name__,
        "image_size": list(detector.image_size),
        "score_names": list(detector.score_names),
        "working_points": detector.working_points,
        "working_point": detector.working_point,
        "threshold": detector.threshold,
        # the score the threshold applies to: an explicit one's may not be `score` (the first score)
        "threshold_score": detector.postprocess.point(detector.postprocess.active_name)["score"],
        "config": {k: v for k, v in config.items() if k not in ("working_points",)},
    }


def export_saved_model(detector, path):
    """Write ``detector`` as a SavedModel at ``path`` (atomically) and return the path.

    Args:
        detector: a fitted and calibrated ``adtf.detectors.Detector``.
        path: output folder.

    Example:
    >>> export_saved_model(detector, "runs/mon/saved_model")
    >>> served = tf.saved_model.load("runs/mon/saved_model")
    >>> served.signatures["serving_default"](images=tf.zeros([1, 224, 224, 3]))
    """
    detector.check_fitted("export a SavedModel")
    if detector.working_point is None or not detector.threshold < math.inf:  # +inf or NaN: no threshold at all
        raise AdtfError(f"the {type(detector).__name__} has no working point, and served so it would flag every part: "
                        "calibrate it on normal images first (detector.calibrate(...)), or set a threshold "
                        "(detector.set_working_point(value=...))")
    _check_replaceable(Path(path))
    height, width = detector.image_size
    detector.ensure_built()

    def serve_images(images):
        # Checked before the detector runs: a wrong size would otherwise fail deep inside its graph.
        check = tf.debugging.assert_equal(
            tf.shape(images)[1:], tf.constant([height, width, 3]),
            message=f"serving_default takes float32 images [B, {height}, {width}, 3] in [0, 1]; resize them, "
                    "or send the encoded files to serve_image_bytes, which resizes")
        with tf.control_dependencies([check]):
            return detector(tf.identity(images), training=False)

    def serve_image_bytes(image_bytes):
        # A payload that is no whole image file (an empty string, an error page, a capture cut short) becomes a
        # NaN image, so the detector returns it invalid, anomalous, score +inf, and scores the rest of the batch:
        # one camera's failed capture must not fail the line's whole request. (A file corrupt inside still fails
        # it, in TensorFlow's decoder: a graph has no way to catch that error.)
        def decode(contents):
            return tf.cond(is_complete_image_file(contents),
                           lambda: tf.ensure_shape(prepare_image(decode_image(contents), (height, width)),
                                                   (height, width, 3)),
                           lambda: tf.fill((height, width, 3), float("nan")))

        images = tf.map_fn(decode, image_bytes, fn_output_signature=tf.TensorSpec((height, width, 3), tf.float32))
        return detector(images, training=False)

    archive = keras.export.ExportArchive()
    archive.track(detector)
    archive.add_endpoint("serving_default", serve_images,
                         input_signature=[tf.TensorSpec((None, height, width, 3), tf.float32, name="images")])
    archive.add_endpoint("serve_image_bytes", serve_image_bytes,
                         input_signature=[tf.TensorSpec((None,), tf.string, name="image_bytes")])
    with atomic_path(path) as tmp, _without_temporary_folder_logs():
        archive.write_out(str(tmp), verbose=False)
        (tmp / "assets.extra").mkdir(exist_ok=True)
        (tmp / "assets.extra" / "adtf.json").write_text(json.dumps(metadata(detector), indent=2, default=str))
    return path
