"""Dev-set evaluation with task metrics. Batches are formed from length-sorted examples (less padding)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from kdlab.data.encoding import student_inputs
from kdlab.metrics import compute_metrics


def length_sorted_batches(items: Sequence[dict[str, Any]], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(items)), key=lambda i: len(items[i]["input_ids"]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.inference_mode()
def predict(
    model: nn.Module,
    items: Sequence[dict[str, Any]],
    collate: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
    batch_size: int,
    device: torch.device,
    regression: bool,
) -> tuple[list[float] | list[int], list[float] | list[int]]:
    """Predictions and gold labels in the original item order."""
    was_training = model.training
    model.eval()
    predictions: list[Any] = [None] * len(items)
    for indices in length_sorted_batches(items, batch_size):
        batch = collate([items[i] for i in indices])
        inputs = {k: v.to(device) for k, v in student_inputs(batch).items()}
        logits = model(**inputs).logits.float()
        values = logits.reshape(-1).tolist() if regression else logits.argmax(-1).tolist()
        for i, value in zip(indices, values, strict=True):
            predictions[i] = value
    model.train(was_training)
    labels = [item["label"] for item in items]
    return predictions, labels


def evaluate(
    model: nn.Module,
    items: Sequence[dict[str, Any]],
    collate: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
    batch_size: int,
    device: torch.device,
    regression: bool,
    metrics: Sequence[str],
    num_labels: int | None = None,
) -> dict[str, float]:
    predictions, labels = predict(model, items, collate, batch_size, device, regression)
    return compute_metrics(list(metrics), predictions, labels, num_labels=num_labels)
