"""The tf.data input pipeline: samples -> decode -> RGB -> resize -> batch -> prefetch."""
from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf

from adtf.data.samples import as_samples
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
    samples = as_samples(samples, "pipeline")
    if not samples:
        raise DataError("pipeline: no samples given")
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(side, (int, np.integer)) and side > 0 for side in size):
        raise DataError(f"pipeline: image_size is (height, width) in pixels, or one int for a square; got {image_size!r}")
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
    # No batch larger than the data: tf.data sets aside a whole batch's memory (--batch-size 100000 on two images
    # ran out of it inside TensorFlow), and the batches are the same.
    batch_size = batch_size if drop_remainder else min(int(batch_size), len(samples))
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


# The end PNG and JPEG files promise (IEND, EOI), which their compressed data cannot hold, and how many bytes may
# follow it (some cameras append data): TensorFlow's decoders refuse a file without it, where PIL may decode it.
END_MARKERS = {"PNG": b"IEND\xaeB`\x82", "JPEG": b"\xff\xd9"}
END_SLACK = 4096


def _ends_with(contents, marker, slack=0):
    """Whether ``marker`` lies within the last ``len(marker) + slack`` bytes."""
    length = tf.strings.length(contents)
    start = tf.maximum(length - len(marker) - slack, 0)
    tail = tf.io.decode_raw(tf.strings.substr(contents, start, length - start), tf.uint8)
    windows = tf.stack([tail[i:tf.size(tail) - len(marker) + 1 + i] for i in range(len(marker))], axis=1)
    return tf.reduce_any(tf.reduce_all(tf.equal(windows, tf.constant(list(marker), tf.uint8)), axis=1))


def is_complete_image_file(contents):
    """Whether encoded bytes are a whole PNG, JPEG, BMP, GIF or WebP file (a scalar bool tensor).

    The signature tf.io.decode_image reads the format from, and the end that format promises: an empty string,
    another payload (an error page, a TIFF) or a capture cut short is not one. TensorFlow's decoders raise on a
    truncated file, and a graph cannot catch that, so a served batch holding one failed as a whole. PNG and JPEG
    end with a marker (IEND, EOI) that their compressed data cannot hold; up to 4 KiB after it are allowed, as some
    cameras append data there. GIF ends with its trailer byte; BMP and WebP headers give their size (BMP:
    TensorFlow's own check, pixel offset + rows, and the 8, 24 or 32 bits it decodes; an 8-bit one's palette must
    be the gray ramp, as TensorFlow reads its indices as gray levels). An animated WebP is not
    one either: decoding it aborts the whole process (a served one took the server down). A file corrupt
    elsewhere passes, and fails in the decoder.
    """
    padded = tf.strings.join([contents, tf.constant(b"\0" * 64)])  # substr fails past a string's end (BMP: byte 50)
    length = tf.cast(tf.strings.length(contents), tf.int64)

    def starts(magic, offset=0):
        return tf.equal(tf.strings.substr(padded, offset, len(magic)), magic)

    def little_endian(offset, width, signed=False):  # the integer of ``width`` bytes at ``offset``, as int64
        raw = tf.cast(tf.io.decode_raw(tf.strings.substr(padded, offset, width), tf.uint8), tf.int64)
        value = tf.reduce_sum(raw * tf.constant([256 ** i for i in range(width)], tf.int64))
        return tf.where(value >= 256 ** width // 2, value - 256 ** width, value) if signed else value

    def whole_bmp():
        bits = little_endian(28, 2)
        row_bytes = (bits * tf.abs(little_endian(18, 4, signed=True)) + 31) // 32 * 4
        end = little_endian(10, 4) + row_bytes * tf.abs(little_endian(22, 4, signed=True))
        return (tf.reduce_any(tf.equal(bits, [8, 24, 32])) & tf.equal(end, length)
                & (tf.not_equal(bits, 8) | gray_palette()))

    def gray_palette():  # TensorFlow reads an 8-bit BMP's palette indices as gray levels: right for a gray ramp only
        used = little_endian(46, 4)
        entries = tf.where(tf.equal(used, 0) | (used > 256), tf.constant(256, tf.int64), used)
        start = tf.minimum(14 + little_endian(14, 4), length)  # after the file and DIB headers
        table = tf.io.decode_raw(tf.strings.substr(padded, start, 1024), tf.uint8)
        complete = tf.cast(tf.size(table), tf.int64) >= 4 * entries
        table = tf.reshape(tf.pad(table, [[0, 1024 - tf.size(table)]]), [256, 4])[:, :3]  # blue, green, red
        ramp = tf.cast(tf.range(256)[:, None], tf.uint8)
        return complete & tf.reduce_all(tf.equal(table, ramp) | (tf.range(256, dtype=tf.int64) >= entries)[:, None])

    def animated_webp():  # TensorFlow's WebP decoder (2.21) corrupts the heap on one and aborts the process
        return starts(b"VP8X", offset=12) & tf.not_equal(tf.bitwise.bitwise_and(little_endian(20, 1), 2), 0)

    return tf.case([
        (starts(b"\x89PNG\r\n\x1a\n"), lambda: _ends_with(contents, END_MARKERS["PNG"], slack=END_SLACK)),
        (starts(b"\xff\xd8\xff"), lambda: _ends_with(contents, END_MARKERS["JPEG"], slack=END_SLACK)),
        (starts(b"GIF8"), lambda: _ends_with(contents, b";")),
        (starts(b"BM"), whole_bmp),
        (starts(b"WEBP", offset=8), lambda: (little_endian(4, 4) + 8 <= length) & ~animated_webp()),
    ], default=lambda: tf.constant(False))


def prepare_image(image, size):
    """uint8 ``[H, W, 3]`` -> float32 ``[*size, 3]`` in [0, 1]: the one resize training and serving share."""
    image = tf.image.resize(tf.image.convert_image_dtype(image, tf.float32), size, antialias=True)
    return tf.clip_by_value(image, 0.0, 1.0)  # the anti-aliasing kernel overshoots by ~1e-7


def read_mask(contents):
    """Encoded mask bytes -> float32 ``[H, W]``: 0/255 masks scaled to [0, 1], label maps to {0, 1}.

    A colour mask is a defect wherever any colour channel is lit (its red channel alone lost green and blue
    defects, and palette PNGs decode to colour), and a PNG's fully transparent pixels mark nothing. 16-bit files keep their values (a 16-bit 0/1
    label map cut to 8 bits was empty): read at 16 bits and brought to the 0-255 scale of 8-bit files.
    """
    # PNG alone holds 16 bits; 8-bit files are scaled by 257 here, since decode_image's dtype=uint16 scales other
    # formats by 256 (a GIF's 255 read as 0.996) and TensorFlow's WebP decoder refuses it (a WebP mask stopped the
    # evaluation).
    png = tf.equal(tf.strings.substr(tf.strings.join([contents, tf.constant(b"\0" * 8)]), 0, 8), b"\x89PNG\r\n\x1a\n")
    decoded = tf.cond(png, lambda: tf.io.decode_png(contents, dtype=tf.uint16),
                      lambda: tf.cast(tf.io.decode_image(contents, expand_animations=False), tf.uint16) * 257)
    colour = tf.cond(tf.shape(decoded)[-1] >= 3, lambda: decoded[..., :3], lambda: decoded[..., :1])
    mask = tf.cast(tf.reduce_max(colour, axis=-1), tf.float32) / 257.0
    # A PNG mask drawn on a transparent background: its see-through pixels, whatever their colour, mark nothing.
    # (Not a 32-bit BMP's fourth channel, which writers often leave at 0.)
    see_through = tf.logical_and(png, tf.equal(tf.shape(decoded)[-1] % 2, 0))  # LA or RGBA
    mask = tf.cond(see_through, lambda: tf.where(decoded[..., -1] > 0, mask, 0.0), lambda: mask)
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
