"""Every anomaly-detection metric adtf reports, written once (numpy + scikit-learn).

Image level: ``image_auroc``; the MVTec protocol of papers 002/003, ``best_tpr_tnr``;
paper 000's single-threshold "AUC score", ``threshold_auc``; ``f1_max``; paper 004's
factory working point, ``fpr_at_full_recall``. Pixel level: ``pixel_auroc`` and
``aupro`` (MVTec AD's per-region overlap, Bergmann et al., IJCV 2021).

One decision convention everywhere: an image (or pixel) is anomalous iff its score
is strictly **above** the threshold (paper 000: "anomaly will be detected if the
resultant anomaly score is above decision threshold"). So ``threshold = max(normal
scores)`` flags no normal image. Every threshold returned here is one that
``rates_at`` reproduces exactly: the highest observed score still called normal
(just below the lowest score when all are flagged). ``flagged`` is that decision, as the served model's
working-points layer takes it: "not at or below", so that a NaN threshold (a damaged model file) flags every image.

Labels: 1 (or True) = anomalous. Masks: values > 0.5 are anomalous pixels, so
``{0, 1}``, ``{0, 255}`` and boolean masks all work.
"""
import numpy as np
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from adtf.errors import DataError


def _most_anomalous_for_inf(values):
    """+inf is how a detector scores an invalid image or pixel (NaN/inf input): the most anomalous rank, one
    above the largest finite value (or the next value up, where adding one is lost to rounding: 2**24 in a
    float32 map), so that rankings and curves stay finite."""
    if not np.isposinf(values).any():
        return values
    finite = values[np.isfinite(values)]
    top = finite.max() if finite.size else values.dtype.type(0)
    return np.where(np.isposinf(values), np.maximum(top + 1, np.nextafter(top, np.inf)), values)


def _labelled_scores(labels, scores, both_classes=True, ranked=True):
    """Validated 1-D (bool labels, float64 scores), with both classes present where ``both_classes``; +inf ranked
    just above the largest finite score where ``ranked``, kept (for decisions at a threshold: the served model flags
    an invalid image whatever its threshold) where not."""
    labels, scores = np.asarray(labels).reshape(-1), np.asarray(scores, dtype=np.float64).reshape(-1)
    if labels.shape != scores.shape:
        raise DataError(f"labels ({labels.size}) and scores ({scores.size}) differ in length")
    if not np.isin(labels, (0, 1)).all():
        raise DataError(f"labels must be 0 (normal) or 1 (anomalous), got values {np.unique(labels)[:5]}")
    if np.isnan(scores).any() or np.isneginf(scores).any():
        raise DataError(f"{np.count_nonzero(np.isnan(scores) | np.isneginf(scores))} scores are NaN or -inf")
    scores = _most_anomalous_for_inf(scores) if ranked else scores
    labels = labels.astype(bool)
    if both_classes and (labels.all() or not labels.any()):
        raise DataError(
            f"need normal and anomalous samples, got {labels.sum()} anomalous of {labels.size}: "
            "this metric is undefined with one class"
        )
    return labels, scores


def _pixel_arrays(masks, maps):
    """Validated (bool masks, maps) as ``[N, H, W]``; a trailing channel of 1 is dropped."""
    masks, maps = np.asarray(masks), np.asarray(maps)
    masks, maps = (a[..., 0] if a.ndim == 4 and a.shape[-1] == 1 else a for a in (masks, maps))
    if maps.ndim == 2:
        masks, maps = masks[None], maps[None]
    if masks.shape != maps.shape or maps.ndim != 3:
        raise DataError(f"masks {masks.shape} and anomaly maps {maps.shape} must both be [N, H, W]")
    if np.isnan(maps).any() or np.isneginf(maps).any():
        raise DataError(f"{np.count_nonzero(np.isnan(maps) | np.isneginf(maps))} anomaly-map pixels are NaN or -inf")
    maps = _most_anomalous_for_inf(maps)
    masks = masks > 0.5
    if masks.all() or not masks.any():
        raise DataError(
            f"need normal and anomalous pixels, got {masks.sum()} anomalous of {masks.size}: "
            "pixel metrics are undefined without defect masks"
        )
    return masks, maps


def operating_points(labels, scores):
    """Every distinct decision an ROC sweep can make, from flagging nothing (or only the invalid images, scored
    +inf) to flagging all.

    Args:
        labels: ``[N]`` 1 = anomalous, 0 = normal.
        scores: ``[N]`` image scores, higher = more anomalous.

    Returns:
        ``(thresholds, tp, fp)``: at ``thresholds[k]`` (flag ``score > threshold``) there are
        ``tp[k]`` true and ``fp[k]`` false positives; thresholds decrease with k.

    Example:
    >>> operating_points([0, 1, 1], [0.1, 0.5, 0.9])[1]
    array([0, 1, 2, 2])
    """
    any_invalid = bool(np.isposinf(np.asarray(scores, dtype=np.float64)).any())
    labels, scores = _labelled_scores(labels, scores)
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(ranked)), ranked.size - 1]  # last index of each distinct score
    distinct = ranked[last]
    # Flagging all: just below the lowest score in float32, as the working-points layer stores a threshold (a step
    # taken in float64 rounded back onto the lowest score there, and passed that image).
    all_flagged = float(np.nextafter(np.float32(distinct[-1]), np.float32(-np.inf)))
    thresholds = np.r_[distinct, all_flagged]
    tp, fp = np.r_[0, np.cumsum(hits)[last]], np.r_[0, np.cumsum(~hits)[last]]
    # Invalid images (+inf) are flagged at any threshold: flagging none of them is no decision a model makes.
    start = int(any_invalid)
    return thresholds[start:], tp[start:], fp[start:]


def image_auroc(labels, scores):
    """Area under the ROC curve of image scores (scikit-learn; ties count one half).

    Args:
        labels: ``[N]`` 1 = anomalous, 0 = normal; both must occur.
        scores: ``[N]`` image scores, any real range.

    Example:
    >>> image_auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    labels, scores = _labelled_scores(labels, scores)
    return float(roc_auc_score(labels, scores))


def per_defect_image_auroc(labels, scores, defects):
    """Image AUROC of each defect type against all normal images: ``{defect: auroc}``, sorted by name.

    Example:
    >>> per_defect_image_auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], ["good", "good", "crack", "hole"])
    {'crack': 0.5, 'hole': 1.0}
    """
    labels, scores, defects = np.asarray(labels), np.asarray(scores), np.asarray(defects)
    return {str(defect): image_auroc(labels[(labels == 0) | (defects == defect)],
                                     scores[(labels == 0) | (defects == defect)])
            for defect in sorted(set(defects[labels == 1]))}


def pixel_auroc(masks, maps, chunk_pixels=1 << 22):
    """Pixel-level AUROC, exact, without sorting all pixels at once.

    The smaller class (usually the defect pixels) is sorted once; the other class is
    streamed in chunks of ``chunk_pixels`` and each of its pixels is ranked against it
    by binary search, counting ties as one half. This is the Mann-Whitney form of the
    AUROC, identical to scikit-learn's value up to float rounding (about 1e-12), with
    working memory of the smaller class plus one chunk instead of several float64
    copies of every pixel.

    Args:
        masks: ``[N, H, W]`` (or ``[N, H, W, 1]``) ground truth, > 0.5 = defect.
        maps: anomaly maps of the same shape.
        chunk_pixels: pixels scanned per step (bounds the working memory).

    Example (one 2x2 defect; its pixel at 0.2 scores below one normal pixel, so 47 of the 48 pairs are won):
    >>> masks = np.zeros((1, 4, 4)); masks[0, :2, :2] = 1
    >>> maps = np.zeros((1, 4, 4)); maps[0, :2, :2] = [[0.9, 0.8], [0.7, 0.2]]; maps[0, 3, 3] = 0.5
    >>> round(pixel_auroc(masks, maps), 4)
    0.9792
    """
    masks, maps = _pixel_arrays(masks, maps)
    masks, maps = masks.reshape(-1), maps.reshape(-1)
    small_is_defect = masks.sum() <= masks.size / 2
    small = np.sort(maps[masks if small_is_defect else ~masks])
    streamed = ~masks if small_is_defect else masks
    wins = 0  # pairs where the defect pixel scores higher, ties counted 1/2 (kept doubled to stay integer)
    for start in range(0, maps.size, chunk_pixels):
        # Sorted needles make the binary searches cache-friendly (about 3x faster).
        chunk = np.sort(maps[start:start + chunk_pixels][streamed[start:start + chunk_pixels]])
        below = np.searchsorted(small, chunk, side="left")
        ties = np.searchsorted(small, chunk, side="right") - below
        beaten = (small.size - below - ties) if small_is_defect else below
        wins += 2 * int(beaten.sum(dtype=np.int64)) + int(ties.sum(dtype=np.int64))
    n_defect = int(masks.sum())
    return wins / (2 * n_defect * (masks.size - n_defect))


def aupro(masks, maps, fpr_limit=0.3):
    """Normalised area under the per-region-overlap curve up to ``fpr_limit`` (MVTec AD).

    As in MVTec AD's evaluation code: defects are the connected components of each
    ground-truth mask under 8-connectivity (``scipy.ndimage.label`` with a 3x3 ones
    structure). For every threshold t (a pixel is predicted if its score >= t, each
    distinct score once), PRO = mean over all components of all images of
    |predicted ∩ component| / |component|, and FPR = predicted normal pixels / all
    normal pixels (mask 0, of every image, defect-free ones included). The curve
    starts at (0, 0), is integrated with the trapezoid rule up to ``fpr_limit`` (the
    last segment interpolated linearly there) and divided by ``fpr_limit``, so the
    result lies in [0, 1]. One sort of the pixels that reach the FPR limit, not a
    sweep of thresholds with re-labelling.

    Args:
        masks: ``[N, H, W]`` (or ``[N, H, W, 1]``) ground truth, > 0.5 = defect.
        maps: anomaly maps of the same shape.
        fpr_limit: upper end of the FPR integration range, in (0, 1].

    Example (the masks and maps of ``pixel_auroc``'s example):
    >>> masks = np.zeros((1, 4, 4)); masks[0, :2, :2] = 1
    >>> maps = np.zeros((1, 4, 4)); maps[0, :2, :2] = [[0.9, 0.8], [0.7, 0.2]]; maps[0, 3, 3] = 0.5
    >>> round(aupro(masks, maps, fpr_limit=0.3), 4)
    0.9306
    """
    if not 0 < fpr_limit <= 1:
        raise DataError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    masks, maps = _pixel_arrays(masks, maps)
    # Each pixel's defect region (0: none), numbered across all images, and what a region's pixel adds to sum(PRO)
    # once predicted (1 / its area): int32 labels, not a float64 copy of every pixel's share, and the normal scores
    # partitioned in place keep a DAGM-sized evaluation (650 maps of 512x512) to 2.8 GiB above its inputs, not 4.1.
    regions = np.zeros(masks.shape, np.int32)
    shares = [0.0]  # region 0: no defect, adds nothing
    for region, mask in zip(regions, masks):
        components, _ = ndimage.label(mask, structure=np.ones((3, 3)))
        region[:] = np.where(components > 0, components + len(shares) - 1, 0)
        shares.extend(1.0 / np.bincount(components.ravel())[1:])
    share_of_region = np.asarray(shares)
    n_regions = share_of_region.size - 1
    flat, normal = maps.reshape(-1), ~masks.reshape(-1)
    # Only the curve up to its first point past fpr_limit matters: sort just the pixels
    # scoring at least the (k+1)-th highest normal pixel, k = one more than fpr_limit allows.
    normal_scores = flat[normal]
    n_normal = normal_scores.size
    rank = n_normal - 1 - min(n_normal - 1, int(fpr_limit * n_normal) + 1)
    normal_scores.partition(rank)
    kept = np.flatnonzero(flat >= normal_scores[rank])
    del normal_scores
    order = kept[np.argsort(-flat[kept], kind="stable")]
    ranked = flat[order]
    last = np.r_[np.flatnonzero(np.diff(ranked)), ranked.size - 1]  # last index of each distinct score
    fpr = np.r_[0.0, np.cumsum(normal[order])[last] / n_normal]
    pro = np.r_[0.0, np.minimum(np.cumsum(share_of_region[regions.reshape(-1)[order]])[last] / n_regions, 1.0)]
    inside = np.searchsorted(fpr, fpr_limit, side="right")  # fpr[:inside] <= fpr_limit < fpr[inside]
    if inside < fpr.size:
        lo, hi = inside - 1, inside
        pro_at_limit = pro[lo] + (pro[hi] - pro[lo]) * (fpr_limit - fpr[lo]) / (fpr[hi] - fpr[lo])
        fpr, pro = np.r_[fpr[:inside], fpr_limit], np.r_[pro[:inside], pro_at_limit]
    return float(np.trapezoid(pro, fpr) / fpr_limit)


def flagged(scores, threshold):
    """Which scores a threshold flags: above it, or not comparable with it (a NaN threshold flags every one)."""
    return ~(np.asarray(scores) <= threshold)


def rates_at(labels, scores, threshold):
    """(TPR, TNR) when a sample is called anomalous iff its score > ``threshold``; None for a class with no
    samples (a batch of good parts has a TNR and no TPR).

    Example:
    >>> rates_at([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], threshold=0.3)
    (1.0, 0.5)
    >>> rates_at([0, 0], [0.1, 0.4], threshold=0.3)
    (None, 0.5)
    """
    labels, scores = _labelled_scores(labels, scores, both_classes=False, ranked=False)
    flags = flagged(scores, threshold)
    return (float(flags[labels].mean()) if labels.any() else None,
            float(1.0 - flags[~labels].mean()) if (~labels).any() else None)


def threshold_auc(labels, scores, threshold):
    """Paper 000's "AUC score" at one threshold: (TPR + TNR) / 2.

    It is the area under the ROC "curve" through the single operating point
    (0, 0) - (FPR, TPR) - (1, 1), i.e. the balanced accuracy; 0.5 = no better than chance.

    Example:
    >>> threshold_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], threshold=0.3)
    0.75
    """
    _labelled_scores(labels, scores)  # both classes, or a clear error
    tpr, tnr = rates_at(labels, scores, threshold)
    return (tpr + tnr) / 2


def best_tpr_tnr(labels, scores):
    """(TPR, TNR, threshold) maximising TPR + TNR over all thresholds (MVTec protocol, papers 002/003).

    Ties go to the highest threshold. Example:
    >>> best_tpr_tnr([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    (0.5, 1.0, 0.4)
    """
    thresholds, tp, fp = operating_points(labels, scores)
    tpr, tnr = tp / tp[-1], 1.0 - fp / fp[-1]
    best = int(np.argmax(tpr + tnr))
    return float(tpr[best]), float(tnr[best]), float(thresholds[best])


def f1_max(labels, scores):
    """(best F1, its threshold) over all thresholds; anomalous is the positive class.

    Example:
    >>> f1_max([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    (0.8, 0.1)
    """
    thresholds, tp, fp = operating_points(labels, scores)
    f1 = 2 * tp / (tp + fp + tp[-1])  # 2TP / (2TP + FP + FN), FN = P - TP
    best = int(np.argmax(f1))
    return float(f1[best]), float(thresholds[best])


def fpr_at_recall(labels, scores, recall=1.0):
    """(FPR, threshold) of the highest threshold that still flags ``recall`` of the anomalies.

    Example:
    >>> fpr_at_recall([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], recall=1.0)
    (0.5, 0.1)
    """
    if not 0 < recall <= 1:
        raise DataError(f"recall must be in (0, 1], got {recall}")
    thresholds, tp, fp = operating_points(labels, scores)
    k = int(np.argmax(tp >= np.ceil(recall * tp[-1] - 1e-9)))  # first (highest) threshold reaching it
    return float(fp[k] / fp[-1]), float(thresholds[k])


def fpr_at_full_recall(labels, scores):
    """(FPR, threshold) at the lowest-FPR threshold that flags every anomaly (paper 004's factory point).

    Paper 004 reads this off its ROC curve: threshold 0.14 flags all defective
    glass-fibre sheets at about 36% false positives.

    Example:
    >>> fpr_at_full_recall([0, 0, 0, 1], [0.1, 0.3, 0.5, 0.4])
    (0.3333333333333333, 0.3)
    """
    return fpr_at_recall(labels, scores, recall=1.0)
