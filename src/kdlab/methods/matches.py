"""Intermediate matches: which teacher and student features are compared, by which loss, through which projection.

Projections are training-only modules: they live here, get their own parameter group, and are never written into
the saved student.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kdlab.config import MatchConfig
from kdlab.errors import UserError
from kdlab.losses import FEATURE_LOSSES
from kdlab.methods.selection import Selected, gather_student
from kdlab.taps import TapSpec


def tap_name(index: int) -> str:
    return f"match{index}"


class FeatureMatcher(nn.Module):
    """Holds the declared matches and their learned projections (student width -> teacher width)."""

    def __init__(self, matches: list[MatchConfig]) -> None:
        super().__init__()
        self.matches = list(matches)
        self.projections = nn.ModuleDict()

    def tap_specs(self, side: str, active: tuple[int, ...]) -> dict[str, TapSpec]:
        """Taps that one side ("teacher" or "student") needs for the active matches."""
        specs = {}
        for i in active:
            match = self.matches[i]
            path = match.teacher if side == "teacher" else match.student
            specs[tap_name(i)] = TapSpec(path, "attention" if match.is_attention else "hidden")
        return specs

    def build_projections(self, student_feats: dict[str, Tensor], teacher_widths: dict[str, int]) -> None:
        """Create projections from the shapes of one sample batch, and reject shapes that cannot be matched.

        ``teacher_widths``: per tap name, the teacher feature's width (hidden size, or heads for attention maps),
        read from a live teacher's sample batch or from a cache's manifest.
        """
        for i, match in enumerate(self.matches):
            key = f"distill.matches[{i}]"
            s, width = student_feats[tap_name(i)], teacher_widths[tap_name(i)]
            if match.is_attention:
                if s.dim() != 4 or s.shape[1] != width:
                    raise UserError(
                        f"attention maps differ: student {tuple(s.shape)} vs teacher with {width} heads",
                        key=key,
                        fix="match layers with the same number of heads (heads are compared one to one)",
                    )
                continue
            if s.dim() not in (2, 3):
                raise UserError(
                    f"student output {tuple(s.shape)} cannot be compared",
                    key=key,
                    fix="tap modules whose outputs are [batch, tokens, width]; see `kdlab inspect MODEL`",
                )
            if s.shape[-1] != width and not match.projection:
                raise UserError(
                    f"widths differ: student {s.shape[-1]} vs teacher {width}",
                    key=key,
                    fix=f"set {key}.projection: true to learn a projection, or match layers of equal width",
                )
            if match.projection:
                self.projections[str(i)] = nn.Linear(s.shape[-1], width)

    def loss(
        self,
        active: tuple[int, ...],
        student_feats: dict[str, Tensor],
        teacher_feats: dict[str, Selected],
        mask: Tensor,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Weighted sum of the active matches' losses, and each one's value for logging.

        The student is compared on exactly the teacher's selected tokens and dimensions (the selection is applied
        to both sides), so dimensions the teacher's knowledge left out never pull the student towards zero.
        """
        total = torch.zeros((), device=mask.device)
        parts: dict[str, Tensor] = {}
        for i in active:
            match = self.matches[i]
            s, t = student_feats[tap_name(i)], teacher_feats[tap_name(i)]
            if match.is_attention:
                value = FEATURE_LOSSES[match.loss](s, t.values, mask)
            else:
                if s.dim() == 2:  # one vector per example, as on the teacher side
                    s = s.unsqueeze(1)
                # nn.ModuleDict has no .get()
                projection = self.projections[str(i)] if str(i) in self.projections else None  # noqa: SIM401
                s_selected = gather_student(t, s, projection)
                value = FEATURE_LOSSES[match.loss](s_selected, t.values, t.token_mask)
            total = total + match.weight * value
            parts[f"{tap_name(i)}_{match.loss}"] = value.detach()
        return total, parts
