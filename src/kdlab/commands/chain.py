"""Teacher-assistant chains (Mirzadeh et al., AAAI 2020): teacher -> assistant(s) -> student in one recipe.

Each hop is an ordinary `kdlab distill` run whose teacher is the previous hop's trained model, so every hop may use
any KD recipe (``assistants[i].distill`` / ``.train`` override the recipe's sections for that hop). Layout of
``output.dir``: ``recipe.yaml`` (the whole chain), ``assistant-1/`` ... (one run folder per assistant) and
``final/`` (the student's run; the student is ``final/student``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kdlab.commands.build import clear_output, prepare_output
from kdlab.commands.run_setup import RunSummary
from kdlab.config import Recipe, recipe_to_yaml
from kdlab.errors import UserError
from kdlab.io import atomic_write_text

Distill = Callable[[Recipe, bool], RunSummary]


def check_chain(recipe: Recipe) -> None:
    """Refuse settings that cannot hold for every hop, before any hop trains."""
    if recipe.cache.dir is not None:
        raise UserError(
            "a teacher cache holds the first teacher's knowledge only; the later hops learn from the assistants",
            key="cache.dir",
            fix="remove cache.dir from a recipe with assistants (each hop runs its teacher itself)",
        )
    if recipe.multitask is not None:
        raise UserError("assistant chains distil one task", key="assistants", fix="remove multitask or assistants")
    if recipe.teacher.model is None:
        raise UserError("an assistant chain starts from teacher.model", key="teacher.model", fix="name the teacher")


def hop_recipes(recipe: Recipe) -> list[Recipe]:
    """One plain recipe per hop; hop i's teacher is hop i-1's model folder."""
    out = Path(recipe.output.dir)
    hops, teacher = [], recipe.teacher.model
    steps = [(f"assistant-{i}", a.student, a.distill, a.train) for i, a in enumerate(recipe.assistants, 1)]
    steps.append(("final", recipe.student, None, None))
    for name, student, distill_cfg, train_cfg in steps:
        hop = recipe.model_copy(
            update={
                "assistants": [],
                "teacher": recipe.teacher.model_copy(update={"model": teacher}),
                "student": student,
                "distill": distill_cfg or recipe.distill,
                "train": train_cfg or recipe.train,
                "output": recipe.output.model_copy(update={"dir": str(out / name), "overwrite": False}),
            }
        )
        hops.append(hop)
        teacher = str(out / name / "student")
    return hops


def distill_chain(recipe: Recipe, resume: bool, distill: Distill) -> RunSummary:
    """Run the hops in order; on --resume, finished hops are resumed (a no-op) and the first unfinished continues."""
    check_chain(recipe)
    hops = hop_recipes(recipe)
    out = Path(recipe.output.dir)
    if not resume:
        prepare_output(recipe.model_copy(update={"assistants": []}), resume=False)
        clear_output(out)
        atomic_write_text(out / "recipe.yaml", recipe_to_yaml(recipe))
    elif not (out / "recipe.yaml").is_file():
        raise UserError(f"nothing to resume in {str(out)!r}", key="--resume", fix="drop --resume")
    summaries = []
    for hop in hops:
        started = (Path(hop.output.dir) / "checkpoints").is_dir()
        summaries.append(distill(hop, resume and started))
    final = summaries[-1]
    assistants = {f"assistant-{i}": s.result.best_metric for i, s in enumerate(summaries[:-1], 1)}
    return RunSummary(out, final.model_dir, final.result, {**final.extra, "assistants_best_metric": assistants})
