"""Which EfficientNet-Lite0 layer should the MoN `offline` preset tap? Image AUROC per layer and dataset.

Usage: python benchmarks/bench_mon_layers.py [--data SPEC ...] [--layers a,b,c] [--image-size 224]
Prints a markdown table with the command and the machine. Every number is the
threshold-free test AUROC, reported for all layers: the preset is not chosen by
picking the best test number on any one dataset (benchmarks/README.md, Model of Normality).
"""
import argparse
import os
import shlex
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from adtf import data, machine  # noqa: E402
from adtf.run import fit_evaluate_export, slug  # noqa: E402

DEFAULT_DATA = ["synthetic:brick", "synthetic:grass", "synthetic:gravel", "mvtec:mvtec_bottle", "mtd:mtd"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", nargs="+", default=DEFAULT_DATA)
    parser.add_argument("--layers", default="block3b_add,block4c_add,block5c_add,block6d_add")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default="runs/bench_mon_layers")
    args = parser.parse_args(argv)
    layers = args.layers.split(",")
    size = (args.image_size, args.image_size)
    rows = []
    for spec in args.data:
        dataset = data.load(spec)
        for layer in layers:
            start = time.perf_counter()
            r = fit_evaluate_export("mon", dataset, out=f"{args.out}/{slug(spec)}-{layer}", batch_size=args.batch_size,
                                    detector=dict(backbone=args.backbone, layer=layer, image_size=size),
                                    export=False, verbose=False)
            best_wp = max(w["auc"] for w in r["working_points"].values())
            row = (dataset.name, layer, r["image_auroc_by_score"]["d_max"], r["image_auroc_by_score"]["d_mean"],
                   r["pixel_auroc"], r["aupro"], best_wp, r["images_per_second"], time.perf_counter() - start)
            rows.append(row)
            print(" ".join(str(x) for x in row), flush=True)
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    print("\n| dataset | layer | AUROC d_max | AUROC d_mean | pixel AUROC | AUPRO | best Table-I AUC | img/s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, layer, dmax, dmean, pix, pro, wp, ips, _ in rows:
        print(f"| {name} | {layer} | {fmt(dmax)} | {fmt(dmean)} | {fmt(pix)} | {fmt(pro)} | {fmt(wp)} | {ips:.1f} |")
    print(f"\n`python {shlex.join(['benchmarks/bench_mon_layers.py', *(sys.argv[1:] if argv is None else argv)])}` "
          f"on {machine.description()}, {machine.today()}")


if __name__ == "__main__":
    main()
