"""Tests for kdlab.losses.

Reference values come from plain-Python/numpy loops written independently of the torch implementations, so a
mistake in a reduction, a mask or a KL argument order shows up as a numeric mismatch.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import Tensor

from kdlab.losses import (
    ATTENTION_LOSSES,
    FEATURE_LOSSES,
    attention_kl,
    attention_mse,
    hard_ce,
    hidden_cosine,
    hidden_mse,
    kd_mix,
    logit_mse,
    pkd_normalized_mse,
    regression_mse,
    soft_kd,
)

SEEDS = (0, 1, 2, 3)
HIDDEN_LOSSES: tuple[Callable[..., Tensor], ...] = (hidden_mse, hidden_cosine, pkd_normalized_mse)
ATTN_LOSSES: tuple[Callable[..., Tensor], ...] = (attention_kl, attention_mse)


# ------------------------------------------------------------------------------------------------------------
# Independent references (python floats / numpy float64, explicit loops)
# ------------------------------------------------------------------------------------------------------------


def _np(x: Tensor) -> np.ndarray:
    return x.detach().to(torch.float64).numpy()


def ref_softmax(row: list[float], temperature: float = 1.0) -> list[float]:
    top = max(row)
    exps = [math.exp((v - top) / temperature) for v in row]
    total = sum(exps)
    return [e / total for e in exps]


def ref_kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)


def ref_soft_kd(s: Tensor, t: Tensor, temperature: float) -> float:
    s_rows, t_rows = _np(s).tolist(), _np(t).tolist()
    total = 0.0
    for s_row, t_row in zip(s_rows, t_rows, strict=True):
        total += ref_kl(ref_softmax(t_row, temperature), ref_softmax(s_row, temperature))
    return temperature**2 * total / len(s_rows)


def ref_hard_ce(s: Tensor, labels: Tensor, ignore_index: int = -100) -> float:
    losses = []
    for row, y in zip(_np(s).tolist(), labels.tolist(), strict=True):
        if y != ignore_index:
            losses.append(-math.log(ref_softmax(row)[y]))
    return sum(losses) / len(losses)


def ref_mse(a: Tensor, b: Tensor) -> float:
    x, y = _np(a).ravel(), _np(b).ravel()
    return sum((float(u) - float(v)) ** 2 for u, v in zip(x, y, strict=True)) / len(x)


def _token_mask(mask: Tensor | None, batch: int, length: int) -> list[list[bool]]:
    if mask is None:
        return [[True] * length for _ in range(batch)]
    return [[bool(v) for v in row] for row in mask.tolist()]


def ref_hidden_mse(s: Tensor, t: Tensor, mask: Tensor | None) -> float:
    a, b = _np(s), _np(t)
    valid = _token_mask(mask, a.shape[0], a.shape[1])
    total, count = 0.0, 0
    for bi in range(a.shape[0]):
        for i in range(a.shape[1]):
            if valid[bi][i]:
                total += sum((a[bi, i, d] - b[bi, i, d]) ** 2 for d in range(a.shape[2]))
                count += 1
    return total / (count * a.shape[2])


def ref_hidden_cosine(s: Tensor, t: Tensor, mask: Tensor | None) -> float:
    a, b = _np(s), _np(t)
    valid = _token_mask(mask, a.shape[0], a.shape[1])
    per_token = []
    for bi in range(a.shape[0]):
        for i in range(a.shape[1]):
            if valid[bi][i]:
                u, v = a[bi, i], b[bi, i]
                cos = float(np.dot(u, v)) / (math.sqrt(float(np.dot(u, u))) * math.sqrt(float(np.dot(v, v))))
                per_token.append(1.0 - cos)
    return sum(per_token) / len(per_token)


def ref_pkd(s: Tensor, t: Tensor, mask: Tensor | None) -> float:
    a, b = _np(s), _np(t)
    valid = _token_mask(mask, a.shape[0], a.shape[1])
    per_token = []
    for bi in range(a.shape[0]):
        for i in range(a.shape[1]):
            if valid[bi][i]:
                u = a[bi, i] / math.sqrt(sum(x * x for x in a[bi, i]))
                v = b[bi, i] / math.sqrt(sum(x * x for x in b[bi, i]))
                per_token.append(sum((x - y) ** 2 for x, y in zip(u, v, strict=True)))
    return sum(per_token) / len(per_token)


def ref_attention_kl(s: Tensor, t: Tensor, mask: Tensor | None) -> float:
    a, b = _np(s), _np(t)
    batch, heads, length, _ = a.shape
    valid = _token_mask(mask, batch, length)
    per_example = []
    for bi in range(batch):
        keep = [i for i in range(length) if valid[bi][i]]
        total = 0.0
        for h in range(heads):
            for i in keep:
                for j in keep:
                    p, q = b[bi, h, i, j], a[bi, h, i, j]
                    if p > 0:
                        total += p * math.log(p / q)
        per_example.append(total / (heads * len(keep)))
    return sum(per_example) / batch


def ref_attention_mse(s: Tensor, t: Tensor, mask: Tensor | None) -> float:
    a, b = _np(s), _np(t)
    batch, heads, length, _ = a.shape
    valid = _token_mask(mask, batch, length)
    total, count = 0.0, 0
    for bi in range(batch):
        keep = [i for i in range(length) if valid[bi][i]]
        for h in range(heads):
            for i in keep:
                for j in keep:
                    total += (a[bi, h, i, j] - b[bi, h, i, j]) ** 2
                    count += 1
    return total / count


HIDDEN_REFS = {hidden_mse: ref_hidden_mse, hidden_cosine: ref_hidden_cosine, pkd_normalized_mse: ref_pkd}
ATTN_REFS = {attention_kl: ref_attention_kl, attention_mse: ref_attention_mse}


# ------------------------------------------------------------------------------------------------------------
# Input builders
# ------------------------------------------------------------------------------------------------------------

LENGTHS = (5, 3, 1)  # one full, one half, one single-token example: every padding pattern in one batch
MAX_LEN = 5


def make_mask(lengths: tuple[int, ...] = LENGTHS, max_len: int = MAX_LEN) -> Tensor:
    return torch.tensor([[1] * n + [0] * (max_len - n) for n in lengths], dtype=torch.long)


def make_hidden(seed: int, dim: int = 4, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (len(LENGTHS), MAX_LEN, dim)
    return torch.randn(shape, generator=g, dtype=dtype), torch.randn(shape, generator=g, dtype=dtype)


def random_attention(g: torch.Generator, lengths: tuple[int, ...], heads: int, max_len: int) -> Tensor:
    """Rows that are softmax distributions over the valid keys of each example; padded entries are 0."""
    out = torch.zeros(len(lengths), heads, max_len, max_len, dtype=torch.float64)
    for b, n in enumerate(lengths):
        scores = torch.randn(heads, n, n, generator=g, dtype=torch.float64) * 2
        out[b, :, :n, :n] = scores.softmax(dim=-1)
    return out


def make_attention(seed: int, heads: int = 2) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return random_attention(g, LENGTHS, heads, MAX_LEN), random_attention(g, LENGTHS, heads, MAX_LEN)


def token_pad_positions(mask: Tensor) -> Tensor:
    """bool [B, L, 1]: padded tokens of hidden states."""
    return (mask == 0).unsqueeze(-1)


def attention_pad_positions(mask: Tensor) -> Tensor:
    """bool [B, 1, L, L]: entries whose query (row) or key (column) is padding."""
    pad = mask == 0
    return pad[:, None, :, None] | pad[:, None, None, :]


def fill_garbage(x: Tensor, where: Tensor, seed: int, with_nan: bool = False) -> Tensor:
    g = torch.Generator().manual_seed(1000 + seed)
    garbage = torch.randn(x.shape, generator=g, dtype=x.dtype) * 1e3 - 7.0
    if with_nan:
        flat = garbage.view(-1)
        flat[::3] = float("nan")
        flat[1::3] = float("inf")
        flat[2::5] = -float("inf")
    return torch.where(where, garbage, x)


# ------------------------------------------------------------------------------------------------------------
# Registry
# ------------------------------------------------------------------------------------------------------------


def test_registry_names_and_attention_subset() -> None:
    assert {
        "mse": hidden_mse,
        "cosine": hidden_cosine,
        "pkd": pkd_normalized_mse,
        "attention_kl": attention_kl,
        "attention_mse": attention_mse,
    } == FEATURE_LOSSES
    assert frozenset({"attention_kl", "attention_mse"}) == ATTENTION_LOSSES
    assert FEATURE_LOSSES.keys() >= ATTENTION_LOSSES


@pytest.mark.parametrize("name", sorted(FEATURE_LOSSES))
def test_registry_entries_follow_the_contract(name: str) -> None:
    fn = FEATURE_LOSSES[name]
    if name in ATTENTION_LOSSES:
        s, t = make_attention(0)
    else:
        s, t = make_hidden(0)
    mask = make_mask()
    out = fn(s, t, mask)
    assert out.ndim == 0
    assert torch.isfinite(out)
    # positional call without a mask is part of the contract too
    assert fn(s[:1], t[:1], None).ndim == 0


# ------------------------------------------------------------------------------------------------------------
# soft_kd
# ------------------------------------------------------------------------------------------------------------


def test_soft_kd_hand_value_two_classes() -> None:
    # teacher p = (3/4, 1/4), student q = (1/2, 1/2) at T = 1
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0]])
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert soft_kd(s, t, 1.0).item() == pytest.approx(expected, rel=1e-6)
    # at T = 2 the teacher becomes (√3, 1)/(1+√3) and the result is scaled by 4
    p0 = math.sqrt(3.0) / (1 + math.sqrt(3.0))
    expected_t2 = 4 * (p0 * math.log(p0 / 0.5) + (1 - p0) * math.log((1 - p0) / 0.5))
    assert soft_kd(s, t, 2.0).item() == pytest.approx(expected_t2, rel=1e-6)


def test_soft_kd_argument_order_is_teacher_student() -> None:
    s = torch.tensor([[1.0, 0.0, 0.0]])
    t = torch.tensor([[0.0, 0.0, 4.0]])
    forward_kl = ref_soft_kd(s, t, 1.0)
    reverse_kl = ref_soft_kd(t, s, 1.0)
    assert abs(forward_kl - reverse_kl) > 1e-2  # the check below can only pass for the right order
    assert soft_kd(s, t, 1.0).item() == pytest.approx(forward_kl, rel=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 4.0, 10.0])
def test_soft_kd_equals_t_squared_times_kl_by_hand(seed: int, temperature: float) -> None:
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(4, 6, generator=g, dtype=torch.float64) * 3
    t = torch.randn(4, 6, generator=g, dtype=torch.float64) * 3
    batch_kl = sum(
        ref_kl(ref_softmax(t_row, temperature), ref_softmax(s_row, temperature))
        for s_row, t_row in zip(s.tolist(), t.tolist(), strict=True)
    ) / len(s)
    out = soft_kd(s, t, temperature)
    assert out.item() == pytest.approx(temperature**2 * batch_kl, rel=1e-10, abs=1e-12)
    assert out.item() >= 0.0


@pytest.mark.parametrize("seed", SEEDS)
def test_soft_kd_zero_when_equal(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(5, 7, generator=g) * 4
    assert soft_kd(s, s.clone(), 3.0).item() == pytest.approx(0.0, abs=1e-6)
    # a shift by a per-row constant does not change the distribution either
    assert soft_kd(s, s + 5.0, 3.0).item() == pytest.approx(0.0, abs=1e-5)


def test_soft_kd_is_a_batch_mean() -> None:
    g = torch.Generator().manual_seed(7)
    s = torch.randn(6, 4, generator=g, dtype=torch.float64)
    t = torch.randn(6, 4, generator=g, dtype=torch.float64)
    per_example = torch.stack([soft_kd(s[i : i + 1], t[i : i + 1], 2.0) for i in range(6)])
    torch.testing.assert_close(soft_kd(s, t, 2.0), per_example.mean())


def test_soft_kd_gradient_magnitude_is_temperature_invariant() -> None:
    g = torch.Generator().manual_seed(0)
    s = torch.randn(4, 10, generator=g, dtype=torch.float64)
    t = torch.randn(4, 10, generator=g, dtype=torch.float64)
    s, t = s - s.mean(-1, keepdim=True), t - t.mean(-1, keepdim=True)

    def grad_norm(temperature: float, scaled: bool) -> float:
        x = s.clone().requires_grad_(True)
        loss = soft_kd(x, t, temperature)
        if not scaled:
            loss = loss / temperature**2
        loss.backward()
        assert x.grad is not None
        return x.grad.norm().item()

    scaled_ratio = grad_norm(10.0, True) / grad_norm(40.0, True)
    unscaled_ratio = grad_norm(10.0, False) / grad_norm(40.0, False)
    assert scaled_ratio == pytest.approx(1.0, abs=0.05)
    assert unscaled_ratio == pytest.approx(16.0, rel=0.1)
    # high-temperature limit: the gradient tends to (s − t)/(B·C) for zero-mean logits
    x = s.clone().requires_grad_(True)
    soft_kd(x, t, 1000.0).backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, (s - t) / (4 * 10), rtol=1e-2, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_soft_kd_half_inputs_return_float32(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(3)
    s = (torch.randn(8, 32, generator=g) * 6).to(dtype)
    t = (torch.randn(8, 32, generator=g) * 6).to(dtype)
    out = soft_kd(s, t, 2.0)
    assert out.dtype == torch.float32
    # same rounded inputs, computed exactly: only float32 arithmetic error remains
    assert out.item() == pytest.approx(ref_soft_kd(s.double(), t.double(), 2.0), rel=1e-5)


def test_soft_kd_half_inputs_backpropagate_in_input_dtype() -> None:
    s = torch.randn(3, 5).bfloat16().requires_grad_(True)
    t = torch.randn(3, 5).bfloat16()
    soft_kd(s, t, 2.0).backward()
    assert s.grad is not None and s.grad.dtype == torch.bfloat16
    assert torch.isfinite(s.grad.float()).all()


def test_soft_kd_teacher_zero_probability_classes() -> None:
    # -inf teacher logits (masked classes) mean p = 0 there: 0·log 0 = 0, not nan
    s = torch.tensor([[0.5, 0.0, -0.5]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[1.0, 0.0, -math.inf]], dtype=torch.float64)
    out = soft_kd(s, t, 1.0)
    expected = ref_kl(ref_softmax([1.0, 0.0, -1e300]), ref_softmax([0.5, 0.0, -0.5]))
    assert out.item() == pytest.approx(expected, rel=1e-10)
    out.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()


@pytest.mark.parametrize("temperature", [0.0, -1.0, math.inf, math.nan])
def test_soft_kd_rejects_bad_temperature(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        soft_kd(torch.zeros(2, 3), torch.zeros(2, 3), temperature)


def test_soft_kd_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="same shape"):
        soft_kd(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="2-D"):
        soft_kd(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4))


def test_soft_kd_gradcheck() -> None:
    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 4, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: soft_kd(x, t, 2.5), (s,))


# ------------------------------------------------------------------------------------------------------------
# hard_ce
# ------------------------------------------------------------------------------------------------------------


def test_hard_ce_hand_value() -> None:
    s = torch.tensor([[0.0, 0.0, 0.0], [math.log(2.0), 0.0, -math.inf]])
    labels = torch.tensor([1, 0])
    # row 0: uniform over 3 → ln 3; row 1: p(0) = 2/3 → −ln(2/3)
    expected = (math.log(3.0) - math.log(2.0 / 3.0)) / 2
    assert hard_ce(s, labels).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
def test_hard_ce_random_against_reference_and_non_negative(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(6, 5, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(0, 5, (6,), generator=g)
    out = hard_ce(s, labels)
    assert out.item() == pytest.approx(ref_hard_ce(s, labels), rel=1e-10)
    assert out.item() >= 0.0


def test_hard_ce_zero_for_certain_correct_predictions() -> None:
    labels = torch.tensor([2, 0, 1])
    s = torch.nn.functional.one_hot(labels, 3).double() * 60.0
    assert hard_ce(s, labels).item() == pytest.approx(0.0, abs=1e-20)
    assert hard_ce(s, torch.tensor([0, 1, 2])).item() > 50.0


@pytest.mark.parametrize("ignore_index", [-100, 7])
def test_hard_ce_ignore_index_rows_have_no_effect(ignore_index: int) -> None:
    g = torch.Generator().manual_seed(1)
    s = torch.randn(5, 4, generator=g, dtype=torch.float64)
    labels = torch.tensor([1, ignore_index, 3, ignore_index, 0])
    keep = labels != ignore_index
    s_garbage = s.clone()
    s_garbage[~keep] = torch.tensor([math.nan, math.inf, -math.inf, 1e30], dtype=torch.float64)
    s_garbage.requires_grad_(True)
    out = hard_ce(s_garbage, labels, ignore_index=ignore_index)
    assert out.item() == pytest.approx(hard_ce(s[keep], labels[keep], ignore_index=ignore_index).item(), rel=1e-12)
    assert out.item() == pytest.approx(ref_hard_ce(s, labels, ignore_index), rel=1e-10)
    out.backward()
    assert s_garbage.grad is not None
    assert torch.equal(s_garbage.grad[~keep], torch.zeros_like(s_garbage.grad[~keep]))
    assert torch.isfinite(s_garbage.grad).all()


def test_hard_ce_half_input_returns_float32() -> None:
    s = torch.randn(4, 3).bfloat16()
    assert hard_ce(s, torch.tensor([0, 1, 2, 0])).dtype == torch.float32


def test_hard_ce_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="labels"):
        hard_ce(torch.zeros(3, 4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="2-D"):
        hard_ce(torch.zeros(3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        hard_ce(torch.zeros(3, 4), torch.zeros(3))


def test_hard_ce_gradcheck() -> None:
    g = torch.Generator().manual_seed(0)
    s = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, -100, 2, 1])
    assert torch.autograd.gradcheck(lambda x: hard_ce(x, labels), (s,))


# ------------------------------------------------------------------------------------------------------------
# kd_mix
# ------------------------------------------------------------------------------------------------------------


def _logit_batch(seed: int) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(5, 4, generator=g, dtype=torch.float64) * 2
    t = torch.randn(5, 4, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, 4, (5,), generator=g)
    return s, t, labels


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.9, 1.0])
def test_kd_mix_against_reference_and_non_negative(seed: int, alpha: float) -> None:
    s, t, labels = _logit_batch(seed)
    expected = (1 - alpha) * ref_hard_ce(s, labels) + alpha * ref_soft_kd(s, t, 3.0)
    out = kd_mix(s, t, labels, temperature=3.0, alpha=alpha)
    assert out.item() == pytest.approx(expected, rel=1e-10)
    assert out.item() >= 0.0


def test_kd_mix_endpoints() -> None:
    s, t, labels = _logit_batch(11)
    torch.testing.assert_close(kd_mix(s, t, labels, 2.0, 0.0), hard_ce(s, labels))
    torch.testing.assert_close(kd_mix(s, None, labels, 2.0, 0.0), hard_ce(s, labels))
    torch.testing.assert_close(kd_mix(s, t, None, 2.0, 1.0), soft_kd(s, t, 2.0))
    torch.testing.assert_close(kd_mix(s, t, labels, 2.0, 1.0), soft_kd(s, t, 2.0))
    # in between it is neither endpoint
    mid = kd_mix(s, t, labels, 2.0, 0.5).item()
    assert mid == pytest.approx(0.5 * hard_ce(s, labels).item() + 0.5 * soft_kd(s, t, 2.0).item())
    assert mid != pytest.approx(hard_ce(s, labels).item())


def test_kd_mix_zero_when_equal_and_certain() -> None:
    labels = torch.tensor([1, 0, 2])
    s = torch.nn.functional.one_hot(labels, 3).double() * 60.0
    assert kd_mix(s, s.clone(), labels, 2.0, 0.5).item() == pytest.approx(0.0, abs=1e-12)


def test_kd_mix_ignore_index_rows_have_no_effect_on_the_hard_term() -> None:
    s, t, labels = _logit_batch(4)
    labels = labels.clone()
    labels[1] = -100
    expected = 0.6 * ref_hard_ce(s, labels) + 0.4 * ref_soft_kd(s, t, 2.0)
    assert kd_mix(s, t, labels, 2.0, 0.4).item() == pytest.approx(expected, rel=1e-10)


def test_kd_mix_validation() -> None:
    s, t, labels = _logit_batch(0)
    for alpha in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="alpha"):
            kd_mix(s, t, labels, 2.0, alpha)
    with pytest.raises(ValueError, match="labels"):
        kd_mix(s, t, None, 2.0, 0.5)
    with pytest.raises(ValueError, match="teacher"):
        kd_mix(s, None, labels, 2.0, 0.5)
    with pytest.raises(ValueError, match="temperature"):
        kd_mix(s, t, labels, 0.0, 0.5)
    with pytest.raises(ValueError, match="same shape"):
        kd_mix(s, t[:, :3], labels, 2.0, 0.5)


def test_kd_mix_gradcheck() -> None:
    s, t, labels = _logit_batch(2)
    s = s[:3].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: kd_mix(x, t[:3], labels[:3], 2.0, 0.3), (s,))


# ------------------------------------------------------------------------------------------------------------
# logit_mse and regression_mse
# ------------------------------------------------------------------------------------------------------------


def test_logit_mse_hand_value() -> None:
    s = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    t = torch.tensor([[1.0, 0.0], [0.0, 4.0]])
    assert logit_mse(s, t).item() == pytest.approx((0 + 4 + 9 + 0) / 4)


@pytest.mark.parametrize("seed", SEEDS)
def test_logit_mse_random(seed: int) -> None:
    s, t, _ = _logit_batch(seed)
    out = logit_mse(s, t)
    assert out.item() == pytest.approx(ref_mse(s, t), rel=1e-12)
    assert out.item() >= 0.0
    assert logit_mse(s, s.clone()).item() == 0.0
    per_example = torch.stack([logit_mse(s[i : i + 1], t[i : i + 1]) for i in range(len(s))])
    torch.testing.assert_close(out, per_example.mean())


def test_logit_mse_half_and_shapes() -> None:
    assert logit_mse(torch.ones(2, 3).half(), torch.zeros(2, 3).half()).dtype == torch.float32
    with pytest.raises(ValueError, match="same shape"):
        logit_mse(torch.zeros(2, 3), torch.zeros(3, 2))


def test_logit_mse_gradcheck() -> None:
    s, t, _ = _logit_batch(1)
    s = s.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: logit_mse(x, t), (s,))


def test_regression_mse_hand_value() -> None:
    pred = torch.tensor([[1.0], [2.0], [3.0]])
    target = torch.tensor([1.0, 0.0, 5.0])
    assert regression_mse(pred, target).item() == pytest.approx((0 + 4 + 4) / 3)
    assert regression_mse(pred[:, 0], target).item() == pytest.approx((0 + 4 + 4) / 3)


@pytest.mark.parametrize("seed", SEEDS)
def test_regression_mse_random(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(7, 1, generator=g, dtype=torch.float64)
    target = torch.randn(7, generator=g, dtype=torch.float64)
    out = regression_mse(pred, target)
    assert out.item() == pytest.approx(ref_mse(pred[:, 0], target), rel=1e-12)
    assert out.item() >= 0.0
    assert regression_mse(pred, pred[:, 0].clone()).item() == 0.0
    per_example = torch.stack([regression_mse(pred[i : i + 1], target[i : i + 1]) for i in range(7)])
    torch.testing.assert_close(out, per_example.mean())


def test_regression_mse_does_not_broadcast_b_by_b() -> None:
    # [B, 1] − [B] would silently broadcast to [B, B] in plain torch; the loss must pair rows instead
    pred = torch.tensor([[0.0], [10.0]])
    target = torch.tensor([0.0, 10.0])
    assert regression_mse(pred, target).item() == 0.0


def test_regression_mse_dtypes_and_shapes() -> None:
    assert regression_mse(torch.ones(3, 1).bfloat16(), torch.zeros(3)).dtype == torch.float32
    with pytest.raises(ValueError, match="batch"):
        regression_mse(torch.zeros(3, 1), torch.zeros(4))
    with pytest.raises(ValueError, match=r"\[B\] or \[B, 1\]"):
        regression_mse(torch.zeros(3, 2), torch.zeros(3))


def test_regression_mse_gradcheck() -> None:
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(5, 1, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randn(5, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: regression_mse(x, target), (pred,))


# ------------------------------------------------------------------------------------------------------------
# Hidden-state losses
# ------------------------------------------------------------------------------------------------------------


def test_hidden_mse_hand_value() -> None:
    s = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    t = torch.tensor([[[0.0, 0.0], [9.0, 9.0]]])
    assert hidden_mse(s, t, torch.tensor([[1, 0]])).item() == pytest.approx((1 + 4) / 2)
    assert hidden_mse(s, t, None).item() == pytest.approx((1 + 4 + 36 + 25) / 4)


def test_hidden_cosine_hand_value() -> None:
    s = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]]])
    t = torch.tensor([[[1.0, 1.0], [3.0, 0.0], [-1.0, 7.0]]])
    mask = torch.tensor([[True, True, False]])
    expected = ((1 - 1 / math.sqrt(2)) + 1.0) / 2  # 45° and 90°
    assert hidden_cosine(s, t, mask).item() == pytest.approx(expected, rel=1e-6)


def test_pkd_hand_value() -> None:
    s = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]]])
    t = torch.tensor([[[1.0, 1.0], [3.0, 0.0], [-1.0, 7.0]]])
    mask = torch.tensor([[1, 1, 0]])
    # ‖(1,0) − (1,1)/√2‖² = 2 − √2; orthogonal unit vectors are √2 apart
    expected = ((2 - math.sqrt(2)) + 2.0) / 2
    assert pkd_normalized_mse(s, t, mask).item() == pytest.approx(expected, rel=1e-6)
    # scale invariance, which plain MSE does not have
    assert pkd_normalized_mse(s * 10, t * 0.1, mask).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("fn", HIDDEN_LOSSES, ids=lambda f: f.__name__)
def test_hidden_losses_against_reference(fn: Callable[..., Tensor], seed: int) -> None:
    s, t = make_hidden(seed)
    mask = make_mask()
    ref = HIDDEN_REFS[fn]
    assert fn(s, t, mask).item() == pytest.approx(ref(s, t, mask), rel=1e-10)
    assert fn(s, t, None).item() == pytest.approx(ref(s, t, None), rel=1e-10)


@pytest.mark.parametrize("fn", HIDDEN_LOSSES, ids=lambda f: f.__name__)
def test_hidden_losses_zero_when_equal(fn: Callable[..., Tensor]) -> None:
    s, _ = make_hidden(5, dtype=torch.float32)
    mask = make_mask()
    assert fn(s, s.clone(), mask).item() == pytest.approx(0.0, abs=1e-6)
    assert fn(s, s.clone(), None).item() == pytest.approx(0.0, abs=1e-6)
    assert fn(s, -s, None).item() > 0.5


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("fn", HIDDEN_LOSSES, ids=lambda f: f.__name__)
def test_hidden_losses_non_negative(fn: Callable[..., Tensor], seed: int) -> None:
    s, t = make_hidden(seed, dim=16, dtype=torch.float32)
    assert fn(s, t, make_mask()).item() >= 0.0
    assert fn(s, t, None).item() >= 0.0


@pytest.mark.parametrize("with_nan", [False, True])
@pytest.mark.parametrize("fn", HIDDEN_LOSSES, ids=lambda f: f.__name__)
def test_hidden_losses_padding_has_no_effect(fn: Callable[..., Tensor], with_nan: bool) -> None:
    s, t = make_hidden(2)
    mask = make_mask()
    pad = token_pad_positions(mask)
    s_bad = fill_garbage(s, pad, 0, with_nan).requires_grad_(True)
    t_bad = fill_garbage(t, pad, 1, with_nan)

    clean = fn(s, t, mask)
    out = fn(s_bad, t_bad, mask)
    torch.testing.assert_close(out, clean, rtol=1e-12, atol=0.0)
    # the unpadded tokens of all examples, concatenated into one unpadded sequence
    keep = mask.bool()
    torch.testing.assert_close(out, fn(s[keep][None], t[keep][None], None), rtol=1e-12, atol=1e-15)
    # the garbage really is in the way without a mask, so the checks above can fail
    unmasked = fn(s_bad.detach(), t_bad, None)
    assert not torch.isfinite(unmasked) or abs(unmasked.item() - clean.item()) > 1e-3

    out.backward()
    assert s_bad.grad is not None
    assert torch.isfinite(s_bad.grad).all()
    assert torch.equal(s_bad.grad * pad, torch.zeros_like(s_bad.grad))
    assert (s_bad.grad * ~pad).abs().sum() > 0


@pytest.mark.parametrize("fn", HIDDEN_LOSSES, ids=lambda f: f.__name__)
def test_hidden_losses_accept_one_token_per_example(fn: Callable[..., Tensor]) -> None:
    s, t = make_hidden(3)
    cls_s, cls_t = s[:, 0], t[:, 0]
    expected = fn(cls_s[:, None], cls_t[:, None], None)
    torch.testing.assert_close(fn(cls_s, cls_t, None), expected)
    torch.testing.assert_close(fn(cls_s, cls_t, torch.ones(3, dtype=torch.long)), expected)
    # a [B] mask on [B, D] inputs drops whole examples
    drop_last = torch.tensor([1, 1, 0])
    torch.testing.assert_close(fn(cls_s, cls_t, drop_last), fn(cls_s[:2], cls_t[:2], None))


@pytest.mark.parametrize("fn", HIDDEN_LOSSES, ids=lambda f: f.__name__)
def test_hidden_losses_half_inputs_return_float32(fn: Callable[..., Tensor]) -> None:
    s, t = make_hidden(0, dtype=torch.float32)
    out = fn(s.bfloat16(), t.bfloat16(), make_mask())
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(fn(s.bfloat16().float(), t.bfloat16().float(), make_mask()).item())


@pytest.mark.parametrize("fn", HIDDEN_LOSSES, ids=lambda f: f.__name__)
def test_hidden_losses_reject_bad_shapes(fn: Callable[..., Tensor]) -> None:
    with pytest.raises(ValueError, match="same shape"):
        fn(torch.zeros(2, 3, 4), torch.zeros(2, 3, 5), None)
    with pytest.raises(ValueError, match="mask"):
        fn(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.ones(2, 4))
    with pytest.raises(ValueError, match="mask"):
        fn(torch.zeros(2, 4), torch.zeros(2, 4), torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"\[B, L, D\]"):
        fn(torch.zeros(2, 3, 4, 5), torch.zeros(2, 3, 4, 5), None)


@pytest.mark.parametrize("fn", [hidden_cosine, pkd_normalized_mse], ids=lambda f: f.__name__)
def test_normalised_losses_are_finite_for_zero_vectors(fn: Callable[..., Tensor]) -> None:
    s = torch.zeros(2, 3, 4, requires_grad=True)
    t = torch.randn(2, 3, 4)
    out = fn(s, t, None)
    assert torch.isfinite(out)
    out.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()


@pytest.mark.parametrize("fn", HIDDEN_LOSSES, ids=lambda f: f.__name__)
def test_hidden_losses_gradcheck(fn: Callable[..., Tensor]) -> None:
    s, t = make_hidden(4, dim=3)
    mask = make_mask()
    s = fill_garbage(s, token_pad_positions(mask), 0).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: fn(x, t, mask), (s,))


# ------------------------------------------------------------------------------------------------------------
# Attention losses
# ------------------------------------------------------------------------------------------------------------


def test_attention_kl_hand_value() -> None:
    t = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]]]])
    s = torch.tensor([[[[0.25, 0.75], [0.5, 0.5]]]])
    row0 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    row1 = 1.0 * math.log(1.0 / 0.5)  # the 0·log(0/0.5) term is 0
    assert attention_kl(s, t, None).item() == pytest.approx((row0 + row1) / (1 * 2), rel=1e-6)
    # only token 0 real: one query, one key: t = 0.5, s = 0.25
    assert attention_kl(s, t, torch.tensor([[1, 0]])).item() == pytest.approx(0.5 * math.log(2.0), rel=1e-6)


def test_attention_kl_normalises_per_example_then_averages() -> None:
    # Two examples of different lengths: the loss is the mean of per-example means, not a token-weighted mean.
    g = torch.Generator().manual_seed(0)
    s = random_attention(g, (4, 2), 3, 4)
    t = random_attention(g, (4, 2), 3, 4)
    mask = make_mask((4, 2), 4)
    per_example = [attention_kl(s[b : b + 1, :, :n, :n], t[b : b + 1, :, :n, :n], None) for b, n in enumerate((4, 2))]
    assert attention_kl(s, t, mask).item() == pytest.approx(float(sum(per_example)) / 2, rel=1e-12)


def test_attention_mse_hand_value() -> None:
    t = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]]]])
    s = torch.tensor([[[[0.25, 0.75], [0.5, 0.5]]]])
    assert attention_mse(s, t, None).item() == pytest.approx((2 * 0.25**2 + 2 * 0.5**2) / 4)
    assert attention_mse(s, t, torch.tensor([[1, 0]])).item() == pytest.approx(0.25**2)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("fn", ATTN_LOSSES, ids=lambda f: f.__name__)
def test_attention_losses_against_reference(fn: Callable[..., Tensor], seed: int) -> None:
    s, t = make_attention(seed)
    mask = make_mask()
    assert fn(s, t, mask).item() == pytest.approx(ATTN_REFS[fn](s, t, mask), rel=1e-10)
    full_s, full_t = s[:1], t[:1]  # the first example has no padding
    assert fn(full_s, full_t, None).item() == pytest.approx(ATTN_REFS[fn](full_s, full_t, None), rel=1e-10)


@pytest.mark.parametrize("fn", ATTN_LOSSES, ids=lambda f: f.__name__)
def test_attention_losses_zero_when_equal(fn: Callable[..., Tensor]) -> None:
    s, t = make_attention(1)
    mask = make_mask()
    assert fn(s, s.clone(), mask).item() == pytest.approx(0.0, abs=1e-12)
    assert fn(s.float(), s.float(), mask).item() == pytest.approx(0.0, abs=1e-6)
    assert fn(s, t, mask).item() > 1e-3


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("fn", ATTN_LOSSES, ids=lambda f: f.__name__)
def test_attention_losses_non_negative(fn: Callable[..., Tensor], seed: int) -> None:
    s, t = make_attention(seed, heads=3)
    assert fn(s, t, make_mask()).item() >= 0.0
    assert fn(s.float(), t.float(), make_mask()).item() >= 0.0


@pytest.mark.parametrize("with_nan", [False, True])
@pytest.mark.parametrize("fn", ATTN_LOSSES, ids=lambda f: f.__name__)
def test_attention_losses_padding_has_no_effect(fn: Callable[..., Tensor], with_nan: bool) -> None:
    s, t = make_attention(2)
    mask = make_mask()
    pad = attention_pad_positions(mask)  # padded rows AND padded columns
    s_bad = fill_garbage(s, pad, 0, with_nan).requires_grad_(True)
    t_bad = fill_garbage(t, pad, 1, with_nan)

    clean = fn(s, t, mask)
    out = fn(s_bad, t_bad, mask)
    torch.testing.assert_close(out, clean, rtol=1e-12, atol=0.0)
    assert out.item() == pytest.approx(ATTN_REFS[fn](s, t, mask), rel=1e-10)

    # against the unpadded sub-tensors, example by example
    subs = [(s[b : b + 1, :, :n, :n], t[b : b + 1, :, :n, :n], n) for b, n in enumerate(LENGTHS)]
    if fn is attention_kl:
        expected = sum(fn(a, b, None).item() for a, b, _ in subs) / len(subs)
    else:  # one mean over all valid entries: weight each example by its number of entries
        expected = sum(fn(a, b, None).item() * n * n for a, b, n in subs) / sum(n * n for n in LENGTHS)
    assert out.item() == pytest.approx(expected, rel=1e-12)

    # the garbage really is in the way without a mask, so the checks above can fail
    unmasked = fn(s_bad.detach(), t_bad, None)
    assert not torch.isfinite(unmasked) or abs(unmasked.item() - clean.item()) > 1e-3

    out.backward()
    assert s_bad.grad is not None
    assert torch.isfinite(s_bad.grad).all()
    assert torch.equal(s_bad.grad * pad, torch.zeros_like(s_bad.grad))
    assert (s_bad.grad * ~pad).abs().sum() > 0


def test_attention_kl_zero_teacher_and_student_probabilities_are_safe() -> None:
    # a valid key the teacher ignores contributes 0; one the student ignores is clamped, not −log 0 = inf
    t = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]]]], dtype=torch.float64)
    s = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]]]], dtype=torch.float64, requires_grad=True)
    out = attention_kl(s, t, None)
    assert torch.isfinite(out)
    assert out.item() > 5.0  # the clamped −log ε term dominates
    out.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()


@pytest.mark.parametrize("fn", ATTN_LOSSES, ids=lambda f: f.__name__)
def test_attention_losses_half_inputs_return_float32(fn: Callable[..., Tensor]) -> None:
    s, t = make_attention(0)
    out = fn(s.to(torch.bfloat16), t.to(torch.bfloat16), make_mask())
    assert out.dtype == torch.float32
    expected = fn(s.to(torch.bfloat16).double(), t.to(torch.bfloat16).double(), make_mask())
    assert out.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("fn", ATTN_LOSSES, ids=lambda f: f.__name__)
def test_attention_losses_reject_bad_shapes(fn: Callable[..., Tensor]) -> None:
    with pytest.raises(ValueError, match="same shape"):
        fn(torch.zeros(2, 4, 3, 3), torch.zeros(2, 2, 3, 3), None)
    with pytest.raises(ValueError, match=r"\[B, H, L, L\]"):
        fn(torch.zeros(2, 4, 3, 5), torch.zeros(2, 4, 3, 5), None)
    with pytest.raises(ValueError, match=r"\[B, H, L, L\]"):
        fn(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), None)
    with pytest.raises(ValueError, match="mask"):
        fn(torch.zeros(2, 4, 3, 3), torch.zeros(2, 4, 3, 3), torch.ones(2, 4))


@pytest.mark.parametrize("fn", ATTN_LOSSES, ids=lambda f: f.__name__)
def test_attention_losses_gradcheck(fn: Callable[..., Tensor]) -> None:
    g = torch.Generator().manual_seed(5)
    lengths = (3, 2)
    s = random_attention(g, lengths, 2, 3)
    t = random_attention(g, lengths, 2, 3)
    mask = make_mask(lengths, 3)
    # finite garbage in padded rows/columns: gradcheck then also confirms their derivative is exactly 0
    s = fill_garbage(s, attention_pad_positions(mask), 0).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: fn(x, t, mask), (s,))
