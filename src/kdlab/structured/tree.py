"""Non-projective first-order dependency trees: the Matrix-Tree theorem (Koo et al. 2007; Smith & Smith 2007).

Conventions shared by every function here:

* ``arc_scores [B, N+1, N+1]``: ``arc_scores[b, h, d]`` is the score of the arc head ``h`` -> dependent ``d``.
  Index 0 is the artificial ROOT; words are ``1..n_b``. Column 0 (arcs into ROOT) and the diagonal (self loops)
  are ignored, and so is every arc touching a padded position ``> n_b``.
* ``lengths [B]``: the number of words ``n_b >= 1`` of each sentence (``n_b <= N``).

A tree ``y`` is a head for every word such that following heads from any word reaches ROOT (no cycles); its score
is ``s(y) = Σ_{d=1..n} arc_scores[h_y(d), d]`` and its probability ``p(y) = exp(s(y)) / Z`` with
``Z = Σ_y exp(s(y))``. With ``single_root=True`` only trees in which exactly one word hangs from ROOT are counted
(the UD convention); with ``single_root=False`` any number of words may.

The partition function is a determinant. With weights ``A[h, d] = exp(s[h, d])`` between words and root weights
``r[d] = exp(s[0, d])``, and the word Laplacian ``L[h, d] = -A[h, d]`` (``h != d``),
``L[d, d] = Σ_{h>=1, h!=d} A[h, d]``:

* multi-root: ``Z = det(L + diag(r))`` (ROOT is an ordinary node whose row and column are removed);
* single-root (Koo et al. 2007, section 3.3): ``Z = det(L̂)`` where ``L̂`` is ``L`` with its first row replaced by
  ``r``.

Every entry of column ``d`` of either matrix is a weight of an arc into ``d``, so shifting the scores into ``d``
by ``c_d = max_h s[h, d]`` scales that column by ``exp(-c_d)``: ``log Z = log det(L̂(s - c)) + Σ_d c_d``. After the
shift every weight is ``<= 1`` and the largest in each column is exactly 1, so nothing overflows.

Precision limit (inherent to the determinant): when the best arcs into each word form a cycle that outscores every
tree by more than about ``-log(eps)`` (≈ 36 in float64, ≈ 16 in float32), ``det`` is a tiny difference of O(1)
terms and loses its digits; ``L̂`` can even be numerically singular (``tree_arc_marginals`` then raises
``torch.linalg.LinAlgError``). Scores from a trained scorer are far from that; use float64 when in doubt.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["tree_arc_marginals", "tree_log_partition", "tree_score"]


def _check(arc_scores: Tensor, lengths: Tensor) -> None:
    if arc_scores.dim() != 3 or arc_scores.shape[1] != arc_scores.shape[2]:
        raise ValueError(f"arc_scores must be [B, N+1, N+1], got {tuple(arc_scores.shape)}")
    if arc_scores.shape[1] < 2:
        raise ValueError("arc_scores must hold at least one word besides ROOT (N >= 1)")
    if lengths.dim() != 1 or lengths.shape[0] != arc_scores.shape[0]:
        raise ValueError(f"lengths must be [B] with B = {arc_scores.shape[0]}, got {tuple(lengths.shape)}")


def _arc_mask(lengths: Tensor, size: int) -> Tensor:
    """Valid arcs ``[B, N+1, N+1]``: ``valid[b, h, d] = (h <= n_b) ∧ (1 <= d <= n_b) ∧ (h != d)``."""
    pos = torch.arange(size, device=lengths.device)
    real = pos[None, :] <= lengths[:, None]  # [B, N+1]: ROOT and the words
    head_ok = real[:, :, None]
    dep_ok = (real & (pos[None, :] >= 1))[:, None, :]
    not_loop = pos[:, None] != pos[None, :]
    return head_ok & dep_ok & not_loop[None]


def _laplacian(arc_scores: Tensor, lengths: Tensor, single_root: bool) -> tuple[Tensor, Tensor, Tensor]:
    """The shifted Laplacian and what it is made of.

    Returns ``(lap [B, N, N], shift [B], weights [B, N+1, N+1])`` with ``weights[b, h, d] = exp(s[h, d] - c_d)`` on
    valid arcs and 0 elsewhere (``c_d = max_h s[h, d]`` over valid heads, detached: the identity
    ``log Z(s) = log det L̂(s - c) + Σ_d c_d`` holds for any constant ``c``, so gradients stay exact), and
    ``shift[b] = Σ_d c_d``. Padded words get an identity row and column, which leaves the determinant unchanged.
    """
    _check(arc_scores, lengths)
    size = arc_scores.shape[1]
    n_words = size - 1
    lengths = lengths.to(device=arc_scores.device, dtype=torch.long)
    valid = _arc_mask(lengths, size)
    neg_inf = torch.tensor(float("-inf"), dtype=arc_scores.dtype, device=arc_scores.device)
    masked = torch.where(valid, arc_scores, neg_inf)
    col_max = masked.detach().amax(dim=1)  # [B, N+1]; -inf for column 0 and padded words
    col_max = torch.where(torch.isfinite(col_max), col_max, torch.zeros_like(col_max))
    weights = torch.where(valid, torch.exp(masked - col_max[:, None, :]), torch.zeros_like(arc_scores))

    words = weights[:, 1:, 1:]  # A [B, N, N] (h, d >= 1), diagonal already 0
    root = weights[:, 0, 1:]  # r [B, N]
    incoming = words.sum(dim=1)  # Σ_h A[h, d]
    pos = torch.arange(1, size, device=arc_scores.device)
    padded = (pos[None, :] > lengths[:, None]).to(arc_scores.dtype)  # [B, N]: 1 on padded words
    diag = incoming + padded if single_root else incoming + root + padded
    lap = torch.diag_embed(diag) - words
    if single_root:
        first = torch.zeros(n_words, dtype=arc_scores.dtype, device=arc_scores.device)
        first[0] = 1.0
        lap = torch.where(first[None, :, None].bool(), root[:, None, :], lap)
    return lap, col_max[:, 1:].sum(dim=1), weights


def tree_log_partition(arc_scores: Tensor, lengths: Tensor, single_root: bool = True) -> Tensor:
    """Log partition function of non-projective dependency trees, ``[B]``.

    ``log Z_b = log Σ_{y ∈ T(n_b)} exp(Σ_{d=1..n_b} s[b, h_y(d), d]) = log det L̂_b(s - c) + Σ_d c_d``, where
    ``T(n)`` holds the spanning arborescences of ``{0..n}`` rooted at 0 (with ``single_root``: exactly one arc
    leaves 0), ``L̂`` is the (root-row-replaced, for ``single_root``) Laplacian of the module docstring and ``c_d``
    the per-dependent score maximum. Computed with ``torch.linalg.slogdet`` in the dtype of ``arc_scores``
    (float32 / float64; half precisions are not supported by the determinant), differentiable: its gradient
    with respect to ``arc_scores`` is the arc marginals of :func:`tree_arc_marginals`.
    """
    lap, shift, _ = _laplacian(arc_scores, lengths, single_root)
    _, logabsdet = torch.linalg.slogdet(lap)
    return logabsdet + shift


def tree_arc_marginals(arc_scores: Tensor, lengths: Tensor, single_root: bool = True) -> Tensor:
    """Arc marginals ``μ[b, h, d] = P(h -> d) = ∂ log Z_b / ∂ s[b, h, d]``, ``[B, N+1, N+1]``.

    Closed form with the inverse Laplacian ``M = L̂^{-1}`` (Koo et al. 2007, section 3.2; ``∂ log det L̂ / ∂ L̂[i, j]
    = M[j, i]``), words ``h, d`` in ``1..n`` with matrix indices ``h-1, d-1``, ``A`` and ``r`` the (shifted) weights:

    * multi-root: ``μ[h, d] = A[h, d] (M[d, d] - M[d, h])`` and ``μ[0, d] = r[d] M[d, d]``;
    * single-root: ``μ[h, d] = A[h, d] ([d != 1] M[d, d] - [h != 1] M[d, h])`` and ``μ[0, d] = r[d] M[d, 1]``.

    The shift cancels (column ``d`` of ``L̂`` and row ``d`` of ``M`` scale inversely). The closed form uses no
    autograd, so it works under ``torch.no_grad`` and ``torch.inference_mode`` alike, and is differentiable itself
    (through ``torch.linalg.inv``) when called with grad enabled. For each real dependent ``d``,
    ``Σ_h μ[h, d] = 1``; column 0, the diagonal and every entry touching padding are 0.
    """
    lap, _, weights = _laplacian(arc_scores, lengths, single_root)
    inv = torch.linalg.inv(lap)  # M [B, N, N]
    inv_t = inv.transpose(1, 2)  # inv_t[b, h, d] = M[d, h]
    diag = torch.diagonal(inv, dim1=1, dim2=2)  # M[d, d], [B, N]
    words = weights[:, 1:, 1:]
    root = weights[:, 0, 1:]
    if single_root:
        not_first = torch.ones_like(diag[0])
        not_first[0] = 0.0
        word_marg = words * (not_first[None, None, :] * diag[:, None, :] - not_first[None, :, None] * inv_t)
        root_marg = root * inv[:, :, 0]
    else:
        word_marg = words * (diag[:, None, :] - inv_t)
        root_marg = root * diag
    out = torch.zeros_like(weights)
    out[:, 1:, 1:] = word_marg
    out[:, 0, 1:] = root_marg
    return out


def tree_score(arc_scores: Tensor, heads: Tensor, lengths: Tensor) -> Tensor:
    """Score of given trees, ``[B]``: ``s(y_b) = Σ_{d=1..n_b} arc_scores[b, heads[b, d], d]``.

    ``heads [B, N+1]`` holds each word's head (0 = ROOT); ``heads[:, 0]`` and padded positions ``> n_b`` are
    ignored (any value, e.g. -100, is fine there). Whether ``heads`` forms a tree is not checked. With
    :func:`tree_log_partition`, ``log p(y_b) = s(y_b) - log Z_b``.
    """
    _check(arc_scores, lengths)
    if heads.shape != arc_scores.shape[:2]:
        raise ValueError(f"heads must be [B, N+1] = {tuple(arc_scores.shape[:2])}, got {tuple(heads.shape)}")
    size = arc_scores.shape[1]
    lengths = lengths.to(device=arc_scores.device, dtype=torch.long)
    pos = torch.arange(size, device=arc_scores.device)
    real = (pos[None, :] >= 1) & (pos[None, :] <= lengths[:, None])  # [B, N+1]
    heads = heads.to(device=arc_scores.device, dtype=torch.long)
    safe_heads = torch.where(real, heads, torch.zeros_like(heads))
    picked = arc_scores.gather(1, safe_heads[:, None, :]).squeeze(1)  # [B, N+1]: s[b, heads[b, d], d]
    return torch.where(real, picked, torch.zeros_like(picked)).sum(dim=1)
