"""Several teachers' outputs, labelled once before training and served per batch (``distill.teachers``).

Every teacher (teacher.model first, then distill.teachers in order) labels the training and dev examples once,
each reading its own tokenization of the text. :class:`EnsembleSource` then hands the objective the stacked
logits ``[B, K, C]`` as ``extras["ensemble"]``, on top of what the primary teacher's source gives (its features
for internal/pid/sid matches); without such a source, ``logits`` is teacher.model's row of the ensemble.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from kdlab.commands.build import load_teacher
from kdlab.commands.teacher_side import TeacherSide
from kdlab.config import Recipe
from kdlab.data import Example, TaskSpec
from kdlab.engine.teacher import Autocast, TeacherSignals, TeacherSource
from kdlab.errors import UserError
from kdlab.methods.stages import Stage
from kdlab.models.teachers import classifier_settings


class EnsembleSource:
    """``logits[split]`` is ``[N_items, K, C]`` in the item order of that split (teacher.model first)."""

    def __init__(self, base: TeacherSource | None, logits: dict[str, Tensor]) -> None:
        self.base = base
        self.logits = logits
        self.device = torch.device("cpu")

    def prepare(self, device: torch.device, autocast: Autocast) -> None:
        self.device = device
        if self.base is not None:
            self.base.prepare(device, autocast)

    def signals(self, stage: Stage, batch: dict[str, Tensor], indices: Sequence[int], split: str) -> TeacherSignals:
        signals = self.base.signals(stage, batch, indices, split) if self.base is not None else TeacherSignals()
        if split in self.logits:
            rows = self.logits[split][torch.as_tensor(list(indices), dtype=torch.long)].to(self.device)
            signals.extras["ensemble"] = rows
            if self.base is None:
                signals.logits = rows[:, 0]
        return signals


def check_teachers(recipe: Recipe, spec: TaskSpec) -> None:
    """Before any work: every further teacher is a classifier for the task's labels; no cache with them."""
    cfg = recipe.distill
    if not cfg.teachers:
        return
    if recipe.cache.dir is not None:
        raise UserError(
            "distill.teachers are labelled once from the live models; a teacher cache (cache.dir) serves "
            "teacher.model alone",
            key="cache.dir",
            fix="remove cache.dir (distill labels every teacher once before training), or remove distill.teachers",
        )
    for i, name in enumerate(cfg.teachers):
        key = f"distill.teachers[{i}]"
        try:
            path, _ = classifier_settings(name, spec.num_labels, spec.regression, key=key)
        except UserError as err:
            raise UserError(
                f"{key} ({name}) cannot teach with teacher.model: {err.problem}",
                key=key,
                fix="every teacher must be fine-tuned on the task, with the same number of labels as teacher.model",
            ) from None
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(path)
        if not any(a.endswith("ForSequenceClassification") for a in config.architectures or []):
            raise UserError(
                f"{key} ({name}) has no classifier head: its outputs would be random",
                key=key,
                fix="give a teacher fine-tuned on the task (kdlab finetune)",
            )


def ensemble_source(
    recipe: Recipe,
    spec: TaskSpec,
    side: TeacherSide,
    base: TeacherSource | None,
    training: list[Example],
    dev: list[Example] | None,
) -> EnsembleSource:
    """Label ``training`` / ``dev`` (the examples of data.train / data.dev, same order) with every teacher.

    The primary source is kept only when matches read teacher.model's features; otherwise the ensemble alone
    serves the logits and the primary teacher does not run during training.
    """
    splits = {"train": training, **({"dev": dev} if dev else {})}
    per_split: dict[str, list[Tensor]] = {name: [side.outputs(examples)] for name, examples in splits.items()}
    for i, name in enumerate(recipe.distill.teachers):
        other = _teacher_side(recipe, spec, name)
        for split, examples in splits.items():
            logits = other.outputs(examples)
            if logits.shape[-1] != per_split[split][0].shape[-1]:
                raise UserError(
                    f"distill.teachers[{i}] ({name}) has {logits.shape[-1]} outputs, teacher.model has "
                    f"{per_split[split][0].shape[-1]}",
                    key=f"distill.teachers[{i}]",
                    fix="all teachers must be fine-tuned on the same task, with the same labels",
                )
            per_split[split].append(logits)
        del other  # the extra teachers are not needed once they have labelled the data
    keep = base if recipe.distill.matches else None
    return EnsembleSource(keep, {split: torch.stack(rows, dim=1) for split, rows in per_split.items()})


def _teacher_side(recipe: Recipe, spec: TaskSpec, name: str) -> TeacherSide:
    """A TeacherSide for a further teacher: the recipe with teacher.model replaced, its own model and tokenizer."""
    copy: Any = recipe.model_copy(update={"teacher": recipe.teacher.model_copy(update={"model": name})})
    model, tokenizer = load_teacher(copy, spec, attention=False)
    return TeacherSide(copy, spec, tokenizer, path=name, model=model)
