"""CutPaste (Li et al., CVPR 2021), the self-supervised task of paper 001, as TensorFlow batch ops.

A rectangle is cut from an image and pasted back at another place of the same image; a
network trained to tell such images from untouched ones learns features that respond to
local irregularities. Everything here is a pure function of the images and an integer seed
(stateless random ops), so it runs inside ``tf.data`` (``dataset.map``) or inside a
``train_step``, and a resumed fit draws the same patches as an uninterrupted one.

Li et al.'s settings, the defaults here: the patch covers 2-15 % of the image's area, its
aspect ratio is log-uniform in [0.3, 1/0.3], it is colour-jittered (brightness, contrast,
saturation; Li et al. also jitter hue by 0.1, which we leave out: grayscale inspection
images have none) and pasted at a uniformly random place where it fits.

Example:
>>> images = tf.random.uniform((8, 128, 128, 3))
>>> pasted, masks = cut_paste(images, seed=(0, 1))           # [8, 128, 128, 3], [8, 128, 128]
>>> x, y = cutpaste_pairs(images, seed=(0, 1))               # 16 images, labels 0 (normal) / 1 (CutPaste)
>>> ds = tf.data.Dataset.from_tensor_slices(images).batch(4).enumerate()
>>> ds = ds.map(lambda i, x: cutpaste_pairs(x, seed=tf.stack([7, i])))
"""
import math

import tensorflow as tf

AREA_RATIO = (0.02, 0.15)
ASPECT_RATIO = (0.3, 1 / 0.3)
JITTER = 0.1  # brightness, contrast and saturation ranges (Li et al.'s ColorJitter(0.1, 0.1, 0.1, 0.1))


def _uniform(shape, seed, low=0.0, high=1.0):
    return tf.random.stateless_uniform(shape, seed=seed, minval=low, maxval=high)


def cut_paste(images, seed, area_ratio=AREA_RATIO, aspect_ratio=ASPECT_RATIO, jitter=JITTER):
    """Cut a rectangle from each image and paste it elsewhere in the same image.

    Args:
        images: float32 ``[B, H, W, C]`` in ``[0, 1]``.
        seed: two integers (a ``tf.random`` stateless seed); the same seed gives the same patches.
        area_ratio: ``(low, high)`` fraction of the image's area the patch covers.
        aspect_ratio: ``(low, high)`` of height / width, drawn log-uniformly.
        jitter: half-range of the patch's brightness offset and of its contrast and saturation
            factors (0: no jitter).

    Returns:
        ``(pasted, masks)``: the images with the patch pasted, ``[B, H, W, C]`` in ``[0, 1]``, and
        where it was pasted, float32 ``[B, H, W]`` (1 inside the patch).
    """
    images = tf.convert_to_tensor(images, tf.float32)
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    seeds = tf.random.experimental.stateless_split(seed, 8)
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    h_f, w_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)

    area = _uniform([batch], seeds[0], *area_ratio) * h_f * w_f
    log_aspect = _uniform([batch], seeds[1], math.log(aspect_ratio[0]), math.log(aspect_ratio[1]))
    aspect = tf.exp(log_aspect)
    patch_h = tf.clip_by_value(tf.round(tf.sqrt(area * aspect)), 1.0, h_f - 1.0)
    patch_w = tf.clip_by_value(tf.round(tf.sqrt(area / aspect)), 1.0, w_f - 1.0)

    def corner(limit, size, s):  # a top/left coordinate in [0, limit - size]
        return tf.floor(_uniform([batch], s) * (limit - size + 1.0))

    from_y, from_x = corner(h_f, patch_h, seeds[2]), corner(w_f, patch_w, seeds[3])
    to_y, to_x = corner(h_f, patch_h, seeds[4]), corner(w_f, patch_w, seeds[5])

    # Where the patch lands, and which source pixel each of its pixels reads.
    rows = tf.range(h_f)[None, :]                      # [1, H]
    cols = tf.range(w_f)[None, :]                      # [1, W]
    in_rows = (rows >= to_y[:, None]) & (rows < (to_y + patch_h)[:, None])
    in_cols = (cols >= to_x[:, None]) & (cols < (to_x + patch_w)[:, None])
    masks = tf.cast(in_rows[:, :, None] & in_cols[:, None, :], tf.float32)   # [B, H, W]
    source_rows = tf.cast(tf.clip_by_value(rows + (from_y - to_y)[:, None], 0.0, h_f - 1.0), tf.int32)
    source_cols = tf.cast(tf.clip_by_value(cols + (from_x - to_x)[:, None], 0.0, w_f - 1.0), tf.int32)
    shifted = tf.gather(images, source_rows, axis=1, batch_dims=1)          # [B, H, W, C]
    shifted = tf.gather(shifted, source_cols, axis=2, batch_dims=1)

    if jitter > 0:
        shifted = _colour_jitter(shifted, seeds[6], jitter)
    pasted = shifted * masks[..., None] + images * (1.0 - masks[..., None])
    return pasted, masks


def _colour_jitter(images, seed, amount):
    """Per-image brightness offset, contrast and saturation factors in ``1 +- amount``."""
    batch = tf.shape(images)[0]
    seeds = tf.random.experimental.stateless_split(seed, 3)
    brightness = _uniform([batch, 1, 1, 1], seeds[0], -amount, amount)
    contrast = _uniform([batch, 1, 1, 1], seeds[1], 1.0 - amount, 1.0 + amount)
    saturation = _uniform([batch, 1, 1, 1], seeds[2], 1.0 - amount, 1.0 + amount)
    x = images + brightness
    x = (x - tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)) * contrast + tf.reduce_mean(x, axis=[1, 2, 3],
                                                                                          keepdims=True)
    gray = tf.reduce_mean(x, axis=-1, keepdims=True)
    x = gray + (x - gray) * saturation
    return tf.clip_by_value(x, 0.0, 1.0)


def cutpaste_pairs(images, seed, **options):
    """The binary CutPaste task: ``(images + their CutPaste versions, labels 0 then 1)``.

    Returns ``([2B, H, W, C], [2B] int32)``; ``options`` go to ``cut_paste``.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    pasted, _ = cut_paste(images, seed, **options)
    batch = tf.shape(images)[0]
    labels = tf.concat([tf.zeros([batch], tf.int32), tf.ones([batch], tf.int32)], axis=0)
    return tf.concat([images, pasted], axis=0), labels


def random_crops(images, size, seed):
    """One ``size`` x ``size`` crop per image at a random place (exact pixels, no resampling)."""
    images = tf.convert_to_tensor(images, tf.float32)
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    seeds = tf.random.experimental.stateless_split(tf.cast(tf.convert_to_tensor(seed), tf.int64), 2)
    top = tf.cast(tf.floor(_uniform([batch], seeds[0]) * tf.cast(height - size + 1, tf.float32)), tf.int32)
    left = tf.cast(tf.floor(_uniform([batch], seeds[1]) * tf.cast(width - size + 1, tf.float32)), tf.int32)
    rows = top[:, None] + tf.range(size)[None, :]
    cols = left[:, None] + tf.range(size)[None, :]
    crops = tf.gather(images, rows, axis=1, batch_dims=1)
    return tf.gather(crops, cols, axis=2, batch_dims=1)
