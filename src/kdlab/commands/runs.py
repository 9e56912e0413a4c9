"""finetune and distill: build and check everything from the recipe, then hand one Job to the one Trainer."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from torch import nn

from kdlab.commands.build import (
    build_student,
    check_matches,
    clear_output,
    load_data,
    load_student,
    load_teacher,
    prepare_output,
    task_spec,
    teacher_widths,
)
from kdlab.config import Recipe, TrainConfig, recipe_to_yaml
from kdlab.engine.teacher import LiveTeacher, TeacherSource
from kdlab.engine.trainer import Job, Trainer, TrainResult
from kdlab.errors import UserError
from kdlab.io import atomic_write_text
from kdlab.knowledge.source import open_cache
from kdlab.methods import FeatureMatcher, Objective, Stage, build_stages
from kdlab.models import load_tokenizer, resolve_model, save_student
from kdlab.models.lazy import student_from_teacher_files

# Keys that may change between a run and its --resume (they do not change what is trained).
_RESUMABLE_CHANGES = {
    ("train", "max_steps"),
    ("train", "progress_bar"),
    ("output", "overwrite"),
    ("cache", "verify"),
}


@dataclass
class RunSummary:
    output_dir: Path
    model_dir: Path
    result: TrainResult
    extra: dict[str, Any] = field(default_factory=dict)


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    # Layer-wise stages leave the upper student layers and unused projections without gradients.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    # Accelerate only forms a CPU process group when told to use the CPU; without this, processes started by
    # `accelerate launch --multi_gpu` or `torchrun` on a machine without GPUs would each train alone.
    cpu_ddp = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    # Accelerate keeps one global state per process; several runs in one process (the Python API, benchmarks)
    # may differ in mixed precision, so each run starts from a fresh one. The process group itself is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    return Accelerator(mixed_precision=cfg.mixed_precision, kwargs_handlers=[ddp], cpu=cpu_ddp)


def finetune(recipe: Recipe, resume: bool = False) -> RunSummary:
    """Train ``teacher.model`` on the task's gold labels (users rarely have a fine-tuned teacher ready)."""
    if "distill" in recipe.model_fields_set or "student" in recipe.model_fields_set:
        raise UserError(
            "finetune trains one model on gold labels; it has no student or distill section",
            key="distill" if "distill" in recipe.model_fields_set else "student",
            fix="remove that section, or run `kdlab distill` with this recipe",
        )
    set_seed(recipe.train.seed)
    spec = task_spec(recipe.task)
    model, tokenizer = load_teacher(recipe, spec, attention=False)
    data = load_data(spec, recipe.task, tokenizer, recipe.train.seed)
    out = _claim_output(recipe, resume)
    stages = [Stage("finetune", (), True, recipe.train.epochs)]
    objective = Objective(recipe.distill.model_copy(update={"method": "none"}), spec.regression)
    job = _job(recipe, spec, data, model, tokenizer, None, FeatureMatcher([]), objective, stages, out, "model")
    return RunSummary(out, out / "model", Trainer(job, make_accelerator(recipe.train)).fit(resume))


def distill(recipe: Recipe, resume: bool = False) -> RunSummary:
    """Distil the teacher (live, or its knowledge stored in ``cache.dir``) into the recipe's student."""
    cfg = recipe.distill
    set_seed(recipe.train.seed)
    spec = task_spec(recipe.task)
    matcher = FeatureMatcher(cfg.matches)
    objective = Objective(cfg, spec.regression)
    if recipe.cache.dir is not None and cfg.method != "none":
        student, tokenizer, data, teacher, widths = _from_cache(recipe, spec, matcher, objective)
    else:
        student, tokenizer, data, teacher, widths = _from_live_teacher(recipe, spec, matcher, objective)
    if cfg.stage_until == "plateau" and cfg.method in ("pid", "sid") and not data.dev:
        raise UserError(
            "stage_until: plateau needs a dev split to watch",
            key="distill.stage_until",
            fix="give task.dev, or use stage_until: epochs",
        )
    set_seed(recipe.train.seed)  # the projections' initialisation, whatever the teacher source drew before
    check_matches(matcher, widths, student, data.collate(data.train[:2]))
    stages = build_stages(cfg, recipe.train.epochs, [name for name, _ in student.named_modules()])
    out = _claim_output(recipe, resume)
    source = teacher if cfg.method != "none" else None
    job = _job(recipe, spec, data, student, tokenizer, source, matcher, objective, stages, out, "student")
    return RunSummary(out, out / "student", Trainer(job, make_accelerator(recipe.train)).fit(resume))


def _from_live_teacher(recipe: Recipe, spec: Any, matcher: FeatureMatcher, objective: Objective) -> tuple:
    cfg = recipe.distill
    teacher, tokenizer = load_teacher(recipe, spec, cfg.uses_attention)
    # Re-seeded so that a randomly initialised student does not depend on what loading the teacher drew.
    set_seed(recipe.train.seed)
    student, tokenizer = build_student(recipe, teacher, tokenizer, spec, cfg.student_uses_attention)
    data = load_data(spec, recipe.task, tokenizer, recipe.train.seed)
    widths = teacher_widths(matcher, teacher, data.collate(data.train[:2]))
    live = LiveTeacher(teacher, matcher, objective, tokenizer.sep_token_id)
    return student, tokenizer, data, live, widths


def _from_cache(recipe: Recipe, spec: Any, matcher: FeatureMatcher, objective: Objective) -> tuple:
    """Student, data and teacher knowledge without constructing or loading the teacher model."""
    attention = recipe.distill.student_uses_attention
    teacher_path = resolve_model(recipe.teacher.model, key="teacher.model") if recipe.teacher.model else None
    set_seed(recipe.train.seed)  # as in _from_live_teacher, so both give the same student
    if recipe.student.kind == "pretrained":
        student, tokenizer = load_student(recipe, spec, attention)
    else:
        assert teacher_path is not None  # the recipe schema requires teacher.model for these students
        tokenizer = load_tokenizer(teacher_path, key="teacher.model")
        student = student_from_teacher_files(
            teacher_path, recipe.student, spec.num_labels, spec.regression, tokenizer, attention
        )
    data = load_data(spec, recipe.task, tokenizer, recipe.train.seed)
    splits = {"train": data.train, "dev": data.dev or []}
    source, widths = open_cache(recipe, matcher, objective, tokenizer, splits, teacher_path)
    return student, tokenizer, data, source, widths


def _job(
    recipe: Recipe,
    spec: Any,
    data: Any,
    model: nn.Module,
    tokenizer: Any,
    teacher: TeacherSource | None,
    matcher: FeatureMatcher,
    objective: Objective,
    stages: list[Stage],
    out: Path,
    model_dirname: str,
) -> Job:
    def save(trained: nn.Module, path: Path) -> None:
        save_student(trained, tokenizer, path)

    return Job(
        student=model,
        matcher=matcher,
        objective=objective,
        stages=stages,
        train_items=data.train,
        dev_items=data.dev,
        collate=data.collate,
        metrics=tuple(spec.metrics),
        main_metric=spec.main_metric,
        regression=spec.regression,
        num_labels=spec.num_labels,
        output_dir=out,
        save_student=save,
        settings=recipe.train,
        teacher=teacher,
        plateau_patience=recipe.distill.plateau_patience,
        plateau_min_delta=recipe.distill.plateau_min_delta,
        model_dirname=model_dirname,
    )


def _claim_output(recipe: Recipe, resume: bool) -> Path:
    """Last step before training: the output folder is cleared (or checked for resuming) and the recipe saved."""
    out = prepare_output(recipe, resume, check_busy=_is_main_process())
    recipe_file = out / "recipe.yaml"
    if resume:
        _check_same_recipe(recipe, recipe_file)
    elif _is_main_process():
        clear_output(out)
    if _is_main_process():
        atomic_write_text(recipe_file, recipe_to_yaml(recipe))
    return out


def _check_same_recipe(recipe: Recipe, recipe_file: Path) -> None:
    if not recipe_file.is_file():
        return
    saved = yaml.safe_load(recipe_file.read_text(encoding="utf-8"))
    now = recipe.model_dump(mode="json")
    for section, values in now.items():
        for key, value in (values or {}).items():
            if (section, key) in _RESUMABLE_CHANGES:
                continue
            if saved.get(section, {}).get(key) != value:
                raise UserError(
                    f"the run in {recipe_file.parent} was started with a different {section}.{key} "
                    f"({saved.get(section, {}).get(key)!r}, now {value!r})",
                    key=f"{section}.{key}",
                    fix="resume with the recipe the run was started with (its copy is in recipe.yaml)",
                )


def _is_main_process() -> bool:
    # Accelerate sets RANK/LOCAL_RANK under `accelerate launch`; the Accelerator does not exist yet here.
    return os.environ.get("RANK", "0") == "0"
