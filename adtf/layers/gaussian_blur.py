"""GaussianBlur: scipy.ndimage.gaussian_filter on 2-D maps, inside the graph."""
import keras
import numpy as np


@keras.saving.register_keras_serializable("adtf")
class GaussianBlur(keras.layers.Layer):
    """Gaussian smoothing of ``[B, H, W]`` maps, as ``scipy.ndimage.gaussian_filter(map, sigma)`` does it.

    A separable kernel of radius ``int(truncate * sigma + 0.5)`` and scipy's default ``"reflect"``
    border (the edge value repeated: TensorFlow's ``SYMMETRIC`` padding), so the smoothing the
    authors of SimpleNet apply to its anomaly map in NumPy travels inside the exported model.

    Args:
        sigma: standard deviation in pixels (SimpleNet: 4).
        truncate: kernel radius in standard deviations (scipy's default 4).

    Example:
    >>> GaussianBlur(4.0)(np.zeros((2, 64, 64), "float32")).shape
    (2, 64, 64)
    """

    def __init__(self, sigma=4.0, truncate=4.0, **kwargs):
        super().__init__(**kwargs)
        self.sigma, self.truncate = float(sigma), float(truncate)
        radius = int(self.truncate * self.sigma + 0.5)
        taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / self.sigma) ** 2)
        self._taps = (taps / taps.sum()).astype("float32")
        self.radius = radius

    def call(self, maps):
        import tensorflow as tf

        if self.sigma <= 0:
            return maps
        x = tf.convert_to_tensor(maps, tf.float32)[..., None]
        r, taps = self.radius, self._taps
        smallest = min(d for d in (x.shape[1], x.shape[2], r) if d is not None)
        if smallest < r:  # one SYMMETRIC pad reaches at most the map's size: truncate the kernel there
            taps = taps[r - smallest: r + smallest + 1] / taps[r - smallest: r + smallest + 1].sum()
            r = smallest
        x = tf.pad(x, [[0, 0], [r, r], [r, r], [0, 0]], mode="SYMMETRIC")
        taps = tf.constant(taps)
        x = tf.nn.conv2d(x, tf.reshape(taps, (-1, 1, 1, 1)), strides=1, padding="VALID")
        x = tf.nn.conv2d(x, tf.reshape(taps, (1, -1, 1, 1)), strides=1, padding="VALID")
        return x[..., 0]

    def get_config(self):
        return {**super().get_config(), "sigma": self.sigma, "truncate": self.truncate}
