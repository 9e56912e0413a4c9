"""Losses with several teachers per example: weighted soft-label KD, weighted regression MSE, confidence weights.

Teacher outputs come stacked as ``[B, K, C]`` (K teachers, the recipe's teacher.model first) and per-example
teacher weights as ``[B, K]``. The weights are used as given: a row may sum to anything, 0 included (no teacher
term for that example); normalising them is the caller's choice (equal 1/K, fixed, confidence, a policy's picks).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlab.losses.logits import _compute_dtype

__all__ = ["confidence_weights", "multi_teacher_kd", "multi_teacher_mse"]

IGNORE_LABEL = -100


def _check_weights(fn: str, weights: Tensor, batch: int, teachers: int) -> None:
    if tuple(weights.shape) != (batch, teachers):
        raise ValueError(f"{fn}: weights {tuple(weights.shape)} must be [B, K] = ({batch}, {teachers})")


def multi_teacher_kd(student_logits: Tensor, teacher_logits: Tensor, weights: Tensor, temperature: float) -> Tensor:
    """Soft-label KD from K teachers, weighted per example and teacher.

    ``loss = (1/B) Σ_j Σ_k w_jk · T² · KL(softmax(t_jk/T) ‖ softmax(s_j/T))``, ``0 · log 0 = 0``.

    With one teacher and ``w = 1`` this is :func:`kdlab.losses.soft_kd`. The mean divides by B even where a row
    of weights sums to 0 (those examples simply get no teacher term), so the loss scale does not depend on how
    many examples a policy left without a teacher. The weights get no gradient (they are read as constants).

    Args:
        student_logits: ``[B, C]``, any float dtype.
        teacher_logits: ``[B, K, C]``.
        weights: ``[B, K]``, non-negative.
        temperature: ``T > 0``.

    Returns:
        Scalar in float32 (float64 if an input is float64), also for fp16/bf16 inputs.
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"multi_teacher_kd: temperature must be a finite number > 0, got {temperature!r}")
    if student_logits.ndim != 2 or teacher_logits.ndim != 3:
        raise ValueError(
            f"multi_teacher_kd: student logits {tuple(student_logits.shape)} must be [B, C] and teacher logits "
            f"{tuple(teacher_logits.shape)} [B, K, C]"
        )
    batch, teachers, classes = teacher_logits.shape
    if tuple(student_logits.shape) != (batch, classes):
        raise ValueError(
            f"multi_teacher_kd: student logits {tuple(student_logits.shape)} do not fit teacher logits "
            f"{tuple(teacher_logits.shape)}"
        )
    _check_weights("multi_teacher_kd", weights, batch, teachers)
    dtype = _compute_dtype(student_logits, teacher_logits)
    log_q = F.log_softmax(student_logits.to(dtype) / temperature, dim=-1).unsqueeze(1)  # [B, 1, C]
    log_p = F.log_softmax(teacher_logits.to(dtype) / temperature, dim=-1)  # [B, K, C]
    p = log_p.exp()
    # As in soft_kd: mask the log-ratio where p = 0, so neither the loss nor its gradient sees 0 · inf.
    kl = (p * torch.where(p > 0, log_p - log_q, torch.zeros_like(p))).sum(-1)  # [B, K]
    return (weights.detach().to(dtype) * kl).sum() * (temperature**2 / max(batch, 1))


def multi_teacher_mse(student: Tensor, teacher: Tensor, weights: Tensor) -> Tensor:
    """Regression KD from K teachers: ``loss = (1/B) Σ_j Σ_k w_jk (s_j − t_jk)²``.

    Args:
        student: ``[B]`` or ``[B, 1]``.
        teacher: ``[B, K]`` or ``[B, K, 1]``.
        weights: ``[B, K]``, non-negative (no gradient).

    Returns:
        Scalar in float32 (float64 for float64 inputs).
    """
    s = student[:, 0] if student.ndim == 2 and student.shape[1] == 1 else student
    t = teacher[..., 0] if teacher.ndim == 3 and teacher.shape[2] == 1 else teacher
    if s.ndim != 1 or t.ndim != 2 or t.shape[0] != s.shape[0]:
        raise ValueError(
            f"multi_teacher_mse: student {tuple(student.shape)} must be [B] or [B, 1] and teacher "
            f"{tuple(teacher.shape)} [B, K] or [B, K, 1]"
        )
    _check_weights("multi_teacher_mse", weights, *t.shape)
    dtype = _compute_dtype(student, teacher)
    squared = (s.to(dtype).unsqueeze(1) - t.to(dtype)).square()
    return (weights.detach().to(dtype) * squared).sum() / max(s.shape[0], 1)


@torch.no_grad()
def confidence_weights(teacher_logits: Tensor, labels: Tensor | None, ignore_index: int = IGNORE_LABEL) -> Tensor:
    """Per-example teacher weights from the teachers' confidence (at T = 1), normalised over teachers.

    ``w_jk = c_jk / Σ_k' c_jk'`` with ``c_jk = softmax(t_jk)[y_j]`` for a labelled example (the teacher's
    probability of the gold class) and ``c_jk = max_c softmax(t_jk)[c]`` for an unlabelled one
    (``y_j = ignore_index``, or ``labels`` None). A row whose confidences all underflow to 0 gets 1/K.

    Args:
        teacher_logits: ``[B, K, C]``.
        labels: ``[B]`` integer class ids, or None.

    Returns:
        ``[B, K]`` in the compute dtype of the logits, rows summing to 1, without gradient.
    """
    if teacher_logits.ndim != 3:
        raise ValueError(f"confidence_weights: teacher logits must be [B, K, C], got {tuple(teacher_logits.shape)}")
    batch, teachers, _ = teacher_logits.shape
    p = F.softmax(teacher_logits.to(_compute_dtype(teacher_logits)), dim=-1)
    confidence = p.amax(-1)  # [B, K]
    if labels is not None:
        if tuple(labels.shape) != (batch,) or labels.is_floating_point():
            raise ValueError(f"confidence_weights: labels {tuple(labels.shape)} must be [B] integer class ids")
        labelled = labels != ignore_index
        gold = labels.long().clamp_min(0).view(batch, 1, 1).expand(batch, teachers, 1)
        confidence = torch.where(labelled.unsqueeze(1), p.gather(-1, gold).squeeze(-1), confidence)
    total = confidence.sum(-1, keepdim=True)
    return torch.where(total > 0, confidence / total.clamp_min(torch.finfo(p.dtype).tiny), 1.0 / teachers)
