"""LocalAggregation: SimpleNet's local features from several backbone levels (paper 004, authors' code)."""
import functools

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from adtf.errors import AdtfError


def adaptive_avg_pool_bins(n, m):
    """``(start, end)`` index arrays of ``torch.nn.functional.adaptive_avg_pool1d`` from length n to m.

    Bin i averages ``x[start_i:end_i]`` with ``start_i = floor(i n / m)``, ``end_i = ceil((i + 1) n / m)``;
    for m > n bins repeat inputs.
    """
    i = np.arange(m)
    return (i * n) // m, -((-(i + 1) * n) // m)


def pooling_matrix(n, m):
    """``[n, m]``: ``x @ P`` is ``adaptive_avg_pool1d`` of ``x`` from length n to m."""
    start, end = adaptive_avg_pool_bins(n, m)
    rows = np.arange(n)[:, None]
    return (((rows >= start) & (rows < end)) / (end - start)).astype("float32")


@functools.lru_cache(maxsize=8)
def folded_kernels(channels, patch_size, pretrain_dim, target_dim):
    """One ``[p, p, C_l, target_dim]`` convolution kernel per level: unfold + both poolings as one linear map.

    Row ``c p p + i p + j`` of level l's map is what the unfolded value ``(c, i, j)`` (torch Unfold's
    order) contributes to each output: the per-level pooling, then level l's rows of the pooling of
    the stacked levels. The kernel is that map with its rows laid out as ``(kh, kw, C)``.
    """
    stacked = pooling_matrix(len(channels) * pretrain_dim, target_dim)
    kernels = []
    for index, c in enumerate(channels):
        level_rows = stacked[index * pretrain_dim:(index + 1) * pretrain_dim]
        linear = pooling_matrix(c * patch_size ** 2, pretrain_dim) @ level_rows  # [C p p, target_dim]
        kernels.append(linear.reshape(c, patch_size, patch_size, target_dim).transpose(1, 2, 0, 3))
    return tuple(kernels)


@keras.saving.register_keras_serializable("adtf")
class LocalAggregation(keras.layers.Layer):
    """Local features of several backbone levels, on the finest level's grid (SimpleNet).

    What the authors' code (``DonaldRR/SimpleNet``, ``PatchMaker`` and ``common.py``) does, per
    level l with C_l channels: unfold every ``patch_size x patch_size`` neighbourhood (zero
    padding, stride 1) and flatten it in ``(C, kh, kw)`` order; bring every unfolded value of the coarser
    levels to the first level's grid by bilinear interpolation (half-pixel centres, ``align_corners=False``);
    reduce the ``C_l * p * p`` values at each location to ``pretrain_dim`` by 1-D adaptive average pooling (no
    learned weights); stack the levels and pool the ``L * pretrain_dim`` values to ``target_dim`` the same way.

    Every step is linear and the interpolation acts on other axes than the rest, so the whole of it
    is, per level, one fixed ``p x p`` convolution to ``target_dim`` channels (zero padding, as the
    unfold's), then the interpolation, then a sum over levels: the same numbers (tested against a
    literal NumPy reference of the authors' order) at 6x the speed of unfolding on a CPU, with
    no weights to train or save.

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
        if self.patch_size % 2 != 1:
            raise AdtfError(f"patch_size must be odd (a neighbourhood centred on its location), got {self.patch_size}")

    def call(self, features):
        features = [ops.convert_to_tensor(f, "float32") for f in features]
        kernels = folded_kernels(tuple(int(f.shape[-1]) for f in features), self.patch_size, self.pretrain_dim,
                                 self.target_dim)
        size = tuple(features[0].shape[1:3])
        if None in size:  # spatial sizes unknown until run time (a graph for images of any size)
            size = tf.shape(features[0])[1:3]
        total = None
        for index, (level, kernel) in enumerate(zip(features, kernels)):
            local = ops.conv(level, ops.convert_to_tensor(kernel), strides=1, padding="same")
            if index and not isinstance(size, tuple):
                local = tf.image.resize(local, size, method="bilinear", antialias=False)
            elif index and tuple(level.shape[1:3]) != size:
                local = ops.image.resize(local, size, interpolation="bilinear", antialias=False)
            total = local if total is None else total + local
        return total

    def compute_output_shape(self, input_shapes):
        return (*tuple(input_shapes[0])[:3], self.target_dim)

    def get_config(self):
        return {**super().get_config(), "patch_size": self.patch_size, "pretrain_dim": self.pretrain_dim,
                "target_dim": self.target_dim}
