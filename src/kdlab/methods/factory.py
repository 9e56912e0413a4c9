"""The objective a recipe's distill section asks for: one place that maps methods to objective classes."""

from __future__ import annotations

from kdlab.config import DistillConfig
from kdlab.methods.objective import Objective


def build_objective(cfg: DistillConfig, regression: bool, num_labels: int) -> Objective:
    """Sentence- and image-level objectives; word tasks build their own (kdlab.methods.word_objective)."""
    # Imported here so that each method's module loads only when a recipe uses it.
    if cfg.method == "annealing":
        from kdlab.methods.annealing import AnnealingObjective

        return AnnealingObjective(cfg, regression)
    if cfg.method == "online":
        from kdlab.methods.online import OnlineObjective

        return OnlineObjective(cfg, regression, num_labels)
    if cfg.teachers:
        from kdlab.methods.multi_teacher import MultiTeacherObjective

        return MultiTeacherObjective(cfg, regression, num_labels)
    return Objective(cfg, regression)
