"""The on-disk layouts ``adtf.data.load`` reads: one reader per dataset kind (MVTec AD, DAGM 2007,
MTD, a folder of the user's images, MNIST idx files, CIFAR-10/100 (``adtf.data.cifar``), one folder per class,
COIL-100/COIL-20's flat folder, the embedded synthetic set).

Each reader turns a folder into an ``AnomalyDataset`` of ``Sample``s; ``adtf.data.sources``
parses the spec, picks the reader and validates every image before anything trains.
"""
from __future__ import annotations

import gzip
import os
import re
import unicodedata
import warnings
from pathlib import Path

import numpy as np

from adtf.data.cifar import CIFAR_ARCHIVE, is_cifar_folder, read_cifar
from adtf.data.samples import AnomalyDataset, Sample, SourceKind, one_class_dataset, split_off
from adtf.errors import DataError
from adtf.paths import datasets_root, expand_user


# What tf.io.decode_image reads: a file PIL can open but TF cannot would fail mid-training.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
# A folder's files are listed with these too (cameras often write TIFF), so that the up-front check
# names each one ("TIFF images are not supported") instead of leaving it out unseen.
LISTED_SUFFIXES = IMAGE_SUFFIXES + (".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm", ".jp2", ".j2k", ".heic",
                                    ".heif", ".avif", ".jxl", ".exr", ".hdr", ".dib")


def _read_mvtec(path, *, seed=0, category=None):
    """MVTec AD category: ``train/good/*``, ``test/<defect>/*``, ``ground_truth/<defect>/<stem>_mask.png``
    (or ``<stem>.png``, any image suffix in any case: other sets converted to this layout name masks so). ``good``
    and the defect folders under ``ground_truth`` may be spelled in any case. A defect image without a mask counts
    for the image metrics and not the pixel metrics, with a warning, as in ``folder:``.

    MVTec AD 2's layout too: no ``test/``, but ``test_public/{good,bad}`` with ``test_public/ground_truth/bad/``
    (the private test sets have no labels), and ``validation/good``, normal images meant for choosing thresholds,
    which join ``train/good`` (adtf calibrates on a share of the training images)."""
    root = _category(resolve_dir(path, "MVTec AD"), category)
    train_good = _train_good(root)
    if train_good is None:
        found = sorted(p.name for p in root.iterdir() if _train_good(p))
        hint = (f"{_asked(category)} the categories {found}: use mvtec:{root / found[0]} or category=..." if found else
                _other_kind_hint(root, SourceKind.MVTEC))
        raise DataError(f"{root}: no train/good folder (MVTec AD layout: train/good, test/<defect>, "
                        f"optional ground_truth/<defect>/<stem>_mask.png){hint}")
    second = not _in_any_case(root, "test").is_dir() and _in_any_case(root, "test_public").is_dir()  # MVTec AD 2
    test_root = _in_any_case(root, "test_public" if second else "test")
    ground_truth = _in_any_case(test_root if second else root, "ground_truth")
    test_folders = [folder for folder in _subfolders(test_root) if folder != ground_truth]
    has_masks = ground_truth.is_dir()
    mask_folders = {folder.name.lower(): folder for folder in _subfolders(ground_truth)}
    test = []
    for folder in test_folders:
        if _is_good(folder):
            test += [Sample(str(image), 0, "good") for image in _list_images(folder)]
            continue
        if folder.name.lower().replace("-", "_") in ("ok", "normal", "no_defect", "defect_free", "nodefect"):
            warnings.warn(f"{folder}: its images are read as anomalous (defect type {folder.name!r}); MVTec's layout "
                          "names the normal test images' folder test/good: rename it if they are normal", stacklevel=3)
        masks = [_files_by_name(mask_folders.get(folder.name.lower(), ground_truth / folder.name))]
        test += [Sample(str(image), 1, folder.name, _find_mask(masks, image.stem) if has_masks else None)
                 for image in _list_images(folder)]
    if has_masks:
        _warn_of_unmasked(test, ground_truth, f"in {ground_truth.relative_to(root)}/<defect>/")
        defects = {folder.name.lower() for folder in test_folders}
        unmatched = [folder.name for folder in _subfolders(ground_truth) if folder.name.lower() not in defects]
        if unmatched:  # ground_truth/scratch-head beside test/scratch_head: its masks pair with nothing
            warnings.warn(f"{ground_truth}: {unmatched} match no {test_root.name}/<defect>/ folder, so their masks "
                          f"are not read (the test folders: {sorted(defects)})", stacklevel=3)
    validation_good = next((f for f in _subfolders(_in_any_case(root, "validation")) if _is_good(f)), None) if second else None
    unread = [p for folder in (train_good, validation_good, *test_folders) if folder for sub in _subfolders(folder)
              if not sub.name.startswith(".") for p in _images_below(sub)]
    unread += _list_images(test_root) if test_root.is_dir() else []
    if unread:  # MVTec's folders are flat: images below them, or loose in test/, are not read
        warnings.warn(f"{root}: {len(unread)} image(s) outside the MVTec layout's folders are not read (e.g. "
                      f"{unread[0]}): train/good/ and {test_root.name}/<defect>/ are read without their subfolders",
                      stacklevel=3)
    train = [Sample(str(p), 0, "good") for p in _list_images(train_good, required=True)]
    if validation_good is not None:
        validation = [Sample(str(p), 0, "good") for p in _list_images(validation_good)]
        train += validation
        warnings.warn(f"{root}: MVTec AD 2's layout: {len(validation)} normal image(s) of validation/good join "
                      f"train/good's as training images, and {test_root.name}/ is the test set (the private test "
                      "sets have no labels)", stacklevel=3)
    return AnomalyDataset(f"mvtec:{root.name}", train, test, has_masks and any(s.mask_path for s in test))


def _train_good(root):
    """``root/train/good`` of an MVTec AD category, each name in any case (a hand-made copy may write ``Train/Good``);
    None where it has none."""
    return next((folder for folder in _subfolders(_in_any_case(root, "train")) if _is_good(folder)), None)


def _category(root, category):
    """``root/category`` where that folder exists (in any case: `Screw` finds `screw`), else ``root`` (a category
    folder of another name, as adtf-verify's manifest config; the reader says what it holds if it is none). The
    dataset is named after the folder read, never after the option."""
    if not category:
        return root
    if (root / str(category)).is_dir():
        return root / str(category)
    return next((p for p in _subfolders(root) if p.name.lower() == str(category).lower()), root)


def _asked(category):
    """The start of a hint that lists a root's categories: which one was asked for, if any."""
    return f"; category={category} is none of its folders, which hold" if category else "; it holds"


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
    root = _category(resolve_dir(path, "DAGM 2007"), category)
    if not _in_any_case(root, "Train").is_dir():
        classes = sorted(p.name for p in _subfolders(root) if _in_any_case(p, "Train").is_dir())
        first_release = root.name.endswith("_def") or (root.parent / f"{root.name}_def").is_dir()
        hint = (f"{_asked(category)} the classes {classes}: use dagm:{root / classes[0]} or category=..." if classes else
                f"; it is one split of a class: use dagm:{root.parent}" if _dagm_labels_file(root).is_file() else
                "; this is the first release's ClassN/ + ClassN_def/ layout, which has no labels file: use the "
                "later release (ClassN/Train, ClassN/Test)" if first_release else
                _other_kind_hint(root, SourceKind.DAGM))
        raise DataError(f"{root}: no Train folder (DAGM 2007 layout: ClassN/Train/, ClassN/Test/, each with "
                        f"Label/Labels.txt){hint}")
    if not _dagm_labels_file(_in_any_case(root, "Train")).is_file() and (hint := _other_kind_hint(root, SourceKind.DAGM)):
        raise DataError(f"{root}: no Train/Label/Labels.txt (DAGM 2007 layout){hint}")  # an MVTec-like Train/, Test/
    rows = {split: _dagm_labels(_in_any_case(root, split)) for split in ("Train", "Test")}
    if n_train is None:
        train = [s for s in rows["Train"] if s.label == 0]
        test = rows["Test"]
        protocol = "DAGM 2007's official split: Train's normal images fit, every Test image tests"
    else:
        normal = [s for split in rows.values() for s in split if s.label == 0]
        if not 1 <= n_train < len(normal):
            raise DataError(f"{root}: n_train={n_train} must leave test images out of the class's "
                            f"{len(normal)} normal images (--n-train N, or the spec's n_train=N; n_train=None keeps "
                            "the official Train/Test split)")
        rest, train = split_off(normal, count=n_train, seed=seed, what=f"{root} normal images")
        if n_test_normal is not None:
            _, rest = split_off(rest, count=min(n_test_normal, len(rest)), seed=seed)
        train = sorted(train, key=_path)
        defective = [s for split in rows.values() for s in split if s.label]
        test = sorted(rest + defective, key=_path)
        protocol = (f"paper 000's DAGM protocol: {n_train} of the {len(normal)} normal images of Train and Test "
                    f"together are the training images, {len(rest)} other normal ones and the {len(defective)} "
                    "defective images of both splits test")
        if n_test_normal is not None and len(rest) < n_test_normal:
            protocol += f" ({len(rest)}, not {n_test_normal} normal test images: the class has no more)"
    return AnomalyDataset(f"dagm:{root.name}", train, test, has_masks=True, notes=[protocol])


def _dagm_labels_file(split_dir):
    """``split_dir/Label/Labels.txt``, each name in any case: a copy unpacked or synced through a tool that changed case
    (0001.png, labels.txt) is still DAGM, as the layout's other readers look names up in any case."""
    return _in_any_case(_in_any_case(split_dir, "Label"), "Labels.txt")


def _dagm_labels(split_dir):
    labels_file = _dagm_labels_file(split_dir)
    label_dir = labels_file.parent
    if not labels_file.is_file():
        raise DataError(f"{labels_file}: not found (DAGM 2007 layout: ClassN/{split_dir.name}/Label/Labels.txt)")
    samples = []
    images, masks = ({p.name.lower(): p for p in d.iterdir()} if d.is_dir() else {} for d in (split_dir, label_dir))
    for line_no, line in enumerate(labels_file.read_text(errors="replace").splitlines(), 1):
        fields = line.split()
        if len(fields) <= 1:  # the header line, or blank
            continue
        if len(fields) < 3 or fields[1] not in ("0", "1") or (fields[1] == "1" and len(fields) < 5):
            raise DataError(f"{labels_file}, line {line_no}: expected 'id flag filename 0 label_filename' "
                            f"(flag 0 or 1), got {line.strip()!r}")
        if fields[1] == "1" and fields[4] == "0":  # a normal row's placeholder: the mask's name is missing
            raise DataError(f"{labels_file}, line {line_no}: {fields[2]} is marked defective (flag 1) but names no "
                            f"mask file (its last field is 0); DAGM 2007 gives every defective image one")
        if fields[1] == "1":
            mask = _in_any_case(label_dir, fields[4], masks)
            samples.append(Sample(str(_in_any_case(split_dir, fields[2], images)), 1, "defective",
                                  str(mask) if _is_file_or_broken_link(mask) else None))
        else:
            samples.append(Sample(str(_in_any_case(split_dir, fields[2], images)), 0, "good"))
    if not samples:
        raise DataError(f"{labels_file}: lists no images")
    unmasked = [s.path for s in samples if s.label == 1 and s.mask_path is None]
    if unmasked:  # as mvtec: and folder: treat a missing mask: a damaged copy should not stop a run, nor pass unsaid
        warnings.warn(f"{label_dir}: the label image named in {labels_file.name} is missing for {len(unmasked)} "
                      f"defective image(s) (e.g. {unmasked[0]}); they count for the image metrics, not the pixel "
                      "metrics", stacklevel=4)
    listed = {Path(s.path).name.lower() for s in samples}
    unlisted = [p for p in _list_images(split_dir) if p.name.lower() not in listed]
    if unlisted:  # the labels file decides what an image is: one it does not list cannot be read
        warnings.warn(f"{labels_file} does not list {len(unlisted)} image(s) of {split_dir} (e.g. {unlisted[0].name}): "
                      "they are not read", stacklevel=4)
    return samples


def _in_any_case(folder, name, listing=None):
    """``folder / name``, or the entry of ``folder`` whose name differs from ``name`` only in case (else
    ``folder / name``, for the caller to report as missing). ``listing``: ``{name.lower(): path}`` of the folder's
    entries, where a caller looks up many names in one folder."""
    exact = folder / name
    if exact.exists() or not folder.is_dir():
        return exact
    listing = {p.name.lower(): p for p in folder.iterdir()} if listing is None else listing
    return listing.get(name.lower(), exact)


def _read_mtd(path, *, seed=0, train_fraction=0.8):
    """Magnetic Tile Defect: ``MT_<Class>/Imgs/<id>.jpg`` with a same-stem ``<id>.png`` mask.

    ``MT_Free`` is normal: a ``seed``-shuffled ``train_fraction`` of it (rounded) trains,
    the rest is tested with every defect class (blowhole, break, crack, fray, uneven).
    """
    root = resolve_dir(path, "MTD")
    if not (root / "MT_Free" / "Imgs").is_dir():
        raise DataError(f"{root}: no MT_Free/Imgs folder (MTD layout: MT_<Class>/Imgs/<id>.jpg with a "
                        "same-named <id>.png mask; MT_Free holds the defect-free tiles)"
                        + _other_kind_hint(root, SourceKind.MTD))
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


def _read_folder(path, *, seed=0, anomalous=None, masks=None, test_normal=None, holdout=0.0):
    """The user's own images: a folder of normal images is enough.

    - ``PATH``: normal images (not recursive); all train, except a ``seed``-shuffled
      ``holdout`` fraction moved to the test set.
    - ``test_normal=DIR``: more normal images for the test set.
    - ``anomalous=DIR``: anomalous test images; each subfolder is a defect type, images
      directly in DIR get the defect ``"anomalous"``; a subfolder ``good`` (MVTec's ``test/``
      layout) holds normal test images.
    - ``masks=DIR``: the mask of ``<stem>.<ext>`` is ``<stem>.png`` or ``<stem>_mask.png`` (any image
      suffix, any case), in ``DIR/<defect>/`` or ``DIR/``. An anomalous image without one counts for the image
      metrics and not the pixel metrics (with a warning): a few missing masks should not stop a run.
    """
    normal_dir = resolve_dir(path, "normal images")
    if _dagm_labels_file(normal_dir).is_file():  # its defective images would be fitted as normal ones
        raise DataError(f"{normal_dir} is a split of a DAGM 2007 class, whose Label/Labels.txt marks some of its "
                        f"images defective: folder: would fit them as normal; use dagm:{normal_dir.parent}")
    normals = _list_images(normal_dir)
    if not normals:  # why not, where it can be told: another kind of data, or images one folder down
        if hint := _other_kind_hint(normal_dir, SourceKind.FOLDER):
            raise DataError(f"{normal_dir}: no images directly in it{hint}")  # folder: on an MVTec category, say
        if below := sorted({p.parent for p in _images_below(normal_dir)}):
            names = ", ".join(f"{os.path.relpath(f, normal_dir)}/" for f in below[:4]) + (", ..." if len(below) > 4 else "")
            raise DataError(f"{normal_dir}: no images directly in it, only in its subfolders ({names}): give the "
                            f"folder of normal images itself and the defective ones' as anomalous=, e.g. "
                            f"folder:{normal_dir}/<good>,anomalous={normal_dir}/<defective>")
        _list_images(normal_dir, required=True)  # raises, naming the suffixes looked for
    if not 0 <= holdout < 1:
        raise DataError(f"folder: holdout={holdout} must be in [0, 1)")
    train, test = split_off([Sample(str(p), 0, "good") for p in normals], holdout, seed)
    if not train:  # else "no usable training image left", of images that were fine
        raise DataError(f"folder: holdout={holdout} moves all {len(normals)} normal image(s) of {normal_dir} to the "
                        "test set, leaving none to fit on: give more normal images or a smaller holdout")
    flat = [normal_dir]  # folders read without their subfolders
    if test_normal:
        flat.append(resolve_dir(test_normal, "test_normal"))
        test += [Sample(str(p), 0, "good") for p in _list_images(flat[-1], required=True)]
    if masks and not anomalous:  # masks mark defects in anomalous images: without them they were ignored unseen
        raise DataError(f"folder: masks={masks} needs anomalous=DIR, the defective images whose masks they are")
    mask_dir = resolve_dir(masks, "masks") if masks else None
    anomalous_dir = resolve_dir(anomalous, "anomalous") if anomalous else None
    if anomalous:
        groups = [("anomalous", _list_images(anomalous_dir))]
        for folder in _subfolders(anomalous_dir):
            if mask_dir and folder.resolve() == mask_dir.resolve():  # MVTec AD 2's test_public/ground_truth
                continue
            flat.append(folder)
            if _is_good(folder):  # an MVTec-style test/ folder's good images: test normals, not a defect type
                test += [Sample(str(p), 0, "good") for p in _list_images(folder)]
            else:
                groups.append((folder.name, _list_images(folder)))
        if not any(images for _, images in groups):
            raise DataError(f"{anomalous_dir}: no images (looked for {', '.join(IMAGE_SUFFIXES)}, and in subfolders)")
        image_folders = {os.path.realpath(anomalous_dir / defect) for defect, _ in groups[1:]}
        image_folders.add(os.path.realpath(anomalous_dir))
        for defect, images in groups:
            masks = [_mask_files(mask_dir / defect, image_folders), _mask_files(mask_dir, image_folders)] if mask_dir else []
            found = {p: _find_mask(masks, p.stem) for p in images}
            found = {p: m for p, m in found.items() if m is None or os.path.realpath(m) != os.path.realpath(p)}  # not itself
            # Masks kept beside their images (masks= naming the anomalous folder) are masks, not defective images.
            claimed = {os.path.realpath(m) for m in found.values() if m is not None}
            test += [Sample(str(p), 1, defect, found.get(p)) for p in images if os.path.realpath(p) not in claimed]
    if mask_dir:
        _warn_of_unmasked(test, mask_dir, "in <defect>/ and directly")
    given = {d.resolve() for d in (*flat, anomalous_dir, mask_dir) if d is not None}

    def named_elsewhere(sub, folder):  # a folder the spec names itself, or one above or below such a folder
        others = {d for d in given if d != folder and d not in folder.parents}
        return any(d == sub or sub in d.parents or d in sub.parents for d in others)

    unread = [p for folder in flat for sub in _subfolders(folder) if not sub.name.startswith(".")
              and not named_elsewhere(sub.resolve(), folder.resolve()) for p in _images_below(sub)]
    if unread:  # an "old/" or "2024-05/" subfolder of good parts: read nowhere, so said
        warnings.warn(f"{len(unread)} image(s) in subfolders are not read (e.g. {unread[0]}): folder: reads its "
                      "normal folder, test_normal and each anomalous/<defect>/ folder without their subfolders; "
                      "move them up, or name them in the spec", stacklevel=3)
    unique, repeated = {}, []
    for sample in test:  # test_normal=DIR/good with anomalous=DIR reads DIR/good twice: count each image once
        real = os.path.realpath(sample.path)
        if real in unique:
            repeated.append(sample.path)
        else:
            unique[real] = sample
    if repeated:
        warnings.warn(f"{len(repeated)} test image(s) are named twice by the spec (e.g. {repeated[0]}): each is "
                      "counted once", stacklevel=3)
        test = list(unique.values())
    # (with masks= given, the defective images' folders follow the reader's rule: 7.png beside 7.jpg is a photo there)
    _warn_of_masks_read_as_images(train + [s for s in test if not (mask_dir and s.label == 1)])
    has_masks = bool(anomalous and masks) and any(s.mask_path for s in test)
    # Named by the parent too: normal folders are often called "train", "good" or "ok", and two sets of the same
    # name would share a default run folder, the second overwriting the first one's finished run.
    name = "-".join(part for part in (normal_dir.parent.name, normal_dir.name) if part)
    return AnomalyDataset(f"folder:{name}", train, test, has_masks=has_masks)


def _warn_of_unmasked(test, mask_dir, where):
    """An anomalous image without a mask counts for the image metrics, not the pixel metrics: a few missing masks
    should not stop a run, nor pass unsaid."""
    unmasked = [s.path for s in test if s.label == 1 and s.mask_path is None]
    if unmasked:
        warnings.warn(f"{mask_dir}: no mask for {len(unmasked)} of the anomalous images (e.g. {unmasked[0]}: looked "
                      f"for <stem>_mask.png and <stem>.png, any image suffix, {where}); they count for the image "
                      "metrics, not the pixel metrics", stacklevel=4)


def _name_key(name):
    """A file name as masks are matched by: lower case, and one Unicode form (macOS tools and some zips write
    ``ü`` as ``u`` plus a combining mark; the image beside it may be named with the single character)."""
    return unicodedata.normalize("NFC", name).lower()


def _files_by_name(folder):
    """The image files directly in ``folder`` by ``_name_key`` ({} where it is absent)."""
    return {_name_key(p.name): str(p) for p in _list_images(folder, suffixes=IMAGE_SUFFIXES)} if folder.is_dir() else {}


def _mask_files(folder, image_folders):
    """``_files_by_name(folder)``; in a folder of the defective images themselves (``image_folders``), only the
    ``<stem>_mask.<ext>`` files: there ``7.png`` beside ``7.jpg`` may be a second photo, not its mask."""
    files = _files_by_name(folder)
    if os.path.realpath(folder) in image_folders:
        files = {name: path for name, path in files.items() if name.rsplit(".", 1)[0].endswith("_mask")}
    return files


def _find_mask(folders, stem):
    """The mask of image ``stem``: ``<stem>_mask.<ext>`` or ``<stem>.<ext>``, any image suffix in any case (MVTec
    writes ``000_mask.png``, DAGM-style sets ``.PNG``, VisA-style conversions ``000.png``), from the first of
    ``folders`` (``_files_by_name`` dicts) that has one; None where none has."""
    for files in folders:
        for name in (f"{stem}_mask", stem):
            for suffix in IMAGE_SUFFIXES:
                if _name_key(f"{name}{suffix}") in files:
                    return files[_name_key(f"{name}{suffix}")]
    return None


def _is_good(folder):
    """MVTec's ``test/good`` holds normal test images; a hand-made copy may spell it ``Good`` or ``GOOD``."""
    return folder.name.lower() == "good"


def _read_mnist(path, *, seed=0, normal_class=0, train_fraction=0.8):
    """MNIST idx files (``{train,t10k}-{images-idx3,labels-idx1}-ubyte``, gzipped or not).

    One class is normal, the nine others anomalous (``defect`` = the digit). With both
    splits present: train = the normal class of the train split, test = the whole t10k
    split (the protocol of the papers' MNIST tables). With one split only (the shared copy
    holds t10k): a ``seed``-shuffled ``train_fraction`` of its normal-class images trains,
    the rest of them and all other digits test. Images stay in memory (``arrays``).
    """
    root = resolve_dir(path, "MNIST")
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
    return one_class_dataset(f"mnist:{normal_class}", "mnist", splits, normal_class, [str(d) for d in range(10)],
                             seed=seed, train_fraction=train_fraction)


def _read_classes(path, *, seed=0, normal_class=None, train_fraction=0.8):
    """A labelled image set, one folder per class (torchvision's ImageFolder layout), for the one-class protocol.

    - ``PATH/train/<class>/*`` and ``PATH/test/<class>/*``: the normal class's training images fit, every test
      image evaluates (the papers' CIFAR-10 and MNIST protocol);
    - ``PATH/<class>/*`` alone: a ``seed``-shuffled ``train_fraction`` of the normal class's images fit, the rest
      of them and every other class evaluate (paper 002's COIL-100 protocol, 80/20).

    ``normal_class``: a class folder's name or, where no folder is so named, its index among the class folders
    that hold images in ``train/`` (or PATH), in name order, as ImageFolder numbers them (default: the first).
    ``defect`` = the class's folder name. A class's images are those anywhere below its folder, as ImageFolder finds
    them.
    """
    root = resolve_dir(path, "classes")
    if detect_kind(root) is SourceKind.MVTEC and (root / "ground_truth").is_dir():
        warnings.warn(f"{root} is an MVTec AD category: classes: reads its train/ and test/ folders as classes and "
                      f"not its ground_truth/ masks; give it as mvtec:{root} for the pixel metrics", stacklevel=3)
    splits = {name: root / name for name in ("train", "test")}
    if (root / "train").is_dir() != (root / "test").is_dir():
        have, lack = ("train", "test") if (root / "train").is_dir() else ("test", "train")
        raise DataError(f"{root}: a {have}/ folder and no {lack}/ (expected train/<class>/ and test/<class>/, or "
                        "<class>/ folders alone)")
    if not all(folder.is_dir() for folder in splits.values()):
        splits = {"all": root}
    classes = {split: {c.name: _images_below(c) for c in _subfolders(folder) if not c.name.startswith(".")}
               for split, folder in splits.items()}
    names = sorted(set().union(*classes.values()))
    if not names or not any(images for by_class in classes.values() for images in by_class.values()):
        raise DataError(f"{root}: no class folders with images (expected <class>/*.png, or train/<class>/ and "
                        "test/<class>/)")
    first = next(iter(classes))
    # Indices count the class folders that hold images in the fitted split (train/, or the one folder), in name order:
    # the classes torchvision's ImageFolder(train) numbers. A test-only or empty folder does not shift them.
    indexed = sorted(name for name, images in classes[first].items() if images)
    if normal_class is None:
        normal_class = indexed[0] if indexed else names[0]
    elif normal_class not in names:  # a folder's name wins over an index: folders 1, 2, 3 are named, not counted
        index = int(normal_class) if str(normal_class).isdecimal() else None
        if index is None or index >= len(indexed):
            raise DataError(f"classes: normal_class={normal_class!r} is neither a class folder under {root} nor an "
                            f"index below {len(indexed)} (the classes: {', '.join(indexed[:12])}"
                            f"{', ...' if len(indexed) > 12 else ''})")
        normal_class = indexed[index]
    if not classes[first].get(normal_class):
        raise DataError(f"{splits[first] / normal_class}: no images of the normal class to fit on")
    number = {name: i for i, name in enumerate(names)}
    files_and_labels = {split: ([image for name in sorted(by_class) for image in by_class[name]],
                                np.array([number[name] for name in sorted(by_class) for _ in by_class[name]], int))
                        for split, by_class in classes.items()}
    return one_class_dataset(f"classes:{root.name}-{normal_class}", "classes", files_and_labels, number[normal_class],
                             names, seed=seed, train_fraction=train_fraction)


COIL_FILE = re.compile(r"obj(\d+)__(\d+)\.\w+$", re.IGNORECASE)  # COIL-100 and COIL-20: obj<object>__<view>.png


def _read_coil(path, *, seed=0, normal_class=None, train_fraction=0.8):
    """COIL-100 (or COIL-20) as distributed: one flat folder of ``obj<k>__<view>.png`` files, 72 views per object.

    PATH is that folder (``coil-100/``) or the folder holding it. Object ``normal_class`` (its number in the file
    names, ``1`` for ``obj1__*``, or the name ``obj1``; default: the lowest number) is normal: a ``seed``-shuffled
    ``train_fraction`` (0.8) of its views fit, the rest of them and every other object's views evaluate (paper 002's
    COIL-100 protocol, after Pidhorskyi et al.). ``defect`` = the object's name, ``objK``.
    """
    if path and str(path).lower().endswith(".zip"):
        raise DataError(f"{path}: a zip archive; unzip it and give the folder of obj<k>__<view>.png files")
    root = resolve_dir(path, "COIL")
    holding = [root] if _coil_objects(root) != set() else [
        f for f in _subfolders(root) if any(COIL_FILE.match(p.name) for p in _list_images(f))]
    images = _list_images(holding[0]) if holding else []
    files = {str(p): (int(m[1]), int(m[2])) for p in images if (m := COIL_FILE.match(p.name))}
    if not files:
        raise DataError(f"{root}: no COIL files (expected obj<k>__<view>.png, e.g. coil-100/obj1__0.png; unzip "
                        "coil-100.zip first)")
    if len(holding) > 1:
        raise DataError(f"{root}: COIL files in {len(holding)} folders ({', '.join(str(f) for f in holding)}): give "
                        "the one to read")
    if len(files) < len(images):  # read as COIL, the others would be left out without a word
        other = next(p for p in images if str(p) not in files)
        raise DataError(f"{holding[0]}: {len(images) - len(files)} image(s) not named obj<k>__<view> (e.g. "
                        f"{other.name}) beside the COIL files: move them out, or read the folder as folder: or "
                        "classes:")
    objects = sorted({number for number, _ in files.values()})
    names = [f"obj{number}" for number in objects]
    text = str(objects[0] if normal_class is None else normal_class).lower().removeprefix("obj")
    if not text.isdecimal() or int(text) not in objects:
        raise DataError(f"coil: normal_class={normal_class!r} is no object of {holding[0]} (objects "
                        f"{objects[0]}-{objects[-1]}: a number as in the file names, obj<k>__<view>.png, or "
                        "its name objK)")
    paths = sorted(files, key=lambda p: files[p])
    labels = np.array([objects.index(files[p][0]) for p in paths], int)
    return one_class_dataset(f"coil:{holding[0].name}-obj{int(text)}", "coil", {"all": (paths, labels)},
                             objects.index(int(text)), names, seed=seed, train_fraction=train_fraction)


def _coil_objects(folder):
    """The objects of a folder's COIL files, found from the names alone: None as soon as an image of another name
    turns up (so that another layout is never taken for COIL), an empty set where the folder holds no image."""
    objects = set()
    with os.scandir(folder) as entries:
        for entry in entries:
            if Path(entry.name).suffix.lower() in LISTED_SUFFIXES and not entry.name.startswith("."):
                match = COIL_FILE.match(entry.name)
                if not match:
                    return None
                objects.add(match[1])
    return objects


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
    from adtf.data.synthetic import DEFAULT, materialize

    name = path or DEFAULT
    folder = materialize(name=name, seed=seed, **options)  # its options were checked against its signature
    dataset = _read_mvtec(folder)
    dataset.name = f"synthetic:{name}"
    return dataset


READERS = {SourceKind.MVTEC: _read_mvtec, SourceKind.DAGM: _read_dagm, SourceKind.MTD: _read_mtd,
           SourceKind.FOLDER: _read_folder, SourceKind.MNIST: _read_mnist, SourceKind.CIFAR: read_cifar,
           SourceKind.CLASSES: _read_classes, SourceKind.COIL: _read_coil, SourceKind.SYNTHETIC: _read_synthetic}


# --------------------------------------------------------------------------- helpers


def resolve_dir(path, what):
    if not path:
        raise DataError(f"{what}: no folder given (a spec reads KIND:PATH)")
    folder = expand_user(str(path))
    if not folder.exists() and not folder.is_absolute() and (datasets_root() / folder).exists():
        folder = datasets_root() / folder
    if folder.is_file():  # a single image given where its folder belongs
        raise DataError(f"{folder} is a file; {what}: give the folder that holds the images")
    if not folder.is_dir():
        raise DataError(f"{what} folder not found: {folder}")
    return folder


def _other_kind_hint(root, kind):
    """``"; it holds <other> data: give it as <other>:root"`` where ``root`` reads as another kind than ``kind``
    (a plain folder of images: ``folder:``), else ``""``: for the error of a reader that found none of its layout."""
    found = detect_kind(root)
    if found is kind or found is SourceKind.FOLDER and not _list_images(root):
        return ""
    what = {SourceKind.MVTEC: "an MVTec AD category", SourceKind.MTD: "Magnetic Tile Defect data",
            SourceKind.DAGM: "DAGM 2007 data", SourceKind.FOLDER: "a folder of images"}
    what = what.get(found, f"{found.value} data")
    if found is SourceKind.MVTEC and not _train_good(root):
        what = "MVTec AD categories"  # the root of several: the mvtec: reader's error names them
    return f"; it holds {what}: give it as {found.value}:{root}"


def detect_kind(root):
    if _train_good(root) or not _list_images(root) and any(_train_good(category) for category in _subfolders(root)):
        return SourceKind.MVTEC  # a category, or the root of several: its reader says which to give
    if (root / "MT_Free").is_dir():
        return SourceKind.MTD
    # DAGM's own Train/ and Test/, or a labels file in any case: train/ and test/ alone is many a set's layout
    if (root / "Train").is_dir() and (root / "Test").is_dir() or _dagm_labels_file(_in_any_case(root, "Train")).is_file() \
            or _dagm_labels_file(root).is_file() or not _list_images(root) and any(
                _dagm_labels_file(_in_any_case(folder, "Train")).is_file() for folder in _subfolders(root)):
        return SourceKind.DAGM  # a class, one of its splits, or the root of several: its reader says which to give
    if any("idx3-ubyte" in p.name for p in root.iterdir()):
        return SourceKind.MNIST
    if any(is_cifar_folder(folder) for folder in (root, *_subfolders(root))) or any(
            CIFAR_ARCHIVE.search(p.name) for p in root.iterdir() if p.is_file()) and not _list_images(root):
        return SourceKind.CIFAR
    objects = _coil_objects(root)  # a flat folder of COIL files, or one folder holding such a folder alone
    if objects and len(objects) > 1 or objects == set() and any(len(_coil_objects(f) or ()) > 1
                                                                 for f in _subfolders(root)):
        return SourceKind.COIL
    return SourceKind.FOLDER


def _warn_of_masks_read_as_images(samples):
    """MTD keeps each tile's mask beside it (``x.jpg`` and ``x.png``), as many sets do (or ``x_mask.png``): a folder
    read as images took every mask for a part (``adtf-score`` flagged 952 black masks among 952 tiles) or fitted
    them as normal images. Said, not guessed away: a PNG may share a JPEG's name for other reasons."""
    stems = {}
    for sample in samples:
        path = Path(sample.path)
        stems.setdefault((path.parent, path.stem.lower()), []).append(path)
    masks = []  # (mask, its image)
    for (folder, stem), paths in stems.items():
        image = next((p for p in paths if p.suffix.lower() != ".png"), None)
        if stem.endswith("_mask") and (folder, stem[:-len("_mask")]) in stems:
            image = stems[folder, stem[:-len("_mask")]][0]
        masks += [(path, image) for path in paths if image is not None and path != image
                  and (path.suffix.lower() == ".png" or stem.endswith("_mask"))]
    if masks:
        mask, image = masks[0]
        warnings.warn(f"{len(masks)} image(s) look like the masks of images beside them (e.g. {mask} beside "
                      f"{image.name}): each is read as an image of its own; move the masks to a folder of their own (a "
                      "folder: spec takes one as masks=DIR)", stacklevel=4)


def _images_below(folder):
    """The image files anywhere below ``folder``, hidden files and folders left out, in path order."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in LISTED_SUFFIXES and _is_file_or_broken_link(p)
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _is_file_or_broken_link(path):
    """A file, or a link to none (kept so that the check names it: left out, it vanished from a run without a word)."""
    return path.is_file() or path.is_symlink() and not path.exists()


def _subfolders(folder, pattern="*"):
    return sorted(p for p in folder.glob(pattern) if p.is_dir()) if folder.is_dir() else []


def _list_images(folder, *, required=False, suffixes=LISTED_SUFFIXES):
    images = sorted(p for p in folder.iterdir()
                    if p.suffix.lower() in suffixes and not p.name.startswith(".") and _is_file_or_broken_link(p))
    if required and not images:
        # Only the suffixes adtf reads: the wider list (TIFF, HEIC...) is looked for to name such files, not read.
        readable = [suffix for suffix in suffixes if suffix in IMAGE_SUFFIXES]
        raise DataError(f"{folder}: no images (no file there ends in {', '.join(readable)})")
    return images


def _path(sample):
    return sample.path


