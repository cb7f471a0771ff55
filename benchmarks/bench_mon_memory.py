"""Peak memory of the MoN fit at N=50 and N=500 normal images (the streaming sum should keep it flat).

Usage: python benchmarks/bench_mon_memory.py [--n 50 500] [--data synthetic:brick]
Each N runs in a fresh process so the peaks do not mix; prints a markdown table,
the command and the machine.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys

from adtf import machine

CHILD = """
import json, sys, time
from adtf import data
from adtf.machine import peak_rss_mb
from adtf.detectors import ModelOfNormality
n, spec = int(sys.argv[1]), sys.argv[2]
dataset = data.load(spec, n_train=n)
detector = ModelOfNormality.from_preset("offline")
train = data.pipeline(dataset.train, image_size=detector.image_size, batch_size=16)
before = peak_rss_mb()
start = time.perf_counter()
detector.fit(train, verbose=False)
seconds = time.perf_counter() - start
print(json.dumps({"n": len(dataset.train), "peak_before_fit_mb": before, "seconds": seconds,
                  "peak_after_fit_mb": peak_rss_mb()}))
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, nargs="+", default=[50, 500])
    parser.add_argument("--data", default="synthetic:brick")
    args = parser.parse_args(argv)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    print("| N normal images | fit time (s) | images/s | peak RSS before fit (MiB) | peak RSS after fit (MiB) |")
    print("|---|---|---|---|---|")
    for n in args.n:
        out = subprocess.run([sys.executable, "-c", CHILD, str(n), args.data], capture_output=True, text=True, env=env)
        if out.returncode:
            sys.exit(out.stderr[-2000:])
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {r['n']} | {r['seconds']:.1f} | {r['n'] / r['seconds']:.1f} | {r['peak_before_fit_mb']:.0f} | {r['peak_after_fit_mb']:.0f} |")
    print(f"\n`python {shlex.join(['benchmarks/bench_mon_memory.py', *(sys.argv[1:] if argv is None else argv)])}` "
          f"on {machine.description()}, {machine.today()} (peak RSS: adtf.machine.peak_rss_mb, VmHWM on Linux)")


if __name__ == "__main__":
    main()
