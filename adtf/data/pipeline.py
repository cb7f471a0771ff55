"""The tf.data input pipeline: samples -> decode -> RGB -> resize -> batch -> prefetch."""
from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf

from adtf.errors import DataError

# A mask pixel is defective when its value, scaled to [0, 1], is above this (MTD masks
# carry faint compression noise along the defect borders; MVTec/DAGM masks are 0/255).
MASK_THRESHOLD = 0.5
# A mask file whose largest value is below this is a label map (0/1, or class indices): any
# non-zero value is a defect there. Scaled by 255, its 1s would fall under MASK_THRESHOLD and
# the defect would vanish without a word.
LABEL_MAP_MAX = 128


def pipeline(samples, *, arrays=None, image_size=(224, 224), batch_size=16, shuffle=False, seed=0,
             cache=False, drop_remainder=False) -> tf.data.Dataset:
    """Batches of ``(image, label, mask, path)`` from samples of ``adtf.data.load``.

    - ``image``: float32 ``[B, H, W, 3]`` in [0, 1]. Files are decoded by content
      (PNG, JPEG, BMP, GIF, WebP; a ".png" that holds BMP bytes is fine), gray becomes
      3 channels, alpha is dropped, and the image is resized bilinearly (anti-aliased,
      like PIL's resize, so downscaling does not alias).
    - ``label``: int32 ``[B]``, 0 normal / 1 anomalous.
    - ``mask``: float32 ``[B, H, W]`` in {0, 1}, resized nearest and thresholded at
      ``MASK_THRESHOLD`` (0/255 masks); a mask file whose values stay below ``LABEL_MAP_MAX``
      is a label map (0/1 or class indices) where every non-zero value is a defect; zeros
      where a sample has no mask.
    - ``path``: string ``[B]``, the sample's path (or in-memory id).

    Args:
        samples: list of ``Sample`` (e.g. ``ds.train`` or ``ds.test``).
        arrays: ``ds.arrays`` for in-memory sources (uint8 ``[N, H, W(, C)]``, rows picked
            by ``Sample.index``); None for files.
        image_size: ``(height, width)`` or one int for a square.
        batch_size: images per batch.
        shuffle: shuffle the order, freshly each epoch, deterministically given ``seed``.
        seed: shuffle seed.
        cache: False, True (keep decoded images in memory after the first epoch) or a file
            name prefix for an on-disk cache.
        drop_remainder: drop the last smaller batch.

    Returns:
        A prefetched, batched ``tf.data.Dataset``.

    Example:
        >>> ds = adtf.data.load("mvtec:mvtec_bottle")                       # doctest: +SKIP
        >>> for image, label, mask, path in pipeline(ds.test, batch_size=8).take(1):  # doctest: +SKIP
        ...     print(image.shape, label.numpy())
        (8, 224, 224, 3) [1 1 1 1 1 1 1 1]
    """
    samples = list(samples)
    if not samples:
        raise DataError("pipeline: no samples given")
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    labels = np.array([s.label for s in samples], np.int32)
    paths = np.array([s.path for s in samples])
    in_memory = [s.index is not None for s in samples]
    if any(in_memory):
        if arrays is None or not all(in_memory):
            raise DataError(f"pipeline: in-memory samples (e.g. {samples[in_memory.index(True)].path}) need "
                            "arrays=ds.arrays, and cannot be mixed with file samples")
        images = np.asarray(arrays)[[s.index for s in samples]]
        images = images[..., None] if images.ndim == 3 else images
        data = tf.data.Dataset.from_tensor_slices((images, labels, paths))

        def prepare(image, label, path):
            return _finish(image, tf.zeros(tf.shape(image)[:2]), label, path, size)
    else:
        masks = np.array([s.mask_path or "" for s in samples])
        data = tf.data.Dataset.from_tensor_slices((paths, masks, labels))

        def prepare(path, mask_path, label):
            return _finish(*_read(path, mask_path), label, path, size)
    # Shuffle the light (path) elements when nothing is cached; a cache fixes the order of
    # its first epoch, so with a cache the shuffle has to come after it.
    if shuffle and not cache:
        data = data.shuffle(len(samples), seed=seed, reshuffle_each_iteration=True)
    data = data.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache:
        data = data.cache("" if cache is True else str(cache))
        if shuffle:
            data = data.shuffle(len(samples), seed=seed, reshuffle_each_iteration=True)
    return data.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


class Batch(collections.namedtuple("Batch", ["image", "label", "mask", "path"], defaults=(None, None, None))):
    """One batch as adtf reads it: ``image`` always, ``label``/``mask``/``path`` where the data has them."""


def unpack_batch(batch):
    """The one way adtf reads a batch: a ``Batch`` of an adtf.data tuple ``(image, label, mask, path)``,
    a dict with an ``"image"`` key, or a bare image tensor or array.

    Example:
        >>> unpack_batch(np.zeros((2, 8, 8, 3))).label is None
        True
    """
    if isinstance(batch, Batch):
        return batch
    if isinstance(batch, dict):
        if "image" not in batch:
            raise DataError(f"a batch dict needs an 'image' key; got {sorted(batch)}")
        return Batch(batch["image"], batch.get("label"), batch.get("mask"), batch.get("path"))
    if isinstance(batch, (tuple, list)):
        if not 1 <= len(batch) <= 4:
            raise DataError(f"a batch tuple is (image[, label[, mask[, path]]]); got {len(batch)} parts")
        return Batch(*batch)
    return Batch(batch)


def decode_image(contents):
    """Encoded image bytes -> uint8 ``[H, W, 3]`` (gray to 3 channels, alpha dropped).

    JPEGs are decoded with the accurate integer DCT, as PIL, OpenCV and libjpeg's own default decode them:
    TensorFlow's default, the fast DCT, is up to 8 grey levels off (MTD's tiles: 0.5 on average), so a part decoded
    by another program and sent as pixels was scored on other values than training and calibration saw."""
    image = tf.cond(tf.io.is_jpeg(contents),
                    lambda: tf.io.decode_jpeg(contents, dct_method="INTEGER_ACCURATE"),
                    lambda: tf.io.decode_image(contents, expand_animations=False))
    channels = tf.shape(image)[-1]
    image = tf.cond(channels < 3, lambda: tf.tile(image[..., :1], [1, 1, 3]), lambda: image[..., :3])
    return tf.ensure_shape(image, [None, None, 3])


# The signatures tf.io.decode_image reads a file's format from; anything else it refuses.
IMAGE_SIGNATURES = ((0, b"\x89PNG\r\n\x1a\n"), (0, b"\xff\xd8\xff"), (0, b"BM"), (0, b"GIF8"), (8, b"WEBP"))


def has_image_signature(contents):
    """Whether encoded bytes start as a PNG, JPEG, BMP, GIF or WebP file does (a scalar bool tensor): an empty string
    or another payload (an error page, a TIFF) does not. A truncated or corrupt file of one of these formats does."""
    padded = tf.strings.join([contents, tf.constant(b"\0" * 12)])  # substr fails beyond a string's end
    return tf.reduce_any([tf.equal(tf.strings.substr(padded, start, len(magic)), magic)
                          for start, magic in IMAGE_SIGNATURES])


def prepare_image(image, size):
    """uint8 ``[H, W, 3]`` -> float32 ``[*size, 3]`` in [0, 1]: the one resize training and serving share."""
    image = tf.image.resize(tf.image.convert_image_dtype(image, tf.float32), size, antialias=True)
    return tf.clip_by_value(image, 0.0, 1.0)  # the anti-aliasing kernel overshoots by ~1e-7


def read_mask(contents):
    """Encoded mask bytes -> float32 ``[H, W]``: 0/255 masks scaled to [0, 1], label maps to {0, 1}.

    A colour mask is a defect wherever any colour channel is lit (its red channel alone lost green and blue
    defects, and palette PNGs decode to colour); alpha is ignored. 16-bit files keep their values (a 16-bit 0/1
    label map cut to 8 bits was empty): read at 16 bits and brought to the 0-255 scale of 8-bit files.
    """
    decoded = tf.io.decode_image(contents, dtype=tf.uint16, expand_animations=False)  # 8-bit files scaled by 257
    colour = tf.cond(tf.shape(decoded)[-1] >= 3, lambda: decoded[..., :3], lambda: decoded[..., :1])
    mask = tf.cast(tf.reduce_max(colour, axis=-1), tf.float32) / 257.0
    return tf.cond(tf.reduce_max(mask) < LABEL_MAP_MAX,
                   lambda: tf.cast(mask > 0, tf.float32), lambda: mask / 255.0)


def _read(path, mask_path):
    image = decode_image(tf.io.read_file(path))
    mask = tf.cond(tf.strings.length(mask_path) > 0,
                   lambda: read_mask(tf.io.read_file(mask_path)),
                   lambda: tf.zeros(tf.shape(image)[:2]))
    return image, mask


def _finish(image, mask, label, path, size):
    image = tf.tile(image, [1, 1, 3]) if image.shape[-1] == 1 else image[..., :3]  # in-memory arrays
    image = prepare_image(image, size)
    mask = tf.image.resize(mask[..., None], size, method="nearest")[..., 0]
    return image, tf.cast(label, tf.int32), tf.cast(mask > MASK_THRESHOLD, tf.float32), path
