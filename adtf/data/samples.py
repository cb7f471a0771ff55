"""What a dataset is, whatever its layout: samples, the dataset they form, and the one seeded split."""
from __future__ import annotations

import dataclasses
import enum

import numpy as np

from adtf.errors import DataError


class SourceKind(str, enum.Enum):
    """The dataset layouts ``load`` reads (the part of a spec before the first ``:``)."""

    MVTEC = "mvtec"
    DAGM = "dagm"
    MTD = "mtd"
    FOLDER = "folder"
    MNIST = "mnist"
    CIFAR = "cifar"
    CLASSES = "classes"
    COIL = "coil"
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
        notes: what loading warned about, for a report to repeat.
        skipped: ``(path, problem)`` of each image that ``skip_bad`` left out as unusable.
        gray: whether each image file holds no colour, by path, as ``load`` found it (in-memory sets: empty).
        seed: the seed ``load`` split or drew it with (None for a set built by hand).

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
    notes: list[str] = dataclasses.field(default_factory=list)
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    gray: dict[str, bool] = dataclasses.field(default_factory=dict)
    seed: int | None = None

    def counts(self) -> dict:
        """``{"train": n, "test_good": n, "test_<defect>": n, ...}`` (good first, then by name)."""
        defects = sorted({s.defect for s in self.test}, key=lambda d: (d != "good", d))
        return {"train": len(self.train),
                **{f"test_{d}": sum(s.defect == d for s in self.test) for d in defects}}

    def __repr__(self):
        return f"AnomalyDataset({self.name!r}, {self.counts()}, has_masks={self.has_masks})"


def as_samples(samples, who, any_items=False):
    """``samples`` as a list of ``Sample`` (of anything, with ``any_items``: split_off also splits row indices), or a
    one-line error saying what to pass (a whole dataset, a spec string or a pipeline met an AttributeError deep
    inside)."""
    if isinstance(samples, AnomalyDataset):
        raise DataError(f"{who} takes samples, dataset.train or dataset.test, not the whole dataset")
    if isinstance(samples, (str, bytes)) or hasattr(samples, "__fspath__"):
        raise DataError(f"{who} takes samples (dataset.train or dataset.test), not {str(samples)!r}: read it with "
                        f"adtf.data.load({str(samples)!r}) first")
    if hasattr(samples, "element_spec") or isinstance(samples, np.ndarray):  # a tf.data dataset, an image array
        raise DataError(f"{who} takes samples (dataset.train or dataset.test of adtf.data.load), not a "
                        f"{type(samples).__name__}")
    samples = list(samples)
    if samples and not any_items and not isinstance(samples[0], Sample):
        raise DataError(f"{who} takes samples (dataset.train or dataset.test of adtf.data.load), not a list of "
                        f"{type(samples[0]).__name__}")
    return samples


def split_off(samples, fraction=None, seed=0, *, count=None, what="images"):
    """``(kept, held)``: a ``seed``-shuffled part of ``samples`` held out, both parts in input order.

    The one seeded split adtf makes (train/test of a folder, MTD and MNIST, DAGM's protocol,
    calibration images held out of a fit). The held part is the first ``count`` entries of
    ``np.random.default_rng(seed).permutation(len(samples))``; with ``fraction`` instead,
    ``count = round(fraction * len(samples))`` and at least one when ``fraction > 0``.

    Example:
        >>> fit, calibration = split_off(dataset.train, 0.2, seed=0)   # doctest: +SKIP
    """
    samples = as_samples(samples, "split_off", any_items=True)
    if count is None:
        if fraction is None or not 0 <= fraction <= 1:
            raise DataError(f"a held-out fraction of {what} must be in [0, 1], got {fraction}")
        count = max(1, round(fraction * len(samples))) if fraction > 0 else 0
    if not 0 <= count <= len(samples):
        raise DataError(f"cannot hold out {count} of {len(samples)} {what}")
    held = set(np.random.default_rng(seed).permutation(len(samples))[:count].tolist())
    return ([s for i, s in enumerate(samples) if i not in held], [s for i, s in enumerate(samples) if i in held])


def one_class_dataset(name, kind, splits, normal_class, class_names, *, seed=0, train_fraction=0.8):
    """The one-class protocol of a labelled image set (MNIST, CIFAR, one folder per class).

    ``splits``: ``{split: (images, labels)}``, the training split first where there are two; ``images`` an array
    held in memory (``AnomalyDataset.arrays``) or a list of files. One class is normal, the others anomalous
    (``defect`` = the class's name). With two splits: the normal class of the first trains and the whole second
    tests. With one: a ``seed``-shuffled ``train_fraction`` of its normal images trains, the rest of the split tests.
    """
    in_memory = all(isinstance(images, np.ndarray) for images, _ in splits.values())
    arrays = np.concatenate([images for images, _ in splits.values()]) if in_memory else None
    offsets = dict(zip(splits, np.cumsum([0] + [len(labels) for _, labels in splits.values()])))

    def samples(split, rows):
        images, labels = splits[split]
        return [Sample(f"{kind}/{split}/{i:05d}" if in_memory else str(images[i]), int(labels[i] != normal_class),
                       "good" if labels[i] == normal_class else class_names[labels[i]],
                       index=int(offsets[split] + i) if in_memory else None)
                for i in rows]

    (first, (_, first_labels)), *rest = splits.items()
    labels_found = np.unique(np.concatenate([labels for _, labels in splits.values()]))
    if not all(len(labels) for _, labels in splits.values()):
        raise DataError(f"{name}: a split without images ({', '.join(f'{k}: {len(v[1])}' for k, v in splits.items())})")
    if labels_found.min() < 0 or labels_found.max() >= len(class_names):
        raise DataError(f"{name}: labels {labels_found.min()}..{labels_found.max()} found, but only "
                        f"{len(class_names)} classes are named")
    normal_rows = np.flatnonzero(first_labels == normal_class)
    normal_name = class_names[normal_class]
    if rest:
        (second, (_, second_labels)), = rest
        train, test = samples(first, normal_rows), samples(second, range(len(second_labels)))
        protocol = (f"one-class protocol: class {normal_name!r} (index {normal_class}) is normal; its {len(train)} "
                    f"'{first}' images are the training images, and all {len(test)} '{second}' images of every class "
                    "are the test set")
    else:
        _, train_rows = split_off(normal_rows.tolist(), count=round(train_fraction * len(normal_rows)), seed=seed)
        train = samples(first, train_rows)
        test = samples(first, sorted(set(range(len(first_labels))) - set(train_rows)))
        protocol = (f"one-class protocol on one split ('{first}'): class {normal_name!r} (index {normal_class}) is "
                    f"normal; a seeded (seed {seed}) {train_fraction:g} of its {len(normal_rows)} images "
                    f"({len(train)}) are the training images, its other {len(normal_rows) - len(train)} and every "
                    f"other class's images the test set ({len(test)})")
    return AnomalyDataset(name, train, test, has_masks=False, arrays=arrays, notes=[protocol])
