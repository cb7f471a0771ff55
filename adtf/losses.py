"""Image comparison losses of the reconstruction methods (papers 002 and 003), **per sample**.

Every function takes two float32 batches ``[B, H, W, C]`` in [0, 1] and returns ``[B]``: for
these methods the loss is also the anomaly score, so it must stay one number per image.
``*_map`` functions give the per-pixel counterpart ``[B, H, W]`` behind the anomaly maps.

- MSE: ``1/(WHC) ||X - X_hat||^2`` (002 sec. 3.2; 003 eq. 1);
- perceptual: the MSE of two feature maps ``F(X)``, ``F(X_hat)`` of a frozen network
  (002/003: VGG11's first four layers), ``1/(WHC) ||F(X) - F(X_hat)||^2``;
- SSIM (002 eq. 4) with an 11x11 Gaussian window, sigma 1.5, C1 = 0.01^2, C2 = 0.03^2 for
  images in [0, 1]: ``tf.image.ssim``'s settings, which it computes ("valid" windows only);
- their sum, eq. 5 of 002 with the SSIM term as ``1 - SSIM``: the printed ``+ lambda2 * SSIM``
  would reward a *worse* reconstruction (the authors' code subtracts SSIM, which differs from
  ``1 - SSIM`` by a constant, so it trains and ranks the same).
"""
import tensorflow as tf
from keras import ops

SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


def mse(x, y):
    """``[B]``: mean squared difference over pixels and channels."""
    return ops.mean(ops.square(ops.convert_to_tensor(x) - ops.convert_to_tensor(y)), axis=(1, 2, 3))


def perceptual(features_x, features_y):
    """``[B]``: the MSE of two feature maps ``[B, h, w, c]`` (one network applied to both images)."""
    return mse(features_x, features_y)


def ssim(x, y):
    """``[B]``: mean SSIM over the valid 11x11 windows and the channels (``tf.image.ssim``, max value 1)."""
    return tf.image.ssim(tf.convert_to_tensor(x, tf.float32), tf.convert_to_tensor(y, tf.float32), max_val=1.0,
                         filter_size=SSIM_WINDOW, filter_sigma=SSIM_SIGMA, k1=SSIM_K1, k2=SSIM_K2)


def ssim_map(x, y):
    """``[B, H, W]``: local SSIM at every pixel, averaged over the channels.

    The same windows as ``ssim`` (``adtf.layers.GaussianBlur``: sigma 1.5, radius 5 = an 11x11 window),
    with the images mirrored at the borders so every pixel has a value; where a window fits inside
    the image the values are ``ssim``'s.
    """
    from adtf.layers.gaussian_blur import GaussianBlur

    x, y = tf.convert_to_tensor(x, tf.float32), tf.convert_to_tensor(y, tf.float32)
    window = GaussianBlur(SSIM_SIGMA, truncate=(SSIM_WINDOW // 2) / SSIM_SIGMA)
    batch, height, width, channels = (tf.shape(x)[i] for i in range(4))

    def blur(v):  # each channel as its own [H, W] map
        maps = tf.reshape(tf.transpose(v, (0, 3, 1, 2)), (-1, height, width))
        return tf.transpose(tf.reshape(window(maps), (batch, channels, height, width)), (0, 2, 3, 1))

    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    mean_x, mean_y = blur(x), blur(y)
    var_x = blur(x * x) - mean_x ** 2
    var_y = blur(y * y) - mean_y ** 2
    cov = blur(x * y) - mean_x * mean_y
    value = ((2 * mean_x * mean_y + c1) * (2 * cov + c2)) / ((mean_x ** 2 + mean_y ** 2 + c1) * (var_x + var_y + c2))
    return tf.reduce_mean(value, axis=-1)


def reconstruction_loss(x, x_hat, features_x=None, features_hat=None, perceptual_weight=1.0, ssim_weight=1.0):
    """``{"mse", "perceptual", "ssim", "total"}``, each ``[B]``; total = MSE + l1 perceptual + l2 (1 - SSIM).

    A zero weight skips its term (and, for the perceptual term, needs no features).
    """
    terms = {"mse": mse(x, x_hat)}
    total = terms["mse"]
    if perceptual_weight:
        terms["perceptual"] = perceptual(features_x, features_hat)
        total = total + perceptual_weight * terms["perceptual"]
    if ssim_weight:
        terms["ssim"] = ssim(x, x_hat)
        total = total + ssim_weight * (1.0 - terms["ssim"])
    terms["total"] = total
    return terms


def reconstruction_map(x, x_hat, features_x=None, features_hat=None, perceptual_weight=1.0, ssim_weight=1.0):
    """``[B, H, W]``: the per-pixel version of ``reconstruction_loss``'s total.

    Squared error (mean over channels) + l2 (1 - local SSIM) + l1 x the perceptual squared
    difference (mean over its channels), bilinearly upsampled from the feature grid.
    """
    anomaly_map = ops.mean(ops.square(x - x_hat), axis=-1)
    if ssim_weight:
        anomaly_map = anomaly_map + ssim_weight * (1.0 - ssim_map(x, x_hat))
    if perceptual_weight:
        difference = ops.mean(ops.square(features_x - features_hat), axis=-1, keepdims=True)
        size = tuple(ops.shape(x)[1:3])
        anomaly_map = anomaly_map + perceptual_weight * ops.image.resize(difference, size, "bilinear")[..., 0]
    return anomaly_map
