"""The one contract every adtf detector keeps.

A detector is a ``keras.Model`` whose ``call(images)`` takes a float32 batch
``[B, H, W, 3]`` in ``[0, 1]`` (any size: it is resized to ``image_size`` here, once)
and returns a dict with at least

- ``score``: ``[B]`` image anomaly score, higher = more anomalous;
- ``anomaly_map``: ``[B, H, W]`` per-pixel score at the input's resolution;
- ``anomalous``: ``[B]`` bool decision at the active working point;
- ``decisions``: ``[B, K]`` bool decision at each calibrated working point;
- ``invalid``: ``[B]`` bool, the image held a NaN/inf pixel or gave a non-finite score
  (it is then anomalous, with every score +inf: bad pixels never pass as normal).

A method writes three things (see the README's "Adding a method"):

- ``detect(images, training)``: images already at ``image_size`` -> a dict with ``score``,
  every name in ``score_names`` and an ``anomaly_map`` ``[B, h, w]`` at any resolution
  (resized to the input here). Post-processing (``adtf.layers.WorkingPoints``) is added by
  ``call``, never by the method.
- training: gradient methods set ``default_epochs > 0`` and train through
  ``keras.Model.fit`` (a ``compute_loss`` or ``train_step`` override, ``compile`` with the
  paper's optimizers as defaults); statistics passes (MoN's mean, a dictionary) go in
  ``fit_statistics``. ``fit`` runs the first, then the second, and returns the History.
- ``presets`` (a ``Preset`` str Enum -> options) and ``smoke_test_options`` (a tiny
  configuration the contract test in ``tests/test_contract.py`` trains and exports).
"""
import json
import logging
import math
import os
import shutil
import sys
import time
import zipfile
from pathlib import Path

import keras
import numpy as np
from keras import ops
from tqdm.auto import tqdm

from adtf.callbacks import ShuffleByEpoch, StopWhenTerminated
from adtf.data.pipeline import unpack_batch
from adtf.errors import AdtfError, DataError, did_you_mean, unfilled_layers_refused
from adtf.layers.working_points import CUSTOM, PIXEL_SLACK, WorkingPoints
from adtf.thresholds import allowed_above, at_normal_quantile

# Bumped when a saved detector's layout changes; files without it predate the post-processing layer.
FORMAT_VERSION = 2
ADTF_GRAPH = "adtf graph"  # the name of graph_fn's functions, in TensorFlow's messages


def _not_about_retracing_by_design(record):
    """TensorFlow counts the traces of every tf.function made from one piece of code together, and warns of
    "excessive retracing" after five. adtf traces a graph per image size and per detector by design (graph_fn), and
    Keras a train function per model it fits (cross-fitting fits one per fold): those warnings are about nothing
    the user can change (six paragraphs for SimpleNet's 6 folds) and are dropped; every other one stays."""
    message = record.getMessage()
    return not ("triggered tf.function retracing" in message
                and (ADTF_GRAPH in message or "TensorFlowTrainer._make_function" in message))


logging.getLogger("tensorflow").addFilter(_not_about_retracing_by_design)


def batches(dataset, desc, verbose=True):
    """Iterate a tf.data dataset with a progress bar (its length when TF knows it)."""
    total = None
    try:
        n = int(dataset.cardinality())
        total = n if n >= 0 else None
    except (AttributeError, TypeError):
        pass
    # On a terminal the bar is cleared when done; written to a file or a notebook it ends its line instead, where
    # the next message once ran on after its last "\r" update.
    return tqdm(dataset, desc=desc, total=total, unit="batch", disable=not verbose, leave=not sys.stderr.isatty())


def normal_images(dataset, desc, verbose=True):
    """The image batches of a dataset a detector learns from, with a progress bar; those labelled anomalous are
    counted and said once the pass is done (``_warn_of_anomalous_labels``)."""
    count = anomalous = 0
    for batch in batches(dataset, desc, verbose):
        parts = unpack_batch(batch)
        count += int(parts.image.shape[0])
        anomalous += _labelled_anomalous(parts.label)
        yield parts.image
    _warn_of_anomalous_labels(anomalous, count, "fitted on")


def as_images(images):
    """Images as float32 ``[B, H, W, 3]`` in [0, 1], as the data pipeline and ``serve_image_bytes`` make them: uint8
    scaled by 1/255 and uint16 by 1/65535 (taken as they are, 0-255 values were scored against thresholds calibrated
    on [0, 1]), a gray
    channel repeated, an alpha channel dropped. Float images pass unchanged, so calling it twice is harmless."""
    if not hasattr(images, "dtype"):
        # (Keras hands a detector's call a list's arrays as tensors, whose TensorShapes do not sort: as tuples)
        shapes = {tuple(np.shape(image)) for image in images} if isinstance(images, (list, tuple)) else set()
        if len(shapes) > 1:  # numpy's "inhomogeneous shape" error, wrapped by Keras, said nothing of images
            raise DataError(f"a list of images of {len(shapes)} shapes ({', '.join(map(str, sorted(shapes)[:3]))}"
                            f"{', ...' if len(shapes) > 3 else ''}): a batch is one array of one size; score each "
                            "as a batch of one (image[None]), resize them first, or read their files with "
                            "adtf.data.pipeline(adtf.data.load('folder:DIR').train, image_size=...)")
        images = np.asarray(images)
    # Integer pixels in their type's range: uint8 / 255, and uint16 / 65535 (a 16-bit camera's frames; a 16-bit file
    # decodes to its top 8 bits, the same levels to 1/255).
    dtype = keras.backend.standardize_dtype(images.dtype)
    scale = {"uint8": 255.0, "uint16": 65535.0}.get(dtype)
    if not scale and not dtype.startswith("float"):  # int64 0-255 values (numpy's default) came back invalid, unsaid
        raise DataError(f"images of dtype {dtype}: adtf takes uint8 (0-255), uint16 (0-65535) or float pixels in "
                        "[0, 1]; convert them first (e.g. images.astype(np.uint8) for 0-255 values)")
    images = ops.convert_to_tensor(images, "float32")
    if scale:
        images = images / scale
    if len(images.shape) != 4 or images.shape[-1] not in (1, 3, 4, None):
        raise DataError(f"images must be [B, H, W, C] with 1, 3 or 4 channels (gray, RGB, RGBA), got shape "
                        f"{tuple(images.shape)}")
    if 0 in tuple(images.shape)[1:3]:  # TensorFlow's resize said "input image must be of non-zero size", deep inside
        raise DataError(f"images of shape {tuple(images.shape)}: an image {images.shape[1]} pixels high and "
                        f"{images.shape[2]} wide has no pixels to score")
    if images.shape[-1] == 1:
        return ops.repeat(images, 3, axis=-1)
    return images[..., :3] if images.shape[-1] == 4 else images


def _warn_of_0_255_floats(images):
    """Float pixels in 0-255 handed to a detector come back invalid (+inf) one and all: said, where the caller's
    pixels can be looked at (a NumPy array or an eager tensor, as Keras hands one over; not a tensor in a graph)."""
    if not hasattr(images, "dtype") or not keras.backend.standardize_dtype(images.dtype).startswith("float"):
        return
    try:
        pixels = images if isinstance(images, np.ndarray) else images.numpy()
    except (AttributeError, NotImplementedError, TypeError, ValueError):  # symbolic: no values yet
        return
    high = float(np.nanmax(pixels)) if pixels.size and not np.isnan(pixels).all() else 0.0
    if 1 + PIXEL_SLACK < high <= 255.5:
        import warnings

        advice = ("divide them by 255, or give them as uint8" if high > 2 else  # else a resize's overshoot, say
                  "clip them to [0, 1]")
        warnings.warn(f"float images with pixels up to {high:g}: adtf takes float pixels in [0, 1] and scores these "
                      f"invalid (+inf); {advice}")


def _labelled_anomalous(labels):
    """How many of a batch's integer labels say anomalous (adtf.data's 1); 0 without labels."""
    labels = None if labels is None else np.asarray(labels)
    return int((labels == 1).sum()) if labels is not None and np.issubdtype(labels.dtype, np.integer) else 0


def _warn_of_anomalous_labels(anomalous, count, done):
    """Images labelled anomalous handed to fit or calibrate (a test set passed by mistake) were learnt as normal,
    unsaid: a detector so fitted, or a max-of-normals threshold over defects, passes defects. A warning, not an
    error: a dataset of another's making may give label 1 another meaning."""
    if anomalous:
        import warnings

        warnings.warn(f"{anomalous} of the {count} images {done} are labelled anomalous (label 1, as adtf.data labels "
                      "defective parts): they are taken as normal; give normal images only (dataset.train, or "
                      "data.split_off(dataset.train, ...) for a hold-out)")  # one place: said once per fit


def as_dataset(x, batch_size=16, training=False):
    """``x`` as a tf.data dataset of batches: a dataset as it is, an image array ``[N, H, W, C]`` batched.

    ``training``: an array with a NaN/inf pixel or one outside [0, 1] is refused, naming the images (scoring takes
    them, and returns them invalid); images decoded from files cannot hold one."""
    import tensorflow as tf

    if isinstance(x, tf.data.Dataset):
        return x
    if isinstance(x, (np.ndarray, tf.Tensor)) and len(x.shape) == 4:
        images = as_images(x)
        if training:
            pixels = np.asarray(images)
            low, high = pixels.min(axis=(1, 2, 3)), pixels.max(axis=(1, 2, 3))  # NaN where an image holds one
            bad = ~((low >= -PIXEL_SLACK) & (high <= 1 + PIXEL_SLACK))
            if bad.any():
                raise DataError(f"{int(bad.sum())} of the {len(bad)} training images hold NaN/inf pixels or pixels "
                                f"outside [0, 1] (images {np.flatnonzero(bad)[:5].tolist()}, values "
                                f"{np.nanmin(low):.4g} to {np.nanmax(high):.4g}); float images are in [0, 1] "
                                "(uint8 ones are scaled for you), and a model fitted on bad pixels learns them as "
                                "normal: scale, drop or repair them")
        return tf.data.Dataset.from_tensor_slices(images).batch(int(batch_size))
    raise DataError(f"expected a tf.data.Dataset of batches or an image array [N, H, W, C], got {type(x).__name__}"
                    f"{' of shape ' + str(tuple(x.shape)) if hasattr(x, 'shape') else ''}")


def check_ranges(owner, **options):
    """Refuse an option out of its range in one line that names it, before it fails deep in a fit (a batch size of 0
    divided by zero) or trains without a word (a negative learning rate or noise): ``name=(value, lowest, strict)``,
    where ``strict`` asks for a value above ``lowest`` rather than at least it. NaN and infinity are refused too."""
    for name, (value, lowest, strict) in options.items():
        if math.isinf(float(value)):  # NaN fails the comparison below
            raise AdtfError(f"{owner}'s {name} must be a finite number, got {value}")
        if not (float(value) > lowest if strict else float(value) >= lowest):
            raise AdtfError(f"{owner}'s {name} must be {'above' if strict else 'at least'} {lowest}, got {value}")


def _progress(verbose):
    return verbose not in (0, False, None)


# What keras.Model's __init__ takes beside a detector's own options (a saved config carries name, trainable, dtype).
_KERAS_OPTIONS = ("name", "trainable", "dtype", "autocast", "activity_regularizer")


def _check_options(cls, options):
    """Refuse a detector option that none of its classes takes, naming those they do (Keras' own message named the
    typo but not the options)."""
    import inspect

    unknown = [name for name in options if name not in _KERAS_OPTIONS]
    if not unknown:
        return
    known = []
    for klass in cls.__mro__:
        if issubclass(klass, Detector) and "__init__" in vars(klass):
            known += [name for name, parameter in inspect.signature(klass.__init__).parameters.items()
                      if parameter.kind is parameter.POSITIONAL_OR_KEYWORD and name != "self" and name not in known
                      and name not in ("working_point_rules", "fitted")]
    raise AdtfError(f"{cls.__name__} has no option {unknown[0]!r}{did_you_mean(unknown[0], known)} "
                    f"(its options: {', '.join(known)})")


def check_fit_options(options):
    """Refuse a ``fit`` keyword that Keras' ``fit`` does not take, naming those it does."""
    import inspect

    known = [name for name in inspect.signature(keras.Model.fit).parameters if name not in ("self", "x", "epochs")]
    for name in options:
        if name not in known and name != "progress":
            raise AdtfError(f"fit() has no option {name!r}{did_you_mean(name, [*known, 'epochs', 'progress'])} "
                            f"(it takes epochs, progress and Keras' {', '.join(known)})")


class Detector(keras.Model):
    """Base class of every detector: resizing, post-processing, fit, calibration, presets.

    Args:
        image_size: ``(height, width)`` the detector works at; inputs of another size are resized.
        seed: seed of the method's randomness (noise, shuffling of training images). The initial weights
            come from Keras' global seed: call ``keras.utils.set_random_seed(seed)`` before building the
            detector for a repeatable fit (``fit_evaluate_export`` and ``adtf-fit`` do).
        working_point_rules: the calibration's record, restored from a saved config.
        fitted: whether ``fit`` has run (restored from a saved config): an unfitted detector scores its random or
            empty state, so calibrating, evaluating or exporting one is refused.

    Class attributes a method sets:
        score_names: image scores it returns (working points apply to these); ``("score",)``.
        working_point_names: the points ``working_points_from`` calibrates.
        default_working_point: the one activated after calibration (None: the first).
        default_epochs: epochs of gradient training ``fit`` runs by default (0: none).
        default_batch_size: training batch size (None: keep the input's batches).
        calibration_fraction: normal training images held out to calibrate on, by default.
        Preset, presets: a str Enum of preset names and their options (``from_preset``).
        smoke_test_options: options of a tiny instance for the contract test.
    """

    score_names = ("score",)
    working_point_names = ("max_normal", "fpr1_normal")
    # (top, left, height, width) of the input the method sees and the pixel metrics score, where it is a part (a crop).
    scored_region = None
    default_working_point = None
    default_epochs = 0
    default_batch_size = None
    shuffle_block = 1024  # training images shuffled together (ShuffleByEpoch); memory ~ block x image
    # A trained model scores its own training images low: calibrate on images it never saw.
    calibration_fraction = 0.2
    short_name = None
    # What each training metric measures, for the training curves' legend (a name like p_fake says little alone).
    metric_descriptions = {}
    # (min, max) longer side when a preset leaves image_size to the data (None): see adtf.run.data_image_size.
    image_size_range = None
    image_size_multiple = 16  # each side of a data-chosen size is rounded to this
    Preset = None
    presets = {}
    smoke_test_options = {}

    def __init__(self, image_size: tuple[int, int] = (224, 224), seed: int = 0, working_point_rules: dict | None = None,
                 fitted: bool = False, **kwargs):
        _check_options(type(self), kwargs)
        super().__init__(**kwargs)
        self.fitted = bool(fitted)
        self.image_size = tuple(int(s) for s in image_size)
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise AdtfError(f"image_size is [height, width] in pixels, both at least 1; got {list(image_size)}")
        self.seed = int(seed)
        self.postprocess = WorkingPoints(self.working_point_names, self.score_names, rules=working_point_rules,
                                         name="working_points")
        self.fit_info = {}  # what a fit measured about itself (cache size, timings): the runner records it

    # -- presets ----------------------------------------------------------------------
    @classmethod
    def preset_options(cls, preset):
        """The options of a named preset (a ``cls.Preset`` value)."""
        names = [p.value for p in cls.Preset] if cls.Preset else []
        try:
            return dict(cls.presets[cls.Preset(preset)])
        except (TypeError, ValueError, KeyError):
            raise AdtfError(f"unknown {cls.short_name or cls.__name__} preset {preset!r}; "
                            f"choose one of {names or 'none (this method has no presets)'}") from None

    @classmethod
    def from_preset(cls, preset, **overrides):
        """Build a named preset (``paper``, ``offline``, ``fast``); keyword arguments override it."""
        return cls(**{**cls.preset_options(preset), **overrides})

    # -- call = resize -> detect -> post-process ----------------------------------------
    def scored_part(self, pixels):
        """``[N, H, W, ...]`` images, masks or maps cut to ``scored_region``, which is in the input's frame: at another
        size (a caller's own pipeline; the detector resizes what it is given) the same share of it."""
        if self.scored_region is None:
            return pixels
        top, left, height, width = self.scored_region
        rows, cols = pixels.shape[1], pixels.shape[2]
        if (rows, cols) != tuple(self.image_size):
            scale_y, scale_x = rows / self.image_size[0], cols / self.image_size[1]
            top, left = round(top * scale_y), round(left * scale_x)
            height, width = round(height * scale_y), round(width * scale_x)
        return pixels[:, top: top + height, left: left + width]

    def resized(self, images):
        """``images`` as float32 at ``image_size``, the one resize every detector shares: bilinear, anti-aliased, as
        the data pipeline and ``serve_image_bytes`` resize (an aliased resize here scored full-size images against
        thresholds calibrated on anti-aliased ones)."""
        images = as_images(images)
        if tuple(images.shape[1:3]) != self.image_size:
            images = ops.image.resize(images, self.image_size, interpolation="bilinear", antialias=True)
        return images

    def detect(self, images, training=False):
        """The method itself: images at ``image_size`` -> ``score``, ``score_names``, ``anomaly_map``."""
        raise NotImplementedError(f"{type(self).__name__} must implement detect(images, training)")

    def finish(self, images, outputs):
        """Post-processing: the map at the input's size, working-point decisions, validity."""
        outputs = dict(outputs)
        anomaly_map = ops.convert_to_tensor(outputs["anomaly_map"], "float32")
        if anomaly_map.shape[1:3] != images.shape[1:3] or None in images.shape[1:3]:
            size = tuple(ops.shape(images)[1:3])
            anomaly_map = ops.image.resize(anomaly_map[..., None], size, interpolation="bilinear")[..., 0]
        post = self.postprocess(ops.stack([outputs[name] for name in self.score_names], axis=-1), images)
        # An invalid image's map is +inf whole, as its score is (pixels outside [0, 1] left the map finite).
        unusable = ops.logical_or(ops.logical_not(ops.isfinite(anomaly_map)), post["invalid"][:, None, None])
        outputs["anomaly_map"] = ops.where(unusable, np.inf, anomaly_map)
        for i, name in enumerate(self.score_names):
            outputs[name] = post["scores"][:, i]
        outputs["score"] = ops.where(post["invalid"], np.inf, ops.cast(outputs["score"], "float32"))
        outputs.update(decisions=post["decisions"], anomalous=post["anomalous"], invalid=post["invalid"])
        return outputs

    def __call__(self, *args, **kwargs):
        given = args[0] if args else kwargs.get("images")
        first = given[0] if isinstance(given, (list, tuple)) and given else given
        if isinstance(first, (str, os.PathLike)) or type(first).__module__.startswith("PIL."):
            # Keras' "Only input tensors may be passed as positional arguments" said nothing of what to pass
            path = isinstance(first, (str, os.PathLike))
            raise DataError(f"a detector scores pixels, an array [B, H, W, C], not {'paths' if path else 'PIL images'}: "
                            + ("read files with adtf.data.pipeline(adtf.data.load('folder:DIR').train, "
                               "image_size=detector.image_size), or score a folder with adtf.evaluate.score_parts "
                               "(adtf-score)" if path else "np.asarray(image)[None] for one PIL image"))
        return super().__call__(*args, **kwargs)

    def call(self, images, training=False):
        _warn_of_0_255_floats(images)
        images = as_images(images)
        # TensorFlow's convolutions mis-shape an empty batch ("input depth must be evenly divisible by filter
        # depth: 3 vs 32"): one blank image runs in its place and none of its outputs is returned.
        n = images.shape[0]
        if n is not None and n > 0:
            return self.finish(images, self.detect(self.resized(images), training=training))
        import tensorflow as tf

        n = tf.shape(images)[0]
        images = tf.cond(n > 0, lambda: images, lambda: tf.pad(images, [[0, 1], [0, 0], [0, 0], [0, 0]]))
        outputs = self.finish(images, self.detect(self.resized(images), training=training))
        return {key: value[:n] for key, value in outputs.items()}

    # -- graph-mode inference -----------------------------------------------------------
    def graph_fn(self, name, fn):
        """``fn`` in a ``tf.function`` (eager Keras calls are several times slower on CPU), one per size of its inputs'
        images: the batch dimension is relaxed after a second batch size (``reduce_retracing``), the image size never
        is. Post-processing needs it known (paper 001's regions tile the map), and a relaxed trace once crashed the
        second size an API user scored."""
        import tensorflow as tf

        cache = self.__dict__.setdefault("_compiled_fns", {})

        def call(*args):
            key = (name, *(tuple(arg.shape[1:3]) for arg in args))
            if key not in cache:
                def graph(*inputs):
                    return fn(*inputs)

                graph.__qualname__ = f"{ADTF_GRAPH} {name}"  # TensorFlow's retracing warnings name it
                cache[key] = tf.function(graph, reduce_retracing=True)
            return cache[key](*args)

        return call

    def infer(self, images):
        """``call`` in graph mode, returning numpy arrays; an empty batch gives empty arrays."""
        images = as_images(images)
        if images.shape[0] == 0:  # see call: a blank image runs in the empty batch's place
            return {key: value[:0] for key, value in self.infer_batch(ops.zeros((1, *images.shape[1:]))).items()}
        return self.infer_batch(images)

    def infer_batch(self, images):
        """``infer`` on a batch of one image or more: the place for a method's faster graph path."""
        outputs = self.graph_fn("call", lambda x: self(x, training=False))(images)
        return {key: np.asarray(value) for key, value in outputs.items()}

    def score_dataset(self, dataset, verbose=True, keep_maps=True, desc="scoring", timings=None, keep_masks=True):
        """Run the detector over a dataset; return numpy arrays of every output (and labels, masks, paths).

        ``timings``: a list to append ``(seconds, images)`` of each batch's inference to. ``keep_maps=False`` drops
        every per-pixel output (``anomaly_map``, FlowDictionary's ``top_regions``). ``keep_masks=False`` drops
        the batches' masks (a set without masks yields zeros, as large as the maps: 2 GB for 10,000 images at 224).
        """
        self.check_fitted("score images")
        collected = {}
        for batch in batches(as_dataset(dataset), desc, verbose):
            batch = unpack_batch(batch)
            start = time.perf_counter()
            outputs = self.infer(batch.image)
            if timings is not None:
                timings.append((time.perf_counter() - start, len(outputs["score"])))
            if not keep_maps:  # every per-pixel output: the anomaly map, and a method's own (top_regions)
                outputs = {key: value for key, value in outputs.items() if np.ndim(value) < 3}
            outputs.update({k: v for k, v in zip(("label", "mask", "path"), batch[1:])
                            if v is not None and (keep_masks or k != "mask")})
            if "mask" in outputs:  # kept as defect or not, every reader's `> 0.5`: a quarter of float32's memory
                outputs["mask"] = np.asarray(outputs["mask"]) > 0.5
            for key, value in outputs.items():
                collected.setdefault(key, []).append(np.asarray(value))
        if not collected:
            raise AdtfError("the dataset to score is empty")
        return {key: np.concatenate(parts) for key, parts in collected.items()}

    # -- training -------------------------------------------------------------------------
    def epochs_for(self, n_images, batch_size=None):
        """The epochs a fit on ``n_images`` training images trains when none are given (``default_epochs``;
        a method whose schedule depends on the data's size overrides it)."""
        return self.default_epochs

    def fit(self, x=None, *, epochs=None, batch_size=None, callbacks=None, verbose="auto", progress=None, **kwargs):
        """Train on normal images: Keras' ``fit`` for gradient methods, then ``fit_statistics``.

        Args:
            x: an ``adtf.data.pipeline`` dataset (its labels, masks and paths are dropped by
                ``training_data``), any dataset of image batches, or an image array.
            epochs: gradient epochs (default ``default_epochs``; 0 skips gradient training).
            batch_size: training batch size (default ``default_batch_size``, else the input's).
            callbacks: Keras callbacks (``BackupAndRestore`` resumes a killed fit).
            verbose: Keras' verbosity; also switches the statistics pass's progress bar unless ``progress`` is given.
            progress: progress bars for the detector's own passes (statistics, a feature cache) when Keras' lines
                are off for another bar (``adtf.callbacks.EpochProgress``).
            **kwargs: passed on to ``keras.Model.fit`` (``initial_epoch``, ``steps_per_epoch``...).

        Returns:
            The ``keras.callbacks.History`` (empty for statistics-only methods).
        """
        epochs = self.default_epochs if epochs is None else int(epochs)
        if epochs < 0:
            raise AdtfError(f"epochs must be 0 (no gradient training) or more, got {epochs}")
        if epochs and not type(self).default_epochs:
            raise AdtfError(f"{type(self).__name__} has no gradient training (its fit is one pass of statistics over "
                            f"the images): leave epochs out, got {epochs}")
        check_fit_options(kwargs)  # a typo must not wait for a feature cache, nor pass unseen where nothing trains
        x = as_dataset(x, batch_size or self.default_batch_size or 16, training=True)
        # A BackupAndRestore that deletes its checkpoint does so when the gradient epochs end, before the statistics
        # stage (paper 001's dictionary): a kill there lost every epoch. Kept until both stages are done.
        backups = [c for c in callbacks or [] if isinstance(c, keras.callbacks.BackupAndRestore) and c.delete_checkpoint]
        for backup in backups:
            backup.delete_checkpoint = False
        history = None
        if epochs > 0:
            self.prepare_training()
            shuffle = ShuffleByEpoch(self.seed)
            data = self.training_data(x, batch_size or self.default_batch_size, shuffle)
            kwargs.setdefault("shuffle", False)  # training_data shuffles, per epoch, reproducibly
            history = super().fit(data, epochs=epochs, callbacks=[shuffle, StopWhenTerminated(), *(callbacks or [])],
                                  verbose=verbose, **kwargs)
        self.fit_statistics(x, verbose=_progress(verbose) if progress is None else progress)
        for backup in backups:
            backup.delete_checkpoint = True
            shutil.rmtree(backup.backup_dir, ignore_errors=True)
        self.fitted = True
        if history is None:
            history = keras.callbacks.History()
            history.set_model(self)
            history.history = {}
        return history

    def training_data(self, x, batch_size=None, shuffle=None):
        """What the method trains on: image batches only (never a string tensor), reshuffled each epoch.

        The order of an epoch depends only on ``seed`` and the epoch number, so a fit resumed by
        ``BackupAndRestore`` sees the same batches as an uninterrupted one.
        """
        import tensorflow as tf

        x = as_dataset(x, batch_size or 16, training=True)
        images = x.map(lambda *batch: unpack_batch(batch if len(batch) > 1 else batch[0]).image)
        if batch_size is None:
            batch_size = images.element_spec.shape[0] or 16
        # Keras runs one extra optimizer step per epoch on a dataset of unknown length (an Adam
        # step on no data still moves the weights), so count the images once and say how many batches.
        def counts(*batch):  # images, and those labelled anomalous (adtf.data's label 1), in one pass
            parts = unpack_batch(batch if len(batch) > 1 else batch[0])
            flagged = (tf.reduce_sum(tf.cast(tf.equal(tf.cast(parts.label, tf.int64), 1), tf.int64))
                       if parts.label is not None and parts.label.dtype.is_integer else tf.constant(0, tf.int64))
            return tf.cast(tf.shape(parts.image)[0], tf.int64), flagged

        count, anomalous = (int(n) for n in x.map(counts).reduce(
            (tf.constant(0, tf.int64), tf.constant(0, tf.int64)), lambda total, c: (total[0] + c[0], total[1] + c[1])))
        if count == 0:
            raise DataError("no training images")
        _warn_of_anomalous_labels(anomalous, count, "fitted on")
        images = images.unbatch()
        if shuffle is not None:
            images = shuffle.apply(images, self.shuffle_block)
        steps = -(-count // int(batch_size))
        return (images.batch(int(batch_size)).apply(tf.data.experimental.assert_cardinality(steps))
                .prefetch(tf.data.AUTOTUNE))

    def fit_statistics(self, x, verbose=True):
        """A statistics pass over the normal images after gradient training (none by default)."""

    def prepare_training(self):
        """Build the model, compile it with the method's defaults, and build every optimizer.

        ``BackupAndRestore`` refuses an unbuilt model, and an unbuilt optimizer is saved but
        silently not restored (Keras warns "Skipping variable loading for optimizer"), so all
        of it exists before ``fit`` starts.
        """
        with self.distribute_strategy.scope():
            self.ensure_built()
            if not self.compiled:
                self.compile()
            self.build_optimizers()

    def optimizer_parts(self):
        """``[(optimizer, layer it updates)]``; a method with several optimizers lists each with its part."""
        return [(self.optimizer, self)]

    def build_optimizers(self):
        """Create every optimizer's variables for the part it trains."""
        for optimizer, part in self.optimizer_parts():
            if optimizer is not None and not optimizer.built:
                optimizer.build(part.trainable_variables)

    # -- working points -------------------------------------------------------------------
    def calibrate(self, normal_ds, verbose=True):
        """Working-point thresholds from normal images only; activates the default one.

        Returns ``working_points``. The base rules are the largest normal score (no normal
        image flagged) and the score that flags 1% of them; a method with its own rules
        (MoN's six) overrides ``working_points_from``.
        """
        self.check_fitted("calibrate working points")
        return self.calibrate_on_outputs(self.score_dataset(normal_ds, verbose=verbose, keep_maps=False,
                                                            keep_masks=False, desc="calibrating"))

    def calibrate_on_outputs(self, outputs):
        """``calibrate`` from normal images' outputs already scored (``score_dataset(..., keep_maps=False)``),
        by this detector or, in cross-fitted calibration, by detectors fitted without those images."""
        self.check_fitted("calibrate working points")
        if outputs["invalid"].any():
            where = np.flatnonzero(outputs["invalid"])[:5]
            named = ([p.decode() if isinstance(p, bytes) else str(p) for p in outputs["path"][where]]
                     if "path" in outputs else [f"image {i}" for i in where])
            raise DataError(f"{int(outputs['invalid'].sum())} calibration images are invalid (NaN/inf pixels, or "
                            f"pixels outside [0, 1]), e.g. {named}")
        _warn_of_anomalous_labels(_labelled_anomalous(outputs.get("label")), len(outputs["invalid"]), "calibrated on")
        points = self.working_points_from(outputs)
        if set(points) != set(self.working_point_names):
            raise AdtfError(f"{type(self).__name__}.working_points_from returned {sorted(points)}, "
                            f"not its working_point_names {list(self.working_point_names)}")
        with np.errstate(over="ignore"):  # the layer would flag every part at one
            unusable = {name: point["value"] for name, point in points.items()
                        if not np.isfinite(np.float32(point["value"]))}
        if unusable:
            raise AdtfError(f"{type(self).__name__}.working_points_from gave thresholds that are no numbers the model "
                            f"can keep (float32): {unusable}; its calibration scores reach past 3.4e38, or are not finite")
        self.fit_info["calibration_images"] = int(len(outputs["invalid"]))  # evaluate's report says how many
        for name, point in points.items():
            self.postprocess.set_point(name, point["value"], point["score"], point["rule"])
        self.set_working_point(self.default_working_point or self.working_point_names[0])
        return self.working_points

    def working_points_from(self, outputs):
        """``{name: {"value", "score", "rule"}}`` from the outputs of scoring normal images."""
        scores = outputs[self.score_names[0]]
        n = len(scores)
        allowed = allowed_above(n, 0.01)
        return {
            "max_normal": {"value": at_normal_quantile(scores, fpr=0.0), "score": self.score_names[0],
                           "rule": "max(normal scores)"},
            # Said with its count: below 100 normal images it flags none of them, the same threshold as max_normal.
            "fpr1_normal": {"value": at_normal_quantile(scores, fpr=0.01), "score": self.score_names[0],
                            "rule": f"at most 1% of normal images flagged ({allowed} of {n}"
                                    + ("; under 100 images, max(normal scores))" if not allowed else ")")},
        }

    @property
    def working_points(self):
        """The calibrated working points: ``{name: {"value", "score", "rule"}}`` (empty before ``calibrate``)."""
        return {name: self.postprocess.point(name) for name in self.working_point_names if name in self.postprocess.rules}

    @property
    def working_point(self):
        """The active working point's name, ``"explicit:<score>><value>"`` for an explicit one, or None."""
        name = self.postprocess.active_name
        if name != CUSTOM:
            return name
        if CUSTOM not in self.postprocess.rules:
            return None  # never calibrated, never set: every part is flagged (the layer's +inf thresholds)
        point = self.postprocess.point(CUSTOM)
        return f"explicit:{point['score']}>{np.float32(point['value'])!s}"

    @property
    def threshold(self):
        """The active threshold (a float; +inf before calibration)."""
        return self.postprocess.point(self.postprocess.active_name)["value"]

    def set_working_point(self, name=None, value=None, score=None):
        """Make a calibrated working point (by name) or an explicit threshold the active one.

        Args:
            name: one of ``self.working_points``.
            value: an explicit threshold instead of a named working point.
            score: which image score an explicit value applies to (default ``score_names[0]``).
        """
        if name is not None:
            if name not in self.working_points:
                raise AdtfError(f"unknown working point {name!r}; calibrated ones: "
                                f"{sorted(self.working_points) or 'none (run calibrate first)'}")
            self.postprocess.activate(name)
            return
        if value is None:
            raise AdtfError("give a working point name or an explicit threshold value")
        # A NaN or +inf threshold is no threshold (the layer flags every part at one, as it does before calibration);
        # the layer keeps float32, in which anything from 3.4e38 up is +inf.
        if not float(value) <= float(np.finfo(np.float32).max):
            raise AdtfError(f"an explicit threshold must be a number below +inf (in float32, as the model keeps it: "
                            f"below 3.4e38), got {value}")
        score = score or self.score_names[0]
        if score not in self.score_names:
            raise AdtfError(f"unknown score {score!r}; this detector has {list(self.score_names)}")
        # Named by float32's shortest exact text: two thresholds that differ name two points (0.5 and 0.5000004).
        self.postprocess.set_point(CUSTOM, float(value), score, rule=f"explicit: {score} > {np.float32(value)!s}")
        self.postprocess.activate(CUSTOM)

    # -- evaluation hooks -----------------------------------------------------------------
    def report_extras(self, dataset, outputs, out_dir, batch_size=16):
        """A method's own plots and report lines: ``({plot name: file name}, [markdown lines])``."""
        return {}, []

    def extra_metrics(self, outputs):
        """A method's own numbers for ``metrics.json``, from the test outputs: ``{name: float}``."""
        return {}

    # -- saving -----------------------------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config.update(image_size=list(self.image_size), seed=self.seed,
                      working_point_rules=dict(self.postprocess.rules), fitted=self.fitted, adtf_format=FORMAT_VERSION)
        return config

    def get_compile_config(self):
        # A loaded detector scores; ``fit`` compiles it again with the method's defaults (or call
        # ``compile`` with your own) before it trains on.
        return None

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("adtf_format", None)
        config.setdefault("fitted", True)  # saved before the flag existed: by adtf-fit, after its fit
        return cls(**config)

    def check_fitted(self, action):
        """Refuse ``action`` on a detector never fitted: it would score its random or empty state."""
        if not self.fitted:
            raise AdtfError(f"this {type(self).__name__} is not fitted, so it cannot be used to {action}: call "
                            "fit(normal images) first, or load a fitted one (adtf.detectors.load; after load_weights "
                            "of a fitted one's weights, set detector.fitted = True)")

    def ensure_built(self):
        """Trace ``call`` once: scoring runs through faster graphs, but saving and export need a built model."""
        if not self.built:
            self(np.zeros((1, *self.image_size, 3), "float32"), training=False)

    def save(self, filepath, *args, **kwargs):
        self.ensure_built()
        return super().save(filepath, *args, **kwargs)

    def export(self, path, **kwargs):
        """Write a SavedModel for TF Serving; see ``adtf.export.export_saved_model``."""
        from adtf.export import export_saved_model

        return export_saved_model(self, path, **kwargs)


def is_adtf_config(config):
    """Whether a ``.keras`` file's ``config.json`` is an adtf detector's, of this version or an earlier one."""
    inner = config.get("config")
    return isinstance(inner, dict) and "adtf_format" in inner or str(config.get("registered_name")).startswith("adtf>")


def saved_by_adtf(path):
    """Whether the ``.keras`` file at ``path`` holds an adtf detector (any version's); None where it cannot be read."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, RuntimeError, NotImplementedError, zipfile.BadZipFile):  # (encrypted, odd)
        return None
    return isinstance(config, dict) and is_adtf_config(config)


def load(path):
    """Load a detector saved with ``detector.save(path)`` (``.keras``), with safe mode on."""
    import adtf.detectors  # noqa: F401  registers the detector classes

    folder = Path(path)
    if folder.is_dir():  # a run folder or a SavedModel, where a .keras file was meant
        hint = (f"the run's model is {folder / 'model.keras'}" if (folder / "model.keras").is_file() else
                "a SavedModel is served, not loaded as a detector: tf.saved_model.load(path)"
                if (folder / "saved_model.pb").is_file() else "give the .keras file that detector.save wrote")
        raise AdtfError(f"cannot load a detector from {path}: a folder, not a .keras file ({hint})")
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
            damaged = archive.testzip()  # a copy or a disk that flipped bytes: Keras met it as a zipfile traceback
    except (OSError, KeyError, zipfile.BadZipFile, ValueError) as err:
        raise AdtfError(f"cannot load a detector from {path}: not a .keras file ({err})") from None
    if damaged:
        raise AdtfError(f"cannot load a detector from {path}: the file is damaged ({damaged} fails its checksum): "
                        "copy it again from where it was written, or fit again")
    if not is_adtf_config(config):
        raise AdtfError(f"cannot load a detector from {path}: it holds a Keras {config.get('class_name', 'model')}, not "
                        "an adtf detector (load it with keras.saving.load_model, or give the model.keras that adtf-fit "
                        "or detector.save wrote)")
    if "adtf_format" not in config.get("config", {}):
        raise AdtfError(f"{path} was saved by an earlier adtf, before working points became a layer (its config has "
                        "no adtf_format); it cannot be loaded by this version: fit it again (adtf-fit writes a new "
                        "model.keras), or keep serving its SavedModel, which keeps working")
    try:
        with unfilled_layers_refused(lambda reason: AdtfError(f"cannot load a detector from {path}: {reason}")):
            return keras.saving.load_model(path, safe_mode=True)
    except (OSError, ValueError, TypeError, zipfile.BadZipFile) as err:
        raise AdtfError(f"cannot load a detector from {path}: {err}") from None
