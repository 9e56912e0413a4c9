"""Structural knowledge distillation (Wang et al., ACL 2021) for sequence labelling and dependency parsing.

The KD cross-entropy over whole structures ``y`` factorises over the student's substructures ``u`` (tags, tag
pairs, arcs) weighted by the teacher's marginals:

``−Σ_y P_t(y) log P_s(y) = −Σ_u P_t(u) S_s(u) + log Z_s``,

so it is exact and polynomial whenever the teacher's marginals over the student's substructures are. Four cases:

1. same factorisation (CRF -> CRF): :func:`crf_kd`, :func:`crf_kd_from_marginals`;
2. student finer (CRF teacher -> MaxEnt / token student): :func:`crf_to_token_kd`;
3. teacher finer (MaxEnt teacher -> CRF student): :func:`token_to_crf_kd`;
4. incompatible label sets: map the teacher's marginals with :func:`map_labels`, then use case 1 or 2.

Plus the token-level baseline :func:`token_kd`, sequence-level Top-K KD (Kim & Rush 2016) :func:`sequence_kd` with
:func:`crf_sequence_logprob` / :func:`token_sequence_logprob` / :func:`kbest_weights`, and the parsing case
(first-order tree teacher -> head-selection student) :func:`arc_kd` / :func:`arc_kd_from_marginals`.

Conventions shared by every loss here:

* Temperature is applied locally: every potential (emission, transition, start, end, arc score, logit) is divided
  by ``T`` on both sides, and the loss is multiplied by ``T²`` (as in :func:`kdlab.losses.logits.soft_kd`).
* Losses named ``*_kd`` return ``KL(P_t ‖ P_s)`` = cross-entropy − teacher entropy: 0 when the distributions are
  equal, ``>= 0`` (up to rounding), with the same gradient with respect to the student as the cross-entropy.
* Each sentence's loss is summed over its positions; the batch loss is the mean over sentences.
* The teacher side is constant: teacher tensors are detached and teacher marginals computed without autograd.
* ``mask [B, L]``: real tokens (bool or 0/1), a right-padded prefix of length ``>= 1`` per row, or ``None`` for
  no padding. Padded potentials (even ``nan``/``inf``) never enter a result.
* Arithmetic is in float32, or float64 if an input is float64 (so ``torch.autograd.gradcheck`` works); fp16/bf16
  inputs are upcast.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..structured.crf import crf_log_partition, crf_marginals
from ..structured.tree import tree_arc_marginals
from .logits import _check_temperature, _compute_dtype

__all__ = [
    "CRFPotentials",
    "arc_kd",
    "arc_kd_from_marginals",
    "crf_entropy",
    "crf_kd",
    "crf_kd_from_marginals",
    "crf_sequence_logprob",
    "crf_to_token_kd",
    "kbest_weights",
    "map_labels",
    "sequence_kd",
    "token_kd",
    "token_sequence_logprob",
    "token_to_crf_kd",
]


class CRFPotentials(NamedTuple):
    """Potentials of a linear-chain CRF (see :mod:`kdlab.structured.crf` for the score they define).

    ``emissions [B, L, C]``, ``transitions [C, C]`` (``transitions[a, b]``: tag ``a`` followed by ``b``),
    ``start [C]``, ``end [C]``.
    """

    emissions: Tensor
    transitions: Tensor
    start: Tensor
    end: Tensor


# ----------------------------------------------------------------------------------------------------------------
# helpers


def _potentials_dtype(*groups: CRFPotentials | Tensor) -> torch.dtype:
    tensors: list[Tensor] = []
    for group in groups:
        tensors.extend(group if isinstance(group, CRFPotentials) else (group,))
    return _compute_dtype(*tensors)


def _temper(fn: str, pot: CRFPotentials, temperature: float, dtype: torch.dtype, detach: bool) -> CRFPotentials:
    """``pot / T`` in ``dtype`` (detached for a teacher); checks that it is a :class:`CRFPotentials` of tensors."""
    if not isinstance(pot, tuple) or len(pot) != 4 or not all(isinstance(t, Tensor) for t in pot):
        raise ValueError(f"{fn}: potentials must be a CRFPotentials(emissions, transitions, start, end) of tensors")
    for tensor in pot:
        if not tensor.is_floating_point():
            raise ValueError(f"{fn}: potentials must be floating point, got {tensor.dtype}")
    out = [(t.detach() if detach else t).to(dtype) / temperature for t in pot]
    return CRFPotentials(*out)


def _bool_mask(fn: str, mask: Tensor | None, batch: int, length: int, device: torch.device) -> Tensor:
    if mask is None:
        return torch.ones(batch, length, dtype=torch.bool, device=device)
    if tuple(mask.shape) != (batch, length):
        raise ValueError(f"{fn}: mask must be [B, L] = [{batch}, {length}], got {tuple(mask.shape)}")
    return mask.to(device=device, dtype=torch.bool)


def _check_prefix(fn: str, mask: Tensor) -> None:
    if mask.shape[0] > 0 and (not bool(mask[:, 0].all()) or bool((mask[:, 1:] & ~mask[:, :-1]).any())):
        raise ValueError(f"{fn}: mask must mark a prefix of length >= 1 in every row (right padding, no empty rows)")


def _batch_mean(per_sentence: Tensor, temperature: float) -> Tensor:
    return per_sentence.sum() * (temperature**2 / max(per_sentence.shape[0], 1))


def _expected_score(pot: CRFPotentials, node: Tensor, edge: Tensor, mask: Tensor) -> Tensor:
    """``E[s(y)] = Σ_i Σ_c node[i,c] e[i,c] + Σ_i Σ_{a,b} edge[i,a,b] trans[a,b] + node[0]·start + node[n−1]·end``.

    ``[B]``; padded emissions and padded marginals are replaced by 0 first (so ``nan`` there does no harm).
    """
    emissions = pot.emissions.masked_fill(~mask.unsqueeze(-1), 0.0)
    node = torch.where(mask.unsqueeze(-1), node, 0.0)
    edge = torch.where(mask[:, 1:, None, None], edge, 0.0)
    lengths = mask.sum(dim=1)
    last = node.gather(1, (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, node.shape[2])).squeeze(1)
    return (
        (node * emissions).sum(dim=(1, 2))
        + (edge * pot.transitions).sum(dim=(1, 2, 3))
        + node[:, 0] @ pot.start
        + last @ pot.end
    )


def _entropy_terms(p: Tensor) -> Tensor:
    """``p log p`` elementwise with ``0 log 0 = 0`` (and no ``nan`` from ``nan``/negative entries)."""
    positive = p > 0
    return torch.where(positive, p * torch.log(torch.where(positive, p, 1.0)), 0.0)


def _cross_terms(p: Tensor, log_q: Tensor) -> Tensor:
    """``p log q`` elementwise, 0 where ``p = 0`` (also when ``log q = −inf``), gradient 0 there."""
    positive = p > 0
    return torch.where(positive, p * torch.where(positive, log_q, 0.0), 0.0)


def _crf_entropy(pot: CRFPotentials, mask: Tensor) -> Tensor:
    """``H(P) = log Z − E_P[s(y)]`` of an already tempered, detached CRF, ``[B]``."""
    log_z = crf_log_partition(*pot, mask=mask)
    node, edge = crf_marginals(*pot, mask=mask)
    return log_z - _expected_score(pot, node, edge, mask)


# ----------------------------------------------------------------------------------------------------------------
# case 1: CRF -> CRF


def crf_entropy(potentials: CRFPotentials, mask: Tensor | None = None, temperature: float = 1.0) -> Tensor:
    """Entropy of the tempered CRF distribution per sentence, ``[B]``, without gradient.

    ``H(P^T) = log Z^T − E_{P^T}[s^T(y)]`` with ``s^T = s / T`` (all potentials divided by ``T``) and the
    expectation taken with the node/edge marginals of ``P^T``. Store it next to cached teacher marginals to turn
    :func:`crf_kd_from_marginals` into a KL.
    """
    _check_temperature("crf_entropy", temperature)
    dtype = _potentials_dtype(potentials)
    pot = _temper("crf_entropy", potentials, temperature, dtype, detach=True)
    bmask = _bool_mask("crf_entropy", mask, *pot.emissions.shape[:2], pot.emissions.device)
    with torch.no_grad():
        return _crf_entropy(pot, bmask)


def crf_kd(
    student: CRFPotentials, teacher: CRFPotentials, mask: Tensor | None = None, temperature: float = 1.0
) -> Tensor:
    """Structural KD between two linear-chain CRFs over the same tags (case 1), ``KL(P_t^T ‖ P_s^T) · T²``.

    With ``node_t[i, c] = P_t^T(y_i = c)`` and ``edge_t[i, a, b] = P_t^T(y_i = a, y_{i+1} = b)`` the marginals of
    the tempered teacher (all teacher potentials divided by ``T``):

    ``E_t[s_s^T] = Σ_i Σ_c node_t[i,c] e_s[i,c]/T + Σ_i Σ_{a,b} edge_t[i,a,b] trans_s[a,b]/T
    + Σ_c node_t[0,c] start_s[c]/T + Σ_c node_t[n−1,c] end_s[c]/T``,

    ``CE = log Z_s^T − E_t[s_s^T]``, ``H(P_t^T) = log Z_t^T − E_t[s_t^T]``, and

    ``loss = T² · (1/B) Σ_b (CE_b − H_b) = T² · (1/B) Σ_b Σ_y P_t^T(y) (log P_t^T(y) − log P_s^T(y))``,

    exact (no enumeration), ``O(L C²)`` per sentence.

    Args:
        student: :class:`CRFPotentials` with ``emissions [B, L, C]``.
        teacher: :class:`CRFPotentials` with the same shapes; detached.
        mask: ``[B, L]`` real tokens (right-padded prefix, length >= 1), or ``None``.
        temperature: ``T > 0``.

    Returns:
        Scalar in float32 (float64 if an input is float64).

    Raises:
        ValueError: shapes differ or are bad, bad mask, or a bad temperature.
    """
    fn = "crf_kd"
    _check_temperature(fn, temperature)
    dtype = _potentials_dtype(student, teacher)
    stu = _temper(fn, student, temperature, dtype, detach=False)
    tea = _temper(fn, teacher, temperature, dtype, detach=True)
    for name, s, t in zip(CRFPotentials._fields, stu, tea, strict=True):
        if s.shape != t.shape:
            raise ValueError(f"{fn}: student {name} {tuple(s.shape)} and teacher {name} {tuple(t.shape)} differ")
    log_z_s = crf_log_partition(*stu, mask=mask)  # validates shapes and mask
    bmask = _bool_mask(fn, mask, *stu.emissions.shape[:2], stu.emissions.device)
    with torch.no_grad():
        node_t, edge_t = crf_marginals(*tea, mask=bmask)
        entropy_t = crf_log_partition(*tea, mask=bmask) - _expected_score(tea, node_t, edge_t, bmask)
    per_sentence = log_z_s - _expected_score(stu, node_t, edge_t, bmask) - entropy_t
    return _batch_mean(per_sentence, temperature)


def crf_kd_from_marginals(
    student: CRFPotentials,
    node_t: Tensor,
    edge_t: Tensor,
    mask: Tensor | None = None,
    temperature: float = 1.0,
    teacher_entropy: Tensor | None = None,
) -> Tensor:
    """:func:`crf_kd` from stored teacher marginals (e.g. a cache), the cross-entropy unless the entropy is given.

    ``loss = T² · (1/B) Σ_b (log Z_s^T − E_t[s_s^T] − H_b)`` with ``E_t[s_s^T]`` as in :func:`crf_kd` and
    ``H_b = teacher_entropy[b]`` (:func:`crf_entropy` of the teacher at the same ``T``), or ``H_b = 0`` when
    ``teacher_entropy`` is ``None``: the loss is then the **cross-entropy** ``−Σ_y P_t^T(y) log P_s^T(y) · T²``
    (not 0 at a perfect student, but with the same gradient as the KL).

    Args:
        student: :class:`CRFPotentials` with ``emissions [B, L, C]``.
        node_t: ``[B, L, C]`` teacher node marginals of the tempered teacher (as from
            :func:`kdlab.structured.crf_marginals` of the teacher potentials divided by ``T``); detached.
        edge_t: ``[B, L−1, C, C]`` teacher edge marginals; detached. Padded entries are ignored.
        mask: ``[B, L]`` real tokens (right-padded prefix, length >= 1), or ``None``.
        temperature: ``T > 0``.
        teacher_entropy: ``[B]`` or ``None``.

    Returns:
        Scalar in float32 (float64 if an input is float64).
    """
    fn = "crf_kd_from_marginals"
    _check_temperature(fn, temperature)
    dtype = _potentials_dtype(student, node_t, edge_t)
    stu = _temper(fn, student, temperature, dtype, detach=False)
    batch, length, tags = stu.emissions.shape if stu.emissions.ndim == 3 else (0, 0, 0)
    log_z_s = crf_log_partition(*stu, mask=mask)  # validates the student and the mask
    if tuple(node_t.shape) != (batch, length, tags):
        raise ValueError(f"{fn}: node_t must be [B, L, C] = [{batch}, {length}, {tags}], got {tuple(node_t.shape)}")
    if tuple(edge_t.shape) != (batch, length - 1, tags, tags):
        raise ValueError(
            f"{fn}: edge_t must be [B, L-1, C, C] = [{batch}, {length - 1}, {tags}, {tags}], got {tuple(edge_t.shape)}"
        )
    bmask = _bool_mask(fn, mask, batch, length, stu.emissions.device)
    per_sentence = log_z_s - _expected_score(stu, node_t.detach().to(dtype), edge_t.detach().to(dtype), bmask)
    if teacher_entropy is not None:
        if tuple(teacher_entropy.shape) != (batch,):
            raise ValueError(f"{fn}: teacher_entropy must be [B] = [{batch}], got {tuple(teacher_entropy.shape)}")
        per_sentence = per_sentence - teacher_entropy.detach().to(dtype)
    return _batch_mean(per_sentence, temperature)


# ----------------------------------------------------------------------------------------------------------------
# token-level losses: case 2 and the baseline


def _token_kl(fn: str, student_logits: Tensor, teacher_probs: Tensor, mask: Tensor, temperature: float) -> Tensor:
    """``T² · (1/B) Σ_b Σ_{i real} KL(p_t,i ‖ softmax(z_s,i / T))`` with ``teacher_probs`` detached."""
    dtype = _compute_dtype(student_logits, teacher_probs)
    logits = student_logits.to(dtype).masked_fill(~mask.unsqueeze(-1), 0.0) / temperature
    log_q = F.log_softmax(logits, dim=-1)
    p = torch.where(mask.unsqueeze(-1), teacher_probs.detach().to(dtype), 0.0)
    pointwise = _entropy_terms(p) - _cross_terms(p, log_q)
    return _batch_mean(pointwise.sum(dim=(1, 2)), temperature)


def _check_token_logits(fn: str, student_logits: Tensor, teacher_shape: tuple[int, ...]) -> None:
    if student_logits.ndim != 3:
        raise ValueError(f"{fn}: student logits must be 3-D [B, L, C], got shape {tuple(student_logits.shape)}")
    if tuple(student_logits.shape) != teacher_shape:
        raise ValueError(
            f"{fn}: student logits {tuple(student_logits.shape)} and teacher {teacher_shape} must both be [B, L, C]"
        )


def crf_to_token_kd(
    student_logits: Tensor, teacher: CRFPotentials, mask: Tensor | None = None, temperature: float = 1.0
) -> Tensor:
    """CRF teacher -> token-level (MaxEnt) student (case 2): KL of the teacher's node marginals, summed over tokens.

    ``loss = T² · (1/B) Σ_b Σ_{i<n_b} KL(P_t^T(y_i) ‖ softmax(z_s,i / T))``, ``P_t^T(y_i)`` the node marginals of
    the tempered teacher CRF. Its cross-entropy part equals the sequence-level ``−Σ_y P_t^T(y) log Π_i
    q_i(y_i)`` exactly (the student is a product distribution); the KL equals the sequence-level KL only when the
    teacher is a product too (the difference is the teacher's total correlation, constant in the student).

    Args:
        student_logits: ``[B, L, C]``.
        teacher: :class:`CRFPotentials` with ``emissions [B, L, C]``; detached.
        mask: ``[B, L]`` real tokens (right-padded prefix, length >= 1), or ``None``.
        temperature: ``T > 0``.

    Returns:
        Scalar in float32 (float64 if an input is float64).
    """
    fn = "crf_to_token_kd"
    _check_temperature(fn, temperature)
    dtype = _potentials_dtype(teacher, student_logits)
    tea = _temper(fn, teacher, temperature, dtype, detach=True)
    _check_token_logits(fn, student_logits, tuple(tea.emissions.shape))
    bmask = _bool_mask(fn, mask, *tea.emissions.shape[:2], tea.emissions.device)
    with torch.no_grad():
        node_t, _ = crf_marginals(*tea, mask=bmask)
    return _token_kl(fn, student_logits, node_t, bmask, temperature)


def token_kd(
    student_logits: Tensor, teacher_probs: Tensor, mask: Tensor | None = None, temperature: float = 1.0
) -> Tensor:
    """Token-level KD baseline: per-token KL to given teacher distributions, summed over tokens.

    ``loss = T² · (1/B) Σ_b Σ_{i<n_b} Σ_c p_t[i,c] (log p_t[i,c] − log softmax(z_s,i / T)[c])``, ``0 log 0 = 0``.

    ``teacher_probs`` are used as given, so they must already be at temperature ``T``: e.g.
    ``softmax(teacher_logits / T)`` of a MaxEnt teacher, or of a CRF teacher's emissions ("token KD on
    emissions"). With a CRF teacher's marginals this is :func:`crf_to_token_kd`.

    Args:
        student_logits: ``[B, L, C]``.
        teacher_probs: ``[B, L, C]``, rows summing to 1 at real tokens (not checked); detached.
        mask: ``[B, L]`` real tokens (any pattern), or ``None``.
        temperature: ``T > 0``.

    Returns:
        Scalar in float32 (float64 if an input is float64).
    """
    fn = "token_kd"
    _check_temperature(fn, temperature)
    _check_token_logits(fn, student_logits, tuple(teacher_probs.shape))
    bmask = _bool_mask(fn, mask, *student_logits.shape[:2], student_logits.device)
    return _token_kl(fn, student_logits, teacher_probs.to(student_logits.device), bmask, temperature)


# ----------------------------------------------------------------------------------------------------------------
# case 3: token-level teacher -> CRF student


def token_to_crf_kd(
    student: CRFPotentials, teacher_probs: Tensor, mask: Tensor | None = None, temperature: float = 1.0
) -> Tensor:
    """MaxEnt teacher -> CRF student (case 3): ``KL(Π_i p_t,i ‖ P_s^T) · T²``, exact.

    The teacher's sequence distribution ``P_t(y) = Π_i p_t,i(y_i)`` has node marginals ``p_t,i`` and edge
    marginals ``p_t,i ⊗ p_t,i+1``, so with ``E_t[s_s^T]`` as in :func:`crf_kd`:

    ``loss = T² · (1/B) Σ_b (log Z_s^T − E_t[s_s^T] − Σ_{i<n_b} H(p_t,i))``, ``H(p) = −Σ_c p_c log p_c``.

    Args:
        student: :class:`CRFPotentials` with ``emissions [B, L, C]``.
        teacher_probs: ``[B, L, C]`` teacher token distributions, already at temperature ``T`` (e.g.
            ``softmax(teacher_logits / T)``); detached.
        mask: ``[B, L]`` real tokens (right-padded prefix, length >= 1), or ``None``.
        temperature: ``T > 0``.

    Returns:
        Scalar in float32 (float64 if an input is float64).
    """
    fn = "token_to_crf_kd"
    _check_temperature(fn, temperature)
    dtype = _potentials_dtype(student, teacher_probs)
    stu = _temper(fn, student, temperature, dtype, detach=False)
    log_z_s = crf_log_partition(*stu, mask=mask)  # validates the student and the mask
    if tuple(teacher_probs.shape) != tuple(stu.emissions.shape):
        raise ValueError(
            f"{fn}: teacher_probs {tuple(teacher_probs.shape)} must match the student's emissions "
            f"{tuple(stu.emissions.shape)} [B, L, C]"
        )
    bmask = _bool_mask(fn, mask, *stu.emissions.shape[:2], stu.emissions.device)
    p = torch.where(bmask.unsqueeze(-1), teacher_probs.detach().to(device=bmask.device, dtype=dtype), 0.0)
    edge = p[:, :-1, :, None] * p[:, 1:, None, :]
    neg_entropy = _entropy_terms(p).sum(dim=(1, 2))
    per_sentence = log_z_s - _expected_score(stu, p, edge, bmask) + neg_entropy
    return _batch_mean(per_sentence, temperature)


# ----------------------------------------------------------------------------------------------------------------
# case 4: incompatible label sets


def map_labels(node: Tensor, edge: Tensor | None, label_map: Tensor) -> tuple[Tensor, Tensor | None]:
    """Map teacher marginals over labels ``X`` to labels ``Y`` through ``M [Cx, Cy]`` (case 4).

    ``M[a, a'] = P(y = a' | x = a)`` (rows sum to 1; a 0/1 matrix for a deterministic map such as XPOS -> UPOS),
    applied independently at every position:

    ``node_y[i, a'] = Σ_a node[i, a] M[a, a']``, ``edge_y[i, a', b'] = Σ_{a,b} M[a, a'] edge[i, a, b] M[b, b']``.

    These are exactly the node and edge marginals of the mapped sequence distribution, to be fed to
    :func:`crf_kd_from_marginals` (or the node ones to :func:`token_kd`). Zeros at padding stay zeros.

    Args:
        node: ``[B, L, Cx]``.
        edge: ``[B, L−1, Cx, Cx]`` or ``None``.
        label_map: ``[Cx, Cy]``, non-negative, rows summing to 1 (checked to 1e-4).

    Returns:
        ``(node_y [B, L, Cy], edge_y [B, L−1, Cy, Cy] or None)`` in float32 (float64 if an input is float64).
    """
    fn = "map_labels"
    if label_map.ndim != 2:
        raise ValueError(f"{fn}: label_map must be 2-D [Cx, Cy], got shape {tuple(label_map.shape)}")
    cx = label_map.shape[0]
    if node.ndim != 3 or node.shape[2] != cx:
        raise ValueError(f"{fn}: node must be [B, L, Cx] with Cx = {cx}, got {tuple(node.shape)}")
    if edge is not None and tuple(edge.shape) != (node.shape[0], node.shape[1] - 1, cx, cx):
        raise ValueError(
            f"{fn}: edge must be [B, L-1, Cx, Cx] = [{node.shape[0]}, {node.shape[1] - 1}, {cx}, {cx}], "
            f"got {tuple(edge.shape)}"
        )
    dtype = _compute_dtype(node, label_map, *(() if edge is None else (edge,)))
    m = label_map.to(device=node.device, dtype=dtype)
    if bool((m < 0).any()) or not torch.allclose(m.sum(dim=1), torch.ones_like(m[:, 0]), atol=1e-4):
        raise ValueError(f"{fn}: label_map must be non-negative with rows summing to 1")
    node_y = node.to(dtype) @ m
    edge_y = None if edge is None else torch.einsum("xp,nlxy,yq->nlpq", m, edge.to(dtype), m)
    return node_y, edge_y


# ----------------------------------------------------------------------------------------------------------------
# sequence-level (Top-K) KD


def _check_tags(fn: str, tags: Tensor, batch: int, length: int, num_tags: int, mask: Tensor) -> Tensor:
    if tags.ndim != 3 or tags.shape[0] != batch or tags.shape[2] != length:
        raise ValueError(f"{fn}: tags must be [B, K, L] with B = {batch}, L = {length}, got {tuple(tags.shape)}")
    if tags.is_floating_point() or tags.is_complex() or tags.dtype == torch.bool:
        raise ValueError(f"{fn}: tags must be integer tag ids, got dtype {tags.dtype}")
    tags = tags.to(device=mask.device, dtype=torch.long)
    real = mask.unsqueeze(1).expand_as(tags)
    if bool(((tags < 0) | (tags >= num_tags))[real].any()):
        raise ValueError(f"{fn}: tags at real positions must lie in [0, {num_tags})")
    return tags.masked_fill(~real, 0)


def crf_sequence_logprob(student: CRFPotentials, tags: Tensor, mask: Tensor | None = None) -> Tensor:
    """Log-probabilities ``log P_s(y_k) = s(y_k) − log Z`` of ``K`` tag sequences per sentence under a CRF.

    ``s(y) = start[y_0] + Σ_{i<n} e[i, y_i] + Σ_{1≤i<n} trans[y_{i−1}, y_i] + end[y_{n−1}]``. No temperature
    (sequence-level KD trains on the teacher's outputs as if they were gold).

    Args:
        student: :class:`CRFPotentials` with ``emissions [B, L, C]``.
        tags: ``[B, K, L]`` integer tags (e.g. :func:`kdlab.structured.crf_kbest` of the teacher); values at
            padded positions (``-1``) are ignored.
        mask: ``[B, L]`` real tokens (right-padded prefix, length >= 1), or ``None``.

    Returns:
        ``[B, K]`` in float32 (float64 if a potential is float64), differentiable in the student.
    """
    fn = "crf_sequence_logprob"
    dtype = _potentials_dtype(student)
    stu = _temper(fn, student, 1.0, dtype, detach=False)
    log_z = crf_log_partition(*stu, mask=mask)  # validates the student and the mask
    batch, length, num_tags = stu.emissions.shape
    bmask = _bool_mask(fn, mask, batch, length, stu.emissions.device)
    safe = _check_tags(fn, tags, batch, length, num_tags, bmask)
    emissions = stu.emissions.masked_fill(~bmask.unsqueeze(-1), 0.0)
    picked = emissions.unsqueeze(1).expand(-1, safe.shape[1], -1, -1).gather(3, safe.unsqueeze(-1)).squeeze(-1)
    emitted = picked.sum(dim=2)  # padded emissions are 0
    moved = torch.where(bmask[:, None, 1:], stu.transitions[safe[:, :, :-1], safe[:, :, 1:]], 0.0).sum(dim=2)
    lengths = bmask.sum(dim=1)
    last = safe.gather(2, (lengths - 1).view(-1, 1, 1).expand(-1, safe.shape[1], 1)).squeeze(2)
    score = stu.start[safe[:, :, 0]] + emitted + moved + stu.end[last]
    return score - log_z.unsqueeze(1)


def token_sequence_logprob(student_logits: Tensor, tags: Tensor, mask: Tensor | None = None) -> Tensor:
    """Log-probabilities of ``K`` tag sequences under a token-level student: ``Σ_{i<n} log softmax(z_i)[y_i]``.

    Args:
        student_logits: ``[B, L, C]``.
        tags: ``[B, K, L]`` integer tags; values at padded positions (``-1``) are ignored.
        mask: ``[B, L]`` real tokens (any pattern), or ``None``.

    Returns:
        ``[B, K]`` in float32 (float64 for float64 logits).
    """
    fn = "token_sequence_logprob"
    if student_logits.ndim != 3:
        raise ValueError(f"{fn}: student logits must be 3-D [B, L, C], got shape {tuple(student_logits.shape)}")
    batch, length, num_tags = student_logits.shape
    bmask = _bool_mask(fn, mask, batch, length, student_logits.device)
    safe = _check_tags(fn, tags, batch, length, num_tags, bmask)
    logits = student_logits.to(_compute_dtype(student_logits)).masked_fill(~bmask.unsqueeze(-1), 0.0)
    log_q = F.log_softmax(logits, dim=-1)
    picked = log_q.unsqueeze(1).expand(-1, safe.shape[1], -1, -1).gather(3, safe.unsqueeze(-1)).squeeze(-1)
    return torch.where(bmask.unsqueeze(1), picked, 0.0).sum(dim=2)


def kbest_weights(teacher_scores: Tensor, uniform: bool = False) -> Tensor:
    """Weights of the teacher's ``K`` best sequences for :func:`sequence_kd`, ``[B, K]``, rows summing to 1.

    ``w_k = P_t(y_k) / Σ_j P_t(y_j) = softmax_k(s_t(y_k))`` (``log Z_t`` cancels), or ``w_k = 1 / K'`` with
    ``uniform``; entries of score ``-inf`` (the padding of :func:`kdlab.structured.crf_kbest` when fewer than
    ``K`` sequences exist) get weight 0 and are not counted in ``K'``. Detached.
    """
    if teacher_scores.ndim != 2 or teacher_scores.shape[1] < 1:
        raise ValueError(f"kbest_weights: scores must be [B, K] with K >= 1, got {tuple(teacher_scores.shape)}")
    scores = teacher_scores.detach().to(_compute_dtype(teacher_scores))
    if uniform:
        finite = torch.isfinite(scores).to(scores.dtype)
        return finite / finite.sum(dim=1, keepdim=True).clamp(min=1.0)
    return torch.softmax(scores, dim=1)


def sequence_kd(student_logprobs: Tensor, weights: Tensor) -> Tensor:
    """Sequence-level Top-K KD (Kim & Rush 2016): ``loss = (1/B) Σ_b −Σ_k w[b,k] log P_s(y_{b,k})``.

    A cross-entropy (not a KL): the teacher's ``K`` best sequences act as weighted gold. Entries of weight 0 are
    skipped (their log-probability may be ``-inf``).

    Args:
        student_logprobs: ``[B, K]`` from :func:`crf_sequence_logprob` or :func:`token_sequence_logprob`.
        weights: ``[B, K]``, e.g. :func:`kbest_weights`; detached.

    Returns:
        Scalar in float32 (float64 if an input is float64).
    """
    if student_logprobs.ndim != 2 or tuple(weights.shape) != tuple(student_logprobs.shape):
        raise ValueError(
            f"sequence_kd: student_logprobs {tuple(student_logprobs.shape)} and weights {tuple(weights.shape)} "
            "must both be [B, K]"
        )
    dtype = _compute_dtype(student_logprobs, weights)
    w = weights.detach().to(device=student_logprobs.device, dtype=dtype)
    total = -_cross_terms(w, student_logprobs.to(dtype)).sum()
    return total / max(student_logprobs.shape[0], 1)


# ----------------------------------------------------------------------------------------------------------------
# dependency parsing: tree teacher -> head-selection student


def _check_arcs(fn: str, student_arc_logits: Tensor, teacher: Tensor, lengths: Tensor) -> None:
    shape = tuple(student_arc_logits.shape)
    if len(shape) != 3 or shape[1] != shape[2] or shape[1] < 2:
        raise ValueError(f"{fn}: student arc logits must be [B, N+1, N+1] with N >= 1, got {shape}")
    if tuple(teacher.shape) != shape:
        raise ValueError(f"{fn}: teacher {tuple(teacher.shape)} must match the student arc logits {shape}")
    if lengths.ndim != 1 or lengths.shape[0] != shape[0]:
        raise ValueError(f"{fn}: lengths must be [B] with B = {shape[0]}, got {tuple(lengths.shape)}")
    if lengths.is_floating_point() or (lengths.numel() and not bool(((lengths >= 1) & (lengths < shape[1])).all())):
        raise ValueError(f"{fn}: lengths must be integers in [1, N] = [1, {shape[1] - 1}]")


def _head_log_probs(student_arc_logits: Tensor, lengths: Tensor, temperature: float, dtype: torch.dtype) -> Tensor:
    """``log p_s(h | d) = log_softmax_h(logits[h, d] / T)`` over valid heads ``h ∈ 0..n, h != d``; ``-inf`` elsewhere.

    Columns of non-words (``d = 0``, ``d > n``) hold 0 logits before the softmax, so no ``nan`` arises there.
    """
    size = student_arc_logits.shape[1]
    pos = torch.arange(size, device=student_arc_logits.device)
    lengths = lengths.to(device=student_arc_logits.device, dtype=torch.long)
    real = pos[None, :] <= lengths[:, None]
    dep = (real & (pos[None, :] >= 1))[:, None, :]
    valid = real[:, :, None] & dep & (pos[:, None] != pos[None, :])[None]
    logits = student_arc_logits.to(dtype) / temperature
    logits = torch.where(valid, logits, torch.where(dep, float("-inf"), 0.0))
    return F.log_softmax(logits, dim=1), valid


def arc_kd_from_marginals(
    student_arc_logits: Tensor, teacher_marginals: Tensor, lengths: Tensor, temperature: float = 1.0
) -> Tensor:
    """Cross-entropy of a head-selection student against teacher arc marginals (a cache-friendly :func:`arc_kd`).

    ``loss = T² · (1/B) Σ_b −Σ_{d=1..n_b} Σ_h μ[b,h,d] log p_s(h | d)`` with
    ``p_s(h | d) = softmax_h(logits[b,h,d] / T)`` over the valid heads ``h ∈ 0..n_b, h != d``. Because the student
    factorises over dependents, this equals ``−Σ_y P_t(y) log Π_d p_s(h_y(d) | d) · T²`` exactly, for the tree
    distribution ``P_t`` whose arc marginals are ``μ`` (from :func:`kdlab.structured.tree_arc_marginals` of the
    teacher scores divided by ``T``). Not 0 at a perfect student; :func:`arc_kd` returns the KL.

    Args:
        student_arc_logits: ``[B, N+1, N+1]``, ``[b, h, d]`` the logit of head ``h`` for dependent ``d``.
        teacher_marginals: ``[B, N+1, N+1]``; detached; entries off valid arcs are ignored.
        lengths: ``[B]`` integer sentence lengths ``1..N``.
        temperature: ``T > 0``.

    Returns:
        Scalar in float32 (float64 if an input is float64).
    """
    fn = "arc_kd_from_marginals"
    _check_temperature(fn, temperature)
    _check_arcs(fn, student_arc_logits, teacher_marginals, lengths)
    dtype = _compute_dtype(student_arc_logits, teacher_marginals)
    log_q, valid = _head_log_probs(student_arc_logits, lengths, temperature, dtype)
    mu = torch.where(valid, teacher_marginals.detach().to(device=valid.device, dtype=dtype), 0.0)
    return _batch_mean(-_cross_terms(mu, log_q).sum(dim=(1, 2)), temperature)


def arc_kd(
    student_arc_logits: Tensor,
    teacher_arc_scores: Tensor,
    lengths: Tensor,
    temperature: float = 1.0,
    single_root: bool = True,
) -> Tensor:
    """First-order tree teacher -> head-selection student, ``T² · (1/B) Σ_b Σ_{d=1..n_b} KL(μ_·d ‖ p_s(· | d))``.

    ``μ = tree_arc_marginals(teacher_arc_scores / T)`` (the teacher's non-projective tree distribution at
    temperature ``T``; ``single_root`` as in :mod:`kdlab.structured.tree`) and
    ``p_s(h | d) = softmax_h(logits[h, d] / T)`` over valid heads ``h ∈ 0..n, h != d``:

    ``KL_d = Σ_h μ[h,d] (log μ[h,d] − log p_s(h | d))``.

    This is :func:`arc_kd_from_marginals` minus ``Σ_d H(μ_·d)``; it is 0 when the student's head distributions
    equal the teacher's arc marginals (e.g. logits ``T · log μ``).

    Args:
        student_arc_logits: ``[B, N+1, N+1]``.
        teacher_arc_scores: ``[B, N+1, N+1]``; detached.
        lengths: ``[B]`` integer sentence lengths ``1..N``.
        temperature: ``T > 0``.
        single_root: count only trees with exactly one word attached to ROOT.

    Returns:
        Scalar in float32 (float64 if an input is float64).
    """
    fn = "arc_kd"
    _check_temperature(fn, temperature)
    _check_arcs(fn, student_arc_logits, teacher_arc_scores, lengths)
    dtype = _compute_dtype(student_arc_logits, teacher_arc_scores)
    lengths = lengths.to(student_arc_logits.device)
    log_q, valid = _head_log_probs(student_arc_logits, lengths, temperature, dtype)
    with torch.no_grad():
        scores = torch.where(valid, teacher_arc_scores.detach().to(device=valid.device, dtype=dtype), 0.0)
        mu = torch.where(valid, tree_arc_marginals(scores / temperature, lengths, single_root=single_root), 0.0)
    pointwise = _entropy_terms(mu) - _cross_terms(mu, log_q)
    return _batch_mean(pointwise.sum(dim=(1, 2)), temperature)
