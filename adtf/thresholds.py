"""Decision thresholds: paper 000's six working points and generic threshold choosers.

A working point is ``{"value": float, "score": name of the image score it applies
to, "rule": how it was made}``; a sample is anomalous iff that score > value (the
convention of ``adtf.metrics``). Thresholds for deployment come from normal images
only (``working_points``, ``at_normal_quantile``); ``f1_optimal`` and ``at_recall``
need labelled validation data, never the test set.
"""
import enum

import numpy as np

from adtf import metrics
from adtf.errors import DataError


class WorkingPoint(str, enum.Enum):
    """The six working-point thresholds of paper 000, Table I.

    Thresholds 1-3 apply to ``d_max`` (the maximum of an image's distance map to the
    Model of Normality), 4-6 to ``d_mean`` (its mean). Each is a statistic of that
    score over the N normal images that built the MoN (the vectors D_max, D_mean of
    eq. 6-8): ``max(D)``, ``max(D) - std(D)`` or ``mean(D) + std(D)``.

    Example:
    >>> WorkingPoint("threshold3").rule
    'mean(D_max)+std(D_max)'
    """

    THRESHOLD1 = "threshold1"
    THRESHOLD2 = "threshold2"
    THRESHOLD3 = "threshold3"
    THRESHOLD4 = "threshold4"
    THRESHOLD5 = "threshold5"
    THRESHOLD6 = "threshold6"

    @property
    def score(self):
        """The image score this threshold applies to: ``"d_max"`` or ``"d_mean"``."""
        return "d_max" if int(self.value[-1]) <= 3 else "d_mean"

    @property
    def rule(self):
        """Table I's formula, e.g. ``"max(D_max)-std(D_max)"``."""
        return _RULES[_STATISTIC[self]][0].format(D="D" + self.score[1:])


# Scoring an image again (another batch size, another oneDNN kernel) moves its float32 score by about 1e-6 of the
# scores' scale (1.5e-6 measured on a SimpleNet whose scores reach 0.5); a threshold set at a normal image's score must
# still pass that image when it comes back, so it sits this fraction of the scores' largest magnitude above it; but
# never past half the way to the next higher normal score, which the rule meant to flag (scores far from zero with a
# narrow spread: a margin of the magnitude passed them too, and an FPR target was missed low).
RESCORE_TOLERANCE = 1e-4


def _past_rescoring_noise(threshold, scores):
    margin = RESCORE_TOLERANCE * np.max(np.abs(scores))
    higher = scores[scores > threshold]
    if higher.size:
        margin = min(margin, (higher.min() - threshold) / 2)
    # The working-points layer keeps float32: where the next higher normal score is a float32 step or two away,
    # the halfway point rounds onto it there, and that score would pass too; float32 has no room for a margin then.
    if higher.size and np.float32(threshold + margin) >= np.float32(higher.min()):
        margin = 0.0
    return float(threshold + margin)


# Row of Table I -> statistic; the rows repeat the same three statistics for d_max and d_mean.
_STATISTIC = dict(zip(WorkingPoint, ["max", "max-std", "mean+std"] * 2))
# np.std is the population std (ddof=0), numpy's default and so most likely what the
# paper's Python/Keras code computed; with N = 500 normal images ddof=1 would differ by 0.1%.
_RULES = {
    "max": ("max({D})", lambda d: _past_rescoring_noise(d.max(), d)),
    "max-std": ("max({D})-std({D})", lambda d: d.max() - d.std()),
    "mean+std": ("mean({D})+std({D})", lambda d: d.mean() + d.std()),
}


def _normal_scores(scores, name):
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.size == 0:
        raise DataError(f"{name}: no normal images to set thresholds from")
    if not np.isfinite(scores).all():
        raise DataError(f"{name}: {np.count_nonzero(~np.isfinite(scores))} normal scores are NaN or infinite")
    return scores


def working_points(d_max, d_mean):
    """Paper 000's six working points (Table I) from the scores of the N normal MoN images.

    Args:
        d_max: ``[N]`` D_max, the max of each normal image's distance map (eq. 8).
        d_mean: ``[N]`` D_mean, the mean of each normal image's distance map (eq. 7).

    Returns:
        ``{"threshold1": {"value", "score", "rule"}, ..., "threshold6": ...}`` in Table I's order.

    Example:
    >>> points = working_points(d_max=[1.0, 2.0, 3.0], d_mean=[0.5, 0.6, 0.7])
    >>> points["threshold1"]  # max(D_max), raised past the noise of scoring that image again
    {'value': 3.0003, 'score': 'd_max', 'rule': 'max(D_max)'}
    """
    scores = {"d_max": _normal_scores(d_max, "d_max"), "d_mean": _normal_scores(d_mean, "d_mean")}
    if scores["d_max"].size != scores["d_mean"].size:
        raise DataError(f"d_max ({scores['d_max'].size}) and d_mean ({scores['d_mean'].size}) "
                        "must hold one value per normal image")
    return {
        point.value: {"value": float(_RULES[_STATISTIC[point]][1](scores[point.score])),
                      "score": point.score, "rule": point.rule}
        for point in WorkingPoint
    }


def evaluate_working_points(points, labels, scores):
    """Paper 000's Table II row: (TPR + TNR) / 2 of each working point on labelled data (TPR, TNR and AUC None
    where the data lack anomalous or normal samples: a batch of good parts still gets its TNR).

    Args:
        points: ``{name: {"value", "score", ...}}`` as ``working_points`` returns.
        labels: ``[M]`` 1 = anomalous, 0 = normal.
        scores: ``{score name: [M] values}``, e.g. a detector's outputs with ``d_max`` and ``d_mean``.

    Returns:
        ``{name: {"threshold", "score", "rule", "tpr", "tnr", "auc"}}``.

    Example:
    >>> evaluate_working_points(points, labels, {"d_max": d_max, "d_mean": d_mean})["threshold3"]["auc"]
    0.87
    """
    results = {}
    for name, point in points.items():
        if point["score"] not in scores:
            raise DataError(f"working point {name!r} needs the score {point['score']!r}; got {sorted(scores)}")
        tpr, tnr = metrics.rates_at(labels, scores[point["score"]], point["value"])
        results[name] = {"threshold": point["value"], "score": point["score"], "rule": point.get("rule", ""),
                         "tpr": tpr, "tnr": tnr, "auc": None if tpr is None or tnr is None else (tpr + tnr) / 2}
    return results


def allowed_above(n, fpr):
    """How many of ``n`` normal scores a threshold at false-positive rate ``fpr`` leaves above it (fewer than n)."""
    return min(int(np.floor(fpr * n + 1e-9)), n - 1)


def at_normal_quantile(normal_scores, fpr=0.01):
    """The lowest normal score that at most a fraction ``fpr`` of normal scores exceed (raised past the noise of
    scoring that image again: ``RESCORE_TOLERANCE``).

    On the normal images it came from, flagging ``score > threshold`` gives an FPR of
    at most ``fpr``; ``fpr=0`` gives (just above) their maximum.

    Args:
        normal_scores: ``[N]`` scores of normal images (not the test set).
        fpr: target false positive rate in [0, 1).

    Example:
    >>> at_normal_quantile([0.1, 0.2, 0.3, 0.4], fpr=0.25)
    0.30004
    """
    if not 0 <= fpr < 1:
        raise DataError(f"fpr must be in [0, 1), got {fpr}")
    scores = np.sort(_normal_scores(normal_scores, "normal_scores"))
    allowed = allowed_above(scores.size, fpr)
    return _past_rescoring_noise(scores[scores.size - 1 - allowed], scores)


def f1_optimal(labels, scores):
    """Threshold of maximal F1 on labelled validation data (see ``adtf.metrics.f1_max``).

    Example:
    >>> f1_optimal([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.1
    """
    return metrics.f1_max(labels, scores)[1]


def at_recall(labels, scores, recall=1.0):
    """Highest threshold that still flags ``recall`` of the anomalies (lowest FPR doing so).

    ``recall=1.0`` is paper 004's factory threshold (all defects caught). See
    ``adtf.metrics.fpr_at_recall``.

    Example:
    >>> at_recall([0, 0, 0, 1], [0.1, 0.3, 0.5, 0.4])
    0.3
    """
    return metrics.fpr_at_recall(labels, scores, recall)[1]
