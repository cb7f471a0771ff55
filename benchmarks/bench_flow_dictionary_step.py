"""Cost of one training step of paper 001's detector (CutPaste + flow), per preset, on random images.

Usage: python benchmarks/bench_flow_dictionary_step.py [--presets paper offline fast] [--steps 5]

Speed does not depend on weight values, so backbones are built with random weights (``weights=None``):
this measures the `paper` preset (AlexNet at 128x128) where its ImageNet weights cannot be had. A step
takes ``batch_size`` normal images (crops of the preset's ``train_crop``, or whole images), makes their
CutPaste versions and trains backbone, classifier and flow on both; one warm-up step first. Also prints
the `paper` schedule's length on a set of N training images (``--n-train``).
"""
import argparse
import os
import sys
import time

import numpy as np
import tensorflow as tf

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from adtf import machine  # noqa: E402
from adtf.detectors import FlowDictionary  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["paper", "offline", "fast"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=256, help="size for the presets that follow the data")
    parser.add_argument("--n-train", type=int, default=280, help="training images, for the schedule's length")
    args = parser.parse_args(argv)
    print("| preset | trains on | images per step | s / training step | steps in the schedule | schedule here |")
    print("|---|---|---|---|---|---|")
    for preset in args.presets:
        options = FlowDictionary.preset_options(preset)
        options["image_size"] = options["image_size"] or (args.image_size, args.image_size)
        detector = FlowDictionary(**{**options, "weights": None})
        detector.prepare_training()
        images = np.random.default_rng(0).random((detector.batch_size, *detector.image_size, 3)).astype("float32")
        step = tf.function(detector.train_step)  # what Keras' fit runs per batch
        images = tf.constant(images)
        step(images)  # warm-up (traces the graph)
        start = time.perf_counter()
        for _ in range(args.steps):
            logs = step(images)
        float(logs["loss"])
        seconds = (time.perf_counter() - start) / args.steps
        per_epoch = detector.steps_per_epoch or -(-args.n_train // detector.batch_size)
        total = per_epoch * detector.epochs
        side = detector.train_crop or detector.image_size[0]
        print(f"| {preset} | {side}x{side} | {2 * detector.batch_size} | {seconds:.2f} | {total} "
              f"({detector.epochs} x {per_epoch}) | {total * seconds / 60:.0f} min |", flush=True)
    print(f"\n`python {' '.join(['benchmarks/bench_flow_dictionary_step.py', *(sys.argv[1:] if argv is None else argv)])}` "
          f"on {machine.description()}, {machine.today()}")


if __name__ == "__main__":
    main()
