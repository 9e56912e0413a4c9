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

    def build_projections(self, student_feats: dict[str, Tensor], teacher_feats: dict[str, Tensor]) -> None:
        """Create projections from the shapes of one sample batch, and reject shapes that cannot be matched."""
        for i, match in enumerate(self.matches):
            key = f"distill.matches[{i}]"
            s, t = student_feats[tap_name(i)], teacher_feats[tap_name(i)]
            if match.is_attention:
                if s.shape != t.shape:
                    raise UserError(
                        f"attention maps differ in shape: student {tuple(s.shape)} vs teacher {tuple(t.shape)}",
                        key=key,
                        fix="match layers with the same number of heads (heads are compared one to one)",
                    )
                continue
            if s.dim() < 2 or s.shape[:-1] != t.shape[:-1]:
                raise UserError(
                    f"outputs cannot be compared: student {tuple(s.shape)} vs teacher {tuple(t.shape)}",
                    key=key,
                    fix="tap modules whose outputs are [batch, tokens, width]; see `kdlab inspect MODEL`",
                )
            if s.shape[-1] != t.shape[-1] and not match.projection:
                raise UserError(
                    f"widths differ: student {s.shape[-1]} vs teacher {t.shape[-1]}",
                    key=key,
                    fix=f"set {key}.projection: true to learn a projection, or match layers of equal width",
                )
            if match.projection:
                self.projections[str(i)] = nn.Linear(s.shape[-1], t.shape[-1])

    def loss(
        self,
        active: tuple[int, ...],
        student_feats: dict[str, Tensor],
        teacher_feats: dict[str, Tensor],
        mask: Tensor,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Weighted sum of the active matches' losses, and each one's value for logging."""
        total = torch.zeros((), device=mask.device)
        parts: dict[str, Tensor] = {}
        for i in active:
            match = self.matches[i]
            s, t = student_feats[tap_name(i)], teacher_feats[tap_name(i)]
            token_mask: Tensor | None = mask
            if match.tokens == "cls":
                s, t, token_mask = s[:, :1], t[:, :1], None
            if str(i) in self.projections:
                s = self.projections[str(i)](s)
            value = FEATURE_LOSSES[match.loss](s, t, token_mask)
            total = total + match.weight * value
            parts[f"{tap_name(i)}_{match.loss}"] = value.detach()
        return total, parts
