"""From a validated recipe to built, checked objects: task, data, teacher, student, matcher, output folder.

Everything that can be wrong with the user's input is checked here, before any training starts and before anything
is written: files and columns, model names, module paths, and whether matched shapes fit.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdlab.config import Recipe, StudentConfig, TaskConfig
from kdlab.data import (
    Collator,
    Example,
    TaskSpec,
    custom_task,
    encode,
    load_examples,
    ready_task,
    student_inputs,
    teacher_inputs,
)
from kdlab.errors import UserError
from kdlab.methods.matches import FeatureMatcher, tap_name
from kdlab.models import (
    bilstm_for_vocab,
    bilstm_from_teacher,
    birnn_for_vocab,
    build_word_tokenizer,
    load_classifier,
    resolve_model,
)
from kdlab.models.shrink import shrink_as_configured
from kdlab.taps import FeatureTaps, TapSpec

_TASK_FIELDS = ("train", "dev", "format", "header", "text", "text_pair", "label", "regression")


def task_spec(cfg: TaskConfig) -> TaskSpec:
    """A ready task (with any field the recipe overrides) or a task described by files and columns."""
    if cfg.name is None:
        spec = custom_task(
            "custom",
            cfg.train,
            cfg.dev,
            text=cfg.text,
            label=cfg.label,
            text_pair=cfg.text_pair,
            label_names=cfg.label_names,
            regression=bool(cfg.regression),
            header=cfg.header is not False,
            format=cfg.format,
            metrics=cfg.metrics,
            main_metric=cfg.main_metric,
        )
        spec.validate()
        return spec
    spec = ready_task(cfg.name, cfg.root)
    changes: dict[str, Any] = {f: getattr(cfg, f) for f in _TASK_FIELDS if getattr(cfg, f) is not None}
    if cfg.label_names is not None:
        changes["label_names"] = tuple(cfg.label_names)
    if cfg.metrics is not None:
        changes["metrics"] = tuple(cfg.metrics)
        changes.setdefault("main_metric", cfg.metrics[0])
    if cfg.main_metric is not None:
        changes["main_metric"] = cfg.main_metric
    spec = dataclasses.replace(spec, **changes)
    spec.validate()
    return spec


@dataclasses.dataclass
class Data:
    train: list[dict[str, Any]]
    dev: list[dict[str, Any]] | None
    collate: Collator


def load_data(spec: TaskSpec, cfg: TaskConfig, tokenizer: Any, seed: int, need_train: bool = True) -> Data:
    train = load_examples(spec, "train", cfg.max_train_examples, seed) if need_train else []
    dev = load_examples(spec, "dev", cfg.max_dev_examples, seed) if spec.dev or spec.dev_fraction else None
    if need_train and not train:
        raise UserError("the training split is empty", key="task.train", fix="point task.train at a non-empty file")
    return encode_data(train, dev, spec, cfg, tokenizer)


def encode_data(
    train: list[Example],
    dev: list[Example] | None,
    spec: TaskSpec,
    cfg: TaskConfig,
    tokenizer: Any,
    teacher_tokenizer: Any = None,
) -> Data:
    """Tokenised splits and their collator; with ``teacher_tokenizer``, items also hold the teacher's view."""
    teacher_pad = teacher_tokenizer.pad_token_id if teacher_tokenizer is not None else None
    return Data(
        train=encode(train, tokenizer, cfg.max_length, teacher_tokenizer),
        dev=encode(dev, tokenizer, cfg.max_length, teacher_tokenizer) if dev else None,
        collate=Collator(tokenizer.pad_token_id or 0, spec.regression, teacher_pad),
    )


def own_vocab_tokenizer(cfg: StudentConfig, examples: list[Example], specials: list[str]) -> Any:
    """A word vocabulary built from the training inputs (train + augmented), source and target sides apart."""
    pairs = [e.text_pair or "" for e in examples] if examples and examples[0].text_pair is not None else None
    return build_word_tokenizer(
        [e.text for e in examples],
        pairs,
        max_size=cfg.vocab_max_size,
        min_freq=cfg.vocab_min_freq,
        lowercase=cfg.lowercase,
        extra_specials=tuple(specials),
    )


def own_vocab_student(cfg: StudentConfig, spec: TaskSpec, tokenizer: Any, items: list[dict[str, Any]]) -> nn.Module:
    """A randomly initialised BiRNN / BiLSTM on its own vocabulary (``items``: its encoded training data)."""
    labels = _label_settings(spec)
    if cfg.kind == "birnn":
        return birnn_for_vocab(
            tokenizer,
            items,
            embedding_dim=cfg.embedding_dim or 50,
            hidden_size=cfg.rnn_hidden_size,
            dropout=0.5 if cfg.dropout is None else cfg.dropout,
            **labels,
        )
    return bilstm_for_vocab(
        tokenizer,
        embedding_dim=cfg.embedding_dim or 300,
        hidden_size=cfg.lstm_hidden_size,
        num_layers=cfg.lstm_layers,
        dropout=0.1 if cfg.dropout is None else cfg.dropout,
        **labels,
    )


def _label_settings(spec: TaskSpec) -> dict[str, Any]:
    names = spec.label_names if not spec.regression and spec.label_names else None
    return {
        "num_labels": spec.num_labels,
        "problem_type": "regression" if spec.regression else "single_label_classification",
        "id2label": dict(enumerate(names)) if names else None,
        "label2id": {name: i for i, name in enumerate(names)} if names else None,
    }


def load_teacher(recipe: Recipe, spec: TaskSpec, attention: bool) -> tuple[nn.Module, Any]:
    return _load_for_task(recipe.teacher.model, "teacher.model", recipe, spec, attention)


def _load_for_task(name: str, key: str, recipe: Recipe, spec: TaskSpec, attention: bool) -> tuple[nn.Module, Any]:
    """A classifier for the task, with eager attention only when attention probabilities are distilled."""
    model, tokenizer = load_classifier(
        resolve_model(name, key=key),
        spec.num_labels,
        regression=spec.regression,
        attn_implementation="eager" if attention else "sdpa",
        key=key,
    )
    check_max_length(model, recipe.task.max_length, key)
    return model, tokenizer


def load_student(recipe: Recipe, spec: TaskSpec, attention: bool) -> tuple[nn.Module, Any]:
    """A pretrained student (``student.kind: pretrained``) and its own tokenizer."""
    return _load_for_task(recipe.student.model or "", "student.model", recipe, spec, attention)


def check_max_length(model: nn.Module, max_length: int, key: str) -> None:
    """task.max_length must fit the model's learned position embeddings: longer inputs crash mid-run.

    RoBERTa-style embeddings start counting positions after their padding index, hence the offset.
    """
    for name, module in model.named_modules():
        if name.endswith("position_embeddings") and isinstance(module, nn.Embedding):
            offset = module.padding_idx + 1 if module.padding_idx is not None else 0
            limit = module.num_embeddings - offset
            if max_length > limit:
                raise UserError(
                    f"max_length {max_length} is longer than the {limit} token positions that {key} can read",
                    key="task.max_length",
                    fix=f"set task.max_length to at most {limit}",
                )
            return


def build_student(recipe: Recipe, teacher: nn.Module, tokenizer: Any, spec: TaskSpec, attention: bool) -> Any:
    """The student and its tokenizer (the teacher's, except for a pretrained student with its own)."""
    cfg = recipe.student
    if cfg.kind == "shrink":
        return shrink_as_configured(teacher, cfg, attention), tokenizer
    if cfg.kind == "bilstm":
        return bilstm_from_teacher(
            teacher, tokenizer, hidden_size=cfg.lstm_hidden_size, num_layers=cfg.lstm_layers
        ), tokenizer
    student, student_tokenizer = load_student(recipe, spec, attention)
    if student_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise UserError(
            "the student's tokenizer differs from the teacher's, so both cannot read the same batch",
            key="student.model",
            fix="use a student with the teacher's tokenizer (or student.kind: shrink / bilstm)",
        )
    return student, tokenizer


def teacher_widths(matcher: FeatureMatcher, teacher: nn.Module, sample: dict[str, torch.Tensor]) -> dict[str, int]:
    """Check every teacher module path on a two-example batch; return each match's teacher width.

    The width is the hidden size of a hidden-state match, the number of heads of an attention match.
    """
    every = tuple(range(len(matcher.matches)))
    specs: dict[str, TapSpec] = {}
    for i in every:
        match = matcher.matches[i]
        # Tap names "[i].key" make errors name the config key, e.g. distill.matches[2].teacher.
        specs[f"[{i}].teacher"] = TapSpec(match.teacher, "attention" if match.is_attention else "hidden")
        if match.ranks_by_attention:
            specs[f"[{i}].select_attention"] = TapSpec(match.ranking_module, "attention")
    if not specs:
        return {}
    with torch.no_grad():
        found, _ = FeatureTaps(teacher, specs, key_prefix="distill.matches")(**teacher_inputs(sample))
    widths = {}
    for i in every:
        value = found[f"[{i}].teacher"]
        widths[tap_name(i)] = int(value.shape[1] if matcher.matches[i].is_attention else value.shape[-1])
    return widths


def check_matches(
    matcher: FeatureMatcher, widths: dict[str, int], student: nn.Module, sample: dict[str, torch.Tensor]
) -> None:
    """Check every student module path on a two-example batch and create the projections from the real shapes."""
    every = tuple(range(len(matcher.matches)))
    if not every:
        return
    specs = {
        f"[{i}].student": spec for i, spec in zip(every, matcher.tap_specs("student", every).values(), strict=True)
    }
    with torch.no_grad():
        found, _ = FeatureTaps(student, specs, key_prefix="distill.matches")(**student_inputs(sample))
    matcher.build_projections({tap_name(i): found[f"[{i}].student"] for i in every}, widths)
    _no_dropout_on_matched_attention(matcher, student)


def _no_dropout_on_matched_attention(matcher: FeatureMatcher, student: nn.Module) -> None:
    """Eager attention returns its probabilities *after* dropout; a KL against zeroed entries is meaningless.

    So the student's matched attention modules run without attention dropout (the teacher is in eval mode).
    """
    for match in matcher.matches:
        if match.is_attention:
            for module in student.get_submodule(match.student).modules():
                if isinstance(module, nn.Dropout):
                    module.p = 0.0


def prepare_output(recipe: Recipe, resume: bool, check_busy: bool = True) -> Path:
    """Decide whether the output folder may be used; nothing is written here.

    Under DDP only the main process checks whether the folder is busy: it clears it, and the others must not
    mistake that fresh start for an old run.
    """
    out = Path(recipe.output.dir)
    in_the_way = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if in_the_way is not None:
        raise UserError(
            f"output folder {str(out)!r} cannot be created: {str(in_the_way)!r} is a file",
            key="output.dir",
            fix="point output.dir at a folder (new or holding a kdlab run), not at or below a file",
        )
    busy = check_busy and out.exists() and any(out.iterdir())
    if busy and not resume and not recipe.output.overwrite:
        raise UserError(
            f"output folder {str(out)!r} already holds a run",
            key="output.dir",
            fix="choose another output.dir, add --resume to continue it, or --set output.overwrite=true",
        )
    if busy and recipe.output.overwrite and not resume and not _is_kdlab_run(out):
        raise UserError(
            f"output folder {str(out)!r} holds files that are not a kdlab run; overwrite would delete them",
            key="output.overwrite",
            fix="choose an empty or new output.dir (overwrite only replaces earlier kdlab runs)",
        )
    if resume and not (out / "checkpoints").is_dir():
        raise UserError(
            f"nothing to resume in {str(out)!r} (no checkpoints folder)",
            key="--resume",
            fix="drop --resume, or point output.dir at the run to continue",
        )
    return out


_RUN_FILES = frozenset({"recipe.yaml", "metrics.jsonl", "checkpoints", "student", "model", "tensorboard"}) | {
    "teachers",  # multitask runs (kdlab.commands.multitask): fine-tuned teachers, one folder per step, results
    "steps",
    "lifelong.json",
    "peers",  # online KD (kdlab.models.peers): every peer's model
}


def _is_kdlab_run(out: Path) -> bool:
    """Only folders kdlab wrote may be deleted by ``output.overwrite``, never a user's data or code."""
    names = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    # An assistant chain keeps one run folder per hop (kdlab.commands.chain).
    hops = {name for name in names if name == "final" or re.fullmatch(r"assistant-\d+", name)}
    return "recipe.yaml" in names and names - hops <= _RUN_FILES


def clear_output(out: Path) -> None:
    """Called only once every check has passed and training is about to start."""
    if out.exists():
        shutil.rmtree(out)
