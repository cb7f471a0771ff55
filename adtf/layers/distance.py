"""DistanceToMean: the per-location Euclidean distance to a stored mean feature map."""
import keras
from keras import ops


@keras.saving.register_keras_serializable("adtf")
class DistanceToMean(keras.layers.Layer):
    """Euclidean distance, at each location, between a feature map and a stored mean map.

    Paper 000, eq. 2: ``D_B = S(T(B), MoN)`` with S the Euclidean distance over channels.
    The mean map is a non-trainable weight set with ``set_mean`` (see
    ``adtf.detectors.mon`` for the streaming sum that computes it).

    Args:
        **kwargs: ``keras.layers.Layer`` arguments.

    Example:
    >>> layer = DistanceToMean()
    >>> d = layer(np.zeros((2, 7, 7, 16), "float32"))   # -> [2, 7, 7]
    """

    def build(self, input_shape):
        self.mean = self.add_weight(name="mean", shape=tuple(input_shape[1:]), initializer="zeros", trainable=False)

    def set_mean(self, mean):
        self.mean.assign(ops.cast(mean, self.mean.dtype))

    def call(self, features):
        return ops.sqrt(ops.sum(ops.square(features - self.mean), axis=-1))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1])
