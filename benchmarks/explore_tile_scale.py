"""SimpleNet on tiles of many sizes: every tile resized to one input (what the presets do) against every tile fed at
its own scale (each side rounded to a multiple of 32, the deepest tap's stride), so that a millimetre of surface
covers the same pixels in every tile.

Usage: python benchmarks/explore_tile_scale.py --data mtd:mtd --scale one|own [--split-seed 1] [--seed 0]

MTD's tiles are 103-632 px wide and 222-403 px tall; the presets resize all of them to the training tiles' median
size (320x256), which stretches a narrow tile's texture up to 2.5x and squeezes a wide one's 2.4x along one side.
This trains the ``fast`` preset's head and schedule (16 epochs, batch 8 images, every location of each) on each
arm's backbone features of every normal training tile (no calibration hold-out), then prints the test image AUROC
and a pixel AUROC on masks at the tiles' own size (every 4th pixel in each direction). An exploration on the shared
data's validation splits (benchmarks/README.md, "Tiles at their own scale"), not a result to report as the
method's accuracy.
"""
import argparse
import os
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402

from adtf import backbones, data, machine  # noqa: E402
from adtf.detectors.simplenet import SimpleNet  # noqa: E402
from adtf.metrics import image_auroc  # noqa: E402
from adtf.run import data_image_size  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="mtd:mtd")
    parser.add_argument("--scale", choices=("one", "own"), required=True)
    parser.add_argument("--split-seed", type=int, default=1, help="the dataset's split (0 is the results table's)")
    parser.add_argument("--seed", type=int, default=0, help="the head's initialisation and noise")
    args = parser.parse_args()
    keras.utils.set_random_seed(args.seed)
    dataset = data.load(args.data, seed=args.split_seed)
    one_size, _ = data_image_size(dataset, SimpleNet.image_size_range, SimpleNet.image_size_multiple)
    head = SimpleNet.from_preset("fast", image_size=one_size, seed=args.seed)
    head.compile()
    taps = backbones.build(head.backbone_name, input_shape=(None, None, 3), layers=list(head.layer_names))

    @tf.function(reduce_retracing=True)
    def local_features(images):
        levels = taps(images, training=False)
        return head.aggregate([levels[name] for name in head.layer_names])

    def features(path):
        image = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255.0
        size = one_size if args.scale == "one" else [max(96, round(side / 32) * 32) for side in image.shape[:2]]
        resized = tf.clip_by_value(tf.image.resize(image[None], size, antialias=True), 0.0, 1.0)
        return np.asarray(local_features(resized)[0], np.float16), image.shape[:2]

    started = time.perf_counter()
    train = [features(sample.path)[0].reshape(-1, head.embed_dim) for sample in dataset.train]
    print(f"features of {len(train)} training tiles in {time.perf_counter() - started:.0f} s", flush=True)
    flat = np.concatenate(train).astype(np.float32)
    head.feature_gain.assign(1.0 / float(np.sqrt(np.mean(flat.var(axis=0)))))  # the module's feature scale
    del flat
    step = tf.function(head.train_step, reduce_retracing=True)
    rng, epochs = np.random.default_rng(args.seed), head.epochs_for(len(train))
    for epoch in range(epochs):
        order = rng.permutation(len(train))
        for start in range(0, len(order), head.batch_size):
            logs = step(tf.constant(np.concatenate([train[i] for i in order[start:start + head.batch_size]]),
                                    tf.float32))
        print(f"epoch {epoch + 1}/{epochs}: loss {float(logs['loss']):.4f}, {time.perf_counter() - started:.0f} s",
              flush=True)
    scores, labels, pixel_scores, pixel_labels = [], [], [], []
    for sample in dataset.test:
        local, (height, width) = features(sample.path)
        grid = np.asarray(head.grid_scores(tf.constant(local[None], tf.float32)))[0]
        scores.append(grid.max())
        labels.append(sample.label)
        heat = gaussian_filter(tf.image.resize(grid[None, ..., None], (height, width))[0, ..., 0].numpy(),
                               head.smoothing_sigma)
        mask = (np.asarray(Image.open(sample.mask_path).convert("L")) > 127 if sample.mask_path
                else np.zeros((height, width), bool))
        pixel_scores.append(heat[::4, ::4].ravel())
        pixel_labels.append(mask[::4, ::4].ravel())
    pixel = image_auroc(np.concatenate(pixel_labels), np.concatenate(pixel_scores))
    print(f"{args.data} split {args.split_seed}, {'one size ' + 'x'.join(map(str, one_size)) if args.scale == 'one' else 'each tile at its own scale'}, "
          f"seed {args.seed}: image AUROC {image_auroc(labels, scores):.3f}, pixel AUROC {pixel:.3f} "
          f"({time.perf_counter() - started:.0f} s; {machine.description()})")


if __name__ == "__main__":
    main()
