"""The teacher as a distillation run sees it: its tokenizer, and its knowledge from the live model or a cache.

Opening it checks everything about the teacher before any training (model, or the cache's fingerprint and
signals). Afterwards it answers what the run asks of the teacher: scores to filter augmented inputs, outputs
labelled once before training, or a per-step source (live teacher or cache).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from torch import Tensor, nn

from kdlab.commands.build import load_teacher, teacher_widths
from kdlab.config import Recipe
from kdlab.data import Collator, Example, TaskSpec, encode
from kdlab.engine.teacher import FixedOutputs, LiveTeacher, TeacherSource, label_outputs
from kdlab.errors import UserError
from kdlab.knowledge.source import CachedTeacher, open_cache
from kdlab.methods import FeatureMatcher, Objective
from kdlab.methods.online import check_online
from kdlab.models import load_tokenizer, resolve_model


@dataclass
class TeacherSide:
    recipe: Recipe
    spec: TaskSpec
    tokenizer: Any  # the tokenizer the teacher reads (None when the run needs no teacher at all)
    path: str | None = None
    model: nn.Module | None = None
    cache: CachedTeacher | None = None
    cache_widths: dict[str, int] = field(default_factory=dict)
    _outputs: dict[str, Tensor] = field(default_factory=dict)  # by example uid: labelled once

    @property
    def mask_token(self) -> str | None:
        return getattr(self.tokenizer, "mask_token", None) if self.tokenizer is not None else None

    def encode(self, examples: list[Example]) -> list[dict[str, Any]]:
        return encode(examples, self.tokenizer, self.recipe.task.max_length)

    def collate(self) -> Collator:
        return Collator(self.tokenizer.pad_token_id or 0, self.spec.regression)

    def outputs(self, examples: list[Example]) -> Tensor:
        """The live teacher's logits per example ([N, C]), each distinct input computed once per run."""
        assert self.model is not None
        todo = list({e.uid: e for e in examples if e.uid not in self._outputs}.values())
        if todo:
            batch_size = self.recipe.train.eval_batch_size
            logits = label_outputs(self.model, self.encode(todo), self.collate(), batch_size, PartialState().device)
            self._outputs.update((e.uid, row) for e, row in zip(todo, logits, strict=True))
        if not examples:
            return torch.zeros(0, self.spec.num_labels)
        return torch.stack([self._outputs[e.uid] for e in examples])

    def scores(self, examples: list[Example]) -> np.ndarray:
        """One score per example: the regression value, or the predicted class."""
        if self.cache is not None:
            return self.cache.scores(self.encode(examples), self.spec.regression)
        logits = self.outputs(examples)
        return logits[:, 0].numpy() if self.spec.regression else logits.argmax(-1).numpy()

    def source(
        self, matcher: FeatureMatcher, objective: Objective, data: Any, training: list[Example]
    ) -> tuple[TeacherSource | None, dict[str, int]]:
        """The per-step teacher knowledge for the encoded ``data`` and each match's teacher width."""
        if self.recipe.distill.method in ("none", "online"):  # online KD: the peers teach each other
            return None, {}
        if self.cache is not None:
            self.cache.bind("train", data.train)
            self.cache.bind("dev", data.dev or [])
            return self.cache, self.cache_widths
        if labels_once(self.recipe):
            return FixedOutputs({"train": self.outputs(training)}, objective), {}
        assert self.model is not None
        widths = teacher_widths(matcher, self.model, data.collate(data.train[:2]))
        return LiveTeacher(self.model, matcher, objective, self.tokenizer.sep_token_id), widths


def labels_once(recipe: Recipe) -> bool:
    """Whether the teacher labels the training data once before training (outputs-only recipes)."""
    if recipe.teacher.label_once is not None:
        return recipe.teacher.label_once
    return not recipe.distill.matches and (recipe.student.own_vocab or recipe.augment is not None)


def check_teacher_use(recipe: Recipe) -> None:
    """Combinations that cannot work, refused before anything loads."""
    check_online(recipe)
    matches = recipe.distill.matches
    if recipe.student.own_vocab and matches:
        raise UserError(
            "a student with its own vocabulary reads other tokens than the teacher, so only outputs can be "
            "matched, not intermediate features",
            key="distill.matches",
            fix="remove distill.matches (method vanilla), or use student.vocab: teacher",
        )
    if recipe.teacher.label_once and matches:
        raise UserError(
            "teacher.label_once stores the teacher's outputs only, but the recipe matches features",
            key="teacher.label_once",
            fix="remove teacher.label_once (features need the teacher at every step, or a cache)",
        )


def open_teacher(recipe: Recipe, spec: TaskSpec, matcher: FeatureMatcher, objective: Objective) -> TeacherSide:
    """The teacher's tokenizer and its live model or cache, checked; nothing of it for gold-only own-vocab runs."""
    cfg = recipe.distill
    if cfg.method == "none" and recipe.student.own_vocab:
        return TeacherSide(recipe, spec, tokenizer=None)
    if recipe.cache.dir is not None and cfg.method != "none":
        path = resolve_model(recipe.teacher.model, key="teacher.model") if recipe.teacher.model else None
        # Without teacher.model (a pretrained student), the cache's tokenizer fingerprint is the student's.
        tokenizer_source, key = (path, "teacher.model") if path else (recipe.student.model or "", "student.model")
        tokenizer = load_tokenizer(tokenizer_source, key=key)
        cache, widths = open_cache(recipe, matcher, objective, tokenizer, {}, path)
        return TeacherSide(recipe, spec, tokenizer, path=path, cache=cache, cache_widths=widths)
    model, tokenizer = load_teacher(recipe, spec, cfg.uses_attention)
    return TeacherSide(recipe, spec, tokenizer, path=recipe.teacher.model, model=model)
