"""Tests of kdlab.metrics against values worked out by hand."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from kdlab.errors import UserError
from kdlab.metrics import METRICS, compute_metrics, higher_is_better

# Binary case: tp = 1 (index 1), fp = 1 (index 2), fn = 0, tn = 2.
BINARY_PRED = [0, 1, 1, 0]
BINARY_GOLD = [0, 1, 0, 0]


def test_accuracy_f1_mcc_binary_by_hand() -> None:
    result = compute_metrics(["accuracy", "f1", "mcc"], BINARY_PRED, BINARY_GOLD)
    assert result["accuracy"] == pytest.approx(3 / 4)
    # precision 1/2, recall 1 -> F1 = 2 * (1/2 * 1) / (1/2 + 1) = 2/3
    assert result["f1"] == pytest.approx(2 / 3)
    # MCC = (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = 2 / sqrt(2*1*3*2)
    assert result["mcc"] == pytest.approx(2 / math.sqrt(12))
    assert list(result) == ["accuracy", "f1", "mcc"]  # caller's order
    assert all(type(value) is float for value in result.values())


def test_f1_is_for_class_one_not_class_zero() -> None:
    # Swapping the roles of 0 and 1: class 1 now has tp = 2, fp = 0, fn = 1 -> F1 = 4/5.
    swapped = compute_metrics(["f1"], [1 - p for p in BINARY_PRED], [1 - g for g in BINARY_GOLD])
    assert swapped["f1"] == pytest.approx(4 / 5)


def test_macro_f1_for_more_than_two_classes() -> None:
    predictions = [0, 1, 2, 2, 1, 0]
    labels = [0, 1, 2, 1, 1, 2]
    # class 0: tp 1, fp 1, fn 0 -> 2/3; class 1: tp 2, fp 0, fn 1 -> 4/5; class 2: tp 1, fp 1, fn 1 -> 1/2
    expected = (2 / 3 + 4 / 5 + 1 / 2) / 3
    assert compute_metrics(["f1"], predictions, labels)["f1"] == pytest.approx(expected)


def test_num_labels_decides_binary_versus_macro() -> None:
    # On a 4-class task an eval slice may only contain classes 0 and 1; it still needs macro F1.
    predictions = [0, 1, 1, 1]
    labels = [0, 1, 0, 1]
    binary = compute_metrics(["f1"], predictions, labels)["f1"]
    macro = compute_metrics(["f1"], predictions, labels, num_labels=4)["f1"]
    assert binary == pytest.approx(4 / 5)  # class 1: tp 2, fp 1, fn 0
    assert macro == pytest.approx((2 / 3 + 4 / 5) / 2)  # class 0: tp 1, fn 1 -> 2/3


def test_regression_metrics_by_hand() -> None:
    predictions = [1.0, 2.0, 3.0]
    labels = [1.0, 3.0, 2.0]
    result = compute_metrics(["pearson", "spearman", "mae", "rmse"], predictions, labels)
    # deviations (-1, 0, 1) and (-1, 1, 0): covariance 1, variances 2 and 2 -> r = 1/2
    assert result["pearson"] == pytest.approx(0.5)
    assert result["spearman"] == pytest.approx(0.5)
    assert result["mae"] == pytest.approx(2 / 3)
    assert result["rmse"] == pytest.approx(math.sqrt(2 / 3))


def test_spearman_is_rank_based() -> None:
    result = compute_metrics(["pearson", "spearman"], [1, 2, 3, 4], [1, 4, 9, 100])
    assert result["spearman"] == pytest.approx(1.0)
    assert result["pearson"] < 0.9


def test_constant_predictions_give_zero_not_nan() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning may leak either
        regression = compute_metrics(["pearson", "spearman"], [0.3, 0.3, 0.3], [1.0, 2.0, 0.5])
        classes = compute_metrics(["mcc", "f1", "accuracy"], [0, 0, 0, 0], [0, 1, 0, 1])
        single = compute_metrics(["pearson"], [1.0], [2.0])
    assert regression == {"pearson": 0.0, "spearman": 0.0}
    assert classes == {"mcc": 0.0, "f1": 0.0, "accuracy": 0.5}
    assert single == {"pearson": 0.0}


def test_scores_tensors_and_arrays_are_accepted() -> None:
    logits = torch.tensor([[2.0, -1.0], [0.1, 0.3], [-0.5, 0.5], [3.0, 0.0]])  # argmax = BINARY_PRED
    from_logits = compute_metrics(["accuracy"], logits, torch.tensor(BINARY_GOLD))
    assert from_logits["accuracy"] == pytest.approx(3 / 4)
    column = compute_metrics(["mae"], np.array([[1.0], [2.0]]), np.array([1.5, 2.0]))
    assert column["mae"] == pytest.approx(0.25)


def test_unknown_metric_and_bad_shapes() -> None:
    with pytest.raises(UserError) as info:
        compute_metrics(["accuracy", "bleu"], [0], [0])
    assert info.value.key == "task.metrics"
    with pytest.raises(ValueError):
        compute_metrics(["accuracy"], [0, 1], [0])
    with pytest.raises(ValueError):
        compute_metrics(["accuracy"], [], [])


def test_metric_directions() -> None:
    assert sorted(METRICS) == ["accuracy", "f1", "mae", "mcc", "pearson", "rmse", "spearman"]
    assert [name for name in sorted(METRICS) if not higher_is_better(name)] == ["mae", "rmse"]
    with pytest.raises(UserError):
        higher_is_better("loss")
