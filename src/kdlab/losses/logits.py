"""Losses on model outputs: soft-label KD, hard-label cross-entropy, their mix, logit MSE, regression MSE.

All functions are pure and return a scalar tensor. Half-precision inputs (fp16/bf16) are upcast to float32
before any arithmetic, because softmax/log and sums of squares lose too much precision (or overflow) in 16
bits; float64 inputs stay float64 so that ``torch.autograd.gradcheck`` works.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["hard_ce", "kd_mix", "logit_mse", "regression_mse", "soft_kd", "soft_kd_topk", "teacher_topk"]


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float32, or a wider float if any input already is one."""
    dtype = torch.float32
    for tensor in tensors:
        if tensor.is_floating_point():
            dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def _check_logit_pair(fn: str, student_logits: Tensor, teacher_logits: Tensor) -> None:
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"{fn}: student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} must have the same shape [B, C]"
        )
    if student_logits.ndim != 2:
        raise ValueError(f"{fn}: logits must be 2-D [B, C], got shape {tuple(student_logits.shape)}")


def soft_kd(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Soft-label distillation loss (Hinton et al. 2015), "batchmean" KL scaled by T².

    ``loss = T² · (1/B) Σ_b KL(softmax(t_b/T) ‖ softmax(s_b/T))``
    with ``KL(p ‖ q) = Σ_c p_c (log p_c − log q_c)``, both log-probabilities taken with ``log_softmax``.

    The T² factor keeps the gradient magnitude roughly independent of T (the gradient of the unscaled KL
    shrinks like 1/T²), so the loss can be mixed with a hard-label term without retuning the weight.

    Args:
        student_logits: ``[B, C]``, any float dtype.
        teacher_logits: ``[B, C]``, same shape. Classes the teacher gives probability exactly 0 (logit
            ``-inf``) contribute 0 (``0 · log 0 = 0``).
        temperature: ``T > 0``.

    Returns:
        Scalar in float32 (float64 if an input is float64), also for fp16/bf16 inputs.

    Raises:
        ValueError: shapes differ or are not 2-D, or ``temperature`` is not a finite positive number.
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"soft_kd: temperature must be a finite number > 0, got {temperature!r}")
    _check_logit_pair("soft_kd", student_logits, teacher_logits)
    dtype = _compute_dtype(student_logits, teacher_logits)
    log_q = F.log_softmax(student_logits.to(dtype) / temperature, dim=-1)
    log_p = F.log_softmax(teacher_logits.to(dtype) / temperature, dim=-1)
    p = log_p.exp()
    # Where the teacher probability is exactly 0, log_p may be -inf and p·(log_p − log_q) would be
    # 0·inf = nan; masking the log-ratio (not the product) also keeps that nan out of the backward pass.
    log_ratio = torch.where(p > 0, log_p - log_q, torch.zeros_like(p))
    pointwise = p * log_ratio
    batch = student_logits.shape[0]
    return pointwise.sum() * (temperature**2 / max(batch, 1))


def _log1mexp(a: Tensor) -> Tensor:
    """``log(1 − exp(a))`` for ``a < 0``, accurate at both ends (Mächler 2012): ``expm1`` near 0, ``log1p`` far."""
    near = a > -math.log(2.0)
    # Each branch only ever sees inputs where it is finite, so the branch not taken cannot put inf/nan into the
    # backward pass (torch.where passes gradient 0 to it, and 0 · inf = nan).
    near_branch = torch.log(-torch.expm1(torch.where(near, a, -1.0)))
    far_branch = torch.log1p(-torch.exp(torch.where(near, -1.0, a)))
    return torch.where(near, near_branch, far_branch)


def teacher_topk(teacher_logits: Tensor, k: int, temperature: float) -> tuple[Tensor, Tensor]:
    """Compress the teacher's output distribution to its ``k`` most likely classes (a top-k logit cache).

    ``log p = log_softmax(t / T)``; returns ``(log p[b, i_1..i_k], (i_1..i_k))`` with
    ``p[b, i_1] ≥ … ≥ p[b, i_k]``, the input of :func:`soft_kd_topk` at the same ``T``.

    Args:
        teacher_logits: ``[B, C]``, any float dtype.
        k: number of classes kept, ``>= 1``; clipped to ``C``.
        temperature: ``T > 0``.

    Returns:
        Log-probabilities ``[B, k]`` in float32 (float64 for float64 logits) and class indices ``[B, k]`` long.
    """
    _check_temperature("teacher_topk", temperature)
    if teacher_logits.ndim != 2:
        raise ValueError(f"teacher_topk: logits must be 2-D [B, C], got shape {tuple(teacher_logits.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"teacher_topk: k must be an integer >= 1, got {k!r}")
    log_p = F.log_softmax(teacher_logits.to(_compute_dtype(teacher_logits)) / temperature, dim=-1)
    values, indices = torch.topk(log_p, min(k, log_p.shape[-1]), dim=-1, largest=True, sorted=True)
    return values, indices


def soft_kd_topk(
    student_logits: Tensor,
    teacher_topk_logprobs: Tensor,
    teacher_topk_indices: Tensor,
    temperature: float = 1.0,
) -> Tensor:
    """Soft-label KD against a top-k compressed teacher (as DistillKit caches LLM logits).

    The teacher distribution is known on its top-k classes ``K_b`` only; all other classes form one bucket with
    mass ``r_t = 1 − Σ_{j∈K_b} p_j``. The student's distribution ``q = softmax(s/T)`` is aggregated the same way,
    ``r_s = Σ_{c∉K_b} q_c``, and the loss is the KL between the two (k+1)-bucket distributions:

    ``loss = T² · (1/B) Σ_b [ Σ_{j∈K_b} p_j (log p_j − log q_j) + r_t (log r_t − log r_s) ]``, ``0 · log 0 = 0``.

    ``log r_s`` is a logsumexp over the student's classes outside ``K_b`` (no cancellation when the student is
    confident); ``log r_t = log(1 − exp(logsumexp_j log p_j))``, with ``r_t`` clamped to ``[0, 1]`` against
    rounding. When ``k = C`` there is no bucket; for ``k ≥ C − 1`` the loss equals :func:`soft_kd` (up to
    rounding). Like :func:`soft_kd`, the T² factor keeps gradient magnitudes roughly independent of T.

    Args:
        student_logits: ``[B, C]``, any float dtype.
        teacher_topk_logprobs: ``[B, k]`` teacher log-probabilities at temperature ``T`` (from
            :func:`teacher_topk` with the same ``T``).
        teacher_topk_indices: ``[B, k]`` integer class ids, distinct within a row.
        temperature: ``T > 0``.

    Returns:
        Scalar in float32 (float64 if an input is float64), also for fp16/bf16 inputs.

    Raises:
        ValueError: bad shapes, dtypes, ``k > C`` or a bad temperature.
    """
    _check_temperature("soft_kd_topk", temperature)
    if student_logits.ndim != 2:
        raise ValueError(f"soft_kd_topk: logits must be 2-D [B, C], got shape {tuple(student_logits.shape)}")
    batch, classes = student_logits.shape
    top_shape = tuple(teacher_topk_logprobs.shape)
    if (
        len(top_shape) != 2
        or top_shape != tuple(teacher_topk_indices.shape)
        or top_shape[0] != batch
        or not 1 <= top_shape[1] <= classes
    ):
        raise ValueError(
            f"soft_kd_topk: teacher log-probabilities {top_shape} and indices {tuple(teacher_topk_indices.shape)} "
            f"must both be [B, k] with B = {batch} and 1 <= k <= C = {classes}"
        )
    if teacher_topk_indices.is_floating_point() or teacher_topk_indices.is_complex():
        raise ValueError(f"soft_kd_topk: indices must be integer class ids, got dtype {teacher_topk_indices.dtype}")
    dtype = _compute_dtype(student_logits, teacher_topk_logprobs)
    index = teacher_topk_indices.long()
    log_q = F.log_softmax(student_logits.to(dtype) / temperature, dim=-1)
    log_p = teacher_topk_logprobs.to(dtype)
    p = log_p.exp()
    # As in soft_kd: mask the log-ratio, not the product, so a zero-probability class gives neither nan nor inf.
    total = (p * torch.where(p > 0, log_p - log_q.gather(1, index), 0.0)).sum()

    if top_shape[1] < classes:
        outside = torch.ones_like(log_q, dtype=torch.bool).scatter(1, index, False)
        log_r_s = torch.logsumexp(torch.where(outside, log_q, float("-inf")), dim=-1)
        log_mass_top = torch.logsumexp(log_p, dim=-1)
        # Rounding can make the top-k sum reach 1 (log ≥ 0): the bucket is then empty, r_t = 0.
        has_rest = log_mass_top < 0
        safe = torch.where(has_rest, log_mass_top, -1.0)
        r_t = torch.where(has_rest, -torch.expm1(safe), 0.0)
        total = total + (r_t * torch.where(has_rest, _log1mexp(safe) - log_r_s, 0.0)).sum()
    return total * (temperature**2 / max(batch, 1))


def _check_temperature(fn: str, temperature: float) -> None:
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"{fn}: temperature must be a finite number > 0, got {temperature!r}")


def hard_ce(student_logits: Tensor, labels: Tensor, ignore_index: int = -100) -> Tensor:
    """Cross-entropy with the gold labels, averaged over the examples whose label is not ``ignore_index``.

    ``loss = (1/|V|) Σ_{b ∈ V} −log softmax(s_b)[y_b]`` with ``V = {b : y_b ≠ ignore_index}``
    (nan if ``V`` is empty, as in :func:`torch.nn.functional.cross_entropy`).

    Args:
        student_logits: ``[B, C]``.
        labels: ``[B]`` integer class ids; ``ignore_index`` marks examples to skip (their logits then have
            no effect at all).
        ignore_index: label value to skip.

    Returns:
        Scalar in float32 (float64 for float64 logits).
    """
    if student_logits.ndim != 2:
        raise ValueError(f"hard_ce: logits must be 2-D [B, C], got shape {tuple(student_logits.shape)}")
    if labels.shape != student_logits.shape[:1]:
        raise ValueError(
            f"hard_ce: labels {tuple(labels.shape)} must have shape [B] = ({student_logits.shape[0]},) "
            f"to match logits {tuple(student_logits.shape)}"
        )
    if labels.is_floating_point():
        raise ValueError(f"hard_ce: labels must be integer class ids, got dtype {labels.dtype}")
    dtype = _compute_dtype(student_logits)
    logits = student_logits.to(dtype)
    # Ignored rows may hold garbage (inf/nan); cross_entropy's ignore_index zeroes their loss, but a nan would
    # still pass through the log-softmax of that row and, in the backward pass, into the gradient.
    keep = labels != ignore_index
    logits = torch.where(keep.unsqueeze(-1), logits, torch.zeros_like(logits))
    return F.cross_entropy(logits, labels.long(), ignore_index=ignore_index, reduction="mean")


def kd_mix(
    student_logits: Tensor,
    teacher_logits: Tensor | None,
    labels: Tensor | None,
    temperature: float,
    alpha: float,
    ignore_index: int = -100,
) -> Tensor:
    """Hinton-style mix of hard-label cross-entropy and soft-label KD.

    ``loss = (1 − α) · hard_ce(s, y) + α · soft_kd(s, t, T)``

    A term whose weight is exactly 0 is not computed, so ``labels`` may be ``None`` when ``α == 1`` and
    ``teacher_logits`` may be ``None`` when ``α == 0``.

    Args:
        student_logits: ``[B, C]``.
        teacher_logits: ``[B, C]`` or ``None`` (only if ``α == 0``).
        labels: ``[B]`` integer class ids or ``None`` (only if ``α == 1``).
        temperature: ``T > 0`` for the soft term.
        alpha: weight ``α ∈ [0, 1]`` of the soft term.
        ignore_index: label value skipped by the hard term.

    Returns:
        Scalar in float32 (float64 for float64 inputs).
    """
    if not (0.0 <= alpha <= 1.0):
        raise ValueError(f"kd_mix: alpha must be in [0, 1], got {alpha!r}")
    if alpha < 1.0 and labels is None:
        raise ValueError(f"kd_mix: labels are required when alpha < 1 (alpha={alpha})")
    if alpha > 0.0 and teacher_logits is None:
        raise ValueError(f"kd_mix: teacher_logits are required when alpha > 0 (alpha={alpha})")
    terms: list[Tensor] = []
    if alpha < 1.0:
        assert labels is not None
        terms.append((1.0 - alpha) * hard_ce(student_logits, labels, ignore_index=ignore_index))
    if alpha > 0.0:
        assert teacher_logits is not None
        terms.append(alpha * soft_kd(student_logits, teacher_logits, temperature=temperature))
    return terms[0] if len(terms) == 1 else terms[0] + terms[1]


def logit_mse(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Mean squared error between logits (Ba & Caruana 2014; Tang et al. 2019).

    ``loss = (1/(B·C)) Σ_b Σ_c (s_bc − t_bc)²``

    Args:
        student_logits: ``[B, C]``.
        teacher_logits: ``[B, C]``, same shape.

    Returns:
        Scalar in float32 (float64 for float64 inputs).
    """
    _check_logit_pair("logit_mse", student_logits, teacher_logits)
    dtype = _compute_dtype(student_logits, teacher_logits)
    return (student_logits.to(dtype) - teacher_logits.to(dtype)).square().mean()


def regression_mse(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean squared error for regression heads.

    ``loss = (1/B) Σ_b (p_b − y_b)²``

    Args:
        prediction: ``[B]`` or ``[B, 1]`` (the usual regression-head output).
        target: ``[B]`` (``[B, 1]`` is accepted too); any numeric dtype, cast to the prediction's compute
            dtype.

    Returns:
        Scalar in float32 (float64 for float64 predictions).
    """

    def _flat(name: str, x: Tensor) -> Tensor:
        if x.ndim == 2 and x.shape[1] == 1:
            return x[:, 0]
        if x.ndim != 1:
            raise ValueError(f"regression_mse: {name} must have shape [B] or [B, 1], got {tuple(x.shape)}")
        return x

    pred = _flat("prediction", prediction)
    tgt = _flat("target", target)
    if pred.shape != tgt.shape:
        raise ValueError(
            f"regression_mse: prediction {tuple(prediction.shape)} and target {tuple(target.shape)} "
            "have different batch sizes"
        )
    dtype = _compute_dtype(prediction)
    return (pred.to(dtype) - tgt.to(dtype)).square().mean()
