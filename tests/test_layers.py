"""adtf.layers against small NumPy references, and their serialisation."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from adtf.layers import SqueezeExcite, WorkingPoints


def roundtrip(layer):
    return keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer), safe_mode=True)


def test_squeeze_excite_is_eq_1_and_2_of_paper_002():
    x = np.random.default_rng(0).standard_normal((2, 5, 4, 16)).astype("float32")
    layer = SqueezeExcite(reduction=4)
    got = np.asarray(layer(x))
    w1, w2 = layer.fc1.kernel.numpy(), layer.fc2.kernel.numpy()
    assert w1.shape == (16, 4) and layer.fc1.bias is None
    s = 1 / (1 + np.exp(-(np.maximum(x.mean(axis=(1, 2)) @ w1, 0) @ w2)))
    np.testing.assert_allclose(got, x * s[:, None, None, :], rtol=1e-5, atol=1e-6)
    clone = roundtrip(layer)
    clone(x)
    clone.set_weights(layer.get_weights())
    assert clone.reduction == 4
    np.testing.assert_allclose(np.asarray(clone(x)), got, atol=1e-6)
    with pytest.raises(ValueError, match="cannot be reduced"):
        SqueezeExcite(reduction=32)(x)


def test_working_points_decide_like_numpy_and_flag_invalid_samples():
    layer = WorkingPoints(["a", "b"], ["s0", "s1"])
    # never calibrated: every part flagged (a fitted, uncalibrated MoN passed every defect), in a graph too
    fresh = np.array([[0.1, 0.1], [9.0, 9.0]], "float32")
    assert np.asarray(layer(fresh)["decisions"]).all() and np.asarray(layer(fresh)["anomalous"]).all()
    assert np.asarray(tf.function(lambda s: layer(s)["anomalous"])(tf.constant(fresh))).all()
    layer.set_point("a", 0.5, "s0", rule="r_a")
    layer.set_point("b", 2.0, "s1", rule="r_b")
    layer.activate("b")
    scores = np.array([[0.4, 3.0], [0.6, 1.0], [np.nan, 0.0], [0.5, 2.0]], "float32")
    images = np.zeros((4, 2, 2, 3), "float32")
    images[3, 1, 1, 2] = np.inf
    out = {k: np.asarray(v) for k, v in layer(scores, images).items()}
    np.testing.assert_array_equal(out["invalid"], [False, False, True, True])
    # strictly above the threshold, on the score each point applies to; invalid samples are anomalous
    np.testing.assert_array_equal(out["decisions"], [[False, True], [True, False], [True, True], [True, True]])
    np.testing.assert_array_equal(out["anomalous"], out["decisions"][:, 1])
    assert np.isposinf(out["scores"][2:]).all() and out["scores"][0, 0] == np.float32(0.4)
    # the explicit slot, and the state a saved config carries
    layer.set_point("custom", -1.0, "s0")
    layer.activate("custom")
    assert np.asarray(layer(scores[:2])["anomalous"]).all() and layer.active_name == "custom"
    layer.set_point("custom", np.nan, "s0")  # a damaged model file's threshold passes no part as normal
    assert np.asarray(layer(scores[:2])["anomalous"]).all()
    # in a graph too, as predict and the SavedModel run it (the optimiser turned "not at or below" into "above")
    assert np.asarray(tf.function(lambda s: layer(s)["anomalous"])(tf.constant(scores[:2]))).all()
    clone = roundtrip(layer)
    assert (clone.names, clone.score_names, clone.rules["a"]) == (["a", "b"], ["s0", "s1"], "r_a")
    layer.set_point("custom", -1.0, "s0", rule="explicit: s0 > -1.0")
    layer.activate("a")  # back to a calibrated point: the explicit one is gone, from the weights and the record
    assert "custom" not in layer.rules and np.isposinf(layer.point("custom")["value"])
    with pytest.raises(ValueError, match="reserved"):
        WorkingPoints(["custom"], ["s0"])


def _bilinear_half_pixel(x, size):
    """NumPy bilinear resize of [h, w, C] with half-pixel centres (torch align_corners=False, upsampling)."""
    h, w = x.shape[:2]
    out_h, out_w = size

    def axis(n_in, n_out):
        centre = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        centre = np.clip(centre, 0, n_in - 1)
        low = np.floor(centre).astype(int)
        high = np.minimum(low + 1, n_in - 1)
        return low, high, centre - low

    y0, y1, fy = axis(h, out_h)
    x0, x1, fx = axis(w, out_w)
    top = x[y0][:, x0] * (1 - fx)[None, :, None] + x[y0][:, x1] * fx[None, :, None]
    bottom = x[y1][:, x0] * (1 - fx)[None, :, None] + x[y1][:, x1] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]


def _adaptive_pool(v, m):
    n = len(v)
    return np.array([v[(i * n) // m: -((-(i + 1) * n) // m)].mean() for i in range(m)])


def _simplenet_reference(levels, p, pretrain_dim, target_dim):
    """The authors' order, literally: unfold (C, kh, kw), interpolate every unfolded value, pool, stack, pool."""
    h0, w0 = levels[0].shape[1:3]
    out = np.zeros((len(levels[0]), h0, w0, target_dim))
    for b in range(len(levels[0])):
        per_level = []
        for level in levels:
            x = level[b]
            h, w, c = x.shape
            padded = np.pad(x, ((p // 2, p // 2), (p // 2, p // 2), (0, 0)))
            unfolded = np.stack([np.stack([padded[i:i + p, j:j + p, :].transpose(2, 0, 1).ravel()
                                           for j in range(w)]) for i in range(h)])  # [h, w, C*p*p]
            if (h, w) != (h0, w0):
                unfolded = _bilinear_half_pixel(unfolded, (h0, w0))
            per_level.append(np.apply_along_axis(_adaptive_pool, -1, unfolded, pretrain_dim))
        stacked = np.concatenate(per_level, axis=-1)
        out[b] = np.apply_along_axis(_adaptive_pool, -1, stacked, target_dim)
    return out


@pytest.mark.parametrize("channels, pretrain_dim, target_dim, p", [((8, 12), 48, 48, 3), ((6, 10), 40, 30, 3),
                                                                   ((4, 8), 24, 17, 3), ((4, 8), 24, 17, 1),
                                                                   ((5, 3), 64, 20, 5)])
def test_local_aggregation_matches_the_authors_order_in_numpy(channels, pretrain_dim, target_dim, p):
    from adtf.layers import LocalAggregation

    rng = np.random.default_rng(0)
    levels = [rng.standard_normal((2, 8, 6, channels[0])).astype("float32"),
              rng.standard_normal((2, 4, 3, channels[1])).astype("float32")]
    layer = LocalAggregation(p, pretrain_dim, target_dim)
    got = np.asarray(layer(levels))
    np.testing.assert_allclose(got, _simplenet_reference(levels, p, pretrain_dim, target_dim), rtol=1e-4, atol=1e-5)
    assert roundtrip(layer).get_config() == layer.get_config()


def test_local_aggregation_takes_images_of_any_size():
    """In a graph whose spatial sizes are unknown (a SavedModel signature, tiles of several sizes) the
    coarser level is still brought to the finer grid: a static size check alone would skip it."""
    import tensorflow as tf

    from adtf.layers import LocalAggregation

    rng = np.random.default_rng(1)
    layer = LocalAggregation(3, 24, 17)
    any_size = tf.function(lambda fine, coarse: layer([fine, coarse]),
                           input_signature=[tf.TensorSpec((None, None, None, 4)), tf.TensorSpec((None, None, None, 8))])
    for (h, w) in [(8, 6), (10, 14)]:
        levels = [rng.standard_normal((1, h, w, 4)).astype("float32"),
                  rng.standard_normal((1, h // 2, w // 2, 8)).astype("float32")]
        np.testing.assert_allclose(np.asarray(any_size(*levels)), _simplenet_reference(levels, 3, 24, 17),
                                   rtol=1e-4, atol=1e-5)


def test_local_aggregation_refuses_an_even_neighbourhood_in_one_line():
    from adtf.errors import AdtfError
    from adtf.layers import LocalAggregation

    with pytest.raises(AdtfError, match="patch_size must be odd.*got 2"):
        LocalAggregation(2, 8, 8)


@pytest.mark.parametrize("shape, sigma", [((2, 40, 36), 4.0), ((1, 64, 64), 2.5), ((1, 12, 20), 4.0), ((3, 5, 3), 4.0)])
def test_gaussian_blur_matches_scipy(shape, sigma):
    from scipy.ndimage import gaussian_filter

    from adtf.layers import GaussianBlur

    maps = np.random.default_rng(1).random(shape).astype("float32")
    expected = np.stack([gaussian_filter(m.astype(np.float64), sigma) for m in maps])
    layer = GaussianBlur(sigma)
    np.testing.assert_allclose(np.asarray(layer(maps)), expected, rtol=1e-5, atol=1e-6)  # maps smaller than the kernel too
    unknown_size = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None), tf.float32)])
    np.testing.assert_allclose(unknown_size(maps).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_sparse_coding_agrees_with_scikit_learn_sparse_encode():
    from sklearn.decomposition import sparse_encode

    from adtf.layers import SparseCoding

    rng = np.random.default_rng(0)
    dictionary = rng.standard_normal((48, 12))
    dictionary /= np.linalg.norm(dictionary, axis=1, keepdims=True)  # unit-norm atoms, as eq. 8 asks
    y = rng.standard_normal((40, 12))
    expected = sparse_encode(y, dictionary, algorithm="lasso_cd", alpha=0.3, max_iter=10_000)
    layer = SparseCoding(atoms=48, dim=12, alpha=0.3, steps=2000)
    layer.set_dictionary(dictionary)
    codes = np.asarray(layer(y.astype("float32").reshape(5, 8, 12))).reshape(40, 48)
    # The lasso's solution is unique here: FISTA reaches scikit-learn's codes, zeros included.
    np.testing.assert_allclose(codes, expected, atol=2e-3)
    assert 0.05 < np.mean(expected != 0) < 0.6
    errors = np.asarray(layer.reconstruction_error(y.astype("float32")))
    np.testing.assert_allclose(errors, ((y - expected @ dictionary) ** 2).sum(axis=1), rtol=1e-2, atol=1e-3)
    # The objective after the production number of steps (100) is within 1e-3 of the optimum.
    fast = SparseCoding(atoms=48, dim=12, alpha=0.3, steps=100)
    fast.set_dictionary(dictionary)
    objective = lambda x: 0.5 * ((y - x @ dictionary) ** 2).sum(axis=1) + 0.3 * np.abs(x).sum(axis=1)  # noqa: E731
    assert np.max(objective(np.asarray(fast(y.astype("float32")), np.float64)) - objective(expected)) < 1e-3
    clone = roundtrip(layer)
    assert (clone.atoms, clone.dim, clone.alpha, clone.steps) == (48, 12, 0.3, 2000)


def test_a_layer_holding_sparse_coding_it_does_not_call_is_built_without_a_keras_warning():
    """FlowDictionary scoring with its flow or its Gaussians never calls its dictionary; its first call warned that it
    'has unbuilt state' (on every fit of the CutPaste + Gaussian baseline, printed by adtf-fit)."""
    import warnings

    import keras

    from adtf.layers import SparseCoding

    class Holder(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.coding = SparseCoding(atoms=4, dim=3)

        def call(self, x):
            return x

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Holder()(np.zeros((1, 3), "float32"))


def test_realnvp_flow_is_invertible_and_its_log_det_is_the_jacobians():
    import tensorflow as tf

    from adtf.layers import RealNVPFlow
    from adtf.layers.flow import flow_nll

    flow = RealNVPFlow(couplings=8, hidden=16, seed=3)
    x = np.random.default_rng(1).standard_normal((4, 6)).astype("float32")
    flow(x)
    for network in flow.networks:  # move the flow off the identity it starts at
        last = network.layers[-1]
        last.kernel.assign(np.random.default_rng(2).normal(0, 0.3, last.kernel.shape))
    latent, log_det = (np.asarray(v) for v in flow(x))
    np.testing.assert_allclose(np.asarray(flow.bijector().inverse(latent)), x, atol=1e-4)
    for i in range(len(x)):
        with tf.GradientTape() as tape:
            xi = tf.constant(x[i: i + 1])
            tape.watch(xi)
            ti, _ = flow(xi)
        jacobian = np.asarray(tape.batch_jacobian(ti, xi))[0]
        np.testing.assert_allclose(log_det[i], np.log(abs(np.linalg.det(jacobian))), atol=1e-3)
    expected = (0.5 * (latent ** 2).sum(axis=1) - log_det) / 6
    np.testing.assert_allclose(np.asarray(flow_nll(latent, log_det)), expected, rtol=1e-5)
    assert roundtrip(flow).get_config()["couplings"] == 8


def test_top_regions_keep_the_k_highest_tiles():
    from adtf.layers import TopRegions

    maps = np.zeros((1, 20, 30), "float32")
    peaks = {(2, 3): 5.0, (12, 25): 4.0, (19, 29): 3.0, (7, 14): 2.0, (0, 20): 1.5, (15, 5): 1.0}  # one per tile
    for (r, c), value in peaks.items():
        maps[0, r, c] = value
    mask = np.asarray(TopRegions(k=5, region_size=8)(maps))[0]
    assert mask.shape == (20, 30) and mask.dtype == bool
    for (r, c), value in peaks.items():
        assert mask[r, c] == (value > 1.0), (r, c)
    assert mask.sum() == 3 * 64 + 8 * 6 + 4 * 6  # three whole 8x8 tiles, two cut by the border (width 30, height 20)
