"""Replayed examples of earlier tasks in a lifelong run: gold labels only, no teacher term (L2KD, Chuang et al. 2020).

A batch mixes the new task's items (taught by its teacher) with items stored from earlier tasks, marked by the
batch key ``kd_mask`` (1 = new-task item, 0 = replayed item). L2KD keeps plain cross-entropy on the samples of
earlier tasks, so the loss is the per-item mean

    L = (n_new * L_inner(new items) + n_old * CE(y, p_s)(old items)) / (n_new + n_old)

where ``L_inner`` is the recipe's own objective ((1 - alpha) CE + alpha T^2 KL for vanilla KD). Masking beats a
made-up teacher row for old items: a one-hot "teacher" would still scale their CE by alpha T^2 at temperature T.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from kdlab.engine.teacher import TeacherSignals
from kdlab.losses import hard_ce
from kdlab.methods.matches import FeatureMatcher
from kdlab.methods.objective import Objective, StepLoss, TrainingHooks
from kdlab.methods.stages import Stage

KD_MASK = "kd_mask"


def _rows(signals: TeacherSignals, keep: Tensor) -> TeacherSignals:
    logits = signals.logits[keep] if signals.logits is not None else None
    topk = (signals.topk[0][keep], signals.topk[1][keep]) if signals.topk is not None else None
    return TeacherSignals(logits=logits, topk=topk)


class ReplayObjective(TrainingHooks):
    """``inner`` on the items with ``kd_mask`` 1, gold cross-entropy on the others (outputs-only recipes)."""

    def __init__(self, inner: Objective) -> None:
        self.inner = inner

    # The Trainer, the module and the teacher source ask these of any objective: the inner one answers.
    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["inner"], name)

    def start_epoch(self, epoch: int) -> None:
        self.inner.start_epoch(epoch)

    def set_progress(self, stage: Stage, fraction: float) -> None:
        self.inner.set_progress(stage, fraction)

    def __call__(
        self,
        stage: Stage,
        matcher: FeatureMatcher,
        student_logits: Tensor | None,
        student_feats: dict[str, Tensor],
        teacher: TeacherSignals,
        batch: dict[str, Tensor],
    ) -> StepLoss:
        mask = batch.get(KD_MASK)
        if mask is None or bool(mask.all()):
            return self.inner(stage, matcher, student_logits, student_feats, teacher, batch)
        assert student_logits is not None and not stage.matches  # outputs-only: checked when the run is built
        new, old = mask.bool(), ~mask.bool()
        n = float(mask.numel())
        replay = hard_ce(student_logits[old], batch["labels"][old])
        total = replay * (float(old.sum()) / n)
        parts: dict[str, Tensor] = {"replay_gold": replay.detach()}
        if bool(new.any()):
            part = {k: v[new] for k, v in batch.items()}
            step = self.inner(stage, matcher, student_logits[new], {}, _rows(teacher, new), part)
            total = total + step.total * (float(new.sum()) / n)
            parts.update({k: v for k, v in step.parts.items() if k != "loss"})
        parts["loss"] = total.detach()
        return StepLoss(total, parts)
