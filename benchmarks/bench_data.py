"""How fast adtf.data validates (load) and feeds images (pipeline) on the shared datasets.

Run: python benchmarks/bench_data.py [--image-size 224] [--batch-size 16]

``load`` decodes every image and mask to validate them (with PIL, and with TensorFlow as training does). ``pipeline`` is measured
without its cache (every pass decodes and resizes again), over train + test of each
dataset; the first pass includes building the tf.data graph.
"""
import argparse
import os
import sys
import time

from adtf import machine
from adtf.data import load, pipeline
from adtf.paths import datasets_root


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--passes", type=int, default=2)
    args = parser.parse_args(argv)
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {machine.description()}, load average {os.getloadavg()[0]:.1f}")
    print(f"pipeline: image_size={args.image_size}, batch_size={args.batch_size}, no cache\n")
    print("| dataset | images | load() validation s | pipeline pass | s | images/s |")
    print("|---|---|---|---|---|---|")
    for name, spec in (("mvtec_bottle", "mvtec:mvtec_bottle"), ("mtd", "mtd:mtd")):
        if not (datasets_root() / name).is_dir():
            print(f"| {name} | missing under {datasets_root()} | | | | |")
            continue
        start = time.perf_counter()
        dataset = load(spec)
        validation = time.perf_counter() - start
        samples = dataset.train + dataset.test
        data = pipeline(samples, image_size=args.image_size, batch_size=args.batch_size)
        for attempt in range(1, args.passes + 1):
            start = time.perf_counter()
            count = sum(int(batch[1].shape[0]) for batch in data)
            seconds = time.perf_counter() - start
            print(f"| {name} | {count} | {validation:.2f} | {attempt} | {seconds:.2f} | {count / seconds:.0f} |")


if __name__ == "__main__":
    main()
