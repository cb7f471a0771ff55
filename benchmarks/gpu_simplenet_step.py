"""What SimpleNet's `paper` configuration costs on a GPU: a PyTorch statement of the same computation.

Run (on a machine with PyTorch, torchvision and a CUDA GPU):
    python benchmarks/gpu_simplenet_step.py [--n-train 209] [--image-size 288] [--out results.md]

Why PyTorch: the GPU machines lent to this project cannot install TensorFlow (no network there, and
its wheel is ten times the size that may travel), so adtf's own Keras code cannot run on them. This
script restates, operation for operation, what adtf's `SimpleNet.from_preset("paper")` computes —
the authors' framework does the same work — so that its step time and schedule length can be measured
on the hardware the preset is meant for:

- frozen Wide-ResNet50-2 ``layer2`` + ``layer3`` at 288x288 (random weights: speed does not depend on
  them, and torchvision's ImageNet weights cannot be downloaded here);
- local aggregation: 3x3 unfold in (C, kh, kw) order, 1-D adaptive average pooling to 1536 per level,
  ``layer3`` brought to ``layer2``'s 36x36 grid bilinearly, the stacked levels pooled again to 1536;
- one training step on cached features of 8 images (10,368 locations): Linear(1536) adaptor (AdamW,
  lr 1e-4, wd 1e-2), Gaussian noise sigma 0.015, discriminator Linear(1024) -> BatchNorm1d -> LeakyReLU(0.2)
  -> Linear(1, no bias) on the concatenated normal + noisy batch (Adam, lr 2e-4, L2 1e-5), truncated L1 loss
  with margin 0.5;
- the whole schedule: 40 x 4 = 160 epochs over ``--n-train`` cached images (209 = MVTec bottle), run, not
  extrapolated;
- scoring: backbone + aggregation + head + bilinear upsampling + Gaussian smoothing (sigma 4), batch 16 and 1.

float32 throughout (the authors train in float32; TF32 matrix units are off so that float32 means float32).
"""
import argparse
import math
import platform
import sys
import time

import torch
import torch.nn.functional as F
import torchvision


def aggregate(levels, patch=3, pretrain_dim=1536, target_dim=1536):
    """``[B, C_l, h_l, w_l]`` maps (finest first) -> ``[B, h_0, w_0, target_dim]`` as adtf's LocalAggregation."""
    size = levels[0].shape[-2:]
    pooled = []
    for index, level in enumerate(levels):
        b, c, h, w = level.shape
        unfolded = F.unfold(level, patch, padding=patch // 2).transpose(1, 2).reshape(b * h * w, 1, c * patch * patch)
        reduced = F.adaptive_avg_pool1d(unfolded, pretrain_dim).reshape(b, h, w, pretrain_dim)
        if index and (h, w) != tuple(size):
            reduced = F.interpolate(reduced.permute(0, 3, 1, 2), size=size, mode="bilinear",
                                    align_corners=False).permute(0, 2, 3, 1)
        pooled.append(reduced)
    stacked = torch.cat(pooled, dim=-1)
    b, h, w, d = stacked.shape
    return F.adaptive_avg_pool1d(stacked.reshape(b * h * w, 1, d), target_dim).reshape(b, h, w, target_dim)


class Features(torch.nn.Module):
    """WRN50-2 up to ``layer3``; returns ``layer2`` and ``layer3`` aggregated."""

    def __init__(self):
        super().__init__()
        net = torchvision.models.wide_resnet50_2(weights=None)
        self.stem = torch.nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
        self.layer2, self.layer3 = net.layer2, net.layer3

    def forward(self, images):
        layer2 = self.layer2(self.stem(images))
        return aggregate([layer2, self.layer3(layer2)])


class Head(torch.nn.Module):
    def __init__(self, dim=1536, hidden=1024):
        super().__init__()
        self.adaptor = torch.nn.Linear(dim, dim)
        self.discriminator = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.BatchNorm1d(hidden),
                                                 torch.nn.LeakyReLU(0.2), torch.nn.Linear(hidden, 1, bias=False))
        for module in self.modules():
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.xavier_normal_(module.weight)


def gaussian_kernel(sigma):
    radius = int(4 * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return kernel / kernel.sum()


def timed(fn, repeats, device):
    fn()  # warm-up: cuDNN picks its algorithms here
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=209, help="training images (209 = MVTec bottle)")
    parser.add_argument("--image-size", type=int, default=288)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=160, help="40 meta-epochs x 4 discriminator epochs")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    features, head = Features().to(device).eval(), Head().to(device)
    side = args.image_size
    lines = []

    def report(what, value):
        lines.append(f"| {what} | {value} |")
        print(lines[-1], flush=True)

    # -- the feature cache: one backbone pass per training image --------------------------------------------------
    images = torch.rand(args.batch_size, 3, side, side, device=device)
    with torch.no_grad():
        grid = features(images).shape[1:3]
        seconds = timed(lambda: features(images), args.repeats, device)
    feature_rate = args.batch_size / seconds
    report(f"feature pass (backbone + aggregation), batch {args.batch_size}",
           f"{seconds * 1e3:.1f} ms = {feature_rate:.0f} images/s; grid {grid[0]}x{grid[1]}x1536")
    cache = torch.randn(args.n_train, *grid, 1536, device=device)
    report("feature cache (float32, on the GPU)", f"{cache.numel() * 4 / 2 ** 30:.2f} GiB for {args.n_train} images")

    # -- one training step -------------------------------------------------------------------------------------
    adaptor_opt = torch.optim.AdamW(head.adaptor.parameters(), lr=1e-4, weight_decay=1e-2)
    discriminator_opt = torch.optim.Adam(head.discriminator.parameters(), lr=2e-4, weight_decay=1e-5)

    def step(batch):
        adaptor_opt.zero_grad(set_to_none=True)
        discriminator_opt.zero_grad(set_to_none=True)
        normal = head.adaptor(batch.reshape(-1, 1536))
        fake = normal + 0.015 * torch.randn_like(normal)
        scores = head.discriminator(torch.cat([normal, fake]))
        true_scores, fake_scores = scores[:len(normal)], scores[len(normal):]
        loss = F.relu(0.5 - true_scores).mean() + F.relu(0.5 + fake_scores).mean()
        loss.backward()
        adaptor_opt.step()
        discriminator_opt.step()
        return loss.detach()

    head.train()
    batch = cache[:args.batch_size].clone()  # a copy: a view would keep the whole cache alive
    seconds = timed(lambda b=batch: step(b), args.repeats, device)
    report(f"training step on cached features ({args.batch_size} images, {args.batch_size * grid[0] * grid[1]} "
           "locations)", f"{seconds * 1e3:.2f} ms")

    # -- the whole schedule, run ---------------------------------------------------------------------------------
    steps_per_epoch = math.ceil(args.n_train / args.batch_size)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.epochs):
        order = torch.randperm(args.n_train, device=device)
        for first in range(0, args.n_train, args.batch_size):
            loss = step(cache[order[first:first + args.batch_size]])
    loss.item()  # waits for the last step
    schedule = time.perf_counter() - start
    report(f"the schedule: {args.epochs} epochs x {steps_per_epoch} steps on {args.n_train} cached images, run",
           f"{schedule:.1f} s, + {args.n_train / feature_rate:.1f} s to build the cache")
    del cache, batch, order
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # -- scoring ------------------------------------------------------------------------------------------------
    head.eval()
    kernel = gaussian_kernel(4.0).to(device)

    def score(x):
        local = features(x)
        flat = head.adaptor(local.reshape(-1, 1536))
        maps = (-head.discriminator(flat)).reshape(len(x), 1, *local.shape[1:3])
        image_scores = maps.amax(dim=(1, 2, 3))
        full = F.interpolate(maps, size=(side, side), mode="bilinear", align_corners=False)
        pad = len(kernel) // 2  # torch's "reflect" skips the edge pixel that scipy's repeats: same cost
        full = F.conv2d(F.pad(full, (pad, pad, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
        full = F.conv2d(F.pad(full, (0, 0, pad, pad), mode="reflect"), kernel.view(1, 1, -1, 1))
        return image_scores, full

    with torch.no_grad():
        for batch_size in (16, 1):
            images = torch.rand(batch_size, 3, side, side, device=device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            seconds = timed(lambda: score(images), args.repeats, device)
            peak = torch.cuda.max_memory_allocated() / 2 ** 20 if device.type == "cuda" else float("nan")
            report(f"scoring, batch {batch_size}", f"{seconds / batch_size * 1e3:.2f} ms/image = "
                   f"{batch_size / seconds:.0f} images/s; peak GPU memory {peak:.0f} MiB")
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor()
    footer = (f"\n`python benchmarks/gpu_simplenet_step.py {' '.join(sys.argv[1:] if argv is None else argv)}` on "
              f"{name}, PyTorch {torch.__version__}, float32 (TF32 off), {time.strftime('%Y-%m-%d')}")
    print(footer)
    if args.out:
        with open(args.out, "w") as file:
            file.write("| what | measured |\n|---|---|\n" + "\n".join(lines) + "\n" + footer + "\n")


if __name__ == "__main__":
    main()
