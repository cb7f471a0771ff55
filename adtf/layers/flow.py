"""RealNVPFlow: a RealNVP normalizing flow (Dinh et al. 2017) from ``tfp.bijectors``, as a Keras layer."""
import keras
import numpy as np
from keras import layers as keras_layers


@keras.saving.register_keras_serializable("adtf")
class RealNVPFlow(keras.layers.Layer):
    """Maps feature vectors ``x [..., D]`` to latents ``t`` and returns ``(t, log|det dt/dx|)``.

    ``couplings`` affine coupling layers (``tfp.bijectors.RealNVP``: the second half of the
    vector becomes ``x2 * exp(s(x1)) + t(x1)``, the first half passes through), each followed
    by a fixed random permutation (``tfp.bijectors.Permute``, drawn from ``seed``) so that every
    dimension is transformed. ``s`` and ``t`` come from one fully connected network per
    coupling (two hidden ReLU layers, then ``2 x`` the transformed half), whose last layer
    starts at zero so that the untrained flow is the identity. The log-scale is soft-clamped
    to ``+- log_scale_clamp`` (``c * tanh(s / c)``), the usual guard against the exponential
    blowing up early in training; the scale stays an exponential, as paper 001 asks.

    The negative log-likelihood of paper 001's eq. 6 is ``nll(x) = ||t||^2 / 2 - log|det|``
    (per vector; ``flow_nll`` divides it by ``D``).

    The bijectors are built inside ``call`` from the layer's own Keras sub-layers, so Keras
    tracks, saves and exports their variables; the exported graph holds plain TensorFlow
    ops and needs no TensorFlow Probability to run.

    Args:
        couplings: number of affine coupling layers (paper 001: 8).
        hidden: units of each coupling network's two hidden layers.
        log_scale_clamp: bound of the log-scale (0: no clamp).
        seed: seed of the permutations.
        affine: affine couplings (RealNVP, the paper); False for additive ones (NICE: shift only, log-det 0),
            the coupling ablation.

    Example:
    >>> flow = RealNVPFlow(couplings=8, hidden=64)
    >>> t, log_det = flow(np.zeros((5, 16), "float32"))   # [5, 16], [5]
    """

    def __init__(self, couplings=8, hidden=256, log_scale_clamp=3.0, seed=0, affine=True, **kwargs):
        super().__init__(**kwargs)
        self.couplings, self.hidden, self.affine = int(couplings), int(hidden), bool(affine)
        self.log_scale_clamp, self.seed = float(log_scale_clamp), int(seed)

    def build(self, input_shape):
        dim = int(input_shape[-1])
        if dim < 2:
            raise ValueError(f"RealNVPFlow needs vectors of at least 2 dimensions, got {dim}")
        self.dim, self.masked = dim, dim // 2
        rng = np.random.default_rng(self.seed)
        self.permutations = [rng.permutation(dim).astype("int32") for _ in range(self.couplings)]
        self.networks = []
        for i in range(self.couplings):
            network = keras.Sequential([
                keras_layers.Dense(self.hidden, activation="relu"),
                keras_layers.Dense(self.hidden, activation="relu"),
                keras_layers.Dense(2 * (dim - self.masked), kernel_initializer="zeros", bias_initializer="zeros"),
            ], name=f"coupling_{i}")
            network.build((None, self.masked))
            self.networks.append(network)

    def _shift_and_log_scale(self, network):
        import tensorflow as tf

        def fn(x, output_units, **_):
            shift, log_scale = tf.split(network(x), 2, axis=-1)
            if not self.affine:  # additive coupling (NICE): a shift only, volume-preserving
                return shift, None
            if self.log_scale_clamp > 0:
                log_scale = self.log_scale_clamp * tf.tanh(log_scale / self.log_scale_clamp)
            return shift, log_scale

        return fn

    def bijector(self):
        """The flow as a ``tfp.bijectors.Chain``, data -> latent in its ``forward`` direction."""
        import tensorflow_probability as tfp

        tfb = tfp.bijectors
        steps = []
        for network, permutation in zip(self.networks, self.permutations):
            steps.append(tfb.RealNVP(num_masked=self.masked, shift_and_log_scale_fn=self._shift_and_log_scale(network)))
            steps.append(tfb.Permute(permutation))
        return tfb.Chain(steps[::-1])  # Chain applies its last bijector first

    def call(self, x):
        import tensorflow as tf

        x = tf.convert_to_tensor(x, tf.float32)
        shape = tf.shape(x)
        flat = tf.reshape(x, (-1, self.dim))
        flow = self.bijector()
        latent = flow.forward(flat)
        # A volume-preserving (additive) flow reports a scalar log-det: broadcast it to every vector.
        log_det = tf.broadcast_to(flow.forward_log_det_jacobian(flat, event_ndims=1), tf.shape(flat)[:1])
        return tf.reshape(latent, shape), tf.reshape(log_det, shape[:-1])

    def compute_output_shape(self, input_shape):
        return tuple(input_shape), tuple(input_shape[:-1])

    def get_config(self):
        return {**super().get_config(), "couplings": self.couplings, "hidden": self.hidden,
                "log_scale_clamp": self.log_scale_clamp, "seed": self.seed, "affine": self.affine}


def flow_nll(latent, log_det):
    """Paper 001's eq. 6 per vector, divided by the dimension: ``(||t||^2 / 2 - log|det|) / D``."""
    from keras import ops

    dim = latent.shape[-1]
    return (0.5 * ops.sum(ops.square(latent), axis=-1) - log_det) / float(dim)
