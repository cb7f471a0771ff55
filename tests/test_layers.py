"""adtf.layers against small NumPy references, and their serialisation."""
import keras
import numpy as np
import pytest

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
    clone = roundtrip(layer)
    assert (clone.names, clone.score_names, clone.rules["a"]) == (["a", "b"], ["s0", "s1"], "r_a")
    with pytest.raises(ValueError, match="reserved"):
        WorkingPoints(["custom"], ["s0"])
