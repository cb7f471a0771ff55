"""adtf.metrics against scikit-learn, brute-force sweeps and hand-computed answers."""
import numpy as np
import pytest
from skimage.measure import label as skimage_label
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from adtf import metrics
from adtf.errors import DataError


def random_scores(seed, n=40, ties=False):
    rng = np.random.default_rng(seed)
    labels = np.r_[0, 1, rng.integers(0, 2, n - 2)]
    scores = rng.normal(size=n) * 3 + 2 * labels  # unbounded, partly separated
    return labels, (np.round(scores) if ties else scores)


def candidate_thresholds(scores):
    """Every threshold that changes a `score > t` decision: each distinct score, and one below all (in float32 too,
    as the working-points layer keeps a threshold)."""
    return np.r_[np.unique(scores), np.nextafter(np.float32(np.min(scores)), np.float32(-np.inf))]


def brute_rates(labels, scores, t):
    flagged = scores > t
    return flagged[labels == 1].mean(), 1 - flagged[labels == 0].mean()


# --- image level ------------------------------------------------------------------
@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, True)])
def test_image_auroc_matches_sklearn(seed, ties):
    labels, scores = random_scores(seed, ties=ties)
    assert metrics.image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_image_auroc_hand_cases():
    assert metrics.image_auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert metrics.image_auroc([0, 1], [5.0, 5.0]) == 0.5  # constant scores: chance
    assert metrics.image_auroc([0, 0, 1], [-100.0, -3.0, 1e6]) == 1.0  # unbounded range is fine


@pytest.mark.parametrize("labels,scores,message", [
    ([1, 1, 1], [0.1, 0.2, 0.3], "one class"),
    ([0, 0], [0.1, 0.2], "one class"),
    ([0, 1], [0.1, np.nan], "NaN"),
    ([0, 1, 1], [0.1, 0.2], "differ in length"),
    ([0, 2], [0.1, 0.2], "0 \\(normal\\) or 1"),
])
def test_image_level_errors_are_clear(labels, scores, message):
    for fn in (metrics.image_auroc, metrics.best_tpr_tnr, metrics.f1_max, metrics.fpr_at_full_recall):
        with pytest.raises(DataError, match=message):
            fn(labels, scores)


@pytest.mark.parametrize("seed,ties", [(3, False), (4, True)])
def test_operating_points_are_every_decision_and_reproducible(seed, ties):
    labels, scores = random_scores(seed, ties=ties)
    thresholds, tp, fp = metrics.operating_points(labels, scores)
    assert len(thresholds) == len(np.unique(scores)) + 1 and np.all(np.diff(thresholds) < 0)
    for t, k, f in zip(thresholds, tp, fp):
        flagged = scores > t
        assert (flagged & (labels == 1)).sum() == k and (flagged & (labels == 0)).sum() == f
    assert tp[0] == fp[0] == 0 and tp[-1] == labels.sum() and fp[-1] == (labels == 0).sum()


def test_rates_at_uses_strictly_above():
    labels, scores = [0, 0, 1, 1], [0.1, 0.4, 0.4, 0.8]
    assert metrics.rates_at(labels, scores, 0.4) == (0.5, 1.0)  # 0.4 is not above 0.4
    assert metrics.rates_at(labels, scores, 0.3) == (1.0, 0.5)
    # one class: its own rate, None for the other (a batch of good parts has a TNR); the AUC needs both
    assert metrics.rates_at([0, 0], [0.1, 0.4], 0.3) == (None, 0.5)
    assert metrics.rates_at([1, 1], [0.1, 0.4], 0.3) == (0.5, None)
    # a NaN threshold flags every image, as the served model's layer decides (a report said it flagged none)
    assert metrics.rates_at(labels, scores, float("nan")) == (1.0, 0.0)
    # an invalid image (+inf) is flagged at any threshold, as the model flags it (it counted as passed above
    # the largest finite score + 1)
    assert metrics.rates_at([0, 0, 0], [12.0, 18.0, np.inf], 20.0) == (None, pytest.approx(2 / 3))
    assert metrics.rates_at([0, 1], [np.inf, np.inf], 1.5) == (1.0, 0.0)
    thresholds, tp, fp = metrics.operating_points([0, 1, 1], [0.1, np.inf, 0.5])
    assert (tp[0], fp[0]) == (1, 0)  # flagging none of them is no decision the model makes
    for t, positives in zip(thresholds, tp):
        assert metrics.rates_at([0, 1, 1], [0.1, np.inf, 0.5], t)[0] == positives / 2
    with pytest.raises(DataError, match="one class"):
        metrics.threshold_auc([0, 0], [0.1, 0.4], 0.3)


@pytest.mark.parametrize("seed,ties", [(5, False), (6, True)])
def test_threshold_auc_is_balanced_accuracy_and_single_point_roc_area(seed, ties):
    labels, scores = random_scores(seed, ties=ties)
    for t in np.quantile(scores, [0.1, 0.5, 0.9]):
        flagged = (scores > t).astype(int)
        auc = metrics.threshold_auc(labels, scores, t)
        assert auc == pytest.approx(balanced_accuracy_score(labels, flagged), abs=1e-12)
        assert auc == pytest.approx(roc_auc_score(labels, flagged), abs=1e-12)
    # Paper 000 Table II: a threshold above every score flags nothing, AUC score 0.5.
    assert metrics.threshold_auc(labels, scores, scores.max()) == 0.5


@pytest.mark.parametrize("seed,ties", [(7, False), (8, True), (9, True)])
def test_best_tpr_tnr_matches_brute_force(seed, ties):
    labels, scores = random_scores(seed, ties=ties)
    best = max(sum(brute_rates(labels, scores, t)) for t in candidate_thresholds(scores))
    tpr, tnr, threshold = metrics.best_tpr_tnr(labels, scores)
    assert tpr + tnr == pytest.approx(best, abs=1e-12)
    assert (tpr, tnr) == pytest.approx(brute_rates(labels, scores, threshold), abs=1e-12)


def test_best_tpr_tnr_hand_cases():
    assert metrics.best_tpr_tnr([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == (0.5, 1.0, 0.4)
    assert metrics.best_tpr_tnr([0, 0, 1, 1], [1.0, 2.0, 3.0, 4.0]) == (1.0, 1.0, 2.0)
    tpr, tnr, _ = metrics.best_tpr_tnr([0, 1, 0, 1], [7.0] * 4)  # constant: flag none or all
    assert tpr + tnr == 1.0


@pytest.mark.parametrize("seed,ties", [(10, False), (11, True)])
def test_f1_max_matches_brute_force_with_sklearn(seed, ties):
    labels, scores = random_scores(seed, ties=ties)
    best = max(f1_score(labels, scores > t, zero_division=0.0) for t in candidate_thresholds(scores))
    f1, threshold = metrics.f1_max(labels, scores)
    assert f1 == pytest.approx(best, abs=1e-12)
    assert f1 == pytest.approx(f1_score(labels, scores > threshold), abs=1e-12)


def test_f1_max_hand_case():
    assert metrics.f1_max([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == (0.8, 0.1)


def test_fpr_at_full_recall_hand_case():
    # Normals 0.1 0.2 0.3 0.5, anomalies 0.25 0.6: catching 0.25 also flags 0.3 and 0.5.
    fpr, threshold = metrics.fpr_at_full_recall([0, 0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.5, 0.25, 0.6])
    assert (fpr, threshold) == (0.5, 0.2)
    assert metrics.fpr_at_full_recall([0, 0, 1], [0.1, 0.2, 0.9]) == (0.0, 0.2)
    assert metrics.fpr_at_full_recall([0, 0, 1], [0.1, 0.2, 0.1])[0] == 1.0  # anomaly at the bottom


def test_the_flag_all_threshold_flags_the_lowest_score_in_float32_as_the_layer_keeps_it():
    from adtf.layers import WorkingPoints

    scores = np.float32([0.5, 0.6, 0.1])
    _, threshold = metrics.fpr_at_recall([0, 0, 1], scores, 1.0)
    layer = WorkingPoints(["all"], ["score"])
    layer.set_point("all", threshold, "score")
    layer.activate("all")
    assert np.asarray(layer(scores[:, None])["anomalous"]).all()  # the lowest, 0.1, passed: float32 rounded back


@pytest.mark.parametrize("seed,ties", [(12, False), (13, True)])
@pytest.mark.parametrize("recall", [1.0, 0.8, 0.5])
def test_fpr_at_recall_matches_brute_force(seed, ties, recall):
    labels, scores = random_scores(seed, ties=ties)
    reaching = [t for t in candidate_thresholds(scores) if brute_rates(labels, scores, t)[0] >= recall - 1e-12]
    fpr, threshold = metrics.fpr_at_recall(labels, scores, recall)
    assert threshold == max(reaching)
    assert fpr == pytest.approx(min(1 - brute_rates(labels, scores, t)[1] for t in reaching), abs=1e-12)


# --- pixel level --------------------------------------------------------------------
def random_maps(seed, n=6, size=12, ties=False, defect_free=2):
    """Masks with random rectangles and stray pixels (some images defect-free) and noisy maps."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), bool)
    for mask in masks[defect_free:]:
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(0, size - 2, 2)
            mask[y:y + rng.integers(1, 5), x:x + rng.integers(1, 5)] = True
        mask[tuple(rng.integers(0, size, (2, 2)))] = True
    maps = rng.normal(size=masks.shape) + 1.5 * masks
    return masks, (np.round(maps, 1) if ties else maps)


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True)])
@pytest.mark.parametrize("chunk", [7, 1 << 22])
def test_pixel_auroc_matches_sklearn(seed, ties, chunk):
    masks, maps = random_maps(seed, ties=ties)
    expected = roc_auc_score(masks.ravel(), maps.ravel())
    assert metrics.pixel_auroc(masks, maps, chunk_pixels=chunk) == pytest.approx(expected, abs=1e-12)
    # Mostly-defect masks take the other branch (normal pixels sorted, defects streamed).
    assert metrics.pixel_auroc(~masks, -maps, chunk_pixels=chunk) == pytest.approx(expected, abs=1e-12)


def test_pixel_inputs_accept_channel_axis_and_255_masks():
    masks, maps = random_maps(2)
    expected = metrics.pixel_auroc(masks, maps)
    assert metrics.pixel_auroc(masks[..., None].astype(np.uint8) * 255, maps[..., None]) == expected
    assert metrics.aupro(masks[..., None].astype(np.uint8) * 255, maps[..., None]) == metrics.aupro(masks, maps)


@pytest.mark.parametrize("fn", [metrics.pixel_auroc, metrics.aupro])
def test_pixel_metric_errors_are_clear(fn):
    masks, maps = random_maps(3)
    with pytest.raises(DataError, match="undefined without defect masks"):
        fn(np.zeros_like(masks), maps)
    with pytest.raises(DataError, match=r"must both be \[N, H, W\]"):
        fn(masks, maps[:, :-1])
    with pytest.raises(DataError, match="NaN"):
        fn(masks, np.where(masks, np.nan, maps))


@pytest.mark.parametrize("fn", [metrics.pixel_auroc, metrics.aupro])
def test_an_invalid_images_inf_map_ranks_most_anomalous_not_an_error(fn):
    """Detectors map NaN input pixels to +inf (never "normal"): the metrics rank them first, as the image
    scores do, instead of stopping the whole evaluation."""
    masks, maps = random_maps(3)
    finite_max = maps.max()
    assert fn(masks, np.where(masks, np.inf, maps)) == fn(masks, np.where(masks, finite_max + 1.0, maps))


def test_inf_ranks_above_a_largest_score_that_adding_one_cannot_pass():
    """Above 2**53 (float64) or 2**24 (a float32 map) "the largest + 1" rounded back to the largest: a tie."""
    assert metrics.image_auroc([0, 0, 1, 1], [1e16, 0, np.inf, 5]) == 0.75
    masks = np.zeros((1, 4, 4), bool)
    masks[0, 0, 0] = True
    maps = np.full((1, 4, 4), 2.0 ** 24, np.float32)
    maps[0, 0, 0] = np.inf
    assert metrics.pixel_auroc(masks, maps) == 1.0


def test_the_roc_plot_takes_an_invalid_images_inf_score(tmp_path):
    from adtf import viz

    path = viz.roc_curves(np.array([0, 0, 1, 1]), {"score": np.array([0.1, 0.4, 0.3, np.inf])}, tmp_path / "roc.png")
    assert path.exists()
    marked = viz.roc_curves(np.array([0, 0, 1, 1]), {"score": np.array([0.1, 0.4, 0.3, np.inf])},
                            tmp_path / "marked.png", points={"max_normal": (0.5, 1.0, True)})
    assert marked.read_bytes() != path.read_bytes()  # the working point is drawn


def test_the_score_strips_count_invalid_images_and_draw_the_thresholds(tmp_path, monkeypatch):
    from adtf import viz

    legends = []
    real_save = viz._save
    monkeypatch.setattr(viz, "_save", lambda fig, path: (legends.append(
        [t.get_text() for t in fig.axes[0].get_legend().get_texts()]), real_save(fig, path))[1])
    viz.score_strips(np.array([0, 0, 0, 1, 1]), np.array([0.1, 0.2, np.inf, 0.9, np.inf]), tmp_path / "s.png",
                     thresholds={"max_normal": (0.25, True), "fpr1_normal": (0.2, False), "never": (np.inf, False)})
    assert legends[-1] == ["normal (2, 1 invalid: +inf; highest 0.2)", "anomalous (1, 1 invalid: +inf; lowest 0.9)",
                           "max_normal (active) = 0.25", "fpr1_normal = 0.2"]
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # parts nobody judged: the files that could not be read are flagged and counted, though they have no score
    viz.score_strips(np.zeros(3, int), np.array([0.1, 0.3, 0.2]), tmp_path / "p.png", groups={0: "parts scored"},
                     unreadable=2)
    assert legends[-1] == ["parts scored (3; 2 more unreadable, flagged, not drawn)"]


def test_part_overlays_draw_each_part_whole_in_one_layout_and_shorten_long_names(tmp_path):
    """adtf-score's overlays: one figure redrawn per part, so every part of a shape gets the same layout, another
    shape its own, and the image, not the last part's, is what each file shows; a title fits the figure, and a "$" in
    a file name is drawn, not parsed as mathtext (it crashed the scoring)."""
    from PIL import Image

    from adtf import viz

    overlays = viz.PartOverlays(0.0, 1.0, "anomaly map")
    dark, bright = np.zeros((64, 48, 3), np.float32), np.ones((64, 48, 3), np.float32)
    flat = np.zeros((64, 48), np.float32)
    long_name = "camera_" * 20 + "part.png"
    paths = [overlays.write(image, flat, f"FLAGGED {long_name}\nscore 1", tmp_path / f"{i}.png")
             for i, image in enumerate((dark, bright))]
    wide = overlays.write(np.zeros((32, 96, 3), np.float32), np.zeros((32, 96), np.float32), "passed x", tmp_path / "w.png")
    drawn = [np.asarray(Image.open(path).convert("L"), float) for path in paths]
    assert drawn[0].shape == drawn[1].shape == np.asarray(Image.open(wide)).shape[:2]  # one canvas size
    assert drawn[1].mean() > drawn[0].mean() + 20  # each file shows its own part
    heading = overlays._drawn[-1]
    assert heading.get_text() == "passed x"
    assert viz._shortened(long_name, 44) == long_name[:22] + "…" + long_name[-21:]
    assert viz._shortened("short.png", 44) == "short.png"
    for name in (long_name, "W" * 60 + ".png", "a$^$b.png"):  # wide letters fill the line sooner; "$" is no mathtext
        overlays.write(dark, flat, f"FLAGGED {name}\nscore 1", tmp_path / "t.png")
        heading = overlays._drawn[-1]  # the dark part's layout again, not the wide one's
        first = heading.get_text().split("\n")[0]
        assert first.startswith("FLAGGED ") and (first == f"FLAGGED {name}") == (len(name) < 40)
        heading.set_text(first)
        assert heading.get_window_extent(heading.figure.canvas.get_renderer()).width <= heading.figure.bbox.width
    viz.heatmap_grid(dark[None], flat[None], ["a$^$b.png"], tmp_path / "grid.png", vmin=0.0, vmax=1.0)  # every plot


def test_importing_adtf_leaves_the_users_matplotlib_backend_alone(tmp_path):
    """adtf.viz chose Agg for the whole process on import, so a notebook that imported adtf.evaluate showed none of
    its own plt.show() plots (Jupyter's inline backend was replaced)."""
    import subprocess
    import sys

    script = ("import matplotlib; matplotlib.use('svg')\n"
              "import numpy as np, adtf.evaluate, adtf.run\n"
              "from adtf import viz\n"
              f"viz.roc_curves(np.array([0, 1]), {{'score': np.array([0.2, 0.9])}}, {str(tmp_path / 'roc.png')!r})\n"
              "import matplotlib.pyplot as plt; print(matplotlib.get_backend(), len(plt.get_fignums()))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["svg", "0"]  # the user's backend, and no figure left open in pyplot
    assert (tmp_path / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def aupro_reference(masks, maps, fpr_limit):
    """Brute force: every distinct threshold, overlaps recounted region by region (skimage labels)."""
    regions = [(i, labelled == k) for i, mask in enumerate(masks)
               for labelled in [skimage_label(mask, connectivity=2)] for k in range(1, labelled.max() + 1)]
    points = [(0.0, 0.0)]
    for t in np.unique(maps)[::-1]:
        predicted = maps >= t
        points.append(((predicted & ~masks).sum() / (~masks).sum(),
                       np.mean([predicted[i][region].mean() for i, region in regions])))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 >= fpr_limit:
            break
        if x1 > fpr_limit:
            x1, y1 = fpr_limit, y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
        area += (x1 - x0) * (y0 + y1) / 2
    return area / fpr_limit


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, True), (3, False)])
@pytest.mark.parametrize("fpr_limit", [0.3, 0.05, 1.0])
def test_aupro_matches_brute_force(seed, ties, fpr_limit):
    masks, maps = random_maps(seed, ties=ties)
    value = metrics.aupro(masks, maps, fpr_limit)
    assert value == pytest.approx(aupro_reference(masks, maps, fpr_limit), abs=1e-9)
    assert 0.0 <= value <= 1.0


def test_aupro_hand_cases():
    masks = np.zeros((2, 8, 8), bool)
    masks[0, 1:3, 1:3] = True          # small region: 4 pixels
    masks[0, 4:8, 4:8] = True          # large region: 16 pixels; image 1 is defect-free
    assert metrics.aupro(masks, masks.astype(float)) == pytest.approx(1.0, abs=1e-12)
    assert metrics.aupro(masks, 1.0 - masks) == 0.0
    # Constant map: one threshold, the diagonal (0,0) -> (1,1): area fpr_limit / 2 after normalising.
    assert metrics.aupro(masks, np.zeros(masks.shape)) == pytest.approx(0.15)
    assert metrics.aupro(masks, np.zeros(masks.shape), fpr_limit=1.0) == pytest.approx(0.5)
    # Only the small region found: PRO jumps to 1/2 at FPR 0 (pixel TPR would be 4/20),
    # then rises linearly to (1, 1); at FPR 0.3 PRO = 0.65 -> area 0.3 * (0.5 + 0.65) / 2.
    small_only = np.zeros(masks.shape)
    small_only[0, 1:3, 1:3] = 1.0
    assert metrics.aupro(masks, small_only) == pytest.approx(0.575, abs=1e-12)


def test_aupro_uses_8_connectivity_like_mvtec():
    # Two blocks touching at one corner are one region (8-connectivity); finding only
    # the 4-pixel block covers 4/13 of it, not 1/2 of two regions.
    masks = np.zeros((1, 10, 10), bool)
    masks[0, 0:2, 0:2] = True
    masks[0, 2:5, 2:5] = True
    found = masks * 0.0
    found[0, 0:2, 0:2] = 1.0
    pro_at_zero = 4 / 13
    expected = 0.3 * (pro_at_zero + pro_at_zero + (1 - pro_at_zero) * 0.3) / 2 / 0.3
    assert metrics.aupro(masks, found) == pytest.approx(expected, abs=1e-12)


def test_aupro_stays_in_unit_interval_on_adversarial_maps():
    rng = np.random.default_rng(4)
    masks, _ = random_maps(4)
    for maps in (np.zeros(masks.shape), rng.integers(0, 2, masks.shape) * 1.0, masks * 1e9 - 5.0):
        assert 0.0 <= metrics.aupro(masks, maps) <= 1.0 + 1e-12
    with pytest.raises(DataError, match="fpr_limit"):
        metrics.aupro(masks, masks * 1.0, fpr_limit=0.0)


def test_per_defect_image_auroc_scores_each_defect_against_all_normal_images():
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.5, 0.3, 0.9, 0.2, 0.4])
    defects = ["good", "good", "good", "hole", "crack", "crack"]
    per = metrics.per_defect_image_auroc(labels, scores, defects)
    assert list(per) == ["crack", "hole"]  # sorted, normal images never a defect
    assert per["hole"] == 1.0
    assert per["crack"] == pytest.approx(roc_auc_score([0, 0, 0, 1, 1], [0.1, 0.5, 0.3, 0.2, 0.4]))


def test_inference_time_leaves_out_the_batches_that_trace_a_graph():
    """The first batch traces the graph, and so does a ragged last one: 20 images at batch 16 once reported 287 ms
    per image where the traced graph took 6."""
    from adtf.evaluate import ms_per_image

    assert ms_per_image([(5.0, 16), (0.16, 16), (0.32, 16), (1.0, 4)]) == pytest.approx(15.0)
    assert ms_per_image([(5.0, 16)]) == pytest.approx(312.5)  # nothing else timed: evaluate() times the first again
