"""Peak memory and time of the pixel metrics on a test set of a given shape (default: a DAGM 2007 class's).

Usage: python benchmarks/bench_metrics_memory.py [--normal 500] [--defective 150] [--size 512]

Random anomaly maps and one 30x30 defect per defective image: the cost of ``pixel_auroc`` and ``aupro`` depends
on the number of pixels, not on what the maps show. Prints a markdown table, the command and the machine.
"""
import argparse
import shlex
import sys
import time

import numpy as np

from adtf import machine
from adtf.metrics import aupro, pixel_auroc


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--normal", type=int, default=500, help="defect-free test images")
    parser.add_argument("--defective", type=int, default=150, help="test images with a defect")
    parser.add_argument("--size", type=int, default=512, help="side of the square maps")
    args = parser.parse_args(argv)
    n, side = args.normal + args.defective, args.size
    maps = np.random.default_rng(0).random((n, side, side), dtype=np.float32)
    masks = np.zeros((n, side, side), np.uint8)
    masks[:args.defective, side // 2 - 15:side // 2 + 15, side // 2 - 15:side // 2 + 15] = 1
    inputs = machine.peak_rss_mb()
    print("| metric | seconds | peak RSS (MiB) |\n|---|---|---|")
    print(f"| (maps and masks: {n} x {side}x{side}) | — | {inputs:.0f} |")
    for name, metric in (("pixel AUROC", pixel_auroc), ("AUPRO", aupro)):
        started = time.perf_counter()
        metric(masks, maps)
        print(f"| {name} | {time.perf_counter() - started:.1f} | {machine.peak_rss_mb():.0f} |")
    print(f"\ncommand: python {shlex.join(sys.argv)}\nmachine: {machine.description()}, {machine.today()}")


if __name__ == "__main__":
    main()
