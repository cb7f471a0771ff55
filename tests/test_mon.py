"""Model of Normality (paper 000): eq. 1-8, Table I, save/load, and a real detection check."""
import numpy as np
import pytest

from adtf import data
from adtf.detectors import ModelOfNormality, load
from adtf.errors import AdtfError
from adtf.thresholds import working_points

SIZE = 64


@pytest.fixture(scope="module")
def tiny():
    """A small synthetic texture set (real brick texture, drawn defects with masks)."""
    dataset = data.load("synthetic:brick", size=SIZE, n_train=24, n_test_good=8, n_test_defect=2)
    train = data.pipeline(dataset.train, image_size=(SIZE, SIZE), batch_size=5)  # 24 = 4 full batches + 4
    return dataset, train


@pytest.fixture(scope="module")
def fitted(tiny):
    dataset, train = tiny
    detector = ModelOfNormality(backbone="efficientnet_lite0", layer="block4c_add", image_size=(SIZE, SIZE))
    detector.fit(train, verbose=False)
    detector.calibrate(train, verbose=False)
    return detector


def _all_images(ds):
    return np.concatenate([np.asarray(batch[0]) for batch in ds])


def test_mon_is_the_mean_feature_map_over_all_batches(tiny, fitted):
    _, train = tiny
    features = np.asarray(fitted.feature_map(_all_images(train)), np.float64)  # the unfrozen Keras path
    assert fitted.n_normal == 24
    np.testing.assert_allclose(np.asarray(fitted.distance.mean), features.mean(axis=0), rtol=1e-4, atol=1e-4)


def test_distance_map_and_image_descriptors_follow_eq_2_to_5(tiny, fitted):
    dataset, _ = tiny
    images = _all_images(data.pipeline(dataset.test[:6], image_size=(SIZE, SIZE), batch_size=6))
    out = fitted.infer(images)
    np.testing.assert_allclose(out["d_max"], np.asarray(fitted(images)["d_max"]), rtol=1e-4)  # fast == Keras path
    features = np.asarray(fitted.fast_feature_map(images), np.float64)
    reference = np.sqrt(((features - np.asarray(fitted.distance.mean, np.float64)) ** 2).sum(-1))
    np.testing.assert_allclose(out["d_mean"], reference.mean(axis=(1, 2)), rtol=1e-4)
    np.testing.assert_allclose(out["d_max"], reference.max(axis=(1, 2)), rtol=1e-4)
    np.testing.assert_array_equal(out["score"], out["d_max"])
    assert out["anomaly_map"].shape == (6, SIZE, SIZE)
    assert out["decisions"].shape == (6, 6) and out["anomalous"].shape == (6,)


def test_calibration_gives_table_1_from_the_mon_images_themselves(tiny, fitted):
    _, train = tiny
    out = fitted.score_dataset(train, verbose=False, keep_maps=False)
    expected = working_points(d_max=out["d_max"], d_mean=out["d_mean"])
    assert list(fitted.working_points) == [f"threshold{i}" for i in range(1, 7)]
    for name, point in expected.items():
        assert fitted.working_points[name]["value"] == pytest.approx(point["value"], rel=1e-5)
    # threshold1 = max(D_max): no MoN image is above it.
    assert not np.any(out["d_max"] > fitted.working_points["threshold1"]["value"])
    np.testing.assert_allclose(np.asarray(fitted.postprocess.thresholds)[:6], [p["value"] for p in expected.values()],
                               rtol=1e-5)
    assert fitted.working_point == "threshold3"


def test_working_point_can_move_without_refitting(tiny, fitted):
    dataset, _ = tiny
    images = _all_images(data.pipeline(dataset.test, image_size=(SIZE, SIZE), batch_size=16))
    fitted.set_working_point(value=-1.0, score="d_mean")
    assert np.all(np.asarray(fitted(images)["anomalous"]))
    fitted.set_working_point("threshold1")
    out = fitted(images)
    np.testing.assert_array_equal(np.asarray(out["anomalous"]), np.asarray(out["decisions"])[:, 0])
    with pytest.raises(AdtfError, match="unknown working point"):
        fitted.set_working_point("threshold9")
    fitted.set_working_point("threshold3")


def test_save_and_safe_load_roundtrip(tmp_path, tiny, fitted):
    dataset, _ = tiny
    images = _all_images(data.pipeline(dataset.test[:4], image_size=(SIZE, SIZE), batch_size=4))
    fitted.save(tmp_path / "mon.keras")
    restored = load(tmp_path / "mon.keras")
    assert restored.working_points == fitted.working_points and restored.working_point == "threshold3"
    for key, value in fitted(images).items():
        np.testing.assert_allclose(np.asarray(restored(images)[key]), np.asarray(value), rtol=1e-5, atol=1e-6)


def test_mon_separates_broken_bottles_from_good_ones(datasets_dir):
    """Real data: 40 good MVTec bottles build the MoN; good vs broken_large test bottles."""
    from adtf.metrics import image_auroc

    dataset = data.load(f"mvtec:{datasets_dir / 'mvtec_bottle'}")
    size = (128, 128)
    detector = ModelOfNormality(image_size=size)  # the offline preset's backbone and layer
    detector.fit(data.pipeline(dataset.train[:40], image_size=size, batch_size=20), verbose=False)
    test = [s for s in dataset.test if s.defect in ("good", "broken_large")]
    out = detector.score_dataset(data.pipeline(test, image_size=size, batch_size=20), verbose=False, keep_maps=False)
    assert image_auroc(out["label"], out["d_max"]) > 0.85


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(AdtfError, match="unknown MoN preset"):
        ModelOfNormality.from_preset("fastest")


def test_one_normal_image_is_refused_not_a_model_that_flags_every_other_part(tiny):
    """Calibrated on the image that built it, a one-image MoN set all six thresholds at 0: every new part flagged."""
    dataset, _ = tiny
    one = data.pipeline(dataset.train[:1], image_size=(SIZE, SIZE), batch_size=1)
    detector = ModelOfNormality(backbone="efficientnet_lite0", layer="block4c_add", image_size=(SIZE, SIZE))
    with pytest.raises(AdtfError, match="only 1 normal image to build the model of normality from"):
        detector.fit(one, verbose=False)
