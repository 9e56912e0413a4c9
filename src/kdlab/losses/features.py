"""Losses on intermediate representations: hidden states and attention probabilities.

Every function here follows the :class:`FeatureLoss` contract ``fn(student, teacher, mask) -> scalar``:

* ``student`` and ``teacher`` have the same shape: hidden states ``[B, L, D]`` (or ``[B, D]`` for one
  token per example, e.g. a selected [CLS]) or attention probabilities ``[B, H, L, L]`` (rows = queries,
  each row a softmax over keys).
* ``mask`` is ``[B, L]`` with 1/True for a real token and 0/False for padding, or ``None`` (all real).
  Padded positions have no effect at all, whatever they hold (even inf/nan): they are replaced by a harmless
  constant with :func:`torch.where` before any arithmetic, so neither the value nor the gradient can see
  them, and the student's gradient at padded positions is exactly 0. Multiplying by the mask would not be
  enough, because ``0 · nan = nan``.

Computation happens in float32 at least (fp16/bf16 inputs are upcast; float64 stays float64, for gradcheck).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from .logits import _compute_dtype

__all__ = [
    "FeatureLoss",
    "attention_kl",
    "attention_mse",
    "hidden_cosine",
    "hidden_mse",
    "pkd_normalized_mse",
]

# Guards divisions by a vector norm; far below the norm of any real hidden state.
_NORM_EPS = 1e-8
# Floor for student probabilities before the log: a valid key the student gives exactly 0 would otherwise make
# the KL infinite (and its gradient nan) although the teacher may put only negligible mass there.
_PROB_EPS = 1e-12


class FeatureLoss(Protocol):
    """``(student, teacher, mask) -> scalar`` loss between two same-shaped feature tensors."""

    def __call__(self, student: Tensor, teacher: Tensor, mask: Tensor | None) -> Tensor: ...


def _prepare_tokens(fn: str, student: Tensor, teacher: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Validate; return hidden states as ``[B, L, D]`` in the compute dtype, the mask as bool ``[B, L]``."""
    if student.shape != teacher.shape:
        raise ValueError(
            f"{fn}: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} must have the same "
            "shape (project the student first if the hidden sizes differ)"
        )
    if student.ndim not in (2, 3):
        raise ValueError(f"{fn}: expected hidden states [B, L, D] or [B, D], got shape {tuple(student.shape)}")
    given_shape = tuple(student.shape)
    one_token = student.ndim == 2
    if one_token:
        student, teacher = student.unsqueeze(1), teacher.unsqueeze(1)
    batch, length = student.shape[:2]
    if mask is None:
        valid = torch.ones(batch, length, dtype=torch.bool, device=student.device)
    else:
        expected = [(batch,), (batch, 1)] if one_token else [(batch, length)]
        if tuple(mask.shape) not in expected:
            wanted = " or ".join(str(list(e)) for e in expected)
            raise ValueError(
                f"{fn}: mask {tuple(mask.shape)} does not fit features {given_shape}; expected {wanted} or None"
            )
        valid = mask.reshape(batch, length) != 0
    dtype = _compute_dtype(student, teacher)
    return student.to(dtype), teacher.to(dtype), valid


def _prepare_attention(
    fn: str, student: Tensor, teacher: Tensor, mask: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Validate attention maps; return them in the compute dtype, the bool ``[B, 1, L, L]`` mask of entries
    whose query and key are both real, and the number of real tokens per example ``[B]``."""
    if student.shape != teacher.shape:
        raise ValueError(
            f"{fn}: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} attention maps must "
            "have the same shape [B, H, L, L] (match head counts before calling)"
        )
    if student.ndim != 4 or student.shape[-1] != student.shape[-2]:
        raise ValueError(f"{fn}: expected attention probabilities [B, H, L, L], got shape {tuple(student.shape)}")
    batch, _, length, _ = student.shape
    if mask is None:
        valid = torch.ones(batch, length, dtype=torch.bool, device=student.device)
    else:
        if tuple(mask.shape) != (batch, length):
            raise ValueError(
                f"{fn}: mask {tuple(mask.shape)} does not fit attention maps {tuple(student.shape)}; "
                f"expected [{batch}, {length}] or None"
            )
        valid = mask != 0
    pair = valid[:, None, :, None] & valid[:, None, None, :]
    dtype = _compute_dtype(student, teacher)
    return student.to(dtype), teacher.to(dtype), pair, valid.sum(dim=1)


def hidden_mse(student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared error between hidden states over real tokens (FitNets / TinyBERT hidden loss).

    ``loss = Σ_{(b,i) valid} Σ_d (s_bid − t_bid)² / (N_valid · D)``

    Args:
        student: ``[B, L, D]``, or ``[B, D]`` (one token per example).
        teacher: same shape as ``student``.
        mask: ``[B, L]`` (``[B]`` or ``[B, 1]`` for ``[B, D]`` inputs), 1 = real token; padded tokens are
            excluded from the sum and from ``N_valid``. ``None`` = all tokens real.

    Returns:
        Scalar (float32 at least); 0 if no token is real.
    """
    s, t, valid = _prepare_tokens("hidden_mse", student, teacher, mask)
    diff = torch.where(valid.unsqueeze(-1), s - t, 0.0)
    count = valid.sum().clamp_min(1) * s.shape[-1]
    return diff.square().sum() / count


def hidden_cosine(student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
    """Cosine distance between hidden states, averaged over real tokens (DistilBERT's cosine loss).

    ``loss = (1/N_valid) Σ_{(b,i) valid} (1 − ⟨s_bi, t_bi⟩ / (max(‖s_bi‖₂, ε) · max(‖t_bi‖₂, ε)))``, ε = 1e-8.

    Args:
        student: ``[B, L, D]``, or ``[B, D]`` (one token per example).
        teacher: same shape as ``student``.
        mask: ``[B, L]`` (``[B]`` or ``[B, 1]`` for ``[B, D]`` inputs), 1 = real token; padded tokens are
            excluded from the mean. ``None`` = all tokens real.

    Returns:
        Scalar in ``[0, 2]`` (float32 at least); 0 if no token is real.
    """
    s, t, valid = _prepare_tokens("hidden_cosine", student, teacher, mask)
    s, t = _ones_at_padding(s, t, valid)
    norms = torch.linalg.vector_norm(s, dim=-1).clamp_min(_NORM_EPS) * torch.linalg.vector_norm(t, dim=-1).clamp_min(
        _NORM_EPS
    )
    cosine = (s * t).sum(dim=-1) / norms
    per_token = torch.where(valid, 1.0 - cosine, 0.0)
    return per_token.sum() / valid.sum().clamp_min(1)


def pkd_normalized_mse(student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
    """Patient-KD loss (Sun et al. 2019): squared distance of L2-normalised vectors, mean over real tokens.

    ``loss = (1/N_valid) Σ_{(b,i) valid} ‖ s_bi/max(‖s_bi‖₂, ε) − t_bi/max(‖t_bi‖₂, ε) ‖₂²``, ε = 1e-8.

    The function is per token; PKD proper applies it to the [CLS] vectors, which the caller selects beforehand
    (pass ``[B, D]``).

    Args:
        student: ``[B, L, D]``, or ``[B, D]`` (one token per example).
        teacher: same shape as ``student``.
        mask: ``[B, L]`` (``[B]`` or ``[B, 1]`` for ``[B, D]`` inputs), 1 = real token; padded tokens are
            excluded from the mean. ``None`` = all tokens real.

    Returns:
        Scalar in ``[0, 4]`` (float32 at least); 0 if no token is real.
    """
    s, t, valid = _prepare_tokens("pkd_normalized_mse", student, teacher, mask)
    s, t = _ones_at_padding(s, t, valid)
    s_unit = s / torch.linalg.vector_norm(s, dim=-1, keepdim=True).clamp_min(_NORM_EPS)
    t_unit = t / torch.linalg.vector_norm(t, dim=-1, keepdim=True).clamp_min(_NORM_EPS)
    per_token = torch.where(valid, (s_unit - t_unit).square().sum(dim=-1), 0.0)
    return per_token.sum() / valid.sum().clamp_min(1)


def attention_kl(student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
    """KL divergence between attention distributions (Aguilar et al. 2020), teacher ‖ student.

    Per example ``b`` with ``|x_b|`` real tokens, writing ``t = t[b,a,i,j]`` and ``s = s[b,a,i,j]``:
    ``L_b = 1/(H·|x_b|) Σ_{a=1..H} Σ_{i valid} Σ_{j valid} t · (log t − log max(s, ε))``
    with ``0 · log 0 = 0`` and ε = 1e-12; ``loss = (1/B) Σ_b L_b``.

    Rows are not renormalised over the valid keys: with a standard additive attention mask the padded keys
    already carry (almost) no probability.

    Args:
        student: attention probabilities ``[B, H, L, L]`` (rows = queries, softmax over keys).
        teacher: same shape as ``student``.
        mask: ``[B, L]``, 1 = real token. Padded queries (rows) and padded keys (columns) are excluded
            entirely, whatever they contain. ``None`` = all tokens real. An example with no real token
            contributes 0.

    Returns:
        Scalar (float32 at least).
    """
    s, t, pair, n_valid = _prepare_attention("attention_kl", student, teacher, mask)
    t = torch.where(pair, t, 0.0)
    s = torch.where(pair, s, 1.0)
    pointwise = torch.xlogy(t, t) - t * s.clamp_min(_PROB_EPS).log()
    heads = s.shape[1]
    per_example = pointwise.sum(dim=(1, 2, 3)) / (heads * n_valid.clamp_min(1))
    return per_example.mean()


def attention_mse(student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared error between attention maps over real query/key pairs (TinyBERT attention loss).

    ``loss = Σ_b Σ_a Σ_{i valid} Σ_{j valid} (s[b,a,i,j] − t[b,a,i,j])² / (H · Σ_b |x_b|²)``

    Args:
        student: attention probabilities ``[B, H, L, L]`` (rows = queries).
        teacher: same shape as ``student``.
        mask: ``[B, L]``, 1 = real token. Entries whose query or key is padding are excluded, whatever they
            contain. ``None`` = all tokens real.

    Returns:
        Scalar (float32 at least); 0 if no token is real.
    """
    s, t, pair, n_valid = _prepare_attention("attention_mse", student, teacher, mask)
    diff = torch.where(pair, s - t, 0.0)
    count = n_valid.square().sum().clamp_min(1) * s.shape[1]
    return diff.square().sum() / count


def _ones_at_padding(s: Tensor, t: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Replace padded token vectors by 1s (not 0s): their norms stay away from 0, so no eps branch is involved."""
    keep = valid.unsqueeze(-1)
    return torch.where(keep, s, 1.0), torch.where(keep, t, 1.0)
