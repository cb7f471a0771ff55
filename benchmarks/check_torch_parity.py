"""Dev-only check: adtf's Keras torchvision nets give PyTorch's numbers once converted.

torch is not an adtf dependency, so the five architectures are written here in plain torch with torchvision's
module names (hence its state-dict keys; this needs no torchvision, which a local torch wheel may lack), randomly
initialised with non-trivial BatchNorm statistics, run on a random batch and saved with `np.savez`; adtf then
converts the same state dict with `load_torchvision_state_dict` and runs the same batch. The script calls itself
under the torch interpreter for the first half. From a checkout, with adtf installed in the active environment:

    python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch numpy
    python benchmarks/check_torch_parity.py --torch-python /tmp/torchvenv/bin/python

(torch 2.13: logits within 4e-7; torch 2.14.1: WRN50's within 4.8e-7.)
"""
import argparse
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

NAMES = ("resnet18", "se_resnet18", "wide_resnet50_2", "vgg11", "alexnet")
# Where torch hooks the tapped outputs: ResNet stages, or indices into `features`.
TAPS = {
    "resnet18": ("layer1", "layer2", "layer3", "layer4"),
    "se_resnet18": ("layer1", "layer2", "layer3", "layer4"),
    "wide_resnet50_2": ("layer1", "layer2", "layer3", "layer4"),
    "vgg11": ("features_1", "features_4", "features_9", "features_14", "features_19", "features_20"),
    "alexnet": ("features_1", "features_4", "features_7", "features_9", "features_11", "features_12"),
}


def torch_models():
    """The torchvision architectures in plain torch (same module names, same forward)."""
    from torch import nn

    class SqueezeExcite(nn.Module):
        def __init__(self, channels, reduction=4):
            super().__init__()
            self.fc1 = nn.Linear(channels, channels // reduction, bias=False)
            self.fc2 = nn.Linear(channels // reduction, channels, bias=False)

        def forward(self, x):
            s = self.fc2(self.fc1(x.mean((2, 3))).relu()).sigmoid()
            return x * s[:, :, None, None]

    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, inplanes, planes, stride, downsample, width, se):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = downsample
            if se:
                self.se = SqueezeExcite(planes)

        def forward(self, x):
            out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
            if hasattr(self, "se"):
                out = self.se(out)
            return self.relu(out + (x if self.downsample is None else self.downsample(x)))

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, inplanes, planes, stride, downsample, width, se):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn3(self.conv3(self.relu(self.bn2(self.conv2(out)))))
            return self.relu(out + (x if self.downsample is None else self.downsample(x)))

    class ResNet(nn.Module):
        def __init__(self, block, layers, width_per_group=64, se=False):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            inplanes = 64
            for stage, blocks in enumerate(layers, start=1):
                planes, stride, modules = 64 * 2 ** (stage - 1), 1 if stage == 1 else 2, []
                for index in range(blocks):
                    s = stride if index == 0 else 1
                    downsample = None
                    if s != 1 or inplanes != planes * block.expansion:
                        downsample = nn.Sequential(
                            nn.Conv2d(inplanes, planes * block.expansion, 1, s, bias=False),
                            nn.BatchNorm2d(planes * block.expansion),
                        )
                    modules.append(block(inplanes, planes, s, downsample, planes * width_per_group // 64, se))
                    inplanes = planes * block.expansion
                setattr(self, f"layer{stage}", nn.Sequential(*modules))
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(512 * block.expansion, 1000)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(self.avgpool(x).flatten(1))

    class ConvStack(nn.Module):  # VGG and AlexNet share this forward
        def __init__(self, features, pooled, classifier):
            super().__init__()
            self.features, self.avgpool, self.classifier = features, nn.AdaptiveAvgPool2d(pooled), classifier

        def forward(self, x):
            return self.classifier(self.avgpool(self.features(x)).flatten(1))

    vgg_layers, channels = [], 3
    for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"):
        if v == "M":
            vgg_layers.append(nn.MaxPool2d(2, 2))
        else:
            vgg_layers += [nn.Conv2d(channels, v, 3, padding=1), nn.ReLU(inplace=True)]
            channels = v
    vgg = ConvStack(nn.Sequential(*vgg_layers), (7, 7), nn.Sequential(
        nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(True),
        nn.Dropout(), nn.Linear(4096, 1000)))
    alexnet = ConvStack(nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(True), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(True), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(True), nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(True), nn.MaxPool2d(3, 2)), (6, 6), nn.Sequential(
        nn.Dropout(), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(True), nn.Dropout(), nn.Linear(4096, 4096),
        nn.ReLU(True), nn.Linear(4096, 1000)))
    return {
        "resnet18": lambda: ResNet(BasicBlock, (2, 2, 2, 2)),
        "se_resnet18": lambda: ResNet(BasicBlock, (2, 2, 2, 2), se=True),
        "wide_resnet50_2": lambda: ResNet(Bottleneck, (3, 4, 6, 3), width_per_group=128),
        "vgg11": lambda: vgg,
        "alexnet": lambda: alexnet,
    }


def export(out_dir, size, batch):
    """Torch half: random nets with non-trivial BN statistics, outputs and taps -> <name>.npz."""
    import torch

    torch.manual_seed(0)
    x = torch.randn(batch, 3, size, size)
    for name, build in torch_models().items():
        model = build().eval()
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.weight.uniform_(0.5, 1.5), module.bias.normal_(0, 0.1)
                    module.running_mean.normal_(0, 0.1), module.running_var.uniform_(0.5, 1.5)
            taps, modules = {}, dict(model.named_modules())
            for tap in TAPS[name]:
                modules[tap.replace("_", ".")].register_forward_hook(
                    lambda m, i, o, tap=tap: taps.__setitem__(tap, o.detach().clone().numpy()))
            logits = model(x).numpy()
        state = {f"state/{k}": v.numpy() for k, v in model.state_dict().items()}
        np.savez(out_dir / f"{name}.npz", input=x.numpy(), logits=logits,
                 **{f"tap/{k}": v for k, v in taps.items()}, **state)
        print(f"exported {name}: {len(state)} keys", flush=True)


def compare(out_dir):
    """adtf half: convert each state dict, run the same batch, report max abs differences."""
    import keras

    from adtf.backbones.torch_conversion import load_torchvision_state_dict as load_state_dict
    from adtf.backbones.torchvision_nets import ARCHITECTURES

    print("| net | keys | logits: max abs diff (max abs logit) | worst tap: max abs diff (max abs value) |")
    print("|---|---|---|---|")
    for name in NAMES:
        data = np.load(out_dir / f"{name}.npz")
        x = data["input"].transpose(0, 2, 3, 1)
        state = {k[len("state/"):]: data[k] for k in data.files if k.startswith("state/")}
        model = ARCHITECTURES[name](input_shape=x.shape[1:], include_top=True)
        load_state_dict(model, name, state, strict=True)
        taps = list(TAPS[name])
        probe = keras.Model(model.input, [model.output] + [model.get_layer(t).output for t in taps])
        logits, *features = probe.predict(x, verbose=0)
        references = {t: data[f"tap/{t}"].transpose(0, 2, 3, 1) for t in taps}
        diffs = {t: float(np.abs(f - references[t]).max()) for t, f in zip(taps, features)}
        worst = max(diffs, key=diffs.get)
        print(f"| {name} | {len(state)} | {np.abs(logits - data['logits']).max():.2e} "
              f"({np.abs(data['logits']).max():.3g}) | {worst}: {diffs[worst]:.2e} "
              f"({np.abs(references[worst]).max():.3g}) |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-python", default="/tmp/torchvenv/bin/python", help="interpreter that has torch")
    parser.add_argument("--export", type=pathlib.Path, help="(internal) run the torch half into this folder")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    if args.export:
        return export(args.export, args.size, args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([args.torch_python, __file__, "--export", tmp, "--size", str(args.size),
                        "--batch", str(args.batch)], check=True)
        compare(pathlib.Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
