"""Console scripts: ``adtf-fit`` (the main job), ``adtf-eval``, ``adtf-score``, ``adtf-export``, ``adtf-bench``,
``adtf-verify``.

Every command prints one clear line and exits with status 2 on bad input
(an ``AdtfError``), never a TensorFlow traceback.
"""
import argparse
import functools
import inspect
import json
import os
import re
import shlex
import sys
import warnings
from pathlib import Path

import adtf  # noqa: E402

if adtf.USER_TF_LOG_LEVEL is None:  # a CUDA build of TF on a machine without a GPU logs a cuInit error otherwise
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"

from adtf.errors import INTERRUPTED, TERMINATED, AdtfError  # noqa: E402

NO_PIXEL_METRICS_HELP = ("skip pixel AUROC and AUPRO, whose working memory is about four times that of the test "
                         "set's anomaly maps (22 bytes a test pixel in all): for a test set too large for this "
                         "machine's memory, which a warning names before the scoring")


# What TensorFlow prints to the process's stderr on import whatever TF_CPP_MIN_LOG_LEVEL says (TF 2.21: the log
# level is read only after absl's logging starts): six lines before every command's own output or error line.
_IMPORT_NOISE = re.compile(r"WARNING: All log messages before absl::InitializeLog\(\) is called"
                           r"|I0000 \S+ +\d+ (port|cudart_stub|cpu_feature_guard)\.cc:\d+\]"
                           r"|To enable the following instructions: .* rebuild TensorFlow")


def _import_tensorflow_quietly():
    """Import TensorFlow with its start-up lines (``_IMPORT_NOISE``) dropped and anything else it prints kept.
    They are INFO lines that TF 2.21 prints whatever TF_CPP_MIN_LOG_LEVEL says, so a user who set it to 1-3 (no
    INFO) gets them dropped too; one who set 0 (everything) sees them."""
    if "tensorflow" in sys.modules or adtf.USER_TF_LOG_LEVEL == "0":
        return
    import tempfile

    sys.stderr.flush()
    with tempfile.TemporaryFile() as captured:
        try:
            saved = os.dup(2)
        except OSError:  # no stderr to quiet (a daemon's closed fd 2): import as it is
            import tensorflow  # noqa: F401
            return
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not _IMPORT_NOISE.match(line):
                    sys.stderr.write(line)


def _default_epochs(cls):
    """What ``--fit.epochs`` defaults to, preset by preset: the class default misled (160 for SimpleNet, whose
    ``offline`` preset trains 40)."""
    epochs = {name.value: cls.presets[name].get("epochs", cls.default_epochs) for name in (cls.Preset or ())
              if name in cls.presets}
    if not any(epochs.values()):  # MoN: no gradient training whatever the preset
        return f"the detector's, {cls.default_epochs}"
    # adtf-fit always builds from a preset (--preset offline by default), so the class default is not one to name
    return "the preset's ({})".format(", ".join(f"{name} {value}" for name, value in epochs.items()))


def _exit_cleanly_on_sigterm(prog):
    """`kill`, `timeout` and a scheduler stop a process with SIGTERM, which Python's default ends at once, skipping
    every `finally`: a SimpleNet fit's feature cache (1.2 GB for a DAGM class) stayed in the temporary folder.
    As an exception instead, the clean-ups run and the exit status is still 128 + 15."""
    import signal

    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the clean-ups short
        TERMINATED.set()  # raised again at the next epoch's end, should a finalizer drop this one
        print(f"{prog}: terminated{_resume_note(prog)}", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM)

    def interrupt(signum, frame):  # Python's own Ctrl-C, remembered: a finalizer (tqdm's __del__) dropped it once
        INTERRUPTED.set()
        raise KeyboardInterrupt

    def forget_signals():  # neither flag may outlive the call: a notebook's later fits would stop at their first epoch
        TERMINATED.clear()
        INTERRUPTED.clear()

    forget_signals()
    restores = [forget_signals]
    handlers = [(signal.SIGTERM, stop)]
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where Ctrl-C is ignored (`adtf-fit &`)
        handlers.append((signal.SIGINT, interrupt))
    for signum, handler in handlers:
        try:
            previous = signal.signal(signum, handler)
        except ValueError:  # not the main thread (a notebook's worker, a test runner): leave it as it is
            continue
        if previous is not None:  # None: installed outside Python, nothing Python can put back
            restores.append(lambda signum=signum, previous=previous: signal.signal(signum, previous))
    return lambda: [restore() for restore in restores]  # for a caller that goes on (a test, a script)


def _resume_note(prog):
    if prog not in ("adtf-fit", "adtf-bench"):
        return ""
    return (" (the same command again resumes a trained method's fit from its last checkpoint, saved every 30 s of "
            "training; a fit stopped before its first checkpoint starts again from epoch 1)")


def _friendly_errors(prog):
    def wrap(main):
        @functools.wraps(main)
        def run(argv=None):
            restore = _exit_cleanly_on_sigterm(prog)
            try:
                _import_tensorflow_quietly()  # seconds: a Ctrl-C there printed Python's KeyboardInterrupt traceback
                with warnings.catch_warnings():  # one line each, not Python's "file:line: UserWarning" and source
                    warnings.showwarning = lambda message, *_: print(f"{prog}: warning: {message}", file=sys.stderr)
                    return main(argv)
            except AdtfError as err:
                print(f"{prog}: error: {err}", file=sys.stderr)
                return 2
            except OSError as err:  # a folder that cannot be written, a path through a file: the system's words
                print(f"{prog}: error: {err.strerror or err}: {err.filename or ''}".rstrip(": "), file=sys.stderr)
                return 2
            except KeyboardInterrupt:
                print(f"{prog}: interrupted{_resume_note(prog)}", file=sys.stderr)
                return 130
            except Exception as err:  # out of memory: one line that says what to lower, not TensorFlow's traceback
                if not (isinstance(err, MemoryError) or type(err).__name__ == "ResourceExhaustedError"):
                    raise
                shape = re.search(r"tensor with shape ?(\[[^\]]*\])", str(err))
                advice = {"adtf-eval": "lower --batch-size, or skip the pixel metrics (--no-pixel-metrics)",
                          "adtf-score": "lower --batch-size", "adtf-export": "close other programs and run it again"}.get(
                    prog, "lower --fit.batch_size (training), --batch-size (scoring) or the input size "
                    "(--detector.image_size), or skip the pixel metrics (--no-pixel-metrics)")
                print(f"{prog}: error: out of memory{f' (a tensor of shape {shape.group(1)})' if shape else ''}: "
                      f"{advice}{_resume_note(prog)}", file=sys.stderr)
                return 2
            finally:
                restore()
        return run
    return wrap


def _count(n):
    return "unknown" if n is None else str(n)  # a model evaluated without its run's record


def calibration_count(results):
    """The calibration images of a run, in a word or two: how many were held out, or that the fitted ones calibrated
    (MoN's protocol: "0" read as uncalibrated) or were cross-fitted (their count beside the fitted ones' read as
    twice as many images)."""
    held_out = results.get("n_calibration")
    if results.get("n_train") is None:
        return "unknown"
    if "each scored by one of" in str(results.get("calibration", "")):  # the runner's words for cross-fitting
        return "the fitted, cross-fitted"
    return str(held_out) if held_out else "the fitted"


def results_table(results):
    """The few numbers a user looks at first, as aligned text."""
    from adtf.evaluate import threshold_text

    if not results["n_test"]:
        rows = [("dataset", results["dataset"]), ("normal images fitted", _count(results["n_train"]))]
        rows += [(f"{name}{' (active)' if name == results['active_working_point'] else ''}",
                  f"{wp['rule']} = {threshold_text(wp['threshold'])}") for name, wp in results["working_points"].items()]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"  {name:<{width}}  {value}" for name, value in rows)
    # adtf-bench's column: "train / test" hid the images held out to calibrate (160 / 100 of 200 normal ones read)
    rows = [("dataset", results["dataset"]),
            ("fit / calibration / test images", f"{_count(results['n_train'])} / {calibration_count(results)} / "
                                                f"{results['n_test']} ({results['n_test_anomalous']} anomalous)")]
    for key, label in (("image_auroc", "image AUROC"), ("pixel_auroc", "pixel AUROC"), ("aupro", "AUPRO@0.3")):
        value = results.get(key)
        rows.append((label, f"n/a ({results.get('pixel_metrics_missing', 'no masks')})"
                     if value is None and key in ("pixel_auroc", "aupro") else
                     "n/a" if value is None else f"{value:.3f}"))
    if len(results["image_auroc_by_score"]) > 1:
        for name, score in results["image_auroc_by_score"].items():
            rows.append((f"image AUROC ({name})", f"{score:.3f}"))
    if results["working_points"]:
        active = results["active_working_point"]
        wp = results["working_points"].get(active)
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731  (one class in the test set)
        if wp:
            rows.append((f"working point {active}", f"TPR {fmt(wp['tpr'])}  TNR {fmt(wp['tnr'])}  (TPR+TNR)/2 {fmt(wp['auc'])}"))
        ranked = [(name, w["auc"]) for name, w in results["working_points"].items() if w["auc"] is not None]
        if ranked:
            best = max(ranked, key=lambda kv: kv[1])
            rows.append(("best working point (test)", f"{best[0]}: (TPR+TNR)/2 {best[1]:.3f} (reported, not selected)"))
    if results.get("best_tpr") is not None:  # after the working point: what a threshold chosen on the answers gets
        rows.append(("best TPR / TNR (test)", f"{results['best_tpr']:.3f} / {results['best_tnr']:.3f} (a threshold "
                                              "chosen on the test labels: a bound, not a working point)"))
    rows += [("time per image", f"{results['ms_per_image']:.1f} ms ({results['images_per_second']:.1f} img/s)"),
             ("peak memory", f"{results['peak_rss_mb']:.0f} MiB")]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"  {name:<{width}}  {value}" for name, value in rows)


# Detector options the CLI does not offer: state a fit sets, and what the top level sets.
_NOT_OPTIONS = {"n_normal", "working_point_rules", "fitted", "seed"}


def _peek(argv, name):
    """The value of ``--name`` in ``argv`` or in a ``--config`` YAML file there (a flag wins), else None."""
    import yaml

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument(f"--{name}")
    pre.add_argument("--config", action="append", default=[])
    known, _ = pre.parse_known_args(argv)
    value = getattr(known, name)
    for path in known.config:  # each read here, even where a flag gives the value: the checks below are for all
        try:
            with open(path, encoding="utf-8") as file:  # a stream: YAML's errors then name the file
                _refuse_yaml_aliases(file)
                file.seek(0)
                config = yaml.safe_load(file) or {}
        except OSError:
            continue  # the real parser reports it, with the file's name
        except (yaml.YAMLError, UnicodeDecodeError) as err:  # the real parser names "<unicode string>"
            raise AdtfError(f"--config {path}: not valid YAML ({' '.join(str(err).split())})") from None
        if getattr(known, name) is None and isinstance(config, dict) and isinstance(config.get(name), str):
            value = config[name]  # (else the real parser says what is wrong)
    return value


def _refuse_yaml_aliases(stream):
    """Raise a YAMLError at the first alias (``*name``) in ``stream`` (text or a file): 300 bytes of nested aliases
    grew to gigabytes in the option parser (a "billion laughs"), and no adtf option needs one. YAML's events alone
    are read, so nothing is expanded."""
    import yaml

    for event in yaml.parse(stream):
        if isinstance(event, yaml.AliasEvent):
            raise yaml.YAMLError(f"an alias (*name), which adtf's configs do not take: write the value out{event.start_mark}")


@functools.cache
def _refuse_yaml_aliases_in_every_option():
    """Every YAML that jsonargparse reads (``--config``, ``--detector FILE``, each option's value) without aliases.

    Its typed options (a float, an ``image_size``, an Optional of one) are read again through its YAML loader class,
    past the loader function that ``set_loader`` replaces: that class is replaced (a private name of jsonargparse 4,
    which a test pins), by one that refuses aliases as they are composed, never expanded."""
    import yaml
    from jsonargparse import _loaders_dumpers

    default = _loaders_dumpers.get_yaml_default_loader()  # the C loader, whose composer no override reaches

    class NoAliases(yaml.SafeLoader):
        yaml_implicit_resolvers = default.yaml_implicit_resolvers  # jsonargparse's (no timestamps; its floats)

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                raise yaml.composer.ComposerError(None, None, "an alias (*name), which adtf's configs do not take: "
                                                  "write the value out", self.peek_event().start_mark)
            return super().compose_node(parent, index)

    _loaders_dumpers.yaml_default_loader = NoAliases  # its YAMLError is a failed load to jsonargparse, as any


def fit_parser(method=None, preset=None, prog="adtf-fit", bench=False):
    """The ``adtf-fit`` (or ``adtf-bench``) parser for one method: its options come from its signatures.

    ``--detector.*`` from the detector's ``__init__``, ``--compile.*`` from its ``compile`` (methods
    trained by gradient), ``--fit.epochs``/``--fit.batch_size`` from ``fit``. Defaults shown by
    ``--help`` are the preset's where one is named (else the method's default preset's).
    """
    from typing import Optional, Union

    import keras
    from jsonargparse import ActionConfigFile, ArgumentParser
    from jsonargparse.typing import NonNegativeInt, PositiveInt, restricted_number_type

    from adtf.detectors import REGISTRY, detector_class
    from adtf.run import DEFAULT_DATA, DEFAULT_METHOD, MAIN_JOB_PRESET, resolve_preset

    if method is None:  # the main job
        method, preset = DEFAULT_METHOD, preset or MAIN_JOB_PRESET
    cls = detector_class(method)
    preset = resolve_preset(cls, preset)
    _refuse_yaml_aliases_in_every_option()
    parser = ArgumentParser(
        prog=prog, exit_on_error=False, allow_abbrev=False,  # "--detector.imag 3" must not set image_size
        description=("Fit and evaluate one method on several datasets (and seeds: --seeds '[0, 1, 2]' adds mean +- "
                     "std rows), and print a markdown table (also written to <out>/bench.md). " if bench else
                     "Fit an anomaly detector on normal images, calibrate its thresholds on normal images only, "
                     "evaluate it, and write model, SavedModel, metrics.json, report.md and plots to runs/<name>/. ")
        + f"Methods: {', '.join(sorted(REGISTRY))}; `--method NAME --help` lists NAME's options, with the "
          "defaults of the preset named (or of its default preset). Every option also reads from a YAML "
          "--config file (`detector:`, `fit:`, `compile:` sections); later flags override it.",
    )
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file of these options")
    parser.add_argument("--method", type=str, default=method, help=f"detector: {', '.join(sorted(REGISTRY))}")
    data_help = ("dataset spec: synthetic[:weave|stone|brick|grass|gravel][,size=N], mvtec:PATH, dagm:PATH/ClassN, "
                 "mtd:PATH, mnist:PATH[:k], cifar:PATH[:k], classes:PATH[:k], coil:PATH[:k], folder:PATH "
                 f"(default: {DEFAULT_DATA}, the embedded procedural texture)")
    if bench:
        parser.add_argument("--data", type=Union[list[str], str], required=True,
                            help="dataset specs, each checked before the first fit: one spec, or a list; quote one "
                                 "that holds a comma: '[mtd:mtd, \"synthetic:weave,size=256\"]'")
    else:
        parser.add_argument("--data", type=str, default=DEFAULT_DATA, help=data_help)
    presets = [p.value for p in cls.Preset] if cls.Preset else []
    parser.add_argument("--preset", type=Optional[str], default=preset,
                        help=f"preset of {method}: {', '.join(presets) or 'none'}")
    parser.add_argument("--out", type=Optional[str], default=None,
                        help="output folder (default: runs/bench)" if bench else "output folder (default: runs/<method>-<dataset>)")
    parser.add_argument("--batch-size", type=PositiveInt, default=16, help="batch size of the data pipelines")
    # numpy's and Keras' seeds take 0 to 2**32 - 1: another one failed deep inside them, after the data had loaded
    seed_type = restricted_number_type("Seed", int, [(">=", 0), ("<", 2**32)])
    parser.add_argument("--seed", type=seed_type, default=0, help="seed for data splits, initialisation and the detector")
    if bench:
        parser.add_argument("--seeds", type=Optional[list[seed_type]], default=None,
                            help="several seeds, e.g. '[0, 1, 2]': one fit per dataset and seed, each with its own "
                                 "data split, calibration hold-out and initialisation, then mean +- std rows "
                                 "(small test sets need a spread, not one number); replaces --seed")
    parser.add_argument("--n-train", type=Optional[PositiveInt], default=None, help="normal images to fit on (DAGM protocol: 500)")
    parser.add_argument("--calibration-fraction", type=Optional[float], default=None,
                        help="fraction of the normal training images held out of the fit to calibrate the working points "
                             f"on (default for {method}: {cls.calibration_fraction:g}"
                             + (", paper 000's protocol: calibrate on the fitted images)" if cls.calibration_fraction == 0
                                else ")"))
    parser.add_argument("--calibration-folds", type=NonNegativeInt, default=0,
                        help="K >= 2: calibrate on all normal training images by K-fold cross-fitting (K more fits; "
                             "each image scored by a detector fitted without it) instead of a hold-out; for small sets")
    parser.add_argument("--monitor-every", type=NonNegativeInt, default=0,
                        help="log the test AUROC every N epochs (monitoring only; never selects an epoch)")
    parser.add_argument("--tensorboard", action="store_true",
                        help="write TensorBoard logs to <out>/tensorboard (losses; reconstructions of a few normal and "
                             "anomalous test images for the autoencoders)")
    parser.add_argument("--skip-bad", action="store_true", help="leave unreadable images out with a warning")
    parser.add_argument("--no-export", action="store_true", help="skip the SavedModel export")
    parser.add_argument("--no-pixel-metrics", action="store_true", help=NO_PIXEL_METRICS_HELP)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_class_arguments(cls, "detector", skip=_NOT_OPTIONS, sub_configs=True)
    parser.add_argument("--fit.epochs", type=Optional[NonNegativeInt], default=None,
                        help=f"epochs of gradient training in this fit (0: none; default: {_default_epochs(cls)})"
                        + ("; overrides --detector.epochs, the schedule saved with the detector"
                           if "epochs" in inspect.signature(cls.__init__).parameters else ""))
    parser.add_argument("--fit.batch_size", type=Optional[PositiveInt], default=None,
                        help="training batch size (default: the detector's, else the pipeline's)")
    if cls.compile is not keras.Model.compile:
        # Keras' own compile arguments that a custom train_step never reads stay out of --help.
        parser.add_method_arguments(cls, "compile", "compile", skip={"optimizer", "loss", "loss_weights", "metrics",
                                                                     "weighted_metrics", "auto_scale_loss"})
    if preset:
        parser.set_defaults({f"detector.{k}": v for k, v in cls.preset_options(preset).items()})
    return parser


def _parse(prog, argv, bench=False):
    """Parse with the parser of the method named in ``argv`` (or its config); one line on bad input."""
    from jsonargparse import ArgumentError

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = fit_parser(_peek(argv, "method"), _peek(argv, "preset"), prog=prog, bench=bench)
    try:
        args = parser.parse_args(argv)
    except ArgumentError as err:
        raise AdtfError(_readable_parse_error(str(err))) from None
    from jsonargparse import Namespace

    for section in ("detector", "fit", "compile"):  # a config's `detector: 3` replaced the section, unchecked
        if section in args and args[section] is None:
            raise AdtfError(f"--config: '{section}:' is empty: remove that line, or put its options under it, indented")
        if section in args and not isinstance(args[section], Namespace):
            raise AdtfError(f"--config: '{section}' holds {args[section]!r}, where it must be a section of options "
                            f"(e.g. '{section}:' then indented 'name: value' lines); `{prog} --print_config` shows them")
    return args


# jsonargparse's words for a value of the wrong type, and ours.
_TYPE_WORDS = {"PositiveInt": "a positive integer", "NonNegativeInt": "a non-negative integer", "int": "an integer",
               "PositiveFloat": "a positive number", "NonNegativeFloat": "a non-negative number", "float": "a number",
               "OpenUnitInterval": "a number between 0 and 1", "ClosedUnitInterval": "a number from 0 to 1",
               "bool": "true or false", "Seed": f"an integer from 0 to {2**32 - 1}"}


def _seed(text):
    """argparse's type of a seed: numpy's and Keras' take 0 to 2**32 - 1."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to {2**32 - 1}, got {text!r}")
    return value


def _readable_parse_error(text):
    """`--fit.epochs: expected a non-negative integer, got -1` for jsonargparse's `Parser key "fit.epochs": Does not
    validate against any of the Union subtypes Subtypes: [<class '...NonNegativeInt'>, <class 'NoneType'>] Errors:
    ...`; any other message as it is, on one line."""
    text = " ".join(text.split())
    if text.startswith("Unexpected config:"):  # an empty --config file, or a YAML list: jsonargparse names no file
        return (f"--config: expected a YAML mapping of options (method: mon, data: ..., detector: {{...}}), got "
                f"{text.partition(':')[2].strip() or 'an empty file'}")
    match = re.match(r'Parser key "([^"]+)": (.*)$', text)
    if not match:
        return text
    key, detail = match.groups()
    flag = "--" + (key if "." in key else key.replace("_", "-"))  # top-level options are spelled with dashes
    # The value as given: the last "Given value:" (a list's own errors come before it), up to the next error.
    values = re.findall(r"(?:Given|Got) value: (.*?)(?= - |$)", detail)
    value = values[-1] if values else None
    # A pair (image_size): tuple[int, int] where None is allowed too, or a tuple with no subtypes named.
    pair = re.search(r"Subtypes: \[tuple\[([\w, ]+)\]", detail)
    if value and (pair or key.endswith("image_size") and "tuple" in detail):
        types = [t.strip() for t in pair[1].split(",")] if pair else ["int", "int"]
        example = ", ".join("256" if t == "int" else "0.5" for t in types)
        return (f"{flag}: expected {len(types)} {'integers' if set(types) == {'int'} else 'numbers'} in brackets, "
                f"quoted in a shell ({flag} \"[{example}]\"), got {value}")
    kinds = [a or b for a, b in re.findall(r"Not of type (\w+)|Expected a <class '(?:[\w.]+\.)?(\w+)'>", detail)]
    kinds = list(dict.fromkeys(kind for kind in kinds if kind != "NoneType"))
    if not kinds or any(kind not in _TYPE_WORDS for kind in kinds):
        return f"{flag}: {detail}"
    if value is None and (literal := re.search(
            r"Not of type \w+: (?:invalid literal for \w+\(\) with base 10: )?'?([^' ]+)'?", detail)):
        value = literal[1]
    return f"{flag}: expected {' or '.join(_TYPE_WORDS[kind] for kind in kinds)}, got {value or detail}"


def _runner_options(args):
    return dict(method=args.method, preset=args.preset, detector=args.detector.as_dict(),
                fit={k: v for k, v in args.fit.as_dict().items() if v is not None},
                compile=args.compile.as_dict() if "compile" in args else None,
                calibration_fraction=args.calibration_fraction, calibration_folds=args.calibration_folds,
                batch_size=args.batch_size, seed=args.seed,
                n_train=args.n_train, skip_bad=args.skip_bad, export=not args.no_export,
                pixel_metrics=not args.no_pixel_metrics,
                monitor_every=args.monitor_every, tensorboard=args.tensorboard, verbose=not args.quiet)


@_friendly_errors("adtf-fit")
def fit_main(argv=None):
    """``adtf-fit``: the main job. With no arguments: SimpleNet (fast preset) on the embedded synthetic data."""
    args = _parse("adtf-fit", argv)
    from adtf.run import configure_logging, fit_evaluate_export

    configure_logging()
    command = shlex.join(["adtf-fit", *(sys.argv[1:] if argv is None else argv)])
    results = fit_evaluate_export(data=args.data, out=args.out, command=command, **_runner_options(args))
    preset = ", ".join(([f"{results['preset']} preset"] if results.get("preset") else [])
                       + ([f"{results['epochs']} epoch{'s' * (results['epochs'] != 1)}"] if results.get("epochs") else []))
    preset = f" ({preset})" if preset else ""
    print(f"\n{args.method}{preset} on {results['dataset']}: done in {results['seconds']:.0f} s\n")
    print(results_table(results))
    out = Path(results["run_dir"])
    print(f"\n  report: {out / 'report.md'}\n  metrics: {out / 'metrics.json'}")
    if (out / "saved_model").is_dir():
        print(f"  SavedModel (TF Serving): {out / 'saved_model'}")
    return 0


@_friendly_errors("adtf-eval")
def eval_main(argv=None):
    """``adtf-eval MODEL --data SPEC``: evaluate a saved detector on a dataset."""
    from jsonargparse.typing import PositiveInt

    parser = argparse.ArgumentParser(prog="adtf-eval", allow_abbrev=False, description="Evaluate a saved detector (.keras or a run folder).")
    parser.add_argument("model", help="model.keras, or a run folder holding one")
    parser.add_argument("--data", required=True, help="dataset spec (see adtf-fit --help)")
    parser.add_argument("--out", default=None, help="report folder (default: <run>/eval-<dataset>)")
    parser.add_argument("--batch-size", type=PositiveInt, default=16, help="images scored at a time (default 16)")
    parser.add_argument("--seed", type=_seed, default=None,
                        help="seed of the dataset's split or draw (MTD's normal tiles, a synthetic set), as adtf-fit's "
                             "(default: the run's, from its metrics.json, so that its held-out test images are drawn "
                             "again; 0 for a model without its run)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--skip-bad", action="store_true", help="leave unreadable images out with a warning")
    parser.add_argument("--no-pixel-metrics", action="store_true", help=NO_PIXEL_METRICS_HELP)
    args = parser.parse_args(argv)
    from adtf import data
    from adtf.detectors import load
    from adtf.evaluate import evaluate
    from adtf.atomic import write_json
    from adtf.run import (check_output_folder, colour_change, images_digest, replaced_settings, scale_change,
                          slug)

    model_path = _model_path(args.model, args.out)
    detector = load(model_path)
    record = _fit_record(model_path)
    run_seed = record.pop("data_seed", None)  # None: a .keras file without its run, or a run from before it was kept
    seed = args.seed if args.seed is not None else (run_seed or 0)
    if args.seed is None and seed:  # seed 0 is the default everywhere: said only when another one is taken
        print(f"adtf-eval: --seed {seed}, the run's (a synthetic set or an MTD split is drawn as the fit drew it)")
    dataset = data.load(args.data, seed=seed, skip_bad=args.skip_bad, progress=not args.quiet)
    if data.parse_spec(args.data)[0] is data.SourceKind.FOLDER and dataset.train:
        # adtf-eval fits nothing: a folder's normal images are test images here, not left out unseen
        print(f"adtf-eval: the {len(dataset.train)} images of the normal folder are test normals here")
        dataset.test = dataset.train + dataset.test
    if not dataset.test:
        raise AdtfError(f"{args.data} has no test images to evaluate on")
    _say_if_trained_on("adtf-eval", model_path.parent, dataset, dataset.test, "test images",
                       "the test figures will be optimistic")
    out = Path(args.out or model_path.parent / f"eval-{slug(dataset.name)}")
    check_output_folder(out, dataset, command="adtf-eval")
    eval_record = {"model": os.path.realpath(model_path), "data": dataset.name,
                   "test_images": images_digest(dataset.test, labels=True)}
    changed = replaced_settings(out / "eval.json", eval_record)
    if changed:  # weave at 128 and at 256 px share a name, and so the default report folder
        print(f"adtf-eval: warning: {out} holds an evaluation with other settings ({', '.join(changed)} differ): "
              f"this one replaces it; give {'another ' if args.out else ''}--out to keep both", file=sys.stderr)
    if "n_fit" not in record:  # a .keras file without its run: what it was fitted on is not this data's training images
        record.update(train_known=False, extra={"evaluation_of": {"model": str(model_path), "fit_dataset": None}})
    note = scale_change(record.pop("fit_median_size", None), dataset, dataset.test, detector.image_size)
    if note:  # said now and in the report: a resize the user did not choose changes what the model sees
        print(f"adtf-eval: warning: {note}", file=sys.stderr)
        record["extra"] = {**record.get("extra", {}), "scale_note": note}
    note = colour_change(record.pop("fit_colour", None), dataset, dataset.test)
    if note:
        print(f"adtf-eval: warning: the test images: {note}", file=sys.stderr)
        dataset.notes.append(f"the test images: {note}")
    results = evaluate(detector, dataset, out, batch_size=args.batch_size, verbose=not args.quiet,
                       pixel_metrics=not args.no_pixel_metrics, **record)
    write_json(out / "eval.json", {**eval_record, "spec": args.data})
    print(results_table(results))
    print(f"\n  report: {out / 'report.md'}")
    return 0


@_friendly_errors("adtf-score")
def score_main(argv=None):
    """``adtf-score MODEL FOLDER``: score parts nobody has judged: each one's verdict, and heat maps of the flagged."""
    from jsonargparse.typing import PositiveInt

    parser = argparse.ArgumentParser(
        prog="adtf-score", allow_abbrev=False,
        description="Score a folder of parts with a saved detector (.keras or a run folder): scores.csv holds each "
                    "image's score and verdict at the model's active working point, heatmaps/ an overlay of each "
                    "flagged part. No labels are read: for figures against known good and defective parts, "
                    "use adtf-eval.")
    parser.add_argument("model", help="model.keras, or a run folder holding one")
    parser.add_argument("folder", help="a folder of images (PNG, JPEG, BMP, GIF or WebP; a file that cannot be read "
                                       "is flagged, with its problem in scores.csv)")
    parser.add_argument("--out", default=None,
                        help="output folder (default: <run>/score-folder-<parent>-<folder>, as a folder: dataset is named)")
    parser.add_argument("--heatmaps", choices=("flagged", "all", "none"), default="flagged",
                        help="which parts get a heat-map overlay (default: the flagged ones)")
    parser.add_argument("--batch-size", type=PositiveInt, default=16, help="images scored at a time (default 16)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    from adtf import data
    from adtf.detectors import load
    from adtf.evaluate import refuse_without_working_point, score_parts, threshold_text
    from adtf.paths import expand_user
    from adtf.data.sources import MAX_LISTED_PROBLEMS
    from adtf.run import check_output_folder, colour_change, scale_change, slug

    model_path = _model_path(args.model, args.out)
    detector = load(model_path)
    refuse_without_working_point(detector, str(model_path))  # before the files' check, which can take minutes
    # An unreadable file is a part too: named here, and flagged in scores.csv; one bad capture neither stops a day's
    # scoring nor passes as a good part.
    # Absolute: the folder names the output folder (score-folder-<parent>-<folder>) and the rows of scores.csv.
    folder = expand_user(args.folder)  # not resolved: a link (latest -> 2024-06-01) keeps the name it was given
    if not folder.is_dir():  # said here: the folder reader would call it the "normal images" folder
        raise AdtfError(f"{folder} is a file: give the folder that holds the parts' images" if folder.exists() else
                        f"folder of parts not found: {folder}")
    from adtf.data.layouts import _images_below, _list_images

    if not _list_images(folder) and (below := sorted({p.parent for p in _images_below(folder)})):
        # the folder reader's hint names adtf-fit's spec (folder:DIR,anomalous=...), which adtf-score does not take
        names = ", ".join(f"{os.path.relpath(f, folder)}/" for f in below[:4]) + (", ..." if len(below) > 4 else "")
        raise AdtfError(f"{folder}: no images directly in it, only in its subfolders ({names}): adtf-score scores "
                        "one folder's images; give each subfolder in turn")
    dataset = data.load(f"folder:{os.path.abspath(folder)}", flag_unusable=True, progress=not args.quiet)
    for _, problem in dataset.skipped[:MAX_LISTED_PROBLEMS]:  # scores.csv names every one, with its problem
        print(f"adtf-score: warning: flagged, as it cannot be read: {problem}", file=sys.stderr)
    if len(dataset.skipped) > MAX_LISTED_PROBLEMS:
        print(f"adtf-score: warning: ... and {len(dataset.skipped) - MAX_LISTED_PROBLEMS} more unreadable files, "
              "flagged (scores.csv names each)", file=sys.stderr)
    _say_if_trained_on("adtf-score", model_path.parent, dataset, dataset.train, "parts",
                       "their verdicts say little of new parts")
    fit_record = _fit_record(model_path)
    scale_note = scale_change(fit_record.get("fit_median_size"), dataset, dataset.train + dataset.test,
                              detector.image_size)
    # As adtf-eval says them: the verdicts may not carry over to parts shown at another scale or in another colour.
    colour_note = colour_change(fit_record.get("fit_colour"), dataset, dataset.train + dataset.test)
    for note in (scale_note, colour_note and f"the parts: {colour_note}"):
        if note:
            print(f"adtf-score: warning: {note}", file=sys.stderr)
            dataset.notes.append(note)
    out = Path(args.out or model_path.parent / f"score-{slug(dataset.name)}")
    check_output_folder(out, dataset, command="adtf-score")
    summary = score_parts(detector, dataset, out, batch_size=args.batch_size, heatmaps=args.heatmaps,
                          verbose=not args.quiet, colour_range=fit_record.get("colour_range"))
    point = (f"working point {summary['working_point']}, threshold {threshold_text(summary['threshold'])}"
             if summary["working_point"] else "no working point")
    invalid = summary["n_invalid"] - summary["n_unreadable"]
    print(f"{summary['n_flagged']} of {summary['n']} parts flagged ({point})"
          + (f"; {summary['n_unreadable']} unreadable file(s), flagged (why: scores.csv)"
             if summary["n_unreadable"] else "")
          + (f"; {invalid} invalid (unreadable values: flagged)" if invalid else ""))
    print(f"\n  scores: {out / 'scores.csv'}" + (f"\n  heat maps: {out / 'heatmaps'}" if summary["heatmaps"] else ""))
    return 0


def _say_if_trained_on(prog, run_folder, dataset, samples, noun, consequence):
    """Warn, and note for the report, where ``samples`` are images the run was fitted or calibrated on: a fitted
    image scores low, whatever it shows (as adtf-fit says it of a test folder that is the training folder)."""
    seen = _images_the_run_trained_on(run_folder, samples)
    if seen:
        note = (f"{len(seen)} of the {len(samples)} {noun} are images this run was fitted or calibrated on "
                f"(e.g. {seen[0]}; fit_images.txt, calibration_images.txt): {consequence}")
        print(f"{prog}: warning: {note}", file=sys.stderr)
        dataset.notes.append(note)


def _images_the_run_trained_on(run_folder, samples):
    """The paths of ``samples`` that are files the run in ``run_folder`` was fitted or calibrated on (the lists it
    wrote; none where it wrote none)."""
    from adtf.data.sources import training_files_among

    trained = []
    for name in ("fit_images.txt", "calibration_images.txt"):  # the latter: "fold<TAB>path" lines when cross-fitted
        try:
            lines = (run_folder / name).read_text().splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        trained += [line.rsplit("\t", 1)[-1] for line in lines if line]
    return training_files_among(samples, trained)


def _fit_record(model_path):
    """How the saved detector was fitted and calibrated, from its run's ``metrics.json`` (empty if unknown), so that
    an evaluation's report says the same as the run's."""
    try:
        record = json.loads((model_path.parent / "metrics.json").read_text())
        calibration = record.get("calibration")
        if calibration:  # the list sits in the run folder, not beside the evaluation's report
            calibration = calibration.replace("calibration_images.txt", str(model_path.parent / "calibration_images.txt"))
        # What an evaluation's report repeats of the fit: which model, fitted on what, at which preset and options.
        setup = {"evaluation_of": {"model": str(model_path), "fit_dataset": record.get("dataset")},
                 **{key: record[key] for key in ("preset", "options", "image_size_rule") if key in record}}
        return dict(method=record.get("method"), n_fit=int(record["n_train"]), n_calibration=int(record.get("n_calibration") or 0),
                    calibration=calibration, fit_median_size=record.get("fit_median_size"),
                    fit_colour=record.get("fit_colour"), colour_range=record.get("heatmap_scale"), extra=setup,
                    data_seed=record.get("data_seed"))
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _inside(out, folder):
    """Whether the path ``out`` is ``folder`` or lies below it (links resolved)."""
    out, folder = os.path.realpath(out), os.path.realpath(folder)
    return out == folder or out.startswith(folder + os.sep)


def _model_path(path, out=None, save_model=False):
    """The ``.keras`` file of ``path`` (a run folder or the file). Where another adtf-fit is writing its run, a command
    that writes into it (``out`` None, the default inside the run, or there; ``save_model``) is refused: the fit
    deletes or replaces what it finds there when it ends. Others are warned."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.keras"
    if not path.is_file():
        raise AdtfError(f"no saved detector at {path} (expected a .keras file or a run folder holding model.keras)")
    from adtf.run import claim_holder

    if (pid := claim_holder(path.parent)) and (save_model or not out or _inside(out, path.parent)):
        raise AdtfError(f"another adtf-fit (process {pid}) is writing {path.parent}, and replaces its model.keras and "
                        "removes the reports of the previous model when it ends: wait for it, or write elsewhere "
                        "(--out; adtf-export without --save-model)")
    if pid:  # its model.keras is the previous fit's, replaced when that fit is done
        warnings.warn(f"another adtf-fit (process {pid}) is writing {path.parent}: its model.keras is the previous "
                      "fit's until that fit ends, and may be replaced while this runs", stacklevel=2)
    return path


@_friendly_errors("adtf-export")
def export_main(argv=None):
    """``adtf-export MODEL``: write a SavedModel, optionally at another working point (no refit)."""
    parser = argparse.ArgumentParser(prog="adtf-export", allow_abbrev=False, description="Export a saved detector as a SavedModel for TF Serving.")
    parser.add_argument("model", help="model.keras, or a run folder holding one")
    parser.add_argument("--out", default=None,
                        help="SavedModel folder (default: <run>/saved_model-<working point>, beside the run's own "
                             "saved_model, which keeps matching its model.keras and metrics.json; with --save-model "
                             "the run moves: <run>/saved_model, rewritten too where --out names another folder)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--working-point", default=None, help="a calibrated working point: the run's report lists them "
                       "(MoN: threshold1 ... threshold6; the trained methods: max_normal, fpr1_normal)")
    group.add_argument("--threshold", type=float, default=None, help="an explicit threshold on --score (one in exponent form below zero takes '=': "
                       "--threshold=-1e-3); prints what it does to the run's test images")
    parser.add_argument("--score", default=None, help="the score an explicit --threshold applies to (e.g. d_max, d_mean)")
    parser.add_argument("--save-model", action="store_true", help="also write the new working point back into MODEL")
    args = parser.parse_args(argv)
    from adtf.atomic import atomic_path
    from adtf.detectors import load

    model_path = _model_path(args.model, args.out, args.save_model)
    if args.score and args.threshold is None:
        parser.error("--score names the score an explicit --threshold applies to: give --threshold too "
                     "(a working point has its own score)")
    from adtf.run import ensure_writable, slug

    detector = load(model_path)
    saved_point = detector.working_point
    if args.working_point or args.threshold is not None:
        detector.set_working_point(args.working_point, value=args.threshold, score=args.score)
    moved = detector.working_point != saved_point and not args.save_model
    # A threshold's exponent keeps its sign in the name: slug() turns 1e+38's "+" into "-", as 1e-38 reads.
    named = f"saved_model-{slug(detector.working_point.replace('e+', 'e'))}" if moved else "saved_model"
    out = Path(args.out or model_path.parent / named)
    # Before the graphs are traced, and before anything is written: a read-only run folder once failed after both.
    # Where atomic_path writes: beside what a link (/models/current) points at, not beside the link.
    ensure_writable(Path(os.path.realpath(out)).parent, "--out's folder" if args.out else "the run folder")
    if args.save_model:
        ensure_writable(Path(os.path.realpath(model_path)).parent, "--save-model rewrites model.keras in")
    detector.export(out)
    own = model_path.parent / "saved_model"  # the run's own SavedModel moves with the run, wherever --out wrote
    if args.save_model and own.is_dir() and out.resolve() != own.resolve():
        detector.export(own)
        print(f"SavedModel written to {own} too (the run's own, which --save-model moves with model.keras)")
    if args.save_model:
        with atomic_path(model_path, suffix=".keras") as tmp:
            detector.save(tmp)
    from adtf.evaluate import refresh_working_points, threshold_text

    print(f"SavedModel written to {out} (working point {detector.working_point}, threshold "
          f"{threshold_text(detector.threshold)})")
    try:  # what the run's report describes: a --save-model stopped before its reports were refreshed left it behind
        reported = json.loads((model_path.parent / "metrics.json").read_text()).get("active_working_point")
    except (OSError, ValueError, AttributeError):
        reported = None
    if moved:
        print(f"model.keras, and so adtf-score and adtf-eval, still judge at {saved_point}: --save-model moves them "
              "too")
    if args.save_model and reported not in (None, saved_point):  # the repair: the report's point is the old one
        saved_point = reported
    if args.save_model and detector.working_point != saved_point:
        if refresh_working_points(model_path.parent, detector):
            print(f"{model_path.parent}: metrics.json, report.md, scores.csv and roc.png now describe working point "
                  f"{detector.working_point} (from the evaluation's saved scores); the heat maps keep the verdicts "
                  f"they were drawn with, at {saved_point}, as the report says (adtf-eval draws them again)")
        elif (model_path.parent / "metrics.json").exists():  # a run with no test images saves no scores
            print(f"{model_path.parent}: its metrics.json and report.md still describe working point {saved_point} "
                  f"(its metrics.json or scores.csv holds no evaluation to recompute them from); model.keras and "
                  f"the SavedModel use "
                  f"{detector.working_point}", file=sys.stderr)
        # The run's adtf-eval reports and adtf-score verdicts were made with this model: its working point too.
        stale = []
        for folder in sorted(p for p in model_path.parent.glob("eval-*") if p.is_dir()):
            if refresh_working_points(folder, detector):
                print(f"{folder}: its evaluation now describes working point {detector.working_point} too")
            else:
                stale.append(folder.name)
        stale += sorted(p.name for p in model_path.parent.glob("score-*") if p.is_dir()
                        and _scored_at(p) != detector.working_point)
        if stale:
            print(f"adtf-export: warning: {', '.join(stale)} in {model_path.parent} still judge parts at working point "
                  f"{saved_point}: run adtf-eval or adtf-score again for verdicts at {detector.working_point}",
                  file=sys.stderr)
    effect = _effect_on_test_set(model_path.parent / "scores.csv", detector)
    if effect:
        print(effect)
    return 0


def _scored_at(folder):
    """The working point an adtf-score folder's verdicts are at (its score.json), or None where it does not say."""
    try:
        return json.loads((folder / "score.json").read_text()).get("working_point")
    except (OSError, ValueError, AttributeError):
        return None


def _effect_on_test_set(scores_file, detector):
    """What the active threshold does to the run's own test images (the ``scores.csv`` of its evaluation), so that
    someone moving a threshold sees the good parts it fails and the defects it passes; None without that file."""
    from adtf.evaluate import read_scores
    from adtf.layers.working_points import CUSTOM
    from adtf.metrics import rates_at

    point = detector.postprocess.point(detector.postprocess.active_name)
    saved = read_scores(scores_file)
    if saved is None and Path(scores_file).exists():  # not one that adtf wrote whole: say so, not nothing
        return (f"{scores_file} cannot be read as the run's evaluation wrote it (damaged or edited?), so what this "
                "threshold does to the run's test images is not shown: adtf-eval the run again to see it")
    if saved is None or point["score"] not in saved["scores"]:
        return None
    labels = saved["labels"]
    tpr, tnr = rates_at(labels, saved["scores"][point["score"]], point["value"])  # an invalid image's score is +inf
    n_good, n_defective = int((labels == 0).sum()), int((labels == 1).sum())
    parts = []
    if tnr is not None:
        parts.append(f"TNR {tnr:.3f} ({round((1 - tnr) * n_good)} of {n_good} good parts flagged)")
    if tpr is not None:
        parts.append(f"TPR {tpr:.3f} ({round((1 - tpr) * n_defective)} of {n_defective} defective parts passed)")
    chosen = detector.postprocess.active_name == CUSTOM  # a threshold picked by hand, maybe by looking at these
    return (f"On the run's test images ({scores_file}): {', '.join(parts)}."
            + (" If they guided the choice of this threshold, these figures overstate what it does on new parts."
               if chosen else "")
            + (f" Warning: it flags most good parts; the calibrated working points' thresholds on {point['score']} "
               "are in the run's report.md, and the test scores in scores.csv."
               if tnr is not None and tnr < 0.5 else ""))


@_friendly_errors("adtf-bench")
def bench_main(argv=None):
    """``adtf-bench --data [SPEC, ...]``: the runner per dataset (no export), then one markdown table."""
    args = _parse("adtf-bench", argv, bench=True)
    from adtf.atomic import write_text
    from adtf.run import check_calibration_options, configure_logging, fit_evaluate_export, load_dataset, log, slug

    configure_logging(not args.quiet)
    if isinstance(args.data, str):  # one spec needs no list: `--data mtd:mtd` was refused in jsonargparse's words
        args.data = [args.data]
    options = _runner_options(args)
    check_calibration_options(options["calibration_fraction"], options["calibration_folds"])  # before any data
    options["export"] = False
    if not args.data or args.seeds == []:  # once an empty table, or seed 0 alone, and exit status 0
        raise AdtfError(f"--{'data' if not args.data else 'seeds'} [] names nothing to run: give at least one")
    seeds = args.seeds or [args.seed]
    if len(set(seeds)) != len(seeds):  # two fits of one seed would share a run folder and fake a spread of 0
        raise AdtfError(f"--seeds {seeds}: each seed once")
    load = lambda spec, seed: load_dataset(spec, seed=seed, skip_bad=args.skip_bad, n_train=args.n_train,  # noqa: E731
                                           progress=not args.quiet)
    # Every spec is read and checked before the first fit: a typo in the last one must not cost the others' fits.
    # (Its other seeds' splits are drawn when their turn comes: only the first is held in memory meanwhile.)
    datasets, problems = [], []
    for i, spec in enumerate(args.data):
        log.info(f"checking dataset {i + 1} of {len(args.data)}: {spec}")
        try:
            datasets.append(load(spec, seeds[0]))
        except AdtfError as error:  # go on: every bad spec is named at once, not one per try
            problems.append((f"--data {spec}", error))
    if len(problems) == 1:
        raise problems[0][1]
    if problems:
        raise AdtfError(f"{len(problems)} of the {len(args.data)} datasets cannot be read:\n"
                        + "\n".join(f"- {name}: {error}" for name, error in problems))
    # Named as adtf-fit names its run folders, after the method (a bench of another method must not overwrite this
    # one's) and the dataset, and numbered where two specs share a dataset name (folder:ok and
    # folder:ok,anomalous=ng): the table then numbers them too.
    names = [f"{args.method}-{slug(dataset.name)}" for dataset in datasets]
    numbered = [names.count(name) > 1 for name in names]
    names = [f"{i + 1}-{name}" if twice else name for i, (name, twice) in enumerate(zip(names, numbered))]
    out = Path(args.out or "runs/bench")
    runs = []  # one list of metrics dicts per spec, a dict per seed
    for i, (spec, name) in enumerate(zip(args.data, names)):
        dataset, datasets[i] = datasets[i], None  # its arrays, if any, go once its seeds are done
        runs.append([fit_evaluate_export(data=dataset if seed == seeds[0] else load(spec, seed),
                                         out=out / (name if len(seeds) == 1 else f"{name}-seed{seed}"), spec=spec,
                                         **{**options, "seed": seed}) for seed in seeds])
    table = bench_table(runs, argv, numbered=numbered, specs=args.data)
    write_text(out / "bench.md", table + "\n")
    print("\n" + table + f"\n\n(written to {out / 'bench.md'})")
    return 0


def mean_and_spread(*values):
    """``"0.906 ± 0.014"`` over seeds (sample std), one value as it is, ``"n/a"`` for none; a None among them (a
    metric one seed could not give) is left out, and the text says over how many seeds the rest were."""
    import statistics

    known = [v for v in values if v is not None]
    if not known:
        return "n/a"
    text = f"{statistics.mean(known):.3f} ± {statistics.stdev(known):.3f}" if len(known) > 1 else f"{known[0]:.3f}"
    return text + (f" ({len(known)} of {len(values)} seeds)" if 1 < len(values) != len(known) else "")


def bench_table(runs, argv=None, numbered=None, specs=None):
    """Markdown table of ``metrics.json`` dicts, a list of them per dataset spec (a dict per seed), with the command
    and machine that produced them.

    A spec run over several seeds gets a row per seed, then a row of mean ± std (sample std, over the seeds).
    The active working point's TPR / TNR are what a deployed model gives (its threshold comes from normal training
    images); the best TPR / TNR use the threshold that does best on the test set itself, a figure to compare
    methods by (the MVTec protocol of papers 002/003), never one a model could be deployed at. ``numbered``: for each
    spec, whether its dataset name is shown with the spec's number (two specs of one name: their run folders'
    numbers) and, given ``specs``, the spec itself."""
    import statistics

    fmt = mean_and_spread
    def active(r, key):
        return (r["working_points"].get(r.get("active_working_point")) or {}).get(key)

    def cells(rs):  # one run's figures, or several seeds' mean ± std
        by = [r.get("image_auroc_by_score", {}) for r in rs]
        split = " / ".join(f"{k} {fmt(*(b.get(k) for b in by))}" for k in by[0]) if len(by[0]) > 1 else "-"
        speeds = [r["images_per_second"] for r in rs if r["images_per_second"] is not None]  # none: no test images
        speed = f"{statistics.mean(speeds):.1f}" if speeds else "n/a"
        return (f"{fmt(*(r['image_auroc'] for r in rs))} | {split} | {fmt(*(active(r, 'tpr') for r in rs))} / "
                f"{fmt(*(active(r, 'tnr') for r in rs))} | {fmt(*(r.get('best_tpr') for r in rs))} / "
                f"{fmt(*(r.get('best_tnr') for r in rs))} | {fmt(*(r['pixel_auroc'] for r in rs))} | "
                f"{fmt(*(r['aupro'] for r in rs))} | {speed} |")

    lines = ["| method | preset | dataset | seed | input | fit / calibration / test images | image AUROC | AUROC of each "
             "score | active working point TPR / TNR | best TPR / TNR (test-set threshold) | pixel AUROC | AUPRO | img/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, spec_runs in enumerate(runs):
        first = spec_runs[0]
        # Two specs of one dataset name: each numbered as its run folder is, and given as the command gave it.
        number = "" if not (numbered and numbered[i]) else f" ({i + 1}: `{specs[i]}`)" if specs else f" ({i + 1})"
        head = f"| {first['method']} | {first.get('preset') or '-'} | {first['dataset']}{number} |"
        for r in spec_runs:
            lines.append(f"{head} {r.get('options', {}).get('seed', '-')} | {r['image_size'][0]}x{r['image_size'][1]} | "
                         f"{r['n_train']} / {calibration_count(r)} / {r['n_test']} | " + cells([r]))
        if len(spec_runs) > 1:
            lines.append(f"{head} **mean ± std of {len(spec_runs)}** | | | " + cells(spec_runs))
    command = shlex.join(["adtf-bench", *(sys.argv[1:] if argv is None else argv)])
    first = runs[0][0] if runs and runs[0] else {}
    return "\n".join(lines) + f"\n\n`{command}` on {first.get('machine', '')}, {first.get('date', '')}"


@_friendly_errors("adtf-verify")
def verify_main(argv=None):
    """``adtf-verify SPEC``: check a local dataset copy against its manifest in data_manifests/."""
    parser = argparse.ArgumentParser(prog="adtf-verify", allow_abbrev=False, description="Check a local dataset copy against its manifest.")
    parser.add_argument("spec", help="dataset spec, e.g. mvtec:/data/mvtec/bottle or mtd:/data/mtd")
    parser.add_argument("--manifest", default=None, help="manifest name (default: from the spec)")
    parser.add_argument("--config", default=None, help="the manifest's config, e.g. bottle or cifar10_test (default: "
                                                       "the spec's category, the folder's name, or the manifest's own)")
    args = parser.parse_args(argv)
    from adtf.data import manifests

    report = manifests.verify(args.spec, args.manifest, config=args.config)
    print(report)
    return 0 if getattr(report, "ok", True) else 1


if __name__ == "__main__":
    sys.exit(fit_main())
