"""The embedded default dataset: textures with drawn defects and exact masks.

``synthetic:<texture>`` needs nothing downloaded. Two kinds of texture:

- **Procedural** (``weave``, the default, and ``stone``): every sample, normal or
  defective, train or test, is cut from its own fresh 512x512 realisation of one
  stochastic process (filtered Gaussian noise with the texture's spectrum, as DAGM 2007
  was made), so all normal samples come from **one** distribution and no test pixel
  was ever in a training image. A threshold set on N normal images keeps about
  N/(N+1) of new normal images (tested on 1,000 fresh ones).
- **Photographs** (``brick``, ``grass``, ``gravel``): the 512x512 gray textures that
  ship inside scikit-image, cut into crops; train crops come from rows 0-319 and test
  crops from rows 320-511 of the one photograph, so their normals differ in
  distribution (the brick photo's perspective): a harder, shifted benchmark, kept as
  named variants.

One defect with an exact pixel mask is drawn into each defective sample, in the spirit
of DAGM 2007 (itself synthetic: a statistically textured surface with one small defect
per defective image).

- **Normal samples** are square crops whose side is 30-37.5 % of the texture side,
  resized to ``size`` (anti-aliased), turned by a random multiple of 90 degrees,
  maybe mirrored, with a mild brightness/contrast jitter (gain 0.9-1.1, offset
  +-8 gray levels). For photographs, train crops come from texture rows 0-319 and
  test crops (good and defective) from rows 320-511, so no test pixel was seen in
  training (the split is by rows because the brick photo has a left-to-right
  perspective: both halves then hold the same brick widths); a procedural sample's
  crop comes from anywhere in its own realisation.
- **Defects** (one per image; size scales with ``size``; a mask covers 0.1-20 % of
  the image, 0.4-4.4 % for 80 % of them at the defaults; contrast in units of the
  crop's own standard deviation, so a busy texture gets stronger defects):
  ``scratch`` (thin bright or dark curve, 1.5-3 sd), ``spot`` (soft-edged irregular
  blob, 1-2.2 sd brighter or darker), ``crack`` (dark branching random walk,
  1.8-3.5 sd), ``smudge`` (blurred, low-contrast smear), ``patch`` (CutPaste-like:
  a blob of the same texture, from anywhere in it, at 0.45-0.7x or 1.5-2.2x the scale and
  turned 20-70 degrees).
- **Masks** are exact: a mask pixel is 255 where the drawn defect changed the
  gray level by at least 8 (with the holes of that region filled), 0 elsewhere,
  and the saved image equals the defect-free crop at every pixel outside it.

The folder is in MVTec AD layout (``train/good``, ``test/good``, ``test/<defect>``,
``ground_truth/<defect>/NNN_mask.png``, 8-bit gray PNG) plus a ``MANIFEST.json``
with the parameters and a sha256 per file. Same parameters give byte-identical files.

Licence: the procedural textures are generated here (CC0). The three photographs are CC0 (public domain). skimage's docstrings say
brick comes from CC0Textures "Bricks25", gravel from CC0Textures "Gravel04"
and grass from DeviantArt "Grass-01" by linolafett, each "licensed under the
Creative Commons CC0 License"; the generated data is CC0 as well.
"""
import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image
from scipy import ndimage

from adtf.atomic import atomic_path
from adtf.errors import DataError
from adtf.paths import adtf_home

PROCEDURAL = ("weave", "stone")
PHOTOGRAPHS = ("brick", "grass", "gravel")
TEXTURES = PROCEDURAL + PHOTOGRAPHS
DEFAULT = "weave"
DEFECT_TYPES = ("scratch", "spot", "crack", "smudge", "patch")

_VERSION = 2  # bump when the drawing changes, so cached folders are not reused
_PHOTO_SIDE = 512  # the photographs' side, and a procedural field's
_TEST_ROWS_FROM = 320  # texture rows [0, 320) feed train crops, [320, 512) test crops
_CROP_SIDE = (0.30, 0.375)  # crop side / texture side: the test band (192 rows) holds the largest crop
_MIN_CHANGE = 8  # gray levels; a smaller difference is not a visible defect pixel
_AREA = (0.001, 0.2)  # allowed mask fraction; a drawing outside it is redrawn


@dataclasses.dataclass(frozen=True)
class SyntheticSample:
    """One generated image: ``mask`` is None for good samples, ``normal`` is the
    defect-free crop the defect was drawn on, ``crop`` = (row, col, side) in the texture."""

    split: str
    label: str
    index: int
    image: np.ndarray
    mask: np.ndarray | None
    normal: np.ndarray
    crop: tuple


def generate(name=DEFAULT, *, seed=0, size=128, n_train=200, n_test_good=50, n_test_defect=10):
    """Yield the samples of ``synthetic:<name>`` in file order, without touching disk.

    Each sample has its own random stream (seed, texture, split, label, index), so a
    sample does not depend on how many others are asked for.

    Args:
        name: one of ``TEXTURES``.
        seed: non-negative int; different seeds give different crops and defects.
        size: side of the square uint8 images, 32-512.
        n_train: normal training images.
        n_test_good: normal test images.
        n_test_defect: test images per defect type in ``DEFECT_TYPES``.

    Example:
        >>> s = next(generate("grass", seed=1, size=64, n_train=1))
        >>> (s.split, s.label, s.image.shape, s.mask)
        ('train', 'good', (64, 64), None)
    """
    photo = _texture(name)
    _check_params(seed, size, n_train, n_test_good, n_test_defect)
    jobs = [("train", "good", n_train), ("test", "good", n_test_good)]
    jobs += [("test", d, n_test_defect) for d in DEFECT_TYPES]
    for split, label, count in jobs:
        for i in range(count):
            key = [seed, TEXTURES.index(name), int(split == "test"), (("good",) + DEFECT_TYPES).index(label), i]
            rng = np.random.default_rng(key)
            if photo is None:  # a fresh realisation per sample: one distribution, nothing shared
                # As large as a crop of a 512 px field needs; a pasted patch needs a whole field.
                field = _PHOTO_SIDE if label == "patch" else int(np.ceil(_CROP_SIDE[1] * _PHOTO_SIDE))
                texture = _procedural(name, field, rng)
                rows = (0, field)
            else:
                texture = photo
                rows = (0, _TEST_ROWS_FROM) if split == "train" else (_TEST_ROWS_FROM, texture.shape[0])
            normal, crop = _normal_crop(texture, rows, size, rng, reference=_PHOTO_SIDE)
            if label == "good":
                yield SyntheticSample(split, label, i, normal, None, normal, crop)
            else:
                image, mask = _draw_defect(label, normal, texture, rng)
                yield SyntheticSample(split, label, i, image, mask, normal, crop)


def materialize(name=DEFAULT, *, seed=0, root=None, size=128, n_train=200, n_test_good=50,
                n_test_defect=10, overwrite=False) -> Path:
    """Write ``synthetic:<name>`` as an MVTec AD folder once and return its path.

    The folder is ``<root>/<name>-s<seed>-<size>-<hash of all parameters>``; it is
    built in a temporary folder and renamed into place, so it is either complete or
    absent. A complete folder with the same parameters is returned as is.

    Args:
        name, seed, size, n_train, n_test_good, n_test_defect: as in ``generate``.
        root: parent folder; default ``adtf_home()/"synthetic"``.
        overwrite: regenerate even when a complete folder exists.

    Example:
        >>> path = materialize("brick", seed=0)   # doctest: +SKIP
        >>> sorted(p.name for p in (path / "test").iterdir())   # doctest: +SKIP
        ['crack', 'good', 'patch', 'scratch', 'smudge', 'spot']
    """
    _texture(name)
    _check_params(seed, size, n_train, n_test_good, n_test_defect)
    if n_train < 1:  # a set of no training image was written, then read back as a folder without train/good
        raise DataError("synthetic: n_train must be at least 1 (the normal images to fit on), got 0")
    params = dict(texture=name, seed=seed, size=size, n_train=n_train, n_test_good=n_test_good,
                  n_test_defect=n_test_defect, version=_VERSION)
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    out = Path(root or adtf_home() / "synthetic") / f"{name}-s{seed}-{size}-{digest}"
    if not overwrite and _is_complete(out, params):
        return out
    digits = max(3, len(str(max(n_train, n_test_good, n_test_defect) - 1)))
    with atomic_path(out) as tmp:
        files = []
        for s in generate(name, seed=seed, size=size, n_train=n_train, n_test_good=n_test_good,
                          n_test_defect=n_test_defect):
            stem = f"{s.index:0{digits}d}"
            files.append(_write_png(tmp, f"{s.split}/{s.label}/{stem}.png", s.image))
            if s.mask is not None:
                files.append(_write_png(tmp, f"ground_truth/{s.label}/{stem}_mask.png", s.mask))
        manifest = dict(name=f"synthetic:{name}", layout="MVTec AD: train/good, test/<defect>, "
                        "ground_truth/<defect>/NNN_mask.png (0/255)",
                        license="CC0 (procedural textures generated here; photographs from scikit-image's data: "
                                "brick, grass, gravel)",
                        origin="adtf.data.synthetic", params=params, files=files)
        (tmp / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return out


def _texture(name):
    """The photograph of ``name`` as float32, or None for a procedural texture."""
    if name not in TEXTURES:
        raise DataError(f"synthetic dataset {name!r} is unknown; choose one of {', '.join(TEXTURES)}")
    return None if name in PROCEDURAL else getattr(skimage.data, name)().astype(np.float32)


def _procedural(name, n, rng):
    """One ``n x n`` realisation of a procedural texture: Gaussian noise shaped by the texture's spectrum.

    - ``weave``: a woven look: two orthogonal threads (narrow spectral peaks at a period of
      about 11 px, their orientation and period jittered per sample by a few percent) over a
      band-limited grain;
    - ``stone``: isotropic 1/f^1.6 noise between periods of 3 and 200 px (a granular surface).

    Each call draws new noise, phases and jitter from ``rng``; gray levels have mean 128, sd 28.
    """
    fy, fx = np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij")
    radius = np.hypot(fy, fx)
    noise = np.fft.fft2(rng.standard_normal((n, n)))
    if name == "weave":
        angle = rng.normal(0.0, 0.03)
        period = 11.0 * rng.uniform(0.97, 1.03)
        spectrum = np.zeros((n, n))
        for turn in (0.0, np.pi / 2):
            cy, cx = np.sin(angle + turn) / period, np.cos(angle + turn) / period
            for sign in (1, -1):
                spectrum += np.exp(-((fy - sign * cy) ** 2 + (fx - sign * cx) ** 2) / (2 * 0.004 ** 2))
        grain = np.exp(-(radius / 0.18) ** 2) * (radius > 1 / 256)
        image = np.real(np.fft.ifft2(noise * spectrum)) / 0.05 + 0.35 * np.real(np.fft.ifft2(noise * grain)) / 0.1
    elif name == "stone":
        band = (radius > 1 / 200) & (radius < 1 / 3)
        image = np.real(np.fft.ifft2(noise * band / np.maximum(radius, 1e-6) ** 0.8))
    else:  # pragma: no cover - _texture validated the name
        raise DataError(f"no procedural texture {name!r}")
    image = (image - image.mean()) / (image.std() + 1e-12)
    return (128.0 + 28.0 * image).astype(np.float32)


def _check_params(seed, size, *counts):
    if not (isinstance(seed, (int, np.integer)) and seed >= 0):
        raise DataError(f"synthetic: seed must be a non-negative int, got {seed!r}")
    if not (isinstance(size, (int, np.integer)) and 32 <= size <= 512):
        raise DataError(f"synthetic: size must be an int in 32..512, got {size!r}")
    if any(not isinstance(c, (int, np.integer)) or c < 0 for c in counts):
        raise DataError(f"synthetic: n_train, n_test_good, n_test_defect must be ints >= 0, got {counts}")


def _is_complete(out, params):
    try:
        manifest = json.loads((out / "MANIFEST.json").read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("params") == params and all((out / f["path"]).is_file() for f in manifest["files"])


def _write_png(folder, rel, array):
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode="L").save(path)
    data = path.read_bytes()
    return dict(path=rel, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())


def _resize(array, size):
    return np.asarray(Image.fromarray(np.ascontiguousarray(array, np.float32), mode="F").resize(
        (size, size), Image.LANCZOS))


def _normal_crop(texture, rows, size, rng, reference=None):
    """A crop whose side is a fraction ``_CROP_SIDE`` of ``reference`` (default the texture's width)."""
    side = int(round(rng.uniform(*_CROP_SIDE) * (reference or texture.shape[1])))
    r = int(rng.integers(rows[0], rows[1] - side + 1))
    c = int(rng.integers(0, texture.shape[1] - side + 1))
    image = np.rot90(_resize(texture[r:r + side, c:c + side], size), int(rng.integers(4)))
    if rng.integers(2):
        image = image[:, ::-1]
    mean = image.mean()
    image = (image - mean) * rng.uniform(0.9, 1.1) + mean + rng.uniform(-8, 8)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), (r, c, side)


def _draw_defect(label, normal, texture, rng):
    """Draw ``label`` on ``normal`` until its mask covers an allowed fraction; return (image, mask)."""
    x = normal.astype(np.float32)
    for _ in range(100):
        drawn, support = _DRAW[label](x, texture, rng)
        drawn = np.clip(np.rint(drawn), 0, 255).astype(np.uint8)
        changed = np.abs(drawn.astype(np.int16) - normal) >= _MIN_CHANGE
        # One defect is one region: close 1-px gaps and fill holes, but never beyond where it was drawn.
        region = (ndimage.binary_fill_holes(ndimage.binary_closing(changed)) | changed) & support
        if _AREA[0] <= region.mean() <= _AREA[1]:
            return np.where(region, drawn, normal), region.astype(np.uint8) * 255
    raise RuntimeError(f"synthetic: could not draw a {label} of allowed size")  # a bug, not user input


def _blob(rng, n, radius_frac):
    """Normalised distance (< 1 inside) to an irregular blob of log-uniform radius in ``radius_frac``."""
    radius = n * np.exp(rng.uniform(*np.log(radius_frac)))
    cy, cx = rng.uniform(0.1, 0.9, 2) * n
    yy, xx = np.mgrid[:n, :n].astype(np.float32)
    yy, xx = (yy - cy) / rng.uniform(0.6, 1.0), xx - cx  # elongated, then turned
    turn = rng.uniform(0, np.pi)
    yy, xx = yy * np.cos(turn) - xx * np.sin(turn), yy * np.sin(turn) + xx * np.cos(turn)
    theta = np.arctan2(yy, xx)
    wobble = sum(rng.uniform(-0.12, 0.12) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
    return np.hypot(yy, xx) / (radius * (1 + wobble))


def _stroke(points, n, width):
    """Anti-aliased coverage in [0, 1] of a polyline of ``width`` pixels through ``points`` [(y, x)]."""
    on = np.zeros((n, n), bool)
    p = np.rint(np.asarray(points)).astype(int)
    p = p[(p >= 0).all(1) & (p < n).all(1)]
    on[p[:, 0], p[:, 1]] = True
    return np.clip(width / 2 + 0.5 - ndimage.distance_transform_edt(~on), 0, 1)


def _sign(rng):
    return 1.0 if rng.random() < 0.5 else -1.0


def _scratch(x, texture, rng):
    n = x.shape[0]
    start = rng.uniform(0.1, 0.9, 2) * n
    length, heading, bend = rng.uniform(0.25, 0.7) * n, rng.uniform(0, 2 * np.pi), rng.uniform(-0.3, 0.3)
    end = start + length * np.array([np.sin(heading), np.cos(heading)])
    ctrl = (start + end) / 2 + bend * length * np.array([np.cos(heading), -np.sin(heading)])
    t = np.linspace(0, 1, int(4 * length))[:, None]
    curve = (1 - t) ** 2 * start + 2 * t * (1 - t) * ctrl + t ** 2 * end  # quadratic Bezier
    alpha = _stroke(curve, n, rng.uniform(0.8, 2.0) * n / 128)
    return x + _sign(rng) * rng.uniform(1.5, 3.0) * x.std() * alpha, alpha > 0


def _crack(x, texture, rng):
    n = x.shape[0]
    points, walks = [], [(rng.uniform(0.15, 0.85, 2) * n, rng.uniform(0, 2 * np.pi), rng.uniform(0.25, 0.6) * n, 0)]
    while walks:  # random walks with small heading noise; each step may start a shorter side branch
        pos, heading, steps, depth = walks.pop()
        for _ in range(int(steps)):
            heading += rng.normal(0, 0.25)
            pos = pos + np.array([np.sin(heading), np.cos(heading)])
            points.append(pos)
            if depth < 2 and rng.random() < 0.03:
                walks.append((pos, heading + _sign(rng) * rng.uniform(0.4, 1.0), steps / 3, depth + 1))
    alpha = _stroke(points, n, rng.uniform(0.8, 1.8) * n / 128)
    return x - rng.uniform(1.8, 3.5) * x.std() * alpha, alpha > 0


def _soft(distance, softness):
    """1 inside the blob, falling smoothly to 0 at its edge over ``softness`` of the radius."""
    t = np.clip((1 - distance) / softness, 0, 1)
    return t * t * (3 - 2 * t)


def _spot(x, texture, rng):
    d = _blob(rng, x.shape[0], (0.04, 0.16))
    alpha = _soft(d, rng.uniform(0.3, 0.8))
    return x + _sign(rng) * rng.uniform(1.0, 2.2) * x.std() * alpha, d < 1


def _smudge(x, texture, rng):
    n = x.shape[0]
    d = _blob(rng, n, (0.06, 0.2))
    alpha = _soft(d, rng.uniform(0.3, 0.6))
    smeared = ndimage.gaussian_filter(x, rng.uniform(1.5, 4.0, 2) * n / 128, mode="reflect")
    local_mean = ndimage.gaussian_filter(x, n / 16, mode="reflect")
    smeared = local_mean + rng.uniform(0.2, 0.6) * (smeared - local_mean) + rng.uniform(-0.4, 0.4) * x.std()
    return x + alpha * (smeared - x), d < 1


def _patch(x, texture, rng):
    """CutPaste-like: a blob of the same texture at another scale and a non-right-angle rotation."""
    n, big = x.shape[0], texture.shape[0]  # a photograph, or the sample's own 512 px procedural field
    scale = rng.uniform(0.45, 0.7) if rng.random() < 0.5 else rng.uniform(1.5, 2.2)
    side = int(min(big, round(scale * np.mean(_CROP_SIDE) * big)))
    r, c = rng.integers(0, big - side + 1, 2)
    source = ndimage.rotate(_resize(texture[r:r + side, c:c + side], n), rng.uniform(20, 70), reshape=False,
                            order=1, mode="reflect")
    d = _blob(rng, n, (0.06, 0.2))
    return np.where(d < 1, source, x), d < 1


_DRAW = dict(scratch=_scratch, spot=_spot, crack=_crack, smudge=_smudge, patch=_patch)
