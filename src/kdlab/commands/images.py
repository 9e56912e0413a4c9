"""finetune and distill for image tasks (Fashion-MNIST, digits): CNN / MLP models on the same Trainer.

finetune trains a CNN (three conv blocks, widths w, 2w, 4w) or an MLP of ``teacher.width`` from scratch on gold
labels, or continues a saved image model. distill labels the training images once with the teacher (and with each
of ``distill.teachers``: images have no length to bucket and the teachers are cheap next to training), then trains
a student CNN (two conv blocks, w and 2w) or MLP of ``student.width`` with the objective and stages of the
recipe's method: none, vanilla (also with several teachers), annealing, online.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed
from torch import Tensor, nn

from kdlab.commands.run_setup import RunSummary, claim_output, make_accelerator
from kdlab.config import Recipe
from kdlab.data.images import (
    ImageData,
    ImageTask,
    changed_keys,
    collate_images,
    image_inputs,
    image_task,
    load_image_data,
)
from kdlab.engine.teacher import FixedOutputs, TeacherSource
from kdlab.engine.trainer import Job, Trainer
from kdlab.errors import UserError
from kdlab.methods import FeatureMatcher, Objective, Stage, build_stages
from kdlab.methods.factory import build_objective
from kdlab.models.images import (
    ImageModelConfig,
    build_image_model,
    image_accuracy,
    image_logits,
    is_image_model,
    load_image_model,
    save_image_model,
)

IMAGE_KINDS = ("cnn", "mlp")
IMAGE_METHODS = ("none", "vanilla", "annealing", "online")
TEACHER_BLOCKS = 3  # conv blocks of a CNN trained by finetune (w, 2w, 4w)
STUDENT_BLOCKS = 2  # of a student CNN (w, 2w)


# ---------------------------------------------------------------------------------------------------- finetune
def finetune_images(recipe: Recipe, resume: bool = False) -> RunSummary:
    """Train ``teacher.model`` ('cnn' / 'mlp' of ``teacher.width``, or a saved image model) on gold labels."""
    task = image_task(recipe.task)
    _check_common(recipe)
    make_new = _new_teacher_kind(recipe)
    model = None if make_new else _load_fitting(recipe.teacher.model or "", task, "teacher.model")
    data = load_image_data(recipe.task)
    set_seed(recipe.train.seed)
    if model is None:
        width = recipe.teacher.width
        assert width is not None  # checked by _new_teacher_kind
        model = build_image_model(_config(make_new, width, task, TEACHER_BLOCKS))  # type: ignore[arg-type]
    out = claim_output(recipe, resume)
    objective = Objective(recipe.distill.model_copy(update={"method": "none"}), regression=False)
    stages = [Stage("finetune", (), True, recipe.train.epochs)]
    job = _job(recipe, data, model, objective, stages, None, out, "model", save_image_model)
    result = Trainer(job, make_accelerator(recipe.train)).fit(resume)
    return RunSummary(out, out / "model", result, {"train_examples": len(data.train)})


def _new_teacher_kind(recipe: Recipe) -> str | None:
    """'cnn' / 'mlp' when finetune builds a new model (its width is then required), None for a saved model."""
    name, width = recipe.teacher.model, recipe.teacher.width
    if name in IMAGE_KINDS:
        if width is None:
            raise UserError(
                f"teacher.model {name!r} trains a new {name} and needs its width",
                key="teacher.width",
                fix="set teacher.width (channels of the first conv block / hidden units), e.g. 64",
            )
        return name
    if width is not None:
        raise UserError(
            "teacher.width sizes a new model; a saved model keeps its own",
            key="teacher.width",
            fix="remove teacher.width, or set teacher.model to 'cnn' or 'mlp' to train a new one",
        )
    return None


# ---------------------------------------------------------------------------------------------------- distill
def distill_images(recipe: Recipe, resume: bool = False) -> RunSummary:
    """Label the training images once with the teacher(s), then train the student on the method's objective."""
    cfg = recipe.distill
    task = image_task(recipe.task)
    _check_common(recipe)
    _check_distill(recipe)
    teacher_paths = _teacher_paths(recipe, task)
    data = load_image_data(recipe.task)
    accelerator = make_accelerator(recipe.train)
    objective = build_objective(cfg, regression=False, num_labels=task.num_labels)
    source = _teacher_source(recipe, teacher_paths, objective, data, accelerator.device) if teacher_paths else None
    set_seed(recipe.train.seed)  # the student's initialisation, whether or not teachers ran before
    student, save = _student(recipe, task)
    stages = build_stages(cfg, recipe.train.epochs, [name for name, _ in student.named_modules()])
    out = claim_output(recipe, resume)
    job = _job(recipe, data, student, objective, stages, source, out, "student", save)
    result = Trainer(job, accelerator).fit(resume)
    return RunSummary(out, out / "student", result, {"train_examples": len(data.train)})


def _check_distill(recipe: Recipe) -> None:
    cfg, student = recipe.distill, recipe.student
    if cfg.matches:
        raise UserError(
            "image models have no feature matches in kdlab yet; image tasks distil outputs only",
            key="distill.matches",
            fix="remove distill.matches and use method vanilla, annealing or online",
        )
    if cfg.method not in IMAGE_METHODS:
        raise UserError(
            f"method {cfg.method!r} does not apply to image tasks",
            key="distill.method",
            fix=f"use one of {', '.join(IMAGE_METHODS)}",
        )
    if student.kind not in IMAGE_KINDS:
        raise UserError(
            f"student.kind {student.kind!r} is a text student; image tasks train a cnn or mlp student",
            key="student.kind",
            fix="set student.kind: cnn or mlp, and student.width",
        )
    if student.width is None:
        raise UserError(
            f"a {student.kind} student needs its width",
            key="student.width",
            fix="set student.width (channels of the first conv block / hidden units), e.g. 8",
        )
    text_only = changed_keys(student, {"kind", "width"})
    if text_only:
        raise UserError(
            f"student.{text_only[0]} applies to text students only",
            key=f"student.{text_only[0]}",
            fix=f"remove student.{text_only[0]} (image students take kind and width)",
        )
    if recipe.teacher.width is not None:
        raise UserError(
            "teacher.width sizes a new teacher in finetune; distill reads a trained one",
            key="teacher.width",
            fix="remove teacher.width",
        )


def _check_common(recipe: Recipe) -> None:
    """Settings of text recipes that image tasks would silently ignore, refused before any work."""
    if recipe.cache.dir is not None:
        raise UserError(
            "image tasks label the training images with the teacher at the start of each run; they have no cache",
            key="cache.dir",
            fix="remove cache.dir",
        )
    if recipe.augment is not None:
        raise UserError("augment perturbs text; image tasks have no augmentation", key="augment", fix="remove it")
    if recipe.train.head_lr is not None:
        raise UserError("train.head_lr applies to word-level tasks only", key="train.head_lr", fix="remove it")
    if recipe.teacher.head is not None:
        raise UserError("teacher.head applies to word-level tasks only", key="teacher.head", fix="remove it")
    if recipe.teacher.label_once is False:
        raise UserError(
            "image tasks always label the training images once with the teacher",
            key="teacher.label_once",
            fix="remove teacher.label_once",
        )


def refuse_image_settings(recipe: Recipe) -> None:
    """On a text task: the image-only settings (cnn / mlp models, widths) are mistakes, not ignored."""
    task = recipe.task.name or "the recipe's task"
    fix = "use the image task fashion-mnist or digits, or a text student / teacher"
    student, teacher = recipe.student.kind, recipe.teacher.model
    if student in IMAGE_KINDS:
        raise UserError(f"student.kind {student!r} is an image student; {task} is text", key="student.kind", fix=fix)
    if teacher in IMAGE_KINDS:
        raise UserError(f"teacher.model {teacher!r} is an image model; {task} is text", key="teacher.model", fix=fix)
    for key, value in (("student.width", recipe.student.width), ("teacher.width", recipe.teacher.width)):
        if value is not None:
            raise UserError(f"{key} sizes image models; {task} is text", key=key, fix=f"remove {key}")


# ---------------------------------------------------------------------------------------------------- teachers
def _teacher_paths(recipe: Recipe, task: ImageTask) -> list[Path]:
    """teacher.model then distill.teachers, each checked to be an image model of the task (nothing loaded)."""
    if recipe.distill.method in ("none", "online"):  # the student alone, or peers teaching each other
        return []
    named = [("teacher.model", recipe.teacher.model or "")]
    named += [(f"distill.teachers[{i}]", name) for i, name in enumerate(recipe.distill.teachers)]
    return [_fitting_path(name, task, key) for key, name in named]


def _fitting_path(name: str, task: ImageTask, key: str) -> Path:
    path = Path(name).expanduser()
    if name in IMAGE_KINDS:
        raise UserError(
            f"{key} {name!r} names a kind of model to train; distill needs a trained teacher",
            key=key,
            fix="train one with `kdlab finetune configs/fashion/teacher.yaml` and give its model folder",
        )
    if not path.is_dir():
        raise UserError(f"no such model folder: {name!r}", key=key, fix="give the model folder of an image run")
    config = _saved_config(path, key)
    if config.num_labels != task.num_labels or tuple(config.image_shape) != task.image_shape:
        raise UserError(
            f"{name} classifies {config.num_labels} classes of {config.image_shape} images, but task "
            f"{task.name!r} has {task.num_labels} classes of {task.image_shape} images",
            key=key,
            fix=f"use a model trained on {task.name}",
        )
    return path


def _saved_config(path: Path, key: str) -> ImageModelConfig:
    if not is_image_model(path):
        raise UserError(
            f"{str(path)!r} is not a saved kdlab image model",
            key=key,
            fix="give the model folder of an image finetune or distill run (config.json + model.safetensors)",
        )
    return ImageModelConfig.from_json(json.loads((path / "config.json").read_text(encoding="utf-8")))


def _load_fitting(name: str, task: ImageTask, key: str) -> nn.Module:
    return load_image_model(_fitting_path(name, task, key), key=key)


def _teacher_source(
    recipe: Recipe, paths: list[Path], objective: Objective, data: ImageData, device: torch.device
) -> TeacherSource:
    """Every teacher's logits on the training images, computed once; several teachers form an ensemble.

    Only the training split is labelled: the Trainer asks for dev signals in plateau stages alone, which the
    image methods do not have.
    """
    logits = [_label(path, data.train, recipe.train.eval_batch_size, device) for path in paths]
    base = FixedOutputs({"train": logits[0]}, objective)
    if len(paths) == 1:
        return base
    from kdlab.engine.ensemble import EnsembleSource

    return EnsembleSource(base, {"train": torch.stack(logits, dim=1)})  # [N, K, C], teacher.model first


def _label(path: Path, items: list[dict[str, Any]], batch_size: int, device: torch.device) -> Tensor:
    model = load_image_model(path).to(device)
    return image_logits(model, items, batch_size, device)


# ---------------------------------------------------------------------------------------------------- students
def _config(kind: str, width: int, task: ImageTask, blocks: int) -> ImageModelConfig:
    return ImageModelConfig(
        kind=kind,  # type: ignore[arg-type]
        width=width,
        num_labels=task.num_labels,
        image_shape=task.image_shape,
        blocks=blocks,
        label_names=list(task.label_names),
    )


def _student(recipe: Recipe, task: ImageTask) -> tuple[nn.Module, Any]:
    """The student (a peer group for online KD) and the function that saves it."""
    cfg = recipe.student
    assert cfg.width is not None  # checked by _check_distill
    config = _config(cfg.kind, cfg.width, task, STUDENT_BLOCKS)
    if recipe.distill.method != "online":
        return build_image_model(config), save_image_model
    from kdlab.models.peers import peer_group, save_peers

    online = recipe.distill.online
    group = peer_group(lambda _i: build_image_model(config), online, task.num_labels, seed=recipe.train.seed)

    def save(trained: nn.Module, path: Path) -> None:
        save_peers(trained, path, save_image_model)

    return group, save


# ---------------------------------------------------------------------------------------------------- the job
def _job(
    recipe: Recipe,
    data: ImageData,
    model: nn.Module,
    objective: Objective,
    stages: list[Stage],
    source: TeacherSource | None,
    out: Path,
    dirname: str,
    save: Any,
) -> Job:
    def evaluate(trained: nn.Module) -> dict[str, float]:
        device = next(trained.parameters()).device
        return {"accuracy": image_accuracy(trained, data.dev, recipe.train.eval_batch_size, device)}

    return Job(
        student=model,
        matcher=FeatureMatcher([]),
        objective=objective,
        stages=stages,
        train_items=data.train,
        dev_items=data.dev or None,
        collate=collate_images,
        metrics=data.task.metrics,
        main_metric=data.task.main_metric,
        regression=False,
        num_labels=data.task.num_labels,
        output_dir=out,
        save_student=save,
        settings=recipe.train,
        teacher=source,
        model_dirname=dirname,
        model_inputs=image_inputs,
        evaluate=evaluate if data.dev else None,
    )


# ---------------------------------------------------------------------------------------------------- evaluate
def evaluate_image_model(recipe: Recipe, path: str, latency_batch: int) -> tuple[dict[str, float], nn.Module, dict]:
    """Dev accuracy of a saved image model, the model, and its inputs for ``latency_batch`` dev images."""
    task = image_task(recipe.task)
    model = _load_fitting(path, task, "--model")
    data = load_image_data(recipe.task.model_copy(update={"max_train_examples": 1}))
    accuracy = image_accuracy(model, data.dev, recipe.train.eval_batch_size, torch.device("cpu"))
    return {"accuracy": accuracy}, model, image_inputs(collate_images(data.dev[:latency_batch]))
