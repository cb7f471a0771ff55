"""The embedded synthetic dataset: layout, exact masks, disjoint crops, determinism, cache."""
import hashlib
import json

import numpy as np
import pytest
import skimage.data
from PIL import Image

from adtf.data.synthetic import DEFECT_TYPES, TEXTURES, generate, materialize
from adtf.errors import DataError

SMALL = dict(size=64, n_train=6, n_test_good=3, n_test_defect=2)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return materialize("gravel", seed=3, root=tmp_path_factory.mktemp("synthetic"), **SMALL)


@pytest.fixture(scope="module")
def defects():
    """Every texture x defect type, 4 each, at the default size."""
    return [s for name in TEXTURES for s in generate(name, seed=1, n_train=0, n_test_good=0, n_test_defect=4)]


def test_mvtec_layout_and_counts(small):
    assert small.name.startswith("gravel-s3-64-")
    assert sorted(p.name for p in (small / "test").iterdir()) == sorted(("good",) + DEFECT_TYPES)
    assert sorted(p.name for p in (small / "ground_truth").iterdir()) == sorted(DEFECT_TYPES)  # no masks for good
    assert len(list((small / "train/good").glob("*.png"))) == 6
    assert sorted(p.name for p in (small / "test/good").iterdir()) == ["000.png", "001.png", "002.png"]
    for defect in DEFECT_TYPES:
        images = sorted(p.stem for p in (small / "test" / defect).iterdir())
        masks = sorted(p.name for p in (small / "ground_truth" / defect).iterdir())
        assert images == ["000", "001"] and masks == ["000_mask.png", "001_mask.png"]
        for stem in images:
            image, mask = Image.open(small / "test" / defect / f"{stem}.png"), Image.open(
                small / "ground_truth" / defect / f"{stem}_mask.png")
            assert image.mode == mask.mode == "L" and image.size == mask.size == (64, 64)
            assert set(np.unique(np.asarray(mask))) == {0, 255}


def test_manifest_lists_every_file_with_its_hash(small):
    manifest = json.loads((small / "MANIFEST.json").read_text())
    on_disk = {k: v for k, v in _files(small).items() if k != "MANIFEST.json"}
    assert sorted(f["path"] for f in manifest["files"]) == sorted(on_disk)
    for f in manifest["files"]:
        assert hashlib.sha256(on_disk[f["path"]]).hexdigest() == f["sha256"]
    assert manifest["params"]["seed"] == 3 and "CC0" in manifest["license"]


def test_masks_are_binary_and_cover_a_sane_fraction(defects):
    assert sorted({s.label for s in defects}) == sorted(DEFECT_TYPES)
    fractions = []
    for s in defects:
        assert s.mask.shape == s.image.shape == (128, 128) and s.mask.dtype == np.uint8
        assert set(np.unique(s.mask)) == {0, 255}
        fractions.append((s.mask > 0).mean())
    assert 0.001 <= min(fractions) and max(fractions) <= 0.2
    assert max(fractions) / min(fractions) > 5  # small and medium defects, not one size


def test_defect_changes_exactly_the_masked_pixels(defects):
    signs = set()
    for s in defects:
        inside = s.mask > 0
        diff = s.image.astype(int) - s.normal.astype(int)
        assert not diff[~inside].any(), f"{s.label} {s.index}: pixels changed outside the mask"
        assert (np.abs(diff[inside]) >= 8).mean() > 0.5, f"{s.label} {s.index}: mask mostly unchanged"
        signs.add(np.sign(np.median(diff[inside])))
    assert {-1, 1} <= signs  # darker and brighter defects both occur


def test_normals_are_texture_crops_from_disjoint_rows():
    """Each normal image is a turned/mirrored, gain/offset-jittered view of the recorded texture crop."""
    texture = skimage.data.brick().astype(np.float32)
    for s in generate("brick", seed=2, size=64, n_train=8, n_test_good=8, n_test_defect=0):
        r, c, side = s.crop
        assert (r + side <= 320) if s.split == "train" else (r >= 320)
        assert 0.3 * 512 - 1 <= side <= 0.375 * 512 + 1
        crop = np.asarray(Image.fromarray(texture[r:r + side, c:c + side], mode="F").resize((64, 64), Image.BOX))
        views = [np.rot90(v, k) for v in (crop, crop[:, ::-1]) for k in range(4)]
        best = max(np.corrcoef(v.ravel(), s.image.ravel().astype(np.float32))[0, 1] for v in views)
        assert best > 0.97, f"{s.split} {s.index}: not a view of texture[{r}:{r + side}, {c}:{c + side}]"


def test_same_seed_same_bytes_other_seed_other_data(small, tmp_path):
    again = materialize("gravel", seed=3, root=tmp_path / "a", **SMALL)
    assert again != small and _files(again) == _files(small)
    other = materialize("gravel", seed=4, root=tmp_path / "b", **SMALL)
    a, b = _files(small), _files(other)
    assert all(a[k] != b[k] for k in a if k.endswith(".png"))


def test_complete_folder_is_reused_incomplete_or_overwrite_regenerates(tmp_path):
    params = dict(seed=0, root=tmp_path, size=32, n_train=2, n_test_good=1, n_test_defect=1)
    first = materialize("grass", **params)
    stamps = {p: p.stat().st_mtime_ns for p in first.rglob("*")}
    assert materialize("grass", **params) == first
    assert {p: p.stat().st_mtime_ns for p in first.rglob("*")} == stamps
    assert materialize("grass", **{**params, "n_train": 3}) != first  # other parameters, other folder
    (first / "test/good/000.png").unlink()
    assert materialize("grass", **params) == first and (first / "test/good/000.png").is_file()
    manifest = first / "MANIFEST.json"
    before = manifest.stat().st_mtime_ns
    materialize("grass", overwrite=True, **params)
    assert manifest.stat().st_mtime_ns != before


@pytest.mark.parametrize("kwargs, words", [
    (dict(name="marble"), "weave, stone, brick, grass, gravel"),
    (dict(size=8), "size"),
    (dict(seed=-1), "seed"),
    (dict(n_train=-2), "n_train"),
    (dict(n_train=0), "n_train must be at least 1"),  # was "no train/good folder" of the folder it had just written
])
def test_bad_options_raise_clear_errors(tmp_path, kwargs, words):
    with pytest.raises(DataError, match=words):
        materialize(**{"root": tmp_path, **kwargs})


def _descriptors(images):
    """Per image: mean, sd, mean |vertical gradient| and the log share of spectral power in six bands."""
    rows = []
    for image in images:
        x = image.astype(np.float64)
        power = np.abs(np.fft.fft2(x - x.mean())) ** 2
        fy, fx = np.meshgrid(np.fft.fftfreq(x.shape[0]), np.fft.fftfreq(x.shape[1]), indexing="ij")
        radius = np.hypot(fy, fx)
        edges = [0, 0.04, 0.08, 0.16, 0.25, 0.35, 0.75]
        bands = [power[(radius >= lo) & (radius < hi)].sum() / power.sum() for lo, hi in zip(edges, edges[1:])]
        rows.append(np.r_[x.mean(), x.std(), np.abs(np.diff(x, axis=0)).mean(), np.log(bands)])
    return np.asarray(rows)


def _tnr_of_max_normal_threshold(name, n_reference=50, n_calibration=100, n_fresh=1000):
    """Score = largest |z| of the descriptors (z from reference images); threshold = max over N calibration
    normals (training split); return the fraction of fresh test-split normals at or below it."""
    train = [s.image for s in generate(name, seed=0, size=64, n_train=n_reference + n_calibration, n_test_good=0,
                                       n_test_defect=0)]
    fresh = [s.image for s in generate(name, seed=0, size=64, n_train=0, n_test_good=n_fresh, n_test_defect=0)]
    reference = _descriptors(train[:n_reference])
    mean, sd = reference.mean(axis=0), reference.std(axis=0) + 1e-12

    def score(images):
        return np.abs((_descriptors(images) - mean) / sd).max(axis=1)

    return float((score(fresh) <= score(train[n_reference:]).max()).mean())


def test_the_default_textures_normals_share_one_distribution():
    """Exchangeable normals keep N/(N+1) of fresh normals under a max-of-N threshold, whatever the score."""
    n = 100
    expected = n / (n + 1)
    # The kept fraction is Beta(N, 1) given the calibration set (sd 1/(N+1) * sqrt(N/(N+2))) plus the
    # binomial noise of 1,000 fresh images; four standard deviations of both.
    sd = np.hypot(np.sqrt(n / (n + 2)) / (n + 1), np.sqrt(expected * (1 - expected) / 1000))
    assert abs(_tnr_of_max_normal_threshold("weave", n_calibration=n) - expected) <= 4 * sd


def test_the_photographs_test_normals_are_shifted_so_the_check_can_fail():
    """The negative control: brick's test crops come from other rows of the photograph (perspective)."""
    n = 100
    sd = np.hypot(np.sqrt(n / (n + 2)) / (n + 1), np.sqrt((n / (n + 1)) * (1 / (n + 1)) / 1000))
    assert _tnr_of_max_normal_threshold("brick", n_calibration=n) < n / (n + 1) - 4 * sd
