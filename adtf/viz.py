"""Plots a person would rather look at than read: ROC curves, the MoN scatter plot
(paper 000, Fig. 4) and heat-map overlays. Every function writes a PNG atomically
and returns its path. Figures are drawn without pyplot, so importing adtf leaves the user's matplotlib backend
alone: a notebook's own ``plt.show()`` still shows its plots."""
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from adtf import metrics
from adtf.atomic import atomic_path


def _subplots(nrows=1, ncols=1, *, figsize, squeeze=True):
    """pyplot's ``subplots`` on a figure that pyplot never holds: no backend chosen, nothing to close."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def _save(fig, path):
    for text in fig.findobj(Text):  # a file or folder name with "$" in a title is text, not mathtext (it crashed)
        text.set_parse_math(False)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    return path


def roc_curves(labels, scores, path, title="", points=None):
    """ROC curve of each named image score (``scores``: name -> [N] array), and where ``points`` (name ->
    ``(fpr, tpr, active)``: the calibrated working points, measured on these labels) sit on it."""
    fig, ax = _subplots(figsize=(4.5, 4.5))
    for name, values in scores.items():
        _, tp, fp = metrics.operating_points(labels, values)  # an invalid image's +inf score ranks first
        fpr, tpr = fp / fp[-1], tp / tp[-1]
        ax.plot(fpr, tpr, label=f"{name} (AUROC {metrics.image_auroc(labels, values):.3f})")
    for name, (fpr, tpr, active) in (points or {}).items():
        ax.plot([fpr], [tpr], "*" if active else "o", markersize=12 if active else 5, zorder=3,
                label=f"{name}{' (active)' if active else ''}: TPR {tpr:.2f}, TNR {1 - fpr:.2f}")
    ax.plot([0, 1], [0, 1], ":", color="gray")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title or "ROC", xlim=(-0.01, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def score_strips(labels, scores, path, score_name="score", title="", thresholds=None, groups=None, unreadable=0):
    """Every test image's score as a dot, one row per group, with the working points' thresholds on that score
    (``thresholds``: name -> ``(value, active)``): where a threshold sits among the good parts' scores, which a ROC
    curve does not show, down to the last part (a histogram's bins hid a margin of 0.01 in a bin of 0.2). The legend
    gives each group's count, its highest (normal) or lowest (anomalous) score, and its invalid images (score +inf,
    not drawn). ``groups``: label -> name (default ``{0: "normal", 1: "anomalous"}``; unlabelled parts are one group);
    ``unreadable``: files that could not be read at all (flagged), counted in the last group's legend."""
    labels, scores = np.asarray(labels).astype(int), np.asarray(scores, float)
    finite = np.isfinite(scores)
    fig, ax = _subplots(figsize=(6.5, 3.0))
    what, colours = ("test images", ("tab:green", "tab:red")) if groups is None else ("images", ("tab:blue",) * 2)
    groups = groups or {0: "normal", 1: "anomalous"}
    jitter = np.random.default_rng(0).uniform(-0.3, 0.3, len(scores))  # seeded: the same plot for the same scores
    rows = []
    for (label, name), colour in zip(groups.items(), colours):  # parts nobody judged: not a good part's green
        member = labels == label
        part = scores[member & finite]
        invalid = int(np.count_nonzero(member & ~finite))
        skipped = unreadable if label == list(groups)[-1] else 0
        if not (part.size or invalid or skipped):
            continue
        extreme = ("" if not part.size or len(groups) == 1 else
                   f"; highest {part.max():.4g}" if label == 0 else f"; lowest {part.min():.4g}")
        row = len(rows)
        rows.append(name)
        ax.scatter(part, row + jitter[member & finite], s=14 if len(scores) < 500 else 4, color=colour,
                   alpha=_point_alpha(part.size),
                   linewidths=0, label=f"{name} ({part.size}{f', {invalid} invalid: +inf' if invalid else ''}"
                                       f"{f'; {skipped} more unreadable, flagged, not drawn' if skipped else ''}{extreme})")
    for name, (value, active) in (thresholds or {}).items():
        if np.isfinite(value):
            ax.axvline(value, color="k", linestyle="-" if active else ":", linewidth=1.2 if active else 0.8,
                       label=f"{name}{' (active)' if active else ''} = {value:.4g}")
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set(xlabel=score_name, ylim=(-0.6, len(rows) - 0.4),
           title=f"{title + ': ' if title else ''}{score_name} of each of the {what}, and the thresholds")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)
    return _save(fig, path)


def _point_alpha(n, most=0.6):
    """Points fainter as they grow many, so that where thousands overlap still reads denser than where a few do
    (at a fixed alpha, 4,000 scores drew one solid block around the threshold)."""
    return float(np.clip(300 / max(int(n), 1), 0.25, most))


def _normalised(values):
    values = np.asarray(values, dtype=np.float64)
    span = values.max() - values.min()
    return (values - values.min()) / (span if span > 0 else 1.0)


def mon_scatter(labels, panels, path, title=""):
    """Paper 000, Fig. 4: normalised mean (x) vs max (y) distance to the MoN, normal vs anomalous.

    Args:
        labels: ``[N]`` 0 normal / 1 anomalous.
        panels: ordered name -> ``(d_mean, d_max)``, e.g. ``{"pre (pixels)": ..., "post (features)": ...}``.
    """
    labels = np.asarray(labels)
    fig, axes = _subplots(1, len(panels), figsize=(4.2 * len(panels), 4), squeeze=False)
    for ax, (name, (d_mean, d_max)) in zip(axes[0], panels.items()):
        x, y = _normalised(d_mean), _normalised(d_max)
        ax.scatter(x[labels == 0], y[labels == 0], s=9, c="0.6", alpha=_point_alpha(np.sum(labels == 0), 1.0),
                   label="anomaly-free")
        ax.scatter(x[labels == 1], y[labels == 1], s=9, c="k", marker="x", alpha=_point_alpha(np.sum(labels == 1), 1.0),
                   label="anomalous")
        ax.set(xlabel="normalised mean distance", ylabel="normalised max distance", title=name, xlim=(-0.03, 1.03), ylim=(-0.03, 1.03))
        ax.legend(loc="lower right", fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _overlay(ax, image, anomaly_map, vmin, vmax):
    """An image with its anomaly map over it, on a shared colour scale: the two artists, to redraw or to scale a bar by."""
    ax.axis("off")
    return ax.imshow(np.clip(image, 0, 1)), ax.imshow(anomaly_map, cmap="jet", alpha=0.45, vmin=vmin, vmax=vmax)


def _colour_bar(fig, shown, label, **where):
    """A colour bar for ``shown``, beside the axes ``ax=`` (room taken from them) or in the axes ``cax=``."""
    bar = fig.colorbar(shown, **where)
    bar.set_label(label, fontsize=7)
    bar.ax.tick_params(labelsize=6)


def heatmap_grid(images, maps, titles, path, masks=None, vmin=0.0, vmax=None, scale_label="anomaly map", note=None):
    """Images with their anomaly maps overlaid (and ground-truth contours when given), and a colour bar.

    One shared colour scale (``vmin`` to ``vmax``, default 0 to the largest map value) so maps compare
    across images; ``scale_label`` says on the colour bar where that scale comes from; ``note``, above the images,
    what the titles' verdicts are at.
    """
    n = len(images)
    fig, axes = _subplots(1, n, figsize=(2.6 * n + 0.6, 2.9), squeeze=False)
    vmax = float(np.max(maps)) if vmax is None else vmax
    for i, ax in enumerate(axes[0]):
        _, shown = _overlay(ax, images[i], maps[i], vmin, vmax)
        if masks is not None and np.any(masks[i] > 0.5):
            ax.contour(masks[i] > 0.5, levels=[0.5], colors="white", linewidths=0.8)
        ax.set_title(titles[i], fontsize=7)
    _colour_bar(fig, shown, scale_label, ax=list(axes[0]), fraction=0.04 / max(n, 1) ** 0.5, pad=0.02)
    if note:
        fig.suptitle(note, fontsize=8, x=0.02, ha="left")
    return _save(fig, path)


class PartOverlays:
    """A heat-map overlay per part, for many parts (``adtf-score``'s flagged ones): one figure whose image, map and
    title are replaced for each, saved at a fixed size. A fresh figure per part, cropped to what it holds, took
    100-140 ms on a 2-core Xeon, most of a day's scoring where many parts are flagged; this takes 40-50. The title
    (one or two lines) is plain text; a line wider than the figure is shortened in its middle (the PNG's own name
    keeps a file's name whole)."""

    def __init__(self, vmin, vmax, scale_label="anomaly map"):
        if vmin is None or vmax is None:  # one scale for every part, fixed before the first is drawn
            raise ValueError("PartOverlays needs the colour scale's vmin and vmax")
        self.vmin, self.vmax, self.scale_label = vmin, vmax, scale_label
        self._drawn = None  # (shapes, figure, image artist, map artist, heading)

    def write(self, image, anomaly_map, title, path):
        """``image`` ``[H, W, 3]`` in [0, 1] with ``anomaly_map`` ``[H, W]`` over it, titled, to ``path`` (a PNG)."""
        shapes = (np.shape(image), np.shape(anomaly_map))
        if self._drawn is None or self._drawn[0] != shapes:  # the first part, or one of another shape
            fig = Figure(figsize=(3.6, 3.0))  # fixed boxes, not cropped to the contents: nothing to measure per part
            FigureCanvasAgg(fig)  # a renderer to measure the title's lines with
            shown_image, shown_map = _overlay(fig.add_axes((0.02, 0.02, 0.74, 0.84)), image, anomaly_map,
                                              self.vmin, self.vmax)  # the image centred in its box
            _colour_bar(fig, shown_map, self.scale_label, cax=fig.add_axes((0.8, 0.1, 0.035, 0.7)))
            heading = fig.text(0.5, 0.975, "", ha="center", va="top", fontsize=7, parse_math=False)
            self._drawn = (shapes, fig, shown_image, shown_map, heading)
        _, fig, shown_image, shown_map, heading = self._drawn
        shown_image.set_data(np.clip(image, 0, 1))
        shown_map.set_data(anomaly_map)
        heading.set_text("\n".join(_fitted(heading, line, 0.96 * fig.bbox.width) for line in title.split("\n")))
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110, pil_kwargs={"compress_level": 3})  # zlib 6: 3x the time for a 10 % smaller file
        return path


def _fitted(text_artist, line, room):
    """``line``, shortened in its middle (the fewest characters left out) until ``text_artist`` draws it within
    ``room`` pixels: measured, since a line of wide characters (CJK) fills the room with half as many."""
    renderer = text_artist.figure.canvas.get_renderer()

    def width(kept):
        text_artist.set_text(_shortened(line, kept))
        return text_artist.get_window_extent(renderer).width

    if width(len(line)) <= room:
        return line
    fits, too_many = 1, len(line)  # characters kept: a binary search
    while too_many - fits > 1:
        middle = (fits + too_many) // 2
        fits, too_many = (middle, too_many) if width(middle) <= room else (fits, middle)
    return _shortened(line, fits)


def _shortened(text, most):
    """``text``, or its start and end around an ellipsis where it is longer than ``most`` characters."""
    if len(text) <= most:
        return text
    keep = most - 1
    return f"{text[:keep - keep // 2]}…{text[len(text) - keep // 2:]}"


def training_curves(history, path, title="", descriptions=None):
    """Training loss per epoch and, where monitored, the validation AUROC per epoch (paper 004, Fig. 11).

    ``history``: ``{name: [value per epoch]}`` as ``keras.callbacks.History.history``; ``val_*`` curves
    may be shorter (measured every few epochs) and are drawn at the epochs they were measured
    (the last ones). Monitoring only: no epoch is chosen from them. ``descriptions``: name -> what it measures, for
    the legend.
    """
    losses = {k: v for k, v in history.items() if not k.startswith("val_") and k not in ("epoch_seconds", "step_seconds")}
    monitored = {k: v for k, v in history.items() if k.startswith("val_")}
    fig, axes = _subplots(1, 2 if monitored else 1, figsize=(9 if monitored else 4.5, 3.6), squeeze=False)
    epochs = max((len(v) for v in losses.values()), default=0)
    for name, values in losses.items():
        described = (descriptions or {}).get(name)
        axes[0, 0].plot(np.arange(1, len(values) + 1), values, label=f"{name}: {described}" if described else name)
    axes[0, 0].set(xlabel="epoch", ylabel="mean over the epoch's steps", title="training",
                   xlim=(0.5, max(epochs, 1) + 0.5))
    axes[0, 0].legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)  # off the curves
    if monitored:
        for name, values in monitored.items():
            every = max(epochs // max(len(values), 1), 1)
            axes[0, 1].plot(np.arange(1, len(values) + 1) * every, values, "o-", label=name)
        axes[0, 1].set(xlabel="epoch", ylabel="AUROC", ylim=(0, 1.01),
                       title="monitored on test data (not used to choose anything)")
        axes[0, 1].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def images_of(samples, arrays, image_size, batch_size=16, with_masks=False):
    """The images of ``samples`` as one array ``[N, H, W, 3]``, through adtf's pipeline; ``with_masks``: and their
    masks ``[N, H, W]`` (bool; all False where a sample has none), read again rather than kept for every test image."""
    from adtf import data

    batches = list(data.pipeline(samples, arrays=arrays, image_size=image_size, batch_size=batch_size))
    images = np.concatenate([np.asarray(b[0]) for b in batches])
    return (images, np.concatenate([np.asarray(b[2]) > 0.5 for b in batches])) if with_masks else images


def cutpaste_examples(dataset, image_size, path, seed=0, crop=None, n=4):
    """Training images (or the crops CutPaste trains on) above their CutPaste versions, patch outlined."""
    import tensorflow as tf

    from adtf.data.cutpaste import cut_paste, random_crops

    images = tf.constant(images_of(dataset.train[:n], dataset.arrays, image_size))
    if crop is not None:
        images = random_crops(images, crop, (seed, 0))
    pasted, masks = cut_paste(images, (seed, 1))
    fig, axes = _subplots(2, len(images), figsize=(2.4 * len(images), 5), squeeze=False)
    for i in range(len(images)):
        axes[0, i].imshow(np.asarray(images[i]))
        axes[1, i].imshow(np.asarray(pasted[i]))
        axes[1, i].contour(np.asarray(masks[i]), levels=[0.5], colors="red", linewidths=0.8)
        for ax in axes[:, i]:
            ax.axis("off")
    axes[0, 0].set_title("normal" + (f" ({crop} px crops)" if crop else ""), fontsize=8, loc="left")
    axes[1, 0].set_title("CutPaste (patch outlined)", fontsize=8, loc="left")
    return _save(fig, path)


def top_regions(images, regions, masks, outputs, picked, path):
    """The test images ``picked`` (``images``, the most anomalous) with the detector's top-k ``regions`` (red) and
    the true defect (white: ``masks``, theirs, or None)."""
    fig, axes = _subplots(1, len(picked), figsize=(2.6 * len(picked), 2.9), squeeze=False)
    for n, (ax, image, region, i) in enumerate(zip(axes[0], images, regions, picked)):
        ax.imshow(np.clip(image, 0, 1))
        ax.contour(np.asarray(region, float), levels=[0.5], colors="red", linewidths=1.0)
        mask = masks[n] if masks is not None else None
        if mask is not None and np.any(mask > 0.5):
            ax.contour(mask > 0.5, levels=[0.5], colors="white", linewidths=0.8)
        ax.set_title(f"{'defective' if outputs['label'][i] else 'good'} (truth), score {outputs['score'][i]:.3g}",
                     fontsize=7)
        ax.axis("off")
    return _save(fig, path)


def score_line(labels, scores, threshold, path, title=""):
    """Paper 001, Fig. 7: each test image's score, normal and anomalous apart, with the active threshold."""
    labels, scores = np.asarray(labels).astype(int), np.asarray(scores, float)
    fig, ax = _subplots(figsize=(7, 3.2))
    index = np.arange(len(scores))
    ax.plot(index, scores, color="0.8", linewidth=0.8, zorder=1)
    ax.scatter(index[labels == 0], scores[labels == 0], s=10, c="tab:red", label="normal", zorder=2)
    ax.scatter(index[labels == 1], scores[labels == 1], s=10, c="tab:blue", label="anomalous", zorder=2)
    if np.isfinite(threshold):
        ax.axhline(threshold, color="k", linestyle="--", linewidth=0.8, label="active threshold")
    ax.set(xlabel="test image", ylabel="anomaly score", title=title or "scores per image (paper 001, Fig. 7)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def tsne_panels(points, kinds, path, seed=0, title=""):
    """Paper 001's Fig. 6: t-SNE of normal, CutPaste and real-defect features, one panel per feature space.

    ``points``: ordered name -> ``[N, D]``; ``kinds``: ``[N]`` labels ("normal", "CutPaste", "real defect").
    """
    from sklearn.manifold import TSNE

    kinds = np.asarray(kinds)
    colours = {"normal": "tab:green", "CutPaste": "tab:orange", "real defect": "tab:red"}
    fig, axes = _subplots(1, len(points), figsize=(4.4 * len(points), 4.2), squeeze=False)
    for ax, (name, values) in zip(axes[0], points.items()):
        embedded = TSNE(n_components=2, perplexity=min(30.0, max(2.0, (len(values) - 1) / 3)), init="pca",
                        random_state=seed).fit_transform(np.asarray(values, np.float64))
        for kind, colour in colours.items():
            where = kinds == kind
            if where.any():
                ax.scatter(embedded[where, 0], embedded[where, 1], s=8, c=colour, label=kind)
        ax.set(title=name, xticks=[], yticks=[])
        ax.legend(fontsize=8)
    fig.suptitle(title or "t-SNE of the most anomalous patch per image (paper 001, Fig. 6)")
    return _save(fig, path)


def examples_of(dataset, outputs, image_size, n=4):
    """``(images, titles)``: the ``n`` lowest-scored normal and ``n`` highest-scored anomalous test images."""
    labels = np.asarray(outputs.get("label", np.zeros(len(outputs["score"]))), int)
    order = np.argsort(outputs["score"])
    picked = [i for i in order if labels[i] == 0][:n] + [i for i in order[::-1] if labels[i] == 1][:n]
    if not picked:
        return np.zeros((0, *image_size, 3), "float32"), []
    titles = [f"{'defective' if labels[i] else 'good'} (truth), score {outputs['score'][i]:.3g}" for i in picked]
    return images_of([dataset.test[i] for i in picked], dataset.arrays, image_size), titles


def reconstructions(images, reconstructed, titles, path):
    """Inputs above their reconstructions and the absolute difference (papers 002/003, Fig. 4 / Fig. 1)."""
    fig, axes = _subplots(3, len(images), figsize=(2.0 * len(images), 6.2), squeeze=False)
    for i in range(len(images)):
        axes[0, i].imshow(np.clip(images[i], 0, 1))
        axes[0, i].set_title(titles[i], fontsize=7)
        axes[1, i].imshow(np.clip(reconstructed[i], 0, 1))
        axes[2, i].imshow(np.abs(images[i] - reconstructed[i]).mean(axis=-1), cmap="inferno", vmin=0, vmax=0.5)
        for ax in axes[:, i]:
            ax.axis("off")
    for row, name in enumerate(("input", "reconstruction", "|difference|")):
        axes[row, 0].text(-0.08, 0.5, name, rotation=90, fontsize=8, va="center", ha="right",
                          transform=axes[row, 0].transAxes)
    return _save(fig, path)
