"""Paper 001's detector beyond the contract: its stages, its baselines, its errors."""
import numpy as np
import pytest

from adtf import data
from adtf.detectors import FlowDictionary
from adtf.errors import AdtfError

SIZE = 32


@pytest.fixture(scope="module")
def images():
    dataset = data.load("synthetic:brick", size=SIZE, n_train=12, n_test_good=2, n_test_defect=2)
    train, test = [np.concatenate([np.asarray(b[0]) for b in data.pipeline(part, image_size=SIZE, batch_size=32)])
                   for part in (dataset.train, dataset.test)]
    return train, test


def fitted(images, **options):
    detector = FlowDictionary(**{**FlowDictionary.smoke_test_options, **options})
    history = detector.fit(images[0], verbose=0)
    return detector, history


def test_the_dictionary_has_unit_atoms_and_codes_normal_patches_better_than_noise(images):
    detector, history = fitted(images)
    assert {"loss", "cutpaste_accuracy", "flow_nll"} <= set(history.history)
    atoms = np.asarray(detector.coding.dictionary)
    np.testing.assert_allclose(np.linalg.norm(atoms, axis=1), 1.0, atol=1e-4)  # eq. 8's constraint
    taps = detector.features(images[0], training=False)
    normal = np.asarray(detector.dictionary_features(detector.patch_features(taps)))
    normal_error = np.asarray(detector.coding.reconstruction_error(normal)).mean()
    noise = np.random.default_rng(0).standard_normal(normal.shape).astype("float32")
    assert normal_error < 0.5 * np.asarray(detector.coding.reconstruction_error(noise)).mean()
    assert detector.fit_info["dictionary_patches"] == 12 * 8


# The GDE baseline stays in the default suite; the other ablation paths are a fit each (15-30 s): marked slow.
@pytest.mark.parametrize("options", [dict(scoring="gde", flow=False)] + [
    pytest.param(options, marks=pytest.mark.slow) for options in (
        dict(scoring="flow"), dict(dictionary_input="features"), dict(image_score="top5_mean"),
        dict(flow_coupling="additive"))])
def test_the_baselines_and_ablations_score(images, options):
    detector, history = fitted(images, epochs=1, **options)
    assert ("flow_nll" in history.history) == detector.use_flow
    detector.calibrate(images[0][-4:], verbose=False)
    out = detector.infer(images[1])
    n = len(images[1])
    assert np.all(np.isfinite(out["score"])) and out["anomaly_map"].shape == (n, SIZE, SIZE)
    assert out["top_regions"].shape == (n, SIZE, SIZE)
    assert np.all(out["top_regions"].sum(axis=(1, 2)) == 5 * 8 * 8)  # five 8-px tiles of a 32-px image


def test_a_configuration_that_needs_the_flow_says_so():
    with pytest.raises(AdtfError, match="needs the flow"):
        FlowDictionary(**{**FlowDictionary.smoke_test_options, "flow": False})
    with pytest.raises(AdtfError, match="train_crop"):
        FlowDictionary(**{**FlowDictionary.smoke_test_options, "train_crop": 64})


def test_a_fit_killed_in_the_dictionary_stage_resumes_without_training_again(tmp_path, monkeypatch, caplog):
    import logging

    from adtf.run import fit_evaluate_export

    options = {**FlowDictionary.smoke_test_options, "epochs": 2}
    run = dict(method="flow_dictionary", data="synthetic:brick,size=32,n_train=40,n_test_good=10", out=tmp_path / "run",
               detector=options, export=False, verbose=False)
    learn = FlowDictionary.fit_dictionary

    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt("killed in the dictionary stage")

    monkeypatch.setattr(FlowDictionary, "fit_dictionary", killed)
    with pytest.raises(KeyboardInterrupt):
        fit_evaluate_export(**run)
    assert (tmp_path / "run" / "backup").is_dir()  # the two trained epochs are kept
    monkeypatch.setattr(FlowDictionary, "fit_dictionary", learn)
    traced, train_step = [], FlowDictionary.train_step

    def counted(self, *args):  # runs when a training step is traced: never, if no epoch trains again
        traced.append(1)
        return train_step(self, *args)

    monkeypatch.setattr(FlowDictionary, "train_step", counted)
    monkeypatch.setattr(logging.getLogger("adtf"), "propagate", True)
    with caplog.at_level("INFO", logger="adtf"):
        resumed = fit_evaluate_export(**run)
    assert "resuming the interrupted fit after epoch 2 of 2" in caplog.text  # said as it starts, not only at the end
    assert traced == []  # no epoch trained again
    assert not (tmp_path / "run" / "backup").exists()
    uninterrupted = fit_evaluate_export(**{**run, "out": tmp_path / "again"})
    assert traced and len(uninterrupted["history"]["loss"]) == 2
    assert resumed["history"]["loss"] == pytest.approx(uninterrupted["history"]["loss"])  # the curve before the kill
    assert (resumed["resumed_at_epoch"], uninterrupted["resumed_at_epoch"]) == (2, 0)
    assert resumed["fit_seconds"] >= sum(resumed["history"]["epoch_seconds"])  # the epochs before the kill count too
    assert "(resumed at epoch 2;" in (tmp_path / "run" / "report.md").read_text()
    assert resumed["image_auroc"] == pytest.approx(uninterrupted["image_auroc"], abs=1e-6)


def test_the_report_of_a_test_set_of_one_or_two_images_has_no_tsne_and_no_crash(images, tmp_path):
    """t-SNE needs three points or more: a folder set with one anomalous image (no test normals) raised from
    inside scikit-learn after the fit."""
    detector, _ = fitted(images, epochs=1)
    detector.calibrate(images[0][-4:], verbose=False)
    drawn = data.load("synthetic:brick", size=SIZE, n_train=1, n_test_good=0, n_test_defect=1)
    one_defect = data.AnomalyDataset(drawn.name, drawn.train, drawn.test[:1], has_masks=True, arrays=drawn.arrays)
    outputs = detector.infer(images[1][-1:])
    outputs["label"] = np.ones(1, int)
    plots, _ = detector.report_extras(one_defect, outputs, tmp_path)
    assert "tsne" not in plots and (tmp_path / "top_regions.png").exists()
    (tmp_path / "top_regions.png").unlink()  # and where the maps were not kept (no pixel metrics): scored again
    kept_none = {key: value for key, value in outputs.items() if np.ndim(value) < 3}
    assert detector.report_extras(one_defect, kept_none, tmp_path)[0]["top_regions"] == "top_regions.png"
    assert (tmp_path / "top_regions.png").stat().st_size > 0
    # paper 001's Fig. 7 beside, not over, the score histogram every report draws as scores.png
    assert plots["score_line"] == "score_line.png" and "scores" not in plots


def test_images_of_another_size_train_at_the_size_they_are_scored_at(images):
    """train_step cropped the arrays as given: 24-px images met a 24-px crop at image_size 32 (the statistics and
    scores resize to 32), and images smaller than the crop stopped in TensorFlow's gather."""
    import tensorflow as tf

    small = tf.image.resize(images[0][:4], (20, 20)).numpy()
    detector = FlowDictionary(**{**FlowDictionary.smoke_test_options, "train_crop": 24, "epochs": 1})
    detector.fit(small, verbose=0)  # once an InvalidArgumentError
    assert np.isfinite(np.asarray(detector(images[1])["score"])).all()
