"""Paper 001's detection-stage choices on one trained network: what the dictionary sees, how patch errors
become an image score, and the baselines' scoring (GDE, flow likelihood).

Usage: python benchmarks/ablate_flow_dictionary.py --run RUN_FOLDER --data SPEC [--seed 0]

RUN_FOLDER is a finished `flow_dictionary` run (its `model.keras`), fitted on SPEC with SEED (for example
one of `bench_presets.py --method flow_dictionary`'s folders). The network, flow included, stays as
trained; each variant re-runs only the statistics stage (standardisation, Gaussians, dictionary) on the
same fit images, calibrates on the same held-out normals and scores the test set. With the default
`flow_to_backbone=False` the flow's loss never reaches the backbone, so this network is also exactly
the CutPaste-only network: the GDE row is Li et al.'s baseline on it. Prints a markdown table.
"""
import argparse
import os
import shlex
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from adtf import data, machine  # noqa: E402
from adtf.detectors import FlowDictionary, load  # noqa: E402
from adtf.evaluate import evaluate  # noqa: E402
from adtf.run import calibration_split  # noqa: E402

VARIANTS = {
    "dictionary on the flow's latent, max (the paper preset)": {},
    "dictionary on the flow's latent, mean of the top 5 patches": dict(image_score="top5_mean"),
    "dictionary on the flow's latent, mean of all patches": dict(image_score="mean"),
    "dictionary on the backbone's features, max": dict(dictionary_input="features"),
    "flow likelihood, no dictionary, max": dict(scoring="flow"),
    "Gaussian density (Li et al.'s GDE), no flow, no dictionary": dict(scoring="gde"),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    trained = load(os.path.join(args.run, "model.keras"))
    dataset = data.load(args.data, seed=args.seed)
    fit_samples, calibration_samples = calibration_split(dataset.train, FlowDictionary.calibration_fraction, args.seed)

    def pipeline(samples):
        return data.pipeline(samples, arrays=dataset.arrays, image_size=trained.image_size, batch_size=16)

    rows = []
    for name, change in VARIANTS.items():
        variant = FlowDictionary.from_config({**trained.get_config(), **change})
        variant.ensure_built()
        variant.set_weights(trained.get_weights())
        variant.fit_statistics(pipeline(fit_samples), verbose=False)
        variant.calibrate(pipeline(calibration_samples), verbose=False)
        r = evaluate(variant, dataset, None, verbose=False)
        rows.append((name, r))
        print(f"{name}: image AUROC {r['image_auroc']:.3f}, pixel {r['pixel_auroc']}, AUPRO {r['aupro']}", flush=True)
    print(f"\n| detection stage on {dataset.name} | image AUROC | pixel AUROC | AUPRO | img/s |")
    print("|---|---|---|---|---|")
    for name, r in rows:
        pixel = "n/a" if r["pixel_auroc"] is None else f"{r['pixel_auroc']:.3f}"
        aupro = "n/a" if r["aupro"] is None else f"{r['aupro']:.3f}"
        print(f"| {name} | {r['image_auroc']:.3f} | {pixel} | {aupro} | {r['images_per_second']:.1f} |")
    print(f"\n`python {shlex.join(['benchmarks/ablate_flow_dictionary.py', *(sys.argv[1:] if argv is None else argv)])}` "
          f"on {machine.description()}, {machine.today()}")


if __name__ == "__main__":
    main()
