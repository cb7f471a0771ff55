"""Inference graphs with the weights folded in, for fast scoring on CPU.

A frozen backbone's weights never change while scoring, so its graph can hold them
as constants: grappler then folds BatchNorm into the convolutions and fuses
conv + bias + activation (with oneDNN, which ``adtf`` switches on at import).
On a 2-core AMD EPYC this takes EfficientNet-Lite0 at 224x224 from 36 images/s (Keras
predict, oneDNN off) to 45-60, and EfficientNet-B4 from 8.6 to 13.3-13.9
(``benchmarks/bench_backbones.py``, with and without ``TF_ENABLE_ONEDNN_OPTS=0``).
"""
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2


def freeze(model, input_shape):
    """A function ``images [B, *input_shape] -> {output name: tensor}`` with ``model``'s weights as constants.

    Args:
        model: a Keras model whose call returns a dict of tensors (an ``adtf.backbones.build`` model).
        input_shape: ``(height, width, channels)``; the batch size stays free.

    Example:
    >>> fast = freeze(backbones.build("efficientnet_lite0", layers=["block6d_add"]), (224, 224, 3))
    >>> fast(images)["block6d_add"].shape  # doctest: +SKIP
    TensorShape([8, 7, 7, 192])
    """
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec((None, *input_shape), tf.float32))
    graph = convert_variables_to_constants_v2(concrete)
    structure = concrete.structured_outputs

    def run(images):
        return tf.nest.pack_sequence_as(structure, graph(tf.convert_to_tensor(images, tf.float32)))

    return run
