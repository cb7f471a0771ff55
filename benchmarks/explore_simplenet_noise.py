"""How SimpleNet's noise scale sigma decides what its discriminator learns, on a non-WRN50 backbone.

Usage: python benchmarks/explore_simplenet_noise.py --data mtd:mtd --sigmas 0.05 0.2 0.5 1.0 --epochs 6 [--every 2]
       [--baselines] [--backbone efficientnet_lite2 --layers block3c_add block5d_add block6e_add] [--seed 1]
       [--image-size 448 384] [--dims 768 768] [--patch-size 5] [--image-context]
       [--second efficientnet_lite0 block3b_add block5c_add block6d_add] [--dihedral 4]

``--backbone``/``--layers`` compare taps and backbones the same way (``--second`` appends another backbone's
features to the first's), ``--dihedral`` trains on turned copies of the fit images too, ``--image-size`` another input size than the
presets' rule gives, ``--dims`` the aggregation's per-level and final sizes (the head's adaptor follows the latter); ``--seed`` draws another synthetic set
(and other splits): a validation draw whose test labels are not those of the main job's seed-0 set.
``--baselines`` scores the same cached features with references that are blind to position (nearest
neighbour, one Gaussian) and that model each grid cell (its mean, a diagonal and a full Gaussian: PaDiM's
recipe), and the image size alone (``--sigmas`` with no value: those alone); each AUROC is followed by the
per-defect-type ones (benchmarks/README.md, SimpleNet).

The design experiment behind the ``offline``/``fast`` presets' sigma (benchmarks/README.md, "The noise
scale"). It caches the ``offline`` preset's aggregated features of the fit split (the runner's 80/20
calibration split, seed 0) and of the test split once, then trains SimpleNet's head (adaptor + discriminator,
the module's layers, optimizers and loss, noise from ``tf.random``) for each sigma on the cache, and prints the
test image AUROC every ``--every`` epochs. It reads test labels: an exploration on the shared data (as
issue 9 asks: choose on the shared sets, never on the data a method is finally judged on), not a result to
report as a method's accuracy; the presets' results come from ``bench_presets.py --method simplenet``.
"""
import argparse
import os
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

from adtf import data, machine  # noqa: E402
from adtf.data.pipeline import pipeline, unpack_batch  # noqa: E402
from adtf.detectors.simplenet import SimpleNet  # noqa: E402
from adtf.metrics import image_auroc, per_defect_image_auroc  # noqa: E402
from adtf.run import calibration_split, data_image_size  # noqa: E402


def standardized(batches):
    """Each image brought to one mean and spread of its pixels (0.45 and 0.15 over all its pixels and channels):
    what a camera's exposure changes (MTD's tiles were shot at seven) no longer reaches the features."""
    def standardize(image, *rest):
        mean, var = tf.nn.moments(image, axes=[1, 2, 3], keepdims=True)
        return ((image - mean) / tf.sqrt(var + 1e-6) * 0.15 + 0.45, *rest)
    return batches.map(standardize)


DIHEDRAL_ORDER = (0, 4, 2, 6, 1, 3, 5, 7)  # the first four keep a non-square image's shape: as is, mirrored, turned
# half a turn, and both (mirrored top to bottom); the last four turn it a quarter


def dihedral(batches, k):
    """Every image under the ``k``-th symmetry of the square (``k % 4`` quarter turns, mirrored first when ``k >= 4``):
    a normal part at another orientation is a normal part, which the cache of the fit images then holds."""
    def turn(image, *rest):
        image = tf.image.flip_left_right(image) if k >= 4 else image
        return (tf.image.rot90(image, k % 4), *rest)
    return batches.map(turn) if k else batches


def test_features(detector, samples, arrays, size, standardize=False):
    """Aggregated features and labels of the test images (the training cache is the module's own)."""
    features, labels = [], []
    batches = pipeline(samples, arrays=arrays, image_size=size, batch_size=16)
    for batch in standardized(batches) if standardize else batches:
        batch = unpack_batch(batch)
        features.append(np.asarray(detector.fast_local_features(batch.image), np.float16))
        labels.append(np.asarray(batch.label))
    return np.concatenate(features), np.concatenate(labels)


def with_image_context(features):
    """Each location's features followed by its image's mean features (over the grid): whether a mark is normal can
    depend on the whole part (its exposure, its texture's scale), which no neighbourhood of a location sees."""
    features = features.astype(np.float32)
    mean = np.broadcast_to(features.mean(axis=(1, 2), keepdims=True), features.shape)
    return np.concatenate([features, mean], axis=-1).astype(np.float16)


def per_cell(train, test, scale=False, floor=0.1):
    """Each grid cell's features less their mean over the fit images at that cell (``scale``: and divided by their
    spread there, each at least ``floor`` of the dimension's spread over all cells): what a model per position (the
    per-cell Gaussian, far ahead on aligned MTD) knows, handed to the position-blind head. Where parts are turned at
    random, the cells' means tend to the overall one and this does nothing."""
    fit = train.astype(np.float64)
    mean = fit.mean(0)
    spread = np.maximum(fit.std(0), floor * fit.reshape(-1, fit.shape[-1]).std(0)) if scale else 1.0
    print(f"per cell: means spread {mean.std(axis=(0, 1)).mean():.3g} across cells"
          + (f"; spreads {np.min(spread):.3g} to {np.max(spread):.3g}" if scale else ""))
    return [((x.astype(np.float32) - mean) / spread).astype(np.float16) for x in (train, test)]


def whitened(train, test, floor=0.01):
    """ZCA-whiten both with the fit locations' covariance, each eigenvalue at least ``floor`` of their mean."""
    flat = train.reshape(-1, train.shape[-1]).astype(np.float64)
    mean = flat.mean(0)
    values, vectors = np.linalg.eigh(np.cov(flat - mean, rowvar=False))
    values = np.maximum(values, floor * values.mean())
    transform = (vectors / np.sqrt(values)) @ vectors.T
    print(f"whitened: eigenvalues {values.min():.3g} to {values.max():.3g}")
    return [((x.astype(np.float32) - mean) @ transform).astype(np.float16) for x in (train, test)]


def sweep(train, gain, test, labels, defects, sigma, epochs, every, seed=0, batch=8, score_variants=False):
    """Train a fresh head with noise ``sigma`` (in units of the features' per-dimension std, ``1 / gain``);
    yield test AUROCs."""
    import keras

    keras.utils.set_random_seed(seed)
    head = SimpleNet(layers=("block2b_add",), image_size=(32, 32), weights=None, pretrain_dim=train.shape[-1],
                     embed_dim=train.shape[-1], hidden=384, noise_std=sigma, seed=seed)
    head.feature_gain.assign(gain)
    head.prepare_training()
    rng, started = np.random.default_rng(seed), time.perf_counter()
    step = tf.function(head.train_step)
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(train))
        for i in range(0, len(train), batch):
            logs = step(tf.constant(train[order[i:i + batch]], tf.float32))
        if epoch % every == 0 or epoch == epochs:
            outputs = [head.head(tf.constant(test[i:i + 32], tf.float32)) for i in range(0, len(test), 32)]
            scores = np.concatenate([np.asarray(out["score"]) for out in outputs])
            line = auroc_line(labels, defects, scores)
            if score_variants:
                smoothed = np.concatenate([np.asarray(out["anomaly_map"]).max(axis=(1, 2)) for out in outputs])
                line += f"; max of the smoothed map {image_auroc(labels, smoothed):.3f}"
                grid = np.concatenate([np.asarray(head.grid_scores(tf.constant(test[i:i + 32], tf.float32)))
                                       for i in range(0, len(test), 32)])
                for ring in (1, 2):  # the grid's maximum without its outer rings: cells whose 3x3 neighbourhood
                    inner = grid[:, ring:-ring, ring:-ring].max(axis=(1, 2))  # and backbone see zero padding
                    line += f"; without {ring} border ring{'s' * (ring > 1)} {image_auroc(labels, inner):.3f}"
                cells = np.sort(grid.reshape(len(grid), -1), axis=1)[:, ::-1]
                for share in (0.01, 0.05, 0.2):  # a large faint defect lifts many cells a little, a small one few
                    top = cells[:, :max(1, round(share * cells.shape[1]))].mean(axis=1)
                    line += f"; mean of the top {share:.0%} of cells {auroc_line(labels, defects, top)}"
            yield epoch, float(logs["loss"]), line, time.perf_counter() - started


def baselines(train, test, bank_size=30000, dims=100, seed=0):
    """References on the same features, each an image score (max over the grid) per test image.

    Position-blind: nearest neighbour in a random memory bank of normal locations, and the Mahalanobis
    distance to one Gaussian over all normal locations. Per position (the features' grid cell, as PaDiM
    models it): the Euclidean distance to the cell's normal mean (paper 000's Model of Normality on these
    features), the distance under a diagonal Gaussian per cell, and the Mahalanobis distance under a
    full-covariance Gaussian per cell on ``dims`` random dimensions (PaDiM's recipe, regulariser 0.01 I).
    """
    rng = np.random.default_rng(seed)
    n, height, width, dim = train.shape
    flat = train.reshape(-1, dim)
    bank = tf.constant(flat[rng.choice(len(flat), min(bank_size, len(flat)), replace=False)], tf.float32)
    sample = flat[rng.choice(len(flat), min(200000, len(flat)), replace=False)].astype(np.float64)
    mean = sample.mean(0)
    precision = tf.constant(np.linalg.inv(np.cov(sample.T) + 0.01 * np.eye(dim)), tf.float32)
    bank_norms = tf.reduce_sum(bank ** 2, 1)
    scores = {"nearest neighbour in 30,000 normal locations": [], "one global Gaussian": []}
    for image in test:
        x = tf.constant(image.reshape(-1, dim), tf.float32)
        distances = tf.reduce_sum(x ** 2, 1)[:, None] - 2 * x @ tf.transpose(bank) + bank_norms[None]
        scores["nearest neighbour in 30,000 normal locations"].append(float(tf.reduce_max(tf.reduce_min(distances, 1))))
        centred = x - tf.constant(mean, tf.float32)
        scores["one global Gaussian"].append(float(tf.reduce_max(tf.reduce_sum((centred @ precision) * centred, 1))))
    cell_mean = np.mean(train, axis=0, dtype=np.float64)
    regulariser = 0.01 * np.var(flat[::7], dtype=np.float64)
    cell_var = sum((image.astype(np.float64) - cell_mean) ** 2 for image in train) / (n - 1) + regulariser
    scores["per-position mean, Euclidean (Model of Normality)"] = [
        np.sqrt(((image.astype(np.float64) - cell_mean) ** 2).sum(-1)).max() for image in test]
    scores["per-position diagonal Gaussian"] = [
        np.sqrt(((image.astype(np.float64) - cell_mean) ** 2 / cell_var).sum(-1)).max() for image in test]
    keep = rng.choice(dim, min(dims, dim), replace=False)
    centred = train[..., keep].astype(np.float64) - cell_mean[..., keep]
    covariance = np.einsum("nhwi,nhwj->hwij", centred, centred) / (n - 1) + 0.01 * np.eye(len(keep))
    cell_precision = np.linalg.inv(covariance)
    scores[f"per-position full Gaussian, {len(keep)} random dims (PaDiM's recipe)"] = [
        np.sqrt(np.einsum("hwi,hwij,hwj->hw", t, cell_precision, t)).max()
        for t in (image[..., keep].astype(np.float64) - cell_mean[..., keep] for image in test)]
    return {name: np.asarray(values, float) for name, values in scores.items()}


def auroc_line(labels, defects, scores):
    """Image AUROC over all test images, then per defect type against all normal test images."""
    text = f"{image_auroc(labels, scores):.3f}"
    per = per_defect_image_auroc(labels, scores, defects)
    if len(per) > 1:
        text += f" ({', '.join(f'{defect} {auroc:.3f}' for defect, auroc in per.items())})"
    return text


def size_baseline(fit, test, labels, k=5):
    """Image AUROC of each image's own size alone (mean distance to its k nearest fit images in log width,
    log height): what a score gets from the files' geometry without looking at a pixel. None where the images
    have no files or all share one size."""
    from PIL import Image

    if any(sample.index is not None for sample in (*fit, *test)):  # in-memory images: no files
        return None
    sizes = [np.log(np.array([Image.open(sample.path).size for sample in samples], float)) for samples in (fit, test)]
    if len(np.unique(np.concatenate(sizes), axis=0)) < 2:
        return None
    distances = np.linalg.norm(sizes[1][:, None] - sizes[0][None], axis=-1)
    return image_auroc(labels, np.sort(distances, 1)[:, :k].mean(1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mtd:mtd")
    parser.add_argument("--sigmas", nargs="*", type=float, default=[0.05, 0.2, 0.5, 1.0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--every", type=int, default=2)
    parser.add_argument("--baselines", action="store_true",
                        help="also a k-NN memory bank, one global Gaussian and the image size alone")
    parser.add_argument("--layers", nargs="+", default=None, help="backbone taps (default: the preset's)")
    parser.add_argument("--backbone", default=None, help="an adtf.backbones name (default: the preset's)")
    parser.add_argument("--image-size", nargs=2, type=int, default=None, metavar=("H", "W"),
                        help="input size (default: the presets' rule, the data's median size)")
    parser.add_argument("--dims", nargs=2, type=int, default=None, metavar=("PRETRAIN", "EMBED"),
                        help="the aggregation's per-level and final dimensions (default: the preset's)")
    parser.add_argument("--patch-size", type=int, default=None,
                        help="the aggregation's neighbourhood at every level (default: the preset's, 3)")
    parser.add_argument("--standardize", action="store_true",
                        help="bring every image to one mean and spread of its pixels before the backbone")
    parser.add_argument("--per-dimension", action="store_true",
                        help="divide each feature dimension by its own std over the fit images (the presets divide "
                             "all of them by one scalar)")
    parser.add_argument("--whiten", action="store_true",
                        help="whiten the features with their covariance over the fit images' locations (ZCA, the "
                             "eigenvalues floored at 1 %% of their mean), so that the isotropic noise is "
                             "Mahalanobis-shaped: the per-dimension scale with the correlations too")
    parser.add_argument("--per-cell", choices=("center", "scale"), default=None,
                        help="each grid cell's features less their mean over the fit images there (scale: and divided "
                             "by their spread there); needs one input size for every image")
    parser.add_argument("--image-context", action="store_true",
                        help="hand every location its image's mean feature too (the two concatenated, so the head "
                             "is twice as wide; the scale then from both): context no 3x3 neighbourhood reaches")
    parser.add_argument("--score-variants", action="store_true",
                        help="also the image AUROC of the smoothed map's maximum, and of the grid's maximum "
                             "without its outer one or two rings of cells (the presets: the whole grid's maximum)")
    parser.add_argument("--second", nargs="+", default=None, metavar=("BACKBONE", "LAYER"),
                        help="a second backbone and its taps (strides 8, 16, ...), aggregated the same way; its "
                             "features follow the first's at every location (an ensemble of frozen backbones)")
    parser.add_argument("--dihedral", type=int, default=1, choices=range(1, 9), metavar="N",
                        help="train on the fit images under the first N of the square's 8 symmetries (as is, "
                             "mirrored, turned half a turn, mirrored top to bottom, then the quarter turns, which need "
                             "a square input): N times the cache, each epoch N times the steps")
    parser.add_argument("--calibration-fraction", type=float, default=0.2,
                        help="the share of normal training images held out as adtf-fit holds them out to calibrate "
                             "(0: fit every one, as cross-fitting's --calibration-folds does)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the data's splits (and of a synthetic set's draw) and of the head")
    args = parser.parse_args(argv)
    dataset = data.load(args.data, seed=args.seed)
    if args.image_size:  # the rule is not asked for: its warnings (a stretch to its size) would name another size
        size, rule = tuple(args.image_size), f"{args.image_size[0]}x{args.image_size[1]} as asked"
    else:
        size, rule = data_image_size(dataset, SimpleNet.image_size_range, SimpleNet.image_size_multiple)
    if args.dihedral > 4 and size[0] != size[1]:
        parser.error(f"--dihedral {args.dihedral} turns images a quarter turn, which needs a square input, not {size}")
    fit, _ = calibration_split(dataset.train, args.calibration_fraction, args.seed)
    detector = SimpleNet.from_preset("offline", image_size=size,
                                     **({"layers": tuple(args.layers)} if args.layers else {}),
                                     **({"backbone": args.backbone} if args.backbone else {}),
                                     **(dict(zip(("pretrain_dim", "embed_dim"), args.dims)) if args.dims else {}),
                                     **({"patch_size": args.patch_size} if args.patch_size else {}))

    def fit_features(model, turn=0):
        """The fit images' cached features (under the ``turn``-th symmetry of the square), as an array."""
        batches = dihedral(pipeline(fit, arrays=dataset.arrays, image_size=size, batch_size=16), turn)
        cache = model.feature_cache(standardized(batches) if args.standardize else batches, verbose=False)
        features = cache[np.arange(len(cache))]
        model.release_feature_cache()
        return features

    train = fit_features(detector)
    gain = float(detector.feature_gain)  # the preset normalises: the gain is set, from the untouched images
    turned = [fit_features(detector, k) for k in DIHEDRAL_ORDER[1:args.dihedral]]
    train = np.concatenate([train, *turned]) if turned else train
    test, labels = test_features(detector, dataset.test, dataset.arrays, size, args.standardize)
    if args.second:
        other = SimpleNet.from_preset("offline", image_size=size, backbone=args.second[0],
                                      layers=tuple(args.second[1:]))
        other_test, _ = test_features(other, dataset.test, dataset.arrays, size, args.standardize)
        train, test = np.concatenate([train, fit_features(other)], -1), np.concatenate([test, other_test], -1)
        gain = 1.0 / np.sqrt(train.reshape(-1, train.shape[-1]).astype(np.float64).var(0).mean())
    if args.per_dimension:  # each dimension in units of its own spread; the head's gain is then 1
        spread = np.sqrt(train.reshape(-1, train.shape[-1]).astype(np.float64).var(0)) + 1e-6
        train, test, gain = (train / spread).astype(np.float16), (test / spread).astype(np.float16), 1.0
        print(f"per-dimension std: min {spread.min():.3g}, median {np.median(spread):.3g}, max {spread.max():.3g}")
    if args.whiten:
        train, test, gain = *whitened(train, test), 1.0
    if args.per_cell:
        train, test = per_cell(train, test, scale=args.per_cell == "scale")
        gain = 1.0 / np.sqrt(train.reshape(-1, train.shape[-1]).astype(np.float64).var(0).mean())
    if args.image_context:
        train, test = with_image_context(train), with_image_context(test)
        gain = 1.0 / np.sqrt(train.reshape(-1, train.shape[-1]).astype(np.float64).var(0).mean())
    print(f"{args.data}: {rule}; cache {train.shape}, test {test.shape}")
    defects = np.array([sample.defect for sample in dataset.test])
    if args.baselines:
        for name, scores in baselines(train, test).items():
            print(f"{name}: image AUROC {auroc_line(labels, defects, scores)}", flush=True)
        size_only = size_baseline(fit, dataset.test, labels)
        if size_only is not None:
            print(f"the image's own size alone (5 nearest fit images in log width, log height): {size_only:.3f}")
    for sigma in args.sigmas:
        for epoch, loss, auroc, seconds in sweep(train, gain, test, labels, defects, sigma, args.epochs, args.every,
                                                   seed=args.seed, score_variants=args.score_variants):
            print(f"sigma {sigma:g} epoch {epoch}: loss {loss:.3f}, test image AUROC {auroc} ({seconds:.0f} s)",
                  flush=True)
    print(f"\n`python benchmarks/explore_simplenet_noise.py {' '.join(sys.argv[1:] if argv is None else argv)}` on "
          f"{machine.description()}, {machine.today()}")


if __name__ == "__main__":
    main()
