"""A trained method's presets on the shared data: accuracy over seeds, fit cost, scoring speed and latency.

Usage: python benchmarks/bench_presets.py [--method simplenet] [--data SPEC ...] [--presets fast offline]
       [--seeds 0 1 2] [--n-train N] [--option KEY=VALUE ...] [--out runs/bench_METHOD]

Each (dataset, preset, seed) goes through the one runner as `adtf-fit --method METHOD` would run it
(calibration on 20 % held-out normal images, the last epoch kept, nothing chosen on test data). One
difference: each spec is loaded once, so its split (MTD's, a one-class set's) and its drawn images (a
synthetic set's) are the spec's own, seed 0 unless it says `seed=N`, for every seed; a seed varies the
calibration hold-out, the initialisation and the training's randomness (`adtf-fit --seed N` and
`adtf-bench --seeds` draw the split anew too). Prints a markdown table of mean ± std over seeds, the command and the machine.
`--n-train 2` is the few-shot protocol of paper 004's Fig. 10 (2 normal training images; with
fewer than 5 the calibration images are the training images, since none can be spared).
`--option scoring=gde` overrides a detector option (a baseline or an ablation; values read as YAML).
"""
import argparse
import os
import shlex
import statistics
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from adtf import data, machine  # noqa: E402
from adtf.cli import mean_and_spread  # noqa: E402
from adtf.run import fit_evaluate_export, slug  # noqa: E402

DEFAULT_DATA = ["mvtec:mvtec_bottle", "mtd:mtd", "synthetic:brick"]


def latency(detector, image_size, batch, repeats=5):
    """ms per image of the whole detector (frozen-graph path) at a batch size, after one warm-up call."""
    images = np.random.default_rng(0).random((batch, *image_size, 3)).astype("float32")
    detector.infer(images)
    start = time.perf_counter()
    for _ in range(repeats):
        detector.infer(images)
    return 1000 * (time.perf_counter() - start) / (repeats * batch)


def few_shot(dataset, n, seed):
    """The dataset with only ``n`` normal training images (seeded choice)."""
    from adtf.data import split_off

    _, kept = split_off(dataset.train, count=n, seed=seed)
    return data.AnomalyDataset(f"{dataset.name} ({n}-shot)", kept, dataset.test, dataset.has_masks, dataset.arrays)


def stages(info):
    """What a fit measured about its stages (``fit_info``: cache, statistics, dictionary), compactly."""
    return ", ".join(f"{key} {value:.0f}" if isinstance(value, float) else f"{key} {value}"
                     for key, value in info.items() if not isinstance(value, (list, dict))) or "—"


def fmt(values):
    return mean_and_spread(*values)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="simplenet")
    parser.add_argument("--data", nargs="+", default=DEFAULT_DATA)
    parser.add_argument("--presets", nargs="+", default=["fast", "offline"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--n-train", type=int, default=None, help="few-shot: this many normal training images")
    parser.add_argument("--calibration-folds", type=int, default=0,
                        help="K-fold cross-fitted calibration instead of the hold-out (adtf-fit --calibration-folds)")
    parser.add_argument("--option", nargs="*", default=[], metavar="KEY=VALUE", help="detector option overrides")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    import yaml

    options = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.option)}
    out = args.out or f"runs/bench_{args.method}" + "".join(f"-{k}-{v}" for k, v in options.items())
    from adtf.detectors import load

    rows = []
    for spec in args.data:
        dataset = data.load(spec)
        for preset in args.presets:
            runs = []
            for seed in args.seeds:
                ds = few_shot(dataset, args.n_train, seed) if args.n_train else dataset
                fraction = 0.0 if args.n_train and args.n_train < 5 else None
                folder = f"{out}/{slug(spec)}-{preset}-{seed}"
                r = fit_evaluate_export(args.method, ds, preset, folder, detector=options, seed=seed,
                                        calibration_fraction=fraction, calibration_folds=args.calibration_folds,
                                        export=False, verbose=False)
                detector = load(f"{folder}/model.keras")
                r["latency_b1"] = latency(detector, tuple(r["image_size"]), 1)
                r["latency_b16"] = latency(detector, tuple(r["image_size"]), 16)
                runs.append(r)
                active = r["working_points"][r["active_working_point"]]
                print(f"{args.method} {options or ''} {ds.name} {preset} seed {seed}: image AUROC {fmt([r['image_auroc']])}, "
                      f"pixel {fmt([r['pixel_auroc']])}, AUPRO {fmt([r['aupro']])}, active working point TNR "
                      f"{fmt([active['tnr']])} / TPR {fmt([active['tpr']])}, fit {r['fit_seconds']:.0f} s, "
                      f"all {r['seconds']:.0f} s", flush=True)
            rows.append((ds.name, preset, runs))
    print(f"\n{args.method} {options or ''}")
    print("\n| data | preset | seeds | image AUROC | pixel AUROC | AUPRO | FPR at 100 % recall | factory threshold | "
          "fit s | s/epoch | fit stages (fit_info) | img/s | ms/img b1 / b16 | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, preset, runs in rows:
        get = lambda key: [r.get(key) for r in runs]  # noqa: E731
        info = runs[0]["fit_info"]
        epochs = [statistics.mean(r["history"]["epoch_seconds"]) for r in runs if r["history"].get("epoch_seconds")]
        epoch_s = f"{statistics.mean(epochs):.1f}" if epochs else "—"  # MoN trains no epochs: one pass of statistics
        print(f"| {name} | {preset} | {len(runs)} | {fmt(get('image_auroc'))} | {fmt(get('pixel_auroc'))} | "
              f"{fmt(get('aupro'))} | {fmt(get('fpr_at_full_recall'))} | {fmt(get('factory_threshold'))} | "
              f"{statistics.mean(get('fit_seconds')):.0f} | {epoch_s} | {stages(info)} | "
              f"{statistics.mean(get('images_per_second')):.1f} | "
              f"{statistics.mean(get('latency_b1')):.1f} / {statistics.mean(get('latency_b16')):.1f} | "
              f"{max(get('peak_rss_mb')):.0f} |")
    print(f"\n`python {shlex.join(['benchmarks/bench_presets.py', *(sys.argv[1:] if argv is None else argv)])}` "
          f"on {machine.description()}, {machine.today()}")


if __name__ == "__main__":
    main()
