"""SqueezeExcite: Hu et al.'s channel attention, as paper 002 writes it (eq. 1-2)."""
import keras
from keras import ops


@keras.saving.register_keras_serializable("adtf")
class SqueezeExcite(keras.layers.Layer):
    """``x * sigmoid(W2 relu(W1 mean_hw(x)))``, one weight per channel.

    Paper 002 (PIADE) eq. 1-2: ``z = mean over H, W`` (squeeze), ``s = sigmoid(W2 relu(W1 z))``
    with ``W1`` in R^{C/r x C} and ``W2`` in R^{C x C/r}, no biases, and r = 4 (its W1 is
    C/4 x C); the authors' code uses r = 16 (``reduction=16``). The SE-ResNet18 backbone
    (``adtf.backbones``) and PIADE's five new blocks are this layer.

    Args:
        reduction: r, the bottleneck ratio: ``C -> C // r -> C``.
        use_bias: biases in the two fully connected maps (the paper has none).

    Example:
    >>> se = SqueezeExcite(reduction=4)
    >>> se(np.ones((2, 8, 8, 64), "float32")).shape
    (2, 8, 8, 64)
    """

    def __init__(self, reduction=4, use_bias=False, **kwargs):
        super().__init__(**kwargs)
        self.reduction, self.use_bias = int(reduction), bool(use_bias)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        if channels // self.reduction < 1:
            raise ValueError(f"SqueezeExcite: {channels} channels cannot be reduced by {self.reduction}")
        self.fc1 = keras.layers.Dense(channels // self.reduction, "relu", use_bias=self.use_bias, name="fc1")
        self.fc2 = keras.layers.Dense(channels, "sigmoid", use_bias=self.use_bias, name="fc2")
        self.fc1.build((None, channels))
        self.fc2.build((None, channels // self.reduction))

    def call(self, x):
        weights = self.fc2(self.fc1(ops.mean(x, axis=(1, 2))))
        return x * weights[:, None, None, :]

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction, "use_bias": self.use_bias}
