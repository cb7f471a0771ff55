"""The ablations of papers 002 (PIADE) and 003 (pyramidal AE), retrained per variant and seed.

Usage: python benchmarks/ablate_autoencoders.py --method piade|pyramid_ae [--data mvtec:mvtec_bottle]
       [--preset fast] [--seeds 0 1 2] [--epochs N] [--variants NAME ...] [--out runs/ablate_METHOD]

Each (variant, seed) goes through the one runner (``adtf-fit``'s path: 20 % of the normal training
images held out for calibration, the last epoch kept, nothing chosen on test data). Prints mean ± std
over seeds of the image AUROC, the best (TPR, TNR) by the MVTec protocol of 002/003, the mean SSIM of
the normal test images' reconstructions (003's Fig. 3 metric) and the AUROC of each loss term alone.

- piade (002 Figs. 5-7): two vs one instantiation vector, SE blocks vs none, MSE vs MSE + SSIM vs
  all three losses;
- pyramid_ae (003 Figs. 3-5): 1, 2, 4 and 6 encoders, MSE vs MSE + perceptual.
"""
import argparse
import os
import shlex
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from adtf import data, machine  # noqa: E402
from adtf.run import fit_evaluate_export, slug  # noqa: E402

VARIANTS = {
    "piade": {
        "paper method (2 vectors, SE, MSE + perceptual + SSIM)": {},
        "one instantiation vector": {"num_vectors": 1},
        "no SE blocks": {"squeeze_excite": False},
        "MSE only": {"perceptual_weight": 0.0, "ssim_weight": 0.0},
        "MSE + SSIM": {"perceptual_weight": 0.0},
    },
    "pyramid_ae": {
        "4 encoders (paper method, MSE + perceptual)": {},
        "1 encoder": {"encoders": 1},
        "2 encoders": {"encoders": 2},
        "6 encoders": {"encoders": 6},
        "MSE only": {"perceptual_weight": 0.0},
    },
}


def fmt(values, digits=3):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=sorted(VARIANTS), default="piade")
    parser.add_argument("--data", default="mvtec:mvtec_bottle")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="instead of the preset's (say so when reporting)")
    parser.add_argument("--variants", nargs="+", default=None, help="a subset of the variant names (default: all)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    variants = VARIANTS[args.method]
    chosen = args.variants or list(variants)
    unknown = [name for name in chosen if name not in variants]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(variants)}")
    dataset = data.load(args.data)
    out = args.out or f"runs/ablate_{args.method}"
    rows = []
    for name in chosen:
        runs = []
        for seed in args.seeds:
            folder = f"{out}/{slug(args.data)}-{slug(name)}-{seed}"
            fit = {"epochs": args.epochs} if args.epochs else None
            r = fit_evaluate_export(args.method, dataset, args.preset, folder, detector=variants[name], fit=fit,
                                    seed=seed, export=False, verbose=False)
            runs.append(r)
            print(f"{name} seed {seed}: image AUROC {r['image_auroc']:.3f}, best TPR/TNR {r['best_tpr']:.2f}/"
                  f"{r['best_tnr']:.2f}, mean SSIM normal {r.get('mean_ssim_normal', float('nan')):.3f}, "
                  f"fit {r['fit_seconds']:.0f} s", flush=True)
        rows.append((name, runs))
    print(f"\n{args.method} on {dataset.name}, preset {args.preset}"
          + (f", {args.epochs} epochs (not the preset's)" if args.epochs else ""))
    print("\n| variant | seeds | image AUROC | best TPR | best TNR | mean SSIM normal / anomalous | AUROC of MSE / "
          "perceptual / 1 − SSIM alone | fit s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, runs in rows:
        get = lambda key: [r.get(key) for r in runs]  # noqa: E731
        print(f"| {name} | {len(runs)} | {fmt(get('image_auroc'))} | {fmt(get('best_tpr'), 2)} | "
              f"{fmt(get('best_tnr'), 2)} | {fmt(get('mean_ssim_normal'))} / {fmt(get('mean_ssim_anomalous'))} | "
              f"{fmt(get('image_auroc_mse'))} / {fmt(get('image_auroc_perceptual'))} / {fmt(get('image_auroc_ssim'))} | "
              f"{statistics.mean(get('fit_seconds')):.0f} |")
    print(f"\n`python {shlex.join(['benchmarks/ablate_autoencoders.py', *(sys.argv[1:] if argv is None else argv)])}` "
          f"on {machine.description()}, {machine.today()}")


if __name__ == "__main__":
    main()
