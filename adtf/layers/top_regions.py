"""TopRegions: paper 001's localisation, the union of the k highest-scoring regions of a map."""
import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable("adtf")
class TopRegions(keras.layers.Layer):
    """``[B, H, W]`` anomaly maps -> ``[B, H, W]`` bool masks of their ``k`` highest regions.

    The map is tiled by squares of ``region_size`` pixels (the last row and column of tiles may
    be cut by the border); a tile's score is the map's maximum inside it, and the mask is the
    union of the ``k`` tiles with the highest scores (paper 001 combines the five highest; it
    does not say how large a region is).

    Args:
        k: regions kept (paper 001: 5).
        region_size: side of a region in pixels.

    Example:
    >>> TopRegions(k=5, region_size=16)(np.random.rand(2, 64, 64).astype("float32")).shape
    (2, 64, 64)
    """

    def __init__(self, k=5, region_size=32, **kwargs):
        super().__init__(**kwargs)
        self.k, self.region_size = int(k), int(region_size)

    def call(self, maps):
        maps = ops.convert_to_tensor(maps, "float32")
        height, width = maps.shape[1], maps.shape[2]
        size = self.region_size
        # Tiles start at the top-left corner: pad the bottom and right (pooling's "same" would pad both sides).
        padded = ops.pad(maps, [[0, 0], [0, -height % size], [0, -width % size]], constant_values=-np.inf)
        tiles = ops.max_pool(padded[..., None], pool_size=size, strides=size, padding="valid")[..., 0]  # [B, h, w]
        rows, cols = tiles.shape[1], tiles.shape[2]
        flat = ops.reshape(tiles, (-1, rows * cols))
        _, indices = ops.top_k(flat, k=min(self.k, rows * cols))
        chosen = ops.sum(ops.one_hot(indices, rows * cols), axis=1) > 0                            # [B, h*w]
        chosen = ops.reshape(chosen, (-1, rows, cols))
        masks = ops.repeat(ops.repeat(chosen, size, axis=1), size, axis=2)
        return masks[:, :height, :width]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "k": self.k, "region_size": self.region_size}
