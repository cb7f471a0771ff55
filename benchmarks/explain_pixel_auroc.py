"""Where a fitted run's pixel AUROC comes from: by defect type, without the maps' border bands, and with each map
shifted by its own median.

Usage: python benchmarks/explain_pixel_auroc.py --run runs/simplenet-mtd --data mtd:mtd [--seed 0] [--bands 8 16 32]

Loads the run's ``model.keras`` (safe mode), scores the test images of ``--data`` (the same spec and seed as the
fit, so that its test split is the run's), and prints:
- the pixel AUROC over all pixels, as the run's report gives it;
- by defect type: the normal test images' pixels against that type's, with the share of the defect images' area
  that is defect (the types with the most defect pixels weigh most in the pooled figure);
- the good images' maps' mean by row and by column, and the figure without the outer ``--bands`` pixels of every
  map and mask (do the borders, where the backbone sees padding, hold the figure down?);
- each map shifted by its own median (is it the maps' levels between images, not where they peak, that costs?);
- the median over defective images of each image's own pixel AUROC (how well a map finds its own defect).
A diagnostic of a test set's figure, for the record's discussion; it chooses nothing.
"""
import argparse
import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from adtf import data, machine, metrics  # noqa: E402
from adtf.detectors import load  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a run folder holding model.keras")
    parser.add_argument("--data", required=True, help="the spec the run was fitted on")
    parser.add_argument("--seed", type=int, default=0, help="the run's --seed (its test split)")
    parser.add_argument("--bands", nargs="*", type=int, default=[8, 16, 32])
    args = parser.parse_args(argv)
    detector = load(os.path.join(args.run, "model.keras"))
    dataset = data.load(args.data, seed=args.seed)
    if not dataset.has_masks:
        parser.error(f"{args.data} has no masks: no pixel AUROC to explain")
    batches = data.pipeline(dataset.test, arrays=dataset.arrays, image_size=detector.image_size, batch_size=16)
    outputs = detector.score_dataset(batches, verbose=False, keep_masks=True)
    masks = detector.scored_part(outputs["mask"])
    maps = detector.scored_part(outputs["anomaly_map"])
    labels = outputs["label"].astype(int)
    defects = np.array([sample.defect for sample in dataset.test])
    known = np.array([s.label == 0 or s.mask_path is not None for s in dataset.test])  # as the evaluation keeps them
    masks, maps, labels, defects = masks[known], maps[known], labels[known], defects[known]
    centred = maps - np.median(maps, axis=(1, 2), keepdims=True)
    normal = labels == 0
    print(f"{args.data}, {args.run}: {len(maps)} maps of {maps.shape[1]}x{maps.shape[2]}")
    print(f"pixel AUROC, all pixels: {metrics.pixel_auroc(masks, maps):.3f} "
          f"(each map shifted by its own median: {metrics.pixel_auroc(masks, centred):.3f})")
    total = masks[~normal].sum()
    for defect in sorted(set(defects[~normal])):
        keep, own = normal | (defects == defect), defects == defect
        print(f"  {defect}: {metrics.pixel_auroc(masks[keep], maps[keep]):.3f} (median-shifted "
              f"{metrics.pixel_auroc(masks[keep], centred[keep]):.3f}); {int(own.sum())} images, defect "
              f"{masks[own].mean():.3f} of their area, {masks[own].sum() / total:.0%} of all defect pixels")
    height, width = maps.shape[1:]
    rows, columns = maps[normal].mean(axis=(0, 2)), maps[normal].mean(axis=(0, 1))
    print(f"the good images' maps, mean by row: {rows.min():.2f} to {rows.max():.2f} (edges {rows[0]:.2f}, "
          f"{rows[-1]:.2f}); by column: {columns.min():.2f} to {columns.max():.2f} (edges {columns[0]:.2f}, "
          f"{columns[-1]:.2f})")
    for band in args.bands:
        inner = (slice(None), slice(band, height - band), slice(band, width - band))
        outer = 1 - masks[inner].sum() / masks.sum()
        print(f"without the outer {band} px: {metrics.pixel_auroc(masks[inner], maps[inner]):.3f} "
              f"({outer:.0%} of the defect pixels lie in that band)")
    own = [metrics.pixel_auroc(masks[i:i + 1], maps[i:i + 1]) for i in np.flatnonzero(~normal)
           if 0 < masks[i].mean() < 1]
    print(f"each defective image's own pixel AUROC: median {np.median(own):.3f}, mean {np.mean(own):.3f} "
          f"({len(own)} images)")
    print(f"\n`python benchmarks/explain_pixel_auroc.py {' '.join(sys.argv[1:] if argv is None else argv)}` on "
          f"{machine.description()}, {machine.today()}")


if __name__ == "__main__":
    main()
