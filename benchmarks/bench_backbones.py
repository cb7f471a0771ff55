"""Feature-pass speed and peak memory of each backbone (default taps), one process per backbone.

Run: python benchmarks/bench_backbones.py [--backbones efficientnet_b4,efficientnet_lite0] [--batch-size 16]
     [--image-size 224] [--batches 5] [--jit]

Each backbone runs in its own subprocess so that its peak resident memory (adtf.machine.peak_rss_mb, which
includes TensorFlow itself) is its own. ImageNet weights are used where they can be had;
otherwise random weights, said in the table: speed does not depend on weight values. The
first (warm-up) batch, which traces the graph, is not timed. XLA (``--jit``) is off by
default: on small CPUs it is several times slower for these networks.
"""
import argparse
import json
import os
import subprocess
import sys
import time

from adtf import machine


def measure(name, image_size, batch_size, batches, jit):
    import numpy as np

    from adtf.backbones import build, freeze
    from adtf.errors import WeightsError

    start = time.perf_counter()
    try:
        model, weights = build(name, input_shape=(image_size, image_size, 3)), "imagenet"
    except WeightsError:  # e.g. offline: speed does not depend on the weight values
        model, weights = build(name, weights=None, input_shape=(image_size, image_size, 3)), "random (no ImageNet file)"
    built = time.perf_counter() - start
    model.compile(jit_compile=jit)
    images = np.random.default_rng(0).random((batch_size, image_size, image_size, 3), dtype=np.float32)
    model.predict_on_batch(images)  # warm-up: traces the graph
    start = time.perf_counter()
    for _ in range(batches):
        model.predict_on_batch(images)
    seconds = time.perf_counter() - start
    fast = freeze(model, (image_size, image_size, 3))  # the graph adtf's detectors score with
    fast(images)
    start = time.perf_counter()
    for _ in range(batches):
        [np.asarray(v) for v in fast(images).values()]
    frozen_seconds = time.perf_counter() - start
    return dict(backbone=name, weights=weights, build_s=round(built, 1), taps=list(model.output),
                images_per_s=round(batches * batch_size / seconds, 1), ms_per_batch=round(1000 * seconds / batches),
                frozen_images_per_s=round(batches * batch_size / frozen_seconds, 1),
                onednn=os.environ.get("TF_ENABLE_ONEDNN_OPTS", ""),
                peak_rss_mib=round(machine.peak_rss_mb()))


def main(argv=None):
    from adtf.backbones import available

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default=",".join(available()), help="comma-separated names")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=5, help="timed batches after one warm-up batch")
    parser.add_argument("--jit", action="store_true", help="XLA-compile the feature pass")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one backbone, print JSON
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.image_size, args.batch_size, args.batches, args.jit)))
        return
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {machine.description()}, load average {os.getloadavg()[0]:.1f}")
    print(f"feature pass: {args.image_size}x{args.image_size}, batch {args.batch_size}, {args.batches} timed batches "
          f"after 1 warm-up, jit_compile={args.jit}, "
          f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', '1 (adtf default)')}\n")
    print("| backbone | weights | taps | images/s (Keras predict) | images/s (frozen graph) | ms/batch (Keras) | peak RSS MiB | build s |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.backbones.split(","):
        command = [sys.executable, __file__, "--one", name.strip(), "--image-size", str(args.image_size),
                   "--batch-size", str(args.batch_size), "--batches", str(args.batches)] + (["--jit"] if args.jit else [])
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            print(f"| {name} | failed: {done.stderr.strip().splitlines()[-1][:100]} | | | | | | |")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"| {r['backbone']} | {r['weights']} | {', '.join(r['taps'])} | {r['images_per_s']} | "
              f"{r['frozen_images_per_s']} | {r['ms_per_batch']} | {r['peak_rss_mib']} | {r['build_s']} |", flush=True)


if __name__ == "__main__":
    main()
