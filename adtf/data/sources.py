"""Dataset sources: read a dataset's folder layout into samples, validated before any training.

A dataset is named by a spec string ``KIND:PATH[,key=value...]``; the ``key=value``
parts are options of that kind (the same as keyword arguments to ``load``, which win
when both are given; ``seed=N`` there sets ``load``'s seed). A relative PATH that does not exist is looked up under
``adtf.paths.datasets_root()``, so ``mvtec:mvtec_bottle`` finds the shared copy. A bare
PATH without ``KIND:`` is recognised by its layout (``train/good`` -> mvtec,
``MT_Free`` -> mtd, ``Train`` + ``Test`` -> dagm, idx files -> mnist, else folder).

=============================  =================================================================
spec                           layout and options
=============================  =================================================================
``mvtec:PATH``                 MVTec AD category folder: ``train/good``, ``test/<defect>``,
                               optional ``ground_truth/<defect>/<stem>_mask.png`` (no
                               ``ground_truth`` folder -> ``has_masks`` False). PATH may be the
                               MVTec AD root with option ``category=bottle``.
``dagm:PATH/ClassN``           DAGM 2007 class folder (see ``_read_dagm``); options ``n_train``
                               (500), ``n_test_normal`` (500), ``category=ClassN`` for a root.
``mtd:PATH``                   Magnetic Tile Defect: ``MT_<Class>/Imgs/<id>.jpg`` + ``<id>.png``
                               mask, ``MT_Free`` normal; option ``train_fraction`` (0.8).
``folder:NORMAL_DIR``          the user's own images (see ``_read_folder``); options
                               ``anomalous=DIR``, ``masks=DIR``, ``test_normal=DIR``, ``holdout``.
``mnist:PATH[:k]``             idx files, class k normal (option ``normal_class``, default 0);
                               option ``train_fraction`` (0.8) when only one split is present.
``synthetic[:NAME]``           ``adtf.data.synthetic.materialize(NAME)`` (brick, grass, gravel;
                               default brick) read as MVTec AD; its options pass through.
=============================  =================================================================

Example:
    >>> ds = load("mvtec:mvtec_bottle")            # doctest: +SKIP
    >>> ds.counts()                                 # doctest: +SKIP
    {'train': 209, 'test_good': 20, 'test_broken_large': 20, 'test_broken_small': 22, ...}
    >>> load("folder:/data/parts/ok,anomalous=/data/parts/ng,masks=/data/parts/masks")  # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import enum
import gzip
import inspect
import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from adtf.errors import DataError
from adtf.paths import datasets_root

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
# What tf.io.decode_image reads: a file PIL can open but TF cannot would fail mid-training.
_TF_DECODABLE = {"PNG", "JPEG", "BMP", "GIF", "WEBP"}
_MAX_LISTED_PROBLEMS = 10


class SourceKind(str, enum.Enum):
    """The dataset layouts ``load`` reads (the part of a spec before the first ``:``)."""

    MVTEC = "mvtec"
    DAGM = "dagm"
    MTD = "mtd"
    FOLDER = "folder"
    MNIST = "mnist"
    SYNTHETIC = "synthetic"


@dataclasses.dataclass(frozen=True)
class Sample:
    """One image of a dataset.

    Args:
        path: image file, or a stable id such as ``"mnist/t10k/00042"`` for in-memory data.
        label: 0 normal, 1 anomalous.
        defect: ``"good"`` or the defect type / class name.
        mask_path: ground-truth mask file (same size as the image); None means all zeros.
        index: row in ``AnomalyDataset.arrays`` for in-memory sources (MNIST), else None.
    """

    path: str
    label: int
    defect: str
    mask_path: str | None = None
    index: int | None = None


@dataclasses.dataclass
class AnomalyDataset:
    """A dataset split for anomaly detection, as ``load`` returns it.

    Args:
        name: e.g. ``"mvtec:bottle"``, ``"mtd"``, ``"synthetic:brick"``.
        train: normal images only (for fitting and calibration).
        test: normal and anomalous images (for evaluation).
        has_masks: pixel ground truth exists for the anomalous test images.
        arrays: in-memory uint8 images ``[N, H, W]`` or ``[N, H, W, C]`` (MNIST), else None.

    Example:
        >>> ds = AnomalyDataset("demo", [Sample("a.png", 0, "good")], [], has_masks=False)
        >>> ds.counts()
        {'train': 1}
    """

    name: str
    train: list[Sample]
    test: list[Sample]
    has_masks: bool
    arrays: np.ndarray | None = None

    def counts(self) -> dict:
        """``{"train": n, "test_good": n, "test_<defect>": n, ...}`` (good first, then by name)."""
        defects = sorted({s.defect for s in self.test}, key=lambda d: (d != "good", d))
        return {"train": len(self.train),
                **{f"test_{d}": sum(s.defect == d for s in self.test) for d in defects}}

    def __repr__(self):
        return f"AnomalyDataset({self.name!r}, {self.counts()}, has_masks={self.has_masks})"


def parse_spec(spec: str) -> tuple[SourceKind, str | None, dict]:
    """Split ``KIND:PATH[,key=value...]`` into ``(kind, path, options)``.

    Values that read as numbers, ``true``/``false`` or ``none`` are converted.

    Example:
        >>> parse_spec("dagm:/data/DAGM/Class3,n_train=500")
        (<SourceKind.DAGM: 'dagm'>, '/data/DAGM/Class3', {'n_train': 500})
    """
    head, _, rest = spec.partition(":")
    kind = SourceKind(head) if head in {k.value for k in SourceKind} else None
    parts = (rest if kind else spec).split(",")
    path = parts[0] or None
    options = {}
    for part in parts[1:]:
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise DataError(f"dataset spec {spec!r}: {part!r} is not key=value")
        options[key.strip()] = _parse_value(value.strip())
    if kind is SourceKind.MNIST and path and (m := re.fullmatch(r"(.*):(\d+)", path)):
        path, options["normal_class"] = m[1], int(m[2])
    if kind is None:
        if path is None:
            raise DataError(f"dataset spec {spec!r}: empty (expected KIND:PATH, KIND one of "
                            f"{[k.value for k in SourceKind]})")
        kind = _detect_kind(_resolve_dir(path, "dataset"))
    return kind, path, options


def load(spec: str, *, seed: int = 0, skip_bad: bool = False, **options) -> AnomalyDataset:
    """Read a dataset, split it for anomaly detection and check every file before returning.

    Every image (and mask) is decoded once, so an unreadable or truncated file, a format
    TensorFlow cannot decode or a mask whose size differs from its image is reported here
    and not half-way through training. Structural problems (missing ``train/good``, an
    empty folder, a bad idx file) always raise.

    Args:
        spec: ``KIND:PATH[,key=value...]``; see the module docstring for each kind.
        seed: seed of every random split (mtd, dagm, mnist, folder holdout, synthetic).
        skip_bad: leave unusable files out with a warning naming each, instead of raising.
        **options: options of the kind (override the ``key=value`` parts of ``spec``).

    Returns:
        An ``AnomalyDataset``.

    Raises:
        DataError: naming the file or option and what is wrong with it.

    Example:
        >>> ds = load("mtd:/work/shared/datasets/mtd", train_fraction=0.8)   # doctest: +SKIP
        >>> ds.counts()["train"], ds.has_masks                              # doctest: +SKIP
        (762, True)
    """
    kind, path, spec_options = parse_spec(spec)
    options = {**spec_options, **options}
    seed = options.pop("seed", seed)  # "mtd:PATH,seed=3" works too
    reader = _READERS[kind]
    params = inspect.signature(reader).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(options) - set(params) - {"path"})
        if unknown:
            accepted = sorted(set(params) - {"path", "seed"})
            raise DataError(f"dataset spec {spec!r}: unknown option(s) {unknown} for {kind.value} "
                            f"(accepted: {accepted})")
    dataset = reader(path, seed=seed, **options)
    _validate(dataset, skip_bad)
    return dataset


# --------------------------------------------------------------------------- readers


def _read_mvtec(path, *, seed=0, category=None):
    """MVTec AD category: ``train/good/*``, ``test/<defect>/*``, ``ground_truth/<defect>/<stem>_mask.png``."""
    root = _resolve_dir(path, "MVTec AD")
    if category and (root / category).is_dir():
        root = root / category
    if not (root / "train" / "good").is_dir():
        found = sorted(p.name for p in root.iterdir() if (p / "train" / "good").is_dir())
        hint = f"; it holds the categories {found}: use mvtec:{root / found[0]} or category=..." if found else ""
        raise DataError(f"{root}: no train/good folder (MVTec AD layout: train/good, test/<defect>, "
                        f"optional ground_truth/<defect>/<stem>_mask.png){hint}")
    ground_truth = root / "ground_truth"
    has_masks = ground_truth.is_dir()
    test = []
    for folder in _subfolders(root / "test"):
        for image in _list_images(folder):
            if folder.name == "good":
                test.append(Sample(str(image), 0, "good"))
            else:
                mask = ground_truth / folder.name / f"{image.stem}_mask.png"
                test.append(Sample(str(image), 1, folder.name, str(mask) if has_masks else None))
    train = [Sample(str(p), 0, "good") for p in _list_images(root / "train" / "good", required=True)]
    return AnomalyDataset(f"mvtec:{category or root.name}", train, test, has_masks)


def _read_dagm(path, *, seed=0, category=None, n_train=500, n_test_normal=500):
    """DAGM 2007 class folder, as distributed::

        ClassN/Train/NNNN.PNG            512x512 gray images
        ClassN/Train/Label/Labels.txt    a header line (one number), then per image
                                         "id  flag  filename  0  label_filename" (flag 1 =
                                         defective; a normal image has "0" for label_filename)
        ClassN/Train/Label/NNNN_label.PNG  defect mask of a defective image
        ClassN/Test/...                  the same

    Classes 1-6 hold 1000 normal / 150 defective images, classes 7-10 2000 / 300.
    Split (paper 000, "Model of Normality"): the normal images of Train and Test are pooled
    and shuffled with ``seed``; ``n_train`` of them form the training set, the next
    ``n_test_normal`` at most (None = all the rest) and every defective image the test set.
    ``n_train=None`` keeps the official split instead: the normal Train images for
    training, the whole Test folder for testing.
    """
    root = _resolve_dir(path, "DAGM 2007")
    if category and (root / category).is_dir():
        root = root / category
    rows = {split: _dagm_labels(root / split) for split in ("Train", "Test")}
    if n_train is None:
        train = [s for s in rows["Train"] if s.label == 0]
        test = rows["Test"]
    else:
        normal = [s for split in rows.values() for s in split if s.label == 0]
        if not 1 <= n_train < len(normal):
            raise DataError(f"{root}: n_train={n_train} must leave test images out of the class's "
                            f"{len(normal)} normal images")
        rest, train = split_off(normal, count=n_train, seed=seed, what=f"{root} normal images")
        if n_test_normal is not None:
            _, rest = split_off(rest, count=min(n_test_normal, len(rest)), seed=seed)
        train = sorted(train, key=_path)
        test = sorted(rest + [s for split in rows.values() for s in split if s.label], key=_path)
    return AnomalyDataset(f"dagm:{root.name}", train, test, has_masks=True)


def _dagm_labels(split_dir):
    labels_file = split_dir / "Label" / "Labels.txt"
    if not labels_file.is_file():
        raise DataError(f"{labels_file}: not found (DAGM 2007 layout: ClassN/{split_dir.name}/Label/Labels.txt)")
    samples = []
    for line_no, line in enumerate(labels_file.read_text(errors="replace").splitlines(), 1):
        fields = line.split()
        if len(fields) <= 1:  # the header line, or blank
            continue
        if len(fields) < 3 or fields[1] not in ("0", "1") or (fields[1] == "1" and len(fields) < 5):
            raise DataError(f"{labels_file}, line {line_no}: expected 'id flag filename 0 label_filename' "
                            f"(flag 0 or 1), got {line.strip()!r}")
        if fields[1] == "1":
            samples.append(Sample(str(split_dir / fields[2]), 1, "defective", str(split_dir / "Label" / fields[4])))
        else:
            samples.append(Sample(str(split_dir / fields[2]), 0, "good"))
    if not samples:
        raise DataError(f"{labels_file}: lists no images")
    return samples


def _read_mtd(path, *, seed=0, train_fraction=0.8):
    """Magnetic Tile Defect: ``MT_<Class>/Imgs/<id>.jpg`` with a same-stem ``<id>.png`` mask.

    ``MT_Free`` is normal: a ``seed``-shuffled ``train_fraction`` of it (rounded) trains,
    the rest is tested with every defect class (blowhole, break, crack, fray, uneven).
    """
    root = _resolve_dir(path, "MTD")
    if not (root / "MT_Free" / "Imgs").is_dir():
        raise DataError(f"{root}: no MT_Free/Imgs folder (MTD layout: MT_<Class>/Imgs/<id>.jpg with a "
                        "same-named <id>.png mask; MT_Free holds the defect-free tiles)")
    if not 0 < train_fraction <= 1:
        raise DataError(f"mtd: train_fraction={train_fraction} must be in (0, 1]")
    free = _list_images(root / "MT_Free" / "Imgs", required=True, suffixes=(".jpg", ".jpeg"))
    test, train = split_off([Sample(str(p), 0, "good") for p in free], count=round(train_fraction * len(free)),
                            seed=seed, what="MT_Free tiles")
    for folder in _subfolders(root, "MT_*"):
        if folder.name != "MT_Free":
            test += [Sample(str(p), 1, folder.name[3:].lower(), str(p.with_suffix(".png")))
                     for p in _list_images(folder / "Imgs", suffixes=(".jpg", ".jpeg"))]
    return AnomalyDataset("mtd", train, test, has_masks=True)


def split_off(samples, fraction=None, seed=0, *, count=None, what="images"):
    """``(kept, held)``: a ``seed``-shuffled part of ``samples`` held out, both parts in input order.

    The one seeded split adtf makes (train/test of a folder, MTD and MNIST, DAGM's protocol,
    calibration images held out of a fit). The held part is the first ``count`` entries of
    ``np.random.default_rng(seed).permutation(len(samples))``; with ``fraction`` instead,
    ``count = round(fraction * len(samples))`` and at least one when ``fraction > 0``.

    Example:
        >>> fit, calibration = split_off(dataset.train, 0.2, seed=0)   # doctest: +SKIP
    """
    samples = list(samples)
    if count is None:
        if fraction is None or not 0 <= fraction <= 1:
            raise DataError(f"a held-out fraction of {what} must be in [0, 1], got {fraction}")
        count = max(1, round(fraction * len(samples))) if fraction > 0 else 0
    if not 0 <= count <= len(samples):
        raise DataError(f"cannot hold out {count} of {len(samples)} {what}")
    held = set(np.random.default_rng(seed).permutation(len(samples))[:count].tolist())
    return ([s for i, s in enumerate(samples) if i not in held], [s for i, s in enumerate(samples) if i in held])


def _read_folder(path, *, seed=0, anomalous=None, masks=None, test_normal=None, holdout=0.0):
    """The user's own images: a folder of normal images is enough.

    - ``PATH``: normal images (not recursive); all train, except a ``seed``-shuffled
      ``holdout`` fraction moved to the test set.
    - ``test_normal=DIR``: more normal images for the test set.
    - ``anomalous=DIR``: anomalous test images; each subfolder is a defect type, images
      directly in DIR get the defect ``"anomalous"``.
    - ``masks=DIR``: the mask of ``<stem>.<ext>`` is ``<stem>.png`` or ``<stem>_mask.png``,
      in ``DIR/<defect>/`` or ``DIR/``; with ``masks`` every anomalous image needs one.
    """
    normal_dir = _resolve_dir(path, "normal images")
    normals = _list_images(normal_dir, required=True)
    if not 0 <= holdout < 1:
        raise DataError(f"folder: holdout={holdout} must be in [0, 1)")
    train, test = split_off([Sample(str(p), 0, "good") for p in normals], holdout, seed)
    if test_normal:
        test += [Sample(str(p), 0, "good") for p in _list_images(_resolve_dir(test_normal, "test_normal"), required=True)]
    mask_dir = _resolve_dir(masks, "masks") if masks else None
    if anomalous:
        anomalous_dir = _resolve_dir(anomalous, "anomalous")
        groups = [("anomalous", _list_images(anomalous_dir))]
        groups += [(d.name, _list_images(d)) for d in _subfolders(anomalous_dir)]
        if not any(images for _, images in groups):
            raise DataError(f"{anomalous_dir}: no images (looked for {', '.join(IMAGE_SUFFIXES)}, and in subfolders)")
        for defect, images in groups:
            test += [Sample(str(p), 1, defect, _find_mask(mask_dir, defect, p.stem)) for p in images]
    return AnomalyDataset(f"folder:{normal_dir.name}", train, test, has_masks=bool(anomalous and masks))


def _find_mask(mask_dir, defect, stem):
    if mask_dir is None:
        return None
    candidates = [d / name for d in (mask_dir / defect, mask_dir) for name in (f"{stem}.png", f"{stem}_mask.png")]
    # A missing mask is reported (with its expected path) by the validation pass.
    return str(next((c for c in candidates if c.is_file()), mask_dir / f"{stem}.png"))


def _read_mnist(path, *, seed=0, normal_class=0, train_fraction=0.8):
    """MNIST idx files (``{train,t10k}-{images-idx3,labels-idx1}-ubyte``, gzipped or not).

    One class is normal, the nine others anomalous (``defect`` = the digit). With both
    splits present: train = the normal class of the train split, test = the whole t10k
    split (the protocol of the papers' MNIST tables). With one split only (the shared copy
    holds t10k): a ``seed``-shuffled ``train_fraction`` of its normal-class images trains,
    the rest of them and all other digits test. Images stay in memory (``arrays``).
    """
    root = _resolve_dir(path, "MNIST")
    if not (isinstance(normal_class, int) and 0 <= normal_class <= 9):
        raise DataError(f"mnist: normal_class={normal_class!r} must be a digit 0-9")
    splits = {}
    for split in ("train", "t10k"):
        files = [_find_idx(root, f"{split}-{part}") for part in ("images-idx3", "labels-idx1")]
        if all(files):
            images, labels = _read_idx(files[0], 3), _read_idx(files[1], 1)
            if len(images) != len(labels):
                raise DataError(f"{files[0]} holds {len(images)} images but {files[1]} {len(labels)} labels")
            splits[split] = images, labels
    if not splits:
        raise DataError(f"{root}: no MNIST idx files (t10k-images-idx3-ubyte[.gz] with t10k-labels-idx1-ubyte[.gz], "
                        "or the train-* pair)")
    arrays = np.concatenate([images for images, _ in splits.values()])
    offsets = dict(zip(splits, np.cumsum([0] + [len(labels) for _, labels in splits.values()])))

    def samples(split, rows):
        labels = splits[split][1]
        return [Sample(f"mnist/{split}/{i:05d}", int(labels[i] != normal_class),
                       "good" if labels[i] == normal_class else str(labels[i]), index=int(offsets[split] + i))
                for i in rows]

    if len(splits) == 2:
        normal_rows = np.flatnonzero(splits["train"][1] == normal_class)
        train, test = samples("train", normal_rows), samples("t10k", range(len(splits["t10k"][1])))
    else:
        (split, (_, labels)), = splits.items()
        normal_rows = np.flatnonzero(labels == normal_class)
        _, train_rows = split_off(normal_rows.tolist(), count=round(train_fraction * len(normal_rows)), seed=seed)
        train = samples(split, train_rows)
        test = samples(split, sorted(set(range(len(labels))) - set(train_rows)))
    return AnomalyDataset(f"mnist:{normal_class}", train, test, has_masks=False, arrays=arrays)


def _find_idx(root, prefix):
    # Accept the usual spellings: "t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte", ".gz".
    matches = sorted(p for p in root.iterdir() if p.name.replace(".", "-").startswith(prefix.replace(".", "-")))
    return matches[0] if matches else None


def _read_idx(path, ndim):
    raw = path.read_bytes()
    try:
        raw = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot decompress ({e})") from None
    header = 4 + 4 * ndim
    if len(raw) < header or int.from_bytes(raw[:4], "big") != 0x800 + ndim:
        raise DataError(f"{path}: not an idx{ndim} uint8 file (bad magic number)")
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    if len(raw) - header != np.prod(shape):
        raise DataError(f"{path}: header promises {int(np.prod(shape))} bytes of data, file has {len(raw) - header} "
                        "(truncated?)")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def _read_synthetic(path, *, seed=0, **options):
    from adtf.data.synthetic import materialize

    name = path or "brick"
    try:
        folder = materialize(name=name, seed=seed, **options)
    except TypeError as e:  # an option materialize does not take
        raise DataError(f"synthetic:{name}: {e}") from None
    dataset = _read_mvtec(folder)
    dataset.name = f"synthetic:{name}"
    return dataset


_READERS = {SourceKind.MVTEC: _read_mvtec, SourceKind.DAGM: _read_dagm, SourceKind.MTD: _read_mtd,
            SourceKind.FOLDER: _read_folder, SourceKind.MNIST: _read_mnist, SourceKind.SYNTHETIC: _read_synthetic}


# --------------------------------------------------------------------------- helpers


def _parse_value(text):
    lowered = text.lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _resolve_dir(path, what):
    if not path:
        raise DataError(f"{what}: no folder given (a spec reads KIND:PATH)")
    folder = Path(str(path)).expanduser()
    if not folder.exists() and not folder.is_absolute() and (datasets_root() / folder).exists():
        folder = datasets_root() / folder
    if not folder.is_dir():
        raise DataError(f"{what} folder not found: {folder}")
    return folder


def _detect_kind(root):
    if (root / "train" / "good").is_dir():
        return SourceKind.MVTEC
    if (root / "MT_Free").is_dir():
        return SourceKind.MTD
    if (root / "Train").is_dir() and (root / "Test").is_dir():
        return SourceKind.DAGM
    if any("idx3-ubyte" in p.name for p in root.iterdir()):
        return SourceKind.MNIST
    return SourceKind.FOLDER


def _subfolders(folder, pattern="*"):
    return sorted(p for p in folder.glob(pattern) if p.is_dir()) if folder.is_dir() else []


def _list_images(folder, *, required=False, suffixes=IMAGE_SUFFIXES):
    images = sorted(p for p in folder.iterdir()
                    if p.suffix.lower() in suffixes and not p.name.startswith(".") and p.is_file())
    if required and not images:
        raise DataError(f"{folder}: no images (looked for {', '.join(suffixes)})")
    return images


def _path(sample):
    return sample.path


def _image_size(path, what):
    """``(size, None)`` after a full decode, or ``(None, problem)``."""
    try:
        with Image.open(path) as image:
            if image.format not in _TF_DECODABLE:
                return None, f"{path}: {image.format} {what}s are not supported (use PNG, JPEG, BMP, GIF or WebP)"
            image.load()  # decodes every pixel: PIL finds a truncated file only here
            return image.size, None
    except FileNotFoundError:
        return None, f"{path}: {what} file not found"
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... for broken files
        return None, f"{path}: cannot decode {what} ({type(e).__name__}: {e})"


def _problem(sample):
    size, problem = _image_size(sample.path, "image")
    if problem or not sample.mask_path:
        return problem
    mask_size, problem = _image_size(sample.mask_path, "mask")
    if problem:
        return f"{problem} (the mask of {sample.path})"
    if mask_size != size:
        return (f"{sample.mask_path}: mask is {mask_size[0]}x{mask_size[1]} but its image {sample.path} "
                f"is {size[0]}x{size[1]} (width x height)")
    return None


def _validate(dataset, skip_bad):
    files = [s for s in dataset.train + dataset.test if s.index is None]
    # PIL releases the GIL while decoding, so threads overlap the decoding work.
    with ThreadPoolExecutor(max_workers=min(8, 2 * (os.cpu_count() or 1))) as pool:
        problems = [(s, p) for s, p in zip(files, pool.map(_problem, files)) if p]
    if problems and not skip_bad:
        listed = "\n  ".join(p for _, p in problems[:_MAX_LISTED_PROBLEMS])
        more = f"\n  ... and {len(problems) - _MAX_LISTED_PROBLEMS} more" if len(problems) > _MAX_LISTED_PROBLEMS else ""
        raise DataError(f"{dataset.name}: {len(problems)} unusable file(s) (pass skip_bad=True to leave them out "
                        f"with a warning):\n  {listed}{more}")
    for _, problem in problems:
        warnings.warn(f"skipping {problem}", stacklevel=3)
    bad = {s for s, _ in problems}
    dataset.train = [s for s in dataset.train if s not in bad]
    dataset.test = [s for s in dataset.test if s not in bad]
    if not dataset.train:
        raise DataError(f"{dataset.name}: no usable training image left")
