"""Evaluation metrics by name.

``compute_metrics(["accuracy", "f1"], predictions, labels)`` returns plain floats, ready for logging and
JSON. Degenerate inputs that make a correlation undefined (constant predictions, a single example) give 0.0
instead of NaN: an untrained model often predicts one class, and NaN would poison best-checkpoint selection
and logs.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from kdlab.errors import UserError

CLASSIFICATION_METRICS = frozenset({"accuracy", "f1", "mcc"})
"""Metrics on class ids."""
REGRESSION_METRICS = frozenset({"pearson", "spearman", "mae", "rmse"})
"""Metrics on real-valued predictions."""
METRICS = CLASSIFICATION_METRICS | REGRESSION_METRICS
"""Every metric name :func:`compute_metrics` knows."""
WORD_METRICS = frozenset({"uas", "las", "uas_punct", "las_punct"})
"""Attachment scores of word-level parsing tasks (:mod:`kdlab.methods.word_eval` computes them)."""

_LOWER_IS_BETTER = frozenset({"mae", "rmse"})


def _check_name(name: str, key: str) -> None:
    if name not in METRICS:
        raise UserError(
            f"unknown metric {name!r}",
            key=key,
            fix=f"use one of {', '.join(sorted(METRICS))}",
        )


def higher_is_better(name: str) -> bool:
    """Whether a larger value of metric ``name`` is better (False for the error metrics mae and rmse)."""
    if name in WORD_METRICS:
        return True
    _check_name(name, "task.main_metric")
    return name not in _LOWER_IS_BETTER


def _as_array(values: Any) -> np.ndarray:
    # Tensors may live on a GPU; numpy cannot read those directly.
    if hasattr(values, "detach"):
        values = values.detach().float().cpu().numpy() if values.is_floating_point() else values.cpu().numpy()
    return np.asarray(values)


def _class_ids(predictions: np.ndarray) -> np.ndarray:
    # [N, C] scores (logits or probabilities) become their argmax, so callers may pass raw model outputs.
    if predictions.ndim == 2 and predictions.shape[1] > 1:
        return predictions.argmax(axis=1).astype(np.int64)
    return predictions.reshape(-1).astype(np.int64)


def _correlation(kind: str, predictions: np.ndarray, labels: np.ndarray) -> float:
    from scipy import stats

    # Undefined correlations (fewer than two points, a constant side) are reported as "no correlation".
    if predictions.size < 2 or np.ptp(predictions) == 0 or np.ptp(labels) == 0:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "pearson":
            value = stats.pearsonr(predictions, labels)[0]
        else:
            value = stats.spearmanr(predictions, labels)[0]
    value = float(value)
    return value if math.isfinite(value) else 0.0


def _f1(predictions: np.ndarray, labels: np.ndarray, binary: bool) -> float:
    from sklearn.metrics import f1_score

    if binary:
        return float(f1_score(labels, predictions, pos_label=1, average="binary", zero_division=0))
    # Macro over the classes that occur in labels or predictions: a class absent from both says nothing.
    return float(f1_score(labels, predictions, average="macro", zero_division=0))


def _mcc(predictions: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import matthews_corrcoef

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(matthews_corrcoef(labels, predictions))
    return value if math.isfinite(value) else 0.0


def compute_metrics(
    names: Iterable[str],
    predictions: Sequence[float] | Any,
    labels: Sequence[float] | Any,
    *,
    num_labels: int | None = None,
) -> dict[str, float]:
    """Compute the named metrics of ``predictions`` against ``labels``.

    ``predictions`` are class ids (or ``[N, C]`` scores, reduced by argmax) for accuracy / f1 / mcc, and real
    values for pearson / spearman / mae / rmse. Lists, numpy arrays and tensors are accepted.

    ``f1`` is the binary F1 of class 1 for two classes and macro F1 otherwise. ``num_labels`` says how many
    classes the task has; without it, a task counts as binary when every label and prediction is 0 or 1.
    Pass it for multi-class tasks evaluated on a few examples, where only classes 0 and 1 might occur.
    """
    names = list(names)
    for name in names:
        _check_name(name, "task.metrics")
    raw_predictions = _as_array(predictions)
    label_array = _as_array(labels).reshape(-1)
    count = raw_predictions.shape[0] if raw_predictions.ndim else 1
    if count != label_array.shape[0]:
        raise ValueError(f"{count} predictions but {label_array.shape[0]} labels")
    if count == 0:
        raise ValueError("cannot compute metrics on zero examples")

    results: dict[str, float] = {}
    if any(name in CLASSIFICATION_METRICS for name in names):
        ids = _class_ids(raw_predictions)
        gold = label_array.astype(np.int64)
        if num_labels is not None:
            binary = num_labels == 2
        else:
            binary = bool(np.isin(np.concatenate([ids, gold]), [0, 1]).all())
        for name in names:
            if name == "accuracy":
                results[name] = float((ids == gold).mean())
            elif name == "f1":
                results[name] = _f1(ids, gold, binary)
            elif name == "mcc":
                results[name] = _mcc(ids, gold)
    if any(name in REGRESSION_METRICS for name in names):
        if raw_predictions.ndim == 2 and raw_predictions.shape[1] != 1:
            raise ValueError(f"regression predictions must be [N] or [N, 1], got {raw_predictions.shape}")
        values = raw_predictions.astype(np.float64).reshape(-1)
        targets = label_array.astype(np.float64)
        for name in names:
            if name in ("pearson", "spearman"):
                results[name] = _correlation(name, values, targets)
            elif name == "mae":
                results[name] = float(np.abs(values - targets).mean())
            elif name == "rmse":
                results[name] = float(np.sqrt(np.square(values - targets).mean()))
    # Keep the caller's order: it is the order metrics are printed and logged in.
    return {name: results[name] for name in names}
