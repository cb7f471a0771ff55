"""adtf.data.pipeline: decoding by content, channels, resizing against PIL, masks, shuffling, arrays."""
import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from adtf.data import Sample, load, pipeline
from adtf.errors import DataError


def _save(path, array, fmt="PNG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    path.write_bytes(buffer.getvalue())
    return str(path)


def _smooth(height, width, channels=3, seed=0):
    """A smooth random uint8 image (upsampled noise), so resizing errors stay small and comparable."""
    noise = np.random.default_rng(seed).integers(0, 256, (max(2, height // 4), max(2, width // 4), channels), np.uint8)
    return np.asarray(Image.fromarray(noise.squeeze()).resize((width, height), Image.BILINEAR)).reshape(height, width, -1)


def _one(samples, **kwargs):
    return next(iter(pipeline(samples, batch_size=len(samples), **kwargs)))


def test_element_spec_and_values(tmp_path):
    rgb = _smooth(30, 40)
    samples = [Sample(_save(tmp_path / "a.png", rgb), 0, "good"), Sample(_save(tmp_path / "b.png", rgb), 1, "x")]
    data = pipeline(samples, image_size=(20, 24), batch_size=2)
    image, label, mask, path = data.element_spec
    assert image.shape.as_list() == [None, 20, 24, 3] and image.dtype == tf.float32
    assert label.dtype == tf.int32 and mask.shape.as_list() == [None, 20, 24] and path.dtype == tf.string
    image, label, mask, path = next(iter(data))
    assert label.numpy().tolist() == [0, 1] and [p.decode() for p in path.numpy()] == [s.path for s in samples]
    assert 0.0 <= image.numpy().min() and image.numpy().max() <= 1.0
    assert not mask.numpy().any()  # no mask -> zeros


def test_a_batch_size_beyond_the_data_gives_one_batch_of_it(tmp_path):
    """--batch-size 100000 on two images: tf.data set aside the whole batch's memory and ran out inside TensorFlow."""
    samples = [Sample(_save(tmp_path / f"{i}.png", _smooth(30, 40)), 0, "good") for i in range(2)]
    batches = list(pipeline(samples, image_size=(20, 24), batch_size=10**9))
    assert [len(batch[0]) for batch in batches] == [2]


def test_resize_matches_pil_bilinear(tmp_path):
    rgb = _smooth(64, 96)
    sample = Sample(_save(tmp_path / "a.png", rgb), 0, "good")
    for size in [(32, 48), (40, 50), (64, 96)]:
        reference = np.asarray(Image.fromarray(rgb).resize(size[::-1], Image.BILINEAR)) / 255.0
        image = _one([sample], image_size=size)[0].numpy()[0]
        # PIL rounds its result to uint8; TF keeps float: they agree to within that rounding.
        assert np.abs(image - reference).max() <= 1.5 / 255


def test_bmp_bytes_in_a_png_file_decode(tmp_path):
    rgb = _smooth(16, 16)
    path = _save(tmp_path / "actually_bmp.png", rgb, fmt="BMP")
    assert open(path, "rb").read(2) == b"BM"
    image = _one([Sample(path, 0, "good")], image_size=16)[0].numpy()[0]
    np.testing.assert_allclose(image, rgb / 255.0, atol=1e-6)


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "JPEG"])
def test_gray_becomes_three_equal_channels(tmp_path, fmt):
    gray = _smooth(16, 16, channels=1)[..., 0]
    path = _save(tmp_path / f"g.{fmt.lower()}", gray, fmt=fmt)
    image = _one([Sample(path, 0, "good")], image_size=16)[0].numpy()[0]
    assert image.shape == (16, 16, 3)
    np.testing.assert_array_equal(image[..., 0], image[..., 1])
    np.testing.assert_array_equal(image[..., 0], image[..., 2])
    if fmt != "JPEG":
        np.testing.assert_allclose(image[..., 0], gray / 255.0, atol=1e-6)


@pytest.mark.parametrize("channels", [1, 3])
def test_jpegs_decode_as_pil_decodes_them(tmp_path, channels):
    """TensorFlow's default (fast) DCT was up to 8 grey levels off PIL's and OpenCV's decode: a part decoded by
    another program and sent as pixels was scored on other values than training saw."""
    from adtf.data import decode_image

    noisy = np.random.default_rng(0).integers(0, 256, (48, 64, channels), np.uint8).squeeze()
    for quality, progressive in ((75, False), (95, True)):
        buffer = io.BytesIO()
        Image.fromarray(noisy).save(buffer, format="JPEG", quality=quality, progressive=progressive)
        decoded = decode_image(tf.constant(buffer.getvalue())).numpy()
        reference = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
        np.testing.assert_array_equal(decoded, reference)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF", "WEBP"])
def test_a_whole_image_file_is_complete_and_one_cut_short_is_not(fmt):
    """The check serve_image_bytes makes before decoding: TensorFlow's decoders raise on every file it refuses, so a
    served batch holding a capture cut short failed as a whole."""
    from adtf.data.pipeline import is_complete_image_file

    buffer = io.BytesIO()
    Image.fromarray(_smooth(40, 56)).save(buffer, format=fmt)
    whole = buffer.getvalue()
    complete = lambda contents: bool(is_complete_image_file(tf.constant(contents)))  # noqa: E731
    assert complete(whole)
    tf.io.decode_image(whole)
    for cut in (1, 10, len(whole) // 2):
        assert not complete(whole[:-cut]), cut
        if fmt != "GIF":  # giflib reads a GIF without its last byte, the trailer; we call it incomplete all the same
            with pytest.raises(tf.errors.InvalidArgumentError):
                tf.io.decode_image(whole[:-cut])
    if fmt in ("PNG", "JPEG", "WEBP"):  # what a camera writes after a file's end: still whole, still decoded
        for appended in (b"\0" * 20, np.random.default_rng(1).bytes(3000).replace(b"\xff", b"\0")):
            assert complete(whole + appended)
            tf.io.decode_image(whole + appended)


def test_an_8_bit_bmp_is_whole_only_with_a_gray_palette():
    """TensorFlow decodes an 8-bit BMP's palette indices as gray levels: right for a gray camera's ramp, wrong for
    a colour palette, which the SavedModel scored on the wrong pixels (the loader already refused such a file)."""
    from adtf.data.pipeline import decode_image, is_complete_image_file

    def bmp(image):
        buffer = io.BytesIO()
        image.save(buffer, format="BMP")
        return buffer.getvalue()

    gray = Image.fromarray(_smooth(40, 56)).convert("L")
    assert bool(is_complete_image_file(tf.constant(bmp(gray))))
    np.testing.assert_array_equal(decode_image(tf.constant(bmp(gray))).numpy()[..., 0], np.asarray(gray))
    assert not bool(is_complete_image_file(tf.constant(bmp(Image.fromarray(_smooth(40, 56)).convert("P")))))


@pytest.mark.parametrize("payload", [b"", b"<html>502 Bad Gateway</html>", b"II*\0" + b"\0" * 64, b"BM", b"GIF8"])
def test_what_is_no_image_file_is_not_complete(payload):
    from adtf.data.pipeline import is_complete_image_file

    assert not bool(is_complete_image_file(tf.constant(payload)))


def test_the_shared_images_are_complete(datasets_dir):
    from adtf.data.pipeline import is_complete_image_file

    paths = sorted((datasets_dir / "mtd").rglob("*.jpg"))[:50] + sorted((datasets_dir / "mvtec_bottle").rglob("*.png"))[:50]
    assert paths and all(bool(is_complete_image_file(tf.constant(p.read_bytes()))) for p in paths)


def test_alpha_is_dropped(tmp_path):
    rgba = np.concatenate([_smooth(8, 8), np.full((8, 8, 1), 7, np.uint8)], axis=-1)
    image = _one([Sample(_save(tmp_path / "a.png", rgba), 0, "good")], image_size=8)[0].numpy()[0]
    np.testing.assert_allclose(image, rgba[..., :3] / 255.0, atol=1e-6)


def test_masks_resize_nearest_and_stay_binary(tmp_path):
    rng = np.random.default_rng(1)
    mask = (rng.random((13, 17)) > 0.5).astype(np.uint8) * 255
    mask[0, :] = 9      # faint noise (as on MTD mask borders) counts as background
    mask[1, :] = 200    # a bright non-255 value counts as defect
    image = _save(tmp_path / "i.png", _smooth(13, 17))
    mask_path = _save(tmp_path / "m.png", mask)
    out = _one([Sample(image, 1, "x", mask_path)], image_size=(29, 11))[2].numpy()[0]
    assert set(np.unique(out)) <= {0.0, 1.0}
    binary = Image.fromarray(((mask > 127) * 255).astype(np.uint8))
    reference = np.asarray(binary.resize((11, 29), Image.NEAREST)) / 255.0  # independent nearest
    np.testing.assert_array_equal(out, reference)


@pytest.mark.parametrize("defect_value", [1, 3])
def test_label_map_masks_mark_every_nonzero_pixel(tmp_path, defect_value):
    # 0/1 masks (and class-index maps) are common; scaled by 255 their defects fell under the threshold.
    mask = np.zeros((12, 16), np.uint8)
    mask[3:6, 4:9] = defect_value
    image = _save(tmp_path / "i.png", _smooth(12, 16))
    samples = [Sample(image, 1, "x", _save(tmp_path / "m.png", mask)),
               Sample(image, 0, "good", _save(tmp_path / "empty.png", np.zeros_like(mask)))]
    out = _one(samples, image_size=(12, 16))[2].numpy()
    np.testing.assert_array_equal(out[0], mask > 0)
    assert not out[1].any()


@pytest.mark.parametrize("kind", ["green", "rgba", "rgba_on_transparent_white", "la_on_transparent_white",
                                  "label_map_16_bit", "mask_16_bit"])
def test_colour_and_16_bit_masks_keep_their_defects(tmp_path, kind):
    """A green (or blue) mask read by its red channel, and a 16-bit 0/1 label map cut to 8 bits, were empty."""
    where = np.zeros((12, 16), bool)
    where[3:6, 4:9] = True
    if kind == "green":
        mask = np.zeros((12, 16, 3), np.uint8)
        mask[where, 1] = 255
    elif kind == "rgba":  # opaque everywhere: the alpha channel must not read as a defect
        mask = np.zeros((12, 16, 4), np.uint8)
        mask[..., 3] = 255
        mask[where, 2] = 200
    elif kind == "rgba_on_transparent_white":  # drawn in red on a see-through white layer: read as all defect
        mask = np.full((12, 16, 4), 255, np.uint8)
        mask[..., 3] = 0
        mask[where] = (255, 0, 0, 255)
    elif kind == "la_on_transparent_white":
        mask = np.full((12, 16, 2), 255, np.uint8)
        mask[..., 1] = np.where(where, 255, 0)
    else:
        mask = (where * (1 if kind == "label_map_16_bit" else 65535)).astype(np.uint16)
    image = _save(tmp_path / "i.png", _smooth(12, 16))
    out = _one([Sample(image, 1, "x", _save(tmp_path / "m.png", mask))], image_size=(12, 16))[2].numpy()
    np.testing.assert_array_equal(out[0], where)


@pytest.mark.parametrize("fmt", ["WEBP", "GIF", "BMP"])
def test_masks_of_every_format_read_as_the_png_ones(tmp_path, fmt):
    """decode_image(dtype=uint16) refused WebP (the evaluation stopped at the first WebP mask) and scaled a GIF's 255
    to 0.996, where a PNG's is 1."""
    mask = np.zeros((12, 16), np.uint8)
    mask[3:6, 4:9] = 255
    image = _save(tmp_path / "i.png", _smooth(12, 16))
    path = tmp_path / f"m.{fmt.lower()}"
    Image.fromarray(mask).save(path, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    out = _one([Sample(image, 1, "x", str(path))], image_size=(12, 16))[2].numpy()
    np.testing.assert_array_equal(out[0], mask / 255.0)


def _order(data):
    return [p.decode() for _, _, _, paths in data for p in paths.numpy()]


def test_shuffle_is_deterministic_by_seed(tmp_path):
    samples = [Sample(_save(tmp_path / f"{i:02d}.png", _smooth(4, 4, seed=i)), 0, "good") for i in range(12)]
    plain = _order(pipeline(samples, image_size=4, batch_size=5))
    assert plain == [s.path for s in samples]
    for cache in (False, True):
        data = pipeline(samples, image_size=4, batch_size=5, shuffle=True, seed=3, cache=cache)
        first, second = _order(data), _order(data)
        assert sorted(first) == plain and first != plain
        assert first != second  # a fresh order each epoch...
        again = pipeline(samples, image_size=4, batch_size=5, shuffle=True, seed=3, cache=cache)
        assert [first, second] == [_order(again), _order(again)]  # ...and the same orders for the same seed
    assert _order(pipeline(samples, image_size=4, shuffle=True, seed=4)) != _order(
        pipeline(samples, image_size=4, shuffle=True, seed=3))


def test_batches_and_drop_remainder(tmp_path):
    samples = [Sample(_save(tmp_path / f"{i}.png", _smooth(4, 4)), 0, "good") for i in range(5)]
    assert [len(b[1]) for b in pipeline(samples, image_size=4, batch_size=2)] == [2, 2, 1]
    assert [len(b[1]) for b in pipeline(samples, image_size=4, batch_size=2, drop_remainder=True)] == [2, 2]


def test_in_memory_arrays(datasets_dir):
    ds = load(f"mnist:{datasets_dir / 'mnist'}")
    samples = ds.test[:6]
    image, label, mask, path = _one(samples, arrays=ds.arrays, image_size=28)
    assert image.shape == (6, 28, 28, 3) and not mask.numpy().any()
    np.testing.assert_allclose(image.numpy()[..., 1], ds.arrays[[s.index for s in samples]] / 255.0, atol=1e-6)
    assert label.numpy().tolist() == [s.label for s in samples]
    big = _one(samples[:2], arrays=ds.arrays, image_size=(56, 64))[0]
    assert big.shape == (2, 56, 64, 3)
    with pytest.raises(DataError, match="arrays=ds.arrays"):
        pipeline(samples)


def test_shared_mtd_varying_sizes_batch(datasets_dir):
    ds = load(f"mtd:{datasets_dir / 'mtd'}")
    defective = [s for s in ds.test if s.label][:8]
    image, label, mask, _ = _one(defective, image_size=(64, 64))
    assert image.shape == (8, 64, 64, 3) and label.numpy().all()
    assert set(np.unique(mask.numpy())) <= {0.0, 1.0} and mask.numpy().sum(axis=(1, 2)).min() > 0


def test_no_samples_is_an_error():
    with pytest.raises(DataError, match="no samples"):
        pipeline([])
