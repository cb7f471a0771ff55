"""The one contract every adtf detector keeps.

A detector is a ``keras.Model`` whose ``call(images)`` takes a float32 batch
``[B, H, W, 3]`` in ``[0, 1]`` and returns a dict with at least

- ``score``: ``[B]`` image anomaly score, higher = more anomalous;
- ``anomaly_map``: ``[B, H, W]`` per-pixel score at input resolution;
- ``anomalous``: ``[B]`` bool decision at the active working point.

It also has ``fit(train_ds)`` (a statistics pass, gradient training or both),
``calibrate(normal_ds)`` (working-point thresholds from normal images only),
``save``/``load`` (Keras format, loaded with safe mode on) and ``export`` (SavedModel).

The active working point lives in two variables, ``threshold`` and
``threshold_score`` (index into ``score_names``), so a user can move it without
refitting, in the Keras model and in the exported SavedModel alike.
"""
import time

import numpy as np
import keras
from keras import ops
from tqdm.auto import tqdm

from adtf.errors import AdtfError
from adtf.thresholds import at_normal_quantile


def images_of(batch):
    """The image tensor of an adtf.data batch ``(image, label, mask, path)`` or of a bare image batch."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def batches(dataset, desc, verbose=True):
    """Iterate a tf.data dataset with a progress bar (its length when TF knows it)."""
    total = None
    try:
        n = int(dataset.cardinality())
        total = n if n >= 0 else None
    except (AttributeError, TypeError):
        pass
    return tqdm(dataset, desc=desc, total=total, unit="batch", disable=not verbose, leave=False)


class Detector(keras.Model):
    """Base class: subclasses implement ``call`` and ``fit``; this class owns thresholds.

    Args:
        image_size: ``(height, width)`` the detector works at; inputs of another size are resized.
        score_names: names of the image scores ``call`` returns; the first is ``score``.
    """

    score_names = ("score",)
    default_working_point = None  # None: the first calibrated one

    def __init__(self, image_size=(224, 224), **kwargs):
        super().__init__(**kwargs)
        self.image_size = tuple(int(s) for s in image_size)
        self.threshold = self.add_weight(
            name="threshold", shape=(), initializer=keras.initializers.Constant(np.inf), trainable=False
        )
        self.threshold_score = self.add_weight(
            name="threshold_score", shape=(), dtype="int32", initializer="zeros", trainable=False
        )
        # Working points found by `calibrate`: name -> {"value", "score", "rule"}; saved in get_config.
        self.working_points = {}
        self.working_point = None

    # -- decisions ---------------------------------------------------------------
    def decide(self, outputs):
        """Add ``anomalous`` (active working point) to the dict ``call`` built."""
        scores = ops.stack([outputs[name] for name in self.score_names], axis=-1)
        chosen = ops.take(scores, self.threshold_score, axis=-1)
        outputs["anomalous"] = ops.greater(chosen, self.threshold)
        return outputs

    def set_working_point(self, name=None, value=None, score=None):
        """Make a calibrated working point (by name) or an explicit threshold the active one.

        Args:
            name: one of ``self.working_points``.
            value: an explicit threshold instead of a named working point.
            score: which image score an explicit value applies to (default ``score_names[0]``).
        """
        if name is not None:
            if name not in self.working_points:
                raise AdtfError(
                    f"unknown working point {name!r}; calibrated ones: {sorted(self.working_points) or 'none (run calibrate first)'}"
                )
            point = self.working_points[name]
            value, score = point["value"], point["score"]
        if value is None:
            raise AdtfError("give a working point name or an explicit threshold value")
        score = score or self.score_names[0]
        if score not in self.score_names:
            raise AdtfError(f"unknown score {score!r}; this detector has {list(self.score_names)}")
        self.threshold.assign(float(value))
        self.threshold_score.assign(self.score_names.index(score))
        self.working_point = name or f"explicit:{score}>{float(value):g}"

    # -- graph-mode inference -----------------------------------------------------
    def graph_fn(self, name, fn):
        """``fn`` wrapped once in a ``tf.function`` (eager Keras calls are several times slower on CPU)."""
        import tensorflow as tf

        cache = self.__dict__.setdefault("_compiled_fns", {})
        if name not in cache:
            cache[name] = tf.function(fn, reduce_retracing=True)
        return cache[name]

    def infer(self, images):
        """``call`` in graph mode, returning numpy arrays."""
        outputs = self.graph_fn("call", lambda x: self(x, training=False))(images)
        return {key: np.asarray(value) for key, value in outputs.items()}

    # -- the contract ------------------------------------------------------------
    def fit(self, train_ds, **kwargs):  # noqa: D102 - documented in subclasses
        raise NotImplementedError

    def score_dataset(self, dataset, verbose=True, keep_maps=True, desc="scoring", timings=None):
        """Run the detector over a dataset; return numpy arrays of every output (and labels, masks, paths).

        ``timings``: a list to append ``(seconds, images)`` of each batch's inference to.
        """
        collected = {}
        for batch in batches(dataset, desc, verbose):
            start = time.perf_counter()
            outputs = self.infer(images_of(batch))
            if timings is not None:
                timings.append((time.perf_counter() - start, len(outputs["score"])))
            if not keep_maps:
                outputs = {k: v for k, v in outputs.items() if k != "anomaly_map"}
            if isinstance(batch, (tuple, list)) and len(batch) == 4:
                outputs = dict(outputs, label=batch[1], mask=batch[2], path=batch[3])
            for key, value in outputs.items():
                collected.setdefault(key, []).append(np.asarray(value))
        if not collected:
            raise AdtfError("the dataset to score is empty")
        return {key: np.concatenate(parts) for key, parts in collected.items()}

    def calibrate(self, normal_ds, verbose=True):
        """Working-point thresholds from normal images only; activates the first one.

        The base rules are the largest normal score (no normal image flagged) and the
        score that flags 1% of normal images; methods with their own rules (MoN's six) override
        ``working_points_from``.
        """
        outputs = self.score_dataset(normal_ds, verbose=verbose, keep_maps=False, desc="calibrating")
        self.working_points = self.working_points_from(outputs)
        self.set_working_point(self.default_working_point or next(iter(self.working_points)))
        return self.working_points

    def working_points_from(self, outputs):
        scores = outputs[self.score_names[0]]
        return {
            "max_normal": {"value": float(np.max(scores)), "score": self.score_names[0], "rule": "max(normal scores)"},
            "fpr1_normal": {"value": at_normal_quantile(scores, fpr=0.01), "score": self.score_names[0], "rule": "1% of normal images flagged"},
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            image_size=list(self.image_size),
            working_points=self.working_points,
            working_point=self.working_point,
        )
        return config

    @classmethod
    def from_config(cls, config):
        working_points = config.pop("working_points", {})
        working_point = config.pop("working_point", None)
        model = cls(**config)
        model.working_points = working_points
        model.working_point = working_point
        return model

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


def load(path):
    """Load a detector saved with ``detector.save(path)`` (``.keras``), with safe mode on."""
    import adtf.detectors  # noqa: F401  registers the detector classes

    try:
        return keras.saving.load_model(path, safe_mode=True)
    except (OSError, ValueError) as err:
        raise AdtfError(f"cannot load a detector from {path}: {err}") from None
