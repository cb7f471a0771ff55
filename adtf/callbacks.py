"""Keras callbacks for training detectors: validation AUROC (monitoring only), timing,
and the epoch-seeded shuffle that makes a resumed fit equal to an uninterrupted one.

For resuming interrupted training use ``ResumableBackup`` (the runner does) or ``keras.callbacks.BackupAndRestore``
(``Detector.fit`` builds the model and every optimizer first, so that either restores all of them).
"""
import json
import logging
import os
import sys
import time
from pathlib import Path

import keras
import numpy as np

from adtf import metrics
from adtf.data.pipeline import unpack_batch
from adtf.errors import AdtfError, DataError, raise_if_stopped, unfilled_layers_refused


class ValidationAUROC(keras.callbacks.Callback):
    """Exact image (and pixel) AUROC of a detector on labelled validation data.

    Every ``every`` epochs the detector scores ``validation_data`` and the callback
    writes ``logs["val_image_auroc"]`` and, when the masks hold defect pixels and
    ``pixel`` is on, ``logs["val_pixel_auroc"]`` (``adtf.metrics``, scikit-learn
    exact). Epochs in between get no entry.

    It is for **monitoring only**: a curve to look at (History, TensorBoard, the report's
    AUROC-per-epoch plot). Never feed its keys to ``EarlyStopping`` or a
    ``ModelCheckpoint(save_best_only=True)``: choosing an epoch by an AUROC measured on
    labelled anomalies is model selection on test data, and the number it selects is no
    longer an honest estimate. adtf's runner reports the last epoch.

    ``keras.metrics.AUC`` is not a substitute: it bins predictions on a fixed grid of
    thresholds in [0, 1] (200 by default), so unbounded anomaly scores (distances,
    reconstruction errors) pile up in its end bins and its AUC is wrong.

    Args:
        validation_data: ``tf.data.Dataset`` of ``(image, label, mask, path)`` batches
            (adtf.data's element format) with normal and anomalous images.
        detector: the model to score with, whose call returns a dict with ``"score"``
            ``[B]`` and ``"anomaly_map"`` ``[B, H, W]``; default the model being fitted.
        every: evaluate after every this many epochs.
        pixel: also compute pixel AUROC (keeps the validation maps in memory).

    Example:
    >>> detector.fit(train_ds, epochs=20, callbacks=[ValidationAUROC(val_ds, every=5)])
    >>> history.history["val_image_auroc"]
    """

    def __init__(self, validation_data, detector=None, every=1, pixel=True):
        super().__init__()
        if int(every) < 1:
            raise DataError(f"ValidationAUROC: every must be a positive number of epochs, got {every}")
        self.validation_data, self.detector, self.every, self.pixel = validation_data, detector, int(every), pixel

    def evaluate(self):
        """``{"val_image_auroc": ..., ["val_pixel_auroc": ...]}`` of the detector now."""
        detector = self.detector or self.model
        labels, scores, masks, maps = [], [], [], []
        for batch in self.validation_data:
            images, label, mask, _ = unpack_batch(batch)
            if label is None:
                raise DataError("ValidationAUROC needs labelled batches: (image, label, mask, path) as adtf.data yields them")
            outputs = detector(images, training=False)
            if not isinstance(outputs, dict) or "score" not in outputs:
                raise AdtfError(f"ValidationAUROC: {detector.name} must return a dict with 'score' and 'anomaly_map'")
            labels.append(keras.ops.convert_to_numpy(label).reshape(-1))
            scores.append(keras.ops.convert_to_numpy(outputs["score"]).reshape(-1))
            if self.pixel and mask is not None:
                scored = getattr(detector, "scored_part", lambda pixels: pixels)  # a crop: as evaluate scores it
                masks.append(scored(keras.ops.convert_to_numpy(mask)))
                maps.append(scored(keras.ops.convert_to_numpy(outputs["anomaly_map"])))
        if not labels:
            raise DataError("ValidationAUROC: the validation dataset is empty")
        results = {"val_image_auroc": metrics.image_auroc(np.concatenate(labels), np.concatenate(scores))}
        if masks and any((m > 0.5).any() for m in masks):
            results["val_pixel_auroc"] = metrics.pixel_auroc(np.concatenate(masks), np.concatenate(maps))
        return results

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0 and logs is not None:
            logs.update(self.evaluate())


class ResumableBackup(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` that a kill at any instant leaves resuming to the uninterrupted state, writing at most
    one checkpoint every ``every_seconds`` (and always after the last epoch).

    Keras writes the weights and then the epoch number to two files: a kill between the two resumed with one
    epoch's weights and the previous epoch's number, and trained that epoch twice (another model than an
    uninterrupted fit). Here each checkpoint is a new weights file, and ``state.json``, which names it and its
    epoch, is replaced atomically once the file is whole; the older file goes only then. Keras also writes the
    whole model, frozen backbone included, after every epoch: a set of 2 images trains hundreds of one-step epochs
    (SimpleNet's ``min_steps``) and spent most of its fit writing checkpoints. A kill now costs at most
    ``every_seconds`` of training.

    ``history`` holds every epoch's logs, those before a resume too (Keras' ``History`` has only the epochs run since):
    put this callback after those that add to the logs. ``resumed_at_epoch`` is the epoch a resumed fit started from
    (0 for a fresh one) and ``seconds_before_resume`` the training time the earlier runs spent reaching it.
    """

    def __init__(self, backup_dir, every_seconds=30.0, delete_checkpoint=True):
        super().__init__(str(backup_dir), delete_checkpoint=delete_checkpoint)
        self.every_seconds = float(every_seconds)
        self._state_path = Path(backup_dir) / "state.json"
        self._saved_at = self._began_at = time.monotonic()
        self.history, self.resumed_at_epoch, self.seconds_before_resume = {}, 0, 0.0

    def on_train_begin(self, logs=None):
        self._saved_at = self._began_at = time.monotonic()
        self.history, self.resumed_at_epoch, self.seconds_before_resume = {}, 0, 0.0
        if not self._state_path.is_file():
            return

        def unreadable(reason):
            return AdtfError(f"the interrupted fit's checkpoint in {self._state_path.parent} cannot be read "
                             f"({reason}): delete that folder to fit from the start")

        try:  # a checkpoint cut short (a full disk, a copy interrupted): named, with the way out
            state = json.loads(self._state_path.read_text())
            weights = self._state_path.parent / state["weights"]
            self.history = state.get("history", {})
            self.resumed_at_epoch, self.seconds_before_resume = int(state["epoch"]), float(state.get("fit_seconds", 0.0))
            if self.model.optimizer is not None and not self.model.optimizer.built:
                self.model.optimizer.build(self.model.trainable_variables)
            with unfilled_layers_refused(unreadable):
                self.model.load_weights(str(weights))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise unreadable(f"{type(err).__name__}: {err}") from None
        self.model._initial_epoch = int(state["epoch"])  # what Keras' own BackupAndRestore sets for fit to read
        logging.getLogger("adtf").info(f"      resuming the interrupted fit after epoch {self.resumed_at_epoch} of "
                                       f"{self.params.get('epochs', '?')} ({self._state_path.parent})")

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        if epoch + 1 >= self.params.get("epochs", epoch + 1) or time.monotonic() - self._saved_at >= self.every_seconds:
            self._save(epoch + 1)

    def on_train_batch_end(self, batch, logs=None):
        pass  # saved by epoch only

    def _save(self, epochs_done):
        from adtf.atomic import atomic_path, write_json

        folder = self._state_path.parent
        folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epochs_done}.weights.h5"
        with atomic_path(folder / name) as tmp:  # a full disk leaves no truncated file behind
            try:
                self.model.save_weights(str(tmp), overwrite=True)
            except OSError:
                _close_the_file_h5py_left_open(tmp)
                raise
        seconds = self.seconds_before_resume + time.monotonic() - self._began_at
        write_json(self._state_path, {"epoch": epochs_done, "weights": name, "history": self.history,
                                      "fit_seconds": seconds})
        for older in folder.glob("epoch-*.weights.h5"):
            if older.name != name:
                older.unlink(missing_ok=True)
        self._saved_at = time.monotonic()


def _close_the_file_h5py_left_open(path):
    """Keras leaves its HDF5 file open when a write fails (a full disk), and h5py's clean-up of it at exit crashed
    the process (a segmentation fault after adtf's message): its last flush fails again. That file, a temporary one
    and no other, is emptied first, which frees the space that flush needs, and closed while the error is handled."""
    import h5py

    for file_id in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE):
        try:
            if os.fsdecode(h5py.h5f.get_name(file_id)) == str(path):
                os.ftruncate(file_id.get_vfd_handle(), 0)
                file_id.close()
        except Exception:  # nothing more to do for a file that is being removed
            pass


class Timing(keras.callbacks.Callback):
    """Wall-clock seconds into the logs: ``epoch_seconds`` and mean ``step_seconds`` of training.

    ``epoch_seconds`` runs from the epoch's start to this callback's ``on_epoch_end``
    (so it includes Keras' validation); ``step_seconds`` is the training part divided
    by the number of steps.

    Example:
    >>> history = model.fit(ds, epochs=3, callbacks=[Timing()])
    >>> history.history["step_seconds"]
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._start = self._train_end = time.perf_counter()
        self._steps = 0

    def on_train_batch_end(self, batch, logs=None):
        # `batch` is the index of the last step run (several per call with steps_per_execution).
        self._steps, self._train_end = batch + 1, time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs["epoch_seconds"] = time.perf_counter() - self._start
        if self._steps:
            logs["step_seconds"] = (self._train_end - self._start) / self._steps


class EpochProgress(keras.callbacks.Callback):
    """One bar over the epochs, with the last epoch's losses, in place of Keras' two lines per epoch: a 2-image fit
    that ``min_steps`` raises to 320 epochs of one step each printed 640 lines.

    Example:
    >>> model.fit(ds, epochs=320, verbose=0, callbacks=[EpochProgress(320)])
    """

    def __init__(self, epochs):
        super().__init__()
        self.epochs, self._bar = epochs, None

    def on_train_begin(self, logs=None):
        self._close()  # a fit that raised left its bar open (the next fit of a bench)

    def on_epoch_begin(self, epoch, logs=None):
        from tqdm.auto import tqdm

        if self._bar is None:  # made at the first epoch run: a resumed fit's bar starts there, its rate from there
            self._bar = tqdm(total=self.epochs, initial=epoch, desc="training", unit="epoch", leave=True,
                             mininterval=1 if sys.stderr.isatty() else 30)  # a log file: a line every 30 s

    def on_epoch_end(self, epoch, logs=None):
        losses = {k: f"{v:.4g}" for k, v in (logs or {}).items() if "loss" in k and isinstance(v, (int, float))}
        self._bar.set_postfix(losses, refresh=False)
        self._bar.update(epoch + 1 - self._bar.n)

    def on_train_end(self, logs=None):
        self._close()

    def _close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class StopWhenTerminated(keras.callbacks.Callback):
    """Ends a fit at the next epoch's end once SIGTERM or Ctrl-C was received (``adtf.errors.TERMINATED``,
    ``INTERRUPTED``): the handler's own exception is lost where it lands in a finalizer. At the epoch's end, not each
    batch's: a batch hook would make Keras wait for every step's logs."""

    def on_epoch_end(self, epoch, logs=None):
        raise_if_stopped()


class ShuffleByEpoch(keras.callbacks.Callback):
    """Shuffle a dataset afresh each epoch, in an order fixed by ``(seed, epoch)`` alone.

    ``Dataset.shuffle(reshuffle_each_iteration=True)`` draws each epoch's order from a
    generator whose state is not checkpointed, so a fit resumed by ``BackupAndRestore``
    would see other batches than an uninterrupted one. Here the epoch number lives in a
    variable that ``on_epoch_begin`` sets (Keras makes the epoch's iterator after that),
    and each block of ``block_size`` elements is permuted by a stateless random draw of
    ``(seed, epoch, block)``. A dataset of up to ``block_size`` elements is fully shuffled;
    a larger one is shuffled within consecutive blocks of that many.

    Example:
    >>> shuffle = ShuffleByEpoch(seed=0)
    >>> model.fit(shuffle.apply(images, block_size=256).batch(8), epochs=4, callbacks=[shuffle])
    """

    def __init__(self, seed=0):
        super().__init__()
        import tensorflow as tf

        self.seed = int(seed)
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="shuffle_epoch")

    def apply(self, dataset, block_size):
        """``dataset`` (unbatched elements) reshuffled per epoch, in blocks of ``block_size``."""
        import tensorflow as tf

        def permuted(block_index, block):
            seed = tf.stack([tf.constant(self.seed, tf.int64) * 1_000_003 + block_index, self.epoch])
            order = tf.argsort(tf.random.stateless_uniform(tf.shape(block)[:1], seed=seed))
            return tf.gather(block, order)

        return dataset.batch(int(block_size)).enumerate().map(permuted).unbatch()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch.assign(epoch)


class ReconstructionImages(keras.callbacks.Callback):
    """TensorBoard images of an autoencoder's reconstructions, input beside output, after each epoch.

    Args:
        images: ``{tag: [N, H, W, 3] images in [0, 1]}``, e.g. a few normal and anomalous test images
            (shown, never used to train or to choose anything).
        log_dir: the TensorBoard folder (``reconstructions`` is written under it).
        every: every this many epochs.

    Example:
    >>> model.fit(ds, epochs=10, callbacks=[ReconstructionImages({"normal": normal[:4]}, "runs/x/tensorboard")])
    """

    def __init__(self, images, log_dir, every=1):
        super().__init__()
        self.images, self.log_dir, self.every = images, str(log_dir), int(every)
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        if (epoch + 1) % self.every:
            return
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(f"{self.log_dir}/reconstructions")
        with self._writer.as_default():
            for tag, images in self.images.items():
                inputs = self.model.resized(images)
                output, _ = self.model.reconstruct(inputs, training=False)
                tf.summary.image(f"{tag} (input | reconstruction)", tf.concat([inputs, output], axis=2), step=epoch,
                                 max_outputs=len(images))
        self._writer.flush()
