"""Dataset manifests and verify(): the shared copies against their manifests, and tampered copies."""
import gzip
import json
import shutil

import numpy as np
import pytest

from adtf.data import SourceKind, manifest_names, read_manifest, verify
from adtf.errors import DataError
from test_data_sources import write_coil, write_dagm_class


def test_every_manifest_is_complete():
    assert manifest_names() == ["cifar", "coil", "dagm2007", "mnist", "mtd", "mvtec_ad", "synthetic"]
    for name in manifest_names():
        manifest = read_manifest(name)
        assert manifest["name"] == name and SourceKind(manifest["kind"])
        assert all(manifest[key] for key in ("title", "origin", "licence", "layout", "configs"))
        for config in manifest["configs"].values():
            assert set(config) == {"options", "counts", "has_masks"}
            assert config["counts"]["train"] > 0 and all(k == "train" or k.startswith("test_") for k in config["counts"])
        assert manifest.get("default_config", next(iter(manifest["configs"]))) in manifest["configs"]


def test_mvtec_manifest_adds_up_to_the_published_totals():
    # MVTec AD paper (CVPR 2019): 3,629 training and 1,725 test images over 15 categories.
    configs = read_manifest("mvtec_ad")["configs"]
    assert len(configs) == 15
    assert sum(c["counts"]["train"] for c in configs.values()) == 3629
    assert sum(v for c in configs.values() for k, v in c["counts"].items() if k != "train") == 1725


def test_shared_mtd_matches_counts_and_hashes(datasets_dir):
    report = verify(f"mtd:{datasets_dir / 'mtd'}")
    assert report.ok, str(report)
    assert report.checked == {"counts": 7, "sha256": 2688, "images": 1344}


def test_shared_mnist_matches(datasets_dir):
    report = verify(str(datasets_dir / "mnist"), "mnist")
    assert report.ok and report.config == "t10k" and report.checked["sha256"] == 2


def test_shared_bottle_counts_match_but_masks_are_missing(datasets_dir):
    report = verify(str(datasets_dir / "mvtec_bottle"), "mvtec_ad")  # config inferred from the folder name
    assert report.config == "bottle"
    assert report.differences == ["ground-truth masks: expected, none found"]
    assert "1 difference" in str(report)


def test_tampered_mnist_copy_is_reported(datasets_dir, tmp_path):
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(datasets_dir / "mnist" / name, tmp_path / name)
    labels_file = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels_file.read_bytes()))
    first_one = 8 + int(np.flatnonzero(np.frombuffer(raw, np.uint8, offset=8) == 1)[0])
    raw[first_one] = 0  # one more zero, one fewer one
    labels_file.write_bytes(gzip.compress(bytes(raw)))
    report = verify(f"mnist:{tmp_path}")
    assert not report.ok
    assert f"{labels_file}: sha256 differs from the manifest" in report.differences
    assert "test_1: expected 1135, found 1134" in report.differences


def test_dagm_copy_against_a_custom_manifest(tmp_path):
    write_dagm_class(tmp_path / "DAGM" / "Class1", n_normal=(3, 3), n_defective=(1, 1), size=(8, 8))
    manifest = {"name": "tiny_dagm", "title": "t", "origin": "o", "licence": "l", "layout": "l", "kind": "dagm",
                "configs": {c: {"options": {"category": c, "n_train": 2, "n_test_normal": None}, "has_masks": True,
                                "counts": {"train": 2, "test_good": 4, "test_defective": 2}}
                            for c in ("Class1", "Class10")}}
    path = tmp_path / "tiny_dagm.json"
    path.write_text(json.dumps(manifest))
    assert verify(str(tmp_path / "DAGM" / "Class1"), str(path)).ok  # "Class1", not "Class10"
    bad = tmp_path / "DAGM" / "Class1" / "Test" / "0008.PNG"
    bad.write_bytes(b"broken")
    report = verify(f"dagm:{tmp_path / 'DAGM'},category=Class1", str(path))
    assert any(str(bad) in line for line in report.differences)
    assert "test_good: expected 4, found 3" in report.differences  # 0008 is a normal Test image
    assert verify(f"dagm:{tmp_path / 'DAGM'}", str(path)).config == "Class1"  # the one class folder it holds
    (tmp_path / "DAGM" / "Class10").mkdir()
    with pytest.raises(DataError, match=r"which tiny_dagm config\? pass --config .*'Class1', 'Class10'"):
        verify(f"dagm:{tmp_path / 'DAGM'}", str(path))
    with pytest.raises(DataError, match="tiny_dagm folder not found"):  # not "which config?" for a mistyped path
        verify(f"dagm:{tmp_path / 'DAMG'}", str(path))


def test_unreadable_copy_and_wrong_manifest(tmp_path):
    (tmp_path / "train" / "good").mkdir(parents=True)
    report = verify(str(tmp_path), "mvtec_ad", config="bottle")
    assert not report.ok and report.differences[0].startswith("cannot be read:")
    with pytest.raises(DataError, match="cannot be checked against the mtd manifest"):
        verify(f"mvtec:{tmp_path}", "mtd")
    with pytest.raises(DataError, match="manifest 'nope' not found"):
        read_manifest("nope")


def test_the_embedded_default_verifies_by_its_bare_spec(tmp_path, monkeypatch):
    monkeypatch.setenv("ADTF_HOME", str(tmp_path))  # generated afresh, as on a new machine
    report = verify("synthetic")
    assert report.ok and report.config == "weave" and report.checked["images"] == 300


def test_a_copy_given_by_the_folder_holding_it_is_checked_against_its_own_config(tmp_path):
    write_coil(tmp_path / "data" / "coil-20-proc", objects=(1, 2), views=5)
    counts = {"train": 4, "test_good": 1, "test_obj2": 5}
    manifest = {"name": "tiny_coil", "title": "t", "origin": "o", "licence": "l", "layout": "l", "kind": "coil",
                "default_config": "coil100",
                "configs": {c: {"options": {"normal_class": 1}, "has_masks": False,
                                "counts": {**counts, "test_obj3": 5} if c == "coil100" else counts}
                            for c in ("coil100", "coil20")}}
    path = tmp_path / "tiny_coil.json"
    path.write_text(json.dumps(manifest))
    report = verify(f"coil:{tmp_path / 'data'}", str(path))  # named by its one subfolder, not the default
    assert report.config == "coil20" and report.ok, str(report)
