"""Dataset sources: a spec string -> the layout's reader (``adtf.data.layouts``) -> samples, validated
before any training (every image and mask is decoded here, by PIL and by TensorFlow as training decodes it).

A dataset is named by a spec string ``KIND:PATH[,key=value...]``; the ``key=value``
parts are options of that kind (the same as keyword arguments to ``load``, which win
when both are given; ``seed=N`` there sets ``load``'s seed). A relative PATH that does not exist is looked up under
``adtf.paths.datasets_root()``, so ``mvtec:mvtec_bottle`` finds the shared copy. A bare
PATH without ``KIND:`` is recognised by its layout (``train/good`` -> mvtec,
``MT_Free`` -> mtd, ``Train`` + ``Test`` -> dagm, idx files -> mnist, ``test_batch`` or a
``cifar-*.tar.gz`` -> cifar, ``obj<k>__<view>.png`` files -> coil, else folder).

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
``cifar:PATH[:k]``             CIFAR-10 or CIFAR-100 as distributed (Python or binary version, the
                               folder or its .tar.gz; ``adtf.data.cifar``), class k (index or
                               name) normal; options ``normal_class``, ``labels`` (CIFAR-100:
                               coarse or fine), ``train_fraction`` (test split alone).
``classes:PATH[:k]``           one folder per class (ImageFolder): ``PATH/<class>/`` or
                               ``PATH/{train,test}/<class>/``; class k (name or index) normal;
                               options ``normal_class``, ``train_fraction`` (one split).
``coil:PATH[:k]``              COIL-100 or COIL-20's flat folder of ``obj<k>__<view>.png``; object k
                               (its number in the file names, or ``objK``) normal; options
                               ``normal_class`` (the first), ``train_fraction`` (0.8).
``synthetic[:NAME]``           ``adtf.data.synthetic.materialize(NAME)`` (weave, stone, brick,
                               grass, gravel; default weave) read as MVTec AD; its options pass through.
=============================  =================================================================

Example:
    >>> ds = load("mvtec:mvtec_bottle")            # doctest: +SKIP
    >>> ds.counts()                                 # doctest: +SKIP
    {'train': 209, 'test_good': 20, 'test_broken_large': 20, 'test_broken_small': 22, ...}
    >>> load("folder:/data/parts/ok,anomalous=/data/parts/ng,masks=/data/parts/masks")  # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import re
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from PIL import Image, ImageChops
from tqdm.auto import tqdm

from adtf.data.cifar import CIFAR_ARCHIVE
from adtf.data.layouts import IMAGE_SUFFIXES, READERS, detect_kind, resolve_dir
from adtf.data.pipeline import END_SLACK, decode_image, is_complete_image_file
from adtf.data.samples import AnomalyDataset, SourceKind
from adtf.errors import DataError, tensorflow_message
from adtf.paths import datasets_root, expand_user

_TF_DECODABLE = {"PNG", "JPEG", "BMP", "GIF", "WEBP"}
MAX_LISTED_PROBLEMS = 10  # a message lists this many bad files, then a count


def parse_spec(spec: str) -> tuple[SourceKind, str | None, dict]:
    """Split ``KIND:PATH[,key=value...]`` into ``(kind, path, options)``.

    Values that read as numbers, ``true``/``false`` or ``none`` are converted.

    Example:
        >>> parse_spec("dagm:/data/DAGM/Class3,n_train=500")
        (<SourceKind.DAGM: 'dagm'>, '/data/DAGM/Class3', {'n_train': 500})
    """
    head, _, rest = spec.partition(":")
    known = {k.value for k in SourceKind}
    # The kind in any case (MVTec:, DAGM:), unless the whole spec is a path that exists (a folder named "Folder:x").
    kind = (SourceKind(head) if head in known else
            SourceKind(head.lower()) if head.lower() in known and not _exists(spec) else None)
    path, *parts = (rest if kind else spec).split(",")
    if parts and _exists(rest if kind else spec):  # a folder named "lot,id=3" (adtf-score's FOLDER): a path
        path, parts = (rest if kind else spec), []
    if any("=" not in part for part in parts):  # a folder whose name holds a comma: the longest prefix that exists
        for end in range(len(parts), 0, -1):
            joined = ",".join([path, *parts[:end]])
            if _exists(joined):
                path, parts = joined, parts[end:]
                break
    path = path or None
    options = {}
    for part in parts:
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise DataError(f"dataset spec {spec!r}: {part!r} is not key=value (nor part of an existing folder's "
                            "name)")
        if key.strip() in options:  # holdout=0.2,holdout=0.5 kept the last without a word
            raise DataError(f"dataset spec {spec!r}: {key.strip()} is given twice; give it once")
        options[key.strip()] = _parse_value(value.strip())
    one_class = kind in (SourceKind.MNIST, SourceKind.CIFAR, SourceKind.CLASSES, SourceKind.COIL)
    if one_class and path and not _exists(path) and (m := re.fullmatch(r"(.*):([^:/\\]+)", path)):
        path, options["normal_class"] = m[1], m[2]  # a class's index or name ("07" can name a folder)
        if kind is SourceKind.MNIST and m[2].isdecimal():
            options["normal_class"] = int(m[2])
    if kind is None:
        kinds = [k.value for k in SourceKind]
        if path is None:
            raise DataError(f"dataset spec {spec!r}: empty (expected KIND:PATH, KIND one of {kinds})")
        if not _exists(path):
            if re.fullmatch(r"[A-Za-z][\w-]+", head) and rest:  # "nosuch:/data/x" (a one-letter head: C:\data)
                raise DataError(f"dataset spec {spec!r}: unknown kind {head!r}; expected one of {kinds}, or a path")
            if "=" in path:  # what a list split at a spec's comma leaves: "size=64" from "synthetic:weave,size=64"
                raise DataError(f"dataset spec {spec!r} is an option with no dataset; in a list, quote every spec "
                                "that holds a comma: '[\"synthetic:weave,size=64\", mtd:PATH]'")
        kind = SourceKind.CIFAR if CIFAR_ARCHIVE.search(Path(path).name) else detect_kind(resolve_dir(path, "dataset"))
    return kind, path, options


def _exists(path):
    """Whether ``path`` names something, as given or under the datasets root."""
    return expand_user(path).exists() or (not Path(path).is_absolute() and (datasets_root() / path).exists())


def spec_options(kind):
    """The options a dataset kind takes, by name (``inspect.Parameter``, with their defaults)."""
    from adtf.data.synthetic import materialize

    reader = materialize if kind is SourceKind.SYNTHETIC else READERS[kind]  # synthetic passes its options on
    return {name: p for name, p in inspect.signature(reader).parameters.items()
            if name not in ("path", "name", "seed", "root") and p.kind is not p.VAR_KEYWORD}


def _checked_options(spec, kind, options):
    """``options`` with unknown ones and values of the wrong type named before the reader runs (it would fail
    inside); a folder or category option that reads as a number (``category=3``) is kept as its text."""
    params = spec_options(kind)
    options = {key: str(value) if params.get(key) is not None and params[key].default is None
               and isinstance(value, (int, float)) else value for key, value in options.items()}
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise DataError(f"dataset spec {spec!r}: unknown option(s) {unknown} for {kind.value} "
                        f"(accepted: {sorted(params)})")
    for key, value in options.items():
        default = params[key].default
        if value is None:  # "none": the reader's own meaning (dagm's n_train=none keeps the official split)
            continue
        if isinstance(default, bool):
            wrong = not isinstance(value, bool)
        elif isinstance(default, (int, float)):
            wrong = isinstance(value, bool) or not isinstance(value, int if isinstance(default, int) else (int, float))
        else:
            continue
        if wrong:
            wanted = {"int": "an int", "float": "a float", "bool": "true or false"}[type(default).__name__]
            raise DataError(f"dataset spec {spec!r}: option {key} takes {wanted} "
                            f"(default {default}), got {value!r}")
    return options


def load(spec: str, *, seed: int = 0, skip_bad: bool = False, flag_unusable: bool = False, progress: bool = True,
         **options) -> AnomalyDataset:
    """Read a dataset, split it for anomaly detection and check every file before returning.

    Every image (and mask) is decoded here, by PIL and by TensorFlow, so an unreadable or truncated file, a format
    TensorFlow cannot decode or a mask whose size differs from its image is reported here
    and not half-way through training. Structural problems (missing ``train/good``, an
    empty folder, a bad idx file) always raise.

    Args:
        spec: ``KIND:PATH[,key=value...]``; each kind is described in the docstring of ``adtf.data.sources``
            (and the README's table).
        seed: seed of every random split (mtd, dagm, mnist, folder holdout, synthetic).
        skip_bad: leave unusable files out with a warning naming each, instead of raising.
        flag_unusable: for a caller that flags unusable files itself (adtf-score): they are left out and listed in
            ``skipped``, with no warning each, and a set with none left is returned empty instead of raising.
        progress: a progress bar while checking a large set's files (False: none, as ``--quiet`` asks).
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
    kind, path, given = parse_spec(spec)
    options = {**given, **options}
    seed = options.pop("seed", seed)  # "mtd:PATH,seed=3" works too
    options = _checked_options(spec, kind, options)
    # What reading and checking warn about (files left out, anomalous images without a mask, 12-bit data in 16-bit
    # files) is shown as ever and kept in ``dataset.notes``, so that a run's report repeats it.
    caught = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # PIL's own, once per open and naming no file: the check names each such image itself
            warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
            dataset = READERS[kind](path, seed=seed, **options)
            _validate(dataset, skip_bad, flag_unusable, progress)
    finally:  # shown before an error too
        for warning in caught:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    dataset.notes += [str(warning.message) for warning in caught]
    dataset.seed = seed
    return dataset


# --------------------------------------------------------------------------- readers


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


class _Decoded(NamedTuple):
    """What decoding one file found: its ``size`` (width, height), or the ``problem`` that makes it unusable;
    ``dim``: a 16-bit file whose values all stay below 4096 (12-bit camera data); ``gray``: no colour in it (a gray
    mode, or equal channels); ``turned``: an EXIF orientation that viewers apply and decoding does not."""
    size: tuple | None
    problem: str | None = None
    dim: bool = False
    gray: bool = False
    turned: bool = False


def _image_size(path, what):
    """Decode ``path`` fully, as TensorFlow will: a ``_Decoded``."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # a Latin-1 name from a zip made on Windows: TensorFlow's file ops take UTF-8 only
        return _Decoded(None, f"{ascii(path)}: the {what}'s file name is not valid UTF-8, which TensorFlow cannot "
                              "open (rename it, e.g. `convmv -f latin1 -t utf8 --notest -r DIR`)")
    if os.path.islink(path) and not os.path.exists(path):
        return _Decoded(None, f"{path}: the {what} is a link to {os.readlink(path)}, which does not exist (or links "
                              "back to itself)")
    try:
        with Image.open(path) as image:
            if image.format not in _TF_DECODABLE:
                return _Decoded(None, f"{path}: {image.format} {what}s are not supported (use PNG, JPEG, BMP, GIF "
                                      "or WebP)")
            if image.format == "BMP":
                problem = _bmp_problem(path, image.mode, what)
                if problem:
                    return _Decoded(None, problem)
        with Image.open(path) as image:
            image.load()  # decodes every pixel: PIL finds a truncated file only here
            if Image.MAX_IMAGE_PIXELS and image.size[0] * image.size[1] > Image.MAX_IMAGE_PIXELS:
                # PIL's own DecompressionBombWarning names no file (and catching it is not thread-safe: the check
                # runs in threads); up to twice its limit PIL reads the image, and so do we
                warnings.warn(f"{path}: the {what} has {image.size[0] * image.size[1]:,} pixels, past PIL's "
                              "decompression-bomb warning limit: it is read, taking memory as its pixels do (twice "
                              "that limit is refused)", stacklevel=2)
            refused = _tensorflow_refuses(path, image.format, what)
            if refused:
                return _Decoded(None, refused)
            return _Decoded(image.size, None, _is_12_bit_in_16(path, image),
                            _is_gray(image), image.getexif().get(_EXIF_ORIENTATION, 1) not in (0, 1))
    except FileNotFoundError:
        return _Decoded(None, f"{path}: {what} file not found")
    except Image.DecompressionBombError as err:  # a valid file, not a corrupt one: say what is wrong with it
        return _Decoded(None, f"{path}: the {what} is larger than PIL reads, as a guard against decompression "
                              f"bombs ({err}); cut it into tiles or scale it down")
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... for broken files
        suffix = Path(path).suffix.lower()
        if suffix not in IMAGE_SUFFIXES:  # a phone's HEIC, a JPEG 2000: a format, not a broken file
            return _Decoded(None, f"{path}: {suffix[1:].upper()} {what}s are not supported (use PNG, JPEG, BMP, GIF "
                                  "or WebP)")
        return _Decoded(None, f"{path}: cannot decode {what}: the file is corrupt or not an image "
                              f"({type(e).__name__}: {e})")


_EXIF_ORIENTATION = 0x0112


@functools.cache
def _read_check_decode():
    """A file read, checked whole (``pipeline.is_complete_image_file``) and decoded if it is, as one graph: run
    eagerly, the check's ops alone took 3 ms a file."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def read_check_decode(path):  # raises TensorFlow's decoding error; decodes nothing that is not whole
        contents = tf.io.read_file(path)
        complete = is_complete_image_file(contents)
        decoded = tf.cond(complete, lambda: tf.shape(decode_image(contents)), lambda: tf.zeros([3], tf.int32))
        return complete, decoded

    return read_check_decode


# What pipeline.is_complete_image_file (the served model's check) refuses, format by format, in words.
_NOT_WHOLE = {
    "PNG": f"has no end marker (IEND) within its last {END_SLACK} bytes: cut short?",
    "JPEG": f"has no end marker (EOI) within its last {END_SLACK} bytes: cut short?",
    "GIF": "does not end with its trailer byte: cut short?",
    "BMP": "is not the size its header promises (pixel offset + rows), or its 8-bit palette is not the gray ramp",
    "WEBP": "is animated (TensorFlow's decoder crashes on one: save the frame to use as PNG), or shorter than its "
            "header promises",
}


def _tensorflow_refuses(path, image_format, what):
    """Why TensorFlow would refuse a file that PIL decoded, in one message, or None: the served model's whole-file
    check first (which training must follow too: an animated WebP whose frame chunk is damaged reads as one still
    frame to PIL and crashed TensorFlow's decoder, "double free or corruption"), then TensorFlow's decoder itself,
    since PIL recovers from damage that it refuses (a GIF with bytes inserted, a JPEG damaged near its end: 15 of
    1,243 mutated files that PIL read), which the fit met mid-way, as a traceback."""
    import tensorflow as tf

    try:
        complete, _ = _read_check_decode()(path)
    except tf.errors.OpError as err:  # "{{function_node ...}} Invalid GIF data (...): ... [Op:DecodeImage]"
        detail = tensorflow_message(err)
        return (f"{path}: TensorFlow cannot decode the {what} ({detail}), which PIL reads past: the file is damaged "
                "(save it again from its source)")
    if not complete:
        return (f"{path}: the {image_format} {what} file {_NOT_WHOLE.get(image_format, 'is not whole')}; TensorFlow "
                "and the served model refuse it")
    return None


def _is_12_bit_in_16(path, image):
    """A 16-bit file whose values all stay below 4096 (12-bit camera data). PIL keeps 16-bit gray as it is, but reads a
    16-bit colour PNG as 8 bits (each value's top byte, as TensorFlow decodes it): there, below 16, from the header's
    bit depth (byte 24 of a PNG)."""
    if image.mode.startswith("I;16"):
        return 0 < image.getextrema()[1] < 4096
    if image.format != "PNG" or image.mode not in ("RGB", "RGBA"):
        return False
    with open(path, "rb") as file:
        header = file.read(26)
    return len(header) == 26 and header[24] == 16 and 0 < max(high for _, high in image.getextrema()[:3]) < 16


GRAY_TOLERANCE = 2  # gray levels (of 255) apart that a gray image's channels may decode


def _is_gray(image):
    """No colour in ``image``: a gray mode, or colour channels that are all equal (a gray part saved as RGB)."""
    if image.mode in ("1", "L", "LA", "La", "I", "F") or image.mode.startswith("I;"):
        return True
    # RGBA for a palette: Pillow warns on converting a palette with transparency to RGB.
    try:
        rgb = image if image.mode in ("RGB", "RGBA") else image.convert("RGBA" if image.mode in ("P", "PA") else "RGB")
    except ValueError:  # a mode Pillow cannot convert (LAB): a warning's guess must never make an image unusable
        return False
    if rgb.mode == "RGBA":  # as TensorFlow decodes 3 channels: a PNG's or WebP's alpha is dropped and the colour
        # under it kept (reduce would premultiply it away); a GIF's transparent pixels decode black
        colour = Image.merge("RGB", rgb.split()[:3])
        black = Image.new("RGB", rgb.size)
        rgb = Image.composite(colour, black, rgb.getchannel("A")) if image.format == "GIF" else colour
    # Block means of equal channels stay equal, and a part with colour keeps it: a 128-px copy tells as well. A gray
    # image saved as lossy WebP or JPEG decodes a level or two apart between channels: still gray.
    channels = rgb.reduce(max(1, max(rgb.size) // 128)).split()
    return all(ImageChops.difference(channels[0], other).getextrema()[1] <= GRAY_TOLERANCE for other in channels[1:])


def _bmp_problem(path, mode, what):
    """TensorFlow decodes uncompressed 24- and 32-bit BMPs, and 8-bit ones as gray levels: it refuses 1-, 4- and
    16-bit BMPs deep in the pipeline, and reads an 8-bit BMP's colour palette indices as gray without a word."""
    with open(path, "rb") as file:
        header = file.read(34)
    info_size = int.from_bytes(header[14:18], "little")
    bits = int.from_bytes(header[24:26] if info_size == 12 else header[28:30], "little")
    compression = 0 if info_size == 12 else int.from_bytes(header[30:34], "little")
    if compression in (0, 3) and (bits in (24, 32) or (bits == 8 and mode == "L")):
        return None  # one a few bytes longer than its rows (some editors pad the file): _tensorflow_refuses names it
    kind = "colour-palette " if mode == "P" else "compressed " if compression not in (0, 3) else ""
    return (f"{path}: a {bits}-bit {kind}BMP {what}, which TensorFlow does not decode right "
            "(save it as PNG, or as a 24-bit or 8-bit gray BMP)")


class _Checked(NamedTuple):
    """What decoding one sample found: ``problem`` makes its image unusable, ``mask_problem`` its mask alone (the
    image still counts for the image metrics); ``image``: the image's ``_Decoded``."""
    problem: str | None
    mask_problem: str | None
    image: _Decoded


_OK = _Checked(None, None, _Decoded(None))  # in-memory samples: nothing to check


def _check(sample):
    image = _image_size(sample.path, "image")
    if image.problem or not sample.mask_path:
        return _Checked(image.problem, None, image)
    mask = _image_size(sample.mask_path, "mask")
    if mask.problem:
        return _Checked(None, f"{mask.problem} (the mask of {sample.path})", image)
    if mask.size != image.size:
        turned = (" (the image's EXIF orientation turns it in viewers, not in decoding: rotate the image file "
                  "itself)" if image.turned and mask.size == image.size[::-1] else "")
        return _Checked(None, f"{sample.mask_path}: mask is {mask.size[0]}x{mask.size[1]} but its image "
                              f"{sample.path} is {image.size[0]}x{image.size[1]} (width x height){turned}", image)
    return _Checked(None, None, image)


def _listed(problems):
    """The first ``MAX_LISTED_PROBLEMS`` problems, a line each, and how many more."""
    more = len(problems) - MAX_LISTED_PROBLEMS
    return "".join(f"\n  {problem}" for problem in problems[:MAX_LISTED_PROBLEMS]) + (
        f"\n  ... and {more} more" if more > 0 else "")


CHECK_BAR_FROM = 500  # files; fewer are checked in seconds


def _validate(dataset, skip_bad, flag_unusable=False, progress=True):
    files = [s for s in dataset.train + dataset.test if s.index is None]
    # PIL releases the GIL while decoding, so threads overlap the decoding work.
    with ThreadPoolExecutor(max_workers=min(8, 2 * (os.cpu_count() or 1))) as pool:
        # A bar where the check takes a while: 4,000 camera JPEGs took minutes, with nothing said
        checks = tqdm(pool.map(_check, files), total=len(files), desc="checking files", unit="file",
                      disable=not progress or len(files) < CHECK_BAR_FROM, leave=not sys.stderr.isatty())
        checked = dict(zip(files, list(checks)))  # the bar's iterator run to its end, where it closes at N/N
    dim = [s.path for s, c in checked.items() if c.image.dim and not c.problem]
    if dim:
        # Decoding keeps a 16-bit value's top 8 bits (the SavedModel decodes the same way): 12-bit data reads dark.
        warnings.warn(f"{dataset.name}: {len(dim)} 16-bit image(s) with every value below 4096 (e.g. {dim[0]}): "
                      "decoded to 8 bits as 16-bit data, 12-bit camera data is 1/16 as bright, with 16 gray levels; "
                      "scale them to 8 bits or to the full 16-bit range", stacklevel=3)
    problems = [c.problem or c.mask_problem for c in checked.values() if c.problem or c.mask_problem]
    if problems and not (skip_bad or flag_unusable):
        raise DataError(f"{dataset.name}: {len(problems)} unusable file(s) (--skip-bad, or skip_bad=True in "
                        "Python, leaves them out with a warning; an image whose mask alone is unusable stays, for "
                        f"the image metrics):{_listed(problems)}")
    # One warning each for images and masks, however many: 200 broken files were 200 lines, and no total.
    bad_images = [c.problem for c in checked.values() if c.problem]
    if len(bad_images) == 1 and not flag_unusable:  # flagged by the caller instead
        warnings.warn(f"skipping {bad_images[0]}", stacklevel=3)
    elif bad_images and not flag_unusable:
        warnings.warn(f"{dataset.name}: skipping {len(bad_images)} of its {len(files)} images, unusable:"
                      f"{_listed(bad_images)}", stacklevel=3)
    # an image whose mask alone is unusable counts for the image metrics, as an image without a mask does
    bad_masks = [c.mask_problem for c in checked.values() if c.mask_problem and not c.problem]
    if len(bad_masks) == 1:
        warnings.warn(f"skipping the mask {bad_masks[0]}; its image counts for the image metrics, not the "
                      "pixel metrics", stacklevel=3)
    elif bad_masks:
        warnings.warn(f"{dataset.name}: skipping {len(bad_masks)} masks; their images count for the image metrics, "
                      f"not the pixel metrics:{_listed(bad_masks)}", stacklevel=3)
    dataset.skipped = [(s.path, c.problem) for s, c in checked.items() if c.problem]
    dataset.train = [s for s in dataset.train if not checked.get(s, _OK).problem]
    dataset.test = [dataclasses.replace(s, mask_path=None) if checked.get(s, _OK).mask_problem else s
                    for s in dataset.test if not checked.get(s, _OK).problem]
    if not dataset.train and not flag_unusable:
        raise DataError(f"{dataset.name}: no usable training image left")
    turned = [s for s, c in checked.items() if c.image.turned and not c.problem]
    if turned:  # a phone's portrait: stored sideways, shown upright; TensorFlow and the SavedModel read it as stored
        masked = [s for s in turned if s.mask_path and not checked[s].mask_problem]
        # Annotation tools draw on the upright view: a square image's mask then fits its size, turned against it.
        masks = (f"; {len(masked)} of them have a mask (e.g. {masked[0].mask_path}), which must be drawn on the "
                 "image as stored: a mask drawn in a viewer's upright view lies turned against its defect, and the "
                 "pixel metrics are wrong" if masked else "")
        warnings.warn(f"{dataset.name}: {len(turned)} image(s) carry an EXIF orientation (e.g. {turned[0].path}): "
                      "they are read as stored, as the SavedModel will read them, not turned as viewers show them; "
                      "rotate the files themselves (e.g. `mogrify -auto-orient`) if parts should be upright" + masks,
                      stacklevel=3)
    # What each file's colour is against a fit's is said where the fit is known (adtf.run.colour_change).
    dataset.gray = {s.path: c.image.gray for s, c in checked.items() if not c.problem}
    _warn_if_tested_on_training_files(dataset)


def training_files_among(test, trained_paths):
    """The paths of the ``test`` samples that are files among ``trained_paths`` (the same file or a link to it)."""
    trained = {os.path.realpath(path) for path in trained_paths}
    return [s.path for s in test if s.index is None and os.path.realpath(s.path) in trained]


def _warn_if_tested_on_training_files(dataset):
    """A test image that is a training file (the same folder given twice, a link into the training folder) scores
    as a fitted image does: the test figures come out optimistic, and nothing else would say so."""
    shared = training_files_among(dataset.test, [s.path for s in dataset.train if s.index is None])
    if shared:
        warnings.warn(f"{dataset.name}: {len(shared)} of the {len(dataset.test)} test images are training files "
                      f"too (e.g. {shared[0]}, the same file or a link to it): the test figures will be optimistic",
                      stacklevel=4)
