"""Linear-chain CRF as pure functions over potentials: score, log-partition, marginals, Viterbi, k-best Viterbi.

Written here rather than imported: no well-kept CRF library exists for torch 2.x. ``pytorch-crf`` is unmaintained
and has neither marginals nor k-best decoding; ``torch-struct`` has not been maintained since 2021.

Potentials (batched, right-padded):

* ``emissions [B, L, C]``: score of tag ``c`` at position ``i``;
* ``transitions [C, C]``: ``transitions[a, b]`` is the score of tag ``a`` at ``i − 1`` followed by tag ``b`` at ``i``;
* ``start [C]`` / ``end [C]``: score of the first / last tag;
* ``mask [B, L]``: real tokens (bool, or 0/1 integers: nonzero = real). Each row's real tokens are a prefix of
  length ``n_b >= 1``; ``None`` means every position is real.

The score of a tag sequence ``y`` of length ``n`` is

``s(y) = start[y_0] + Σ_{0≤i<n} emissions[i, y_i] + Σ_{1≤i<n} transitions[y_{i−1}, y_i] + end[y_{n−1}]``

and ``P(y) = exp(s(y) − log Z)`` with ``log Z = log Σ_y exp(s(y))`` over all ``C^n`` sequences. Padded positions
never enter any result: their emissions (even ``nan``/``inf``) are replaced by 0 before any arithmetic and get
gradient 0.

Arithmetic is in float32, or in a wider float if an input already is one (float64 stays float64, so
``torch.autograd.gradcheck`` works); fp16/bf16 inputs are upcast, as in :mod:`kdlab.losses.logits`. Everything is
vectorised over the batch and the tags; only positions are looped over. Every function checks the shapes and the
mask (a prefix of length >= 1 per row), which reads the mask back to the host once per call.

``-inf`` potentials (forbidden tags or transitions) give correct forward values as long as every row keeps at least
one sequence of finite score; gradients through ``logsumexp`` of all ``-inf`` entries are ``nan``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "PAD_TAG",
    "crf_kbest",
    "crf_log_partition",
    "crf_marginals",
    "crf_sequence_score",
    "crf_viterbi",
]

PAD_TAG = -1
"""Tag value written at padded positions by :func:`crf_viterbi` and :func:`crf_kbest`."""


def _prepare(
    fn: str, emissions: Tensor, transitions: Tensor, start: Tensor, end: Tensor, mask: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Check shapes and mask; return the potentials in the compute dtype (padded emissions zeroed) and a bool mask."""
    if emissions.ndim != 3:
        raise ValueError(f"{fn}: emissions must be 3-D [B, L, C], got shape {tuple(emissions.shape)}")
    batch, length, tags = emissions.shape
    if length < 1 or tags < 1:
        raise ValueError(f"{fn}: emissions need L >= 1 and C >= 1, got shape {tuple(emissions.shape)}")
    if tuple(transitions.shape) != (tags, tags):
        raise ValueError(f"{fn}: transitions must be [C, C] = [{tags}, {tags}], got {tuple(transitions.shape)}")
    for name, vector in (("start", start), ("end", end)):
        if tuple(vector.shape) != (tags,):
            raise ValueError(f"{fn}: {name} must be [C] = [{tags}], got {tuple(vector.shape)}")
    if mask is None:
        mask = torch.ones(batch, length, dtype=torch.bool, device=emissions.device)
    else:
        if tuple(mask.shape) != (batch, length):
            raise ValueError(f"{fn}: mask must be [B, L] = [{batch}, {length}], got {tuple(mask.shape)}")
        mask = mask.to(device=emissions.device, dtype=torch.bool)
        if batch > 0 and (not bool(mask[:, 0].all()) or bool((mask[:, 1:] & ~mask[:, :-1]).any())):
            raise ValueError(
                f"{fn}: mask must mark a prefix of length >= 1 in every row (right padding, no empty rows)"
            )
    dtype = torch.float32
    for tensor in (emissions, transitions, start, end):
        if not tensor.is_floating_point():
            raise ValueError(f"{fn}: potentials must be floating point, got {tensor.dtype}")
        dtype = torch.promote_types(dtype, tensor.dtype)
    emissions = emissions.to(dtype).masked_fill(~mask.unsqueeze(-1), 0.0)
    return emissions, transitions.to(dtype), start.to(dtype), end.to(dtype), mask


def _forward(emissions: Tensor, transitions: Tensor, start: Tensor, mask: Tensor) -> Tensor:
    """Forward variables ``α [B, L, C]``: ``α_i(c) = log Σ_{y_0..y_i = c} exp(partial score)``, carried over padding."""
    alpha = start + emissions[:, 0]
    alphas = [alpha]
    for i in range(1, emissions.shape[1]):
        step = torch.logsumexp(alpha.unsqueeze(2) + transitions, dim=1) + emissions[:, i]
        alpha = torch.where(mask[:, i].unsqueeze(1), step, alpha)
        alphas.append(alpha)
    return torch.stack(alphas, dim=1)


def crf_sequence_score(
    emissions: Tensor, transitions: Tensor, start: Tensor, end: Tensor, tags: Tensor, mask: Tensor | None = None
) -> Tensor:
    """Score of given tag sequences, differentiable in all potentials.

    ``s_b = start[y_0] + Σ_{0≤i<n_b} emissions[b, i, y_i] + Σ_{1≤i<n_b} transitions[y_{i−1}, y_i] + end[y_{n_b−1}]``

    The log-likelihood of gold tags is ``crf_sequence_score(...) − crf_log_partition(...)``.

    Args:
        emissions: ``[B, L, C]``.
        transitions: ``[C, C]``, ``transitions[a, b]`` scores ``a`` followed by ``b``.
        start: ``[C]``.
        end: ``[C]``.
        tags: ``[B, L]`` integer tags in ``[0, C)`` at real positions; values at padded positions are ignored
            (e.g. :data:`PAD_TAG`, so the output of :func:`crf_viterbi` can be passed back).
        mask: ``[B, L]`` real tokens (right-padded prefix, length >= 1), or ``None`` for no padding.

    Returns:
        ``[B]`` in float32 (float64 if a potential is float64).

    Raises:
        ValueError: bad shapes or dtypes, a mask that is not a non-empty prefix, or a tag outside ``[0, C)`` at a
            real position.
    """
    fn = "crf_sequence_score"
    emissions, transitions, start, end, mask = _prepare(fn, emissions, transitions, start, end, mask)
    if tuple(tags.shape) != tuple(mask.shape):
        raise ValueError(f"{fn}: tags must be [B, L] = {list(mask.shape)}, got {tuple(tags.shape)}")
    if tags.is_floating_point() or tags.is_complex() or tags.dtype == torch.bool:
        raise ValueError(f"{fn}: tags must be integer tag ids, got dtype {tags.dtype}")
    num_tags = emissions.shape[-1]
    tags = tags.to(device=emissions.device, dtype=torch.long)
    if bool(((tags < 0) | (tags >= num_tags))[mask].any()):
        raise ValueError(f"{fn}: tags at real positions must lie in [0, {num_tags})")
    safe = tags.masked_fill(~mask, 0)
    lengths = mask.sum(dim=1)
    emitted = emissions.gather(2, safe.unsqueeze(-1)).squeeze(-1).sum(dim=1)  # padded emissions are already 0
    moved = torch.where(mask[:, 1:], transitions[safe[:, :-1], safe[:, 1:]], 0.0).sum(dim=1)
    last = safe.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1)
    return start[safe[:, 0]] + emitted + moved + end[last]


def crf_log_partition(
    emissions: Tensor, transitions: Tensor, start: Tensor, end: Tensor, mask: Tensor | None = None
) -> Tensor:
    """Log-partition function by the forward algorithm in log space, differentiable.

    ``α_0(c) = start[c] + emissions[0, c]``,
    ``α_i(c) = logsumexp_a(α_{i−1}(a) + transitions[a, c]) + emissions[i, c]`` for ``1 ≤ i < n``,
    ``log Z = logsumexp_c(α_{n−1}(c) + end[c]) = log Σ_y exp(s(y))``.

    Its gradients are the marginals: ``∂ log Z / ∂ emissions[b, i, c] = P(y_i = c)`` and
    ``∂ log Z / ∂ transitions[a, c] = Σ_b Σ_i P(y_i = a, y_{i+1} = c)`` (see :func:`crf_marginals`).

    Args:
        emissions: ``[B, L, C]``.
        transitions: ``[C, C]``.
        start: ``[C]``.
        end: ``[C]``.
        mask: ``[B, L]`` real tokens (right-padded prefix, length >= 1), or ``None`` for no padding.

    Returns:
        ``[B]`` in float32 (float64 if a potential is float64).
    """
    emissions, transitions, start, end, mask = _prepare("crf_log_partition", emissions, transitions, start, end, mask)
    alpha = start + emissions[:, 0]
    for i in range(1, emissions.shape[1]):
        step = torch.logsumexp(alpha.unsqueeze(2) + transitions, dim=1) + emissions[:, i]
        alpha = torch.where(mask[:, i].unsqueeze(1), step, alpha)
    return torch.logsumexp(alpha + end, dim=1)


def crf_marginals(
    emissions: Tensor, transitions: Tensor, start: Tensor, end: Tensor, mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Node and edge marginals by forward-backward in log space.

    With the forward variables ``α`` of :func:`crf_log_partition` and the backward variables
    ``β_{n−1}(c) = end[c]``, ``β_i(a) = logsumexp_c(transitions[a, c] + emissions[i+1, c] + β_{i+1}(c))``:

    ``node[b, i, c] = P(y_i = c) = exp(α_i(c) + β_i(c) − log Z)``,
    ``edge[b, i, a, c] = P(y_i = a, y_{i+1} = c) = exp(α_i(a) + transitions[a, c] + emissions[i+1, c]
    + β_{i+1}(c) − log Z)``.

    Computed explicitly rather than as the gradient of ``log Z``, so it also works under ``torch.no_grad`` and
    ``torch.inference_mode`` (and is itself differentiable when autograd is on). Node marginals sum to 1 over ``c``
    at real positions; edge marginals sum to 1 over ``(a, c)`` at real edges and to the node marginals over either
    side.

    Args:
        emissions: ``[B, L, C]``.
        transitions: ``[C, C]``.
        start: ``[C]``.
        end: ``[C]``.
        mask: ``[B, L]`` real tokens (right-padded prefix, length >= 1), or ``None`` for no padding.

    Returns:
        ``(node [B, L, C], edge [B, L−1, C, C])`` in float32 (float64 if a potential is float64); 0 at padded
        positions (``i ≥ n_b``) and padded edges (``i + 1 ≥ n_b``).
    """
    emissions, transitions, start, end, mask = _prepare("crf_marginals", emissions, transitions, start, end, mask)
    length = emissions.shape[1]
    alphas = _forward(emissions, transitions, start, mask)
    lengths = mask.sum(dim=1)
    last_alpha = alphas.gather(1, (lengths - 1).view(-1, 1, 1).expand(-1, 1, alphas.shape[2])).squeeze(1)
    log_z = torch.logsumexp(last_alpha + end, dim=1)

    beta = end.expand_as(emissions[:, 0])
    betas = [beta]
    for i in range(length - 2, -1, -1):
        step = torch.logsumexp(transitions + (emissions[:, i + 1] + beta).unsqueeze(1), dim=2)
        # Position i is the last real one (or padding) when i + 1 is padded: restart from `end` there.
        beta = torch.where(mask[:, i + 1].unsqueeze(1), step, end)
        betas.append(beta)
    betas_t = torch.stack(betas[::-1], dim=1)

    norm = log_z.view(-1, 1, 1)
    node = torch.where(mask.unsqueeze(-1), torch.exp(alphas + betas_t - norm), 0.0)
    log_edge = (
        alphas[:, :-1].unsqueeze(3)
        + transitions
        + (emissions[:, 1:] + betas_t[:, 1:]).unsqueeze(2)
        - norm.unsqueeze(-1)
    )
    edge = torch.where(mask[:, 1:].view(*mask[:, 1:].shape, 1, 1), torch.exp(log_edge), 0.0)
    return node, edge


def crf_viterbi(
    emissions: Tensor, transitions: Tensor, start: Tensor, end: Tensor, mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Highest-scoring tag sequence per row (Viterbi, max-product in log space).

    ``δ_0(c) = start[c] + emissions[0, c]``,
    ``δ_i(c) = max_a(δ_{i−1}(a) + transitions[a, c]) + emissions[i, c]``, back-pointer ``ψ_i(c) = argmax_a``;
    ``score = max_c(δ_{n−1}(c) + end[c]) = max_y s(y)``, and ``y* = argmax_y s(y)`` by following ``ψ`` back.

    Ties go to the lower tag id. Works under ``torch.inference_mode``.

    Args:
        emissions: ``[B, L, C]``.
        transitions: ``[C, C]``.
        start: ``[C]``.
        end: ``[C]``.
        mask: ``[B, L]`` real tokens (right-padded prefix, length >= 1), or ``None`` for no padding.

    Returns:
        ``(tags [B, L] long, scores [B])``: tags are :data:`PAD_TAG` (``-1``) at padded positions; scores in
        float32 (float64 if a potential is float64).
    """
    emissions, transitions, start, end, mask = _prepare("crf_viterbi", emissions, transitions, start, end, mask)
    batch, length, num_tags = emissions.shape
    identity = torch.arange(num_tags, device=emissions.device).expand(batch, num_tags)
    delta = start + emissions[:, 0]
    pointers = []
    for i in range(1, length):
        best, arg = (delta.unsqueeze(2) + transitions).max(dim=1)
        real = mask[:, i].unsqueeze(1)
        delta = torch.where(real, best + emissions[:, i], delta)
        pointers.append(torch.where(real, arg, identity))  # through padding, the path stays on its tag
    scores, current = (delta + end).max(dim=1)
    path = [current]
    for pointer in reversed(pointers):
        current = pointer.gather(1, current.unsqueeze(1)).squeeze(1)
        path.append(current)
    tags = torch.stack(path[::-1], dim=1).masked_fill(~mask, PAD_TAG)
    return tags, scores


def crf_kbest(
    emissions: Tensor, transitions: Tensor, start: Tensor, end: Tensor, k: int, mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The ``k`` highest-scoring tag sequences per row, best first (k-best Viterbi).

    Keeps the top ``k`` partial paths for every (position, tag):
    ``δ_0(c) = [start[c] + emissions[0, c], −inf, …]``,
    ``δ_i(c) = top-k over (a, r) of (δ_{i−1}(a)_r + transitions[a, c]) + emissions[i, c]``;
    the answer is the top ``k`` of ``δ_{n−1}(c)_r + end[c]`` over ``(c, r)``, each followed back to its start.
    Every one of the ``k`` best full paths has all its prefixes among the ``k`` best for their end tag, so the
    result is exact; paths kept at one (position, tag) are distinct, so the ``k`` sequences are distinct.
    For ``k = 1`` it equals :func:`crf_viterbi` (up to ties). Cost: ``O(L · C² · k)`` time and ``O(L · C · k)`` memory.

    When a row has fewer than ``k`` sequences (``C^{n_b} < k``), the missing entries get score ``-inf`` and the tags
    of the best sequence (entry 0). Sequences whose score is ``-inf`` (forbidden by ``-inf`` potentials) are
    reported the same way.

    Args:
        emissions: ``[B, L, C]``.
        transitions: ``[C, C]``.
        start: ``[C]``.
        end: ``[C]``.
        k: number of sequences, ``>= 1``.
        mask: ``[B, L]`` real tokens (right-padded prefix, length >= 1), or ``None`` for no padding.

    Returns:
        ``(tags [B, k, L] long, scores [B, k])``, scores in descending order along ``k``; tags are
        :data:`PAD_TAG` (``-1``) at padded positions; scores in float32 (float64 if a potential is float64).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"crf_kbest: k must be an integer >= 1, got {k!r}")
    emissions, transitions, start, end, mask = _prepare("crf_kbest", emissions, transitions, start, end, mask)
    batch, length, num_tags = emissions.shape
    device = emissions.device
    # delta[b, c, r]: score of the r-th best partial path ending in tag c; pointer entries are flat (a * k + r).
    delta = torch.full((batch, num_tags, k), float("-inf"), dtype=emissions.dtype, device=device)
    delta[:, :, 0] = start + emissions[:, 0]
    identity = torch.arange(num_tags * k, device=device).view(1, num_tags, k).expand(batch, -1, -1)
    pointers = []
    for i in range(1, length):
        candidates = (delta.unsqueeze(3) + transitions.view(1, num_tags, 1, num_tags)).reshape(batch, -1, num_tags)
        best, flat = candidates.topk(k, dim=1, largest=True, sorted=True)  # [B, k, C] over (a, r)
        best, flat = best.transpose(1, 2), flat.transpose(1, 2)  # [B, C, k]
        real = mask[:, i].view(batch, 1, 1)
        delta = torch.where(real, best + emissions[:, i].unsqueeze(2), delta)
        pointers.append(torch.where(real, flat, identity))  # through padding, each path stays where it is
    scores, flat = (delta + end.view(1, num_tags, 1)).reshape(batch, -1).topk(k, dim=1, largest=True, sorted=True)
    path = [flat // k]
    for pointer in reversed(pointers):
        flat = pointer.reshape(batch, -1).gather(1, flat)
        path.append(flat // k)
    tags = torch.stack(path[::-1], dim=2)  # [B, k, L]
    missing = torch.isneginf(scores)
    tags = torch.where(missing.unsqueeze(2), tags[:, :1], tags)
    tags = tags.masked_fill(~mask.unsqueeze(1), PAD_TAG)
    return tags, scores
