"""Several sentence tasks in one student: jointly (multi-task; BAM, Clark et al. 2019) or one after another
(lifelong; L2KD, Chuang et al. 2020), on the one Trainer.

* Teachers: per task, ``multitask.teachers[task]`` or one fine-tuned here from ``teacher.model`` with kdlab's own
  ``finetune`` (``<out>/teachers/<task>``); none for ``distill.method: none``. Each labels its task's training
  items once; its logits are padded to the student's ``C_max`` classes (``kdlab.models.multitask.PAD_LOGIT``).
* joint: one Job over the union of every task's items (each item carries its ``task_id``), the recipe's
  objective unchanged, so ``alpha_schedule: linear`` is BAM's teacher annealing.
* sequential: one Job per task, the student carried over; with ``multitask.replay`` = n, n stored training items
  of each earlier task join the new task's items and are taught by their gold label only
  (:class:`kdlab.methods.replay.ReplayObjective`; stored real examples stand in for LAMOL's generated ones).
  After every step the student is scored on the dev split of every task; ``<out>/lifelong.json`` holds the rows.
"""

from __future__ import annotations

import json
import shutil
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import set_seed
from torch import Tensor, nn

from kdlab.commands.build import check_max_length, task_spec
from kdlab.commands.run_setup import RunSummary, _check_same_recipe, claim_output, make_accelerator
from kdlab.config import Recipe, TaskConfig, load_recipe
from kdlab.data import TASKS, Collator, Example, TaskSpec, encode, load_examples, student_inputs
from kdlab.engine.checkpoint import latest_checkpoint
from kdlab.engine.evaluation import evaluate
from kdlab.engine.teacher import FixedOutputs, label_outputs
from kdlab.engine.trainer import Job, Trainer, TrainResult
from kdlab.errors import UserError
from kdlab.io import atomic_write_json
from kdlab.methods import FeatureMatcher, Stage
from kdlab.methods.factory import build_objective
from kdlab.methods.objective import Objective
from kdlab.methods.replay import KD_MASK, ReplayObjective
from kdlab.models import load_classifier, load_tokenizer, resolve_model
from kdlab.models.lazy import student_from_teacher_files
from kdlab.models.multitask import MultiTaskClassifier, pad_logits, save_multitask

METHODS = ("none", "vanilla")
# The task section only says where the data lives and how long inputs are; each task brings its own files/columns.
_TASK_KEYS = {"name", "root", "max_length", "max_train_examples", "max_dev_examples"}


@dataclass
class TaskData:
    index: int
    config: TaskConfig
    spec: TaskSpec
    train: list[dict[str, Any]]  # encoded with the student's tokenizer, each with its "task_id"
    dev: list[dict[str, Any]]

    @property
    def name(self) -> str:
        return self.spec.name


class TaskCollator:
    """The sentence collator plus ``task_ids`` [B] and, for lifelong steps with replay, ``kd_mask`` [B]."""

    def __init__(self, base: Collator, with_kd_mask: bool = False) -> None:
        self.base = base
        self.with_kd_mask = with_kd_mask

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
        batch = self.base(items)
        batch["task_ids"] = torch.tensor([item["task_id"] for item in items], dtype=torch.long)
        if self.with_kd_mask:
            batch[KD_MASK] = torch.tensor([0 if item.get("replay") else 1 for item in items], dtype=torch.long)
        return batch


def model_inputs(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The student's inputs: ``task_ids`` stay (the model picks each row's head), the replay mask does not."""
    return {k: v for k, v in student_inputs(batch).items() if k != KD_MASK}


# ----------------------------------------------------------------------------------------------- checks
def check_multitask(recipe: Recipe) -> None:
    """Every mistake in a multi-task recipe, refused before anything is loaded or written."""
    mt = recipe.multitask
    assert mt is not None
    _refuse_other_sections(recipe)
    known = sorted(name for name, spec in TASKS.items() if not spec.regression)
    for i, name in enumerate(mt.tasks):
        if name not in TASKS:
            raise UserError(
                f"unknown task {name!r} in multitask.tasks", key=f"multitask.tasks[{i}]", fix=f"use {', '.join(known)}"
            )
        if TASKS[name].regression:
            raise UserError(
                f"{name!r} is a regression task; multi-task and lifelong runs take classification tasks only",
                key=f"multitask.tasks[{i}]",
                fix=f"use classification tasks ({', '.join(known)})",
            )
        _check_files(recipe, name, i)
    if len(set(mt.tasks)) != len(mt.tasks):
        raise UserError("multitask.tasks lists a task twice", key="multitask.tasks", fix="list each task once")
    if recipe.task.name not in mt.tasks:
        raise UserError(
            f"task.name {recipe.task.name!r} is not one of multitask.tasks",
            key="task.name",
            fix=f"set task.name to the first task ({mt.tasks[0]}); task.root and task.max_length apply to all",
        )
    stray = sorted(set(mt.teachers) - set(mt.tasks))
    if stray:
        raise UserError(
            f"multitask.teachers names tasks that are not in multitask.tasks: {stray}",
            key="multitask.teachers",
            fix="give teachers for tasks of the run only",
        )
    if mt.teachers and recipe.distill.method == "none":
        raise UserError(
            "distill.method none trains on gold labels: multitask.teachers would be unused",
            key="multitask.teachers",
            fix="remove multitask.teachers, or use distill.method vanilla",
        )
    if mt.replay and mt.mode == "joint":
        raise UserError(
            "multitask.replay replays earlier tasks in a sequential run; a joint run sees every task at once",
            key="multitask.replay",
            fix="set multitask.mode: sequential, or remove replay",
        )


def _refuse_other_sections(recipe: Recipe) -> None:
    cfg = recipe.distill
    if cfg.method not in METHODS:
        raise UserError(
            f"distill.method {cfg.method!r} is not available for multi-task runs",
            key="distill.method",
            fix="use vanilla (soft-label KD from each task's teacher) or none (gold labels only)",
        )
    if cfg.teachers:
        raise UserError(
            "multi-task runs take one teacher per task from multitask.teachers, not distill.teachers",
            key="distill.teachers",
            fix="move the teachers to multitask.teachers (task: folder)",
        )
    for key, value in (("cache.dir", recipe.cache.dir), ("augment", recipe.augment)):
        if value is not None:
            raise UserError(f"{key} is not supported with multitask", key=key, fix=f"remove {key}")
    if recipe.assistants:
        raise UserError("assistants are not supported with multitask", key="assistants", fix="remove assistants")
    if recipe.student.kind not in ("shrink", "pretrained"):
        raise UserError(
            f"student.kind {recipe.student.kind!r} is not available for multi-task runs (a shared transformer "
            "encoder with one head per task)",
            key="student.kind",
            fix="use shrink (layers of teacher.model) or pretrained (student.model)",
        )
    stray = sorted(k for k in recipe.task.model_fields_set - _TASK_KEYS if getattr(recipe.task, k) is not None)
    if stray:
        raise UserError(
            f"task.{stray[0]} describes one task; a multi-task run reads the ready tasks of multitask.tasks",
            key=f"task.{stray[0]}",
            fix="keep only task.name, task.root, task.max_length (and the example limits) in the task section",
        )


def _task_config(recipe: Recipe, name: str) -> TaskConfig:
    mt = recipe.multitask
    assert mt is not None
    return TaskConfig(
        name=name,
        root=recipe.task.root,
        max_length=recipe.task.max_length,
        max_train_examples=mt.max_train_examples or recipe.task.max_train_examples,
        max_dev_examples=mt.max_dev_examples or recipe.task.max_dev_examples,
    )


def _check_files(recipe: Recipe, name: str, index: int) -> None:
    spec = task_spec(_task_config(recipe, name))
    for path in (spec.train, spec.dev):
        if path is not None and not path.is_file():
            raise UserError(
                f"task {name!r} has no data set at {str(path)!r}",
                key=f"multitask.tasks[{index}]",
                fix="set task.root (or KDLAB_DATA_ROOT) to the folder holding the ready data sets",
            )


# ----------------------------------------------------------------------------------------------- the run
def run_multitask(recipe: Recipe, resume: bool = False) -> RunSummary:
    mt = recipe.multitask
    assert mt is not None
    check_multitask(recipe)
    set_seed(recipe.train.seed)
    tokenizer = load_tokenizer(*_student_source(recipe))
    tasks = [_load_task(recipe, name, i, tokenizer) for i, name in enumerate(mt.tasks)]
    given = {t.name: _given_teacher(recipe, t, tokenizer) for t in tasks if t.name in mt.teachers}
    out = _claim(recipe, resume)
    record = _start_record(recipe, tasks, out, resume)
    outputs: dict[str, Tensor] = {}
    if recipe.distill.method != "none":
        for task in tasks:
            teacher = given.pop(task.name) if task.name in given else _finetuned_teacher(recipe, task, out, resume)
            outputs[task.name], record["teachers"][task.name] = _label(recipe, teacher, task, tokenizer)
            del teacher
    set_seed(recipe.train.seed)
    learner = _learner(recipe, tasks)
    steps = [("joint", tasks)] if mt.mode == "joint" else [(t.name, [t]) for t in tasks]
    done = len(record["steps"])
    if done:  # resuming after finished steps: continue from the learner the last one saved
        learner.load_state_dict(_saved_state(out / "student"))
    result = TrainResult(0, None)
    for k, (name, new) in enumerate(steps):
        if k < done:
            continue
        step_dir = out / "steps" / _step_name(k, name)
        replay = _replay(tasks[:k], mt.replay, recipe.train.seed) if mt.mode == "sequential" else []
        job = _step_job(recipe, learner, tokenizer, name, new, replay, outputs, step_dir)
        again = resume and latest_checkpoint(step_dir / "checkpoints") is not None
        result = Trainer(job, make_accelerator(recipe.train)).fit(again)
        scores = _scores(learner, tasks, tokenizer, recipe)
        # The learner after the latest finished step (what a resumed run continues from), then its row; a step's
        # checkpoints are only needed until then (they are large: weights plus optimizer state).
        save_multitask(learner, tokenizer, out / "student")
        record["steps"].append(_row(k, name, new, replay, scores, tasks))
        record["final"] = _final(scores, tasks)
        atomic_write_json(out / "lifelong.json", record)
        shutil.rmtree(step_dir / "checkpoints", ignore_errors=True)
    return RunSummary(out, out / "student", result, {"lifelong": record})


def _student_source(recipe: Recipe) -> tuple[str, str]:
    if recipe.student.kind == "pretrained":
        return resolve_model(recipe.student.model or "", key="student.model"), "student.model"
    return resolve_model(recipe.teacher.model or "", key="teacher.model"), "teacher.model"


def _load_task(recipe: Recipe, name: str, index: int, tokenizer: Any) -> TaskData:
    config = _task_config(recipe, name)
    spec = task_spec(config)
    seed = recipe.train.seed

    def encoded(examples: list[Example]) -> list[dict[str, Any]]:
        items = encode(examples, tokenizer, config.max_length)
        for item in items:
            item["task_id"] = index
        return items

    train = load_examples(spec, "train", config.max_train_examples, seed)
    dev = load_examples(spec, "dev", config.max_dev_examples, seed)
    return TaskData(index, config, spec, encoded(train), encoded(dev))


def _claim(recipe: Recipe, resume: bool) -> Path:
    """The output folder; a resumed run is recognised by its recipe copy (its steps keep their own checkpoints)."""
    out = Path(recipe.output.dir)
    if resume and (out / "recipe.yaml").is_file():
        _check_same_recipe(recipe, out / "recipe.yaml")
        return out
    return claim_output(recipe, resume)


def _start_record(recipe: Recipe, tasks: list[TaskData], out: Path, resume: bool) -> dict[str, Any]:
    mt = recipe.multitask
    assert mt is not None
    path = out / "lifelong.json"
    if resume and path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    return {
        "mode": mt.mode,
        "method": recipe.distill.method,
        "tasks": list(mt.tasks),
        "main_metrics": {t.name: t.spec.main_metric for t in tasks},
        "replay": mt.replay,
        "teachers": {},
        "steps": [],
    }


def _step_name(k: int, name: str) -> str:
    return f"{k + 1}-{name}"


# ----------------------------------------------------------------------------------------------- teachers
def _given_teacher(recipe: Recipe, task: TaskData, tokenizer: Any) -> nn.Module:
    mt = recipe.multitask
    assert mt is not None
    key = f"multitask.teachers.{task.name}"
    model, teacher_tokenizer = load_classifier(
        resolve_model(mt.teachers[task.name], key=key), task.spec.num_labels, key=key
    )
    check_max_length(model, recipe.task.max_length, key)
    if teacher_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise UserError(
            f"the teacher of {task.name!r} has another tokenizer than the student, so both cannot read one batch",
            key=key,
            fix="use teachers fine-tuned from the student's base model (or leave the task out of multitask.teachers)",
        )
    return model


def _finetuned_teacher(recipe: Recipe, task: TaskData, out: Path, resume: bool) -> nn.Module:
    """``teacher.model`` fine-tuned on the task with kdlab's own finetune (kept in ``<out>/teachers/<task>``)."""
    from kdlab.commands.runs import finetune  # runs dispatches here: imported late

    mt = recipe.multitask
    assert mt is not None
    folder = out / "teachers" / task.name
    finished = out / "teachers" / f"{task.name}.json"
    if not finished.is_file():
        spec = {
            "task": task.config.model_dump(mode="json", exclude_none=True),
            "teacher": {"model": recipe.teacher.model},
            "train": {**recipe.train.model_dump(mode="json"), "epochs": mt.teacher_epochs},
            "output": {"dir": str(folder), "overwrite": True},
        }
        again = resume and latest_checkpoint(folder / "checkpoints") is not None
        run = finetune(load_recipe(spec), resume=again)
        atomic_write_json(finished, {"dev_metrics": run.result.dev_metrics})
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)  # the model is kept; resuming it is over
    model, _ = load_classifier(str(folder / "model"), task.spec.num_labels, key="teacher.model")
    return model


def _label(recipe: Recipe, teacher: nn.Module, task: TaskData, tokenizer: Any) -> tuple[Tensor, dict[str, float]]:
    """The teacher's logits on its task's training items (padded later) and its dev scores on the same dev items."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    collate = Collator(tokenizer.pad_token_id or 0)
    size = recipe.train.eval_batch_size
    logits = label_outputs(teacher, task.train, collate, size, device)
    spec = task.spec
    scores = evaluate(teacher, task.dev, collate, size, device, False, spec.metrics, spec.num_labels)
    teacher.cpu()
    return logits, scores


# ----------------------------------------------------------------------------------------------- the student
def _learner(recipe: Recipe, tasks: list[TaskData]) -> MultiTaskClassifier:
    """The recipe's student as a shared encoder (``shrink`` of teacher.model, or student.model) + one head per task."""
    path, key = _student_source(recipe)
    labels = _own_label_count(path)
    if recipe.student.kind == "pretrained":
        model, _ = load_classifier(path, labels, key=key)
    else:
        model = student_from_teacher_files(path, recipe.student, labels, False, None, attention=False)
    check_max_length(model, recipe.task.max_length, key)
    return MultiTaskClassifier(model.base_model, {t.name: t.spec.num_labels for t in tasks}).train()


def _own_label_count(path: str) -> int:
    """A fine-tuned classifier is loaded with its own head (then dropped); a base model with a throwaway one."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    architectures = getattr(config, "architectures", None) or []
    fine_tuned = any(a.endswith("ForSequenceClassification") for a in architectures)
    return int(config.num_labels) if fine_tuned and config.problem_type != "regression" else 2


def _saved_state(folder: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


# ----------------------------------------------------------------------------------------------- one step
def _replay(earlier: list[TaskData], count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` stored training items of each earlier task (the same ones at every step), marked as replayed."""
    items: list[dict[str, Any]] = []
    for task in earlier if count else []:
        chosen = np.random.RandomState([seed, task.index]).permutation(len(task.train))[:count]
        items += [{**task.train[i], "replay": True} for i in sorted(chosen.tolist())]
    return items


def _step_job(
    recipe: Recipe,
    learner: MultiTaskClassifier,
    tokenizer: Any,
    name: str,
    new: list[TaskData],
    replay: list[dict[str, Any]],
    outputs: dict[str, Tensor],
    step_dir: Path,
) -> Job:
    width = learner.max_labels
    items = [item for task in new for item in task.train] + replay
    objective: Objective | ReplayObjective = build_objective(recipe.distill, False, width)
    source = None
    if outputs:
        # Replayed rows get a placeholder teacher row: the replay objective never reads it.
        rows = [pad_logits(outputs[task.name], width) for task in new] + [torch.zeros(len(replay), width)]
        source = FixedOutputs({"train": torch.cat(rows)}, objective)
        if replay:
            objective = ReplayObjective(objective)

    def save(_trained: nn.Module, _path: Path) -> None:
        """Nothing: run_multitask saves the learner once the step is scored (one folder, not one per step)."""

    return Job(
        student=learner,
        matcher=FeatureMatcher([]),
        objective=objective,  # type: ignore[arg-type]
        stages=[Stage(name, (), True, recipe.train.epochs)],
        train_items=items,
        # No dev set inside a step: a lifelong learner goes on with its last weights, not a checkpoint picked on
        # dev data of every task; each step is scored on every task's dev split afterwards (_scores).
        dev_items=None,
        collate=TaskCollator(Collator(tokenizer.pad_token_id or 0), with_kd_mask=bool(replay)),
        metrics=("accuracy",),
        main_metric="accuracy",
        regression=False,
        num_labels=width,
        output_dir=step_dir,
        save_student=save,
        settings=recipe.train,
        teacher=source,
        model_inputs=model_inputs,
    )


def _scores(learner: nn.Module, tasks: list[TaskData], tokenizer: Any, recipe: Recipe) -> dict[str, dict[str, float]]:
    device = next(learner.parameters()).device
    collate = TaskCollator(Collator(tokenizer.pad_token_id or 0))
    size = recipe.train.eval_batch_size
    return {
        t.name: evaluate(learner, t.dev, collate, size, device, False, t.spec.metrics, t.spec.num_labels) for t in tasks
    }


def _row(
    k: int,
    name: str,
    new: list[TaskData],
    replay: list[dict[str, Any]],
    scores: dict[str, dict[str, float]],
    tasks: list[TaskData],
) -> dict[str, Any]:
    seen = tasks[: k + 1] if name != "joint" else tasks
    replayed = {t.name: sum(1 for item in replay if item["task_id"] == t.index) for t in tasks[:k]} if replay else {}
    return {
        "step": k + 1,
        "task": name,
        "train_items": {t.name: len(t.train) for t in new},
        "replay_items": replayed,
        "dev": scores,
        "seen_average": statistics.mean(scores[t.name][t.spec.main_metric] for t in seen),
    }


def _final(scores: dict[str, dict[str, float]], tasks: list[TaskData]) -> dict[str, float]:
    """Averages over every task after the last step: of each task's main metric, and of accuracy."""
    return {
        "average": statistics.mean(scores[t.name][t.spec.main_metric] for t in tasks),
        "average_accuracy": statistics.mean(scores[t.name]["accuracy"] for t in tasks),
    }
