"""The detector contract, run on every entry of ``adtf.detectors.REGISTRY`` and on two test doubles.

A new method gets every check here by adding its registry line (and ``smoke_test_options``):
serialisation, save/load in safe mode, a fit step, kill-and-resume equality, calibration,
resizing, NaN safety, and a SavedModel that matches Keras in a fresh process.
"""
import io
import json
import subprocess
import sys
import textwrap
import warnings
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from adtf import data
from adtf.detectors import REGISTRY, load
from adtf.errors import AdtfError
from adtf.layers.working_points import CUSTOM
from detector_doubles import DOUBLES

ENTRIES = {**REGISTRY, **DOUBLES}
SIZE = 32


@pytest.fixture(scope="module")
def images():
    """Real texture crops (the embedded brick photograph): 12 to fit on, 6 to calibrate, 4 to test."""
    dataset = data.load("synthetic:brick", size=SIZE, n_train=18, n_test_good=2, n_test_defect=1)
    arrays = [np.concatenate([np.asarray(b[0]) for b in data.pipeline(part, image_size=SIZE, batch_size=32)])
              for part in (dataset.train, dataset.test)]
    return {"fit": arrays[0][:12], "calibrate": arrays[0][12:], "test": arrays[1][:4]}


def build(cls):
    keras.utils.set_random_seed(0)
    return cls(**cls.smoke_test_options)


@pytest.fixture(scope="module", params=sorted(ENTRIES))
def fitted(request, images):
    cls = ENTRIES[request.param]
    detector = build(cls)
    history = detector.fit(images["fit"], epochs=min(1, detector.default_epochs), verbose=0)
    detector.calibrate(images["calibrate"], verbose=False)
    return request.param, detector, history


def outputs_of(detector, x):
    return {k: np.asarray(v) for k, v in detector(x, training=False).items()}


def assert_same_outputs(actual, expected, rtol=1e-5, atol=1e-5):
    assert set(actual) >= set(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(np.asarray(actual[key]).astype(float), value.astype(float), rtol=rtol, atol=atol,
                                   err_msg=key)


def test_the_python_api_takes_images_as_the_pipeline_makes_them(fitted, images):
    """uint8 arrays are scaled to [0, 1], gray is repeated to RGB, a larger image is resized as the pipeline and
    serve_image_bytes resize (anti-aliased): each used to be scored as something else than what was calibrated."""
    import tensorflow as tf

    from adtf.data.pipeline import prepare_image
    from adtf.errors import DataError

    _, detector, _ = fitted
    x = images["test"][:2]
    expected = outputs_of(detector, x)
    assert_same_outputs(outputs_of(detector, np.round(x * 255).astype(np.uint8)), expected)
    assert_same_outputs(detector.infer(np.round(x * 255).astype(np.uint8)), detector.infer(x))
    # a 16-bit camera's frames: scaled by 1/65535 (they all came out invalid, scored +inf)
    assert_same_outputs(outputs_of(detector, np.round(x * 65535).astype(np.uint16)), expected)
    gray = x[..., :1]
    assert_same_outputs(outputs_of(detector, gray), outputs_of(detector, np.repeat(gray, 3, axis=-1)))
    large = np.asarray(tf.image.resize(x, (3 * SIZE, 3 * SIZE)))
    prepared = np.stack([np.asarray(prepare_image(image, (SIZE, SIZE))) for image in large])
    np.testing.assert_allclose(outputs_of(detector, large)["score"], outputs_of(detector, prepared)["score"],
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(DataError, match="1, 3 or 4 channels"):
        detector(np.zeros((1, SIZE, SIZE, 5), np.float32))


def test_fit_step_returns_the_history(fitted):
    _, detector, history = fitted
    assert isinstance(history, keras.callbacks.History)
    if detector.default_epochs:
        assert len(history.history["loss"]) == 1 and np.isfinite(history.history["loss"][0])
        assert history.history["loss"][0] != 0.0  # a raw dict from train_step would log 0.0
    else:
        assert history.history == {}


def test_outputs_keep_the_contract(fitted, images):
    _, detector, _ = fitted
    out = outputs_of(detector, images["test"])
    n = len(images["test"])
    assert out["score"].shape == out["anomalous"].shape == out["invalid"].shape == (n,)
    assert out["anomaly_map"].shape == (n, SIZE, SIZE)
    assert out["decisions"].shape == (n, len(detector.working_point_names))
    assert np.isfinite(out["score"]).all() and not out["invalid"].any()
    for name in detector.score_names:
        assert out[name].shape == (n,)
    # The fast scoring path (frozen graphs) gives the Keras path's numbers.
    fast = detector.infer(images["test"])
    for key in ("score", "anomaly_map", "anomalous"):
        np.testing.assert_allclose(fast[key].astype(float), out[key].astype(float), rtol=1e-4, atol=1e-4, err_msg=key)
    # Another input size is resized to the detector's once, and the map comes back at the input's size.
    bigger = np.repeat(np.repeat(images["test"], 2, axis=1), 2, axis=2)
    assert outputs_of(detector, bigger)["anomaly_map"].shape == (n, 2 * SIZE, 2 * SIZE)
    # infer at two more sizes in turn: its tf.function traces the second with the size unknown, which once crashed
    # inside Keras' resize (OperatorNotAllowedInGraphError).
    for height, width in ((2 * SIZE, 2 * SIZE + 8), (SIZE + 8, 3 * SIZE)):
        other = np.asarray(keras.ops.image.resize(images["test"], (height, width)))
        assert detector.infer(other)["anomaly_map"].shape == (n, height, width)
    # An empty batch gives empty outputs (TensorFlow's convolutions mis-shaped it: "input depth must be evenly
    # divisible by filter depth"), eager, through infer's traces of other batch sizes, and traced with it first.
    import tensorflow as tf

    empty = images["test"][:0]
    traced_empty_first = tf.function(lambda x: detector(x, training=False))(tf.constant(empty))
    for out in (outputs_of(detector, empty), detector.infer(empty), traced_empty_first):
        assert {k: tuple(np.shape(v)) for k, v in out.items()} == {
            k: (0, *np.shape(v)[1:]) for k, v in outputs_of(detector, images["test"][:1]).items()}


def test_calibration_sets_every_working_point_from_normal_images(fitted, images):
    _, detector, _ = fitted
    assert list(detector.working_points) == list(detector.working_point_names)
    assert detector.working_point == (detector.default_working_point or detector.working_point_names[0])
    out = detector.score_dataset(images["calibrate"], verbose=False, keep_maps=False)
    assert not {"anomaly_map", "top_regions"} & set(out)  # no per-pixel output held: a day's parts would not fit
    for i, (name, point) in enumerate(detector.working_points.items()):
        np.testing.assert_array_equal(out["decisions"][:, i], out[point["score"]] > point["value"])
    detector.set_working_point(value=-np.inf, score=detector.score_names[0])
    assert detector.working_point.startswith("explicit") and outputs_of(detector, images["test"])["anomalous"].all()
    for never_crossed in (np.inf, np.nan, 1e39):  # every valid part would pass (1e39 is +inf in float32)
        with pytest.raises(AdtfError, match="must be a number below"):
            detector.set_working_point(value=never_crossed, score=detector.score_names[0])
    detector.set_working_point(value=0.5000004, score=detector.score_names[0])  # named exactly: not "0.5"
    assert detector.working_point == f"explicit:{detector.score_names[0]}>0.5000004"
    detector.set_working_point(detector.working_point_names[0])


def test_a_nan_or_inf_pixel_is_never_normal(fitted, images):
    _, detector, _ = fitted
    bad = images["test"].copy()
    bad[0, 5, 5, 1], bad[1, 0, 0, 0] = np.nan, np.inf
    bad[2] = bad[2] * 255  # a float image never scaled to [0, 1]: scored as something else than calibration saw
    detector.set_working_point(value=np.finfo("float32").max, score=detector.score_names[0])  # nothing finite passes
    for out in (outputs_of(detector, bad), detector.infer(bad)):  # eager Keras, and the tf.function graph
        np.testing.assert_array_equal(out["invalid"], [True, True, True, False])
        np.testing.assert_array_equal(out["anomalous"], [True, True, True, False])
        assert np.isposinf(out["score"][:3]).all() and out["decisions"][:3].all()
        assert np.isposinf(out["anomaly_map"][:3]).all() and np.isfinite(out["anomaly_map"][3]).all()  # 255s too
    detector.set_working_point(detector.working_point_names[0])


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_images_labelled_anomalous_in_a_fit_or_a_calibration_are_said(name, images):
    """A test set handed to fit or calibrate by mistake was learnt as normal, unsaid: each method's training pass
    (gradient epochs, a feature cache, a statistics pass) and calibration count the images labelled 1."""
    import tensorflow as tf

    labels = np.array([0, 1] * 6)  # 6 of the 12 fit images labelled defective, as adtf.data labels them
    mixed = tf.data.Dataset.from_tensor_slices((images["fit"], labels)).batch(4)
    detector = build(ENTRIES[name])
    epochs = 1 if ENTRIES[name].default_epochs else 0
    with pytest.warns(UserWarning, match="6 of the 12 images fitted on are labelled anomalous"):
        detector.fit(mixed, epochs=epochs, verbose=0)
    with pytest.warns(UserWarning, match="6 of the 12 images calibrated on are labelled anomalous"):
        detector.calibrate(mixed, verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # normal images alone: not a word
        normal = tf.data.Dataset.from_tensor_slices((images["fit"], np.zeros(12, "int64"))).batch(4)
        build(ENTRIES[name]).fit(normal, epochs=epochs, verbose=0)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_a_training_image_with_a_nan_or_out_of_range_pixel_is_refused_by_name(name, images):
    """Scoring marks such an image invalid; a fit would learn it as normal (SimpleNet's frozen backbone turned the NaN
    into finite features), so it stops before any work, naming the image."""
    from adtf.errors import DataError

    bad = images["fit"].copy()
    bad[3, 10, 10, 0] = np.nan
    epochs = 1 if ENTRIES[name].default_epochs else 0  # MoN refuses gradient epochs
    with pytest.raises(DataError, match=r"1 of the 12 training images hold NaN/inf pixels or pixels outside "
                                        r"\[0, 1\] \(images \[3\]"):
        build(ENTRIES[name]).fit(bad, epochs=epochs, verbose=0)
    with pytest.raises(DataError, match=r"12 of the 12 training images .* outside \[0, 1\] .*values \d+ to \d+"):
        build(ENTRIES[name]).fit(images["fit"] * 255, epochs=epochs, verbose=0)  # floats in 0-255


def test_serialisation_round_trip(fitted):
    _, detector, _ = fitted
    config = keras.saving.serialize_keras_object(detector)
    clone = keras.saving.deserialize_keras_object(json.loads(json.dumps(config)), safe_mode=True)
    assert type(clone) is type(detector)
    assert clone.get_config() == detector.get_config()


def test_save_and_load_with_safe_mode(fitted, images, tmp_path):
    _, detector, _ = fitted
    detector.save(tmp_path / "detector.keras")
    restored = load(tmp_path / "detector.keras")
    assert detector.fitted and restored.fitted
    with pytest.raises(AdtfError, match="a folder, not a .keras file"):  # the model.keras file inside it was meant
        load(tmp_path)
    assert restored.working_points == detector.working_points and restored.working_point == detector.working_point
    assert_same_outputs(outputs_of(restored, images["test"]), outputs_of(detector, images["test"]))
    damaged = bytearray((tmp_path / "detector.keras").read_bytes())  # bytes flipped by a copy or a disk
    start = damaged.index(b"model.weights.h5") + 4096  # inside that member's data, past its local header
    damaged[start:start + 64] = bytes(b ^ 0xFF for b in damaged[start:start + 64])
    (tmp_path / "damaged.keras").write_bytes(bytes(damaged))
    with pytest.raises(AdtfError, match=r"damaged.keras: the file is damaged \(model.weights.h5 fails its checksum"):
        load(tmp_path / "damaged.keras")


def test_a_model_file_whose_weights_lack_a_part_of_the_network_is_refused_in_one_message(fitted, tmp_path):
    """Keras warns once per nested part that finds no weights (dozens of lines) and, where it then succeeds, leaves
    those parts random: a detector from another version's or a damaged file must not score with them."""
    h5py = pytest.importorskip("h5py")  # Keras' own dependency
    _, detector, _ = fitted
    detector.save(tmp_path / "detector.keras")
    with zipfile.ZipFile(tmp_path / "detector.keras") as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    weights = io.BytesIO(members["model.weights.h5"])
    with h5py.File(weights, "r+") as file:
        names = []
        file.visit(names.append)
        nested = [name for name in names if name.endswith("/layers") and "/" not in name[:-7]]
        if not nested:
            pytest.skip("no nested network in this detector's weights")
        del file[max(nested, key=lambda group: sum(name.startswith(group + "/") for name in names))]  # the backbone
    members["model.weights.h5"] = weights.getvalue()
    with zipfile.ZipFile(tmp_path / "partial.keras", "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    with warnings.catch_warnings(record=True) as caught, pytest.raises(AdtfError, match="partial.keras"):
        warnings.simplefilter("always")
        load(tmp_path / "partial.keras")
    assert not [w for w in caught if "Skipping" in str(w.message)], "Keras' per-layer warnings reached the user"


@pytest.mark.parametrize("options, message", [
    (dict(hidden=float("nan")), "SimpleNet's hidden must be at least 1, got nan"),  # was int()'s ValueError
    (dict(embed_dim=float("inf")), "SimpleNet's embed_dim must be a finite number, got inf"),  # was an OverflowError
    (dict(noise_std=float("inf")), "SimpleNet's noise_std must be a finite number, got inf"),  # was taken
])
def test_options_out_of_range_are_named_from_python_too(options, message):
    with pytest.raises(AdtfError, match=message):
        REGISTRY["simplenet"](**options)


class Killed(Exception):
    pass


class KillAfter(keras.callbacks.Callback):
    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            raise Killed


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_a_killed_fit_resumes_to_the_uninterrupted_state(name, images, tmp_path):
    cls = ENTRIES[name]
    if not build(cls).default_epochs:
        pytest.skip(f"{name} has no gradient training (its fit is one statistics pass)")
    epochs = 3
    uninterrupted = build(cls)
    uninterrupted.fit(images["fit"], epochs=epochs, verbose=0)
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(Killed):
        build(cls).fit(images["fit"], epochs=epochs, verbose=0, callbacks=[backup, KillAfter(2)])
    keras.utils.set_random_seed(123)  # the resumed process starts from other random state
    resumed = cls(**cls.smoke_test_options)
    history = resumed.fit(images["fit"], epochs=epochs, verbose=0,
                          callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))])
    assert len(history.history["loss"]) == 1  # only the third epoch ran again
    assert int(resumed.optimizer.iterations) == int(uninterrupted.optimizer.iterations) > 0
    for before, after in zip(uninterrupted.weights, resumed.weights):
        np.testing.assert_allclose(np.asarray(after), np.asarray(before), rtol=1e-6, atol=1e-7, err_msg=before.path)
    # Every optimizer's state (SimpleNet's adaptor AdamW beside its discriminator Adam), not only .optimizer's.
    optimizer_variables = lambda detector: [v for optimizer, _ in detector.optimizer_parts() for v in optimizer.variables]
    assert len(optimizer_variables(resumed)) == len(optimizer_variables(uninterrupted)) > 0
    for before, after in zip(optimizer_variables(uninterrupted), optimizer_variables(resumed)):
        np.testing.assert_allclose(np.asarray(after), np.asarray(before), rtol=1e-6, atol=1e-7, err_msg=before.path)


def test_a_fit_killed_in_its_statistics_stage_resumes_after_its_last_epoch(images, tmp_path, monkeypatch):
    """Keras' BackupAndRestore deletes its checkpoint when the gradient epochs end, before the statistics stage
    (paper 001's dictionary): a kill there lost every epoch. Detector.fit keeps it until both stages are done."""
    cls = DOUBLES["toy_autoencoder"]
    with monkeypatch.context() as patch, pytest.raises(Killed):
        patch.setattr(cls, "fit_statistics", lambda self, x, verbose=True: (_ for _ in ()).throw(Killed()))
        build(cls).fit(images["fit"], epochs=2, verbose=0,
                       callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))])
    assert (tmp_path / "backup").is_dir()
    history = build(cls).fit(images["fit"], epochs=2, verbose=0,
                             callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))])
    assert history.history.get("loss", []) == [] and not (tmp_path / "backup").exists()  # no epoch trained again


@pytest.mark.parametrize("kill", ["between the weights and the state", "before any checkpoint was due"])
def test_the_runners_backup_resumes_to_the_uninterrupted_state_wherever_the_kill_falls(images, tmp_path, monkeypatch,
                                                                                       kill):
    """Keras' BackupAndRestore writes the weights, then the epoch: a kill between the two resumed one epoch late
    and trained it twice. ResumableBackup names each checkpoint in a state file written last, atomically, and saves
    at most every ``every_seconds``."""
    from adtf import atomic
    from adtf.callbacks import ResumableBackup

    cls, epochs, folder = DOUBLES["toy_autoencoder"], 4, tmp_path / "backup"
    uninterrupted = build(cls)
    losses = uninterrupted.fit(images["fit"], epochs=epochs, verbose=0).history["loss"]
    with monkeypatch.context() as patch, pytest.raises(Killed):
        if kill == "between the weights and the state":
            real = atomic.write_json

            def killed_at_epoch_2(path, obj):
                if obj["epoch"] == 2:
                    raise Killed
                real(path, obj)

            patch.setattr(atomic, "write_json", killed_at_epoch_2)
            build(cls).fit(images["fit"], epochs=epochs, verbose=0, callbacks=[ResumableBackup(folder, every_seconds=0)])
        else:
            build(cls).fit(images["fit"], epochs=epochs, verbose=0,
                           callbacks=[ResumableBackup(folder, every_seconds=1e9), KillAfter(3)])
    keras.utils.set_random_seed(123)
    resumed = build(cls)
    backup = ResumableBackup(folder, every_seconds=0)
    history = resumed.fit(images["fit"], epochs=epochs, verbose=0, callbacks=[backup])
    assert len(history.history["loss"]) == (3 if kill == "between the weights and the state" else 4)
    np.testing.assert_allclose(backup.history["loss"], losses, rtol=1e-5)  # every epoch's, those before the kill too
    # where it resumed, and the training time spent before (the runner's fit_seconds adds it)
    assert backup.resumed_at_epoch == epochs - len(history.history["loss"])
    assert (backup.seconds_before_resume > 0) == (backup.resumed_at_epoch > 0)
    assert int(resumed.optimizer.iterations) == int(uninterrupted.optimizer.iterations)
    for before, after in zip(uninterrupted.weights, resumed.weights):
        np.testing.assert_allclose(np.asarray(after), np.asarray(before), rtol=1e-6, atol=1e-7, err_msg=before.path)
    assert not folder.exists()  # a finished fit deletes its checkpoint


SERVE = textwrap.dedent("""
    import json, sys
    import numpy as np, tensorflow as tf
    served = tf.saved_model.load(sys.argv[1])
    assert "adtf" not in sys.modules and "tensorflow_probability" not in sys.modules
    images = np.load(sys.argv[2])
    out = served.signatures["serving_default"](images=tf.constant(images))
    print(json.dumps({k: np.asarray(v).astype(float).tolist() for k, v in out.items()}))
    """)


def test_savedmodel_matches_keras_in_a_fresh_process(fitted, images, tmp_path):
    _, detector, _ = fitted
    x = images["test"].copy()
    x[-1, 3, 3, 2] = np.nan  # the export must keep NaN safety (the graph optimiser must not undo it)
    x[-2] = x[-2] * 255  # and the range check
    with pytest.warns(UserWarning, match="float images with pixels up to"):  # said of the 0-255 image
        expected = outputs_of(detector, x)
    detector.export(tmp_path / "saved_model")
    np.save(tmp_path / "images.npy", x)
    result = subprocess.run([sys.executable, "-c", SERVE, str(tmp_path / "saved_model"), str(tmp_path / "images.npy")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    served = {k: np.array(v) for k, v in json.loads(result.stdout.strip().splitlines()[-1]).items()}
    assert (served["invalid"][-2:] == 1).all() and (served["anomalous"][-2:] == 1).all()
    valid = {k: v[:-2] for k, v in expected.items()}
    assert_same_outputs({k: v[:-2] for k, v in served.items()}, valid, rtol=1e-4, atol=1e-5)


def test_the_custom_slot_is_not_a_calibrated_working_point(fitted):
    _, detector, _ = fitted
    assert CUSTOM not in detector.working_points


def test_calibration_on_an_invalid_image_names_it(images):
    from adtf.errors import DataError

    detector = build(DOUBLES["toy_autoencoder"])
    detector.fit(images["fit"], epochs=0, verbose=0)
    bad = images["calibrate"].copy()
    bad[2, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match=r"1 calibration images are invalid \(NaN/inf pixels, or pixels outside \[0, 1\]\).*image 2"):
        detector.calibrate(bad, verbose=False)
    # a threshold float32 cannot keep would flag every part (the layer's "never calibrated"), unlike the report's
    before, info = detector.working_points, dict(detector.fit_info)
    points = detector.working_points_from
    detector.working_points_from = lambda outputs: {**points(outputs), detector.working_point_names[0]: {
        "value": 1e39, "score": detector.score_names[0], "rule": "max"}}
    with pytest.raises(AdtfError, match=r"gave thresholds that are no numbers the model can keep \(float32\)"):
        detector.calibrate(images["calibrate"], verbose=False)
    assert detector.working_points == before and detector.fit_info == info


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_a_detector_never_fitted_is_not_calibrated_evaluated_or_exported(name, images, tmp_path):
    """An unfitted detector scores its random weights (or MoN's empty mean): calibrated and exported, it went to
    the line without a word. It says so, and stays so through a save and a load; a fitted one is saved fitted."""
    detector = build(ENTRIES[name])
    with pytest.raises(AdtfError, match=f"this {ENTRIES[name].__name__} is not fitted, so it cannot be used to "
                                        "calibrate working points: call fit"):
        detector.calibrate(images["calibrate"], verbose=False)
    with pytest.raises(AdtfError, match="not fitted, so it cannot be used to score images"):
        detector.score_dataset(images["test"], verbose=False)
    detector.set_working_point(value=1.0)
    with pytest.raises(AdtfError, match="not fitted, so it cannot be used to export a SavedModel"):
        detector.export(tmp_path / "saved_model")
    assert not (tmp_path / "saved_model").exists()
    detector.save(tmp_path / "unfitted.keras")
    assert load(tmp_path / "unfitted.keras").fitted is False


def test_fit_refuses_an_unknown_option_and_epochs_where_nothing_trains(images):
    """A typo (epoch=2) reached Keras' fit only after SimpleNet's feature cache, and nowhere on MoN."""
    toy = build(DOUBLES["toy_autoencoder"])
    with pytest.raises(AdtfError, match="fit\\(\\) has no option 'epoch'; did you mean 'epochs'\\?"):
        toy.fit(images["fit"], epoch=2, verbose=0)
    mon = build(REGISTRY["mon"])
    with pytest.raises(AdtfError, match="ModelOfNormality has no gradient training .* leave epochs out, got 3"):
        mon.fit(images["fit"], epochs=3, verbose=0)
    with pytest.raises(AdtfError, match="has no option 'epoch'"):
        mon.fit(images["fit"], epoch=3, verbose=0)
    assert not toy.fitted and not mon.fitted
    simplenet = build(REGISTRY["simplenet"])  # whose fit caches the backbone's features first
    with pytest.raises(AdtfError, match="has no option 'epoch'"):
        simplenet.fit(images["fit"], epoch=2, verbose=0)
    assert "cache_images" not in simplenet.fit_info  # refused before the cache was built


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_a_detector_built_directly_is_its_offline_preset(name):
    """``SimpleNet()`` or ``PIADE()`` in a notebook must be the configuration that works with the weights at hand,
    not the paper's backbone (whose weights cannot be downloaded offline) nor a mix of the paper's values (tuned to
    its features) and the CPU's (the image size aside: the runner takes it from the data, a direct build from its
    argument). Checked for every registered method."""
    import inspect

    cls = REGISTRY[name]
    defaults = {}  # a subclass's default wins over the one of the base it passes **kwargs to
    for base in reversed(cls.__mro__):
        if "__init__" in vars(base):
            defaults.update({key: p.default for key, p in inspect.signature(base.__init__).parameters.items()
                             if p.default is not inspect.Parameter.empty})
    offline = {key: value for key, value in cls.preset_options("offline").items() if key != "image_size"}
    assert {key: defaults.get(key) for key in offline} == offline


def test_simplenet_trains_at_least_min_steps_however_few_the_images(images):
    """Ten images at batch 8 give 2 steps an epoch: the fast preset's 16 epochs would be 32 steps, which leave the
    discriminator untrained (README, "Few training images"); with no epochs given the fit reaches ``min_steps``,
    while a set large enough trains exactly its epochs, and epochs given explicitly are obeyed."""
    cls = REGISTRY["simplenet"]
    detector = cls(**{**cls.smoke_test_options, "min_steps": 9})  # batch 4, 2 epochs
    assert detector.epochs_for(12) == 3 and detector.epochs_for(4) == 9 and detector.epochs_for(400) == 2
    history = detector.fit(images["fit"], verbose=0)
    assert len(history.history["loss"]) == 3  # 12 images = 3 steps an epoch: 3 epochs reach 9 steps
    assert len(detector.fit(images["fit"], epochs=1, verbose=0).history["loss"]) == 1
    assert cls.preset_options("paper")["min_steps"] == 0  # the paper counts epochs


def test_simplenet_image_context_hands_each_location_its_images_mean(images, tmp_path):
    """With ``image_context`` a location's score depends on the rest of its image (the mean features follow its
    own), without it on its neighbourhood alone; the features' scale then counts the means' spread over images;
    the option trains, saves and loads."""
    import keras

    from adtf.detectors import SimpleNet
    from adtf.detectors.simplenet import FeatureCache

    local = np.random.default_rng(0).normal(size=(2, 4, 5, 16)).astype("float32")
    changed = local.copy()
    changed[:, 3, 4] += 5.0  # a far corner
    for context in (False, True):
        detector = SimpleNet(**{**SimpleNet.smoke_test_options, "weights": None, "image_context": context})
        before, after = (np.asarray(detector.grid_scores(x)) for x in (local, changed))
        assert np.allclose(before[:, :3], after[:, :3]) != context  # the locations the change is not at
    cache = FeatureCache.create(tmp_path)
    cache.append(local.astype(np.float16))
    cache.close()
    values = local.astype(np.float16).astype(np.float64)
    means = np.broadcast_to(values.mean(axis=(1, 2), keepdims=True), values.shape)
    variances, mean_variances = cache.variances()
    assert np.allclose(variances, values.reshape(-1, 16).var(0), rtol=1e-9)
    assert np.allclose(np.concatenate([variances, mean_variances]),
                       np.concatenate([values, means], -1).reshape(-1, 32).var(0), rtol=1e-9)
    cache.remove()
    detector.fit(images["fit"], epochs=1, verbose=0)
    detector.save(tmp_path / "context.keras")
    loaded = keras.saving.load_model(tmp_path / "context.keras", safe_mode=True)
    assert loaded.image_context and np.allclose(loaded.grid_scores(local), detector.grid_scores(local), atol=1e-6)


def test_simplenet_scales_each_dimension_and_scores_the_map_where_asked(images, tmp_path):
    """``per_dimension_scale`` brings every dimension of the training features to one spread (the context's means
    scaled with them), ``image_score="map"`` scores an image by its smoothed map's maximum; both train, save and
    load, and a contradiction or an unknown score is refused by name."""
    import keras

    from adtf.detectors import SimpleNet
    from adtf.errors import AdtfError

    options = {**SimpleNet.smoke_test_options, "weights": None, "image_context": True}
    detector = SimpleNet(**options, per_dimension_scale=True, image_score="map")
    detector.fit(images["fit"], epochs=1, verbose=0)
    local = np.concatenate([np.asarray(detector.fast_local_features(images["fit"][i:i + 4])) for i in (0, 4, 8)])
    scaled = np.asarray(detector.scaled(local)).reshape(-1, detector.feature_dim) / float(detector.feature_gain)
    assert np.allclose(scaled[:, :detector.embed_dim].std(0), 1.0, rtol=0.02)  # each dimension at one spread
    assert float(detector.feature_gain) > 1.0  # the means vary less than the locations: the gain counts them
    outputs = detector.head(local)
    assert np.allclose(outputs["score"], np.max(outputs["anomaly_map"], axis=(1, 2)))
    detector.save(tmp_path / "scaled.keras")
    loaded = keras.saving.load_model(tmp_path / "scaled.keras", safe_mode=True)
    assert loaded.per_dimension_scale and loaded.image_score == "map"
    assert np.allclose(loaded.head(local)["score"], outputs["score"], atol=1e-6)
    assert SimpleNet(**options).dimension_gain is None  # off: saved detectors hold the weights they always did
    with pytest.raises(AdtfError, match="normalize_features"):
        SimpleNet(**options, per_dimension_scale=True, normalize_features=False)
    with pytest.raises(AdtfError, match="'maximum'"):
        SimpleNet(**options, image_score="maximum")


def test_simplenet_sizes_align_its_three_levels():
    """Each side a multiple of 32, so the stride-32 level's cells tile exactly the stride-8 grid they are
    interpolated onto (MTD's median tile, 326x270, was fed at 320x272: 9 coarse cells over 34 fine ones)."""
    from adtf.data import AnomalyDataset
    from adtf.detectors import SimpleNet
    from adtf.run import data_image_size

    tiles = AnomalyDataset("demo", [], [], has_masks=False, arrays=np.zeros((1, 326, 270), "uint8"))
    assert data_image_size(tiles, SimpleNet.image_size_range, SimpleNet.image_size_multiple)[0] == (320, 256)


def test_simplenet_warns_when_a_hand_set_size_misaligns_its_levels():
    """A side no multiple of the deepest tap's stride stretches that level's grid onto the finest one, off by up to
    half a stride; the data-chosen sizes are multiples, a size given by hand is checked."""
    from adtf.detectors import SimpleNet

    options = dict(SimpleNet.smoke_test_options, weights=None)  # taps at strides 4 and 8
    with pytest.warns(UserWarning, match=r"36x36 is not a multiple of its deepest tap's stride \(8\).*32x32"):
        SimpleNet(**{**options, "image_size": (36, 36)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SimpleNet(**{**options, "image_size": (40, 32)})


def test_simplenet_crop_sees_the_centre_as_the_authors_code_cuts_it(images, monkeypatch):
    """The paper preset resizes to 329 and feeds the centre 288 (the authors' run.sh): with a crop, the detector
    scores what the same detector without one scores on the centre (torchvision's CenterCrop), the map outside
    the crop is the image's lowest value, and the pixel metrics score the crop alone."""
    from adtf.detectors import SimpleNet

    assert SimpleNet.preset_options("paper")["image_size"] == (329, 329) and SimpleNet.preset_options("paper")["crop"] == (288, 288)
    options = dict(SimpleNet.smoke_test_options, weights=None)
    keras.utils.set_random_seed(0)
    cropping = SimpleNet(**{**options, "image_size": (40, 40), "crop": (32, 32)})
    cropping.fit(np.pad(images["fit"], [[0, 0], [4, 4], [4, 4], [0, 0]], mode="reflect"), epochs=1, verbose=0)
    plain = SimpleNet(**{**options, "image_size": (32, 32)})
    plain.set_weights(cropping.get_weights())
    framed = np.pad(images["test"], [[0, 0], [4, 4], [4, 4], [0, 0]], constant_values=0.5)
    got, expected = cropping.infer(framed), plain.infer(images["test"])
    np.testing.assert_allclose(got["score"], expected["score"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["anomaly_map"][:, 4:36, 4:36], expected["anomaly_map"], rtol=1e-5, atol=1e-6)
    border = got["anomaly_map"].copy()
    border[:, 4:36, 4:36] = np.nan
    lowest = expected["anomaly_map"].min(axis=(1, 2))
    assert np.allclose(np.nanmax(border, axis=(1, 2)), lowest) and np.allclose(np.nanmin(border, axis=(1, 2)), lowest)
    assert cropping.scored_region == (4, 4, 32, 32) and plain.scored_region is None
    # torchvision's offset is int(round((side - cut) / 2)), half to even: 43 px over -> 22, 41 -> 20
    assert SimpleNet(**{**options, "image_size": (75, 73), "crop": (32, 32)}).scored_region == (22, 20, 32, 32)
    # at twice the input's size (a caller's own validation pipeline) the same share: rows 8-72 of 80, not 4-36
    assert cropping.scored_part(np.zeros((1, 80, 80))).shape == (1, 64, 64)
    assert cropping.scored_part(np.arange(80.0)[None, :, None] * np.ones((1, 80, 80)))[0, 0, 0] == 8
    from adtf import evaluate, metrics

    scored = []
    monkeypatch.setattr(metrics, "pixel_auroc", lambda masks, maps: scored.append((masks.shape, maps.shape)) or 0.5)
    monkeypatch.setattr(metrics, "aupro", lambda masks, maps: 0.5)
    cropping.calibrate(np.pad(images["calibrate"], [[0, 0], [4, 4], [4, 4], [0, 0]], mode="reflect"), verbose=0)
    evaluate.evaluate(cropping, data.load("synthetic:brick", size=40, n_train=2, n_test_good=2, n_test_defect=2),
                      verbose=False)
    assert [shapes[0][1:] for shapes in scored] == [(32, 32)] and scored[0][0] == scored[0][1]
    with pytest.raises(AdtfError, match="crop"):
        SimpleNet(**{**options, "image_size": (32, 32), "crop": (40, 40)})


def test_the_runner_says_why_few_images_train_more_epochs_than_the_preset(tmp_path, caplog, monkeypatch):
    """A new user saw "160 epochs" for the fast preset's 16 and nothing saying why."""
    import logging

    from adtf.run import fit_evaluate_export

    cls = REGISTRY["simplenet"]
    monkeypatch.setattr(logging.getLogger("adtf"), "propagate", True)
    with caplog.at_level("INFO", logger="adtf"):
        fit_evaluate_export("simplenet", "synthetic:grass,size=32,n_train=10,n_test_good=4,n_test_defect=2",
                            out=tmp_path / "run", detector={**cls.smoke_test_options, "min_steps": 9}, export=False,
                            verbose=False)
    assert ("8 normal images (the other 2 are held out to calibrate), 5 epochs (not 2: raised so that so few images "
            "still train 9 steps") in caplog.text


def test_evaluating_a_dataset_without_test_images_says_so(images, tmp_path):
    """A folder of good parts alone reached the pipeline's "no samples given", which named nothing."""
    from PIL import Image

    from adtf.evaluate import evaluate

    for i in range(3):
        Image.fromarray((images["fit"][i] * 255).astype(np.uint8)).save(tmp_path / f"good{i}.png")
    detector = build(DOUBLES["toy_autoencoder"])
    detector.fit(images["fit"], epochs=0, verbose=0)
    with pytest.raises(AdtfError, match=r"has no test images to evaluate; give a dataset with test images"):
        evaluate(detector, data.load(f"folder:{tmp_path}"), tmp_path / "report", verbose=False)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_a_misspelt_option_is_named_with_the_options_there_are(name):
    """Keras' "Unrecognized keyword arguments" named the typo but not what the detector takes."""
    cls = ENTRIES[name]
    with pytest.raises(AdtfError, match=rf"{cls.__name__} has no option 'imag_size'; did you mean 'image_size'\? "
                                        r"\(its options: .*image_size.*seed"):
        cls(imag_size=(32, 32))


def test_a_list_of_images_of_several_sizes_is_named():
    from adtf.detectors.base import as_images
    from adtf.errors import DataError

    with pytest.raises(DataError, match=r"a list of images of 2 shapes \(\(60, 80, 3\), \(64, 64, 3\)\): a batch is one"):
        as_images([np.zeros((64, 64, 3), "uint8"), np.zeros((60, 80, 3), "uint8")])
    assert tuple(as_images([np.zeros((64, 64, 3), "uint8")] * 2).shape) == (2, 64, 64, 3)


def test_what_is_not_pixels_is_named_when_a_detector_is_called():
    """Keras' own errors said nothing of what to pass: "Only input tensors may be passed as positional arguments" for
    a path or a PIL image, a TypeError about TensorShapes for a list of images of two sizes; int64 pixels (numpy's
    default integer) came back invalid one and all, unsaid."""
    from PIL import Image

    from adtf.errors import DataError

    detector = build(DOUBLES["toy_autoencoder"])
    for given, said in [("part.png", "not paths: read files with adtf.data.pipeline"),
                        ([Path("a.png"), Path("b.png")], "not paths"),
                        (Image.new("RGB", (32, 32)), r"not PIL images: np.asarray\(image\)\[None\]"),
                        ([np.zeros((32, 32, 3), "uint8"), np.zeros((30, 32, 3), "uint8")], "a list of images of 2 shapes"),
                        (np.zeros((1, 32, 32, 3), "int64"), r"images of dtype int64: adtf takes uint8 \(0-255\)"),
                        (np.zeros((1, 32, 32, 3), bool), "images of dtype bool"),
                        (np.zeros((1, 0, 32, 3), "float32"), r"an image 0 pixels high and 32 wide has no pixels")]:
        with pytest.raises(DataError, match=said):
            detector(given)
    assert detector([np.zeros((32, 32, 3), "uint8")] * 2)["score"].shape == (2,)


def test_float_pixels_in_0_255_are_said_to_come_back_invalid(images):
    """Every such image is invalid (+inf), by the contract; handed over directly, that went unsaid."""
    detector = build(DOUBLES["toy_autoencoder"])
    with pytest.warns(UserWarning, match=r"float images with pixels up to \d+: adtf takes float pixels in \[0, 1\]"):
        out = detector(images["test"] * 255, training=False)
    assert np.asarray(out["invalid"]).all()
    with pytest.warns(UserWarning, match=r"pixels up to 1.05: .* invalid \(\+inf\); clip them to \[0, 1\]"):
        detector(np.clip(images["test"] * 1.5, 0, 1.05), training=False)  # a resize's overshoot, not 0-255
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        detector(images["test"], training=False)  # [0, 1]: nothing to say
