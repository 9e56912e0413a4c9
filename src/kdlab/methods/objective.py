"""The per-step objective of a stage: the logit term (teacher vs gold, mixed by alpha) plus the active matches.

Classification:  L_logits = (1 - alpha) * CE(y, p_s) + alpha * [ T^2 KL(p_t^T || p_s^T)   (logit_loss: kl)
                                                                 | top-k KL, see soft_kd_topk (logit_topk: k)
                                                                 | mean (z_s - z_t)^2        (logit_loss: mse) ]
Regression:      L_logits = (1 - alpha) * MSE(s, y) + alpha * MSE(s, t)
Stage total:     L = [L_logits if the stage uses logits] + sum_{active matches m} w_m * loss_m(student_m, teacher_m)

The gold terms average over the labelled examples of the batch only: augmented inputs carry no gold label
(IGNORE_LABEL, or NaN for regression) and are taught by the teacher term alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from kdlab.config import DistillConfig
from kdlab.data.encoding import IGNORE_LABEL
from kdlab.losses import hard_ce, logit_mse, regression_mse, soft_kd, soft_kd_topk
from kdlab.methods.matches import FeatureMatcher
from kdlab.methods.stages import Stage

if TYPE_CHECKING:
    from kdlab.engine.teacher import TeacherSignals


@dataclass
class StepLoss:
    total: Tensor
    parts: dict[str, Tensor] = field(default_factory=dict)


class TrainingHooks:
    """What the Trainer calls on every objective besides the loss; the defaults do nothing."""

    # Objectives that learn from the updated student (a policy's reward) set this and implement after_update.
    wants_after_update = False

    def start_epoch(self, epoch: int) -> None:
        """Called before each epoch of a stage (``epoch`` counts from 0 within the stage)."""

    def set_progress(self, stage: Stage, fraction: float) -> None:
        """Called before each batch with the share of ``stage`` done, in [0, 1)."""

    def after_update(self, student_view: Any, batch: dict[str, Tensor]) -> None:
        """The student's view of ``batch`` right after the optimizer step on it (computed without grad)."""


class Objective(TrainingHooks):
    """Pure arithmetic over already computed outputs; holds no parameters (projections live in the matcher)."""

    def __init__(self, cfg: DistillConfig, regression: bool) -> None:
        self.alpha = 0.0 if cfg.method == "none" else cfg.alpha
        self.base_alpha = self.alpha
        self.alpha_schedule = cfg.alpha_schedule
        self.temperature = cfg.temperature
        self.logit_loss = cfg.logit_loss
        self.regression = regression
        # Top-k compression only means something for a distribution over classes.
        self.topk = cfg.logit_topk if not regression else None

    def student_view(self, output: Any) -> Tensor | None:
        """What the loss reads from the student's model output (``None`` when the forward stopped early)."""
        return output.logits if output is not None else None

    def set_progress(self, stage: Stage, fraction: float) -> None:
        """alpha_schedule: linear (BAM teacher annealing): alpha falls linearly to 0 over each logit stage."""
        if self.alpha_schedule == "linear":
            self.alpha = self.base_alpha * max(0.0, 1.0 - fraction)

    def needs_teacher_logits(self, stage: Stage) -> bool:
        return stage.use_logits and self.alpha > 0

    def needs_student_logits(self, stage: Stage) -> bool:
        return stage.use_logits

    def __call__(
        self,
        stage: Stage,
        matcher: FeatureMatcher,
        student_logits: Tensor | None,
        student_feats: dict[str, Tensor],
        teacher: TeacherSignals,
        batch: dict[str, Tensor],
    ) -> StepLoss:
        total = torch.zeros((), device=next(iter(batch.values())).device)
        parts: dict[str, Tensor] = {}
        if stage.use_logits:
            assert student_logits is not None
            total, parts = self._logit_term(student_logits, teacher, batch.get("labels"))
        if stage.matches:
            feature_total, feature_parts = matcher.loss(
                stage.matches, student_feats, teacher.feats, batch["attention_mask"]
            )
            total = total + feature_total
            parts.update(feature_parts)
        parts["loss"] = total.detach()
        return StepLoss(total, parts)

    def _gold(self, student: Tensor, labels: Tensor) -> Tensor:
        labelled = ~torch.isnan(labels) if self.regression else labels != IGNORE_LABEL
        if not bool(labelled.any()):
            # A batch of teacher-labelled inputs only: a zero that keeps the graph (DDP needs every parameter used).
            return student.sum() * 0.0
        if not bool(labelled.all()):
            student, labels = student[labelled], labels[labelled]
        return regression_mse(student, labels) if self.regression else hard_ce(student, labels)

    def _logit_term(
        self, student: Tensor, signals: TeacherSignals, labels: Tensor | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """(1 - alpha) * gold + alpha * teacher term."""
        parts: dict[str, Tensor] = {}
        total = torch.zeros((), device=student.device)
        if self.alpha < 1:
            if labels is None:
                raise ValueError("gold labels are needed when alpha < 1")
            gold = self._gold(student, labels)
            total = total + (1 - self.alpha) * gold
            parts["gold"] = gold.detach()
        if self.alpha > 0:
            kd, kd_parts = self._kd_term(student, signals, labels)
            total = total + self.alpha * kd
            parts["kd"] = kd.detach()
            parts.update(kd_parts)
        return total, parts

    def _kd_term(
        self, student: Tensor, signals: TeacherSignals, labels: Tensor | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The teacher term before alpha (top-k KL, KL at T, logit MSE, or MSE for regression), and parts to log."""
        if signals.topk is not None:
            return soft_kd_topk(student, signals.topk[0], signals.topk[1], self.temperature), {}
        teacher = signals.logits
        assert teacher is not None
        if self.regression:
            return regression_mse(student, teacher.reshape(-1).float()), {}
        if self.logit_loss == "kl":
            return soft_kd(student, teacher, self.temperature), {}
        return logit_mse(student, teacher), {}
