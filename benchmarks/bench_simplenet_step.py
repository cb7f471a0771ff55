"""Cost of one SimpleNet training step and of the feature pass, per preset, on random inputs.

Usage: python benchmarks/bench_simplenet_step.py [--presets paper offline fast] [--steps 5]

Speed does not depend on weight values, so backbones are built with random weights
(``weights=None``): this measures the `paper` preset (WRN50 at 288x288) where its ImageNet
weights cannot be had. The step is timed on random aggregated features of the preset's
shape (what the cache feeds it); the feature pass on random images. One warm-up each.
"""
import argparse
import os
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from adtf import machine  # noqa: E402
from adtf.detectors import SimpleNet  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["paper", "offline", "fast"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=256, help="size for the presets that follow the data")
    args = parser.parse_args(argv)
    print("| preset | input | feature grid x dim | batch | s / training step | feature pass img/s |")
    print("|---|---|---|---|---|---|")
    for preset in args.presets:
        options = SimpleNet.preset_options(preset)
        options["image_size"] = options["image_size"] or (args.image_size, args.image_size)
        detector = SimpleNet(**{**options, "weights": None})
        detector.prepare_training()
        images = np.random.default_rng(0).random((detector.batch_size, *detector.image_size, 3)).astype("float32")
        local = np.asarray(detector.fast_local_features(images))  # warm-up, and the step's input shape
        start = time.perf_counter()
        for _ in range(args.steps):
            np.asarray(detector.fast_local_features(images))
        feature_rate = args.steps * len(images) / (time.perf_counter() - start)
        detector.make_train_function()
        step = detector.train_function
        import tensorflow as tf

        data = iter(tf.data.Dataset.from_tensors(local).repeat())
        step(data)  # warm-up (traces the graph)
        start = time.perf_counter()
        for _ in range(args.steps):
            logs = step(data)
        np.asarray(logs["loss"])
        step_seconds = (time.perf_counter() - start) / args.steps
        print(f"| {preset} | {detector.image_size[0]}x{detector.image_size[1]} | {local.shape[1]}x{local.shape[2]}x"
              f"{local.shape[3]} | {len(images)} | {step_seconds:.3f} | {feature_rate:.1f} |", flush=True)
    print(f"\n`python benchmarks/bench_simplenet_step.py {' '.join(sys.argv[1:] if argv is None else argv)}` "
          f"on {machine.description()}, {machine.today()}")


if __name__ == "__main__":
    main()
