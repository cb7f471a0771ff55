"""Dataset manifests (``data_manifests/<name>.json``) and ``verify``: is a local copy complete and intact?

A manifest records where a dataset comes from and what a complete copy holds::

    name, title, origin (official page), licence, citation, layout, notes
    kind            the adtf.data.load kind that reads it ("mvtec", "dagm", "mtd", "mnist", "cifar", "synthetic")
    configs         {config: {"options": {...load options...}, "counts": {...AnomalyDataset.counts()...},
                              "has_masks": bool}}, e.g. one config per MVTec AD category
    default_config  (optional) the config used when none can be inferred
    sha256          (optional) {path relative to the copy: sha256 hex} for files known byte for byte

``verify`` reads the copy with ``adtf.data.load`` (so every image is decoded), compares
the counts per split and defect type and the presence of masks with the manifest, and
hashes the listed files. It reports every difference instead of stopping at the first.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import warnings
from pathlib import Path

from adtf.data.layouts import resolve_dir
from adtf.data.sources import MAX_LISTED_PROBLEMS, SourceKind, load, parse_spec
from adtf.errors import DataError
from adtf.paths import datasets_root, expand_user

_MANIFEST_FOR_KIND = {SourceKind.MVTEC: "mvtec_ad", SourceKind.DAGM: "dagm2007", SourceKind.MTD: "mtd",
                      SourceKind.MNIST: "mnist", SourceKind.CIFAR: "cifar", SourceKind.COIL: "coil",
                      SourceKind.SYNTHETIC: "synthetic"}
# Packaged copies first (adtf/data/manifests), then the repository's data_manifests/.
_MANIFEST_DIRS = (Path(__file__).resolve().parent / "manifests", Path(__file__).resolve().parents[2] / "data_manifests")


@dataclasses.dataclass
class VerifyReport:
    """What ``verify`` found.

    Args:
        manifest: manifest name.
        config: the manifest config checked (e.g. an MVTec AD category).
        path: the local copy.
        differences: one line per difference (empty when the copy matches).
        checked: how much was compared: ``{"counts": n, "sha256": n, "images": n}``.
    """

    manifest: str
    config: str
    path: str
    differences: list[str]
    checked: dict

    @property
    def ok(self) -> bool:
        return not self.differences

    def __str__(self):
        head = (f"{self.manifest} [{self.config}] at {self.path}: "
                f"{'OK' if self.ok else f'{len(self.differences)} difference(s)'} "
                f"({', '.join(f'{v} {k}' for k, v in self.checked.items())} checked)")
        return "\n  ".join([head, *self.differences])


def manifest_names() -> list[str]:
    """Names of the manifests available (``["cifar", "dagm2007", "mnist", "mtd", "mvtec_ad", "synthetic"]``)."""
    return sorted({p.stem for d in _MANIFEST_DIRS if d.is_dir() for p in d.glob("*.json")})


def read_manifest(name: str) -> dict:
    """The manifest called ``name`` (or the JSON file at path ``name``).

    Example:
        >>> read_manifest("mvtec_ad")["configs"]["bottle"]["counts"]["train"]
        209
    """
    candidates = [Path(name)] if name.endswith(".json") else [d / f"{name}.json" for d in _MANIFEST_DIRS]
    for path in candidates:
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: not valid JSON ({e})") from None
    raise DataError(f"dataset manifest {name!r} not found (available: {manifest_names()})")


def verify(spec_or_path: str, manifest_name: str | None = None, *, config: str | None = None) -> VerifyReport:
    """Check a local dataset copy against its manifest and report what differs.

    Args:
        spec_or_path: a ``load`` spec (``"mtd:/data/mtd"``, ``"mvtec:/data/mvtec,category=bottle"``)
            or a plain folder.
        manifest_name: e.g. ``"mvtec_ad"``; default: the one for the spec's kind.
        config: manifest config, e.g. ``"bottle"``; default: the spec's ``category``
            option, the only config, the config named by the folder, or the default one.

    Returns:
        A ``VerifyReport`` (``report.ok``, ``report.differences``; ``str(report)`` prints it).

    Raises:
        DataError: the folder, manifest or config does not exist.

    Example:
        >>> report = verify("/work/shared/datasets/mtd", "mtd")   # doctest: +SKIP
        >>> report.ok, report.checked                            # doctest: +SKIP
        (True, {'counts': 7, 'sha256': 2688, 'images': 1344})
    """
    kind, path, options = parse_spec(spec_or_path)
    if manifest_name is None and kind not in _MANIFEST_FOR_KIND:
        raise DataError(f"{spec_or_path}: no manifest for {kind.value} datasets; name one with --manifest "
                        f"(Python: manifest_name=...), one of {manifest_names()}")
    manifest = read_manifest(manifest_name or _MANIFEST_FOR_KIND[kind])
    if kind.value != manifest["kind"]:
        if spec_or_path.startswith(f"{kind.value}:"):
            raise DataError(f"{spec_or_path}: a {kind.value} spec cannot be checked against the "
                            f"{manifest['name']} manifest (a {manifest['kind']} dataset)")
        kind = SourceKind(manifest["kind"])  # a bare folder whose layout guess was wrong
    config = _pick_config(manifest, config or options.get("category"), path)
    if kind is SourceKind.SYNTHETIC:
        path = path or config  # `synthetic` alone is the default texture, generated here, not a folder
    expected = manifest["configs"][config]
    differences = []
    dataset = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            dataset = load(f"{kind.value}:{path}", skip_bad=True, **{**options, **expected["options"]})
        except DataError as e:
            differences.append(f"cannot be read: {e}")
    differences += [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    if dataset is not None:
        found = dataset.counts()
        for key in sorted(set(found) | set(expected["counts"])):
            if found.get(key, 0) != expected["counts"].get(key, 0):
                differences.append(f"{key}: expected {expected['counts'].get(key, 0)}, found {found.get(key, 0)}")
        if dataset.has_masks != expected["has_masks"]:
            differences.append("ground-truth masks: " + ("expected, none found" if expected["has_masks"]
                                                         else "found, none expected"))
    digests = manifest.get("sha256", {})
    archive = expand_user(str(path))
    if kind is SourceKind.SYNTHETIC or archive.is_file() or (datasets_root() / archive).is_file():  # a CIFAR archive
        root = path
    else:
        root = resolve_dir(path, manifest["name"])
    missing = []
    for relative, digest in sorted(digests.items()):
        file = root / relative
        if not file.is_file():
            missing.append(file)
        elif hashlib.sha256(file.read_bytes()).hexdigest() != digest:
            differences.append(f"{file}: sha256 differs from the manifest")
    differences += [f"{file}: missing" for file in missing[:MAX_LISTED_PROBLEMS]]
    if len(missing) > MAX_LISTED_PROBLEMS:  # a folder of another layout lacked every file: 2,690 lines
        differences.append(f"... and {len(missing) - MAX_LISTED_PROBLEMS} more of the manifest's {len(digests)} files "
                           f"missing under {root} (is it the dataset's own folder?)")
    images = 0 if dataset is None else len(dataset.train) + len(dataset.test)
    return VerifyReport(manifest["name"], config, str(root), differences,
                        {"counts": len(expected["counts"]), "sha256": len(digests), "images": images})


def _pick_config(manifest, config, path):
    configs = manifest["configs"]
    if config is None and len(configs) == 1:
        config = next(iter(configs))
    if config is None and path:
        # The folder's name, else the one subfolder named for a config: a copy given by the folder holding it
        # (/data holding coil-20-proc/) is checked against its own counts, not the default config's.
        folder = expand_user(path)
        folder = folder if folder.is_dir() or folder.is_absolute() else datasets_root() / folder
        config = _config_named(configs, folder.name)
        if config is None and folder.is_dir():
            named = {_config_named(configs, sub.name) for sub in folder.iterdir() if sub.is_dir()} - {None}
            config = named.pop() if len(named) == 1 else None
    config = config or manifest.get("default_config")
    if config not in configs:
        if path and manifest["kind"] != SourceKind.SYNTHETIC.value:  # a missing folder, not the config, is wrong
            resolve_dir(path, manifest["name"])
        raise DataError(f"{path}: which {manifest['name']} config? pass --config (Python: config=...), one of "
                        f"{sorted(configs)}")
    return config


def _config_named(configs, name):
    """The config a folder's name names, compared without case and punctuation ("cifar-100-python" holds
    cifar100), the longest name contained winning (it holds cifar10 too); None if none or a tie."""
    name = _squash(name)
    matches = [c for c in configs if _squash(c) == name] or sorted(
        (c for c in configs if _squash(c) in name), key=lambda c: -len(_squash(c)))
    longest_alone = len(matches) == 1 or len(matches) > 1 and len(_squash(matches[0])) > len(_squash(matches[1]))
    return matches[0] if longest_alone else None


def _squash(text):
    return re.sub(r"[^a-z0-9]", "", text.lower())
