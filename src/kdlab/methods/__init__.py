"""Distillation recipes: intermediate matches with their projections, stage schedules, and the objective."""

from kdlab.methods.matches import FeatureMatcher
from kdlab.methods.objective import Objective, StepLoss
from kdlab.methods.stages import Stage, build_stages

__all__ = ["FeatureMatcher", "Objective", "Stage", "StepLoss", "build_stages"]
