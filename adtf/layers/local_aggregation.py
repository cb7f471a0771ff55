"""LocalAggregation: SimpleNet's local features from several backbone levels (paper 004, authors' code)."""
import keras
import numpy as np
from keras import ops


def adaptive_avg_pool_bins(n, m):
    """``(start, end)`` index arrays of ``torch.nn.functional.adaptive_avg_pool1d`` from length n to m.

    Bin i averages ``x[start_i:end_i]`` with ``start_i = floor(i n / m)``, ``end_i = ceil((i + 1) n / m)``;
    for m > n bins repeat inputs.
    """
    i = np.arange(m)
    return (i * n) // m, -((-(i + 1) * n) // m)


def adaptive_avg_pool_last(x, m):
    """Adaptive average pooling of the last axis of ``x`` to length ``m`` (cumulative sums: O(n + m))."""
    n = int(x.shape[-1])
    if n == m:
        return x
    if n % m == 0:  # whole bins of n // m: a reshape and a mean
        return ops.mean(ops.reshape(x, (*ops.shape(x)[:-1], m, n // m)), axis=-1)
    start, end = adaptive_avg_pool_bins(n, m)
    sums = ops.concatenate([ops.zeros_like(x[..., :1]), ops.cumsum(x, axis=-1)], axis=-1)
    totals = ops.take(sums, end, axis=-1) - ops.take(sums, start, axis=-1)
    return totals / ops.convert_to_tensor((end - start).astype("float32"))


@keras.saving.register_keras_serializable("adtf")
class LocalAggregation(keras.layers.Layer):
    """Local features of several backbone levels, on the finest level's grid (SimpleNet).

    What the authors' code (``DonaldRR/SimpleNet``, ``PatchMaker`` and ``common.py``) does, per
    level l with C_l channels: unfold every ``patch_size x patch_size`` neighbourhood (zero
    padding, stride 1) and flatten it in ``(C, kh, kw)`` order; reduce the ``C_l * p * p`` values
    at each location to ``pretrain_dim`` by 1-D adaptive average pooling (no learned weights);
    bring coarser levels to the first level's grid by bilinear interpolation (half-pixel
    centres, ``align_corners=False``); stack the levels and pool the ``L * pretrain_dim``
    values to ``target_dim`` the same way. The code interpolates the unfolded values before
    pooling them; both maps are linear and act on different axes, so pooling first gives the
    same numbers with far fewer channels to interpolate (tested against a literal NumPy
    reference).

    Args:
        patch_size: the neighbourhood p (3 in the paper's configuration).
        pretrain_dim: per-level dimension after the first pooling (1536).
        target_dim: output dimension after pooling the stacked levels (1536).

    Call args:
        features: a list of ``[B, h_l, w_l, C_l]`` maps, finest first.

    Returns:
        ``[B, h_0, w_0, target_dim]``.

    Example:
    >>> aggregate = LocalAggregation(3, 1536, 1536)
    >>> aggregate([np.zeros((1, 36, 36, 512)), np.zeros((1, 18, 18, 1024))]).shape
    (1, 36, 36, 1536)
    """

    def __init__(self, patch_size=3, pretrain_dim=1536, target_dim=1536, **kwargs):
        super().__init__(**kwargs)
        self.patch_size, self.pretrain_dim, self.target_dim = int(patch_size), int(pretrain_dim), int(target_dim)

    def unfold(self, x):
        """``[B, h, w, C] -> [B, h, w, C * p * p]`` in torch ``Unfold``'s ``(C, kh, kw)`` order."""
        p = self.patch_size
        if p == 1:
            return x
        patches = ops.image.extract_patches(x, (p, p), strides=(1, 1), padding="same")  # (kh, kw, C) order
        b, h, w, c = ops.shape(x)[0], ops.shape(patches)[1], ops.shape(patches)[2], int(x.shape[-1])
        patches = ops.reshape(patches, (b, h, w, p, p, c))
        return ops.reshape(ops.transpose(patches, (0, 1, 2, 5, 3, 4)), (b, h, w, c * p * p))

    def call(self, features):
        features = [ops.convert_to_tensor(f, "float32") for f in features]
        size = tuple(ops.shape(features[0])[1:3])
        levels = []
        for index, level in enumerate(features):
            pooled = adaptive_avg_pool_last(self.unfold(level), self.pretrain_dim)
            if index and tuple(level.shape[1:3]) != tuple(features[0].shape[1:3]):
                pooled = ops.image.resize(pooled, size, interpolation="bilinear", antialias=False)
            levels.append(pooled)
        return adaptive_avg_pool_last(ops.concatenate(levels, axis=-1), self.target_dim)

    def compute_output_shape(self, input_shapes):
        return (*tuple(input_shapes[0])[:3], self.target_dim)

    def get_config(self):
        return {**super().get_config(), "patch_size": self.patch_size, "pretrain_dim": self.pretrain_dim,
                "target_dim": self.target_dim}
