"""Console scripts: ``adtf-fit`` (the main job), ``adtf-eval``, ``adtf-export``, ``adtf-bench``, ``adtf-verify``.

Every command prints one clear line and exits with status 2 on bad input
(an ``AdtfError``), never a TensorFlow traceback.
"""
import argparse
import functools
import os
import shlex
import sys
import time
from pathlib import Path

import adtf  # noqa: E402

if adtf.USER_TF_LOG_LEVEL is None:  # a CUDA build of TF on a machine without a GPU logs a cuInit error otherwise
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"

from adtf.errors import AdtfError  # noqa: E402

DEFAULT_DATA = "synthetic"


def _friendly_errors(prog):
    def wrap(main):
        @functools.wraps(main)
        def run(argv=None):
            try:
                return main(argv)
            except AdtfError as err:
                print(f"{prog}: error: {err}", file=sys.stderr)
                return 2
            except KeyboardInterrupt:
                print(f"{prog}: interrupted", file=sys.stderr)
                return 130
        return run
    return wrap


def _load_config(path):
    import yaml

    try:
        config = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as err:
        raise AdtfError(f"cannot read config file {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise AdtfError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(config, dict):
        raise AdtfError(f"config file {path} must hold a mapping of option: value")
    return {key.replace("-", "_"): value for key, value in config.items()}


def _parse_with_config(parser, argv):
    """CLI flags override the YAML config, which overrides the defaults."""
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        config = _load_config(args.config)
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(config) - known)
        if unknown:
            raise AdtfError(f"config file {args.config}: unknown option(s) {unknown}; known: {sorted(known - {'help', 'config'})}")
        parser.set_defaults(**config)
        args = parser.parse_args(argv)
    return args


def _slug(text):
    keep = "".join(c if c.isalnum() or c in "-_." else "-" for c in text.split("/")[-1] or text)
    return keep.strip("-.") or "data"


def _detector_options(args):
    options = {}
    if args.image_size:
        options["image_size"] = (args.image_size, args.image_size)
    for name in ("backbone", "layer", "weights"):
        value = getattr(args, name)
        if value is not None:
            options[name] = None if value == "none" else value
    return options


def results_table(results):
    """The few numbers a user looks at first, as aligned text."""
    if not results["n_test"]:
        rows = [("dataset", results["dataset"]), ("normal images fitted", str(results["n_train"]))]
        rows += [(f"{name}{' (active)' if name == results['active_working_point'] else ''}",
                  f"{wp['rule']} = {wp['threshold']:.4g}") for name, wp in results["working_points"].items()]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"  {name:<{width}}  {value}" for name, value in rows)
    rows = [("dataset", results["dataset"]), ("train / test images", f"{results['n_train']} / {results['n_test']} ({results['n_test_anomalous']} anomalous)")]
    for key, label in (("image_auroc", "image AUROC"), ("best_tpr", "best TPR"), ("best_tnr", "best TNR"),
                       ("pixel_auroc", "pixel AUROC"), ("aupro", "AUPRO@0.3")):
        value = results.get(key)
        rows.append((label, "n/a (no masks)" if value is None and key in ("pixel_auroc", "aupro") else
                     "n/a" if value is None else f"{value:.3f}"))
    for name, score in results["image_auroc_by_score"].items():
        rows.append((f"image AUROC ({name})", f"{score:.3f}"))
    if results["working_points"]:
        active = results["active_working_point"]
        wp = results["working_points"].get(active)
        if wp:
            rows.append((f"working point {active}", f"TPR {wp['tpr']:.3f}  TNR {wp['tnr']:.3f}  AUC {wp['auc']:.3f}"))
        best = max(results["working_points"].items(), key=lambda kv: kv[1]["auc"])
        rows.append(("best working point (test)", f"{best[0]}: AUC {best[1]['auc']:.3f} (reported, not selected)"))
    rows += [("time per image", f"{results['ms_per_image']:.1f} ms ({results['images_per_second']:.1f} img/s)"),
             ("peak memory", f"{results['peak_rss_mb']:.0f} MiB")]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"  {name:<{width}}  {value}" for name, value in rows)


def _fit_parser():
    parser = argparse.ArgumentParser(
        prog="adtf-fit",
        description="Fit an anomaly detector on normal images, calibrate its thresholds on normal images only, "
                    "evaluate it, and write model, SavedModel, metrics.json, report.md and plots to runs/<name>/.",
    )
    parser.add_argument("--method", default="mon", help="detector (default: mon)")
    parser.add_argument("--data", default=DEFAULT_DATA,
                        help="dataset spec: synthetic[:brick|grass|gravel], mvtec:PATH, dagm:PATH/ClassN, mtd:PATH, "
                             "mnist:PATH, folder:PATH (default: synthetic, the embedded textures)")
    parser.add_argument("--preset", default=None, help="method preset, e.g. MoN: offline (default) or paper")
    parser.add_argument("--out", default=None, help="output folder (default: runs/<method>-<dataset>)")
    parser.add_argument("--config", default=None, help="YAML file of these options (flags override it)")
    parser.add_argument("--backbone", default=None, help="override the preset's backbone")
    parser.add_argument("--layer", default=None, help="override the backbone layer to tap")
    parser.add_argument("--weights", default=None, help="imagenet, none, or a local weights file")
    parser.add_argument("--image-size", type=int, default=None, help="square input size (default: the preset's)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0, help="seed for data splits and shuffling")
    parser.add_argument("--n-train", type=int, default=None, help="normal images for fitting (DAGM protocol: 500)")
    parser.add_argument("--calibration-fraction", type=float, default=0.0,
                        help="hold this fraction of the normal training images out of the fit and calibrate the "
                             "working points on them (default 0: the paper's protocol, calibrate on the fitted images)")
    parser.add_argument("--skip-bad", action="store_true", help="leave unreadable images out with a warning instead of stopping")
    parser.add_argument("--no-export", action="store_true", help="skip the SavedModel export")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


@_friendly_errors("adtf-fit")
def fit_main(argv=None):
    """``adtf-fit``: the main job. With no arguments: MoN (offline preset) on the embedded synthetic data."""
    args = _parse_with_config(_fit_parser(), argv)
    from adtf import data, detectors
    from adtf.evaluate import evaluate, thresholds_only

    started = time.perf_counter()
    verbose = not args.quiet
    load_options = {"n_train": args.n_train} if args.n_train else {}
    print(f"[1/5] loading {args.data}", flush=True)
    dataset = data.load(args.data, seed=args.seed, skip_bad=args.skip_bad, **load_options)
    print(f"      {len(dataset.train)} normal training images, {len(dataset.test)} test images", flush=True)
    preset = args.preset or ("offline" if args.method == "mon" else None)
    detector = detectors.create(args.method, preset=preset, **_detector_options(args))
    size = detector.image_size
    fit_samples, calibration_samples = data.split_off(dataset.train, args.calibration_fraction, args.seed)
    train_ds = data.pipeline(fit_samples, arrays=dataset.arrays, image_size=size, batch_size=args.batch_size)
    print(f"[2/5] fitting {args.method} ({preset or 'default'} preset) at {size[0]}x{size[1]} "
          f"on {len(fit_samples)} normal images", flush=True)
    detector.fit(train_ds, verbose=verbose)
    if calibration_samples:
        print(f"[3/5] calibrating working points on {len(calibration_samples)} held-out normal images", flush=True)
        detector.calibrate(data.pipeline(calibration_samples, arrays=dataset.arrays, image_size=size,
                                         batch_size=args.batch_size), verbose=verbose)
    else:
        print("[3/5] calibrating working points on the normal training images (paper 000's protocol)", flush=True)
        detector.calibrate(train_ds, verbose=verbose)
    out = Path(args.out or Path("runs") / f"{args.method}-{_slug(dataset.name)}")
    out.mkdir(parents=True, exist_ok=True)
    print(f"[4/5] evaluating on {len(dataset.test)} test images -> {out}", flush=True)
    if dataset.test:
        results = evaluate(detector, dataset, out, method=args.method, batch_size=args.batch_size, verbose=verbose,
                           n_calibration=len(calibration_samples))
    else:
        print("      no test images: evaluation skipped (only the working points are written)", flush=True)
        results = thresholds_only(detector, dataset, out, method=args.method, n_calibration=len(calibration_samples))
    print("[5/5] saving the Keras model" + ("" if args.no_export else " and the SavedModel"), flush=True)
    from adtf.atomic import atomic_path

    with atomic_path(out / "model.keras", suffix=".keras") as tmp:
        detector.save(tmp)
    if not args.no_export:
        detector.export(out / "saved_model")
    (out / "command.txt").write_text(shlex.join(["adtf-fit", *(sys.argv[1:] if argv is None else argv)]) + "\n")
    print(f"\n{args.method} on {dataset.name}: done in {time.perf_counter() - started:.0f} s\n")
    print(results_table(results))
    print(f"\n  report: {out / 'report.md'}\n  metrics: {out / 'metrics.json'}")
    return 0


@_friendly_errors("adtf-eval")
def eval_main(argv=None):
    """``adtf-eval MODEL --data SPEC``: evaluate a saved detector on a dataset."""
    parser = argparse.ArgumentParser(prog="adtf-eval", description="Evaluate a saved detector (.keras or a run folder).")
    parser.add_argument("model", help="model.keras, or a run folder holding one")
    parser.add_argument("--data", required=True, help="dataset spec (see adtf-fit --help)")
    parser.add_argument("--out", default=None, help="report folder (default: <run>/eval-<dataset>)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    from adtf import data
    from adtf.detectors import load
    from adtf.evaluate import evaluate

    model_path = _model_path(args.model)
    detector = load(model_path)
    dataset = data.load(args.data, seed=args.seed)
    if not dataset.test:
        raise AdtfError(f"{args.data} has no test images to evaluate on")
    out = Path(args.out or model_path.parent / f"eval-{_slug(dataset.name)}")
    results = evaluate(detector, dataset, out, batch_size=args.batch_size, verbose=not args.quiet)
    print(results_table(results))
    print(f"\n  report: {out / 'report.md'}")
    return 0


def _model_path(path):
    path = Path(path)
    if path.is_dir():
        path = path / "model.keras"
    if not path.is_file():
        raise AdtfError(f"no saved detector at {path} (expected a .keras file or a run folder holding model.keras)")
    return path


@_friendly_errors("adtf-export")
def export_main(argv=None):
    """``adtf-export MODEL``: write a SavedModel, optionally at another working point (no refit)."""
    parser = argparse.ArgumentParser(prog="adtf-export", description="Export a saved detector as a SavedModel for TF Serving.")
    parser.add_argument("model", help="model.keras, or a run folder holding one")
    parser.add_argument("--out", default=None, help="SavedModel folder (default: <run>/saved_model)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--working-point", default=None, help="a calibrated working point, e.g. threshold1 ... threshold6")
    group.add_argument("--threshold", type=float, default=None, help="an explicit threshold on --score")
    parser.add_argument("--score", default=None, help="the score an explicit --threshold applies to (e.g. d_max, d_mean)")
    parser.add_argument("--save-model", action="store_true", help="also write the new working point back into MODEL")
    args = parser.parse_args(argv)
    from adtf.atomic import atomic_path
    from adtf.detectors import load

    model_path = _model_path(args.model)
    detector = load(model_path)
    if args.working_point or args.threshold is not None:
        detector.set_working_point(args.working_point, value=args.threshold, score=args.score)
    out = Path(args.out or model_path.parent / "saved_model")
    detector.export(out)
    if args.save_model:
        with atomic_path(model_path, suffix=".keras") as tmp:
            detector.save(tmp)
    print(f"SavedModel written to {out} (working point {detector.working_point}, threshold {float(detector.threshold.numpy()):.6g})")
    return 0


@_friendly_errors("adtf-bench")
def bench_main(argv=None):
    """``adtf-bench --data SPEC [SPEC ...]``: fit + evaluate per dataset, print a markdown table."""
    parser = argparse.ArgumentParser(prog="adtf-bench", description="Fit and evaluate one method on several datasets.")
    parser.add_argument("--method", default="mon")
    parser.add_argument("--preset", default=None)
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    rows = []
    for spec in args.data:
        out = Path(args.out) / _slug(spec)
        fit_args = ["--method", args.method, "--data", spec, "--out", str(out), "--batch-size", str(args.batch_size),
                    "--seed", str(args.seed), "--no-export"] + (["--preset", args.preset] if args.preset else []) \
            + (["--quiet"] if args.quiet else [])
        if fit_main(fit_args) != 0:
            return 2
        rows.append(_read_json(out / "metrics.json"))
    print("\n" + bench_table(rows, argv))
    return 0


def _read_json(path):
    import json

    return json.loads(Path(path).read_text())


def bench_table(rows, argv=None):
    """Markdown table of several ``metrics.json`` dicts, with the command and machine that produced them."""
    command = shlex.join(["adtf-bench", *(sys.argv[1:] if argv is None else argv)])
    lines = ["| method | dataset | image AUROC | d_max / d_mean AUROC | best TPR / TNR | best working point AUC | pixel AUROC | AUPRO | img/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        by = r.get("image_auroc_by_score", {})
        split = " / ".join(f"{by[k]:.3f}" for k in ("d_max", "d_mean") if k in by) or "-"
        wp = max((w["auc"] for w in r["working_points"].values()), default=None)
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        lines.append(f"| {r['method']} | {r['dataset']} | {fmt(r['image_auroc'])} | {split} | "
                     f"{fmt(r.get('best_tpr'))} / {fmt(r.get('best_tnr'))} | {fmt(wp)} | {fmt(r['pixel_auroc'])} | "
                     f"{fmt(r['aupro'])} | {r['images_per_second']:.1f} |")
    machine = rows[0]["machine"] if rows else ""
    return "\n".join(lines) + f"\n\n`{command}` on {machine}, {rows[0]['date'] if rows else ''}"


@_friendly_errors("adtf-verify")
def verify_main(argv=None):
    """``adtf-verify SPEC``: check a local dataset copy against its manifest in data_manifests/."""
    parser = argparse.ArgumentParser(prog="adtf-verify", description="Check a local dataset copy against its manifest.")
    parser.add_argument("spec", help="dataset spec, e.g. mvtec:/data/mvtec/bottle or mtd:/data/mtd")
    parser.add_argument("--manifest", default=None, help="manifest name (default: from the spec)")
    args = parser.parse_args(argv)
    from adtf.data import manifests

    report = manifests.verify(args.spec, args.manifest)
    print(report)
    return 0 if getattr(report, "ok", True) else 1


if __name__ == "__main__":
    sys.exit(fit_main())
