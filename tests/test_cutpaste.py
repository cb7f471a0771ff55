"""CutPaste (Li et al. 2021; paper 001's self-supervised task) as TensorFlow ops."""
import numpy as np
import tensorflow as tf

from adtf.data.cutpaste import AREA_RATIO, cut_paste, cutpaste_pairs, random_crops


def images(n=16, h=64, w=80):
    return tf.random.stateless_uniform((n, h, w, 3), seed=(4, 2))


def test_the_patch_is_a_copy_of_another_place_of_the_same_image():
    x = images()
    pasted, masks = cut_paste(x, seed=(0, 1), jitter=0.0)
    pasted, masks, x = np.asarray(pasted), np.asarray(masks), np.asarray(x)
    area = masks.mean(axis=(1, 2))
    assert np.all(area >= AREA_RATIO[0] * 0.8) and np.all(area <= AREA_RATIO[1] * 1.2)
    np.testing.assert_array_equal(pasted[masks == 0], x[masks == 0])  # outside the patch nothing changes
    for i in range(len(x)):
        rows, cols = np.flatnonzero(masks[i].any(axis=1)), np.flatnonzero(masks[i].any(axis=0))
        patch = pasted[i, rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]
        h, w = patch.shape[:2]
        sources = [(r, c) for r in range(x.shape[1] - h + 1) for c in range(x.shape[2] - w + 1)
                   if np.array_equal(x[i, r: r + h, c: c + w], patch)]
        assert sources, f"image {i}: the pasted patch is not a crop of the image"


def test_same_seed_same_patches_and_other_seed_other_patches():
    x = images()
    a, ma = cut_paste(x, seed=(5, 9))
    b, mb = cut_paste(x, seed=(5, 9))
    c, mc = cut_paste(x, seed=(5, 10))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(ma), np.asarray(mc))


def test_pairs_label_the_cutpaste_half_and_run_in_tf_data():
    x = images(8)
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(4).enumerate().map(
        lambda i, batch: cutpaste_pairs(batch, seed=tf.stack([tf.constant(3, tf.int64), i])))
    for pair, labels in dataset:
        assert pair.shape == (8, 64, 80, 3)
        np.testing.assert_array_equal(np.asarray(labels), [0] * 4 + [1] * 4)
        assert float(tf.reduce_max(pair)) <= 1.0 and float(tf.reduce_min(pair)) >= 0.0


def test_random_crops_are_exact_pixels():
    x = images(4)
    crops = np.asarray(random_crops(x, 32, seed=(1, 1)))
    for crop, image in zip(crops, np.asarray(x)):
        found = [(r, c) for r in range(33) for c in range(49) if np.array_equal(image[r: r + 32, c: c + 32], crop)]
        assert found
