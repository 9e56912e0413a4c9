"""The trainable side of a distillation step as one ``nn.Module``.

The student and the projections are trained together, and under DDP every trained parameter must take part in the
module's ``forward``: so the forward runs the student through its taps *and* computes the loss (projections are
applied inside the loss). The teacher is not part of it: it is frozen and runs before, under inference mode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from kdlab.data.encoding import student_inputs
from kdlab.engine.teacher import TeacherSignals
from kdlab.methods.matches import FeatureMatcher
from kdlab.methods.objective import Objective
from kdlab.methods.stages import Stage
from kdlab.taps import FeatureTaps


class DistillModule(nn.Module):
    def __init__(
        self,
        student: nn.Module,
        matcher: FeatureMatcher,
        objective: Objective,
        model_inputs: Callable[[dict[str, Tensor]], dict[str, Tensor]] = student_inputs,
    ) -> None:
        super().__init__()
        self.student = student
        self.matcher = matcher
        self.objective = objective
        self.model_inputs = model_inputs

    def student_taps(self, stage: Stage) -> FeatureTaps:
        """Taps for the stage's matches; the forward stops after the deepest one when no logits are needed."""
        specs = self.matcher.tap_specs("student", stage.matches)
        return FeatureTaps(self.student, specs, stop_early=not self.objective.needs_student_logits(stage))

    def forward(
        self,
        batch: dict[str, Tensor],
        stage: Stage,
        taps: FeatureTaps,
        teacher: TeacherSignals,
    ) -> tuple[Tensor, dict[str, Any]]:
        feats, output = taps(**self.model_inputs(batch))
        step = self.objective(stage, self.matcher, self.objective.student_view(output), feats, teacher, batch)
        return step.total, step.parts
