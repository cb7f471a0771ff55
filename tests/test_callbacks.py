"""adtf.callbacks inside a real model.fit of a tiny detector-shaped model."""
import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from adtf.callbacks import Timing, ValidationAUROC
from adtf.errors import DataError


class TinyDetector(keras.Model):
    """Keeps the detector contract: call returns ``score`` [B] and ``anomaly_map`` [B, H, W]."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(1, 3, padding="same")

    def call(self, images, training=False):
        anomaly_map = self.conv(images)[..., 0]
        return {"score": keras.ops.max(anomaly_map, axis=(1, 2)), "anomaly_map": anomaly_map}


def validation_set(n=16, size=8, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((n, size, size, 1)).astype("float32")
    labels = np.arange(n) % 2
    masks = (rng.random((n, size, size, 1)) > 0.7).astype("float32") * labels[:, None, None, None]
    images += masks  # defects are bright, so the AUROCs are not all ~0.5
    paths = [f"img_{i}.png" for i in range(n)]
    return images, labels, masks, tf.data.Dataset.from_tensor_slices((images, labels, masks, paths)).batch(5)


def fit(callbacks, epochs=2):
    keras.utils.set_random_seed(0)
    model = TinyDetector()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss={"score": "mse"})
    x = np.random.default_rng(1).random((12, 8, 8, 1)).astype("float32")
    history = model.fit(x, {"score": np.zeros(12, "float32")}, batch_size=4, epochs=epochs, verbose=0,
                        callbacks=callbacks)
    return model, history


def test_validation_auroc_lands_in_history_and_equals_sklearn():
    images, labels, masks, dataset = validation_set()
    model, history = fit([ValidationAUROC(dataset)], epochs=2)
    assert len(history.history["val_image_auroc"]) == len(history.history["val_pixel_auroc"]) == 2
    outputs = model(images, training=False)  # the weights the last on_epoch_end saw
    expected_image = roc_auc_score(labels, np.asarray(outputs["score"]))
    expected_pixel = roc_auc_score(masks.ravel(), np.asarray(outputs["anomaly_map"]).ravel())
    assert history.history["val_image_auroc"][-1] == pytest.approx(expected_image, abs=1e-12)
    assert history.history["val_pixel_auroc"][-1] == pytest.approx(expected_pixel, abs=1e-9)


def test_every_skips_epochs_and_timing_fills_logs():
    *_, dataset = validation_set()
    _, history = fit([ValidationAUROC(dataset, every=2, pixel=False), Timing()], epochs=3)
    assert len(history.history["val_image_auroc"]) == 1  # after epoch 2 only
    assert "val_pixel_auroc" not in history.history
    assert len(history.history["epoch_seconds"]) == len(history.history["step_seconds"]) == 3
    for epoch, step in zip(history.history["epoch_seconds"], history.history["step_seconds"]):
        assert 0 < step * 3 <= epoch  # 12 samples / batch 4 = 3 steps per epoch


def test_explicit_detector_and_unusable_validation_data():
    images, labels, masks, _ = validation_set()
    detector = TinyDetector()
    one_class = tf.data.Dataset.from_tensor_slices((images, np.zeros_like(labels), masks, ["p"] * 16)).batch(8)
    with pytest.raises(DataError, match="one class"):
        ValidationAUROC(one_class, detector=detector).evaluate()
    with pytest.raises(DataError, match="empty"):
        ValidationAUROC(one_class.take(0), detector=detector).evaluate()
    with pytest.raises(DataError, match="every"):
        ValidationAUROC(one_class, every=0)


def test_keras_auc_metric_is_wrong_for_unbounded_scores():
    # Why the callback exists: keras.metrics.AUC bins scores on [0, 1]; distances above 1 all share a bin.
    labels, scores = np.array([0, 0, 1, 1]), np.array([2.0, 3.0, 4.0, 5.0])
    keras_auc = keras.metrics.AUC()
    keras_auc.update_state(labels, scores)
    assert roc_auc_score(labels, scores) == 1.0
    assert float(keras_auc.result()) == pytest.approx(0.5)


def test_epoch_progress_starts_where_a_resumed_fit_starts():
    """A fit resumed at epoch 5 of 10: its bar starts at 5, so that its rate counts only the epochs trained now."""
    from adtf.callbacks import EpochProgress

    progress = EpochProgress(10)
    progress.on_train_begin()
    progress.on_epoch_begin(5)
    assert progress._bar.n == 5
    progress.on_epoch_end(5, {"loss": 0.25, "epoch_seconds": 1.0})
    assert progress._bar.n == 6 and progress._bar.postfix == "loss=0.25"
    progress.on_train_end()
    assert progress._bar is None


def test_a_checkpoint_that_could_not_be_written_leaves_no_file_open_or_behind(tmp_path, monkeypatch):
    """On a full disk Keras left its HDF5 file open and cut short: h5py's clean-up at exit then crashed the process
    (a segmentation fault after adtf's message). A user's own open HDF5 file is left alone."""
    import h5py

    from adtf.callbacks import ResumableBackup

    theirs = h5py.File(tmp_path / "theirs.h5", "w")
    theirs["kept"] = np.arange(3)

    def full_disk(self, path, overwrite=True):
        h5py.File(path, "w")["weights"] = np.zeros(1000)  # opened, partly written, never closed: as Keras leaves it
        raise OSError(f"Can't synchronously write data (file write failed: filename = '{path}', errno = 28, error "
                      "message = 'No space left on device')")

    monkeypatch.setattr(TinyDetector, "save_weights", full_disk)
    backup = tmp_path / "backup"
    with pytest.raises(OSError) as caught:
        fit([ResumableBackup(backup, every_seconds=0)], epochs=1)
    assert caught.value.strerror == "No space left on device"
    assert caught.value.filename == str(backup / "epoch-1.weights.h5")
    open_files = [h5py.h5f.get_name(f).decode() for f in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE)]
    assert open_files == [str(tmp_path / "theirs.h5")]
    assert list(theirs["kept"][:]) == [0, 1, 2]
    theirs.close()
    left = [p.name for p in backup.iterdir()]
    assert not [name for name in left if name.endswith(".h5") or name.startswith(".") or name == "state.json"], left
