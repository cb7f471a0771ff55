"""Test doubles for the detector contract: the two shapes of trained method adtf must carry.

- ``ConvAutoencoder``: one optimizer, Keras' own ``train_step`` with a ``compute_loss``
  override; the image score is its reconstruction error (the pyramidal AEs' shape).
- ``SimpleNetShaped``: a frozen feature map, a trainable adaptor and a discriminator with
  batch norm, Gaussian noise drawn inside a custom ``train_step``, and two optimizers
  (AdamW for the adaptor, Adam for the discriminator), as in paper 004.

Neither is in ``adtf.detectors.REGISTRY``; the contract tests add them next to its entries.
"""
import enum

import keras
import tensorflow as tf
from keras import layers, ops

from adtf.detectors.base import Detector


class Preset(str, enum.Enum):
    FAST = "fast"


@keras.saving.register_keras_serializable("adtf_tests")
class ConvAutoencoder(Detector):
    """A small convolutional autoencoder: score = mean squared reconstruction error."""

    default_epochs = 2
    default_batch_size = 4
    Preset = Preset
    presets = {Preset.FAST: dict(image_size=(32, 32), width=8)}
    smoke_test_options = dict(image_size=(32, 32), width=8)

    def __init__(self, image_size: tuple[int, int] = (32, 32), width: int = 8, **kwargs):
        super().__init__(image_size=image_size, **kwargs)
        self.width = int(width)
        self.encoder = keras.Sequential([layers.Conv2D(width, 3, strides=2, padding="same", activation="relu"),
                                         layers.Conv2D(width, 3, strides=2, padding="same", activation="relu")],
                                        name="encoder")
        self.decoder = keras.Sequential([layers.Conv2DTranspose(width, 3, strides=2, padding="same", activation="relu"),
                                         layers.Conv2DTranspose(3, 3, strides=2, padding="same", activation="sigmoid")],
                                        name="decoder")

    def detect(self, images, training=False):
        reconstruction = self.decoder(self.encoder(images, training=training), training=training)
        error_map = ops.mean(ops.square(images - reconstruction), axis=-1)
        return {"score": ops.mean(error_map, axis=(1, 2)), "anomaly_map": error_map}

    def compile(self, learning_rate: float = 1e-3, **kwargs):
        super().compile(optimizer=keras.optimizers.Adam(learning_rate), **kwargs)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return ops.mean(y_pred["score"])

    def get_config(self):
        return {**super().get_config(), "width": self.width}


@keras.saving.register_keras_serializable("adtf_tests")
class SimpleNetShaped(Detector):
    """Frozen features -> adaptor -> discriminator on adapted and noised features; score = max(-D)."""

    default_epochs = 3
    default_batch_size = 4
    smoke_test_options = dict(image_size=(32, 32), channels=8)

    def __init__(self, image_size: tuple[int, int] = (32, 32), channels: int = 8, noise_std: float = 0.015,
                 **kwargs):
        super().__init__(image_size=image_size, **kwargs)
        self.channels, self.noise_std = int(channels), float(noise_std)
        self.features = layers.Conv2D(channels, 4, strides=4, name="features", trainable=False)
        self.adaptor = layers.Dense(channels, name="adaptor")
        self.discriminator = keras.Sequential([
            layers.Dense(16), layers.BatchNormalization(momentum=0.9, epsilon=1e-5), layers.LeakyReLU(0.2),
            layers.Dense(1, use_bias=False)], name="discriminator")
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def adapted(self, images, training=False):
        return self.adaptor(self.features(images))

    def detect(self, images, training=False):
        anomaly_map = -self.discriminator(self.adapted(images), training=training)[..., 0]
        return {"score": ops.max(anomaly_map, axis=(1, 2)), "anomaly_map": anomaly_map}

    def compile(self, adaptor_learning_rate: float = 1e-4, adaptor_weight_decay: float = 1e-2,
                discriminator_learning_rate: float = 2e-4, **kwargs):
        self.adaptor_optimizer = keras.optimizers.AdamW(adaptor_learning_rate, weight_decay=adaptor_weight_decay)
        self.discriminator_optimizer = keras.optimizers.Adam(discriminator_learning_rate)
        super().compile(optimizer=self.discriminator_optimizer, **kwargs)

    def optimizer_parts(self):
        return [(self.adaptor_optimizer, self.adaptor), (self.discriminator_optimizer, self.discriminator)]

    @property
    def metrics(self):
        return [self.loss_tracker]

    def train_step(self, images):
        with tf.GradientTape() as tape:
            normal = self.adapted(images, training=True)
            # Noise from (seed, step): the step count is saved with the optimizer, so a resumed fit
            # draws the same noise (a SeedGenerator's state is not in the checkpoint).
            step_seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(self.optimizer.iterations, tf.int64)])
            fake = normal + self.noise_std * tf.random.stateless_normal(tf.shape(normal), seed=step_seed)
            scores = self.discriminator(ops.concatenate([normal, fake], axis=0), training=True)[..., 0]
            true_scores, fake_scores = ops.split(scores, 2, axis=0)
            loss = ops.mean(ops.relu(0.5 - true_scores)) + ops.mean(ops.relu(0.5 + fake_scores))
        adaptor_vars, discriminator_vars = self.adaptor.trainable_variables, self.discriminator.trainable_variables
        gradients = tape.gradient(loss, adaptor_vars + discriminator_vars)
        self.adaptor_optimizer.apply(gradients[: len(adaptor_vars)], adaptor_vars)
        self.discriminator_optimizer.apply(gradients[len(adaptor_vars):], discriminator_vars)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "noise_std": self.noise_std}


DOUBLES = {"toy_autoencoder": ConvAutoencoder, "toy_simplenet": SimpleNetShaped}
