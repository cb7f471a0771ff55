"""Where SimpleNet's scoring time goes: backbone, aggregation, adaptor + discriminator, smoothing, the whole call.

Usage: python benchmarks/profile_simplenet_scoring.py [--preset offline] [--image-size 320 272] [--batch 16]
       [--repeats 4]

Random images and the preset's backbone with random weights (speed does not depend on weight values). Each stage
runs as a ``tf.function`` on the previous stage's output, one warm-up call, then the mean over ``--repeats``.
MTD is fed at 320x272; e4b2489 rewrote the aggregation and the smoothing after this profile showed them taking
as long as the backbone (run this script on e4b2489's parent for the earlier figures).
"""
import argparse
import os
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402
from keras import ops  # noqa: E402

from adtf import machine  # noqa: E402
from adtf.detectors import SimpleNet  # noqa: E402


def seconds(fn, *args, repeats):
    tf.nest.map_structure(np.asarray, fn(*args))
    start = time.perf_counter()
    for _ in range(repeats):
        tf.nest.map_structure(np.asarray, fn(*args))
    return (time.perf_counter() - start) / repeats


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="offline")
    parser.add_argument("--image-size", nargs=2, type=int, default=[320, 272])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args(argv)
    # crop=None: each stage at the size given (the paper preset's 288 crop of 329 would not fit other sizes)
    detector = SimpleNet.from_preset(args.preset, image_size=tuple(args.image_size), crop=None, weights=None)
    images = tf.constant(np.random.default_rng(0).random((args.batch, *args.image_size, 3)) * 255, tf.float32)
    taps = tf.function(lambda x: detector.features(x, training=False))(images)
    levels = [taps[name] for name in detector.layer_names]
    local = detector.aggregate(levels)

    scores = detector.grid_scores(local)
    maps = ops.image.resize(scores[..., None], detector.image_size, interpolation="bilinear")[..., 0]
    stages = {
        "backbone (Keras graph)": (tf.function(lambda x: detector.features(x, training=False)), images),
        "aggregation": (tf.function(lambda *x: detector.aggregate(list(x))), *levels),
        "adaptor + discriminator": (tf.function(detector.grid_scores), local),
        "smoothing (sigma 4)": (tf.function(detector.smoothing), maps),
        "whole scoring call (infer)": (detector.infer, images.numpy()),
    }
    print(f"| stage, batch {args.batch} at {args.image_size[0]}x{args.image_size[1]} | s per batch |")
    print("|---|---|")
    for name, (fn, *inputs) in stages.items():
        print(f"| {name} | {seconds(fn, *inputs, repeats=args.repeats):.3f} |", flush=True)
    command = ["benchmarks/profile_simplenet_scoring.py", *(sys.argv[1:] if argv is None else argv)]
    print(f"\n`python {' '.join(command)}` on {machine.description()}, {machine.today()}")


if __name__ == "__main__":
    main()
