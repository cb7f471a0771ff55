"""Detector x dataset -> metrics, plots and a markdown report in one folder.

``evaluate`` is what ``adtf-fit``, ``adtf-eval``, the notebooks and the benchmarks
call, so every number adtf prints is computed in one place (with ``adtf.metrics``).
"""
import csv
import io
import json
import math
import os
import time
import warnings
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from adtf import data, machine, metrics, thresholds, viz
from adtf.atomic import write_json, write_text
from adtf.data.pipeline import unpack_batch
from adtf.errors import AdtfError, tensorflow_message


# Where a data spec leaves no normal image to test on, what to give it (the runner's warning and the report's).
HOLD_NORMALS_OUT = ("hold normal images out for testing: `holdout=0.2` or `test_normal=DIR` in a `folder:` spec; "
                    "`classes:`, `coil:` and one-split `mnist:`/`cifar:` specs test on the normal class's images left "
                    "over by `train_fraction`, none where it has too few images")


def _traced_full_batches(timings):
    """The ``(seconds, images)`` of the batches timed once traced: the first batch's size, the first left out (it
    traces the graph) and so is a ragged last batch (it traces one for its own shape)."""
    return [(t, n) for t, n in timings[1:] if n == timings[0][1]]


def ms_per_image(timings):
    """Inference time per image from ``(seconds, images)`` per batch, over ``_traced_full_batches`` (all of them
    where there is none)."""
    timed = _traced_full_batches(timings) or timings
    return 1000.0 * sum(t for t, _ in timed) / sum(n for _, n in timed)


def _checked(dataset, out_dir, who, **load_options):
    """``dataset`` as an ``AnomalyDataset`` (a spec string is loaded), with ``out_dir`` checked before any scoring: a
    spec, a pipeline or a file where the folder goes met an AttributeError or FileExistsError deep inside."""
    if isinstance(dataset, (str, os.PathLike)):
        dataset = data.load(str(dataset), **load_options)
    if not isinstance(dataset, data.AnomalyDataset):
        raise AdtfError(f"{who} takes a dataset of adtf.data.load(spec), or the spec itself, not a "
                        f"{type(dataset).__name__} (its report names every file and defect type, which batches do not "
                        "carry); score batches with detector.score_dataset")
    if out_dir is not None and Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise AdtfError(f"{out_dir} is a file: {who} writes a folder of results there; give a folder's path")
    return dataset


def evaluate(detector, dataset, out_dir=None, *, method=None, batch_size=16, n_examples=4,
             verbose=True, n_calibration=0, n_fit=None, calibration=None, extra=None, train_known=True,
             colour_range=None, pixel_metrics=True):
    """Score ``dataset.test`` with ``detector``; return the metrics dict (and write a report).

    Args:
        detector: a fitted, calibrated ``adtf.detectors.Detector``.
        dataset: an ``adtf.data.AnomalyDataset``.
        out_dir: folder for ``metrics.json``, ``report.md`` and the plots (None: write nothing).
        method: name recorded in ``metrics.json`` (default: the detector's class name).
        batch_size: images per batch.
        n_examples: how many top- and bottom-scored test images get a heat-map overlay.
        verbose: progress bars.
        n_calibration: normal training images the working points were calibrated on (recorded:
            ``n_train`` then counts only the images the detector was fitted on).
        n_fit: the images the detector was fitted on, where not ``len(dataset.train) - n_calibration``
            (cross-fitted calibration scores every fitted image).
        calibration: which images calibrated the working points, in words (for the report).
        extra: more entries for ``metrics.json`` (the runner's fit time, preset, options).
        train_known: False where ``dataset.train`` is not what the detector was fitted on and nothing says what was
            (a model evaluated without its run's record): ``n_train`` is then None, "unknown" in the report.
        colour_range: ``(low, high)`` of the heat maps' colour scale: the run's (``heatmap_scale`` in its
            ``metrics.json``), so that its overlays compare with the fit's; None: from these maps.
        pixel_metrics: False skips pixel AUROC and AUPRO, whose working memory is about four times that of the
            maps they rank; the maps and masks are then not kept either (nor the maps where no masks are given): the
            few that the heat maps draw are scored and read again.

    Example:
    >>> results = evaluate(detector, adtf.data.load("mvtec:/data/bottle"), "runs/bottle")
    >>> results["image_auroc"]
    """
    dataset = _checked(dataset, out_dir, "evaluate", progress=verbose)
    if not dataset.test:  # a folder of normal images only: the pipeline's "no samples given" named nothing
        raise AdtfError(f"{dataset.name} has no test images to evaluate; give a dataset with test images (a folder "
                        "spec's anomalous= or test_normal=, or an MVTec-style test/ folder)")
    calibration = calibration or _calibration_in_words(detector, n_calibration)
    if pixel_metrics and dataset.has_masks:
        warn_if_pixel_metrics_outgrow_memory(len(dataset.test), detector.image_size)
    test_ds = data.pipeline(dataset.test, arrays=dataset.arrays, image_size=detector.image_size, batch_size=batch_size)
    timings = []
    # Every map and mask is kept only where the pixel metrics rank them (4 + 1 bytes a pixel: 2,000 test images at
    # 512x512 hold 2.5 GB); the few that the plots draw are scored and read again.
    ranked = pixel_metrics and dataset.has_masks
    outputs = detector.score_dataset(test_ds, verbose=verbose, desc="evaluating", timings=timings,
                                     keep_masks=ranked, keep_maps=ranked)
    # One full batch and perhaps a ragged rest, each traced as it was timed (445 ms per image against 12 once traced;
    # 20 images at batch 16: 287 ms against 6): the first batch again, traced now.
    if not _traced_full_batches(timings):
        batch = unpack_batch(next(iter(test_ds))).image
        started = time.perf_counter()
        detector.infer(batch)
        timings.append((time.perf_counter() - started, len(batch)))
    ms = ms_per_image(timings)
    labels = outputs["label"].astype(int)
    has_both = labels.min() == 0 and labels.max() == 1
    image_scores = {name: outputs[name] for name in detector.score_names if name in outputs}
    results = {
        "method": method or type(detector).__name__,
        "dataset": dataset.name,
        "data_notes": list(getattr(dataset, "notes", [])),
        "image_auroc": metrics.image_auroc(labels, outputs["score"]) if has_both else None,
        "image_auroc_by_score": {k: metrics.image_auroc(labels, v) for k, v in image_scores.items()} if has_both else {},
        "pixel_auroc": None,
        "aupro": None,
    }
    if has_both:
        tpr, tnr, threshold = metrics.best_tpr_tnr(labels, outputs["score"])
        results.update(best_tpr=tpr, best_tnr=tnr, best_threshold=threshold)
        results["f1_max"] = metrics.f1_max(labels, outputs["score"])[0]
        # Paper 004's factory threshold (Fig. 12): the lowest FPR that still flags every defect, and the
        # threshold that gives it. A figure of this test set, never a working point.
        results["fpr_at_full_recall"], results["factory_threshold"] = metrics.fpr_at_full_recall(labels, outputs["score"])
    # Pixel ground truth: normal images (all zeros) and anomalous images with a mask; an anomalous image
    # without one (a user's folder may lack a few) would count its defect as normal pixels.
    pixel_truth = np.array([s.label == 0 or s.mask_path is not None for s in dataset.test])
    if dataset.has_masks and not pixel_metrics:  # neither maps nor masks were kept: the masks' notes are the metrics'
        results["pixel_metrics_missing"] = "skipped as asked (--no-pixel-metrics, pixel_metrics=False)"
    elif dataset.has_masks:
        # Where the method sees a crop, the crop alone (the authors' code crops the masks so).
        truth = slice(None) if pixel_truth.all() else pixel_truth  # a view: a mask copies every map (1.4 GB for DAGM)
        masks = detector.scored_part(outputs["mask"])[truth]
        if not pixel_truth.all():
            n_anomalous = int(labels.sum())  # loading warned of it; the report must say so too
            results["data_notes"].append(f"the pixel metrics cover {n_anomalous - int((~pixel_truth).sum())} of the "
                                         f"{n_anomalous} anomalous test images: {int((~pixel_truth).sum())} without a mask")
        scored = [s for s, kept in zip(dataset.test, pixel_truth) if kept]
        for note in _mask_notes(labels[pixel_truth], masks, scored):
            warnings.warn(note, stacklevel=2)
            results["data_notes"].append(note)
        if not masks[labels[pixel_truth] == 1].any():  # not "no masks": the summary said that of empty masks
            results["pixel_metrics_missing"] = "no mask marks a defect pixel"
        else:  # the maps taken only here: skipped metrics copy none of them
            maps = detector.scored_part(outputs["anomaly_map"])[truth]
            results["pixel_auroc"] = metrics.pixel_auroc(masks, maps)
            results["aupro"] = metrics.aupro(masks, maps)
    else:
        results["pixel_metrics_missing"] = "no masks"
    # With one class the working points still say what a user needs: the share of good parts passed (TNR) or of
    # defects caught (TPR).
    points = evaluated_points(detector)
    results["working_points"] = thresholds.evaluate_working_points(points, labels, outputs) if points and len(labels) else {}
    results["active_working_point"] = detector.working_point
    results["per_defect_image_auroc"] = (metrics.per_defect_image_auroc(
        labels, outputs["score"], [s.defect for s in dataset.test]) if has_both else {})
    if detector.working_point:  # what the verdicts do to each kind of part: an AUROC does not say how many pass
        results["flagged_by_defect"] = _flagged_by_defect([s.defect for s in dataset.test], outputs["anomalous"])
    results.update(
        n_train=None if not train_known else len(dataset.train) - n_calibration if n_fit is None else n_fit,
        n_calibration=n_calibration or None,
        n_test=len(dataset.test), n_test_anomalous=int(labels.sum()),
        image_size=list(detector.image_size), ms_per_image=ms, images_per_second=1000.0 / ms,
        n_invalid=int(outputs["invalid"].sum()), calibration=calibration,
        peak_rss_mb=machine.peak_rss_mb(), machine=machine.description(), date=machine.today(), **(extra or {}),
    )
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        colour = (tuple(colour_range), "anomaly map (the run's colour scale)") if colour_range else \
            (colour_scale(maps_of(detector, dataset.test, dataset.arrays, outputs, colour_sample(len(dataset.test)),
                                  batch_size)),
             "anomaly map (scaled to these test images)")
        results["heatmap_scale"] = list(colour[0])
        results["heatmaps_working_point"] = detector.working_point  # the verdicts in their titles
        results["plots"] = _plots(detector, dataset, outputs, labels, image_scores, out_dir, batch_size, n_examples,
                                  results["working_points"], colour)
        if results.get("history"):
            results["plots"]["training"] = viz.training_curves(results["history"], out_dir / "training.png",
                                                               title=f"{results['method']} on {dataset.name}",
                                                               descriptions=detector.metric_descriptions).name
        plots, lines = detector.report_extras(dataset, outputs, out_dir, batch_size)
        results["plots"].update(plots)
        results["report_lines"] = lines
        results.update(detector.extra_metrics(outputs))
        results["scores_file"] = _write_scores(out_dir / "scores.csv", dataset.test, outputs, detector)
        results["peak_rss_mb"] = machine.peak_rss_mb()  # the plots and report too, not only the scoring
        write_json(out_dir / "metrics.json", results)
        write_text(out_dir / "report.md", report_markdown(results))
    return results


def _flagged_by_defect(defects, flagged):
    """``{defect type: the share of its test images flagged}``, the types in the order they come."""
    defects, flagged = np.asarray(defects), np.asarray(flagged, bool)
    return {str(defect): float(flagged[defects == defect].mean()) for defect in dict.fromkeys(defects)}


def _write_scores(path, samples, outputs, detector, labelled=True, unreadable=()):
    """Every image's scores and verdict at the active working point, one row each: which good parts a threshold
    fails and which defects it passes, where the report's plots show only a few (``labelled=False``: parts nobody
    has judged, no label or defect columns, and a ``problem`` column: ``unreadable`` files, ``(path, problem)``
    each, are rows too, flagged, as the SavedModel flags a file it cannot decode)."""
    names = [name for name in detector.score_names if name in outputs and name != "score"]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    verdict = f"anomalous ({detector.working_point})" if detector.working_point else "anomalous (no working point)"
    known = ["label", "defect"] if labelled else []
    writer.writerow(["path", *known, "score", *names, verdict, "invalid", *([] if labelled else ["problem"])])
    # float32's shortest round-trip digits: ties with a threshold stay ties
    # No working point, no verdict (the layer flags every part then): an invalid image's alone is one.
    judged = bool(detector.working_point) and detector.threshold < math.inf  # a damaged file's NaN judges nothing
    rows = [[sample.path, *([sample.label, sample.defect] if labelled else []),
             str(np.float32(outputs["score"][i])), *(str(np.float32(outputs[name][i])) for name in names),
             int(outputs["anomalous"][i]) if judged or outputs["invalid"][i] else "", int(outputs["invalid"][i]),
             *([] if labelled else [""])]
            for i, sample in enumerate(samples)]
    # A name that is not UTF-8 (unreadable for that alone) is written escaped; the unreadable files take their place
    # in the folder's order (the order it was read in: by name).
    rows += [[os.fsencode(file).decode("utf-8", "backslashreplace"), "inf", *("inf" for _ in names), 1, 1, problem]
             for file, problem in unreadable]
    writer.writerows(sorted(rows, key=lambda row: row[0]) if unreadable else rows)
    write_text(path, text.getvalue())
    return path.name


def rescored(detector, samples, arrays, indices, batch_size=16):
    """``(indices, outputs, images)`` a batch at a time for ``samples[indices]`` scored again: never every map in
    memory at once."""
    indices = np.asarray(indices, int)
    if not len(indices):
        return
    batches = data.pipeline([samples[i] for i in indices], arrays=arrays, image_size=detector.image_size,
                            batch_size=batch_size)
    start = 0
    for batch in batches:
        images = np.asarray(unpack_batch(batch).image)
        yield (indices[start:start + len(images)], {key: np.asarray(value) for key, value in
                                                     detector.infer(images).items()}, images)
        start += len(images)


def maps_of(detector, samples, arrays, outputs, indices, batch_size=16, images=None, key="anomaly_map"):
    """The ``key`` maps of ``samples[indices]``: kept in ``outputs`` (where the pixel metrics ran), else scored again
    (``images``: theirs, where already read)."""
    indices = np.asarray(indices, int)
    if key in outputs:
        return outputs[key][indices]
    if images is not None:
        return np.asarray(detector.infer(images)[key])
    parts = [scored[key] for _, scored, _ in rescored(detector, samples, arrays, indices, batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, *detector.image_size), "float32")


def colour_sample(n):
    """Which of ``n`` images set a colour scale: at most 256, spread over them (every map's values, copied and
    sorted, cost 2-3 times the maps: a one-class MNIST run held 9,192 maps of 224x224; and where the maps are not
    kept, these are scored again)."""
    return np.unique(np.linspace(0, n - 1, min(256, n)).astype(int))


def colour_scale(maps):
    """One colour scale for every overlay, from ``maps`` (``colour_sample``'s). Maps may be negative (SimpleNet's
    -D), so both ends come from the data."""
    finite = maps[np.isfinite(maps)]
    vmin, vmax = (float(np.percentile(finite, 0.1)), float(np.percentile(finite, 99.9))) if finite.size else (0.0, 1.0)
    return vmin, max(vmax, vmin + 1e-12)


# Bytes per test pixel while the pixel metrics run: the map (float32) and mask (bool) kept, then AUPRO's region labels
# (int32), its copy of the normal pixels' scores and the indices and order of those above its FPR limit. A DAGM class's
# (650 maps of 512x512) peaked at 3.6 GiB, 0.8 of it the maps and masks (benchmarks/README.md, "What a preset costs").
PIXEL_METRIC_BYTES = 22


def warn_if_pixel_metrics_outgrow_memory(n_images, image_size, stacklevel=3):
    """Warn where the pixel metrics of ``n_images`` maps would need more memory than is free: before the scoring
    (and before a fit), which a kill for memory would lose."""
    need = n_images * int(np.prod(image_size)) * PIXEL_METRIC_BYTES
    free = machine.available_memory()
    if need > 0.8 * free:
        def size(n_bytes):
            return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**30 / 10 else f"{n_bytes / 2**20:.0f} MiB"

        warnings.warn(f"the pixel metrics of {n_images} maps of {image_size[0]}x{image_size[1]} need about "
                      f"{size(need)}, and {size(free)} of memory are free: the evaluation may be "
                      "killed once every image is scored. Evaluate fewer images, or skip pixel AUROC and AUPRO "
                      "(--no-pixel-metrics; evaluate(..., pixel_metrics=False))", stacklevel=stacklevel)


def refuse_without_working_point(detector, name=None):
    """Verdicts need a threshold: a detector never calibrated (or a damaged one's NaN threshold) flags every part.
    ``name``: the model's file, as the message names it (its class where None)."""
    if detector.working_point and detector.threshold < math.inf:
        return
    name = name or f"the {type(detector).__name__}"
    state = f"a threshold of {detector.threshold}" if detector.working_point else "no working point (never calibrated)"
    raise AdtfError(f"{name} has {state}: it would flag every part. Score with a calibrated model (adtf-fit "
                    "calibrates on normal images; detector.calibrate(...) in Python), or set a threshold: adtf-export "
                    f"{name if name.endswith('.keras') else 'MODEL'} --threshold V --save-model")


def score_parts(detector, dataset, out_dir, *, batch_size=16, heatmaps="flagged", verbose=True, colour_range=None):
    """Score parts nobody has judged (every image of ``dataset``, no labels read): ``scores.csv`` with each part's
    score and verdict at the active working point, and a heat-map overlay per flagged part (``heatmaps``:
    "flagged", "all" or "none") under ``out_dir/heatmaps``. The files loading left out as unusable
    (``dataset.skipped``: ``data.load(..., flag_unusable=True)``) are parts too, flagged, with their problem: a capture
    that cannot be read must not pass as a good part. ``colour_range``: the run's heat-map colour scale
    (``heatmap_scale`` in its ``metrics.json``), so that a part looks the same whatever else the folder holds; None:
    one scale from this folder's maps. Returns ``{n, n_flagged, n_invalid, n_unreadable, ...}``."""
    refuse_without_working_point(detector)
    dataset = _checked(dataset, out_dir, "score_parts", flag_unusable=True, progress=verbose)
    samples = list(dataset.train) + list(dataset.test)
    if not samples and not dataset.skipped:
        raise AdtfError(f"{dataset.name} holds no images to score")
    import tensorflow as tf

    for earlier in ("score.json", "scores.csv"):  # an earlier scoring's: gone, not taken for today's if this one stops
        (Path(out_dir) / earlier).unlink(missing_ok=True)
    changed = (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.DataLossError)  # not memory
    outputs = {key: np.zeros(0, dtype) for key, dtype in (("score", np.float32), ("anomalous", bool), ("invalid", bool))}
    if samples:  # no maps kept (a day's 10,000 parts at 512x512 hold 10 GiB): the overlays' parts are scored again
        batches = data.pipeline(samples, arrays=dataset.arrays, image_size=detector.image_size, batch_size=batch_size)
        try:
            outputs = detector.score_dataset(batches, verbose=verbose, desc="scoring", keep_masks=False,
                                             keep_maps=False)
        except changed as err:  # checked whole a moment ago: a file changed (a camera still writing it?)
            raise AdtfError(f"{dataset.name}: a file changed after it was checked and can no longer be decoded "
                            f"({tensorflow_message(err)}): score the folder again once every file is written whole") from None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_scores(out_dir / "scores.csv", samples, outputs, detector, labelled=False, unreadable=dataset.skipped)
    (out_dir / "scores.png").unlink(missing_ok=True)  # an earlier scoring's
    if samples:  # how today's parts spread about the thresholds
        _score_strips(np.zeros(len(samples), int), outputs, out_dir, dataset.name, detector,
                      groups={0: "parts scored"}, unreadable=len(dataset.skipped))
    for stale in (out_dir / "heatmaps").glob("[0-9][0-9][0-9][0-9][0-9]_*.png"):  # an earlier scoring's overlays
        stale.unlink()
    flagged = outputs["anomalous"].astype(bool)
    picked = {"flagged": np.flatnonzero(flagged), "all": np.arange(len(samples)), "none": np.arange(0)}[heatmaps]
    if len(picked):
        bar = tqdm(total=len(picked), desc="heat maps", unit="image", disable=not verbose)  # a PNG each
        drawn = 0
        try:
            if colour_range:  # the run's: a part looks the same whatever else the folder holds
                (vmin, vmax), scale_label = colour_range, "anomaly map (the run's colour scale)"
            else:  # a model without its run's record: one scale from parts spread over the whole folder
                vmin, vmax = colour_scale(maps_of(detector, samples, dataset.arrays, {}, colour_sample(len(samples)),
                                                  batch_size))
                scale_label = "anomaly map (scaled to this folder)"
            overlays = viz.PartOverlays(vmin, vmax, scale_label)
            for chunk, scored, images in rescored(detector, samples, dataset.arrays, picked, batch_size):
                for image, anomaly_map, i in zip(images, scored["anomaly_map"], chunk):
                    name = Path(samples[i].path).name
                    title = f"{'FLAGGED' if flagged[i] else 'passed'} {name}\nscore {outputs['score'][i]:.4g}"
                    overlays.write(image, anomaly_map, title, out_dir / "heatmaps" / f"{i:05d}_{Path(name).stem}.png")
                    bar.update()
                    drawn += 1
        except changed as err:  # the verdicts stand (scores.csv); an overlay needs the file read again
            warnings.warn(f"{dataset.name}: heat maps stopped after {drawn} of {len(picked)}: a file changed after "
                          f"it was scored ({tensorflow_message(err)})", stacklevel=2)
        bar.close()
    unreadable = len(dataset.skipped)
    summary = {"data": dataset.name, "n": len(samples) + unreadable, "n_flagged": int(flagged.sum()) + unreadable,
               "n_invalid": int(outputs["invalid"].sum()) + unreadable, "n_unreadable": unreadable,
               "working_point": detector.working_point,
               "threshold": float(detector.threshold) if detector.working_point else None,
               "heatmaps": int(len(picked)), "notes": list(dataset.notes), "machine": machine.description(),
               "date": machine.today()}
    write_json(out_dir / "score.json", summary)
    return summary


def _mask_notes(labels, masks, samples):
    """What the defective images' masks, as the pixel metrics see them (resized to the maps), say: inverted masks
    turn pixel AUROC upside down, and a mask that marks nothing (paired with the wrong image, or a defect smaller
    than a pixel at this size) adds no defect pixel. Either would otherwise pass into the figures without a word."""
    defective = labels == 1
    if not defective.any():  # MTD's reader sets has_masks before --skip-bad may drop every defect
        return []
    marked = masks[defective].reshape(int(defective.sum()), -1).mean(axis=1)
    paths = [s.mask_path for s in samples if s.label == 1]
    if np.median(marked) > 0.5:
        return [f"the masks mark most of their defective images' pixels (over half in the median image, e.g. "
                f"{paths[int(np.argmax(marked))]}): are they inverted? adtf reads a mask's bright pixels as the defect"]
    if (marked == 0).any():
        size = "x".join(str(n) for n in masks.shape[1:3])
        return [f"{int((marked == 0).sum())} of the {len(marked)} defective images' masks mark no pixel at the {size} "
                f"the maps are scored at (e.g. {paths[int(np.argmin(marked))]}): they add no defect pixel to the "
                "pixel metrics (an empty mask, or a defect too small for this size)"]
    return []


def thresholds_only(detector, dataset, out_dir, *, method=None, n_calibration=0, n_fit=None, calibration=None,
                    extra=None):
    """The record of a fit with no test images (normal images only): the calibrated working points.

    Writes ``metrics.json`` (every metric null) and a short ``report.md``; returns the dict.
    """
    calibration = calibration or _calibration_in_words(detector, n_calibration)
    results = {
        "method": method or type(detector).__name__, "dataset": dataset.name,
        "data_notes": list(getattr(dataset, "notes", [])),
        "image_auroc": None, "image_auroc_by_score": {}, "pixel_auroc": None, "aupro": None,
        "best_tpr": None, "best_tnr": None,
        "working_points": {name: {"threshold": p["value"], "score": p["score"], "rule": p["rule"],
                                  "tpr": None, "tnr": None, "auc": None} for name, p in detector.working_points.items()},
        "active_working_point": detector.working_point, "per_defect_image_auroc": {},
        "n_train": len(dataset.train) - n_calibration if n_fit is None else n_fit,
        "n_calibration": n_calibration or None,
        "n_test": 0, "n_test_anomalous": 0, "image_size": list(detector.image_size),
        "ms_per_image": None, "images_per_second": None, "calibration": calibration,
        "peak_rss_mb": machine.peak_rss_mb(), "machine": machine.description(), "date": machine.today(), **(extra or {}),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if results.get("history"):  # the loss curve says as much without test images
        results["plots"] = {"training": viz.training_curves(results["history"], out_dir / "training.png",
                                                            title=f"{results['method']} on {dataset.name}").name}
    write_json(out_dir / "metrics.json", results)
    lines = [f"# {results['method']} on {dataset.name}", "",
             f"Fitted on {results['n_train']} normal image{'s' * (results['n_train'] != 1)}; no test images, so nothing was evaluated "
             "(give anomalous images, e.g. `folder:DIR,anomalous=DIR`, to measure the detector).", "",
             f"Working points calibrated on {calibration}." + _notes_markdown(results), "",
             "| working point | rule | threshold |", "|---|---|---|"]
    lines += [f"| {name}{' (active)' if name == detector.working_point else ''} | {wp['rule']} | {threshold_text(wp['threshold'])} |"
              for name, wp in results["working_points"].items()]
    if results.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{k}]({v})" for k, v in results["plots"].items()]
    write_text(out_dir / "report.md", "\n".join(lines) + "\n")
    return results


def evaluated_points(detector):
    """The calibrated working points, and an explicit threshold where it is the active one (the one served)."""
    points = dict(detector.working_points)
    if detector.working_point and detector.working_point not in points:
        points[detector.working_point] = detector.postprocess.point(detector.postprocess.active_name)
    return points


def _score_strips(labels, image_scores, out_dir, title, detector, groups=None, unreadable=0):
    """The active working point's score, with the thresholds of every working point on that score."""
    points, active = evaluated_points(detector), detector.working_point
    name = points[active]["score"] if active in points else detector.score_names[0]
    lines = {point: (p["value"], point == active) for point, p in points.items() if p["score"] == name}
    return viz.score_strips(labels, image_scores[name], out_dir / "scores.png", score_name=name, title=title,
                            thresholds=lines, groups=groups, unreadable=unreadable).name


def _roc(labels, image_scores, out_dir, title, working_points, active):
    points = {name: (1 - wp["tnr"], wp["tpr"], name == active)
              for name, wp in working_points.items() if wp["tpr"] is not None and wp["tnr"] is not None}
    return viz.roc_curves(labels, image_scores, out_dir / "roc.png", title=title, points=points).name


def read_scores(path):
    """A ``scores.csv`` as ``_write_scores`` wrote it: ``{"header", "rows", "labels" [N], "scores" {name: [N]}}``
    (an invalid image's scores are +inf), or None where there is no such file or it is not one."""
    try:
        with open(path, newline="", encoding="utf-8") as file:
            header, *rows = list(csv.reader(file))
        score_columns = header[3:-2]  # path, label, defect | score, the other scores | verdict, invalid
        if header[:4] != ["path", "label", "defect", "score"] or header[-1] != "invalid" or not rows:
            return None
        labels = np.array([int(row[1]) for row in rows])
        # float32, as the model scored and compares them: "0.1017129" read as float64 is another number, and a test
        # score reused as a threshold (the factory threshold) would no longer tie with itself.
        scores = {name: np.array([row[3 + i] for row in rows], np.float32).astype(np.float64)
                  for i, name in enumerate(score_columns)}
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        return None
    return {"header": header, "rows": rows, "labels": labels, "scores": scores}


def refresh_working_points(out_dir, detector):
    """Make a run's evaluation (``metrics.json``, ``report.md``, ``scores.csv``, ``roc.png``, ``scores.png``) describe
    the detector's working points as they are now, from the scores that evaluation saved: no image is scored again. For a model
    whose working point moved after its evaluation (``adtf-export --save-model``), which the report would otherwise
    still describe at the old one. Returns False where the folder holds no evaluation of this kind."""
    out_dir = Path(out_dir)
    saved = read_scores(out_dir / "scores.csv")
    try:
        results = json.loads((out_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(results, dict):  # a metrics.json edited or written by something else
        return False
    points = evaluated_points(detector)
    if saved is None or any(point["score"] not in saved["scores"] for point in points.values()):
        return False
    header, rows, labels, scores = saved["header"], saved["rows"], saved["labels"], saved["scores"]
    results["working_points"] = thresholds.evaluate_working_points(points, labels, scores)
    results["active_working_point"] = detector.working_point
    active = points[detector.working_point]
    flagged = metrics.flagged(scores[active["score"]], active["value"])  # an invalid image's score is +inf
    results["flagged_by_defect"] = _flagged_by_defect([row[2] for row in rows], flagged)
    header[-2] = f"anomalous ({detector.working_point})"
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([header, *([*row[:-2], int(f), row[-1]] for row, f in zip(rows, flagged))])
    write_text(out_dir / "scores.csv", text.getvalue())
    image_scores = {name: scores[name] for name in detector.score_names if name in scores}
    if results.get("plots", {}).get("roc") and labels.min() == 0 and labels.max() == 1:
        _roc(labels, image_scores, out_dir, results["dataset"], results["working_points"], detector.working_point)
    if results.get("plots", {}).get("scores"):
        _score_strips(labels, image_scores, out_dir, results["dataset"], detector)
    if results.get("plots", {}).get("score_line") and "score" in scores:  # paper 001's Fig. 7, with the threshold
        viz.score_line(labels, scores["score"], detector.threshold, out_dir / results["plots"]["score_line"])
    write_json(out_dir / "metrics.json", results)
    write_text(out_dir / "report.md", report_markdown(results))
    return True


def _verdict_in_words(label, defect, flagged, judged=True):
    """A heat map's title: the truth and the verdict at the active working point, the errors in capitals."""
    truth = defect if label or str(defect).lower() == "good" else f"{defect} (good)"
    if not judged:  # no working point: the truth alone
        return truth
    return f"{truth}: " + (("caught" if flagged else "MISSED") if label else ("FALSE ALARM" if flagged else "passed"))


def _plots(detector, dataset, outputs, labels, image_scores, out_dir, batch_size, n_examples, working_points, colour):
    plots = {}
    if labels.min() == 0 and labels.max() == 1:
        plots["roc"] = _roc(labels, image_scores, out_dir, dataset.name, working_points, detector.working_point)
    plots["scores"] = _score_strips(labels, image_scores, out_dir, dataset.name, detector)
    order = np.argsort(outputs["score"])
    (vmin, vmax), scale_label = colour
    verdicts = (f"verdicts at working point {detector.working_point} (threshold {threshold_text(detector.threshold)} "
                f"on {evaluated_points(detector)[detector.working_point]['score']})" if detector.working_point else None)
    panels = [("most_anomalous", order[::-1][:n_examples])]
    if labels.min() == 0 and labels.max() == 1:  # what an inspector looks for first: the false alarms and the misses
        panels += [("good_scored_highest", order[labels[order] == 0][::-1][:n_examples]),
                   ("defective_scored_lowest", order[labels[order] == 1][:n_examples])]
    else:
        panels.append(("least_anomalous", order[:n_examples]))
    for kind, picked in panels:
        samples = [dataset.test[i] for i in picked]
        images, masks = viz.images_of(samples, dataset.arrays, detector.image_size, batch_size, with_masks=True)
        # The parent folder too: DAGM's Train/0280.PNG and Test/0280.PNG are two images, one good, one defective.
        titles = [f"{_verdict_in_words(labels[i], dataset.test[i].defect, outputs['anomalous'][i], bool(detector.working_point))}\n"
                  f"{'/'.join(Path(dataset.test[i].path).parts[-2:])} score {outputs['score'][i]:.3g}" for i in picked]
        masks = masks if dataset.has_masks else None
        plots[kind] = viz.heatmap_grid(images, maps_of(detector, dataset.test, dataset.arrays, outputs, picked,
                                                       batch_size, images),
                                       titles, out_dir / f"heatmaps_{kind}.png",
                                       masks=masks, vmin=vmin, vmax=vmax, scale_label=scale_label,
                                       note=verdicts).name
    return plots


def _calibration_in_words(detector, n_calibration):
    """What the report can say of the calibration images when its caller did not: the runner always says; from
    Python, only how many images ``calibrate`` saw (it said "the fitted normal images", false after a hold-out)."""
    seen = detector.fit_info.get("calibration_images")
    if n_calibration or not seen:
        return (f"{n_calibration} normal training images held out of the fit" if n_calibration else
                "normal images not recorded (a detector loaded from a file; its run's metrics.json says which)")
    return f"the {seen} normal images passed to calibrate (which ones, and whether the detector was fitted on them, " \
           "its caller knows)"


def _notes_markdown(results):
    """What the run warned about that the report must repeat: another scale than the fit's, what loading found."""
    return ((f" **Another scale**: {results['scale_note']}." if results.get("scale_note") else "")
            + "".join(f"\n\n**Data**: {note}" for note in results.get("data_notes", [])))


def _share(value):
    return "n/a" if value is None else f"{value:.0%}"


def _fmt(value, digits=3):
    return "n/a" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def threshold_text(value):
    """A threshold as the model keeps it (float32's shortest exact text): rounded, one that sits on a test score
    (the factory threshold) could read as above the defect it catches."""
    return "n/a" if value is None else str(np.float32(value))


def _setup_in_words(results):
    """The preset and the backbone's weights: a cut-down or random-weight run must not read as the method's."""
    options = results.get("options") or {}
    parts = [f"`{results['preset']}` preset"] if results.get("preset") else []
    if options.get("crop"):
        parts.append(f"the centre {options['crop'][0]}x{options['crop'][1]} of the input seen and scored")
    if options.get("backbone"):
        weights = options.get("weights", "imagenet")
        parts.append(f"backbone {options['backbone']} with " + (
            "**random weights** (no figure here is the method's)" if weights is None else
            "ImageNet weights" if weights == "imagenet" else f"weights from {weights}"))
    return f" Setup: {'; '.join(parts)}." if parts else ""


def report_markdown(results):
    """A short human-readable report of a ``metrics.json`` dict."""
    evaluated = results.get("evaluation_of")  # adtf-eval's report on other images than the fit's
    fitted = f"{'an unknown number of' if results['n_train'] is None else results['n_train']} normal training images"
    if evaluated:
        fitted = (f"The model {evaluated['model']}, fitted on {fitted}"
                  + (f" of {evaluated['fit_dataset']}" if evaluated.get("fit_dataset") else "") + ", evaluated on")
    lines = [f"# {'Evaluation of ' if evaluated else ''}{results['method']} on {results['dataset']}", "",
             f"{fitted}{' ' if evaluated else ', '}"
             f"{results['n_test']} test images "
             f"({results['n_test_anomalous']} anomalous), {results['image_size'][0]}x{results['image_size'][1]} input"
             + (f" ({results['image_size_rule']})" if results.get("image_size_rule") else "") + "; "
             f"{results['date']} on {results['machine']}." + _setup_in_words(results), "",
             f"Working points calibrated on {results.get('calibration') or 'normal images not recorded'}."
             + (f" {results['n_invalid']} test images were invalid (NaN/inf pixels, pixels outside [0, 1], or a "
                "score that is not finite) and count as anomalous."
                if results.get("n_invalid") else "")
             + _notes_markdown(results), "",
             "| metric | value |", "|---|---|"]
    missing = f"n/a ({results['pixel_metrics_missing']})" if results.get("pixel_metrics_missing") else None
    rows = [("image AUROC (score)", results["image_auroc"])]
    if len(results["image_auroc_by_score"]) > 1:  # a detector with one score has said it already
        rows += [(f"image AUROC ({k})", v) for k, v in results["image_auroc_by_score"].items()]
    rows += [("best TPR (max TPR+TNR)", results.get("best_tpr")), ("best TNR", results.get("best_tnr")),
             ("F1-max", results.get("f1_max")), ("FPR at 100% recall", results.get("fpr_at_full_recall")),
             ("factory threshold (catches every defect; a test-set figure, not a working point)",
              threshold_text(results.get("factory_threshold"))),
             ("pixel AUROC", results["pixel_auroc"] if results["pixel_auroc"] is not None else missing),
             ("AUPRO (FPR<=0.3)", results["aupro"] if results["aupro"] is not None else missing),
             ("ms per image", results["ms_per_image"]), ("images per second", results["images_per_second"]),
             ("peak RSS (MiB)", results["peak_rss_mb"])]
    if results.get("fit_seconds") is not None:  # the runner's; a detector evaluated on its own has none
        rows.append(("fit", f"{results['fit_seconds']:.0f} s" + (f", {results['epochs']} epoch{'s' * (results['epochs'] != 1)}" if results.get("epochs")
                                                                  else "")
                     + (f" (resumed at epoch {results['resumed_at_epoch']}; the time counts the epochs before too)"
                        if results.get("resumed_at_epoch") else "")))
    lines += [f"| {name} | {_fmt(value)} |" for name, value in rows]
    n_normal = results["n_test"] - results["n_test_anomalous"]
    if results["n_test"] and not (n_normal and results["n_test_anomalous"]):
        lines += ["", f"The test images are all {'anomalous' if n_normal == 0 else 'normal'}, so the image AUROC and "
                  f"the {'TNR' if n_normal == 0 else 'TPR'} are undefined"
                  + (f" ({HOLD_NORMALS_OUT})."
                     if n_normal == 0 else ".")]
    if results["working_points"]:
        lines += ["", "## Working points (thresholds from normal images only)", "",
                  "| working point | rule | threshold | TPR | TNR | AUC=(TPR+TNR)/2 (paper 000's Table II figure) |",
                  "|---|---|---|---|---|---|"]
        for name, wp in results["working_points"].items():
            active = " (active)" if name == results["active_working_point"] else ""
            lines.append(f"| {name}{active} | {wp['rule']} | {threshold_text(wp['threshold'])} | {_fmt(wp['tpr'])} | "
                         f"{_fmt(wp['tnr'])} | {_fmt(wp['auc'])} |")
    if results.get("report_lines"):
        lines += [""] + list(results["report_lines"])
    flagged = results.get("flagged_by_defect") or {}  # none without a working point, nor in a run from before it
    if results["per_defect_image_auroc"] or flagged:
        aurocs = results["per_defect_image_auroc"]
        lines += ["", "## Per defect type", "",
                  "| defect | image AUROC (vs. all normal test images) |"
                  + (f" flagged at {results['active_working_point']} |" if flagged else ""),
                  "|---|---|" + ("---|" if flagged else "")]
        lines += [f"| {k} | {_fmt(aurocs.get(k))} |" + (f" {_share(flagged.get(k))} |" if flagged else "")
                  for k in dict.fromkeys([*flagged, *aurocs])]
    if results.get("scores_file"):
        lines += ["", f"Every test image's scores and verdict at the active working point: [{results['scores_file']}]"
                      f"({results['scores_file']})."]
    if results.get("plots"):
        drawn_at = results.get("heatmaps_working_point")
        lines += ["", "## Plots", ""] + ([f"The heat maps' titles give the verdicts at {drawn_at}, the working point "
                                         "when they were drawn: an adtf-eval draws them at the active one.", ""]
                                        if drawn_at and drawn_at != results["active_working_point"] else [])
        lines += [f"![{k}]({v})" for k, v in results["plots"].items()]
    return "\n".join(lines) + "\n"
