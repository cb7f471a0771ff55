"""WorkingPoints: the post-processing layer that ends every detector's ``call``."""
import keras
import numpy as np
from keras import ops

CUSTOM = "custom"
# How far outside [0, 1] a pixel may lie and still be valid: rounding in a resize, never a 0-255 image.
PIXEL_SLACK = 1e-3


@keras.saving.register_keras_serializable("adtf")
class WorkingPoints(keras.layers.Layer):
    """Image scores -> decisions at every working point, the active decision and a validity flag.

    The layer holds one threshold per named working point plus a last ``"custom"`` slot for
    an explicit threshold, the index of the image score each applies to, and the index of
    the active one, all as non-trainable variables: they are saved, exported and movable
    without refitting. A sample is anomalous at a working point iff its score is strictly
    above the threshold (``adtf.metrics``' convention). Thresholds start at +inf, which flags every
    sample as NaN does: a detector never calibrated passes no part as normal (it passed every defect).

    Invalid input never passes as normal: a sample whose image holds a NaN or inf pixel or one outside
    [0, 1] (beyond ``PIXEL_SLACK``), or whose scores are not finite, comes out with ``invalid = True``, every score +inf
    and every decision True. (TensorFlow's graph optimiser rewrites ``not (s <= t)`` into
    ``s > t``, which is False for a NaN score; so validity is computed from ``isfinite`` and
    enters the decision with a logical OR.)

    Args:
        names: names of the calibrated working points, e.g. Table I's ``threshold1..6``.
        score_names: the image scores a working point can apply to, in the order the
            detector stacks them.
        rules: ``{name: how the threshold is made}``, the calibration's record (config only).

    Call args:
        scores: ``[B, S]`` image scores, ``S = len(score_names)``.
        images: ``[B, H, W, C]`` the input images (checked for NaN/inf), or None.

    Returns:
        ``{"scores": [B, S] (+inf where invalid), "decisions": [B, len(names)] bool,
        "anomalous": [B] bool, "invalid": [B] bool}``.

    Example:
    >>> layer = WorkingPoints(["max_normal"], ["score"])
    >>> layer.set_point("max_normal", 0.7, "score")
    >>> layer.activate("max_normal")
    >>> layer(np.array([[0.5], [0.9]], "float32"))["anomalous"]   # [False, True]
    """

    def __init__(self, names, score_names, rules=None, **kwargs):
        super().__init__(**kwargs)
        self.names = [str(n) for n in names]
        if CUSTOM in self.names:
            raise ValueError(f"{CUSTOM!r} is reserved for an explicit threshold")
        self.score_names = [str(n) for n in score_names]
        self.rules = dict(rules or {})
        slots = len(self.names) + 1
        self.thresholds = self.add_weight(name="thresholds", shape=(slots,), trainable=False,
                                          initializer=keras.initializers.Constant(np.inf))
        self.score_index = self.add_weight(name="score_index", shape=(slots,), dtype="int32", trainable=False,
                                           initializer="zeros")
        self.active = self.add_weight(name="active", shape=(), dtype="int32", trainable=False,
                                      initializer=keras.initializers.Constant(len(self.names)))

    # -- state ----------------------------------------------------------------------
    def slot(self, name):
        return len(self.names) if name == CUSTOM else self.names.index(name)

    def set_point(self, name, value, score, rule=None):
        """Write working point ``name`` (or ``"custom"``): threshold ``value`` on image score ``score``."""
        slot, index = self.slot(name), self.score_names.index(score)
        thresholds, indices = np.array(self.thresholds.numpy()), np.array(self.score_index.numpy())
        thresholds[slot], indices[slot] = value, index
        self.thresholds.assign(thresholds)
        self.score_index.assign(indices)
        if rule is not None:
            self.rules[name] = rule

    def activate(self, name):
        # An explicit threshold left behind (in the weights and the export's adtf.json) would read as still in use.
        if name != CUSTOM and (CUSTOM in self.rules or np.isfinite(self.thresholds.numpy()[len(self.names)])):
            self.set_point(CUSTOM, np.inf, self.score_names[0])
            self.rules.pop(CUSTOM, None)
        self.active.assign(self.slot(name))

    def point(self, name):
        """``{"value", "score", "rule"}`` of one working point."""
        slot = self.slot(name)
        return {"value": float(self.thresholds.numpy()[slot]),
                "score": self.score_names[int(self.score_index.numpy()[slot])], "rule": self.rules.get(name, "")}

    @property
    def active_name(self):
        return CUSTOM if int(self.active.numpy()) == len(self.names) else self.names[int(self.active.numpy())]

    # -- the graph ------------------------------------------------------------------
    def call(self, scores, images=None):
        scores = ops.convert_to_tensor(scores, "float32")
        invalid = ops.logical_not(ops.all(ops.isfinite(scores), axis=-1))
        if images is not None:
            pixels = ops.reshape(ops.convert_to_tensor(images, "float32"), (ops.shape(images)[0], -1))
            finite_pixels = ops.all(ops.isfinite(pixels), axis=-1)
            # A float image left in 0-255 (or normalised) was scored as something else than calibration saw.
            outside = ops.any(ops.logical_or(pixels < -PIXEL_SLACK, pixels > 1 + PIXEL_SLACK), axis=-1)
            invalid = ops.logical_or(invalid, ops.logical_or(ops.logical_not(finite_pixels), outside))
        scores = ops.where(invalid[:, None], np.inf, scores)
        chosen = ops.take(scores, self.score_index, axis=1)  # [B, slots]: each slot's score
        # A NaN threshold (a damaged model file) or +inf (never set: calibration writes finite ones, and
        # Detector.set_working_point refuses both) flags every part, never none: said with isfinite, since the graph optimiser turns "not at or below"
        # into "above" (False against NaN) as it does for a NaN score.
        unusable = ops.logical_or(ops.logical_not(ops.isfinite(self.thresholds))[None, :], invalid[:, None])
        above = ops.logical_or(ops.greater(chosen, self.thresholds[None, :]), unusable)
        return {
            "scores": scores,
            "decisions": above[:, : len(self.names)],
            "anomalous": ops.take(above, self.active, axis=1),
            "invalid": invalid,
        }

    def get_config(self):
        config = super().get_config()
        config.update(names=self.names, score_names=self.score_names, rules=self.rules)
        return config
