"""SparseCoding: lasso sparse codes over a fixed dictionary by FISTA, inside the graph."""
import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable("adtf")
class SparseCoding(keras.layers.Layer):
    """Codes ``x`` minimising ``0.5 ||y - x D||^2 + alpha ||x||_1`` for each vector ``y [..., N]``.

    The objective scikit-learn's ``sparse_encode(y, D, algorithm="lasso_cd", alpha=alpha)`` and
    ``MiniBatchDictionaryLearning(alpha=alpha)`` solve (paper 001, eq. 8), solved here by FISTA
    (Beck and Teboulle 2009) with a fixed number of steps, so that a SavedModel codes features
    without scikit-learn. The step is ``1 / L`` with ``L`` the largest eigenvalue of ``D D^T``.
    ``tests/test_layers.py`` checks the codes against scikit-learn's.

    Args:
        atoms: number of dictionary atoms ``M``.
        dim: dimension ``N`` of the vectors.
        alpha: the L1 weight (paper 001's beta).
        steps: FISTA iterations.

    ``set_dictionary(D)`` loads a fitted ``[M, N]`` dictionary (scikit-learn's ``components_``).

    Example:
    >>> coding = SparseCoding(atoms=64, dim=16, alpha=0.5)
    >>> coding.set_dictionary(dictionary_learning.components_)
    >>> codes = coding(features)                         # [..., 64]
    >>> errors = coding.reconstruction_error(features)   # [...]
    """

    def __init__(self, atoms, dim, alpha=1.0, steps=100, **kwargs):
        super().__init__(**kwargs)
        self.atoms, self.dim, self.alpha, self.steps = int(atoms), int(dim), float(alpha), int(steps)
        self.dictionary = self.add_weight(name="dictionary", shape=(self.atoms, self.dim), initializer="zeros",
                                          trainable=False)
        self.lipschitz = self.add_weight(name="lipschitz", shape=(), initializer="ones", trainable=False)
        # Its weights exist from here: built, or a detector whose call does not reach it (the flow's scoring) is
        # warned by Keras of "unbuilt state" when it is first called.
        self.built = True

    def set_dictionary(self, dictionary):
        dictionary = np.asarray(dictionary, np.float32)
        if dictionary.shape != (self.atoms, self.dim):
            raise ValueError(f"SparseCoding: dictionary of shape {dictionary.shape}, expected {(self.atoms, self.dim)}")
        self.dictionary.assign(dictionary)
        self.lipschitz.assign(float(np.linalg.eigvalsh(dictionary.astype(np.float64) @ dictionary.T.astype(np.float64))[-1]))

    def call(self, y):
        y = ops.convert_to_tensor(y, "float32")
        shape = ops.shape(y)
        flat = ops.reshape(y, (-1, self.dim))
        dictionary = ops.convert_to_tensor(self.dictionary)
        gram = ops.matmul(dictionary, ops.transpose(dictionary))          # [M, M]
        correlation = ops.matmul(flat, ops.transpose(dictionary))         # [n, M]
        step = 1.0 / ops.maximum(self.lipschitz, 1e-12)
        threshold = self.alpha * step

        def body(_, state):
            x, z, t = state
            moved = z - step * (ops.matmul(z, gram) - correlation)
            x_next = ops.sign(moved) * ops.relu(ops.abs(moved) - threshold)
            t_next = 0.5 * (1.0 + ops.sqrt(1.0 + 4.0 * t * t))
            z_next = x_next + ((t - 1.0) / t_next) * (x_next - x)
            return x_next, z_next, t_next

        zeros = ops.zeros_like(correlation)
        codes, _, _ = ops.fori_loop(0, self.steps, body, (zeros, zeros, ops.convert_to_tensor(1.0)))
        return ops.reshape(codes, (*[shape[i] for i in range(len(y.shape) - 1)], self.atoms))

    def reconstruction_error(self, y):
        """``||y - x D||^2`` per vector ``[...]``, with ``x`` the sparse codes of ``y``."""
        y = ops.convert_to_tensor(y, "float32")
        reconstruction = ops.matmul(self(y), ops.convert_to_tensor(self.dictionary))
        return ops.sum(ops.square(y - reconstruction), axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.atoms)

    def get_config(self):
        return {**super().get_config(), "atoms": self.atoms, "dim": self.dim, "alpha": self.alpha,
                "steps": self.steps}
