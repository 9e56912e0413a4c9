"""Deployment numbers for a model: parameter counts and CPU latency per batch."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.inference_mode()
def latency_ms(
    model: nn.Module, inputs: dict[str, torch.Tensor], warmup: int = 3, repeats: int = 10
) -> tuple[float, float]:
    """Median and standard deviation of one forward pass over ``inputs`` in milliseconds (eval mode)."""
    was_training = model.training
    model.eval()
    for _ in range(warmup):
        model(**inputs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(**inputs)
        times.append((time.perf_counter() - start) * 1000)
    model.train(was_training)
    return statistics.median(times), statistics.stdev(times) if len(times) > 1 else 0.0
