"""CapsuleRouting: Sabour et al.'s dynamic routing (paper 002, Algorithm 1) with the squash of eq. 3."""
import keras
from keras import ops


def squash(s, constant=1.0, axis=-1, epsilon=1e-9):
    """Eq. 3 of paper 002: ``||s||^2 / (a + ||s||^2) * s / ||s||`` (a = ``constant``); norms land in [0, 1)."""
    squared = ops.sum(ops.square(s), axis=axis, keepdims=True)
    return squared / (constant + squared) * s / ops.sqrt(squared + epsilon)


@keras.saving.register_keras_serializable("adtf")
class CapsuleRouting(keras.layers.Layer):
    """Route ``n_in`` input capsules ``[B, n_in, d_in]`` to ``num_vectors`` instantiation vectors ``[B, n, dim]``.

    Each input capsule ``u_i`` predicts every output vector through its own matrix,
    ``u_hat_{j|i} = W_ij u_i`` (``W``: ``[n, n_in, dim, d_in]``); then, for ``iterations`` rounds
    (Algorithm 1): ``c_i = softmax_j(b_i)``, ``s_j = sum_i c_ij u_hat_{j|i}``, ``v_j = squash(s_j)``,
    ``b_ij += u_hat_{j|i} . v_j``, from ``b = 0``. As in the capsule-network code PIADE builds on,
    the predictions are held constant (no gradient) in every round but the last, so the routing
    coefficients act as weights, not as a path for gradients.

    Args:
        num_vectors: output (instantiation) vectors; PIADE: 2 (1 disables routing: every c is 1).
        dim: their dimension (PIADE: 64).
        iterations: routing rounds r (3).
        squash_constant: a of eq. 3 (1).

    Example:
    >>> CapsuleRouting(2, 64)(np.ones((4, 680, 8), "float32")).shape
    (4, 2, 64)
    """

    def __init__(self, num_vectors=2, dim=64, iterations=3, squash_constant=1.0, **kwargs):
        super().__init__(**kwargs)
        self.num_vectors, self.dim, self.iterations = int(num_vectors), int(dim), int(iterations)
        self.squash_constant = float(squash_constant)
        if self.iterations < 1:
            raise ValueError(f"CapsuleRouting: iterations must be >= 1, got {iterations}")

    def build(self, input_shape):
        n_in, d_in = int(input_shape[1]), int(input_shape[2])
        # Paper 002 initialises every new weight orthogonally (its code: 0.01 * randn).
        self.W = self.add_weight(name="W", shape=(self.num_vectors, n_in, self.dim, d_in),
                                 initializer=keras.initializers.Orthogonal())

    def call(self, u):
        u_hat = ops.einsum("jide,bie->bjid", self.W, u)  # [B, n, n_in, dim]
        held = ops.stop_gradient(u_hat)
        logits = ops.zeros(ops.shape(u_hat)[:3], dtype=u_hat.dtype)  # b: [B, n, n_in]
        for round_ in range(self.iterations):
            # c_i = softmax over the output vectors (with one vector, every c is 1)
            coupling = ops.softmax(logits, axis=1) if self.num_vectors > 1 else ops.ones_like(logits)
            last = round_ == self.iterations - 1
            v = squash(ops.sum(coupling[..., None] * (u_hat if last else held), axis=2), self.squash_constant)
            if not last:
                logits = logits + ops.sum(held * v[:, :, None, :], axis=-1)
        return v

    def get_config(self):
        return {**super().get_config(), "num_vectors": self.num_vectors, "dim": self.dim,
                "iterations": self.iterations, "squash_constant": self.squash_constant}
