"""Papers 002 and 003: pyramid pooling, capsule routing, the per-sample losses, and the two autoencoders'
wiring, against small NumPy references."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from adtf import backbones, losses
from adtf.detectors import PIADE, PyramidAE
from adtf.detectors.reconstruction import DECODERS, decoder_output_size, flatten_channels_first, transposed_decoder
from adtf.errors import AdtfError
from adtf.layers import CapsuleRouting, PyramidPooling, squash
from adtf.layers.pyramid_pooling import adaptive_pool_matrix


def roundtrip(layer):
    return keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer), safe_mode=True)


def torch_adaptive_avg_pool(x, out):
    """NumPy ``torch.nn.AdaptiveAvgPool2d(out)`` on ``[H, W, C]``: bins floor(i n / m) .. ceil((i + 1) n / m)."""
    h, w = x.shape[:2]
    result = np.zeros((out, out, x.shape[2]))
    for i in range(out):
        for j in range(out):
            rows = slice(i * h // out, -(-(i + 1) * h // out))
            cols = slice(j * w // out, -(-(j + 1) * w // out))
            result[i, j] = x[rows, cols].mean(axis=(0, 1))
    return result


def test_adaptive_pooling_uses_torch_bins_even_when_the_grid_is_larger_than_the_map():
    x = np.random.default_rng(0).standard_normal((7, 5, 3))
    for out in (1, 2, 3, 8):
        rows, cols = adaptive_pool_matrix(7, out), adaptive_pool_matrix(5, out)
        np.testing.assert_allclose(np.einsum("ih,hwc,jw->ijc", rows, x, cols), torch_adaptive_avg_pool(x, out),
                                   atol=1e-6)
    # 4x4 -> 8x8 (PIADE's first level at 120 px) repeats each cell over a 2x2 block
    small = np.arange(16.0).reshape(4, 4, 1)
    np.testing.assert_allclose(torch_adaptive_avg_pool(small, 8)[::2, ::2], small)


def test_pyramid_pooling_is_pool_then_1x1_conv_then_batch_norm():
    x = np.random.default_rng(1).standard_normal((2, 4, 4, 6)).astype("float32")
    layer = PyramidPooling((8, 2, 1), (5, 4, 3), relu=True)
    levels = [np.asarray(level) for level in layer(x, training=False)]
    assert [level.shape for level in levels] == [(2, 8, 8, 5), (2, 2, 2, 4), (2, 1, 1, 3)]
    for level, conv, norm, b in zip(levels, layer.convs, layer.norms, (8, 2, 1)):
        pooled = np.stack([torch_adaptive_avg_pool(image, b) for image in x])
        gamma, beta, mean, var = (w.numpy() for w in norm.weights)
        expected = np.maximum((pooled @ conv.kernel.numpy()[0, 0] - mean) / np.sqrt(var + 1e-5) * gamma + beta, 0)
        np.testing.assert_allclose(level, expected, rtol=1e-4, atol=1e-5)
    clone = roundtrip(layer)
    assert (clone.bins, clone.filters, clone.relu) == ([8, 2, 1], [5, 4, 3], True)


def test_squash_is_eq_3_of_paper_002():
    s = np.random.default_rng(2).standard_normal((5, 64)).astype("float32") * np.array([[0.01], [0.3], [1], [3], [30]])
    got = np.asarray(squash(s, constant=1.0))
    norm = np.linalg.norm(s, axis=-1, keepdims=True)
    np.testing.assert_allclose(got, norm ** 2 / (1 + norm ** 2) * s / norm, rtol=1e-4, atol=1e-7)
    assert np.all(np.linalg.norm(got, axis=-1) < 1)


def routing_reference(u, W, iterations, a=1.0):
    """Algorithm 1 of paper 002 in NumPy: u [B, n_in, d_in], W [n, n_in, dim, d_in] -> v [B, n, dim]."""
    u_hat = np.einsum("jide,bie->bjid", W, u)
    b = np.zeros(u_hat.shape[:3])
    for _ in range(iterations):
        c = np.exp(b - b.max(axis=1, keepdims=True))
        c /= c.sum(axis=1, keepdims=True)
        s = (c[..., None] * u_hat).sum(axis=2)
        norm2 = (s ** 2).sum(-1, keepdims=True)
        v = norm2 / (a + norm2) * s / np.sqrt(norm2)
        b = b + (u_hat * v[:, :, None, :]).sum(-1)
    return v


def test_capsule_routing_is_algorithm_1_and_trains_its_prediction_matrices():
    rng = np.random.default_rng(3)
    u = rng.standard_normal((3, 10, 8)).astype("float32")
    layer = CapsuleRouting(num_vectors=2, dim=6, iterations=3)
    layer.build(u.shape)
    layer.W.assign(rng.standard_normal((2, 10, 6, 8)).astype("float32") * 0.3)
    v = np.asarray(layer(u))
    np.testing.assert_allclose(v, routing_reference(u, layer.W.numpy(), 3), rtol=1e-4, atol=1e-5)
    one = CapsuleRouting(num_vectors=1, dim=6)  # a single vector: every coupling is 1, no routing
    one.build(u.shape)
    one.W.assign(layer.W.numpy()[:1])
    s = np.einsum("ide,bie->bd", one.W.numpy()[0], u)
    np.testing.assert_allclose(np.asarray(one(u))[:, 0], routing_reference(u[:, :, :], one.W.numpy(), 1)[:, 0],
                               rtol=1e-4, atol=1e-5)
    assert np.allclose(np.asarray(one(u))[:, 0] / np.linalg.norm(np.asarray(one(u))[:, 0], axis=-1, keepdims=True),
                       s / np.linalg.norm(s, axis=-1, keepdims=True), atol=1e-4)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(layer(u))
    assert float(tf.reduce_sum(tf.abs(tape.gradient(total, layer.W)))) > 0
    assert roundtrip(layer).get_config()["num_vectors"] == 2


def test_losses_are_per_sample_and_ssim_follows_tf_image_ssim():
    rng = np.random.default_rng(4)
    x = rng.random((3, 24, 24, 3)).astype("float32")
    y = x.copy()
    y[1] = np.clip(y[1] + rng.normal(0, 0.2, y[1].shape), 0, 1)
    y[2] = 1 - y[2]
    np.testing.assert_allclose(np.asarray(losses.mse(x, y)), ((x - y) ** 2).mean(axis=(1, 2, 3)), rtol=1e-5)
    ssim = np.asarray(losses.ssim(x, y))
    assert ssim.shape == (3,) and abs(ssim[0] - 1) < 1e-5 and ssim[1] < 0.95 and ssim[2] < ssim[1]
    # the local map equals tf.image.ssim where its 11x11 window fits inside the image
    local = np.asarray(losses.ssim_map(x, y))
    assert local.shape == (3, 24, 24)
    np.testing.assert_allclose(local[:, 5:-5, 5:-5].mean(axis=(1, 2)), ssim, atol=1e-4)
    fx, fy = rng.random((3, 6, 6, 4)).astype("float32"), rng.random((3, 6, 6, 4)).astype("float32")
    terms = {k: np.asarray(v) for k, v in losses.reconstruction_loss(x, y, fx, fy).items()}
    np.testing.assert_allclose(terms["total"], terms["mse"] + terms["perceptual"] + 1 - terms["ssim"], rtol=1e-5)
    assert np.argsort(terms["total"]).tolist() == [0, 1, 2] or terms["total"][0] < terms["total"][1:].min()
    only_mse = losses.reconstruction_loss(x, y, perceptual_weight=0, ssim_weight=0)
    assert set(only_mse) == {"mse", "total"}
    anomaly_map = np.asarray(losses.reconstruction_map(x, y, fx, fy))
    assert anomaly_map.shape == (3, 24, 24) and anomaly_map[0].max() < anomaly_map[2].min()


def test_the_decoders_close_and_flattening_follows_pytorchs_memory_order():
    assert decoder_output_size("mvtec") == 120 and decoder_output_size("mnist") == 28
    for name in DECODERS:
        out = transposed_decoder(name)(np.zeros((2, 8, 8, 16), "float32"))
        assert out.shape == (2, decoder_output_size(name), decoder_output_size(name), 3)
        assert np.all(np.abs(np.asarray(out)) <= 1)
    x = np.random.default_rng(5).standard_normal((2, 3, 4, 5)).astype("float32")
    np.testing.assert_array_equal(np.asarray(flatten_channels_first(x)), x.transpose(0, 3, 1, 2).reshape(2, -1))


def test_squeeze_excite_blocks_go_into_a_pretrained_backbone_without_touching_its_weights():
    plain = backbones.build("efficientnet_lite0", weights=None, input_shape=(64, 64, 3), layers=["block3b_add"])
    with_se = backbones.build("efficientnet_lite0", weights=None, input_shape=(64, 64, 3), layers=["block3b_add"],
                              se_after=("block2b_add", "block3b_add"), se_reduction=4, trainable=True)
    names = [layer.name for layer in with_se.get_layer("efficientnet_lite0_network").layers]
    assert "block2b_add_se" in names and "block3b_add_se" in names
    assert len(with_se.weights) == len(plain.weights) + 4  # two SE blocks of two bias-free matrices
    x = np.random.default_rng(6).random((1, 64, 64, 3)).astype("float32")
    assert with_se(x)["block3b_add"].shape == plain(x)["block3b_add"].shape
    with pytest.raises(AdtfError, match="no layer"):
        backbones.build("efficientnet_lite0", weights=None, input_shape=(64, 64, 3), se_after=("nonexistent",))


def test_piade_decodes_the_longest_vector_at_test_time_and_reports_the_norms():
    detector = PIADE(**PIADE.smoke_test_options, perceptual_weights=None, weights=None)
    x = np.random.default_rng(7).random((3, 32, 32, 3)).astype("float32")
    out = detector.infer(x)
    assert out["vector_norms"].shape == (3, 2) and np.all(out["vector_norms"] < 1)
    terms = ("mse", "perceptual", "ssim")
    np.testing.assert_allclose(out["score"], out["mse"] + out["perceptual"] + 1 - out["ssim"], rtol=1e-4)
    features = detector.encoder(x)[detector.encoder_layer]
    codes, extras = detector.bottleneck(features, training=False)
    levels = detector.pyramid(features)
    capsules = tf.reshape(tf.concat([flatten_channels_first(level) for level in levels], -1), (3, -1, 8))
    vectors = np.asarray(detector.routing(capsules))
    longest = vectors[np.arange(3), np.linalg.norm(vectors, axis=-1).argmax(axis=1)]
    np.testing.assert_allclose(np.asarray(codes[0]), np.asarray(detector.upsample(longest)), rtol=1e-4, atol=1e-5)
    assert all(name in out for name in terms)


def test_bad_autoencoder_settings_fail_with_a_message():
    with pytest.raises(AdtfError, match="encoders must be one of"):
        PyramidAE(**{**PyramidAE.smoke_test_options, "encoders": 3}, weights=None, perceptual_weights=None)
    with pytest.raises(AdtfError, match="train_decode"):
        PIADE(**PIADE.smoke_test_options, train_decode="random", weights=None, perceptual_weights=None)
    with pytest.raises(AdtfError, match="multiple of 64"):
        PyramidAE(**{**PyramidAE.smoke_test_options, "image_size": (40, 40)}, weights=None,
                  perceptual_weights=None)


def test_the_runner_reports_reconstructions_and_logs_them_to_tensorboard(tmp_path):
    from adtf.run import fit_evaluate_export

    results = fit_evaluate_export("pyramid_ae", "synthetic:brick,size=32", out=tmp_path / "run", export=False,
                                  detector=PyramidAE.smoke_test_options, tensorboard=True, verbose=False)
    assert 0.0 <= results["image_auroc"] <= 1.0 and results["best_tpr"] is not None
    assert (tmp_path / "run" / "reconstructions.png").is_file()
    assert 0 < results["mean_ssim_normal"] <= 1 and 0 <= results["image_auroc_mse"] <= 1
    events = list((tmp_path / "run" / "tensorboard" / "reconstructions").glob("events.out.tfevents.*"))
    assert events
    tags = {value.tag for event in tf.compat.v1.train.summary_iterator(str(events[0])) for value in event.summary.value}
    assert tags == {"normal (input | reconstruction)", "anomalous (input | reconstruction)"}


def test_precise_batch_norm_sets_moving_statistics_to_the_mean_over_training_batches():
    detector = PyramidAE(**PyramidAE.smoke_test_options, weights=None, perceptual_weights=None)
    x = np.random.default_rng(8).random((8, 32, 32, 3)).astype("float32")
    detector.ensure_built()
    norm, conv = detector.pyramid.norms[0], detector.pyramid.convs[0]
    norm.moving_mean.assign(np.full(norm.moving_mean.shape, 99.0, "float32"))  # a stale estimate
    detector.fit_statistics(x, verbose=False)  # two batches of batch_size 4
    batch_means = []
    for images in (x[:4], x[4:]):
        features = detector.encoder(images, training=False)[detector.encoder_layer]
        batch_means.append(np.asarray(conv(np.asarray(features).mean(axis=(1, 2), keepdims=True))).mean(axis=(0, 1, 2)))
    np.testing.assert_allclose(norm.moving_mean.numpy(), np.mean(batch_means, axis=0), rtol=1e-4, atol=1e-5)
    assert norm.momentum == 0.9 and detector.fit_info["batch_norm_batches"] == 2


@pytest.mark.parametrize("side, expected", [(28, 32), (32, 32), (256, 120), (900, 120)])
def test_the_autoencoder_presets_run_small_images_at_their_own_size_and_large_ones_at_120(side, expected):
    from adtf.data import AnomalyDataset
    from adtf.run import data_image_size

    dataset = AnomalyDataset("demo", [], [], has_masks=False, arrays=np.zeros((2, side, side), "uint8"))
    for cls in (PIADE, PyramidAE):
        assert all(cls.preset_options(p)["image_size"] is None for p in ("paper", "offline", "fast"))
        size, _ = data_image_size(dataset, cls.image_size_range, cls.image_size_multiple)
        assert size == (expected, expected)


def test_a_long_strip_shrunk_below_the_size_range_is_named(caplog, monkeypatch):
    """A 4096x256 line-scan strip kept within 512 px is fed at 32 px high: its defects vanish, the user must hear."""
    import logging

    from adtf.data import AnomalyDataset
    from adtf.run import data_image_size, warn_about_resizing

    monkeypatch.setattr(logging.getLogger("adtf"), "propagate", True)  # configure_logging turns it off for the CLI

    strip = AnomalyDataset("demo", [], [], has_masks=False, arrays=np.zeros((1, 256, 4096), "uint8"))
    with caplog.at_level("WARNING", logger="adtf"):
        assert data_image_size(strip, (128, 512))[0] == (32, 512)
    assert "shrunk 8.0x to 32x512" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="adtf"):
        data_image_size(AnomalyDataset("demo", [], [], has_masks=False, arrays=np.zeros((1, 900, 900), "uint8")),
                        (128, 512))
    assert caplog.text == ""  # MVTec's 900 px fed at 512: within the range, no warning
    with caplog.at_level("WARNING", logger="adtf"):  # a size the preset fixed (MoN's 224) is checked the same way
        warn_about_resizing([3000, 3000], [4000, 4000], (224, 224))
    assert "(3000x4000, height x width, the median) are shrunk 17.9x to 224x224" in caplog.text and "stretched up to 1.3x" in caplog.text



def test_a_set_of_portrait_and_landscape_parts_is_named(caplog, monkeypatch, tmp_path):
    """Every image is resized to one size: among landscape parts a portrait one is stretched, silently until now."""
    import logging

    from PIL import Image

    from adtf.data import load
    from adtf.run import data_image_size

    monkeypatch.setattr(logging.getLogger("adtf"), "propagate", True)
    for i, (width, height) in enumerate([(300, 200)] * 4 + [(200, 300)] * 4):
        (tmp_path / "parts").mkdir(exist_ok=True)
        Image.new("RGB", (width, height)).save(tmp_path / "parts" / f"{i}.png")
    with caplog.at_level("WARNING", logger="adtf"):
        data_image_size(load(f"folder:{tmp_path / 'parts'}"), (128, 512))
    assert "100% of the training images have another shape than the input size 256x256" in caplog.text
    caplog.clear()
    for i in range(4, 8):
        Image.new("RGB", (300, 200)).save(tmp_path / "parts" / f"{i}.png")
    with caplog.at_level("WARNING", logger="adtf"):
        assert data_image_size(load(f"folder:{tmp_path / 'parts'}"), (128, 512))[0] == (192, 304)
    assert caplog.text == ""


def test_the_authors_centre_crop_puts_the_map_back_where_the_crop_lies():
    """resize_crop=156 scores the centre 120 of a 156 resize: the map of that centre once stretched over the whole
    input, shifting every defect away from its mask."""
    from adtf.detectors.piade import PIADE

    detector = PIADE(image_size=(120, 120), resize_crop=156, weights=None)
    anomaly_map = np.asarray(detector(np.random.default_rng(0).random((1, 156, 156, 3)).astype("float32"))["anomaly_map"])
    assert anomaly_map.shape == (1, 156, 156)
    assert anomaly_map[0, :18].max() == 0 and anomaly_map[0, :, -18:].max() == 0  # the border it never saw
    assert anomaly_map[0, 18:138, 18:138].min() > 0
    # the pixel metrics score what it saw, as SimpleNet's crop (the border, 41 % of the input, scored 0, the lowest)
    seen = detector.scored_part(anomaly_map)
    assert seen.shape == (1, 120, 120) and seen.min() > 0
    assert detector.scored_region == (14, 14, 92, 92)  # in the 120-px frame a pipeline at image_size gives


def test_photos_of_one_aspect_ratio_at_two_sizes_keep_it_where_side_by_side_medians_would_not(caplog, monkeypatch,
                                                                                          tmp_path):
    """8 photos at 1000x750, 7 at 640x480 and 2 portrait ones: the medians of the heights and of the widths, taken
    apart, gave 750x640, a shape none of them has, and the warning then called every image stretched."""
    import logging

    from PIL import Image

    from adtf.data import load
    from adtf.run import data_image_size

    monkeypatch.setattr(logging.getLogger("adtf"), "propagate", True)
    (tmp_path / "parts").mkdir()
    for i, (width, height) in enumerate([(1000, 750)] * 8 + [(640, 480)] * 7 + [(300, 900)] * 2):
        Image.new("RGB", (width, height)).save(tmp_path / "parts" / f"{i}.png")
    with caplog.at_level("WARNING", logger="adtf"):
        size, rule = data_image_size(load(f"folder:{tmp_path / 'parts'}"), (128, 512))
    assert size == (384, 512) and "that share one aspect ratio" in rule
    assert "have another shape" in caplog.text and "100%" not in caplog.text  # only the portrait ones are stretched
