"""Stand-ins of the shape and format of data we do not have, for the record's cost runs (time, memory, speed): their
accuracy figures say nothing, since their pixels carry no defect the real data's would.

Usage:
  python benchmarks/make_cost_standins.py bottle900 ../shared/datasets/mvtec_bottle /tmp/bottle900
      the shared 256-px bottle copy upscaled (bicubic) to MVTec AD's native 900x900, its layout kept
      (train/good, test/<defect>, ground_truth where present, masks nearest-neighbour)
  python benchmarks/make_cost_standins.py cifar-random /tmp/cifar_rand [--seed 0]
      CIFAR-10's Python version (cifar-10-batches-py: data_batch_1..5, test_batch, batches.meta) at the official
      counts (5,000 training and 1,000 test images per class) with seeded random pixels
then, e.g.: adtf-fit --method simplenet --data mvtec:/tmp/bottle900
            adtf-fit --method simplenet --preset fast --data cifar:/tmp/cifar_rand:cat
"""
import argparse
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def bottle900(src, dst, side=900):
    images = sorted(p for p in src.rglob("*.png") if p.is_file())
    if not images:
        raise SystemExit(f"{src}: no PNG images")
    for path in images:
        out = dst / path.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        is_mask = "ground_truth" in path.relative_to(src).parts
        with Image.open(path) as image:
            image.resize((side, side), Image.NEAREST if is_mask else Image.BICUBIC).save(out)
    print(f"{len(images)} images upscaled to {side}x{side} into {dst}")


def cifar_random(dst, seed=0):
    rng = np.random.default_rng(seed)
    folder = dst / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def batch(per_class, name):
        labels = rng.permutation(np.repeat(np.arange(10), per_class)).tolist()
        pixels = rng.integers(0, 256, (len(labels), 32 * 32 * 3), dtype=np.uint8)
        with open(folder / name, "wb") as handle:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": pixels,
                         b"filenames": [f"{name}_{i}.png".encode() for i in range(len(labels))]}, handle)

    for i in range(1, 6):
        batch(1000, f"data_batch_{i}")  # 5 x 10,000: 5,000 per class
    batch(1000, "test_batch")
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_cases_per_batch": 10000,
                     b"num_vis": 3072}, handle)
    print(f"CIFAR-10's format with random pixels (seed {seed}) in {folder}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = parser.add_subparsers(dest="kind", required=True)
    upscaled = kinds.add_parser("bottle900", help="an MVTec-layout folder upscaled to 900x900")
    upscaled.add_argument("src", type=Path)
    upscaled.add_argument("dst", type=Path)
    random = kinds.add_parser("cifar-random", help="CIFAR-10's Python version with random pixels")
    random.add_argument("dst", type=Path)
    random.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.kind == "bottle900":
        bottle900(args.src, args.dst)
    else:
        cifar_random(args.dst, args.seed)


if __name__ == "__main__":
    main()
