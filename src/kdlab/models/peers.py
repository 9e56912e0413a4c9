"""Peers for online KD: N students built by the same recipe (different seeds), run together as one module.

``PeerGroup(peers, num_labels, aggregate)(**inputs)`` runs every peer on the same inputs and returns
``PeerOutput(logits=peer 0's logits, peer_logits=[B, N, C], gate=[B, N] or None)``. Evaluation reads ``.logits``,
so the dev score is peer 0's, the peer that is kept and saved as the student.

The learned gate (aggregate "learned") plays OKDHP's feature aggregation unit. OKDHP's FAU reads the stem features
its branches share; our peers share nothing, so the gate reads what every peer has: its logits. The gate's input is
detached: the gate learns how to weigh the peers from the ensemble's gold loss, but the peers are not trained to
shape their logits as gate features (they learn from their own losses and, through the weighted sum, from the
ensemble's). Its last layer starts at zero, so the gate starts as the plain mean and moves away as it learns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed
from torch import Tensor, nn

from kdlab.config import OnlineConfig

GATE_HIDDEN = 32


@dataclass
class PeerOutput:
    logits: Tensor  # peer 0: [B, C]
    peer_logits: Tensor  # [B, N, C]
    gate: Tensor | None = None  # [B, N], rows sum to 1 (aggregate "learned")


class PeerGate(nn.Module):
    """Per-example softmax weights over N peers from their concatenated (detached) logits."""

    def __init__(self, peers: int, num_labels: int, hidden: int = GATE_HIDDEN) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(peers * num_labels, hidden), nn.ReLU(), nn.Linear(hidden, peers))
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)

    def forward(self, peer_logits: Tensor) -> Tensor:
        flat = peer_logits.detach().flatten(1).to(self.net[0].weight.dtype)
        return torch.softmax(self.net(flat).float(), dim=-1)


class PeerGroup(nn.Module):
    def __init__(self, peers: list[nn.Module], num_labels: int, aggregate: str = "mean") -> None:
        super().__init__()
        if len(peers) < 2:
            raise ValueError(f"PeerGroup: online KD needs at least 2 peers, got {len(peers)}")
        self.peers = nn.ModuleList(peers)
        self.num_labels = num_labels
        self.aggregate = aggregate
        self.gate = PeerGate(len(peers), num_labels) if aggregate == "learned" else None

    def forward(self, **inputs: Any) -> PeerOutput:
        logits = [peer(**inputs).logits for peer in self.peers]
        peer_logits = torch.stack(logits, dim=1)
        gate = self.gate(peer_logits) if self.gate is not None else None
        return PeerOutput(logits=logits[0], peer_logits=peer_logits, gate=gate)


def peer_group(
    make_student: Callable[[int], nn.Module], cfg: OnlineConfig, num_labels: int, seed: int = 0
) -> PeerGroup:
    """``cfg.peers`` students ``make_student(i)``, each built right after ``set_seed(seed + i)``.

    Peer 0 is then the very student a single-student run with ``seed`` builds.
    """
    peers = []
    for i in range(cfg.peers):
        set_seed(seed + i)
        peers.append(make_student(i))
    return PeerGroup(peers, num_labels, cfg.aggregate)


def peer_dir(path: Path, i: int) -> Path:
    """Where peer ``i`` of the student saved at ``path`` goes."""
    return Path(path).parent / "peers" / f"peer-{i}"


def save_peers(group: PeerGroup, path: Path, save_one: Callable[[nn.Module, Path], Any]) -> None:
    """Peer 0 at ``path`` (the deployable student, a plain single model) and every peer i at ``peer_dir(path, i)``."""
    save_one(group.peers[0], Path(path))
    for i, peer in enumerate(group.peers):
        save_one(peer, peer_dir(path, i))
