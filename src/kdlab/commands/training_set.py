"""The examples a distillation run trains on: the task's splits, plus (``augment``) inputs only the teacher labels.

Augmented inputs come from unlabelled pools and perturbed training inputs (:mod:`kdlab.augment`); they never
include a dev input. With ``augment.filter: match_teacher`` the teacher scores every candidate first (live, or
read from the cache) and the kept ones are distributed like the teacher's scores on the original data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kdlab.augment import AugmentReport, candidates, select
from kdlab.config import Recipe, TaskConfig
from kdlab.data import Example, TaskSpec, load_examples
from kdlab.errors import UserError

Scorer = Callable[[list[Example]], np.ndarray]


@dataclass
class Splits:
    train: list[Example]
    dev: list[Example] | None
    augmented: list[Example] = field(default_factory=list)  # the kept augmented inputs (label None)
    report: AugmentReport | None = None

    @property
    def training(self) -> list[Example]:
        return self.train + self.augmented


def load_splits(spec: TaskSpec, cfg: TaskConfig, seed: int, need_train: bool = True) -> Splits:
    train = load_examples(spec, "train", cfg.max_train_examples, seed) if need_train else []
    dev = load_examples(spec, "dev", cfg.max_dev_examples, seed) if spec.dev or spec.dev_fraction else None
    if need_train and not train:
        raise UserError("the training split is empty", key="task.train", fix="point task.train at a non-empty file")
    return Splits(train, dev)


def check_augment(recipe: Recipe) -> None:
    """Augmented inputs have no gold label: only a teacher term can teach them."""
    if recipe.augment is None:
        return
    if recipe.distill.method == "none" or recipe.distill.alpha == 0:
        raise UserError(
            "augment adds inputs without gold labels, which only the teacher's outputs can teach",
            key="augment",
            fix="use a distillation method (e.g. vanilla) with distill.alpha above 0, or remove augment",
        )


def augmentation_candidates(recipe: Recipe, spec: TaskSpec, splits: Splits, mask_token: str | None) -> Splits:
    """Every augmented input the recipe asks for (before any filter), never one of the train or dev inputs."""
    if recipe.augment is None:
        return splits
    if mask_token is None and recipe.augment.perturb.copies and recipe.augment.perturb.mask > 0:
        raise UserError(
            "the teacher's tokenizer has no mask token to mask words with",
            key="augment.perturb.mask",
            fix="set augment.perturb.mask: 0",
        )
    exclude = {e.uid for e in splits.train} | {e.uid for e in splits.dev or []}
    found, report = candidates(
        splits.train,
        recipe.augment,
        task=spec,
        data_root=recipe.task.root,
        mask_token=mask_token or "",
        exclude_uids=exclude,
    )
    return Splits(splits.train, splits.dev, found, report)


def keep_augmented(recipe: Recipe, spec: TaskSpec, splits: Splits, score: Scorer | None) -> Splits:
    """Apply ``augment.filter`` / ``augment.max_examples`` to the candidates in ``splits.augmented``."""
    cfg = recipe.augment
    if cfg is None or not splits.augmented:
        return splits
    original = candidate = None
    if cfg.filter == "match_teacher":
        assert score is not None
        original, candidate = score(splits.train), score(splits.augmented)
    kept = select(len(splits.augmented), cfg, original, candidate, discrete=not spec.regression)
    return Splits(splits.train, splits.dev, [splits.augmented[i] for i in kept.tolist()], splits.report)


def describe(splits: Splits) -> dict[str, Any]:
    """What the run trains on, for the run summary."""
    out: dict[str, Any] = {"train_examples": len(splits.train), "augmented_examples": len(splits.augmented)}
    if splits.report is not None:
        out["augment_report"] = dataclasses.asdict(splits.report)
    return out
