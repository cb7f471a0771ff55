"""One-class protocols: each class of a labelled set is "normal" in turn, the other classes are anomalies.

Usage: python benchmarks/bench_one_class.py --method pyramid_ae --data mnist:mnist|cifar:PATH|coil:PATH
       [--classes 0 1 ... 9] [--preset fast] [--epochs N] [--option KEY=VALUE ...] [--seed 0]
       [--out runs/one_class_METHOD]

MNIST: the shared copy holds only the 10,000-image test split, so ``adtf.data`` makes a seeded split
of it (80 % of the normal class's images train, the rest of them and every other digit test: ~800
training and ~9,200 test images per class). Paper 003 (Table III) trains on the 60,000-image train
split; the protocol is the same, the training set is smaller. CIFAR-10 (``cifar:PATH``, the files as
distributed): the normal class's 5,000 training images fit and the 10,000 test images evaluate (paper
002's protocol). COIL-100 (``coil:PATH --classes 1 2 ... 100``, objects by their file names' numbers): 58 of
the normal object's 72 views fit, the rest and every other object's views evaluate. Prints the image AUROC per class and the mean, with the command and the machine.
"""
import argparse
import os
import shlex
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from adtf import machine  # noqa: E402
from adtf.run import fit_evaluate_export  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="pyramid_ae")
    parser.add_argument("--data", default="mnist:mnist", help="a dataset spec taking a :CLASS suffix")
    parser.add_argument("--classes", nargs="+", type=int, default=list(range(10)))
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--epochs", type=int, default=None, help="instead of the preset's (a reduced schedule)")
    parser.add_argument("--option", nargs="*", default=[], metavar="KEY=VALUE", help="detector option overrides")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    import yaml

    options = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.option)}
    out = args.out or f"runs/one_class_{args.method}"
    results = {}
    for k in args.classes:
        r = fit_evaluate_export(args.method, f"{args.data}:{k}", args.preset, f"{out}/class-{k}", detector=options,
                                fit={"epochs": args.epochs} if args.epochs else None, seed=args.seed, export=False,
                                verbose=False)
        results[k] = r
        print(f"class {k}: image AUROC {r['image_auroc']:.3f} ({r['n_train']} training, {r['n_test']} test images, "
              f"fit {r['fit_seconds']:.0f} s, whole run {r['seconds']:.0f} s)", flush=True)
    print(f"\n{args.method}, preset {args.preset}" + (f", {args.epochs} epochs (reduced)" if args.epochs else "")
          + (f", options {options}" if options else ""))
    print("\n| " + " | ".join(str(k) for k in results) + " | mean |")
    print("|---" * (len(results) + 1) + "|")
    aurocs = [r["image_auroc"] for r in results.values()]
    print("| " + " | ".join(f"{a:.3f}" for a in aurocs) + f" | {statistics.mean(aurocs):.3f} |")
    print(f"\n`python {shlex.join(['benchmarks/bench_one_class.py', *(sys.argv[1:] if argv is None else argv)])}` "
          f"on {machine.description()}, {machine.today()}")


if __name__ == "__main__":
    main()
