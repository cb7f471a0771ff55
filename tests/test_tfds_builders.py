"""TFDS builders build offline from a local copy into a temporary data_dir, with load()'s split."""
import collections

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from adtf.data import load  # noqa: E402
from adtf.data.tfds_builders import Dagm2007, MagneticTileDefect, MVTecAD  # noqa: E402
from test_data_sources import write_dagm_class, write_mtd  # noqa: E402


def _build(builder, manual_dir):
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return builder


def _defects(builder, split):
    return collections.Counter((ex["defect"].decode(), int(ex["label"]))
                               for ex in tfds.as_numpy(builder.as_dataset(split=split)))


def test_mvtec_builder_on_shared_bottle(datasets_dir, tmp_path):
    builder = _build(MVTecAD(config="bottle", data_dir=str(tmp_path)), datasets_dir / "mvtec_bottle")
    assert builder.info.splits["train"].num_examples == 209
    assert builder.info.splits["test"].num_examples == 83
    assert _defects(builder, "test") == {("good", 0): 20, ("broken_large", 1): 20, ("broken_small", 1): 22,
                                         ("contamination", 1): 21}
    example = next(iter(tfds.as_numpy(builder.as_dataset(split="train").take(1))))
    assert example["image"].shape == (256, 256, 3) and example["mask"].shape == (256, 256, 1)
    assert not example["mask"].any() and example["path"].decode().startswith("train/good/")


def test_mtd_builder_on_fixture(tmp_path):
    root = write_mtd(tmp_path / "mtd", counts=(("Free", 5), ("Crack", 2), ("Fray", 1)))
    builder = _build(MagneticTileDefect(data_dir=str(tmp_path / "tfds")), root)
    expected = load(f"mtd:{root}")
    assert builder.info.splits["train"].num_examples == len(expected.train) == 4
    assert _defects(builder, "test") == {("good", 0): 1, ("crack", 1): 2, ("fray", 1): 1}
    for example in tfds.as_numpy(builder.as_dataset(split="test")):
        assert example["image"].shape[:2] == example["mask"].shape[:2] and example["image"].shape[2] == 1
        # fixture defect masks hold the value 200: stored binarised as 255 everywhere
        assert set(np.unique(example["mask"])) == ({255} if example["label"] else {0})


def test_dagm_builder_on_fixture(tmp_path):
    write_dagm_class(tmp_path / "DAGM" / "Class3", n_normal=(300, 300), n_defective=(2, 2), size=(8, 8))
    builder = _build(Dagm2007(config="Class3", data_dir=str(tmp_path / "tfds")), tmp_path / "DAGM")
    assert builder.info.splits["train"].num_examples == 500
    assert _defects(builder, "test") == {("good", 0): 100, ("defective", 1): 4}


def test_manual_download_instructions_name_the_source():
    assert "mvtec.com" in MVTecAD.MANUAL_DOWNLOAD_INSTRUCTIONS
    assert "Labels.txt" in Dagm2007.MANUAL_DOWNLOAD_INSTRUCTIONS
    assert "MT_Free" in MagneticTileDefect.MANUAL_DOWNLOAD_INSTRUCTIONS
    assert [c.name for c in Dagm2007.BUILDER_CONFIGS] == [f"Class{n}" for n in range(1, 11)]
    assert len(MVTecAD.BUILDER_CONFIGS) == 15
