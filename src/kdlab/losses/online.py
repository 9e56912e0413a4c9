"""Online KD losses: peers trained together teach each other, without a pre-trained teacher.

``peer_logits`` is ``[B, N, C]`` (N peers' logits for the same batch; ``C = 1`` for regression). Every target is
detached: a peer learns towards its target and cannot lower its KD term by moving the target. (OKDHP's code does
not detach the ensemble in its KD term; we do, so that the only way to the target is the peers' own gold losses
and, for a learned gate, the ensemble's gold loss.)

Aggregate (OKDHP aggregates heatmaps linearly, E = Σ_b w_b H_b, so we aggregate logits the same way, not
probabilities): ``E = Σ_b w_b z_b`` with gate weights ``w`` (rows sum to 1), or the plain mean ``w_b = 1/N``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .logits import _compute_dtype, regression_mse, soft_kd

__all__ = ["ensemble_logits", "mutual_kd", "mutual_mse", "online_kd", "online_mse"]


def _check_peers(fn: str, peer_logits: Tensor, min_peers: int = 1) -> None:
    if peer_logits.ndim != 3:
        raise ValueError(f"{fn}: peer logits must be 3-D [B, N, C], got shape {tuple(peer_logits.shape)}")
    if peer_logits.shape[1] < min_peers:
        raise ValueError(f"{fn}: needs at least {min_peers} peers, got {peer_logits.shape[1]}")


def ensemble_logits(peer_logits: Tensor, gate: Tensor | None = None) -> Tensor:
    """The peers' aggregate: ``E_b = Σ_n w_{b,n} z_{b,n}`` (``[B, C]``), ``w = gate`` or ``1/N`` when ``gate`` is None.

    Args:
        peer_logits: ``[B, N, C]``.
        gate: ``[B, N]`` per-example peer weights (each row sums to 1), or None for the mean.

    Returns:
        ``[B, C]`` in float32 (float64 for float64 inputs). Gradients flow into the logits and the gate.
    """
    _check_peers("ensemble_logits", peer_logits)
    dtype = _compute_dtype(peer_logits) if gate is None else _compute_dtype(peer_logits, gate)
    logits = peer_logits.to(dtype)
    if gate is None:
        return logits.mean(dim=1)
    if gate.shape != peer_logits.shape[:2]:
        raise ValueError(f"ensemble_logits: gate {tuple(gate.shape)} must be [B, N] = {tuple(peer_logits.shape[:2])}")
    return torch.einsum("bn,bnc->bc", gate.to(dtype), logits)


def online_kd(peer_logits: Tensor, target_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Each peer distils the aggregate: ``(1/N) Σ_n T² · (1/B) Σ_b KL(softmax(E_b/T) ‖ softmax(z_{b,n}/T))``.

    ``E`` (``target_logits``, ``[B, C]``) is detached. The mean over peers; an objective that trains each peer as
    if alone sums over peers (``N`` times this value).
    """
    _check_peers("online_kd", peer_logits)
    target = target_logits.detach()
    return torch.stack([soft_kd(peer_logits[:, n], target, temperature) for n in range(peer_logits.shape[1])]).mean()


def mutual_kd(peer_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Deep mutual learning (Zhang et al. 2018): each peer distils every other peer.

    ``(1/N) Σ_n (1/(N-1)) Σ_{m≠n} T² · (1/B) Σ_b KL(softmax(z_{b,m}/T) ‖ softmax(z_{b,n}/T))``, ``z_m`` detached
    (in the KL that teaches peer n; peer m learns from its own KL terms).
    """
    _check_peers("mutual_kd", peer_logits, min_peers=2)
    return _mean_over_pairs(peer_logits, lambda student, teacher: soft_kd(student, teacher, temperature))


def online_mse(peer_outputs: Tensor, target: Tensor) -> Tensor:
    """Regression: each peer regresses to the aggregate, ``(1/N) Σ_n (1/B) Σ_b (z_{b,n} - E_b)²``, ``E`` detached.

    ``peer_outputs`` is ``[B, N, 1]``, ``target`` ``[B, 1]`` or ``[B]``.
    """
    _check_peers("online_mse", peer_outputs)
    target = target.detach()
    return torch.stack([regression_mse(peer_outputs[:, n], target) for n in range(peer_outputs.shape[1])]).mean()


def mutual_mse(peer_outputs: Tensor) -> Tensor:
    """Regression DML: ``(1/N) Σ_n (1/(N-1)) Σ_{m≠n} (1/B) Σ_b (z_{b,n} - z_{b,m})²``, ``z_m`` detached."""
    _check_peers("mutual_mse", peer_outputs, min_peers=2)
    return _mean_over_pairs(peer_outputs, regression_mse)


def _mean_over_pairs(peer_logits: Tensor, loss: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """``(1/N) Σ_n (1/(N-1)) Σ_{m≠n} loss(z_n, sg(z_m))``."""
    peers = peer_logits.shape[1]
    per_peer = []
    for n in range(peers):
        others = [loss(peer_logits[:, n], peer_logits[:, m].detach()) for m in range(peers) if m != n]
        per_peer.append(torch.stack(others).mean())
    return torch.stack(per_peer).mean()
