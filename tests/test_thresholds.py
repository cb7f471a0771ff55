"""adtf.thresholds: paper 000's Table I working points and the generic threshold choosers."""
import json

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from adtf import metrics, thresholds
from adtf.errors import DataError
from adtf.thresholds import WorkingPoint


@pytest.fixture
def normal_scores():
    rng = np.random.default_rng(0)
    return rng.gamma(4.0, 1.0, 50), rng.gamma(2.0, 0.5, 50)  # D_max, D_mean of 50 normal images


def test_working_point_enum_follows_table_1():
    assert [p.value for p in WorkingPoint] == [f"threshold{i}" for i in range(1, 7)]
    assert [p.score for p in WorkingPoint] == ["d_max"] * 3 + ["d_mean"] * 3
    assert [p.rule for p in WorkingPoint] == [
        "max(D_max)", "max(D_max)-std(D_max)", "mean(D_max)+std(D_max)",
        "max(D_mean)", "max(D_mean)-std(D_mean)", "mean(D_mean)+std(D_mean)",
    ]
    assert WorkingPoint("threshold5") == "threshold5"  # a str Enum: plain strings work


def test_working_points_values_are_table_1_with_population_std(normal_scores):
    d_max, d_mean = normal_scores
    points = thresholds.working_points(d_max=d_max, d_mean=d_mean)
    assert list(points) == [f"threshold{i}" for i in range(1, 7)]
    expected = {}
    for i, d in ((1, d_max), (4, d_mean)):
        std = np.sqrt(np.sum((d - d.sum() / d.size) ** 2) / d.size)  # ddof = 0, written out
        past_noise = thresholds.RESCORE_TOLERANCE * max(abs(d))  # the image that set max(D) passes when rescored
        expected.update({f"threshold{i}": max(d) + past_noise, f"threshold{i + 1}": max(d) - std,
                         f"threshold{i + 2}": sum(d) / len(d) + std})
    for name, point in points.items():
        assert point["value"] == pytest.approx(expected[name], rel=1e-12)
        assert point["score"] == WorkingPoint(name).score and point["rule"] == WorkingPoint(name).rule
    assert json.loads(json.dumps(points)) == points  # stored as editable metadata beside the model


def test_threshold_1_and_4_flag_no_normal_calibration_image(normal_scores):
    d_max, d_mean = normal_scores
    points = thresholds.working_points(d_max, d_mean)
    labels = np.r_[np.zeros(50), np.ones(2)]
    scores = {"d_max": np.r_[d_max, 1e3, 0.0], "d_mean": np.r_[d_mean, 1e3, 0.0]}
    results = thresholds.evaluate_working_points(points, labels, scores)
    for name in ("threshold1", "threshold4"):
        assert results[name]["tnr"] == 1.0 and results[name]["tpr"] == 0.5
    for name in ("threshold2", "threshold3", "threshold5", "threshold6"):
        assert results[name]["tnr"] < 1.0  # the margined thresholds lie inside the normal range


def test_evaluate_working_points_is_paper_000_auc_score(normal_scores):
    rng = np.random.default_rng(1)
    d_max, d_mean = normal_scores
    points = thresholds.working_points(d_max, d_mean)
    labels = np.r_[np.zeros(30), np.ones(20)]
    scores = {"d_max": rng.gamma(4.0, 1.0, 50) + 3 * labels, "d_mean": rng.gamma(2.0, 0.5, 50) + labels}
    for name, result in thresholds.evaluate_working_points(points, labels, scores).items():
        flagged = scores[points[name]["score"]] > points[name]["value"]
        assert result["auc"] == pytest.approx(balanced_accuracy_score(labels, flagged), abs=1e-12)
        assert result["tpr"] == flagged[labels == 1].mean() and result["tnr"] == 1 - flagged[labels == 0].mean()
        assert (result["threshold"], result["score"], result["rule"]) == tuple(points[name].values())
    with pytest.raises(DataError, match="needs the score 'd_mean'"):
        thresholds.evaluate_working_points(points, labels, {"d_max": scores["d_max"]})


@pytest.mark.parametrize("d_max,d_mean,message", [
    ([1.0, 2.0], [1.0], "one value per normal image"),
    ([], [], "no normal images"),
    ([1.0, np.inf], [1.0, 2.0], "NaN or infinite"),
])
def test_working_points_errors_are_clear(d_max, d_mean, message):
    with pytest.raises(DataError, match=message):
        thresholds.working_points(d_max, d_mean)


def test_single_normal_image_gives_finite_points():
    points = thresholds.working_points([2.0], [1.0])  # ddof=1 would give NaN here
    assert [p["value"] for p in points.values()] == pytest.approx([2.0002, 2.0, 2.0, 1.0001, 1.0, 1.0])


@pytest.mark.parametrize("fpr", [0.0, 0.01, 0.05, 0.29, 0.5])
@pytest.mark.parametrize("ties", [False, True])
def test_at_normal_quantile_is_lowest_threshold_within_target_fpr(fpr, ties):
    scores = np.random.default_rng(2).normal(size=100)
    scores = np.round(scores, 1) if ties else scores
    t = thresholds.at_normal_quantile(scores, fpr=fpr)
    assert np.mean(scores > t) <= fpr + 1e-12
    lower = scores[scores < scores[scores <= t].max()]  # below the normal score the threshold was set at
    if lower.size:  # any lower observed threshold would exceed the target
        assert np.mean(scores > lower.max()) > fpr
    if fpr == 0:  # just above the maximum: past the float noise of scoring that image again, and no further
        assert scores.max() + 1e-7 < t <= scores.max() + thresholds.RESCORE_TOLERANCE * np.abs(scores).max()


def test_the_rescoring_margin_never_passes_a_score_the_target_flags():
    """Scores far from zero with a narrow spread: a margin of 1e-4 of their magnitude (0.1 here) passed the next
    higher scores too, and a 5 % target flagged none of the 100 normal images."""
    scores = 1000 + np.arange(100) * 1e-3
    t = thresholds.at_normal_quantile(scores, fpr=0.05)
    assert np.count_nonzero(scores > t) == 5 and t > scores[94]


def test_a_threshold_between_two_normal_scores_one_float32_step_apart_flags_the_higher_in_float32():
    low = np.nextafter(np.float32(1.0), np.float32(2))  # odd last bit: the halfway point rounds up, to even
    high = np.nextafter(low, np.float32(2))
    threshold = thresholds.at_normal_quantile(np.float64([low, high]), fpr=0.5)
    assert low <= np.float32(threshold) < high  # the layer keeps float32: the margin rounded onto the higher score


def test_an_fpr_just_below_one_flags_all_but_the_lowest_normal_score():
    threshold = thresholds.at_normal_quantile(np.arange(1000.0), fpr=1 - 1e-13)
    assert np.mean(np.arange(1000.0) > threshold) == 0.999  # it wrapped round to the largest: none flagged


def test_at_normal_quantile_hand_case_and_errors():
    assert thresholds.at_normal_quantile([0.1, 0.2, 0.3, 0.4], fpr=0.25) == pytest.approx(0.3 + 1e-4 * 0.4)
    with pytest.raises(DataError, match="fpr must be in"):
        thresholds.at_normal_quantile([0.1, 0.2], fpr=1.0)
    with pytest.raises(DataError, match="no normal images"):
        thresholds.at_normal_quantile([], fpr=0.1)


def test_labelled_choosers_reuse_metrics():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 60)
    scores = rng.normal(size=60) + labels
    assert thresholds.f1_optimal(labels, scores) == metrics.f1_max(labels, scores)[1]
    for recall in (1.0, 0.9):
        t = thresholds.at_recall(labels, scores, recall)
        assert metrics.rates_at(labels, scores, t)[0] >= recall
        above = np.unique(scores[scores > t])  # the next higher threshold misses the target
        assert above.size == 0 or metrics.rates_at(labels, scores, above[0])[0] < recall
    assert thresholds.at_recall([0, 0, 0, 1], [0.1, 0.3, 0.5, 0.4]) == 0.3


def test_the_image_that_set_a_max_threshold_passes_when_scored_again():
    """Scored again (another batch size, another kernel), a SimpleNet's largest normal score moved from 0.5037176 to
    0.5037191 and its own image was flagged by max_normal."""
    scores = np.random.default_rng(4).normal(0.2, 0.1, 200)
    rescored = scores * (1 + 3e-6)  # float32 noise of that size
    assert not np.any(rescored > thresholds.at_normal_quantile(scores, fpr=0.0))
    points = thresholds.working_points(d_max=scores, d_mean=scores / 2)
    assert not np.any(rescored > points["threshold1"]["value"]) and not np.any(rescored / 2 > points["threshold4"]["value"])


def test_the_1_percent_working_point_says_how_many_normal_images_it_flags():
    """Below 100 normal images it flags none, the same threshold as max_normal: the rule said '1% flagged'."""
    import types

    from adtf.detectors.base import Detector

    owner = types.SimpleNamespace(score_names=["score"])
    few = Detector.working_points_from(owner, {"score": np.arange(40.0)})
    assert few["fpr1_normal"]["value"] == few["max_normal"]["value"]
    assert few["fpr1_normal"]["rule"] == "at most 1% of normal images flagged (0 of 40; under 100 images, max(normal scores))"
    many = Detector.working_points_from(owner, {"score": np.arange(250.0)})
    assert many["fpr1_normal"]["rule"] == "at most 1% of normal images flagged (2 of 250)"
    assert np.sum(np.arange(250.0) > many["fpr1_normal"]["value"]) == 2
