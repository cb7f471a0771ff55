"""The one runner: load -> fit -> calibrate -> save -> export -> evaluate.

``adtf-fit``, ``adtf-bench``, the notebooks and the benchmarks all call
``fit_evaluate_export``; the CLI only parses. It names no method: whatever a detector
needs comes from its class (presets, default epochs, calibration fraction, report hooks).

Progress goes through ``logging`` (logger ``"adtf"``); ``configure_logging`` gives it a
handler that prints on the chief worker only, so a multi-worker run prints once.
"""
import dataclasses
import functools
import hashlib
import inspect
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from adtf.errors import AdtfError, DataError, raise_if_stopped

log = logging.getLogger("adtf")

# The main job (`adtf-fit` with no --method): the method that does best on the embedded default among
# those that finish in under 3 minutes on 2 CPU cores, at the preset that does (README, "Set up and run").
DEFAULT_METHOD = "simplenet"
MAIN_JOB_PRESET = "fast"
# The embedded default: a procedural texture at 256 px (at 128 px its small defects cover too few
# stride-8 feature cells: SimpleNet 0.81 there, 0.92 at 256; README, "SimpleNet results").
DEFAULT_DATA = "synthetic:weave,size=256"
DEFAULT_PRESET = "offline"  # the preset that runs offline on a CPU, where a method has one
# A schedule of more epochs than this, each of fewer steps than SHORT_EPOCH_STEPS, shows one bar over its epochs
# instead of Keras' two lines an epoch: min_steps raises a few-image fit to hundreds of one-step epochs.
ONE_BAR_BEYOND = 40
SHORT_EPOCH_STEPS = 8


def is_chief():
    """False only where ``TF_CONFIG`` names this process a non-chief task of a multi-worker run."""
    try:
        config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    except ValueError:
        return True
    task = config.get("task", {})
    kind, index = task.get("type"), int(task.get("index", 0))
    if kind in (None, "chief"):
        return True
    return kind == "worker" and index == 0 and "chief" not in config.get("cluster", {})


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now: a notebook, or a test's capture, may swap it between runs,
    and a handler holding the old one would write to a closed stream."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def configure_logging(verbose=True):
    """Print adtf's progress lines (INFO, or WARNING with ``verbose=False``) on the chief worker only."""
    if not any(getattr(h, "_adtf", False) for h in log.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.addFilter(lambda record: is_chief())
        handler._adtf = True
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(logging.INFO if verbose else logging.WARNING)


def _prints_progress_lines(run):
    """From Python, ``run``'s progress lines (the data's size, the input size chosen, a resume) show as adtf-fit
    shows them, for the call's duration only, where nobody has set up logging (the CLI or the caller, whose setup then
    decides, also after a call)."""
    @functools.wraps(run)
    def wrapper(*args, **kwargs):
        if logging.getLogger().handlers or log.handlers:
            return run(*args, **kwargs)
        configure_logging(kwargs.get("verbose", True))
        try:
            return run(*args, **kwargs)
        finally:
            for handler in list(log.handlers):
                log.removeHandler(handler)
            log.propagate, log.level = True, logging.NOTSET
    return wrapper


def _plots_of(metrics_file):
    """The plot files a run's ``metrics.json`` lists (none where it is absent or unreadable)."""
    try:
        plots = json.loads(metrics_file.read_text()).get("plots") or {}
    except (OSError, ValueError, AttributeError):
        return []
    return [name for name in plots.values() if isinstance(name, str) and "/" not in name and name.endswith(".png")]


def _few_to_calibrate_on(n, working_points=()):
    """Why N calibration scores are too few, or None: the largest of N normal scores passes about N/(N+1) of
    new normal images, under 95 % below 19."""
    if n < 19:
        scores = "the only normal score" if n == 1 else f"the largest of {n} normal scores"
        same = (" (fpr1_normal is that score too: a 1 % false-positive rate needs 100 normal scores to tell it from "
                "their largest)" if "fpr1_normal" in working_points else "")
        return f"{scores} passes about {n / (n + 1):.0%} of new normal images{same}"
    return None


def slug(text):
    """A folder-safe name for a dataset spec."""
    keep = "".join(c if c.isalnum() or c in "-_." else "-" for c in text.split("/")[-1] or text)
    return keep.strip("-.") or "data"


def resolve_preset(cls, preset):
    """The preset to build: the one named, else ``offline`` where the method has presets, else None."""
    if preset is not None or cls.Preset is None:
        return preset
    return DEFAULT_PRESET if DEFAULT_PRESET in {p.value for p in cls.Preset} else next(iter(cls.Preset)).value


def data_image_size(dataset, size_range, multiple=16):
    """The input size that follows the data: the median training image size, each side rounded to
    ``multiple`` and the longer side brought into ``size_range`` (aspect ratio kept), with the rule in words.

    Small defects need pixels (a DAGM texture resized from 512 to 256 loses its defects), so a
    preset that says ``image_size=None`` feeds images at their own size, up to the cost limit.
    """
    import numpy as np

    heights, widths = image_sizes(dataset, dataset.train)
    rule_shape = ""
    if not heights:
        raise DataError(f"{dataset.name}: no training image's size could be read to choose the input size from; "
                        "set it with --detector.image_size \"[H, W]\"")
    height, width = float(np.median(heights)), float(np.median(widths))
    # Medians taken side by side can give a shape no image has (8 photos at 1000x750, 7 at 640x480 and 2 portrait
    # ones at 300x900 gave 750x640, stretching every image): where most images share one aspect ratio, that ratio
    # at their median area. Tiles of many shapes (MTD's: 4 % within 2 % of the median ratio) keep the medians.
    sides = np.asarray([heights, widths], float)
    log_aspect = np.log(sides[0] / sides[1])
    shared = np.abs(log_aspect - np.median(log_aspect)) < 0.02
    if shared.mean() > 0.5:
        aspect = float(np.exp(np.median(log_aspect[shared])))
        area = float(np.median(sides[0][shared] * sides[1][shared]))
        height, width = (area * aspect) ** 0.5, (area / aspect) ** 0.5
        if not shared.all():
            rule_shape = f" (the median area of the {shared.sum()} of {len(shared)} sampled that share one aspect ratio)"
    low, high = size_range
    scale = min(1.0, high / max(height, width))
    scale = max(scale, low / max(height, width))
    size = tuple(max(multiple, int(round(side * scale / multiple)) * multiple) for side in (height, width))
    rule = (f"the training images' median size {height:.0f}x{width:.0f}{rule_shape}"
            + (f", scaled to fit {low}-{high} px" if scale != 1.0 else "") + f", rounded to multiples of {multiple}")
    warn_about_resizing(heights, widths, size, shorter_floor=low, notes=dataset.notes)
    return size, rule


def warn_about_resizing(heights, widths, size, shorter_floor=0, notes=None):
    """Say where feeding images of these sizes at ``size`` throws their pixels away (shrunk more than 2x, or a long
    strip whose shorter side falls below ``shorter_floor``) or stretches those of another shape, whoever chose it;
    each also goes into ``notes`` (the dataset's, which the report repeats)."""
    import numpy as np

    if not heights:
        return
    height, width = float(np.median(heights)), float(np.median(widths))
    shrink = max(height / size[0], width / size[1])
    said = []
    if shrink > 2 or shrink > 1 and min(size) < shorter_floor:  # MVTec's 1024 px fed at 512: the usual price
        said.append(f"the images ({height:.0f}x{width:.0f}, height x width, the median) are shrunk {shrink:.1f}x to "
                    f"{size[0]}x{size[1]}: defects a few pixels wide may vanish; crop the images into tiles, or feed "
                    f"them larger with --detector.image_size \"[H, W]\" (slower)")
    # Every image is resized to one size: one of another shape (portrait among landscape parts) is stretched.
    stretch = np.maximum(np.asarray(widths) / np.asarray(heights) * size[0] / size[1],
                         np.asarray(heights) / np.asarray(widths) * size[1] / size[0])
    if np.mean(stretch > 1.25) >= 0.1:
        said.append(f"{np.mean(stretch > 1.25):.0%} of the training images have another shape than the input "
                    f"size {size[0]}x{size[1]} and are stretched up to {stretch.max():.1f}x along one side: "
                    "a stretched part looks unlike the rest; crop or rotate them to one orientation if you can")
    # One image far from the others' scale (a thumbnail among photos) is a part unlike the rest, resized 20x: its
    # score can set max_normal, the working point that passes every good part.
    ratio = np.sqrt(np.asarray(heights, float) * np.asarray(widths, float) / (height * width))
    odd = (ratio > 3) | (ratio < 1 / 3)
    if odd.any() and odd.mean() < 0.1:
        extreme = int(np.argmax(np.abs(np.log(ratio))))
        said.append(f"{odd.sum()} of {len(ratio)} training images are at another scale than the rest (e.g. one of "
                    f"{heights[extreme]}x{widths[extreme]} among a median of {height:.0f}x{width:.0f}, height x width): "
                    f"resized to {size[0]}x{size[1]} with the others, such a part looks unlike them and its score moves the "
                    "working points; leave it out or crop it to the others' scale")
    for message in said:
        log.warning(f"      {message}")
        if notes is not None and message not in notes:
            notes.append(message)


def image_sizes(dataset, samples):
    """Heights and widths of ``samples`` of ``dataset`` (at most ~200 of them, read from the files' headers)."""
    import numpy as np
    from PIL import Image

    if dataset.arrays is not None:
        return [np.asarray(dataset.arrays).shape[1]], [np.asarray(dataset.arrays).shape[2]]
    sizes = []
    for sample in samples[:: max(1, len(samples) // 200)]:
        try:
            with Image.open(sample.path) as image:
                sizes.append(image.size)
        except (OSError, ValueError):  # a format TensorFlow reads and PIL does not: the other headers tell
            continue
    widths, heights = zip(*sizes) if sizes else ((), ())
    return list(heights), list(widths)


def median_image_size(dataset, samples):
    """``[height, width]``, the median of ``samples``' sizes (``image_sizes``), or None where none could be read."""
    import numpy as np

    heights, widths = image_sizes(dataset, samples)
    return [float(np.median(heights)), float(np.median(widths))] if heights else None


def scale_change(fitted_size, dataset, samples, input_size):
    """In words, how much larger or smaller than in the fit a part appears to the model when ``samples`` of
    ``dataset`` are resized to ``input_size`` while the fit's images were a median ``fitted_size``; None within
    25 %, or where the fit's size is not recorded."""
    images_size = median_image_size(dataset, samples) if fitted_size else None
    if not images_size:
        return None
    ratio = max(images_size) / max(fitted_size)
    if 0.8 <= ratio <= 1.25:
        return None
    return (f"these images are a median {images_size[0]:.0f}x{images_size[1]:.0f} px and those the model was fitted "
            f"on {fitted_size[0]:.0f}x{fitted_size[1]:.0f}, and both are resized to its {input_size[0]}x{input_size[1]} "
            "input. Where they frame the same field of view, the model sees the same parts at "
            f"{'more' if ratio > 1 else 'less'} detail; where they are crops or wider views at the fitted pixel "
            f"scale, every part appears {max(ratio, 1 / ratio):.1f}x {'smaller' if ratio > 1 else 'larger'} than in "
            "training, and the scores, working points included, may not carry over")


def gray_and_colour(dataset, samples):
    """``(grayscale paths, colour paths)`` among ``samples``, as ``load`` found their files (``dataset.gray``; an
    in-memory sample is in neither)."""
    known = [s.path for s in samples if s.path in dataset.gray]
    return [path for path in known if dataset.gray[path]], [path for path in known if not dataset.gray[path]]


def kinds_mixed(gray, colour, among="these {} images"):
    """``"2 of these 5 images are grayscale and the others colour (e.g. A and B)"``: a mix of the two kinds in words
    (``among``: the images, with a slot for their count)."""
    return (f"{len(gray)} of {among.format(len(gray) + len(colour))} {'is' if len(gray) == 1 else 'are'} grayscale "
            f"and the others colour (e.g. {gray[0]} and {colour[0]})")


def colour_kind(dataset, samples):
    """``"grayscale"``, ``"colour"`` or ``"mixed"``: what ``samples`` of ``dataset`` hold (``gray_and_colour``);
    None where no file of theirs was checked (in-memory sets)."""
    gray, colour = gray_and_colour(dataset, samples)
    return "mixed" if gray and colour else "grayscale" if gray else "colour" if colour else None


def colour_change(fitted_colour, dataset, samples):
    """In words, which of ``samples`` the model may flag for their colour alone (a grayscale image is fed as three
    equal channels: a model fitted on colour parts sees a change of colour): those of the other kind than every
    fitted image, or, where the fit's kind is not recorded (a run from before it was, a model file alone), a mix of
    the two kinds among them; None otherwise (a fit on both kinds, ``"mixed"``, saw both)."""
    gray, colour = gray_and_colour(dataset, samples)
    if fitted_colour is None and gray and colour:
        return (f"{kinds_mixed(gray, colour)}, and which kind the model was fitted on is not recorded: a grayscale "
                "image is fed as three equal channels, so those of the kind it was not fitted on may be flagged for "
                "that alone")
    if fitted_colour not in ("grayscale", "colour"):
        return None
    other = colour if fitted_colour == "grayscale" else gray
    if not other:
        return None
    kind = "colour" if fitted_colour == "grayscale" else "grayscale"
    which = (f"this image is {kind} ({other[0]})" if len(samples) == 1 else
             f"all {len(other)} of these images are {kind} (e.g. {other[0]})" if len(other) == len(samples) else
             f"{len(other)} of these {len(samples)} images {'is' if len(other) == 1 else 'are'} {kind} (e.g. {other[0]})")
    return (f"{which} while every image the model was fitted on is {fitted_colour}: a grayscale image is fed as three "
            "equal channels, so the model sees a change of colour it never saw, and may flag a part for that alone; "
            f"give it {fitted_colour} images, as it was fitted on")


def check_calibration_options(fraction, folds):
    """Refuse a calibration fraction or fold count no data makes valid, before the data loads (a large set takes
    minutes); whether the folds fit the images' count is checked once they are read."""
    if fraction is not None and not 0 <= fraction < 1:
        raise AdtfError(f"--calibration-fraction is the share of normal images held out, in [0, 1); got {fraction:g}")
    if folds and folds < 2:
        raise AdtfError(f"--calibration-folds must be 2 or more (0: no cross-fitting), got {folds}")
    if folds and fraction:
        raise AdtfError("give either --calibration-fraction (a hold-out) or --calibration-folds (cross-fitting)")


def calibration_split(samples, fraction, seed):
    """``(fit, calibration)`` normal samples; calibration is empty for ``fraction == 0``."""
    from adtf.data import split_off

    fit, calibration = split_off(samples, fraction, seed, what="normal training images")
    if fraction and not fit:
        raise DataError(f"only {len(samples)} normal training image{'s' * (len(samples) != 1)}: holding {len(calibration)} out for "
                        "calibration leaves none to fit on; give more normal images or a calibration fraction of 0")
    return fit, calibration


def load_dataset(spec, *, seed=0, skip_bad=False, n_train=None, progress=True):
    """``adtf.data.load`` as the runner calls it: ``n_train`` (``--n-train``) only where the kind takes it."""
    from adtf import data as adtf_data
    from adtf.data.sources import spec_options

    if n_train is not None:
        kind = adtf_data.parse_spec(spec)[0]
        if "n_train" not in spec_options(kind):
            raise AdtfError(f"--n-train: a {kind.value} dataset has no n_train option (dagm and synthetic do); "
                            "fit on fewer images with folder:DIR of those images")
    return adtf_data.load(spec, seed=seed, skip_bad=skip_bad, progress=progress,
                          **({"n_train": n_train} if n_train is not None else {}))


@_prints_progress_lines
def fit_evaluate_export(method=DEFAULT_METHOD, data=DEFAULT_DATA, preset=None, out=None, *, detector=None,
                        fit=None, compile=None, calibration_fraction=None, calibration_folds=0, batch_size=16,
                        seed=0, n_train=None, skip_bad=False, export=True, pixel_metrics=True, monitor_every=0,
                        tensorboard=False, verbose=True, callbacks=(), command=None, spec=None):
    """Fit a detector on a dataset's normal images, calibrate, save, export and evaluate it.

    Args:
        method: a name in ``adtf.detectors.REGISTRY``.
        data: a dataset spec (``adtf.data.load``), or an already loaded ``AnomalyDataset``.
        preset: the method's preset (default ``offline`` where it has one).
        out: run folder (default ``runs/<method>-<dataset>``).
        detector: options for the detector's ``__init__``; they override the preset's.
        fit: options for ``Detector.fit`` (``epochs``, ``batch_size``).
        compile: options for the method's ``compile`` (learning rates, weight decay...).
        calibration_fraction: normal training images held out of the fit to calibrate the working
            points on (default: the method's ``calibration_fraction``: 0.2 for trained methods,
            0 for MoN, whose paper calibrates on the fitted images). At least one image.
        calibration_folds: K >= 2 for cross-fitted calibration instead of a hold-out: K more detectors,
            each fitted without one K-th of the normal training images, score that K-th, and the working
            points come from all N out-of-fold scores; the detector itself is fitted on all N. For small
            sets, where a hold-out leaves few scores (the largest of N passes about N/(N+1) of new normals),
            at the price of K more fits. 0: off.
        batch_size: batch size of the data pipelines (training may rebatch: ``fit.batch_size``).
        seed: seed of the data splits, of Keras' initialisers and of the detector.
        n_train: normal images to fit on where the dataset's protocol takes it (DAGM: 500).
        skip_bad: leave unreadable images out with a warning instead of stopping.
        export: write the SavedModel.
        pixel_metrics: False skips the evaluation's pixel AUROC and AUPRO (``evaluate``'s ``pixel_metrics``).
        monitor_every: every this many epochs, log the test AUROC (monitoring only: never used to
            select an epoch; the last epoch is what is saved and reported). 0: off.
        tensorboard: write TensorBoard logs to ``<out>/tensorboard``: the training losses and, for a
            detector with ``reconstruct`` (the autoencoders), its reconstructions of up to four normal
            and four anomalous test images after every epoch.
        verbose: progress bars, and the runner's progress lines on stderr (the ``adtf`` logger's INFO; where the
            caller has set up logging, it decides instead).
        callbacks: more Keras callbacks for the gradient fit.
        command: the command line to record in the run folder.
        spec: the ``--data`` spec to record in ``run.json`` where ``data`` is a loaded dataset (a bench's).

    Returns:
        The ``metrics.json`` dict.

    Example:
    >>> results = fit_evaluate_export("mon", "mvtec:mvtec_bottle", out="runs/bottle")
    >>> results["image_auroc"]
    """
    import keras

    from adtf import data as adtf_data
    from adtf.atomic import atomic_path, write_json, write_text
    from adtf.callbacks import EpochProgress, ReconstructionImages, ResumableBackup, Timing, ValidationAUROC
    from adtf.detectors import detector_class
    from adtf.evaluate import HOLD_NORMALS_OUT, evaluate, thresholds_only, warn_if_pixel_metrics_outgrow_memory

    cls = detector_class(method)
    check_calibration_options(calibration_fraction, calibration_folds)
    started = time.perf_counter()
    keras.utils.set_random_seed(seed)
    if isinstance(data, str):
        log.info(f"[1/5] loading {data}")
        dataset = load_dataset(data, seed=seed, skip_bad=skip_bad, n_train=n_train, progress=verbose)
    else:  # its notes are this run's to add to: a dataset shared by several runs (a bench) keeps its own
        dataset = dataclasses.replace(data, notes=list(data.notes))
    log.info(f"      {len(dataset.train)} normal training images, {len(dataset.test)} test images")
    if dataset.test and all(sample.label for sample in dataset.test):  # said now, not only in the report after the fit
        log.warning("      every test image is defective: the image AUROC and the working points' TNR need good test "
                    f"images too ({HOLD_NORMALS_OUT})")
    preset = resolve_preset(cls, preset)
    options = {**(cls.preset_options(preset) if preset else {}), **(detector or {})}
    options.setdefault("seed", seed)
    # Said, since a --config file written for another preset (--print_config) carries that preset's values, which
    # win over the preset named: `--config fast.yaml --preset offline` trains fast's epochs.
    given = options_given(cls, preset, detector)
    if given:
        log.info(f"      options that differ from {f'the {preset} preset' if preset else 'the defaults'}: "
                 + ", ".join(f"{key} {value!r} (not {default!r})" for key, (value, default) in given.items()))
    size_rule = "set by the preset or the user"
    if "image_size" in options and options["image_size"] is None and cls.image_size_range:
        options["image_size"], size_rule = data_image_size(dataset, cls.image_size_range,
                                                               cls.image_size_multiple)
        log.info(f"      input size {options['image_size'][0]}x{options['image_size'][1]}: {size_rule}")
    try:
        model = cls(**options)
    except (ValueError, TypeError) as err:  # an option Keras refuses (--detector.hidden -3): one line, no traceback
        named = ", ".join(f"{key}={value!r}" for key, (value, _) in given.items())
        raise AdtfError(f"{method} cannot be built with {named or 'these options'}: {err}") from None
    size = model.image_size
    if pixel_metrics and dataset.has_masks and dataset.test:  # before the fit, not only once it is done
        warn_if_pixel_metrics_outgrow_memory(len(dataset.test), size, stacklevel=2)
    if size_rule == "set by the preset or the user":
        warn_about_resizing(*image_sizes(dataset, dataset.train), size, notes=dataset.notes)
    fraction = cls.calibration_fraction if calibration_fraction is None else calibration_fraction
    if calibration_folds:
        if not 2 <= calibration_folds <= len(dataset.train):
            raise DataError(f"--calibration-folds must be between 2 and the {len(dataset.train)} normal training "
                            f"images, got {calibration_folds}")
        fraction = 0.0
    fit_samples, calibration_samples = calibration_split(dataset.train, fraction, seed)
    fit_colour = colour_kind(dataset, fit_samples)
    if fit_colour == "mixed":
        colour_note = (f"{kinds_mixed(*gray_and_colour(dataset, fit_samples), 'the {} images the model is fitted on')}"
                       ": a grayscale image is fed as three equal channels, which a model fitted on colour parts sees "
                       "as a change of colour. Give one kind, or convert them all to grayscale")
    else:
        colour_note = colour_change(fit_colour, dataset, dataset.test)
        colour_note = colour_note and f"the test images: {colour_note}"
    if colour_note:  # said now and in the report
        log.warning(f"      {colour_note}")
        dataset.notes.append(colour_note)
    # The advice where few images calibrate (cross-fitting needs two images or more).
    cross_fit = f"--calibration-folds {min(5, len(dataset.train))}" if len(dataset.train) > 1 else "more normal images"

    def pipeline(samples, **kwargs):
        return adtf_data.pipeline(samples, arrays=dataset.arrays, image_size=size, batch_size=batch_size, **kwargs)

    def fit_progress(epochs, n_images):
        """``(Keras' verbosity, callbacks)`` of a fit: Keras' live bar on a terminal and a line per epoch in a log
        file, or one bar over the epochs (``EpochProgress``) where they are many and short."""
        if not verbose or not epochs:
            return 0, []
        batch = fit_given.get("batch_size") or getattr(model, "batch_size", None) or model.default_batch_size
        steps = getattr(model, "steps_per_epoch", None) or -(-n_images // int(batch or batch_size))
        if epochs > ONE_BAR_BEYOND and steps < SHORT_EPOCH_STEPS:
            return 0, [EpochProgress(epochs)]
        return (1 if sys.stdout.isatty() else 2), []

    keep_both = "give another --out to keep both" if out else "give --out to keep both"
    out = Path(out or Path("runs") / f"{method}-{slug(dataset.name)}")
    check_output_folder(out, dataset)
    claim = claim_run_folder(out)
    fit_given = {k: v for k, v in (fit or {}).items() if v is not None}  # the cross-fitted folds get these too
    epochs, fit_options = _epochs_and_options(model, len(fit_samples), fit_given)
    # The fit's images by their paths, not the dataset's name alone: two folders both called "train" share a name
    # (and a default run folder), and so do two sizes or splits of one dataset.
    fit_images = images_digest(fit_samples)
    # The test set too: `folder:ok` and `folder:ok,anomalous=ng` share a name and a default run folder.
    test_images = images_digest(dataset.test, labels=True)
    # Every setting that changes the model: --fit.* and --compile.* too (two epoch counts are two runs).
    run_record = {"method": method, "data": dataset.name, "fit_images": fit_images, "test_images": test_images,
                  "preset": preset, "options": _jsonable(options), "epochs": epochs, "fit": _jsonable(fit_options),
                  "compile": _jsonable(compile or {}), "calibration_fraction": fraction,
                  "calibration_folds": calibration_folds}  # the seed: in options, and in the fit images' split
    changed = replaced_settings(out / "run.json", run_record)
    if changed:
        log.warning(f"      {out} holds a finished run with other settings ({', '.join(changed)} differ): this run "
                    f"replaces its outputs once the fit ends; {keep_both}")
    elif changed is not None:
        log.info(f"      {out} holds a finished run of these settings: it is fitted again and replaced "
                 "(adtf-eval and adtf-export use a finished run without fitting)")
    raised = "epochs" not in fit_given and epochs > getattr(model, "epochs", epochs)
    log.info(f"[2/5] fitting {method} ({preset or 'default'} preset) at {size[0]}x{size[1]} on {len(fit_samples)} "
             "normal images" + (f" (the other {len(calibration_samples)} are held out to calibrate)"
                                if calibration_samples and not calibration_folds else "")
             + (f", {epochs} epoch{'s' * (epochs != 1)}" if epochs else "")
             + (f" (not {model.epochs}: raised so that so few images still train {model.min_steps} steps; "
                "--fit.epochs sets them)" if raised and getattr(model, "min_steps", 0) else ""))
    fit_callbacks = list(callbacks)
    keras_verbose, progress_callbacks = fit_progress(epochs, len(fit_samples))
    if epochs:
        # A killed run resumes from here when the same command runs again; removed once the run ends.
        _check_backup(out / "backup", {"method": method, "data": dataset.name, "fit_images": fit_images,
                                       "options": _jsonable(options),
                                       "epochs": epochs, "fit": _jsonable(fit_options), "compile": compile or {},
                                       "calibration_fraction": fraction, "calibration_folds": calibration_folds,
                                       "seed": seed})
        # Kept after the fit (delete_checkpoint=False) and removed below once the run is done:
        # a run killed before that resumes at its last saved epoch (at most 30 s of training back), to the state an
        # uninterrupted fit reaches, wherever the kill falls (ResumableBackup).
        backup = ResumableBackup(out / "backup", delete_checkpoint=False)
        fit_callbacks = [Timing(), *fit_callbacks]
        if monitor_every and dataset.test and len({s.label for s in dataset.test}) == 2:
            fit_callbacks.append(ValidationAUROC(pipeline(dataset.test), every=monitor_every, pixel=False))
        if tensorboard:
            fit_callbacks.append(keras.callbacks.TensorBoard(str(out / "tensorboard")))
            if hasattr(model, "reconstruct") and dataset.test:
                fit_callbacks.append(ReconstructionImages(_examples(dataset, size), out / "tensorboard"))
        if compile:
            model.compile(**compile)
        fit_callbacks += progress_callbacks
        fit_callbacks.append(backup)  # last: it records each epoch's logs as the callbacks before it left them
    elif monitor_every or tensorboard:
        log.warning(f"      {method} trains no epochs (one pass of statistics): --monitor-every and --tensorboard "
                    "have nothing to log")
    fit_started = time.perf_counter()
    history = model.fit(pipeline(fit_samples), epochs=epochs, callbacks=fit_callbacks, verbose=keras_verbose,
                        progress=verbose, **fit_options)
    fit_seconds = time.perf_counter() - fit_started
    if epochs and backup.resumed_at_epoch:  # the whole fit's training time, not only this run's share of it
        log.info(f"      resumed at epoch {backup.resumed_at_epoch} of {epochs}: {fit_seconds:.0f} s of fit here, "
                 f"{backup.seconds_before_resume:.0f} s before")
        fit_seconds += backup.seconds_before_resume
    if calibration_folds:
        calibration = (f"all {len(fit_samples)} normal training images, each scored by one of {calibration_folds} "
                       f"detectors fitted without its fold (cross-fitting, seed {seed}; folds in "
                       "calibration_images.txt); the reported detector is fitted on all of them")
        log.info(f"[3/5] calibrating working points by {calibration_folds}-fold cross-fitting "
                 f"({calibration_folds} more fits)")
        outputs, folds = _cross_fitted_outputs(cls, options, compile, fit_samples, calibration_folds, seed,
                                               pipeline, out / "calibration_folds", fit_given, verbose,
                                               fit_progress)
        model.calibrate_on_outputs(outputs)
        few = _few_to_calibrate_on(len(fit_samples), model.working_point_names)
        if few:
            calibration += (f". **Few images to calibrate on**: {few}; add normal images, or move the threshold "
                            "later (`adtf-export --threshold`)")
            log.warning(f"      few images to calibrate on: {few}")
        calibration_list = "".join(f"{fold}\t{fit_samples[i].path}\n" for fold, index in enumerate(folds)
                                   for i in index)
    elif calibration_samples:
        held_out = len(calibration_samples)
        images = "image" if held_out == 1 else "images"
        calibration = (f"{held_out} normal training {images} held out of the fit "
                       f"(fraction {fraction:g}, seed {seed}; listed in calibration_images.txt)")
        log.info(f"[3/5] calibrating working points on {held_out} held-out normal {images}")
        few = _few_to_calibrate_on(held_out, model.working_point_names)
        if few:
            calibration += (f". **Few images to calibrate on**: {few}; calibrate on all of them by cross-fitting "
                            f"(`{cross_fit}`), hold more out (`--calibration-fraction`) or move the "
                            "threshold later (`adtf-export --threshold`)")
            log.warning(f"      few images to calibrate on: {few} (cross-fit with {cross_fit}, or hold more "
                        "out with --calibration-fraction)")
        model.calibrate(pipeline(calibration_samples), verbose=verbose)
        calibration_list = "".join(f"{s.path}\n" for s in calibration_samples)
    else:
        calibration_list = None
        calibration = f"the {len(fit_samples)} normal images the detector was fitted on"
        log.info("[3/5] calibrating working points on the normal images the detector was fitted on")
        if cls.calibration_fraction > 0:  # the method's own protocol holds images out: fitted images score too low
            calibration += (", since none was held out. **These working points are too low after a full "
                            "fit**: training pushes the fitted images' scores below those of new normal images, so "
                            "they flag most good parts. "
                            f"Cross-fit (`{cross_fit}`), hold normal images out (`--calibration-fraction`) "
                            "or set a threshold with `adtf-export`")
            log.warning("      none was held out: training pushes these images' scores down, so after a full fit the "
                        f"working points flag most good parts (cross-fit with {cross_fit}, or hold images "
                        "out with --calibration-fraction)")
        else:
            calibration += " (paper 000's protocol)"
            few = _few_to_calibrate_on(len(fit_samples), model.working_point_names)
            if few:  # and fitted images score lower than new ones: one image's own score is MoN's zero distance
                calibration += (f". **Few images to calibrate on**: {few}, and less, since they are the fitted "
                                f"images; cross-fit (`{cross_fit}`) or move the threshold later (`adtf-export --threshold`)")
                log.warning(f"      few images to calibrate on: {few}, and less, since they are the fitted images "
                            f"(cross-fit with {cross_fit})")
        model.calibrate(pipeline(fit_samples), verbose=verbose)
    # The fitted, calibrated model is saved before the evaluation, and the backup is removed only once the run is
    # done: a run that fails or is killed while evaluating or exporting keeps its fit (model.keras, for adtf-eval and
    # adtf-export), and the same command run again resumes after the last epoch instead of fitting anew.
    # What an earlier run in this folder wrote no longer describes this model; a SavedModel left beside it would
    # be deployed with the old weights. Removed before the new model is saved, run.json (written last: the run is
    # finished) first, so that a run killed from here on never leaves one model beside another's records.
    (out / "run.json").unlink(missing_ok=True)
    shutil.rmtree(out / "saved_model", ignore_errors=True)
    for stale in (*_plots_of(out / "metrics.json"), "metrics.json", "report.md", "scores.csv", "command.txt"):
        (out / stale).unlink(missing_ok=True)
    for pattern, record, what in (("eval-*/", "metrics.json", "an evaluation"), ("score-*/", "score.json", "verdicts")):
        for folder in sorted(out.glob(pattern)):  # adtf-eval's reports and adtf-score's verdicts of the previous model
            if (folder / record).exists():
                log.info(f"      removing {folder.name}/: {what} of the model this fit replaces")
                shutil.rmtree(folder, ignore_errors=True)
    for exported in sorted(out.glob("saved_model-*/")):  # adtf-export's other working points of the previous model
        if (exported / "assets.extra" / "adtf.json").exists():
            log.info(f"      removing {exported.name}/: exported from the model this fit replaces")
            shutil.rmtree(exported, ignore_errors=True)
    log.info("      saving the Keras model")
    with atomic_path(out / "model.keras", suffix=".keras") as tmp:
        model.save(tmp)
    if calibration_list is None:
        (out / "calibration_images.txt").unlink(missing_ok=True)
    else:
        write_text(out / "calibration_images.txt", calibration_list)
    shutil.rmtree(out / "calibration_folds", ignore_errors=True)  # cross-fitting's folds, now in the model
    # Which files the detector was fitted on, so that adtf-eval can say when it is given them as test images.
    fitted_files = [os.path.realpath(s.path) for s in fit_samples if s.index is None]
    if fitted_files:
        write_text(out / "fit_images.txt", "".join(f"{path}\n" for path in fitted_files))
    else:  # in-memory arrays (MNIST, CIFAR): no files to list
        (out / "fit_images.txt").unlink(missing_ok=True)
    extra = {"preset": preset, "options": _jsonable(options), "image_size_rule": size_rule,
             "data_seed": dataset.seed,  # the split's or draw's: adtf-eval draws the same test images again
             "fit_median_size": median_image_size(dataset, fit_samples),
             "fit_colour": fit_colour, "epochs": epochs,
             "fit": _jsonable(fit_options), "compile": _jsonable(compile or {}),  # what options.epochs etc. do not say
             "fit_seconds": fit_seconds, "resumed_at_epoch": backup.resumed_at_epoch if epochs else 0,
             "fit_info": dict(model.fit_info),
             # The backup's record has the epochs before a resume too; History only those run since.
             "history": backup.history if epochs else {k: [float(v) for v in vs] for k, vs in history.history.items()}}
    if export:  # before the evaluation, so that metrics.json and report.md appear when the run is whole, and
        log.info("[4/5] exporting the SavedModel")  # their peak memory is the whole run's (tracing the graphs too)
        model.export(out / "saved_model")
    log.info(f"[5/5] evaluating on {len(dataset.test)} test images -> {out}")
    common = dict(method=method, n_calibration=len(fit_samples) if calibration_folds else len(calibration_samples),
                  n_fit=len(fit_samples), calibration=calibration, extra=extra)
    if dataset.test:
        results = evaluate(model, dataset, out, batch_size=batch_size, verbose=verbose, pixel_metrics=pixel_metrics,
                           **common)
    else:
        log.info("      no test images: evaluation skipped (only the working points are written)")
        results = thresholds_only(model, dataset, out, **common)
    if command:
        write_text(out / "command.txt", command + "\n")
    raise_if_stopped()  # a Ctrl-C or SIGTERM that a finalizer dropped: the run is not whole, so no run.json
    # The spec as given (`dataset.name` leaves a spec's options out: weave at 128 and at 256 px share it); not
    # compared by replaced_settings, since the images' digests already say whether the data differ.
    write_json(out / "run.json", {**run_record, "spec": data if isinstance(data, str) else spec,
                                  "seconds": time.perf_counter() - started})
    # The fit's own checkpoints, or an interrupted trained fit's (its run_config.json): a user's backup/ stays.
    if epochs or (out / "backup" / "run_config.json").is_file():
        shutil.rmtree(out / "backup", ignore_errors=True)
    if claim:
        claim.unlink(missing_ok=True)
    results.update(seconds=time.perf_counter() - started, run_dir=str(out))
    return results


def _epochs_and_options(model, n_images, fit_given):
    """The epochs a fit of ``model`` on ``n_images`` trains (the user's, else the method's schedule for that many
    images) and the other ``fit`` options."""
    options = dict(fit_given)
    return int(options.pop("epochs", model.epochs_for(n_images, options.get("batch_size")))), options


def _cross_fitted_outputs(cls, options, compile, samples, n_folds, seed, pipeline, folder, fit_options, verbose,
                          fit_progress=None):
    """Out-of-fold outputs of every sample (in fold order) and the folds' sample indices: fold j is scored by
    a detector fitted on the other folds. Each fold's outputs are saved to ``folder`` as they finish, so a
    killed run that is started again with the same settings fits only the folds still missing. ``fit_progress``:
    ``(epochs, n_images) -> (Keras' verbosity, callbacks)`` for each fold's fit, as for the main fit (None: quiet)."""
    import numpy as np

    from adtf.atomic import atomic_path, write_text

    folds = np.array_split(np.random.default_rng(seed).permutation(len(samples)), n_folds)
    settings = json.dumps({"options": _jsonable(options), "compile": compile or {}, "fit": fit_options,
                           "folds": n_folds, "seed": seed,
                           "samples": [str(sample.path or sample.index) for sample in samples]},
                          sort_keys=True, default=str)
    if (folder / "settings.json").is_file() and (folder / "settings.json").read_text() != settings:
        shutil.rmtree(folder)  # folds of a run with other settings: never mixed with these
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / "settings.json", settings)
    parts = []
    for j, index in enumerate(folds):
        path = folder / f"fold{j}_of_{n_folds}_seed{seed}.npz"
        if not path.is_file():
            rest = [samples[i] for i in np.setdiff1d(np.arange(len(samples)), index)]
            log.info(f"      fold {j + 1}/{n_folds}: fitting on {len(rest)} images, scoring {len(index)}")
            fold_model = cls(**options)
            if compile:
                fold_model.compile(**compile)
            epochs, options_less_epochs = _epochs_and_options(fold_model, len(rest), fit_options)
            keras_verbose, callbacks = fit_progress(epochs, len(rest)) if fit_progress else (0, [])
            fold_model.fit(pipeline(rest), epochs=epochs, verbose=keras_verbose, progress=verbose, callbacks=callbacks,
                           **options_less_epochs)  # shown as the main fit is
            outputs = fold_model.score_dataset(pipeline([samples[i] for i in index]), verbose=verbose,
                                               keep_maps=False, keep_masks=False, desc=f"scoring fold {j + 1}")
            with atomic_path(path) as tmp:
                np.savez(tmp, **{key: value for key, value in outputs.items() if value.dtype != object})
        with np.load(path, allow_pickle=False) as saved:
            parts.append(dict(saved))
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}, folds


def _examples(dataset, size, n=4):
    """``{"normal": [n, H, W, 3], "anomalous": ...}``: the first test images of each kind, for TensorBoard."""
    from adtf.viz import images_of

    kinds = {"normal": [s for s in dataset.test if not s.label][:n], "anomalous": [s for s in dataset.test if s.label][:n]}
    return {kind: images_of(samples, dataset.arrays, size) for kind, samples in kinds.items() if samples}


def images_digest(samples, labels=False):
    """A short digest of which images (and with ``labels``, under which labels) a set holds: two sets that share a
    name (two folders called "train", one dataset at two sizes or splits) differ here."""
    lines = (f"{s.label} {s.path}" if labels else s.path for s in samples)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def replaced_settings(record_file, record):
    """The keys whose values differ between ``record`` and the one a finished run or evaluation left in
    ``record_file`` (sorted; empty: the same settings), or None where there is none. Said before the work starts,
    while it can still be stopped: default output folders are named after the method and the dataset's name alone,
    so another size, split or test set of the same data replaces the outputs there."""
    try:
        previous = json.loads(Path(record_file).read_text())
    except (OSError, ValueError):
        return None
    current = json.loads(json.dumps(record))
    return sorted(key for key in current if key in previous and previous[key] != current[key])


def check_output_folder(out, dataset=None, command=None):
    """Create the run folder and make sure a file can be written there, before any work: a read-only or misnamed
    ``--out`` once failed only when the fitted model was saved. A folder the dataset reads images from is refused:
    the run's plots would be read as images by the next run, and so is a folder whose own metrics.json, scores.csv or
    report.md the run would replace. ``command`` (adtf-eval, adtf-score) writes a report
    beside a run, never into one: its metrics.json, report and scores.csv would replace the run's own."""
    from adtf.paths import run_files

    if command and out.is_dir() and run_files(out):
        raise AdtfError(f"--out {out} is a run folder ({', '.join(run_files(out))}): {command}'s report would "
                        "replace the run's own metrics.json, report.md and scores.csv; give a new folder, or leave "
                        "out --out to write one inside the run")

    read = {os.path.realpath(os.path.dirname(s.path)) for s in (dataset.train + dataset.test if dataset else [])
            if s.index is None}
    where = os.path.realpath(out)
    if any(where == folder or where.startswith(folder + os.sep) for folder in read):
        raise AdtfError(f"--out {out} is in a folder the dataset's images are read from: the run's plots would be "
                        "read as images the next time; choose another --out")
    if out.exists() and not out.is_dir():
        raise AdtfError(f"--out {out} is a file; a run writes a folder")
    if out.is_dir():  # another set's image folder: the only images adtf writes there are its own plots
        from adtf.data.layouts import LISTED_SUFFIXES

        # the first other image settles it (a data folder may hold thousands)
        foreign = next((p.name for p in out.iterdir() if p.suffix.lower() in LISTED_SUFFIXES and not _drawn_by_adtf(p)),
                       None)
        if foreign:
            raise AdtfError(f"--out {out} holds images that adtf did not draw (e.g. {foreign}): a data folder? The "
                            "plots written there would be read as images by the next run on it; choose another --out")
        replaced = _replaced_files_of_others(out) + ([] if command else _replaced_outputs_of_others(out))
        if replaced:
            raise AdtfError(f"--out {out} holds {', '.join(replaced)}, which adtf did not write: "
                            f"{command or 'the run'} would replace {'it' if len(replaced) == 1 else 'them'}; choose "
                            "another --out")
    ensure_writable(out)


def ensure_writable(folder, what="--out"):
    """Create ``folder`` and write a file there, before any work: a read-only folder once failed only when the work
    was done, naming a hidden temporary path."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        raise AdtfError(f"{what} {folder}: cannot write there ({err.strerror})") from None


RUN_CLAIM = ".adtf-fit.pid"  # the process writing a run folder


def _replaced_files_of_others(out):
    """The files every adtf report writes (metrics.json, scores.csv, report.md) that ``out`` holds while nothing in
    it is adtf's: a user's own folder, whose files a run would silently replace. adtf's own folders are known by a
    run's files, an evaluation's record, a metrics.json or scores.csv in adtf's format or a plot adtf drew (a report
    interrupted before its records were written is written again)."""
    import json

    from adtf.paths import run_files

    replaced = [name for name in ("metrics.json", "scores.csv", "report.md") if (out / name).exists()]
    if not replaced or run_files(out) or (out / "eval.json").is_file() or (out / RUN_CLAIM).is_file():
        return []
    try:
        metrics = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").is_file() else None
        header = (out / "scores.csv").read_text().partition("\n")[0] if (out / "scores.csv").is_file() else ""
    except (OSError, ValueError):  # unreadable, or not JSON or text: not adtf's
        metrics, header = [], ""
    if isinstance(metrics, dict) and "method" in metrics or header.startswith("path,"):
        return []
    if any(_drawn_by_adtf(path) for path in out.glob("*.png")):  # a report stopped before its records
        return []
    return replaced


def _replaced_outputs_of_others(out):
    """What a fit replaces whole in ``out`` that is not adtf's: a ``saved_model/`` that adtf did not export, a
    ``model.keras`` that is no adtf detector of any version (a user's own, in a folder given as --out, went without a
    word), or cannot be read."""
    from adtf.detectors.base import saved_by_adtf

    replaced = []
    exported = out / "saved_model"
    if exported.is_dir() and any(exported.iterdir()) and not (exported / "assets.extra" / "adtf.json").is_file():
        replaced.append("saved_model/")
    model = out / "model.keras"
    if model.exists():
        ours = saved_by_adtf(model)
        if ours is None:
            raise AdtfError(f"--out {out} holds a model.keras that cannot be read (damaged, or no .keras file): delete "
                            "it if it is an old adtf model, or choose another --out")
        if not ours:
            replaced.append("model.keras")
    return replaced


def _drawn_by_adtf(path):
    """Whether ``path`` is a plot adtf drew (matplotlib names itself in every PNG it writes)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return str(image.info.get("Software", "")).startswith("Matplotlib")
    except (OSError, ValueError):
        return False


def claim_holder(out, clock_skew=0.0):
    """The process id of another live adtf-fit writing ``out`` (its ``RUN_CLAIM``), else None. ``clock_skew``: the
    folder's file system's clock against this machine's."""
    import psutil

    claim = out / RUN_CLAIM
    try:
        pid = int(claim.read_text())
        # a process of that id started after the claim was written took a dead holder's id
        alive = psutil.Process(pid).create_time() <= claim.stat().st_mtime - clock_skew + 2
    except (OSError, ValueError, psutil.Error):
        return None
    return pid if alive and pid != os.getpid() else None


def claim_run_folder(out):
    """Make ``out`` this process's to write (``RUN_CLAIM`` holds its pid; removed when the run ends): two fits into
    one folder deleted each other's temporary files, and the second resumed from the first's live checkpoint. A
    claim whose process is gone (killed), is this one (a notebook's run that failed) or started after the claim was
    written (a killed holder's process id, reused) is taken over. None where the
    file system has no hard links: nothing is claimed there."""
    claim = out / RUN_CLAIM
    mine = out / f"{RUN_CLAIM}.{os.getpid()}"
    mine.write_text(str(os.getpid()))
    clock_skew = mine.stat().st_mtime - time.time()  # the folder's file system's clock against this machine's

    try:
        while True:
            try:
                os.link(mine, claim)  # atomic, and fails where a claim stands: never two owners
                return claim
            except FileExistsError:
                pid = claim_holder(out, clock_skew)
                if pid:
                    raise AdtfError(f"another adtf-fit (process {pid}) is writing {out}: wait for it to end, or give "
                                    f"another --out (if no fit runs there, delete {claim})") from None
                claim.unlink(missing_ok=True)
            except OSError:  # a file system without hard links (some network shares): unclaimed, as before
                log.debug(f"      cannot claim {out} (no hard links there): another adtf-fit into it is not detected")
                return None
    finally:
        mine.unlink(missing_ok=True)


def _check_backup(folder, config):
    """Resume only the fit that was interrupted: a backup made with other options is an error, not a crash."""
    from adtf.atomic import write_json

    record = folder / "run_config.json"
    if record.is_file():
        try:
            saved = json.loads(record.read_text())
        except ValueError as err:
            raise AdtfError(f"{record} cannot be read ({err}): delete {folder} to fit from the start") from None
        nothing_saved = not any(p.name != record.name for p in folder.iterdir())  # killed before its first save
        if saved != json.loads(json.dumps(config)) and not nothing_saved:
            changed = sorted(k for k in set(saved) | set(config) if saved.get(k) != json.loads(json.dumps(config)).get(k))
            raise AdtfError(f"{folder} holds the backup of an interrupted fit with other settings ({', '.join(changed)} "
                            "differ): run the same command again to resume it, or delete that folder (or choose "
                            "another --out) to start afresh")
        if nothing_saved:
            log.info("      the fit interrupted here stopped before its first checkpoint: fitting from epoch 1")
    elif folder.is_dir() and any(folder.iterdir()):
        raise AdtfError(f"{folder} holds files that no adtf fit of this version wrote there (its checkpoints come with a "
                        "run_config.json): choose another --out, or delete that folder if it is an old fit's backup")
    folder.mkdir(parents=True, exist_ok=True)
    write_json(record, config)


def options_given(cls, preset, detector):
    """``{option: (value, the preset's value)}`` for each detector option that differs from the preset named (or
    from the class's default where the preset says nothing, or there is no preset). A list read from YAML equals
    the preset's tuple; an ``image_size`` of None (the data's size) is no change."""
    defaults = {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()}
    defaults.update(cls.preset_options(preset) if preset else {})
    as_given = _jsonable(detector or {})
    return {key: (value, defaults[key]) for key, value in (detector or {}).items()
            if key in defaults and as_given[key] != _jsonable({key: defaults[key]})[key]
            and not (key == "image_size" and value is None)}


def _jsonable(options):
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
