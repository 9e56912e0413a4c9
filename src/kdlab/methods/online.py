"""Online KD objective: N peers trained together, each taught by their aggregate or by each other (no teacher).

Classification, peers z_1..z_N ([B, C] each), E = ensemble_logits(z, gate) (mean, or the learned gate's weights):
    L = Σ_n [(1 - alpha) CE(y, p_n) + alpha c(e) KD_n]  +  [learned: ensemble_weight · CE(y, softmax(E))]
    KD_n = T² KL(softmax(E/T) ‖ softmax(z_n/T))                             aggregate mean | learned (OKDHP)
    KD_n = (1/(N-1)) Σ_{m≠n} T² KL(softmax(z_m/T) ‖ softmax(z_n/T))         aggregate mutual (DML)
Regression: CE -> MSE to the gold value, KD_n -> (z_n - E)² or the mean of (z_n - z_m)².
Every KD target is detached (see kdlab.losses.online). The sum over peers trains each peer as if it were alone
(its own gradient is not divided by N). c(e) = exp(-5 (1 - e/R)^2) for e < R epochs done, 1 after (OKDHP's
ramp-up; R = distill.online.rampup_epochs, 0 = off), with e counted in fractions of an epoch (per batch).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from kdlab.config import DistillConfig, Recipe
from kdlab.errors import UserError
from kdlab.losses import ensemble_logits, mutual_kd, mutual_mse, online_kd, online_mse
from kdlab.methods.objective import Objective
from kdlab.methods.stages import Stage

if TYPE_CHECKING:
    from kdlab.engine.teacher import TeacherSignals


def rampup_weight(epochs_done: float, rampup_epochs: float) -> float:
    """OKDHP's sigmoid-shaped ramp-up: ``exp(-5 (1 - e/R)^2)`` for ``e < R``, 1 from ``R`` on (and when R = 0)."""
    if rampup_epochs <= 0 or epochs_done >= rampup_epochs:
        return 1.0
    return math.exp(-5.0 * (1.0 - max(epochs_done, 0.0) / rampup_epochs) ** 2)


def check_online(recipe: Recipe) -> None:
    """What online KD cannot combine with, refused before anything loads."""
    cfg = recipe.distill
    if cfg.method != "online":
        return
    refused = [
        ("cache.dir", recipe.cache.dir is not None, "online KD has no teacher whose knowledge a cache could hold"),
        ("augment", recipe.augment is not None, "augmented inputs are labelled by a teacher, and online KD has none"),
        ("teacher.label_once", bool(recipe.teacher.label_once), "online KD has no teacher outputs to label"),
        ("distill.logit_topk", cfg.logit_topk is not None, "top-k compresses a teacher's stored distribution"),
        ("distill.logit_loss", cfg.logit_loss != "kl", "online KD compares the peers' distributions with KL"),
    ]
    for key, bad, why in refused:
        if bad:
            raise UserError(f"{key} does not apply to method online: {why}", key=key, fix=f"remove {key}")
    if cfg.online.aggregate == "learned" and cfg.online.ensemble_weight == 0:
        raise UserError(
            "the learned gate learns from the ensemble's gold loss only, which ensemble_weight 0 switches off",
            key="distill.online.ensemble_weight",
            fix="set distill.online.ensemble_weight > 0 (e.g. 1.0), or use aggregate: mean",
        )


class OnlineObjective(Objective):
    def __init__(self, cfg: DistillConfig, regression: bool, num_labels: int) -> None:
        super().__init__(cfg, regression)
        self.online = cfg.online
        self.num_labels = num_labels
        self.rampup = rampup_weight(0.0, cfg.online.rampup_epochs)

    def student_view(self, output: Any) -> Any:
        """The whole PeerOutput: the loss needs every peer's logits and the gate."""
        return output

    def needs_teacher_logits(self, stage: Stage) -> bool:
        return False

    def set_progress(self, stage: Stage, fraction: float) -> None:
        super().set_progress(stage, fraction)  # alpha_schedule
        self.rampup = rampup_weight(fraction * stage.epochs, self.online.rampup_epochs)

    def _logit_term(
        self, student: Any, signals: TeacherSignals, labels: Tensor | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        peer_logits: Tensor = student.peer_logits
        peers = peer_logits.shape[1]
        parts: dict[str, Tensor] = {}
        total = torch.zeros((), device=peer_logits.device)
        if labels is None and (self.alpha < 1 or student.gate is not None):
            raise ValueError("gold labels are needed when alpha < 1 or with a learned gate")
        if self.alpha < 1:
            assert labels is not None
            for n in range(peers):
                gold = self._gold(peer_logits[:, n], labels)
                total = total + (1 - self.alpha) * gold
                parts[f"gold_{n}"] = gold.detach()
        ensemble = ensemble_logits(peer_logits, student.gate)
        if self.alpha > 0:
            kd = self._kd(peer_logits, ensemble)
            total = total + self.alpha * self.rampup * peers * kd  # Σ over peers = N × the mean
            parts["kd"] = kd.detach()
            parts["rampup"] = torch.tensor(self.rampup)
        if student.gate is not None:
            assert labels is not None
            ensemble_gold = self._gold(ensemble, labels)
            total = total + self.online.ensemble_weight * ensemble_gold
            parts["ensemble_gold"] = ensemble_gold.detach()
        return total, parts

    def _kd(self, peer_logits: Tensor, ensemble: Tensor) -> Tensor:
        """The mean over peers of KD_n (see the module docstring)."""
        if self.online.aggregate == "mutual":
            return mutual_mse(peer_logits) if self.regression else mutual_kd(peer_logits, self.temperature)
        if self.regression:
            return online_mse(peer_logits, ensemble)
        return online_kd(peer_logits, ensemble, self.temperature)
