"""Annealing-KD (Jafari et al., EACL 2021): bridge a large capacity gap with a teacher whose logits grow stronger.

Phase 1, stage ``anneal`` (train.epochs), no gold labels:
    L_1(T) = (1/(B·C)) Σ_b Σ_c (z_s,bc − Φ(T) · z_t,bc)²,   Φ(T) = 1 − (T − 1)/τ_max,
    T = τ_max, τ_max − 1, ..., 1: the stage's steps are split evenly over the τ_max temperatures, so the target
    starts at z_t/τ_max (very soft) and ends at the teacher's raw logits. The student's logits are never scaled.
Phase 2, stage ``hard`` (distill.hard_epochs): L_2 = CE(y, softmax(z_s)) on gold labels only (MSE for regression).

The mean over batch and classes follows the reference code's ``nn.MSELoss()`` (the paper writes a squared norm).
T steps down by training progress rather than per epoch, so τ_max may exceed the number of phase-1 epochs.
Evaluation keeps the best dev checkpoint over both phases (the paper also keeps the best one within each sub-stage
of phase 1 before moving on; we do not roll back, which costs nothing per step and keeps one training loop).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from kdlab.config import DistillConfig
from kdlab.losses import logit_mse
from kdlab.methods.matches import FeatureMatcher
from kdlab.methods.objective import Objective, StepLoss
from kdlab.methods.stages import Stage

if TYPE_CHECKING:
    from kdlab.engine.teacher import TeacherSignals

ANNEAL_STAGE = "anneal"
HARD_STAGE = "hard"


def annealing_temperature(fraction: float, tau_max: int) -> int:
    """T when the share ``fraction`` of phase 1 is done: τ_max over its first 1/τ_max, ..., 1 over its last."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    return max(1, tau_max - math.floor(fraction * tau_max))


def annealing_factor(temperature: float, tau_max: int) -> float:
    """Φ(T) = 1 − (T − 1)/τ_max: 1/τ_max at T = τ_max, 1 at T = 1."""
    return 1.0 - (temperature - 1.0) / tau_max


def annealed_logit_mse(student_logits: Tensor, teacher_logits: Tensor, temperature: float, tau_max: int) -> Tensor:
    """L_1(T) = mean over batch and classes of (z_s − Φ(T) z_t)²; scalar, float32 (float64 for float64 inputs)."""
    return logit_mse(student_logits, annealing_factor(temperature, tau_max) * teacher_logits)


class AnnealingObjective(Objective):
    """Stage ``anneal``: annealed-logit MSE at the current T; stage ``hard``: gold labels only."""

    def __init__(self, cfg: DistillConfig, regression: bool) -> None:
        super().__init__(cfg, regression)
        self.tau_max = cfg.tau_max
        self.temperature_now = cfg.tau_max

    def set_progress(self, stage: Stage, fraction: float) -> None:
        if stage.name == ANNEAL_STAGE:
            self.temperature_now = annealing_temperature(fraction, self.tau_max)

    def needs_teacher_logits(self, stage: Stage) -> bool:
        return stage.name == ANNEAL_STAGE

    def __call__(
        self,
        stage: Stage,
        matcher: FeatureMatcher,
        student_logits: Tensor | None,
        student_feats: dict[str, Tensor],
        teacher: TeacherSignals,
        batch: dict[str, Tensor],
    ) -> StepLoss:
        assert student_logits is not None
        if stage.name == ANNEAL_STAGE:
            if teacher.logits is None:
                raise ValueError("annealing KD needs the teacher's dense logits (logit_topk is not supported)")
            target = teacher.logits.reshape(student_logits.shape)
            loss = annealed_logit_mse(student_logits, target, self.temperature_now, self.tau_max)
            parts = {"anneal_mse": loss.detach(), "tau": torch.tensor(float(self.temperature_now))}
        else:
            loss = self._gold(student_logits, batch["labels"])
            parts = {"gold": loss.detach()}
        parts["loss"] = loss.detach()
        return StepLoss(loss, parts)
