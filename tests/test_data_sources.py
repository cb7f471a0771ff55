"""adtf.data.load: each source on the shared data or a tiny fixture in its exact layout, and bad input."""
import dataclasses
import gzip
import io
import os
import re
import warnings

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import adtf.data.synthetic
from adtf.data import AnomalyDataset, Sample, SourceKind, load, parse_spec
from adtf.errors import DataError
from adtf.run import colour_change, colour_kind


# --------------------------------------------------------------------------- fixture writers


def write_image(path, size=(12, 10), mode="RGB", value=None, fmt=None, seed=0):
    """A small random (or constant ``value``) image; ``size`` is (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
    array = np.full(shape, value, np.uint8) if value is not None else \
        np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(array, mode).save(path, format=fmt)
    return path


def write_mvtec(root, n_train=3, n_good=2, defects=("crack",), n_defect=2, masks=True, size=(12, 10)):
    for i in range(n_train):
        write_image(root / "train" / "good" / f"{i:03d}.png", size, seed=i)
    for i in range(n_good):
        write_image(root / "test" / "good" / f"{i:03d}.png", size, seed=100 + i)
    for defect in defects:
        for i in range(n_defect):
            write_image(root / "test" / defect / f"{i:03d}.png", size, seed=200 + i)
            if masks:
                write_image(root / "ground_truth" / defect / f"{i:03d}_mask.png", size, "L", value=255)
    return root


def write_dagm_class(root, n_normal=(4, 4), n_defective=(2, 2), size=(16, 16)):
    """A DAGM 2007 class folder: {Train,Test}/NNNN.PNG, Label/Labels.txt, Label/NNNN_label.PNG."""
    number = 1
    for split, normal, defective in zip(("Train", "Test"), n_normal, n_defective):
        lines = ["1"]
        for i in range(normal + defective):
            name = f"{number:04d}.PNG"
            write_image(root / split / name, size, "L", seed=number)
            if i < defective:
                write_image(root / split / "Label" / f"{number:04d}_label.PNG", size, "L", value=255)
                lines.append(f"{number}\t1\t{name}\t0\t{number:04d}_label.PNG")
            else:
                lines.append(f"{number}\t0\t{name}\t0\t0")
            number += 1
        (root / split / "Label").mkdir(parents=True, exist_ok=True)
        (root / split / "Label" / "Labels.txt").write_text("\n".join(lines) + "\n")
    return root


def write_mtd(root, counts=(("Free", 5), ("Crack", 2), ("Fray", 1))):
    for cls, n in counts:
        for i in range(n):
            size = (20 + i, 14 + i)  # MTD tiles vary in size; a mask matches its own image
            write_image(root / f"MT_{cls}" / "Imgs" / f"exp{i}_num_{i}.jpg", size, "L", seed=i, fmt="JPEG")
            write_image(root / f"MT_{cls}" / "Imgs" / f"exp{i}_num_{i}.png", size, "L",
                        value=0 if cls == "Free" else 200)
    return root


def write_idx(path, array, gz=True):
    header = (0x800 + array.ndim).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


# --------------------------------------------------------------------------- specs


def test_parse_spec_reads_kind_path_and_typed_options():
    assert parse_spec("dagm:/d/Class3,n_train=500,n_test_normal=none") == \
        (SourceKind.DAGM, "/d/Class3", {"n_train": 500, "n_test_normal": None})
    assert parse_spec("mnist:/m:7") == (SourceKind.MNIST, "/m", {"normal_class": 7})
    assert parse_spec("mtd:/x,train_fraction=0.5") == (SourceKind.MTD, "/x", {"train_fraction": 0.5})
    assert parse_spec("synthetic") == (SourceKind.SYNTHETIC, None, {})
    with pytest.raises(DataError, match="not key=value"):
        parse_spec("mtd:/x,oops")
    with pytest.raises(DataError, match="holdout is given twice; give it once"):
        parse_spec("folder:/x,holdout=0.2,holdout=0.5")


def test_bare_path_is_recognised_by_layout(tmp_path):
    assert parse_spec(str(write_mvtec(tmp_path / "m")))[0] is SourceKind.MVTEC
    assert parse_spec(str(write_mtd(tmp_path / "t")))[0] is SourceKind.MTD
    assert parse_spec(str(write_dagm_class(tmp_path / "Class1")))[0] is SourceKind.DAGM
    write_image(tmp_path / "plain" / "a.png")
    assert parse_spec(str(tmp_path / "plain"))[0] is SourceKind.FOLDER


def test_unknown_option_names_the_accepted_ones(tmp_path):
    with pytest.raises(DataError, match=r"unknown option.*train_frac.*accepted.*train_fraction"):
        load(f"mtd:{write_mtd(tmp_path)}", train_frac=0.5)


def test_relative_name_is_found_under_datasets_root(tmp_path, monkeypatch):
    write_mvtec(tmp_path / "shared" / "my_part")
    monkeypatch.setenv("ADTF_DATASETS", str(tmp_path / "shared"))
    monkeypatch.chdir(tmp_path)
    assert load("mvtec:my_part").counts()["train"] == 3


# --------------------------------------------------------------------------- mvtec


def test_mvtec_bottle_shared_copy(datasets_dir):
    root = datasets_dir / "mvtec_bottle"
    ds = load(f"mvtec:{root}")
    # Official MVTec AD bottle counts; the shared copy has no ground_truth folder.
    assert ds.counts() == {"train": 209, "test_good": 20, "test_broken_large": 20, "test_broken_small": 22,
                           "test_contamination": 21}
    assert not ds.has_masks and all(s.mask_path is None for s in ds.test)
    on_disk = {d: len(os.listdir(root / "test" / d)) for d in os.listdir(root / "test")}
    assert {d: sum(s.defect == d for s in ds.test) for d in on_disk} == on_disk
    assert all(s.label == (s.defect != "good") for s in ds.test)
    assert all(s.label == 0 and "/train/good/" in s.path for s in ds.train)


def test_mvtec_masks_and_category_option(tmp_path):
    write_mvtec(tmp_path / "root" / "bottle", defects=("crack", "hole"))
    ds = load(f"mvtec:{tmp_path / 'root'},category=bottle")
    assert ds.name == "mvtec:bottle" and ds.has_masks
    assert load(f"mvtec:{tmp_path / 'root'},category=Bottle").name == "mvtec:bottle"  # the folder's own case
    assert ds.counts() == {"train": 3, "test_good": 2, "test_crack": 2, "test_hole": 2}
    for s in ds.test:
        assert (s.mask_path is None) == (s.label == 0)
        assert s.mask_path is None or s.mask_path.endswith(f"ground_truth/{s.defect}/{os.path.basename(s.path)[:-4]}_mask.png")


def test_mvtec_masks_named_as_other_sets_name_them_and_a_capitalised_good_folder(tmp_path):
    root = write_mvtec(tmp_path / "m", masks=False, defects=("crack", "dent"))
    (root / "test" / "good").rename(root / "test" / "Good")  # once: two normal test images counted as defects
    write_image(root / "ground_truth" / "crack" / "000.png", (12, 10), "L", value=255)        # VisA-style
    write_image(root / "ground_truth" / "crack" / "001_mask.PNG", (12, 10), "L", value=255)   # upper-case suffix
    write_image(root / "ground_truth" / "dent" / "000_mask.png", (12, 10), "L", value=255)
    write_image(root / "ground_truth" / "dent" / "000.png", (12, 10), "L", value=0)  # MVTec's name wins
    with pytest.warns(UserWarning, match=r"no mask for 1 of the anomalous images \(e.g. .*dent.001.png"):
        ds = load(f"mvtec:{root}")  # a missing mask: the image counts for the image metrics, not the pixel ones
    assert [s.path for s in ds.test if s.label and s.mask_path is None] == [str(root / "test" / "dent" / "001.png")]
    write_image(root / "ground_truth" / "dent" / "001_mask.png", (12, 10), "L", value=255)
    ds = load(f"mvtec:{root}")
    assert ds.counts() == {"train": 3, "test_good": 2, "test_crack": 2, "test_dent": 2}
    assert {os.path.relpath(s.mask_path, root) for s in ds.test if s.label} == {
        "ground_truth/crack/000.png", "ground_truth/crack/001_mask.PNG", "ground_truth/dent/000_mask.png",
        "ground_truth/dent/001_mask.png"}


def test_a_folder_whose_name_holds_a_comma(tmp_path):
    folder = tmp_path / "glass, lot 2" / "ok"
    write_image(folder / "0.png")
    write_image(folder / "1.png", seed=1)
    assert load(f"folder:{folder},holdout=0.5").counts() == {"train": 1, "test_good": 1}
    assert parse_spec(f"folder:{folder},holdout=0.5") == (SourceKind.FOLDER, str(folder), {"holdout": 0.5})
    with pytest.raises(DataError, match="not key=value"):
        parse_spec(f"folder:{tmp_path / 'glass'}, lot 3/ok")  # no such folder: still a malformed option
    lot = tmp_path / "lot,id=3"  # reads as an option, but the folder exists: a path (adtf-score FOLDER)
    write_image(lot / "0.png")
    assert parse_spec(f"folder:{lot}") == (SourceKind.FOLDER, str(lot), {})
    assert parse_spec(str(lot))[1:] == (str(lot), {})  # a bare path too, as adtf-fit and adtf-eval take one


def test_12_bit_data_in_16_bit_images_is_named(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "ok").mkdir()
    for i in range(2):  # a Mono12 camera's frames saved as 16-bit PNGs
        Image.fromarray(rng.integers(0, 4096, (10, 12), dtype=np.uint16)).save(tmp_path / "ok" / f"{i}.png")
    with pytest.warns(UserWarning, match=r"2 16-bit image\(s\) with every value below 4096"):
        dataset = load(f"folder:{tmp_path / 'ok'}")
    assert len(dataset.notes) == 1 and "below 4096" in dataset.notes[0]  # for the run's report to repeat
    (tmp_path / "colour").mkdir()  # 16-bit colour: PIL reads it as 8 bits, and the gray check alone missed it
    for i in range(3):
        pixels = rng.integers(0, 4096, (10, 12, 3), dtype=np.uint16)
        (tmp_path / "colour" / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    with pytest.warns(UserWarning, match=r"3 16-bit image\(s\) with every value below 4096"):
        load(f"folder:{tmp_path / 'colour'}")
    (tmp_path / "full").mkdir()
    Image.fromarray(rng.integers(0, 65536, (10, 12), dtype=np.uint16)).save(tmp_path / "full" / "full.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load(f"folder:{tmp_path / 'full'}").notes == []  # full-range 16-bit data: no warning


def test_gray_and_colour_images_in_one_set_are_named(tmp_path):
    """A gray image is fed as three equal channels: among colour parts it reads as a change of colour."""
    rng = np.random.default_rng(0)
    (tmp_path / "ok").mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(tmp_path / "ok" / f"c{i}.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load(f"folder:{tmp_path / 'ok'}").notes == []
    gray = rng.integers(0, 256, (10, 12), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "ok" / "gray.png")
    Image.fromarray(np.stack([gray] * 3, -1)).save(tmp_path / "ok" / "gray_as_rgb.png")  # RGB, but no colour in it
    with warnings.catch_warnings():  # what files are is said where the fit is known: the fit, adtf-eval, adtf-score
        warnings.simplefilter("error")
        dataset = load(f"folder:{tmp_path / 'ok'}")
    assert dataset.notes == [] and colour_kind(dataset, dataset.train) == "mixed"
    assert colour_change("mixed", dataset, dataset.train) is None  # a model fitted on both kinds saw both
    unknown = colour_change(None, dataset, dataset.train)  # a run from before fit_colour, a model file alone
    assert unknown.startswith("2 of these 5 images are grayscale and the others colour (e.g. ")
    assert "which kind the model was fitted on is not recorded" in unknown
    for i in range(3):
        (tmp_path / "ok" / f"c{i}.png").unlink()
    (tmp_path / "ng").mkdir()
    Image.fromarray(gray).save(tmp_path / "ng" / "0.png")
    Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(tmp_path / "ng" / "1.png")
    noisy = np.clip(np.stack([gray, gray.astype(int) + 1, gray.astype(int) - 2], -1), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(tmp_path / "ng" / "2.png")  # a gray part as lossy WebP decodes it: still gray
    palette = Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).convert("P")
    palette.save(tmp_path / "ng" / "3.png", transparency=bytes(range(256)))  # Pillow warns on converting it to RGB
    hidden = np.zeros((256, 256, 4), np.uint8)
    hidden[..., :3] = gray.mean().astype(np.uint8)
    hidden[:128, :, 3] = 255
    hidden[128:, :, 0] = 255  # red under transparent pixels: TensorFlow drops the alpha and feeds it
    Image.fromarray(hidden).save(tmp_path / "ng" / "4.png")
    keyed = Image.fromarray(np.minimum(gray, 254), "P")  # a gray GIF whose transparent entry is green: TensorFlow
    keyed.putpalette([v for level in range(255) for v in (level, level, level)] + [0, 255, 0])  # decodes it black
    keyed.paste(255, (0, 0, 4, 4))
    keyed.save(tmp_path / "ng" / "5.gif", transparency=255)
    with warnings.catch_warnings():  # a gray mode and gray pixels in RGB are one kind; the test images are said
        warnings.simplefilter("error")  # where the fit is known, not here
        dataset = load(f"folder:{tmp_path / 'ok'},anomalous={tmp_path / 'ng'}")
    assert [dataset.gray[s.path] for s in sorted(dataset.test, key=lambda s: s.path)] == [True, False, True, False,
                                                                                          False, True]
    note = colour_change(colour_kind(dataset, dataset.train), dataset, dataset.test)
    assert note.startswith("3 of these 6 images are colour (e.g. ")
    assert "while every image the model was fitted on is grayscale" in note
    one = dataclasses.replace(dataset, test=[s for s in dataset.test if s.path.endswith("4.png")])
    assert colour_change("grayscale", one, one.test).startswith(f"this image is colour ({one.test[0].path})")
    assert colour_change("mixed", dataset, dataset.test) is None
    assert colour_change(None, dataset, dataset.test).startswith("3 of these 6 images are grayscale and the others")


def test_what_loading_warned_about_is_in_the_report(tmp_path):
    """A warning scrolls away with the console; the report is what a user reads later (12-bit data read 1/16 as
    bright moves every score)."""
    from adtf.run import fit_evaluate_export

    rng = np.random.default_rng(0)
    (tmp_path / "ok").mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 4096, (32, 32), dtype=np.uint16)).save(tmp_path / "ok" / f"{i}.png")
    options = dict(detector={"image_size": [32, 32], "layer": "block2b_add"}, export=False, verbose=False)
    for spec, out in ((f"folder:{tmp_path / 'ok'}", "fit_only"), (f"folder:{tmp_path / 'ok'},holdout=0.5", "test")):
        with pytest.warns(UserWarning, match="below 4096"):
            results = fit_evaluate_export("mon", spec, out=tmp_path / out, **options)
        assert len(results["data_notes"]) == 1 and "below 4096" in results["data_notes"][0]
        assert f"**Data**: {results['data_notes'][0]}" in (tmp_path / out / "report.md").read_text()


def test_test_images_of_another_colour_than_the_fitted_ones_are_said_by_the_fit_and_its_report(tmp_path, caplog):
    """Said where the fit is known: the loader once compared a set's own training and test images, which adtf-eval
    (fitting nothing) printed beside the true statement about the model's fit, contradicting it."""
    from adtf.run import fit_evaluate_export

    rng = np.random.default_rng(0)
    for folder in ("ok", "ng"):
        (tmp_path / folder).mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(tmp_path / "ok" / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(tmp_path / "ng" / "gray.png")
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "ng" / "colour.png")
    results = fit_evaluate_export("mon", f"folder:{tmp_path / 'ok'},anomalous={tmp_path / 'ng'}", out=tmp_path / "run",
                                  detector={"image_size": [32, 32], "layer": "block2b_add"}, export=False,
                                  verbose=False)
    assert results["fit_colour"] == "grayscale"
    note = f"the test images: 1 of these 2 images is colour (e.g. {tmp_path / 'ng' / 'colour.png'})"
    assert any(n.startswith(note) for n in results["data_notes"]) and note in caplog.text
    assert f"**Data**: {note}" in (tmp_path / "run" / "report.md").read_text()
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "ok" / "colour.png")
    results = fit_evaluate_export("mon", f"folder:{tmp_path / 'ok'}", out=tmp_path / "mixed", calibration_fraction=0,
                                  detector={"image_size": [32, 32], "layer": "block2b_add"}, export=False,
                                  verbose=False)  # fitted on both kinds: said of the fit, not of each test image
    assert results["fit_colour"] == "mixed"
    assert [n[:71] for n in results["data_notes"]] == [
        "6 of the 7 images the model is fitted on are grayscale and the others c"]


def test_missing_train_good_names_the_folder_and_categories(tmp_path):
    write_mvtec(tmp_path / "root" / "bottle")
    with pytest.raises(DataError, match=r"root: no train/good.*\['bottle'\]"):
        load(f"mvtec:{tmp_path / 'root'}")


@pytest.mark.parametrize("kind", ["mvtec", "folder", "mtd", "cifar", "synthetic-free"])
def test_a_path_under_an_unknown_users_home_is_not_found_not_a_traceback(kind):
    """pathlib raises RuntimeError expanding ``~nosuchuser``; a shell leaves it as written, and so do we."""
    spec = "~adtf_no_such_user/parts" if kind == "synthetic-free" else f"{kind}:~adtf_no_such_user/parts"
    with pytest.raises(DataError, match="adtf_no_such_user"):
        load(spec)


def test_missing_masks_are_reported_and_the_images_kept_for_the_image_metrics(tmp_path):
    """A glass set converted to this layout may have masks for some defect types only: it must not stop the run,
    nor lose those images (--skip-bad once dropped the whole type)."""
    root = write_mvtec(tmp_path / "m")
    (root / "ground_truth" / "crack" / "001_mask.png").unlink()
    with pytest.warns(UserWarning, match=r"ground_truth: no mask for 1 of the anomalous images .*crack.001.png"):
        ds = load(f"mvtec:{root}")
    assert ds.has_masks and ds.counts()["test_crack"] == 2
    (root / "ground_truth" / "crack").rename(root / "ground_truth" / "Crack")  # any case, as test/Good
    with pytest.warns(UserWarning, match="no mask for 1 of"):  # crack/001 still has none
        again = load(f"mvtec:{root}")
    assert all(s.mask_path for s in again.test if s.label and not s.path.endswith("001.png"))


def test_mvtec_says_what_it_does_not_read_or_reads_as_a_defect(tmp_path):
    root = write_mvtec(tmp_path / "m", masks=False)
    (root / "train" / "good").rename(root / "train" / "Good")
    write_image(root / "train" / "Good" / "cam2" / "9.png")
    write_image(root / "test" / "loose.png")
    write_image(root / "test" / "OK" / "0.png")
    with pytest.warns(UserWarning) as caught:
        ds = load(str(root))  # recognised as MVTec with train/Good too
    messages = "\n".join(str(w.message) for w in caught)
    assert "2 image(s) outside the MVTec layout's folders are not read" in messages
    assert re.search(r"OK: its images are read as anomalous .* rename it if they are normal", messages)
    assert ds.counts()["train"] == 3 and ds.counts()["test_OK"] == 1


def test_mvtec_ad_2_layout_reads_test_public_with_its_masks_and_pools_validation_good(tmp_path):
    """MVTec AD 2 has no test/: the public test set is test_public/{good,bad} with test_public/ground_truth/bad/.
    Read as MVTec AD's layout, it once loaded no test set and said nothing."""
    root = tmp_path / "vial"
    for i in range(3):
        write_image(root / "train" / "good" / f"{i:03d}_regular.png", seed=i)
    write_image(root / "validation" / "good" / "000_regular.png", seed=10)
    write_image(root / "test_public" / "good" / "000_regular.png", seed=20)
    for i in range(2):
        write_image(root / "test_public" / "bad" / f"{i:03d}_regular.png", seed=30 + i)
        write_image(root / "test_public" / "ground_truth" / "bad" / f"{i:03d}_regular_mask.png", mode="L", value=255)
    write_image(root / "test_private" / "000_regular.png", seed=40)  # no labels: not read
    with pytest.warns(UserWarning, match=r"1 normal image\(s\) of validation/good join train/good's"):
        ds = load(str(root))
    assert ds.name == "mvtec:vial" and ds.has_masks
    assert ds.counts() == {"train": 4, "test_good": 1, "test_bad": 2}
    for s in ds.test:
        assert (s.mask_path is None) == (s.label == 0)
        assert s.mask_path is None or s.mask_path == str(
            root / "test_public" / "ground_truth" / "bad" / f"{os.path.basename(s.path)[:-4]}_mask.png")


def test_folder_masks_inside_the_anomalous_folder_are_read_as_masks_not_named_unread(tmp_path):
    """MVTec AD 2 given as folder: (masks=test_public/ground_truth inside anomalous=test_public): the masks were read,
    and also named as 'images in subfolders not read'."""
    write_image(tmp_path / "good" / "0.png")
    public = tmp_path / "test_public"
    write_image(public / "bad" / "0.png")
    write_image(public / "ground_truth" / "bad" / "0_mask.png", mode="L", value=255)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load(f"folder:{tmp_path / 'good'},anomalous={public},masks={public / 'ground_truth'}")
    assert ds.counts() == {"train": 1, "test_bad": 1} and ds.test[0].mask_path.endswith("0_mask.png")



def test_folder_masks_beside_their_images_are_not_read_as_defective_images(tmp_path):
    """masks= naming the anomalous folder itself (a hand-made set with 0.png and 0_mask.png side by side): each mask
    was read as one more defective image, whose mask was itself."""
    write_image(tmp_path / "ok" / "0.png")
    for stem in ("0", "1"):
        write_image(tmp_path / "ng" / "scratch" / f"{stem}.png", seed=int(stem))
        write_image(tmp_path / "ng" / "scratch" / f"{stem}_mask.png", mode="L", value=255)
    write_image(tmp_path / "ng" / "dent" / "0.jpg", fmt="JPEG")
    write_image(tmp_path / "ng" / "dent" / "0.png")  # beside 0.jpg: a second photo, not its mask (only *_mask is)
    with pytest.warns(UserWarning) as said:
        ds = load(f"folder:{tmp_path / 'ok'},anomalous={tmp_path / 'ng'},masks={tmp_path / 'ng'}")
    said = [str(w.message) for w in said]
    assert any(re.search(r"no mask for 2 of the anomalous images \(e.g. .*dent.0.jpg", m) for m in said)
    assert not any("look like the masks" in m for m in said)  # masks= given: 0.png is a photo there, by the rule
    assert ds.counts() == {"train": 1, "test_dent": 2, "test_scratch": 2}
    assert {os.path.relpath(s.path, tmp_path): s.mask_path and os.path.relpath(s.mask_path, tmp_path)
            for s in ds.test} == {"ng/dent/0.jpg": None, "ng/dent/0.png": None,
                                  "ng/scratch/0.png": "ng/scratch/0_mask.png", "ng/scratch/1.png": "ng/scratch/1_mask.png"}


def test_masks_kept_beside_images_in_a_folder_read_as_images_are_said(tmp_path):
    """MTD keeps each tile's mask beside it (x.jpg, x.png): adtf-score on such a folder flagged 952 black masks as
    parts, and folder: fitted them as normal images, without a word."""
    for stem in ("0", "1", "2"):
        write_image(tmp_path / "good" / f"{stem}.jpg", fmt="JPEG", seed=int(stem))
    write_image(tmp_path / "good" / "0.png", mode="L", value=0)
    write_image(tmp_path / "good" / "1_mask.png", mode="L", value=0)
    write_image(tmp_path / "good" / "3.png", seed=3)  # a PNG of its own: an image
    with pytest.warns(UserWarning, match=r"2 image\(s\) look like the masks of images beside them \(e\.g\. .*good.0\.png "
                                         r"beside 0\.jpg\): each is read as an image"):
        ds = load(f"folder:{tmp_path / 'good'}")
    assert len(ds.train) == 6  # said, not left out
    (tmp_path / "good" / "0.png").unlink()
    (tmp_path / "good" / "1_mask.png").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load(f"folder:{tmp_path / 'good'}").train) == 4


def test_mvtec_train_and_test_folders_capitalised_are_mvtec_not_dagm(tmp_path):
    """Train/ and Test/ (a hand-made glass set) were taken for DAGM 2007, whose reader then found no Labels.txt."""
    root = write_mvtec(tmp_path / "glass")
    (root / "train").rename(root / "Train")
    (root / "test").rename(root / "Test")
    (root / "ground_truth").rename(root / "Ground_Truth")
    assert parse_spec(str(root))[0] is SourceKind.MVTEC
    ds = load(f"mvtec:{root}")
    assert ds.counts() == {"train": 3, "test_good": 2, "test_crack": 2} and ds.has_masks
    with pytest.raises(DataError, match=f"it holds an MVTec AD category: give it as mvtec:{re.escape(str(root))}$"):
        load(f"dagm:{root}")


# --------------------------------------------------------------------------- dagm


def test_dagm_images_the_labels_file_does_not_list_are_counted(tmp_path):
    root = write_dagm_class(tmp_path / "Class1")
    write_image(root / "Train" / "9999.PNG", (16, 16), "L")
    with pytest.warns(UserWarning, match=r"Labels.txt does not list 1 image\(s\) of .*Train \(e.g. 9999.PNG\)"):
        load(f"dagm:{root}", n_train=5)


def test_dagm_folder_holding_the_classes_is_named(tmp_path):
    write_dagm_class(tmp_path / "DAGM" / "Class3")
    with pytest.raises(DataError, match=r"DAGM: no Train folder .* it holds the classes \['Class3'\]: use dagm:"):
        load(f"dagm:{tmp_path / 'DAGM'}")
    assert load(f"dagm:{tmp_path / 'DAGM'},category=Class3,n_train=3").counts()["train"] == 3


def test_a_dagm_split_or_root_given_the_wrong_way_says_which_spec_to_give(tmp_path):
    """folder: on ClassN/Train fitted its defective images as normal ones without a word."""
    root = write_dagm_class(tmp_path / "DAGM" / "Class1")
    for spec in (f"folder:{root / 'Train'}", f"dagm:{root / 'Train'}", str(root / "Train")):
        with pytest.raises(DataError, match=f"use dagm:{re.escape(str(root))}$"):
            load(spec)
    with pytest.raises(DataError, match=r"it holds the classes \['Class1'\]"):  # the root, with no kind given
        load(str(tmp_path / "DAGM"))
    with pytest.raises(DataError, match=f"it holds DAGM 2007 data: give it as dagm:{re.escape(str(root))}$"):
        load(f"mvtec:{root}")
    labels = root / "Train" / "Label" / "Labels.txt"  # a defective row with a normal row's placeholder for its mask
    labels.write_text(labels.read_text().replace("\t0001_label.PNG", "\t0"))
    with pytest.raises(DataError, match=r"Labels.txt, line 2: 0001.PNG is marked defective \(flag 1\) but names no mask"):
        load(f"dagm:{root}")


def test_a_layout_given_as_another_kind_says_which_spec_to_give(tmp_path, monkeypatch):
    mvtec = write_mvtec(tmp_path / "bottle")
    with pytest.raises(DataError, match=f"it holds an MVTec AD category: give it as mvtec:{re.escape(str(mvtec))}$"):
        load(f"dagm:{mvtec}")
    with pytest.raises(DataError, match=f"{re.escape(str(mvtec))}: no images directly in it; it holds an MVTec AD "
                                        f"category: give it as mvtec:{re.escape(str(mvtec))}$"):
        load(f"folder:{mvtec}")
    with pytest.raises(DataError, match=f"it holds MVTec AD categories: give it as mvtec:{re.escape(str(tmp_path))}$"):
        load(f"folder:{tmp_path}")  # the root above the categories: once "no images (no file there ends in ...)"
    with pytest.raises(DataError, match=f"it holds an MVTec AD category: give it as mvtec:{re.escape(str(mvtec))}$"):
        load(f"mtd:{mvtec}")
    with pytest.raises(DataError, match=f"it holds a folder of images: give it as folder:"
                                        f"{re.escape(str(mvtec / 'train' / 'good'))}$"):
        load(f"mvtec:{mvtec / 'train' / 'good'}")
    assert load(f"MVTec:{mvtec}").name == "mvtec:bottle"  # the kind in any case
    (tmp_path / "Folder:imgs").mkdir()  # ... unless the whole spec is a folder that exists
    write_image(tmp_path / "Folder:imgs" / "0.png")
    monkeypatch.chdir(tmp_path)
    assert load("Folder:imgs").counts() == {"train": 1}
    # classes: reads an MVTec category's folders as classes and its masks not at all: said, with the spec to give
    with pytest.warns(UserWarning, match=f"not its ground_truth/ masks; give it as mvtec:{re.escape(str(mvtec))} "):
        assert not load(f"classes:{mvtec}").has_masks


def test_dagm_paper000_split(tmp_path):
    root = write_dagm_class(tmp_path / "Class1")
    ds = load(f"dagm:{root}", n_train=5, n_test_normal=2)
    assert ds.counts() == {"train": 5, "test_good": 2, "test_defective": 4} and ds.has_masks
    assert not {s.path for s in ds.train} & {s.path for s in ds.test}
    assert all(s.mask_path.endswith("_label.PNG") and os.path.exists(s.mask_path) for s in ds.test if s.label)
    everything = load(f"dagm:{root}", n_train=5, n_test_normal=None)
    assert everything.counts() == {"train": 5, "test_good": 3, "test_defective": 4}
    # the report says which protocol ran, and that the class had fewer normal test images than asked (silent before)
    assert ds.notes == ["paper 000's DAGM protocol: 5 of the 8 normal images of Train and Test together are the "
                        "training images, 2 other normal ones and the 4 defective images of both splits test"]
    assert load(f"dagm:{root}", n_train=5).notes[0].endswith("(3, not 500 normal test images: the class has no more)")
    # the seed picks which normal images train; the same seed picks the same ones
    picks = {tuple(s.path for s in load(f"dagm:{root}", seed=seed, n_train=5).train) for seed in range(6)}
    assert len(picks) > 1
    assert load(f"dagm:{root}", seed=3, n_train=5).train == load(f"dagm:{root}", seed=3, n_train=5).train


def test_dagm_official_split_and_root_with_category(tmp_path):
    write_dagm_class(tmp_path / "DAGM" / "Class2")
    ds = load(f"dagm:{tmp_path / 'DAGM'},category=Class2,n_train=none")
    assert ds.counts() == {"train": 4, "test_good": 4, "test_defective": 2}
    assert all("/Train/" in s.path for s in ds.train) and all("/Test/" in s.path for s in ds.test)


def test_dagm_copy_whose_file_names_changed_case_is_read(tmp_path):
    """Unpacked or synced through a tool that lower-cased names (0001.png, labels.txt), the files were "not found"
    while the labels file named them in DAGM's upper case."""
    root = write_dagm_class(tmp_path / "Class1")
    for path in sorted(root.rglob("*"), key=lambda p: -len(p.parts)):  # deepest first: rename files, then folders
        if path.name != path.name.lower() and path.name not in ("Train", "Test"):
            path.rename(path.with_name(path.name.lower()))
    ds = load(f"dagm:{root},n_train=none")
    assert ds.counts() == {"train": 4, "test_good": 4, "test_defective": 2}
    assert all(os.path.exists(s.path) and (s.mask_path is None or os.path.exists(s.mask_path)) for s in ds.test)


def test_dagm_split_folders_in_lower_case_and_a_missing_label_image(tmp_path):
    """train/ and test/ in lower case failed with "no Train folder", and folder: on such a split fitted its defective
    images as normal ones; one missing NNNN_label.PNG stopped the whole load, where mvtec: and folder: count a defect
    without its mask for the image metrics."""
    root = write_dagm_class(tmp_path / "Class1")
    for split in ("Train", "Test"):
        (root / split / "Label" / "Labels.txt").rename(root / split / "Label" / "labels.txt")
        (root / split).rename(root / split.lower())
    assert load(f"dagm:{root},n_train=none").counts() == {"train": 4, "test_good": 4, "test_defective": 2}
    for spec in (f"folder:{root / 'train'}", str(root / "train")):
        with pytest.raises(DataError, match=f"use dagm:{re.escape(str(root))}$"):
            load(spec)
    assert parse_spec(str(root))[0] is SourceKind.DAGM
    write_image(tmp_path / "parts" / "train" / "ok" / "0.png")  # train/ and test/ without a labels file: not DAGM
    write_image(tmp_path / "parts" / "test" / "ng" / "0.png")
    assert parse_spec(str(tmp_path / "parts"))[0] is SourceKind.FOLDER
    (root / "test" / "Label" / "0007_label.PNG").unlink()
    with pytest.warns(UserWarning, match=r"label image named in labels.txt is missing for 1 defective image\(s\) "
                                         r"\(e.g. .*0007.PNG\); they count for the image metrics"):
        ds = load(f"dagm:{root},n_train=none")
    assert [s.mask_path is None for s in ds.test if s.label] == [True, False]


def test_dagm_errors(tmp_path):
    root = write_dagm_class(tmp_path / "Class1")
    assert load(f"dagm:{root}", n_train=5, n_test_normal=500).counts()["test_good"] == 3  # "at most"
    with pytest.raises(DataError, match="n_train=8 must leave test images out of the class's 8 normal"):
        load(f"dagm:{root}", n_train=8)
    labels = root / "Test" / "Label" / "Labels.txt"
    labels.write_text("1\n1\t2\t0005.PNG\t0\t0\n")
    with pytest.raises(DataError, match=f"{labels}, line 2"):
        load(f"dagm:{root}")


# --------------------------------------------------------------------------- mtd


def test_mtd_shared_copy(datasets_dir):
    root = datasets_dir / "mtd"
    ds = load(f"mtd:{root}")
    on_disk = {d.name[3:].lower(): len(list((d / "Imgs").glob("*.jpg"))) for d in root.glob("MT_*")}
    assert on_disk["free"] == 952 and sum(on_disk.values()) == 1344
    counts = ds.counts()
    assert counts["train"] == round(0.8 * 952) and counts["train"] + counts["test_good"] == 952
    assert all(counts[f"test_{d}"] == n for d, n in on_disk.items() if d != "free")
    assert ds.has_masks
    assert all(s.mask_path == s.path[:-4] + ".png" for s in ds.test if s.label)


def test_mtd_split_is_seeded(tmp_path):
    root = write_mtd(tmp_path)
    a, b = load(f"mtd:{root}", seed=1), load(f"mtd:{root}", seed=1)
    assert a.train == b.train == load(f"mtd:{root},seed=1").train and a.counts() == {"train": 4, "test_good": 1, "test_crack": 2, "test_fray": 1}
    free = {str(p) for p in (root / "MT_Free" / "Imgs").glob("*.jpg")}
    assert {s.path for s in a.train} | {s.path for s in a.test if not s.label} == free
    assert len({tuple(s.path for s in load(f"mtd:{root}", seed=s).train) for s in range(8)}) > 1
    assert load(f"mtd:{root}", train_fraction=0.4).counts()["train"] == 2


# --------------------------------------------------------------------------- folder


def test_folder_of_normal_images_only(tmp_path):
    for i in range(4):
        write_image(tmp_path / "ok" / f"{i}.jpg", fmt="JPEG", seed=i)
    ds = load(f"folder:{tmp_path / 'ok'}")
    assert ds.counts() == {"train": 4} and ds.test == [] and not ds.has_masks
    held = load(f"folder:{tmp_path / 'ok'},holdout=0.5")
    assert held.counts() == {"train": 2, "test_good": 2}


def test_folders_of_the_same_name_get_different_default_run_folders(tmp_path):
    """Normal folders are often all called "train": named by their own name alone, two sets shared
    `runs/<method>-folder-train` and the second run overwrote the first one's."""
    from adtf.run import slug

    for part in ("glass", "tiles"):
        write_image(tmp_path / part / "train" / "0.png")
    names = [load(f"folder:{tmp_path / part / 'train'}").name for part in ("glass", "tiles")]
    assert names == ["folder:glass-train", "folder:tiles-train"] and slug(names[0]) != slug(names[1])


def test_folder_with_anomalous_masks_and_test_normal(tmp_path):
    for i in range(3):
        write_image(tmp_path / "ok" / f"{i}.png", seed=i)
    write_image(tmp_path / "ok_test" / "t.png")
    write_image(tmp_path / "ng" / "loose.png")                      # -> defect "anomalous"
    write_image(tmp_path / "ng" / "scratch" / "s1.png")
    write_image(tmp_path / "masks" / "loose_mask.png", mode="L", value=255)
    write_image(tmp_path / "masks" / "scratch" / "s1.PNG", mode="L", value=255)
    ds = load(f"folder:{tmp_path / 'ok'},anomalous={tmp_path / 'ng'},masks={tmp_path / 'masks'},"
              f"test_normal={tmp_path / 'ok_test'}")
    assert ds.counts() == {"train": 3, "test_good": 1, "test_anomalous": 1, "test_scratch": 1} and ds.has_masks
    masks = {s.defect: s.mask_path for s in ds.test if s.label}
    assert masks == {"anomalous": str(tmp_path / "masks" / "loose_mask.png"),
                     "scratch": str(tmp_path / "masks" / "scratch" / "s1.PNG")}


def test_folder_says_which_images_in_subfolders_it_does_not_read(tmp_path):
    """`ok/old/` beside `ok/`'s own images was left out without a word; the folders the spec names itself, nested
    or not, are read and not warned about."""
    for i in range(2):
        write_image(tmp_path / "ok" / f"{i}.png", seed=i)
    write_image(tmp_path / "ok" / "old" / "2.png")                  # not read: said
    write_image(tmp_path / "ok" / "ng" / "scratch" / "s.png")        # the anomalous folder, inside the normal one
    write_image(tmp_path / "ok" / "ng" / "scratch" / "deeper" / "d.png")  # below a defect folder: not read, said
    with pytest.warns(UserWarning, match=r"2 image\(s\) in subfolders are not read") as caught:
        ds = load(f"folder:{tmp_path / 'ok'},anomalous={tmp_path / 'ok' / 'ng'}")
    assert ds.counts() == {"train": 2, "test_scratch": 1}
    said = " ".join(str(w.message) for w in caught)
    assert "old" in said or "deeper" in said
    write_image(tmp_path / "flat" / "0.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a flat folder: nothing to say
        load(f"folder:{tmp_path / 'flat'}")


def test_folder_anomalous_dir_in_mvtec_layout_keeps_its_good_images_normal(tmp_path):
    write_image(tmp_path / "train" / "0.png")
    write_image(tmp_path / "test" / "good" / "g.png")
    write_image(tmp_path / "test" / "crack" / "c.png")
    ds = load(f"folder:{tmp_path / 'train'},anomalous={tmp_path / 'test'}")
    assert ds.counts() == {"train": 1, "test_good": 1, "test_crack": 1}  # test/good was once a defect type


def test_a_test_image_the_spec_names_twice_is_counted_once(tmp_path):
    write_image(tmp_path / "train" / "0.png")
    write_image(tmp_path / "test" / "good" / "g.png")
    write_image(tmp_path / "test" / "crack" / "c.png")
    with pytest.warns(UserWarning, match=r"1 test image\(s\) are named twice by the spec"):
        ds = load(f"folder:{tmp_path / 'train'},anomalous={tmp_path / 'test'},test_normal={tmp_path / 'test' / 'good'}")
    assert ds.counts() == {"train": 1, "test_good": 1, "test_crack": 1}  # test_good was 2


def test_mvtec_ground_truth_folders_that_match_no_defect_are_named(tmp_path):
    root = write_mvtec(tmp_path / "bottle", defects=("scratch_head",))
    (root / "ground_truth" / "scratch_head").rename(root / "ground_truth" / "scratch-head")
    with pytest.warns(UserWarning, match=r"\['scratch-head'\] match no test/<defect>/ folder"):
        ds = load(f"mvtec:{root}")
    assert not ds.has_masks


def test_folder_anomalous_image_without_a_mask_is_kept_for_the_image_metrics(tmp_path):
    write_image(tmp_path / "ok" / "0.png")
    write_image(tmp_path / "ng" / "masked.png")
    write_image(tmp_path / "ng" / "unmasked.png")
    write_image(tmp_path / "masks" / "masked.png", mode="L", value=255)
    with pytest.warns(UserWarning, match=r"no mask for 1 of the anomalous images \(e.g. .*unmasked.png"):
        ds = load(f"folder:{tmp_path / 'ok'},anomalous={tmp_path / 'ng'},masks={tmp_path / 'masks'}")
    assert ds.has_masks and {s.path.split("/")[-1]: s.mask_path for s in ds.test} == {
        "masked.png": str(tmp_path / "masks" / "masked.png"), "unmasked.png": None}


def test_empty_folder_names_the_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=f"{tmp_path / 'empty'}: no images"):
        load(f"folder:{tmp_path / 'empty'}")
    with pytest.raises(DataError, match="folder not found"):
        load(f"folder:{tmp_path / 'nowhere'}")
    write_image(tmp_path / "one" / "part.png", (8, 8))
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'one' / 'part.png'} is a file; normal images: give "
                                                  "the folder")):  # was "folder not found" for a file that is there
        load(f"folder:{tmp_path / 'one' / 'part.png'}")
    with pytest.raises(DataError, match="masks=.* needs anomalous=DIR"):  # the masks were ignored without a word
        load(f"folder:{tmp_path / 'one'},masks={tmp_path / 'one'}")


def test_an_image_too_large_to_read_says_so_and_not_that_it_is_corrupt(tmp_path, monkeypatch):
    write_image(tmp_path / "ok" / "a.png", (64, 64))
    write_image(tmp_path / "ok" / "b.png", (64, 64))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL refuses twice this many pixels: a line-scan frame
    with pytest.raises(DataError, match="a.png: the image is larger than PIL reads.*cut it into tiles"):
        load(f"folder:{tmp_path / 'ok'}")


# --------------------------------------------------------------------------- mnist


def test_mnist_shared_copy_one_class(datasets_dir):
    root = datasets_dir / "mnist"
    with gzip.open(root / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    ds = load(f"mnist:{root}:3")
    assert ds.name == "mnist:3" and ds.arrays.shape == (10000, 28, 28) and ds.arrays.dtype == np.uint8
    n3 = int((labels == 3).sum())
    assert len(ds.train) == round(0.8 * n3) and len(ds.train) + ds.counts()["test_good"] == n3
    assert len(ds.train) + len(ds.test) == 10000
    assert all(labels[s.index] == 3 and s.label == 0 for s in ds.train)
    assert all(s.label == int(labels[s.index] != 3) for s in ds.test)
    assert all(s.defect == ("good" if not s.label else str(labels[s.index])) for s in ds.test)
    assert not {s.index for s in ds.train} & {s.index for s in ds.test}


def test_mnist_both_splits_and_bad_files(tmp_path):
    rng = np.random.default_rng(0)
    for split, n, gz in (("train", 30, True), ("t10k", 20, False)):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte{'.gz' if gz else ''}", rng.integers(0, 256, (n, 28, 28)), gz)
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte{'.gz' if gz else ''}", np.arange(n) % 10, gz)
    ds = load(f"mnist:{tmp_path}", normal_class=2)
    assert ds.counts()["train"] == 3 and len(ds.test) == 20          # train: the 2s of train; test: all of t10k
    assert all(s.path.startswith("mnist/train/") for s in ds.train)
    assert ds.arrays.shape == (50, 28, 28)
    data = (tmp_path / "t10k-images-idx3-ubyte").read_bytes()
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(data[:-100])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: header promises .* \(truncated\?\)"):
        load(f"mnist:{tmp_path}")
    with pytest.raises(DataError, match="normal_class=12"):
        load(f"mnist:{tmp_path}", normal_class=12)


# --------------------------------------------------------------------------- synthetic


def test_synthetic_delegates_to_materialize(tmp_path, monkeypatch):
    calls = []

    def fake_materialize(name="weave", *, seed=0, size=128):
        calls.append((name, seed, size))
        return write_mvtec(tmp_path / name, defects=("scratch", "spot"))

    monkeypatch.setattr(adtf.data.synthetic, "materialize", fake_materialize)
    ds = load("synthetic", seed=4)
    assert ds.name == "synthetic:weave" and ds.has_masks  # the procedural default
    assert ds.counts() == {"train": 3, "test_good": 2, "test_scratch": 2, "test_spot": 2}
    assert load("synthetic:gravel,size=64").name == "synthetic:gravel"
    assert calls == [("weave", 4, 128), ("gravel", 0, 64)]
    with pytest.raises(DataError, match=r"synthetic:brick'.*unknown option.*colour.*accepted: \['size'\]"):
        load("synthetic:brick", colour="red")


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("breakage", ["garbage", "truncated_png", "truncated_jpeg", "jpeg_without_end", "empty", "tiff",
                                      "tif_file", "heic_file", "bmp_1bit", "bmp_palette", "bmp_padded", "png_bad_checksum",
                                      "latin1_name", "animated_webp", "animated_webp_damaged", "broken_link",
                                      "link_loop"])
def test_unusable_image_raises_naming_it_and_skip_bad_leaves_it_out(tmp_path, breakage):
    root = write_mvtec(tmp_path / "m", masks=False, size=(64, 48))
    bad = root / "train" / "good" / "001.png"
    if breakage == "garbage":
        bad.write_bytes(b"this is not an image at all")
    elif breakage == "truncated_png":
        bad.write_bytes(bad.read_bytes()[:-600])
    elif breakage == "truncated_jpeg":
        bad = write_image(root / "train" / "good" / "001.jpg", (64, 48), fmt="JPEG")
        (root / "train" / "good" / "001.png").unlink()
        bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])
    elif breakage == "jpeg_without_end":  # only its EOI marker missing: PIL decodes it, TensorFlow stopped the fit
        bad = write_image(root / "train" / "good" / "001.jpg", (64, 64), fmt="JPEG", seed=5)
        (root / "train" / "good" / "001.png").unlink()
        bad.write_bytes(bad.read_bytes()[:-2])
    elif breakage == "empty":
        bad.write_bytes(b"")
    elif breakage == "tif_file":  # a camera's .tif: once left out without a word, now named
        Image.open(bad).save(bad.with_suffix(".tif"), format="TIFF")
        bad.unlink()
        bad = bad.with_suffix(".tif")
    elif breakage == "heic_file":  # a phone's photo: a format to name, not a "corrupt" file
        bad.unlink()
        bad = bad.with_suffix(".heic")
        bad.write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(32))
    elif breakage == "bmp_padded":  # 2 bytes past its rows, as some editors write: PIL decodes it, TensorFlow
        Image.open(bad).convert("RGB").save(bad.with_suffix(".bmp"))  # stopped the fit on it
        bad.unlink()
        bad = bad.with_suffix(".bmp")
        bad.write_bytes(bad.read_bytes() + b"\0\0")
        from adtf.data.pipeline import is_complete_image_file  # the SavedModel's check: the same rule

        assert not bool(is_complete_image_file(tf.constant(bad.read_bytes())))
        assert bool(is_complete_image_file(tf.constant(bad.read_bytes()[:-2])))
    elif breakage.startswith("bmp"):  # TensorFlow refuses 1-bit BMPs and reads palette indices as gray levels
        Image.open(bad).convert("1" if breakage == "bmp_1bit" else "P").save(bad.with_suffix(".bmp"))
        bad.unlink()
        bad = bad.with_suffix(".bmp")
    elif breakage == "png_bad_checksum":  # PIL's decode skips chunk checksums; TensorFlow's stops the run on one
        data = bytearray(bad.read_bytes())
        idat = data.index(b"IDAT")
        length = int.from_bytes(data[idat - 4:idat], "big")
        data[idat + 4 + length] ^= 0xFF  # the first byte of the IDAT chunk's CRC
        bad.write_bytes(bytes(data))
    elif breakage == "animated_webp":  # TensorFlow's WebP decoder aborts the process on one
        frames = [Image.open(bad).convert("RGB"), Image.open(bad).convert("RGB").transpose(Image.FLIP_LEFT_RIGHT)]
        bad.unlink()
        bad = bad.with_suffix(".webp")
        frames[0].save(bad, save_all=True, append_images=frames[1:])
        from adtf.data.pipeline import is_complete_image_file  # the SavedModel's check before it decodes

        assert not bool(is_complete_image_file(tf.constant(bad.read_bytes())))
        buffer = io.BytesIO()
        frames[0].save(buffer, format="WEBP")
        assert bool(is_complete_image_file(tf.constant(buffer.getvalue())))
    elif breakage == "animated_webp_damaged":  # its first frame's chunk tag damaged: PIL reads one still frame, and
        frames = [Image.open(bad).convert("RGB"), Image.open(bad).convert("RGB").transpose(Image.FLIP_LEFT_RIGHT)]
        bad.unlink()  # TensorFlow's decoder crashed the process on it ("double free or corruption") in the check
        bad = bad.with_suffix(".webp")
        frames[0].save(bad, save_all=True, append_images=frames[1:])
        bad.write_bytes(bad.read_bytes().replace(b"ANMF", b"ANVF", 1))
        assert Image.open(bad).n_frames == 1
    elif breakage in ("broken_link", "link_loop"):  # a link to a file gone (or to itself): once left out unseen
        bad.unlink()
        bad.symlink_to(bad.name if breakage == "link_loop" else "moved_away.png")
    elif breakage == "latin1_name":  # a zip made on Windows: TensorFlow's file ops take UTF-8 names only
        latin1 = root / "train" / "good" / os.fsdecode(b"Pr\xfcfteil.png")
        bad.rename(latin1)
        bad = re.escape(ascii(str(latin1)))
    else:
        Image.open(bad).save(bad, format="TIFF")  # a TIFF named .png: PIL reads it, TensorFlow cannot
    if breakage != "latin1_name":
        bad = re.escape(str(bad))
    with pytest.raises(DataError, match=bad) as error:
        load(f"mvtec:{root}")
    assert "--skip-bad" in str(error.value)
    assert breakage != "heic_file" or "HEIC images are not supported" in str(error.value)
    with pytest.warns(UserWarning, match=bad):
        ds = load(f"mvtec:{root}", skip_bad=True)
    assert len(ds.train) == 2 and all("001" not in s.path for s in ds.train)


def test_many_unusable_files_skipped_are_one_warning_with_a_count(tmp_path):
    """200 empty files under --skip-bad were 200 warnings (and 200 paragraphs of the report), and none said that
    most of the folder had been left out."""
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / f"ok{i}.png")
    for i in range(13):
        (tmp_path / f"empty{i:02d}.png").write_bytes(b"")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load(f"folder:{tmp_path}", skip_bad=True)
    skipping = [str(w.message) for w in caught if "skipping" in str(w.message)]
    assert len(skipping) == 1 and "skipping 13 of its 16 images, unusable:" in skipping[0]
    assert skipping[0].count("\n  ") == 11 and skipping[0].endswith("... and 3 more")  # ten named, then a count
    assert len(ds.train) == 3 and len(ds.skipped) == 13


def test_an_exif_orientation_is_said_and_named_in_a_mask_size_mismatch(tmp_path):
    """A phone's portrait is stored sideways and shown upright: adtf reads it as stored (as the SavedModel does),
    which a user drawing masks in a viewer could not tell from the size check's message alone."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to show
    for i in range(2):
        path = tmp_path / "ok" / f"{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (10, 16, 3), dtype=np.uint8)).save(path, exif=exif)
    path = tmp_path / "ng" / "d.jpg"
    path.parent.mkdir()
    Image.fromarray(np.zeros((10, 16, 3), np.uint8)).save(path, exif=exif)
    write_image(tmp_path / "masks" / "d.png", (10, 16), "L", value=255)  # drawn upright, as a viewer shows it
    with pytest.warns(UserWarning, match=r"2 image\(s\) carry an EXIF orientation"):
        load(f"folder:{tmp_path / 'ok'}")
    with pytest.raises(DataError, match=r"mask is 10x16 but its image .*d.jpg is 16x10 \(width x height\) \(the "
                                        r"image's EXIF orientation turns it in viewers"):
        load(f"folder:{tmp_path / 'ok'},anomalous={tmp_path / 'ng'},masks={tmp_path / 'masks'}")
    # square: the mask fits the size check, turned against its defect; the warning names the mask
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(tmp_path / "ng" / "d.jpg", exif=exif)
    write_image(tmp_path / "masks" / "d.png", (12, 12), "L", value=255)
    with pytest.warns(UserWarning, match=r"1 of them have a mask \(e.g. .*d.png\), which must be drawn on the image "
                                         r"as stored"):
        load(f"folder:{tmp_path / 'ok'},anomalous={tmp_path / 'ng'},masks={tmp_path / 'masks'}")


def test_gray_and_24_bit_bmps_decode_as_pil_reads_them(tmp_path):
    from adtf.data.pipeline import decode_image

    rng = np.random.default_rng(0)
    for mode in ("L", "RGB", "RGBA"):
        path = tmp_path / f"{mode}.bmp"
        Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).convert(mode).save(path)
        ds = load(f"folder:{tmp_path}")  # passes the up-front check
        assert str(path) in {s.path for s in ds.train}
        np.testing.assert_array_equal(np.asarray(decode_image(path.read_bytes()))[..., :3],
                                      np.asarray(Image.open(path).convert("RGB")))


def test_mask_size_mismatch_raises_and_skip_bad_drops_the_mask_alone(tmp_path):
    """The image is fine: with --skip-bad it still counts for the image metrics, as an image without a mask does
    (it once left the test set under a warning that named the mask alone)."""
    root = write_mvtec(tmp_path / "m", size=(12, 10))
    mask = write_image(root / "ground_truth" / "crack" / "000_mask.png", (10, 10), "L", value=255)
    with pytest.raises(DataError, match=rf"{mask}: mask is 10x10 but its image .*000.png is 12x10"):
        load(f"mvtec:{root}")
    with pytest.warns(UserWarning, match=rf"skipping the mask {mask}: .*; its image counts for the image metrics"):
        ds = load(f"mvtec:{root}", skip_bad=True)
    assert ds.counts()["test_crack"] == 2
    assert [s.mask_path is None for s in ds.test if s.defect == "crack"] == [True, False]
    write_image(root / "test" / "crack" / "000.png", (12, 10), "L")  # a gray image whose mask is dropped is seen
    with pytest.warns(UserWarning, match="skipping the mask"):
        ds = load(f"mvtec:{root}", skip_bad=True)
    assert colour_change(colour_kind(ds, ds.train), ds, ds.test).startswith("1 of these 4 images is grayscale")


def test_every_problem_is_listed_once(tmp_path):
    root = write_mvtec(tmp_path / "m", masks=False)
    for name in ("000.png", "001.png"):
        (root / "test" / "crack" / name).write_bytes(b"broken")
    with pytest.raises(DataError, match="2 unusable file") as error:
        load(f"mvtec:{root}")
    assert all(str(root / "test" / "crack" / n) in str(error.value) for n in ("000.png", "001.png"))


def test_no_training_image_left_raises(tmp_path):
    root = write_mvtec(tmp_path / "m", n_train=1, masks=False)
    (root / "train" / "good" / "000.png").write_bytes(b"broken")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match="no usable training image"):
            load(f"mvtec:{root}", skip_bad=True)


def test_counts_and_repr():
    ds = AnomalyDataset("x", [Sample("a", 0, "good")],
                        [Sample("b", 1, "zeta"), Sample("c", 0, "good"), Sample("d", 1, "alpha")], False)
    assert list(ds.counts().items()) == [("train", 1), ("test_good", 1), ("test_alpha", 1), ("test_zeta", 1)]
    assert "test_zeta" in repr(ds) and "Sample(" not in repr(ds)


@pytest.mark.parametrize("spec, message", [
    ("nosuch:/data/parts", r"unknown kind 'nosuch'"),
    ("size=64", r"an option with no dataset; in a list, quote"),
    ("mtd:mtd,train_fraction=abc", r"option train_fraction takes a float \(default 0.8\), got 'abc'"),
    ("synthetic:weave,size=big", r"option size takes an int \(default 128\), got 'big'"),
    ("mvtec:{tmp},category=3", r"no train/good folder .* category=3 is none of its folders, which hold the "
                                r"categories \['bottle'\]"),
])
def test_a_bad_spec_is_named_before_any_reader_runs(spec, message, tmp_path):
    """Each of these used to end in a TypeError from inside a reader (category=3: a path joined with an int)."""
    (tmp_path / "bottle" / "train" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match=message):
        load(spec.format(tmp=tmp_path))


# --------------------------------------------------------------------------- one folder per class


def write_classes(root, counts, size=(8, 8)):
    for c, (name, n) in enumerate(counts.items()):
        for i in range(n):
            write_image(root / name / f"{i:03d}.png", size, seed=100 * c + i)
    return root


def test_classes_with_train_and_test_splits(tmp_path):
    write_classes(tmp_path / "train", {"cat": 4, "dog": 3})
    write_classes(tmp_path / "test", {"cat": 2, "dog": 2, "ship": 1})
    ds = load(f"classes:{tmp_path}:cat")
    assert ds.name == f"classes:{tmp_path.name}-cat" and not ds.has_masks
    assert [s.path for s in ds.train] == [str(tmp_path / "train" / "cat" / f"{i:03d}.png") for i in range(4)]
    assert [(s.label, s.defect) for s in ds.test] == [(0, "good")] * 2 + [(1, "dog")] * 2 + [(1, "ship")]
    assert ds.notes == ["one-class protocol: class 'cat' (index 0) is normal; its 4 'train' images are the training "
                        "images, and all 5 'test' images of every class are the test set"]  # for the report
    assert load(f"classes:{tmp_path}", normal_class=1).train[0].path.endswith("train/dog/000.png")  # by index
    with pytest.raises(DataError, match="train/ship: no images of the normal class to fit on"):
        load(f"classes:{tmp_path},normal_class=ship")
    # Indices number the training class folders, as ImageFolder(train) does: a test-only class ("ant") or an empty
    # training folder shifted them once
    write_classes(tmp_path / "test", {"ant": 1})
    (tmp_path / "train" / "bee").mkdir()
    assert load(f"classes:{tmp_path}:1").train[0].path.endswith("train/dog/000.png")
    with pytest.raises(DataError, match=r"index below 2 \(the classes: cat, dog\)"):
        load(f"classes:{tmp_path}:2")


def test_classes_one_split_holds_out_the_normal_class(tmp_path):
    write_classes(tmp_path, {"obj1": 10, "obj2": 4})
    write_image(tmp_path / "obj2" / "turntable" / "deep.png", (8, 8))  # found below the class folder, as ImageFolder does
    write_image(tmp_path / "obj2" / ".thumbs" / "hidden.png", (8, 8))
    ds = load(f"classes:{tmp_path}")  # the first class by name
    assert len(ds.train) == 8 and {s.defect for s in ds.test} == {"good", "obj2"}
    assert ds.notes[0].startswith("one-class protocol on one split ('all'): class 'obj1' (index 0) is normal; a "
                                  "seeded (seed 0) 0.8 of its 10 images (8) are the training images, its other 2")
    assert sum(s.label == 0 for s in ds.test) == 2 and len(ds.test) == 7
    assert any(s.path.endswith("turntable/deep.png") for s in ds.test) and not any("hidden" in s.path for s in ds.test)
    assert not {s.path for s in ds.train} & {s.path for s in ds.test}
    assert [s.path for s in load(f"classes:{tmp_path}", seed=1).train] != [s.path for s in ds.train]


def test_classes_bad_layouts_are_named(tmp_path):
    write_classes(tmp_path / "a" / "train", {"cat": 2})
    with pytest.raises(DataError, match="a train/ folder and no test/"):
        load(f"classes:{tmp_path / 'a'}")
    write_classes(tmp_path / "b", {"cat": 2, "dog": 1})
    with pytest.raises(DataError, match=r"normal_class='cow' is neither a class folder .* \(the classes: cat, dog\)"):
        load(f"classes:{tmp_path / 'b'}:cow")
    with pytest.raises(DataError, match="index below 2"):
        load(f"classes:{tmp_path / 'b'}:5")
    (tmp_path / "c" / "empty").mkdir(parents=True)
    with pytest.raises(DataError, match="no class folders with images"):
        load(f"classes:{tmp_path / 'c'}")


def write_coil(folder, objects, views):
    for k in objects:
        for view in range(views):
            write_image(folder / f"obj{k}__{5 * view}.png", (8, 8), seed=100 * k + view)


def test_coil_flat_folder_one_object_normal(tmp_path):
    write_coil(tmp_path / "coil-100", objects=(1, 2, 10), views=10)
    (tmp_path / "coil-100" / "convertGroupppm.pl").write_text("#!/usr/bin/perl\n")  # shipped in the zip
    ds = load(f"coil:{tmp_path}")  # the folder holding coil-100/; the lowest object is normal
    assert ds.name == "coil:coil-100-obj1" and not ds.has_masks
    assert len(ds.train) == 8 and all("/obj1__" in s.path for s in ds.train)
    assert ds.counts() == {"train": 8, "test_good": 2, "test_obj2": 10, "test_obj10": 10}
    assert not {s.path for s in ds.train} & {s.path for s in ds.test}
    for spec in (f"{tmp_path / 'coil-100'}:10", f"coil:{tmp_path}:obj10", f"{tmp_path},normal_class=10"):
        spec = spec if spec.startswith("coil:") else f"coil:{spec}"
        assert load(spec).name == "coil:coil-100-obj10"
    assert parse_spec(str(tmp_path))[0] is SourceKind.COIL  # recognised without coil:
    assert [s.path for s in load(f"coil:{tmp_path}", seed=1).train] != [s.path for s in ds.train]


def test_coil_bad_inputs_are_named(tmp_path):
    write_coil(tmp_path / "coil-100", objects=(1, 2), views=3)
    with pytest.raises(DataError, match=r"normal_class='3' is no object of .*coil-100 \(objects 1-2"):
        load(f"coil:{tmp_path}:3")
    with pytest.raises(DataError, match="coil-100.zip: a zip archive; unzip it"):
        load(f"coil:{tmp_path / 'coil-100.zip'}")
    write_coil(tmp_path / "coil-20-proc", objects=(1,), views=3)
    with pytest.raises(DataError, match="COIL files in 2 folders"):
        load(f"coil:{tmp_path}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no COIL files"):
        load(f"coil:{tmp_path / 'empty'}")
    with pytest.raises(DataError, match="no object of"):
        load(f"coil:{tmp_path / 'coil-100'}:²")  # a digit to str.isdigit, not to int()
    write_image(tmp_path / "coil-100" / "part_07.png", (8, 8))
    with pytest.raises(DataError, match=r"coil-100: 1 image\(s\) not named obj<k>__<view> \(e.g. part_07.png\)"):
        load(f"coil:{tmp_path / 'coil-100'}")


def test_coil_is_not_guessed_for_other_layouts(tmp_path):
    for i in range(3):
        write_image(tmp_path / "parts" / f"{i}.png", (8, 8), seed=i)
    write_coil(tmp_path / "parts", objects=(1, 2), views=2)  # a user's folder with a few such names among others
    write_coil(tmp_path / "parts" / "extra", objects=(1, 2), views=2)
    assert parse_spec(str(tmp_path / "parts"))[0] is SourceKind.FOLDER
    write_coil(tmp_path / "one" / "views", objects=(3,), views=4)  # one object: nothing anomalous, not COIL
    assert parse_spec(str(tmp_path / "one"))[0] is SourceKind.FOLDER


def test_test_images_that_are_training_files_are_named(tmp_path):
    for i in range(3):
        write_image(tmp_path / "ok" / f"{i}.png", seed=i)
    with pytest.warns(UserWarning, match=r"3 of the 3 test images are training files too \(e.g. .*ok/0.png"):
        ds = load(f"folder:{tmp_path / 'ok'},test_normal={tmp_path / 'ok'}")
    assert any("training files too" in note for note in ds.notes)  # and the report repeats it
    write_classes(tmp_path / "set" / "train", {"cat": 2, "dog": 1})
    write_classes(tmp_path / "set" / "test", {"dog": 1})
    (tmp_path / "set" / "test" / "cat").mkdir()
    (tmp_path / "set" / "test" / "cat" / "linked.png").symlink_to(tmp_path / "set" / "train" / "cat" / "000.png")
    with pytest.warns(UserWarning, match="1 of the 2 test images are training files too"):
        load(f"classes:{tmp_path / 'set'}:cat")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load(f"classes:{tmp_path / 'set'}:dog")  # the link is a cat test image; the dog fit shares no file


def test_every_file_the_up_front_check_passes_decodes_in_tensorflow(tmp_path):
    """The check decodes with PIL; training decodes with TensorFlow, which refuses more: a file that passes the one
    and fails the other stops a fit mid-way with a traceback (a BMP padded past its rows did). Mutated files of
    every format (bytes flipped, cut, inserted, deleted, junk appended), seeded: each one passed must decode."""
    import random

    from adtf.data.pipeline import decode_image
    from adtf.data.sources import _image_size

    rng = random.Random(0)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    originals = {}
    for fmt, suffix in (("PNG", "png"), ("JPEG", "jpg"), ("GIF", "gif"), ("BMP", "bmp"), ("WEBP", "webp")):
        buffer = io.BytesIO()
        image.save(buffer, fmt)
        originals[suffix] = buffer.getvalue()
    passed = 0
    for i in range(400):
        suffix = rng.choice(sorted(originals))
        data = bytearray(originals[suffix])
        at = rng.randrange(len(data))
        change = rng.choice(("flip", "cut", "insert", "delete", "append"))
        if change == "flip":
            for _ in range(rng.randrange(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif change == "cut":
            del data[at:]
        elif change == "insert":
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        elif change == "delete":
            del data[at:at + rng.randrange(1, 40)]
        else:
            data += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000)))
        path = tmp_path / f"{i}.{suffix}"
        path.write_bytes(bytes(data))
        if _image_size(str(path), "image").problem is None:
            passed += 1
            decode_image(tf.constant(bytes(data)))  # raises where TensorFlow refuses what the check passed
    assert passed > 40  # the mutations leave many files whole enough to pass, so the check above is exercised


def test_an_image_past_pils_bomb_warning_limit_is_named(tmp_path, monkeypatch):
    """PIL's DecompressionBombWarning names no file: a folder of a day's parts left the user guessing which."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 144 pixels: past the warning limit, below twice it
    write_image(tmp_path / "ok" / "big.png", (12, 12), "L", value=10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load(f"folder:{tmp_path / 'ok'}")
    assert any("big.png: the image has 144 pixels, past PIL's decompression-bomb" in str(w.message) for w in caught)


def test_a_mask_is_found_whichever_unicode_form_its_name_is_written_in(tmp_path):
    """macOS tools write ``ü`` as ``u`` plus a combining mark: ``Prüfteil_mask.png`` beside ``Prüfteil.png`` was
    "no mask", with a file of that very name on the screen, and the set lost its pixel metrics."""
    import unicodedata

    for folder in ("ok", "ng", "masks"):
        (tmp_path / folder).mkdir()
    for i in range(2):
        Image.fromarray(np.full((8, 8, 3), 60 * i, np.uint8)).save(tmp_path / "ok" / f"{i}.png")
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(tmp_path / "ng" / unicodedata.normalize("NFC", "Prüfteil.png"))
    mask = tmp_path / "masks" / unicodedata.normalize("NFD", "Prüfteil_mask.png")
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(mask)
    ds = load(f"folder:{tmp_path / 'ok'},anomalous={tmp_path / 'ng'},masks={tmp_path / 'masks'}")
    assert ds.has_masks and [s.mask_path for s in ds.test if s.label] == [str(mask)]


def test_a_folder_spec_names_images_in_subfolders_and_a_holdout_that_takes_every_image(tmp_path):
    """``folder:parts`` of parts/good and parts/bad said "no file there ends in .png"; a holdout that moved the one
    normal image to the test set said "no usable training image left", of an image that was fine."""
    for folder in ("good", "bad"):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / folder / "0.png")
    with pytest.raises(DataError, match=r"no images directly in it, only in its subfolders \(bad/, good/\)"):
        load(f"folder:{tmp_path}")
    with pytest.raises(DataError, match="holdout=0.5 moves all 1 normal image"):
        load(f"folder:{tmp_path / 'good'},holdout=0.5")


def test_checking_many_files_shows_a_bar_and_few_none(tmp_path, capsys):
    """4,000 camera JPEGs took minutes to check, before adtf-score or adtf-eval printed a word."""
    from adtf.data.sources import CHECK_BAR_FROM

    for i in range(CHECK_BAR_FROM):
        Image.fromarray(np.full((8, 8), i % 256, np.uint8)).save(tmp_path / f"{i:04d}.png")
    load(f"folder:{tmp_path}")
    said = capsys.readouterr().err
    assert "checking files: 100%" in said and f"{CHECK_BAR_FROM}/{CHECK_BAR_FROM}" in said
    load(f"folder:{tmp_path}", progress=False)  # --quiet: no bar (it showed under adtf-fit, -eval and -score --quiet)
    assert "checking files" not in capsys.readouterr().err
    for path in sorted(tmp_path.iterdir())[10:]:
        path.unlink()
    load(f"folder:{tmp_path}")
    assert "checking files" not in capsys.readouterr().err
