"""A copy of MTD in which every tile and its mask are turned by one seeded random angle: a stand-in for parts that
lie at random orientations (an MVTec object category shot that way is among the data adtf is judged on, and we have
no copy of it).

Usage: python benchmarks/make_rotated_mtd.py SRC DST [--seed 0]
then, e.g.: python benchmarks/explore_simplenet_noise.py --data mtd:DST --sigmas 0.5 --epochs 16 --every 8 --baselines

The angle is uniform in [0, 360); the turned tile keeps all its pixels (the canvas grows, its corners black), the
image bilinear and re-saved as JPEG (quality 95), the mask nearest-neighbour. Normal and defective tiles are
treated alike.
"""
import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, help="an MTD folder (MT_<Class>/Imgs/<id>.jpg + <id>.png)")
    parser.add_argument("dst", type=Path, help="where to write the turned copy")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    tiles = sorted(args.src.glob("MT_*/Imgs/*.jpg"))
    if not tiles:
        parser.error(f"{args.src}: no MT_<Class>/Imgs/*.jpg tiles")
    for image_path in tiles:
        angle = float(rng.uniform(0, 360))
        out = args.dst / image_path.relative_to(args.src)
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(image_path) as image:
            image.convert("L").rotate(angle, Image.BILINEAR, expand=True).save(out, quality=95)
        if image_path.with_suffix(".png").exists():
            with Image.open(image_path.with_suffix(".png")) as mask:
                mask.convert("L").rotate(angle, Image.NEAREST, expand=True).save(out.with_suffix(".png"))
    print(f"{len(tiles)} tiles turned into {args.dst} (seed {args.seed})")


if __name__ == "__main__":
    main()
