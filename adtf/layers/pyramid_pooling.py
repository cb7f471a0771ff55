"""PyramidPooling: adaptive average pooling to several grid sizes, each level then a 1x1 conv + BN."""
import keras
import numpy as np
from keras import ops


def adaptive_pool_matrix(size_in, size_out):
    """``[size_out, size_in]`` averaging weights with torch's ``AdaptiveAvgPool`` bins.

    Bin ``i`` covers ``floor(i * n / m)`` to ``ceil((i + 1) * n / m)``; a grid larger than the
    input (8x8 from a 4x4 map) repeats input cells, as torch does. A fixed matrix rather than Keras'
    ``AdaptiveAveragePooling2D``, which fails on a length-1 axis (the 1x1 ResNet18 map of a 32-px image).
    """
    weights = np.zeros((size_out, size_in), "float32")
    for i in range(size_out):
        start, end = (i * size_in) // size_out, -(-((i + 1) * size_in) // size_out)
        weights[i, start:end] = 1.0 / (end - start)
    return weights


@keras.saving.register_keras_serializable("adtf")
class PyramidPooling(keras.layers.Layer):
    """Pool a feature map to each of ``bins`` grids, then reduce its channels (1x1 conv + BatchNorm [+ ReLU]).

    Two published variants are two settings:

    - **spatial** (paper 002, PIADE): ``bins=(8, 4, 2, 1)``, ``filters=(64,) * 4``, no ReLU:
      "adaptive average pooling ... 8x8, 4x4, 2x2 and 1x1 ... followed by a convolution to reduce
      the number of channels (1x1 kernel, stride 1, 64 channels) and a batch normalization";
    - **channel** (paper 003, and PIADE's public code): ``bins=(1, 1, 1, 1)``, every level pooled
      to "unit width and height", channels reduced by 1, 2, 3 and 6 (512/256/170/85, Table V)
      (PIADE's code: by 1, 2, 4, 8), with ReLU.

    The conv has no bias (BatchNorm follows it). Returns the list of levels, ``[B, bin, bin, filters]``.

    Args:
        bins: output grid side of each level.
        filters: output channels of each level's 1x1 conv.
        relu: a ReLU after each level's BatchNorm.

    Example:
    >>> levels = PyramidPooling((8, 4, 2, 1), (64,) * 4)(np.ones((2, 4, 4, 512), "float32"))
    >>> [tuple(level.shape) for level in levels]
    [(2, 8, 8, 64), (2, 4, 4, 64), (2, 2, 2, 64), (2, 1, 1, 64)]
    """

    def __init__(self, bins=(8, 4, 2, 1), filters=(64, 64, 64, 64), relu=False, **kwargs):
        super().__init__(**kwargs)
        self.bins, self.filters, self.relu = [int(b) for b in bins], [int(f) for f in filters], bool(relu)
        if len(self.bins) != len(self.filters) or not self.bins:
            raise ValueError(f"PyramidPooling: {len(self.bins)} bins but {len(self.filters)} filters")
        init = keras.initializers.Orthogonal()
        self.convs = [keras.layers.Conv2D(f, 1, use_bias=False, kernel_initializer=init, name=f"conv{i}")
                      for i, f in enumerate(self.filters)]
        # Keras momentum 0.9 = torch's default 0.1.
        self.norms = [keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=f"bn{i}")
                      for i in range(len(self.filters))]

    def build(self, input_shape):
        height, width, channels = input_shape[1:]
        if height is None or width is None:
            raise ValueError("PyramidPooling needs a static feature-map size (build the model at a fixed image size)")
        self.pool_matrices = [(adaptive_pool_matrix(height, b), adaptive_pool_matrix(width, b)) for b in self.bins]
        for conv, norm, b in zip(self.convs, self.norms, self.bins):
            conv.build((None, b, b, channels))
            norm.build((None, b, b, conv.filters))

    def call(self, x, training=False):
        levels = []
        for (rows, cols), conv, norm in zip(self.pool_matrices, self.convs, self.norms):
            pooled = ops.einsum("ih,bhwc,jw->bijc", ops.convert_to_tensor(rows), x, ops.convert_to_tensor(cols))
            level = norm(conv(pooled), training=training)
            levels.append(ops.relu(level) if self.relu else level)
        return levels

    def get_config(self):
        return {**super().get_config(), "bins": self.bins, "filters": self.filters, "relu": self.relu}
