"""The Python API: the same operations as the CLI, taking a recipe path, dict or Recipe plus overrides.

import kdlab
run = kdlab.distill("configs/sst2/sid.yaml", ["train.epochs=1"])
print(run.result.best_metric, run.model_dir)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdlab.commands import cache as _cache
from kdlab.commands import demo as _demo
from kdlab.commands import evaluate as _evaluate
from kdlab.commands import inspect as _inspect
from kdlab.commands import runs as _runs
from kdlab.commands.run_setup import RunSummary
from kdlab.config import Recipe, load_recipe

RecipeSource = str | Path | dict[str, Any] | Recipe

__all__ = ["RunSummary", "cache", "demo", "distill", "evaluate", "finetune", "inspect", "recipe"]


def recipe(source: RecipeSource, overrides: Sequence[str] = ()) -> Recipe:
    """Load and validate a recipe (a YAML path, a dict, or a Recipe) with ``key=value`` overrides."""
    if isinstance(source, Recipe):
        return load_recipe(source.model_dump(mode="json", exclude_unset=True), tuple(overrides))
    return load_recipe(source, tuple(overrides))


def finetune(source: RecipeSource, overrides: Sequence[str] = (), resume: bool = False) -> RunSummary:
    return _runs.finetune(recipe(source, overrides), resume=resume)


def distill(source: RecipeSource, overrides: Sequence[str] = (), resume: bool = False) -> RunSummary:
    return _runs.distill(recipe(source, overrides), resume=resume)


def cache(
    source: RecipeSource, overrides: Sequence[str] = (), overwrite: bool = False, progress: bool = True
) -> _cache.CacheSummary:
    """Run the teacher once and store what the recipe's losses need in ``cache.dir``."""
    return _cache.cache(recipe(source, overrides), overwrite=overwrite, progress=progress)


def evaluate(source: RecipeSource, overrides: Sequence[str] = (), model: str | None = None) -> _evaluate.Evaluation:
    return _evaluate.evaluate(recipe(source, overrides), model)


def inspect(model: str, text: str | None = None) -> list[Any]:
    rows, _ = _inspect.inspect_model(model, text or _inspect.SAMPLE_TEXT)
    return rows


def demo(output: str = "runs/demo", overrides: Sequence[str] = ()) -> _demo.DemoResult:
    return _demo.run_demo(output, tuple(overrides))
