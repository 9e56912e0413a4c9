"""The objective with several teachers: the logit term learns from all of them, weighted per example.

    L_logits = (1 - alpha) gold + alpha * Σ_k w_jk T² KL(p_t,k^T || p_s^T)    (mean over the batch)
    regression: (1 - alpha) MSE(s, y) + alpha * (1/B) Σ_j Σ_k w_jk (s_j - t_jk)²

teacher_weights:  equal       w_jk = 1/K
                  fixed       w_jk = distill.weights[k] / Σ distill.weights
                  confidence  w_jk = p_t,k(y_j) / Σ_k' p_t,k'(y_j)  (max probability for unlabelled inputs)
                  learned     w_jk = a_jk / max(1, |K_j|), a_jk ~ Bernoulli(pi(s_jk)) of a TeacherPolicy, after
                              policy.warmup_epochs of equal weights (Yuan et al. 2021; see teacher_policy.py)

The teachers' logits come from :class:`kdlab.engine.ensemble.EnsembleSource` as ``teacher.extras["ensemble"]``
``[B, K, C]`` (teacher.model first). Feature matches (internal/pid/sid) are unchanged: they read the primary
teacher's features, as in :class:`Objective`. Each step logs the mean weight of every teacher as ``weight_t<k>``
(and for a learned policy the selection rate ``select_t<k>``, and ``wrong_t<k>`` / ``select_wrong_t<k>`` whose
ratio is its selection rate on the examples teacher k gets wrong).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from kdlab.config import DistillConfig
from kdlab.data.encoding import IGNORE_LABEL
from kdlab.errors import UserError
from kdlab.losses import confidence_weights, multi_teacher_kd, multi_teacher_mse
from kdlab.methods.objective import Objective
from kdlab.methods.stages import Stage
from kdlab.methods.teacher_policy import TeacherPolicy, improvement_rewards, policy_states

if TYPE_CHECKING:
    from kdlab.engine.teacher import TeacherSignals


class MultiTeacherObjective(Objective):
    def __init__(self, cfg: DistillConfig, regression: bool, num_labels: int) -> None:
        super().__init__(cfg, regression)
        _check(cfg, regression)
        self.num_teachers = 1 + len(cfg.teachers)
        self.mode = cfg.teacher_weights
        self.fixed = torch.tensor(cfg.weights or [1.0] * self.num_teachers, dtype=torch.float32)
        self.fixed = self.fixed / self.fixed.sum()
        self.warmup_epochs = cfg.policy.warmup_epochs
        self.epoch = 0
        self.policy: TeacherPolicy | None = None
        if self.mode == "learned":
            # Built while the run's seed is set (before the student), so its initialisation is reproducible.
            seed = int(torch.randint(0, 2**31 - 1, ()).item())
            self.policy = TeacherPolicy(num_labels, self.num_teachers, cfg.policy.hidden_size, cfg.policy.lr, seed)
        self.wants_after_update = self.mode == "learned"
        # states, actions and the student's logits of the last training batch, until its reward comes
        self._pending: tuple[Tensor, Tensor, Tensor] | None = None

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def needs_teacher_logits(self, stage: Stage) -> bool:
        # The ensemble already holds teacher.model's logits: a live teacher may stop after its deepest match.
        return False

    def _kd_term(
        self, student: Tensor, signals: TeacherSignals, labels: Tensor | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        ensemble = signals.extras.get("ensemble")
        if ensemble is None:
            raise ValueError("MultiTeacherObjective reads teacher.extras['ensemble'] (an EnsembleSource)")
        weights, selected = self._weights(student, ensemble, labels)
        if self.regression:
            kd = multi_teacher_mse(student, ensemble, weights)
        else:
            kd = multi_teacher_kd(student, ensemble, weights, self.temperature)
        parts = {}
        for k in range(self.num_teachers):
            parts[f"weight_t{k}"] = weights[:, k].float().mean()
            if selected is not None:
                parts[f"select_t{k}"] = selected[:, k].mean()
        if selected is not None and labels is not None:
            parts.update(_selection_where_wrong(ensemble, selected, labels))
        return kd, parts

    def _weights(self, student: Tensor, ensemble: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """``[B, K]`` weights, and for a selecting policy its actions (else None)."""
        batch = ensemble.shape[0]
        if self.mode == "confidence":
            return confidence_weights(ensemble, labels), None
        if self.mode == "fixed":
            return self.fixed.to(ensemble.device).expand(batch, -1), None
        if self.mode == "equal" or self.epoch < self.warmup_epochs:
            return torch.full((batch, self.num_teachers), 1.0 / self.num_teachers, device=ensemble.device), None
        assert self.policy is not None
        self.policy.to(ensemble.device)
        states = policy_states(ensemble, student, labels)
        actions, _ = self.policy.sample(states)
        if torch.is_grad_enabled():  # a training step (a dev stage loss runs without grad and learns nothing)
            self._pending = (states, actions, student.detach())
        return actions / actions.sum(1, keepdim=True).clamp_min(1.0), actions

    def after_update(self, student_view: Any, batch: dict[str, Tensor]) -> None:
        """Reward r_j = the drop of the student's CE on x_j by the update; one REINFORCE step of the policy."""
        if self._pending is None or self.policy is None:
            return
        states, actions, before = self._pending
        self._pending = None
        self.policy.reinforce(states, actions, improvement_rewards(before, student_view, batch["labels"]))


def _selection_where_wrong(ensemble: Tensor, selected: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """Per teacher k: the batch share where k's top class is not the gold one (``wrong_t<k>``) and where it is
    wrong and selected (``select_wrong_t<k>``). Both are batch means, so the ratio of their sums over any span of
    steps is the selection rate on the examples k gets wrong."""
    labelled = (labels != IGNORE_LABEL).float()
    wrong = (ensemble.argmax(-1) != labels.long().unsqueeze(1)).float() * labelled.unsqueeze(1)
    parts = {}
    for k in range(ensemble.shape[1]):
        parts[f"wrong_t{k}"] = wrong[:, k].mean()
        parts[f"select_wrong_t{k}"] = (wrong[:, k] * selected[:, k]).mean()
    return parts


def _check(cfg: DistillConfig, regression: bool) -> None:
    """Combinations the multi-teacher term does not serve, refused before anything loads."""
    if regression and cfg.teacher_weights in ("confidence", "learned"):
        raise UserError(
            f"teacher_weights: {cfg.teacher_weights} reads each teacher's probability of the gold class, "
            "which a regression task does not have",
            key="distill.teacher_weights",
            fix="use teacher_weights: equal or fixed for regression",
        )
    if cfg.logit_topk is not None:
        raise UserError(
            "distill.teachers are labelled once with dense logits; logit_topk does not apply",
            key="distill.logit_topk",
            fix="remove distill.logit_topk",
        )
    if cfg.logit_loss != "kl" and not regression:
        raise UserError(
            "distill.teachers teach through the weighted KL term (logit_loss: kl)",
            key="distill.logit_loss",
            fix="set distill.logit_loss: kl",
        )
