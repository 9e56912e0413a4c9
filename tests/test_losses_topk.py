"""Tests for the top-k logit compression: kdlab.losses.teacher_topk and kdlab.losses.soft_kd_topk.

The reference aggregates the FULL teacher distribution into (top-k classes, one bucket) with numpy in float64,
independently of the implementation, which only ever sees the k cached log-probabilities.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from kdlab.losses import soft_kd, soft_kd_topk, teacher_topk

TEMPERATURES = (0.5, 1.0, 2.0, 4.5)


def random_logits(seed: int, batch: int, classes: int, scale: float = 3.0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (batch, classes)
    return (
        torch.randn(shape, generator=g, dtype=torch.float64) * scale,
        torch.randn(shape, generator=g, dtype=torch.float64) * scale,
    )


def cases(n: int = 40):
    """(seed, B, C, T): varied shapes, including binary classification."""
    rng = np.random.default_rng(0)
    for seed in range(n):
        yield seed, int(rng.integers(1, 6)), int(rng.integers(2, 13)), TEMPERATURES[seed % len(TEMPERATURES)]


def ref_topk_kd(s: Tensor, t: Tensor, k: int, temperature: float) -> float:
    def softmax(x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max())
        return e / e.sum()

    total = 0.0
    for s_row, t_row in zip(s.detach().numpy(), t.detach().numpy(), strict=True):
        p, q = softmax(t_row / temperature), softmax(s_row / temperature)
        top = np.argsort(-p, kind="stable")[:k]
        rest = np.setdiff1d(np.arange(len(p)), top)
        buckets_p = [*p[top], p[rest].sum()] if len(rest) else list(p[top])
        buckets_q = [*q[top], q[rest].sum()] if len(rest) else list(q[top])
        total += sum(a * np.log(a / b) for a, b in zip(buckets_p, buckets_q, strict=True) if a > 0)
    return temperature**2 * total / s.shape[0]


@pytest.mark.parametrize("drop", [0, 1])
def test_equals_soft_kd_when_at_most_one_class_is_dropped(drop: int) -> None:
    for seed, batch, classes, temperature in cases():
        s, t = random_logits(seed, batch, classes)
        logprobs, indices = teacher_topk(t, classes - drop, temperature)
        got = soft_kd_topk(s, logprobs, indices, temperature)
        assert got.dtype == torch.float64
        expected = soft_kd(s, t, temperature)
        assert float(got) == pytest.approx(float(expected), rel=1e-10, abs=1e-12), (seed, batch, classes)


def test_matches_reference_for_any_k() -> None:
    for seed, batch, classes, temperature in cases():
        s, t = random_logits(seed, batch, classes)
        for k in range(1, classes + 1):
            got = soft_kd_topk(s, *teacher_topk(t, k, temperature), temperature=temperature)
            assert float(got) == pytest.approx(ref_topk_kd(s, t, k, temperature), rel=1e-9, abs=1e-12)


def test_non_negative_and_at_most_soft_kd() -> None:
    # Merging classes into one bucket can only lose information: 0 <= top-k KL <= full KL (log-sum inequality).
    for seed, batch, classes, temperature in cases():
        for dtype in (torch.float32, torch.float64):
            s, t = (x.to(dtype) for x in random_logits(seed, batch, classes))
            full = float(soft_kd(s, t, temperature))
            for k in range(1, classes + 1):
                got = float(soft_kd_topk(s, *teacher_topk(t, k, temperature), temperature=temperature))
                assert got >= (-1e-6 if dtype == torch.float32 else 0.0)
                assert got <= full + (1e-5 if dtype == torch.float32 else 1e-12)


def test_zero_when_student_equals_teacher() -> None:
    for seed, batch, classes, temperature in cases(20):
        _, t = random_logits(seed, batch, classes)
        for k in range(1, classes + 1):
            got = soft_kd_topk(t.clone(), *teacher_topk(t, k, temperature), temperature=temperature)
            assert abs(float(got)) < 1e-12


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_temperature_squared_scaling(temperature: float) -> None:
    # As documented: loss(s, t, T) = T² · KL(top-k buckets of softmax(t/T) ‖ those of softmax(s/T)), i.e. T²
    # times the T = 1 loss of the logits divided by T.
    s, t = random_logits(7, 4, 9)
    for k in (1, 3, 8, 9):
        at_t = soft_kd_topk(s, *teacher_topk(t, k, temperature), temperature=temperature)
        at_one = soft_kd_topk(s / temperature, *teacher_topk(t / temperature, k, 1.0), temperature=1.0)
        assert float(at_t) == pytest.approx(temperature**2 * float(at_one), rel=1e-12)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize("k", [1, 3, 5, 6])
def test_gradcheck(k: int, temperature: float) -> None:
    s, t = random_logits(3, 3, 6)
    logprobs, indices = teacher_topk(t, k, temperature)
    s_var = s.clone().requires_grad_(True)
    lp_var = logprobs.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: soft_kd_topk(a, b, indices, temperature), (s_var, lp_var))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_finite_with_extreme_logits(dtype: torch.dtype) -> None:
    big = 1e4 if dtype != torch.float16 else 6e4
    s = torch.tensor([[big, -big, 0.0, -big], [-big, -big, -big, big], [0.0, 0.0, 0.0, 0.0]], dtype=dtype)
    t = torch.tensor([[-big, big, 0.0, 0.0], [big, -big, -big, big], [big, -big, 0.0, -big]], dtype=dtype)
    for k in (1, 2, 3, 4):
        for temperature in (1.0, 3.0):
            logprobs, indices = teacher_topk(t, k, temperature)
            assert torch.isfinite(logprobs).all()
            s_var = s.clone().requires_grad_(True)
            loss = soft_kd_topk(s_var, logprobs, indices, temperature)
            assert loss.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
            loss.backward()
            assert torch.isfinite(loss) and float(loss.detach()) >= 0
            assert s_var.grad is not None and torch.isfinite(s_var.grad).all()


def test_teacher_without_mass_outside_topk() -> None:
    # Teacher probability exactly 0 outside the top-k (logit -inf): the bucket is empty, and 0 · log 0 = 0.
    # With k > 3 the top-k itself holds zero-probability classes.
    s, t = random_logits(1, 3, 6)
    t[:, 3:] = float("-inf")
    for k in (3, 4, 5, 6):
        logprobs, indices = teacher_topk(t, k, 2.0)
        s_var, lp_var = s.clone().requires_grad_(True), logprobs.clone().requires_grad_(True)
        loss = soft_kd_topk(s_var, lp_var, indices, temperature=2.0)
        assert float(loss.detach()) == pytest.approx(float(soft_kd(s, t, 2.0)), rel=1e-10)
        loss.backward()
        assert s_var.grad is not None and torch.isfinite(s_var.grad).all()
        # Also towards the teacher (a learned teacher, or a check of the cache): no 0 · inf from an empty bucket.
        assert lp_var.grad is not None and torch.isfinite(lp_var.grad[torch.isfinite(logprobs)]).all()


def test_teacher_topk_sorted_classes() -> None:
    for seed, batch, classes, temperature in cases(20):
        _, t = random_logits(seed, batch, classes)  # continuous: no ties
        for k in (1, classes // 2 + 1, classes, classes + 5):
            logprobs, indices = teacher_topk(t, k, temperature)
            kk = min(k, classes)
            assert logprobs.shape == indices.shape == (batch, kk) and indices.dtype == torch.long
            assert torch.equal(indices[:, 0], t.argmax(dim=-1))
            assert torch.equal(indices, t.argsort(dim=-1, descending=True)[:, :kk])
            full = torch.log_softmax(t / temperature, dim=-1)
            assert torch.allclose(logprobs, full.gather(1, indices), rtol=0, atol=1e-14)
            assert (logprobs[:, 1:] <= logprobs[:, :-1]).all()


def test_teacher_topk_dtype() -> None:
    _, t = random_logits(0, 2, 5)
    assert teacher_topk(t, 2, 1.0)[0].dtype == torch.float64
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        assert teacher_topk(t.to(dtype), 2, 1.0)[0].dtype == torch.float32


def test_input_validation() -> None:
    s, t = random_logits(0, 2, 5)
    logprobs, indices = teacher_topk(t, 3, 1.0)
    for bad_k in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="k must be"):
            teacher_topk(t, bad_k, 1.0)  # type: ignore[arg-type]
    for bad_t in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            teacher_topk(t, 3, bad_t)
        with pytest.raises(ValueError, match="temperature"):
            soft_kd_topk(s, logprobs, indices, bad_t)
    with pytest.raises(ValueError, match="2-D"):
        teacher_topk(t[0], 3, 1.0)
    with pytest.raises(ValueError, match=r"\[B, k\]"):
        soft_kd_topk(s, logprobs, indices[:, :2])
    with pytest.raises(ValueError, match=r"\[B, k\]"):
        soft_kd_topk(s[:1], logprobs, indices)
    with pytest.raises(ValueError, match=r"\[B, k\]"):
        soft_kd_topk(s[:, :2], logprobs, indices)  # k = 3 > C = 2
    with pytest.raises(ValueError, match="integer"):
        soft_kd_topk(s, logprobs, indices.double())
