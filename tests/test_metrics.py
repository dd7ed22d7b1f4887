"""metrics.py's ROC, AUC, AP and F1 against scikit-learn's: equal to the last bit, ties and weights included."""
import numpy as np
import pytest
from sklearn import metrics as sk

from evaluation.metrics import average_precision, binary_metrics, f1, roc_auc, roc_curve


def cases():
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 17, 100, 1000, 5000):
        for kind in ("continuous", "ties", "hard", "float32"):
            labels = rng.integers(0, 2, n)
            labels[:2] = (0, 1)  # both classes
            if kind == "continuous":
                scores = rng.random(n)
            elif kind == "ties":
                scores = rng.integers(0, 7, n) / 6
            elif kind == "hard":
                scores = rng.integers(0, 2, n).astype(float)
            else:  # softmax outputs as a model writes them
                scores = (labels * 0.3 + rng.random(n).astype(np.float32) * 0.7).astype(np.float32)
            yield labels, scores, rng.multinomial(n, np.full(n, 1 / n))


@pytest.mark.parametrize("labels, scores, weights", list(cases()))
def test_the_same_numbers_as_scikit_learn(labels, scores, weights):
    for ours, theirs in zip(roc_curve(labels, scores), sk.roc_curve(labels, scores)):
        assert np.array_equal(ours, theirs)
    assert roc_auc(labels, scores) == sk.roc_auc_score(labels, scores)
    if len(np.unique(labels[weights > 0])) == 2:
        assert roc_auc(labels, scores, weights) == sk.roc_auc_score(labels, scores, sample_weight=weights)
    assert average_precision(labels, scores) == sk.average_precision_score(labels, scores)
    pred = (scores >= 0.5).astype(int)
    assert f1(labels, pred) == sk.f1_score(labels, pred, zero_division=0)
    assert f1(np.zeros(4, int), np.zeros(4, int)) == sk.f1_score(np.zeros(4, int), np.zeros(4, int), zero_division=0)


def test_binary_metrics_of_one_class_leave_the_two_class_metrics_out():
    m = binary_metrics(np.zeros(5, int), np.linspace(0, 1, 5))
    assert m["acc"] == 0.4 and m["f1"] == 0.0 and m["auc"] is None and m["eer"] is None and m["ap"] is None
