"""The metrics that are ours (EER, the paper's hard AUC, per-class accuracies, the validation threshold,
calibration, video level), and what a set gets when its scores cannot be trusted or it has one class."""
import math

import numpy as np
import pytest

from datasets.index import Sample
from evaluation.metrics import (binary_metrics, choose_threshold, expected_calibration_error, scaled_scores,
                                video_metrics)


def test_binary_metrics_of_one_class_leave_the_two_class_metrics_out():
    m = binary_metrics(np.zeros(5, int), np.linspace(0, 1, 5))
    assert m["acc"] == 0.4 and m["f1"] == 0.0 and m["auc"] is None and m["eer"] is None and m["ap"] is None


def test_non_finite_scores_raise_instead_of_ranking_highest():
    with pytest.raises(ValueError, match="1 of 4 scores are not finite"):
        binary_metrics([0, 0, 1, 1], [0.1, 0.2, 0.8, math.inf])


def test_the_eer_is_where_false_positives_and_false_negatives_balance():
    # at P(fake) >= 0.7: one real of three called fake, one fake of three (0.4) missed: FPR = FNR = 1/3
    m = binary_metrics([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.7, 0.4, 0.8, 0.9])
    assert m["eer"] == pytest.approx(1 / 3) and m["auc"] == pytest.approx(8 / 9)
    assert m["auc_hard"] == pytest.approx(2 / 3) == m["bal_acc"]  # the paper's AUC: the balanced accuracy at 0.5
    perfect = binary_metrics([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert perfect["eer"] == 0.0 and perfect["auc"] == 1.0 and perfect["auc_hard"] == 1.0


def test_thresholds_chosen_on_validation_scores():
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.35, 0.4, 0.9])  # separable at 0.35: every rule finds it
    assert choose_threshold(labels, scores, "eer") == pytest.approx(0.35)
    assert choose_threshold(labels, scores, "balanced") == pytest.approx(0.35)
    assert choose_threshold(np.zeros(3, int), scores[:3], "eer") == 0.5


def test_calibration_error_and_temperature():
    labels = np.array([0, 1, 0, 1])
    assert expected_calibration_error(labels, np.array([0.0, 1.0, 0.0, 1.0])) == 0.0
    assert expected_calibration_error(labels, np.array([1.0, 0.0, 1.0, 0.0])) == 1.0
    p = np.array([0.2, 0.9])
    assert np.allclose(scaled_scores(p, 1.0), p)
    assert scaled_scores(p, 2.0)[1] < 0.9 and scaled_scores(p, 2.0)[0] > 0.2  # a higher temperature softens


def test_video_metrics_average_frames_per_video():
    samples = [Sample(f"{v}/{i}.png", label, "x", v) for v, label in (("a", 0), ("b", 1)) for i in range(3)]
    scores = np.array([0.1, 0.9, 0.2, 0.6, 0.7, 0.1])  # mean: a 0.4, b 0.467; max: a 0.9, b 0.7
    mean = video_metrics(samples, scores, "mean")
    assert mean["n"] == 2 and mean["auc"] == 1.0
    assert video_metrics(samples, scores, "max")["auc"] == 0.0
