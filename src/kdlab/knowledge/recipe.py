"""What a recipe asks of a cache: its signals, and the fingerprint that makes cached knowledge valid for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdlab.config import Recipe
from kdlab.knowledge.fingerprint import model_digest, tokenizer_digest
from kdlab.knowledge.signals import Signal, needed_signals
from kdlab.methods.matches import FeatureMatcher
from kdlab.methods.objective import Objective


def recipe_signals(recipe: Recipe, matcher: FeatureMatcher, objective: Objective) -> list[Signal]:
    """What `kdlab cache` stores for this recipe, and what `kdlab distill` looks up in a cache."""
    # Every method but "none" ends with a stage on the logits; its teacher term is off only when alpha is 0.
    needs_logits = recipe.distill.method != "none" and objective.alpha > 0
    return needed_signals(matcher, objective, needs_logits, recipe.cache.dtype, recipe.task.max_length)


def fingerprint(recipe: Recipe, tokenizer: Any, teacher_path: str | None) -> dict[str, Any]:
    """What makes cached knowledge valid: the teacher's weights, the tokenizer, max length and storage precision."""
    return {
        "teacher": model_digest(Path(teacher_path)) if teacher_path else None,
        "tokenizer": tokenizer_digest(tokenizer),
        "max_length": recipe.task.max_length,
        "dtype": recipe.cache.dtype,
    }
