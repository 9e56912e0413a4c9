"""finetune and distill: build and check everything from the recipe, then hand one Job to the one Trainer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from accelerate.utils import set_seed
from torch import nn

from kdlab.commands.build import (
    Data,
    build_student,
    check_matches,
    encode_data,
    load_data,
    load_student,
    load_teacher,
    own_vocab_student,
    own_vocab_tokenizer,
    task_spec,
)
from kdlab.commands.chain import distill_chain
from kdlab.commands.images import distill_images, finetune_images, refuse_image_settings
from kdlab.commands.multitask import run_multitask
from kdlab.commands.run_setup import RunSummary, claim_output, make_accelerator
from kdlab.commands.teacher_side import TeacherSide, check_teacher_use, open_teacher
from kdlab.commands.training_set import (
    Splits,
    augmentation_candidates,
    check_augment,
    describe,
    keep_augmented,
    load_splits,
)
from kdlab.commands.words import distill_words, finetune_words
from kdlab.config import WORD_METHODS, Recipe
from kdlab.data.images import is_image_task
from kdlab.data.treebank import is_word_task
from kdlab.engine.ensemble import check_teachers, ensemble_source
from kdlab.engine.teacher import TeacherSource
from kdlab.engine.trainer import Job, Trainer
from kdlab.errors import UserError
from kdlab.methods import FeatureMatcher, Objective, Stage, build_stages
from kdlab.methods.factory import build_objective
from kdlab.models import save_student
from kdlab.models.lazy import student_from_teacher_files
from kdlab.models.peers import PeerGroup, peer_group, save_peers


def finetune(recipe: Recipe, resume: bool = False) -> RunSummary:
    """Train ``teacher.model`` on the task's gold labels (users rarely have a fine-tuned teacher ready)."""
    if recipe.multitask is not None:
        raise UserError(
            "a multitask recipe trains one student on several tasks; its teachers are fine-tuned by distill",
            key="multitask",
            fix="run `kdlab distill` with this recipe (it fine-tunes missing teachers), or remove multitask",
        )
    if recipe.augment is not None:
        raise UserError(
            "augment adds inputs without gold labels; finetune trains on gold labels only",
            key="augment",
            fix="remove the augment section (it belongs in a distill recipe)",
        )
    if recipe.assistants:
        raise UserError(
            "assistants form a distillation chain; finetune trains one model",
            key="assistants",
            fix="remove assistants, or run `kdlab distill` with this recipe",
        )
    if "distill" in recipe.model_fields_set or "student" in recipe.model_fields_set:
        raise UserError(
            "finetune trains one model on gold labels; it has no student or distill section",
            key="distill" if "distill" in recipe.model_fields_set else "student",
            fix="remove that section, or run `kdlab distill` with this recipe",
        )
    if is_word_task(recipe.task):
        return finetune_words(recipe, resume)
    if is_image_task(recipe.task):
        return finetune_images(recipe, resume)
    _check_sentence_task(recipe)
    set_seed(recipe.train.seed)
    spec = task_spec(recipe.task)
    model, tokenizer = load_teacher(recipe, spec, attention=False)
    data = load_data(spec, recipe.task, tokenizer, recipe.train.seed)
    out = claim_output(recipe, resume)
    stages = [Stage("finetune", (), True, recipe.train.epochs)]
    objective = Objective(recipe.distill.model_copy(update={"method": "none"}), spec.regression)
    job = _job(recipe, spec, data, model, tokenizer, None, FeatureMatcher([]), objective, stages, out, "model")
    return RunSummary(out, out / "model", Trainer(job, make_accelerator(recipe.train)).fit(resume))


def distill(recipe: Recipe, resume: bool = False) -> RunSummary:
    """Distil the teacher (live, labelled once, or its knowledge stored in ``cache.dir``) into the recipe's student."""
    if recipe.multitask is not None:
        return run_multitask(recipe, resume)
    if recipe.assistants:
        return distill_chain(recipe, resume, distill)
    cfg = recipe.distill
    if is_word_task(recipe.task):
        return distill_words(recipe, resume)
    if is_image_task(recipe.task):
        return distill_images(recipe, resume)
    _check_sentence_task(recipe)
    set_seed(recipe.train.seed)
    spec = task_spec(recipe.task)
    check_teacher_use(recipe)
    check_augment(recipe)
    check_teachers(recipe, spec)
    matcher = FeatureMatcher(cfg.matches)
    objective = build_objective(cfg, spec.regression, spec.num_labels)
    side = open_teacher(recipe, spec, matcher, objective)
    splits = load_splits(spec, recipe.task, recipe.train.seed)
    splits = augmentation_candidates(recipe, spec, splits, side.mask_token)
    splits = keep_augmented(recipe, spec, splits, side.scores)
    student, tokenizer, data = _student_and_data(recipe, spec, side, splits)
    if cfg.stage_until == "plateau" and cfg.method in ("pid", "sid") and not data.dev:
        raise UserError(
            "stage_until: plateau needs a dev split to watch",
            key="distill.stage_until",
            fix="give task.dev, or use stage_until: epochs",
        )
    source, widths = side.source(matcher, objective, data, splits.training)
    if cfg.teachers:
        source = ensemble_source(recipe, spec, side, source, splits.training, splits.dev)
    set_seed(recipe.train.seed)  # the projections' initialisation, whatever the teacher source drew before
    check_matches(matcher, widths, student, data.collate(data.train[:2]))
    stages = build_stages(cfg, recipe.train.epochs, [name for name, _ in student.named_modules()])
    out = claim_output(recipe, resume)
    job = _job(recipe, spec, data, student, tokenizer, source, matcher, objective, stages, out, "student")
    result = Trainer(job, make_accelerator(recipe.train)).fit(resume)
    return RunSummary(out, out / "student", result, describe(splits))


def _check_sentence_task(recipe: Recipe) -> None:
    """Settings that only word tasks (tagging, parsing) read, refused on a sentence task instead of ignored."""
    refuse_image_settings(recipe)
    method = recipe.distill.method
    if method in WORD_METHODS and method != "none":
        raise UserError(
            f"method {method!r} is for word-level tasks (tagging, parsing)",
            key="distill.method",
            fix="use vanilla, internal, pid or sid for sentence tasks",
        )
    for key, value in (("train.head_lr", recipe.train.head_lr), ("student.head", recipe.student.head)):
        if value is not None:
            raise UserError(f"{key} applies to word-level tasks only", key=key, fix=f"remove {key}")
    if recipe.teacher.head is not None:
        raise UserError("teacher.head applies to word-level tasks only", key="teacher.head", fix="remove it")


def _student_and_data(recipe: Recipe, spec: Any, side: TeacherSide, splits: Splits) -> tuple[nn.Module, Any, Data]:
    """The student, the tokenizer it reads, and the encoded data (with the teacher's view for own vocabularies).

    The seed is reset right before the student is built, so a randomly initialised student is the same however
    the teacher was obtained (live, from files, from a cache).
    """
    cfg = recipe.student
    if cfg.own_vocab:
        specials = [side.mask_token] if side.mask_token else []
        tokenizer = own_vocab_tokenizer(cfg, splits.training, specials)
        data = encode_data(splits.training, splits.dev, spec, recipe.task, tokenizer, side.tokenizer)
        return _seeded(recipe, spec, lambda: own_vocab_student(cfg, spec, tokenizer, data.train)), tokenizer, data
    attention = recipe.distill.student_uses_attention
    set_seed(recipe.train.seed)
    if cfg.kind == "pretrained" and side.model is None:
        student, tokenizer = load_student(recipe, spec, attention)
    elif side.model is not None:
        teacher, tokenizer = side.model, side.tokenizer  # build_student returns the teacher's tokenizer
        student = _seeded(recipe, spec, lambda: build_student(recipe, teacher, tokenizer, spec, attention)[0])
    else:
        assert side.path is not None  # the recipe schema requires teacher.model for these students
        tokenizer = side.tokenizer
        student = student_from_teacher_files(side.path, cfg, spec.num_labels, spec.regression, tokenizer, attention)
    return student, tokenizer, encode_data(splits.training, splits.dev, spec, recipe.task, tokenizer)


def _seeded(recipe: Recipe, spec: Any, build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` right after resetting the seed; online KD: a PeerGroup of peers built so from seeds seed + i."""
    if recipe.distill.method == "online":
        return peer_group(lambda _: fresh_head(build()), recipe.distill.online, spec.num_labels, seed=recipe.train.seed)
    set_seed(recipe.train.seed)
    return build()


def fresh_head(model: nn.Module) -> nn.Module:
    """Re-initialise the task head from the current seed.

    Peers cut from one checkpoint (shrink) would otherwise start as the very same network, head included, and
    teach each other nothing but their dropout noise; each peer's own head is where they start to differ.
    """
    head = getattr(model, "classifier", None)
    if isinstance(head, nn.Module):
        init = getattr(model, "_init_weights", None)  # Hugging Face models: their own initialisation scheme
        for module in head.modules():
            if init is not None:
                init(module)
            elif hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return model


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
        if isinstance(trained, PeerGroup):  # online KD: peer 0 is the student, every peer goes to peers/
            save_peers(trained, path, lambda peer, where: save_student(peer, tokenizer, where))
        else:
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
