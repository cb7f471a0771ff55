"""Cost of one training step of a trained method, per preset, on random inputs and random weights.

Usage: python benchmarks/bench_step.py [--method simplenet|flow_dictionary|piade|pyramid_ae]
       [--presets paper offline fast] [--steps 5] [--image-size 256] [--n-train 280]

Speed does not depend on weight values, so backbones are built with random weights (``weights=None``):
this measures the `paper` presets (SimpleNet: WRN50 at 288x288; flow_dictionary: AlexNet at 128x128)
where their ImageNet weights cannot be had. One warm-up call each, then the mean over ``--steps``.

- simplenet: the step on random aggregated features of the preset's shape (what its cache feeds it),
  and the feature pass on random images;
- flow_dictionary: a step takes ``batch_size`` normal images (crops of ``train_crop``, or whole images),
  makes their CutPaste versions and trains backbone, classifier and flow; also the schedule's length on
  ``--n-train`` training images where a preset's epochs are passes over the data.
- piade, pyramid_ae: a step is forward + backward of encoder, bottleneck and decoder plus the frozen
  perceptual network, on ``batch_size`` images at the preset's size (``--image-size`` overrides it:
  32 for CIFAR-sized inputs); the schedule is ``epochs`` passes over ``--n-train`` images.
"""
import argparse
import os
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

from adtf import machine  # noqa: E402
from adtf.detectors import REGISTRY  # noqa: E402


def seconds_per_call(fn, arg, repeats):
    """Mean seconds of ``fn(arg)`` over ``repeats`` calls, after one warm-up call; also the last result."""
    result = fn(arg)
    start = time.perf_counter()
    for _ in range(repeats):
        result = fn(arg)
    tf.nest.map_structure(np.asarray, result)  # wait for the values
    return (time.perf_counter() - start) / repeats, result


def simplenet_row(detector, args):
    images = np.random.default_rng(0).random((detector.batch_size, *detector.image_size, 3)).astype("float32")
    feature_seconds, local = seconds_per_call(detector.fast_local_features, images, args.steps)
    detector.make_train_function()
    step_seconds, _ = seconds_per_call(detector.train_function, iter(tf.data.Dataset.from_tensors(local).repeat()),
                                       args.steps)
    local = np.asarray(local)
    return (f"{detector.image_size[0]}x{detector.image_size[1]} | {local.shape[1]}x{local.shape[2]}x{local.shape[3]} | "
            f"{len(images)} | {step_seconds:.3f} | {len(images) / feature_seconds:.1f}")


def flow_dictionary_row(detector, args):
    images = tf.constant(np.random.default_rng(0).random((detector.batch_size, *detector.image_size, 3)), tf.float32)
    step_seconds, _ = seconds_per_call(tf.function(detector.train_step), images, args.steps)  # what fit runs per batch
    per_epoch = detector.steps_per_epoch or -(-args.n_train // detector.batch_size)
    total = per_epoch * detector.epochs
    side = detector.train_crop or detector.image_size[0]
    return (f"{side}x{side} | {2 * detector.batch_size} | {step_seconds:.2f} | {total} ({detector.epochs} x {per_epoch}) "
            f"| {total * step_seconds / 60:.0f} min")


def reconstruction_row(detector, args):
    images = tf.constant(np.random.default_rng(0).random((detector.batch_size, *detector.image_size, 3)), tf.float32)
    step_seconds, _ = seconds_per_call(tf.function(detector.train_step), images, args.steps)
    steps = -(-args.n_train // detector.batch_size) * detector.epochs
    return (f"{detector.image_size[0]}x{detector.image_size[1]} | {detector.batch_size} | {step_seconds:.2f} | "
            f"{detector.batch_size / step_seconds:.1f} | {detector.epochs} x {args.n_train} | "
            f"{steps * step_seconds / 60:.0f} min")


RECONSTRUCTION = ("input | batch | s / training step | images/s | schedule (epochs x images) | schedule here",
                  reconstruction_row)
METHODS = {
    "piade": RECONSTRUCTION,
    "pyramid_ae": RECONSTRUCTION,
    "simplenet": ("input | feature grid x dim | batch | s / training step | feature pass img/s", simplenet_row),
    "flow_dictionary": ("trains on | images per step | s / training step | steps in the schedule | schedule here",
                        flow_dictionary_row),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=sorted(METHODS), default="simplenet")
    parser.add_argument("--presets", nargs="+", default=["paper", "offline", "fast"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=None,
                        help="size for the presets that follow the data (default 256); piade/pyramid_ae: instead of 120")
    parser.add_argument("--batch-size", type=int, default=None, help="instead of the preset's")
    parser.add_argument("--n-train", type=int, default=280, help="training images, for a schedule of passes")
    args = parser.parse_args(argv)
    header, row = METHODS[args.method]
    print(f"| preset | {header} |")
    print("|---" * (header.count("|") + 2) + "|")
    cls = REGISTRY[args.method]
    for preset in args.presets:
        options = cls.preset_options(preset)
        if args.image_size or ("image_size" in options and not options["image_size"]):
            options["image_size"] = (args.image_size or 256,) * 2
            if options.get("crop"):  # the paper preset's 288 of 329, scaled to the size given
                options["crop"] = (int(round(options["image_size"][0] * 288 / 329 / 32)) * 32,) * 2
        if args.batch_size:
            options["batch_size"] = args.batch_size
        random = {"weights": None, **({"perceptual_weights": None} if "perceptual_layer" in options else {})}
        detector = cls(**{**options, **random})
        detector.prepare_training()
        print(f"| {preset} | {row(detector, args)} |", flush=True)
    print(f"\n`python benchmarks/bench_step.py {' '.join(sys.argv[1:] if argv is None else argv)}` "
          f"on {machine.description()}, {machine.today()}")


if __name__ == "__main__":
    main()
