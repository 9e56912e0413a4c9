"""finetune and distill for word-level tasks (tagging, parsing): the same Trainer, with word models and losses.

A teacher is a transformer encoder with a tagger (softmax or CRF) or biaffine parser head, fine-tuned on the
treebank. A student is a BiLSTM on its own word vocabulary with a softmax or CRF tagger head or a head-selection
parser. Distillation labels the training sentences once with the teacher's potentials
(:class:`~kdlab.engine.word_teacher.WordTeacherOutputs`) and trains the student on
:class:`~kdlab.methods.word_objective.WordObjective`: structural KD for the teacher/student pair, or the token-level
and Top-K baselines.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed
from torch import nn
from transformers import AutoConfig

from kdlab.commands.run_setup import RunSummary, claim_output, make_accelerator
from kdlab.config import WORD_METHODS, Recipe
from kdlab.data.conllu import Sentence
from kdlab.data.tokens import TokenCollator, encode_words, encode_words_two_views
from kdlab.data.treebank import WordTask, has_gold, hide_gold, inventory, label_map, read_split, word_task
from kdlab.engine.trainer import Job, Trainer
from kdlab.engine.word_teacher import WordTeacherOutputs
from kdlab.errors import UserError
from kdlab.knowledge.word_cache import check_word_target, load_word_cache, save_word_cache
from kdlab.methods import FeatureMatcher, Stage
from kdlab.methods.word_eval import evaluate_words
from kdlab.methods.word_objective import WordObjective
from kdlab.models.teachers import load_tokenizer, quiet_transformers, resolve_model
from kdlab.models.vocab import build_word_tokenizer
from kdlab.models.words import (
    WordParser,
    WordParserConfig,
    WordTagger,
    WordTaggerConfig,
    is_word_model,
    load_word_model,
    save_word_model,
    word_model_inputs,
)


@dataclass
class Treebank:
    task: WordTask
    train: list[Sentence]
    dev: list[Sentence]
    upos_names: tuple[str, ...]


def load_treebank(recipe: Recipe) -> Treebank:
    task = word_task(recipe.task)
    train = read_split(task.train, "task.train", recipe.task.max_train_examples)
    dev = read_split(task.dev, "task.dev", recipe.task.max_dev_examples)
    if not train:
        raise UserError("the training treebank is empty", key="task.train", fix="point it at a non-empty file")
    # Scoring parses without punctuation needs the UPOS names, whatever the task predicts.
    return Treebank(task, train, dev, inventory(train + dev, "upos", "task.train"))


def _label_ids(names: tuple[str, ...], field: str) -> dict[str, dict[str, int]]:
    return {field: {name: i for i, name in enumerate(names)}}


def _encode(
    bank: Treebank, sentences: list[Sentence], tokenizer: Any, recipe: Recipe, ids: dict, teacher_tokenizer: Any = None
) -> list[dict[str, Any]]:
    """Encoded items; a label the model does not know (e.g. a tag missing from the teacher's set) is a UserError."""
    try:
        if teacher_tokenizer is None:
            return encode_words(sentences, tokenizer, recipe.task.max_length, bank.task.fields, ids)
        return encode_words_two_views(
            sentences, tokenizer, teacher_tokenizer, recipe.task.max_length, bank.task.fields, ids
        )
    except ValueError as err:
        raise UserError(str(err), key="task", fix="use data whose labels the teacher was trained on") from None


def _all_label_ids(bank: Treebank, field_names: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """Label ids of every field the items carry: the model's own field, plus UPOS for scoring parses."""
    ids = _label_ids(field_names, bank.task.label_field)
    if bank.task.parsing:
        ids.update(_label_ids(bank.upos_names, "upos"))
    return ids


def _evaluator(bank: Treebank, items: list[dict[str, Any]], collate: Any, recipe: Recipe) -> Any:
    def run(model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        task = "parsing" if bank.task.parsing else "tagging"
        batch = recipe.train.eval_batch_size
        return evaluate_words(model, items, collate, batch, device, task, bank.task.label_field, bank.upos_names)

    return run


def _job(
    recipe: Recipe,
    bank: Treebank,
    model: nn.Module,
    tokenizer: Any,
    items: tuple[list[dict[str, Any]], list[dict[str, Any]], TokenCollator],
    objective: WordObjective,
    source: WordTeacherOutputs | None,
    out: Path,
    dirname: str,
) -> Job:
    train, dev, collate = items

    def save(trained: nn.Module, path: Path) -> None:
        save_word_model(trained, tokenizer, path)

    return Job(
        student=model,
        matcher=FeatureMatcher([]),
        objective=objective,  # type: ignore[arg-type]
        stages=[Stage(recipe.distill.method if dirname == "student" else "finetune", (), True, recipe.train.epochs)],
        train_items=train,
        dev_items=dev or None,
        collate=collate,
        metrics=bank.task.metrics,
        main_metric=bank.task.main_metric,
        regression=False,
        num_labels=int(model.config.num_labels),
        output_dir=out,
        save_student=save,
        settings=recipe.train,
        teacher=source,
        model_dirname=dirname,
        model_inputs=word_model_inputs,
        evaluate=_evaluator(bank, dev, collate, recipe) if dev else None,
    )


def _objective(recipe: Recipe, bank: Treebank, method: str, label_map: torch.Tensor | None = None) -> WordObjective:
    cfg = recipe.distill
    return WordObjective(
        method=method,
        alpha=cfg.alpha,
        temperature=cfg.temperature,
        kbest=cfg.kbest,
        anneal_rate=cfg.anneal_rate,
        task="parsing" if bank.task.parsing else "tagging",
        field=bank.task.label_field,
        label_map=label_map,
    )


# ---------------------------------------------------------------------------------------------------- finetune
def finetune_words(recipe: Recipe, resume: bool = False) -> Any:
    """Train ``teacher.model`` (a pretrained encoder, or a saved word model) on the treebank's gold labels."""
    bank = load_treebank(recipe)
    set_seed(recipe.train.seed)
    model, tokenizer = _model_to_finetune(recipe, bank)
    ids = _all_label_ids(bank, _names(model.config))
    labelled = [s for s in bank.train if has_gold(s, bank.task.gold_fraction)]
    train = _encode(bank, labelled, tokenizer, recipe, ids)
    dev = _encode(bank, bank.dev, tokenizer, recipe, ids)
    collate = TokenCollator(tokenizer.pad_token_id or 0, bank.task.fields)
    out = claim_output(recipe, resume)
    objective = _objective(recipe, bank, "none")
    job = _job(recipe, bank, model, tokenizer, (train, dev, collate), objective, None, out, "model")
    result = Trainer(job, make_accelerator(recipe.train)).fit(resume)
    return RunSummary(out, out / "model", result, {"train_sentences": len(train)})


def _names(config: Any) -> tuple[str, ...]:
    id2label = config.id2label
    return tuple(str(id2label[i]) for i in range(len(id2label)))


def _model_to_finetune(recipe: Recipe, bank: Treebank) -> tuple[nn.Module, Any]:
    path = resolve_model(recipe.teacher.model or "", key="teacher.model")
    if is_word_model(path):
        model, tokenizer = load_word_model(path)
        _check_fits(model.config, bank, "teacher.model")
        head = recipe.teacher.head
        if head is not None and head != getattr(model.config, "head", None):
            raise UserError(
                f"teacher.model is a trained model; its head cannot become {head!r}",
                key="teacher.head",
                fix="remove teacher.head to continue training the saved model, or start from an encoder (minilm)",
            )
        return model, tokenizer
    if bank.task.parsing and recipe.teacher.head is not None:
        raise UserError("a parser has no tagger head", key="teacher.head", fix="remove teacher.head")
    # The label set is read from train AND dev: a relation seen only in dev would otherwise fail to encode.
    names = inventory(bank.train + bank.dev, bank.task.label_field, "task.train")
    labels = {"num_labels": len(names), "id2label": dict(enumerate(names))}
    if bank.task.parsing:
        model = WordParser.from_encoder(path, **labels)
    else:
        model = WordTagger.from_encoder(path, head=recipe.teacher.head or "softmax", field=bank.task.target, **labels)
    return model, load_tokenizer(path, key="teacher.model")


def _check_fits(config: Any, bank: Treebank, key: str, other_column: bool = False) -> None:
    """A saved word model must predict what the task asks; a distillation teacher may tag another column (case 4)."""
    is_parser = config.model_type == "kdlab-word-parser"
    if is_parser != bank.task.parsing:
        kind = "parser" if is_parser else "tagger"
        raise UserError(
            f"{key} is a {kind}, but task {bank.task.name!r} predicts {bank.task.target}",
            key=key,
            fix="use a parser for ud-ewt-deps and a tagger for the tagging tasks",
        )
    if not is_parser and not other_column and config.field != bank.task.target:
        raise UserError(
            f"{key} tags {config.field}, but task {bank.task.name!r} predicts {bank.task.target}",
            key=key,
            fix=f"use a {bank.task.target} tagger (a tagger of another column can only teach, in kdlab distill)",
        )


# ---------------------------------------------------------------------------------------------------- distill
def distill_words(recipe: Recipe, resume: bool = False) -> Any:
    """Label the training sentences once with the teacher (or read its cache), then train a BiLSTM student."""
    check_word_distill(recipe)
    bank = load_treebank(recipe)
    set_seed(recipe.train.seed)
    teacher = _teacher_info(recipe, bank) if recipe.distill.method != "none" else None
    names, mapping = _student_labels(bank, teacher)
    tokenizer, (train, dev, collate), gold = _distill_data(recipe, bank, teacher, names)
    accelerator = make_accelerator(recipe.train)
    source = _teacher_outputs(recipe, teacher, train, collate, accelerator.device) if teacher else None
    set_seed(recipe.train.seed)  # the student's initialisation, whether or not a teacher was run before
    student = _new_student(recipe, bank, names, len(tokenizer), tokenizer.pad_token_id)
    out = claim_output(recipe, resume)
    objective = _objective(recipe, bank, recipe.distill.method, mapping)
    job = _job(recipe, bank, student, tokenizer, (train, dev, collate), objective, source, out, "student")
    result = Trainer(job, accelerator).fit(resume)
    return RunSummary(out, out / "student", result, {"train_sentences": len(train), "gold_sentences": gold})


@dataclass
class TeacherInfo:
    """What a student run needs to know of its teacher; the weights load only if the teacher must run."""

    path: str
    config: Any
    tokenizer: Any

    @property
    def parsing(self) -> bool:
        return self.config.model_type == "kdlab-word-parser"


def _distill_data(
    recipe: Recipe, bank: Treebank, teacher: TeacherInfo | None, names: tuple[str, ...]
) -> tuple[Any, tuple[list[dict[str, Any]], list[dict[str, Any]], TokenCollator], int]:
    """The student's tokenizer, its items (with the teacher's view) and collator, and how many keep gold labels."""
    # Without a teacher, sentences without gold teach nothing; with one, every sentence is taught.
    sentences = bank.train if teacher is not None else [s for s in bank.train if has_gold(s, bank.task.gold_fraction)]
    tokenizer = _student_tokenizer(recipe, sentences)
    ids = _all_label_ids(bank, names)
    teacher_tokenizer = teacher.tokenizer if teacher is not None else None
    train = _encode(bank, sentences, tokenizer, recipe, ids, teacher_tokenizer)
    gold = hide_gold(train, sentences, bank.task)
    dev = _encode(bank, bank.dev, tokenizer, recipe, ids)
    teacher_pad = teacher_tokenizer.pad_token_id if teacher_tokenizer is not None else None
    return tokenizer, (train, dev, TokenCollator(tokenizer.pad_token_id, bank.task.fields, teacher_pad)), gold


def _teacher_outputs(
    recipe: Recipe, teacher: TeacherInfo, items: list[dict[str, Any]], collate: TokenCollator, device: torch.device
) -> WordTeacherOutputs:
    if recipe.cache.dir is not None:
        return load_word_cache(Path(recipe.cache.dir), items, teacher.parsing)
    model, _ = load_word_model(teacher.path)
    return WordTeacherOutputs.label(model, items, collate, recipe.train.eval_batch_size, device)


def check_word_distill(recipe: Recipe) -> None:
    """Recipe combinations that word tasks do not support, refused before anything loads."""
    cfg, student = recipe.distill, recipe.student
    if cfg.method not in WORD_METHODS:
        raise UserError(
            f"method {cfg.method!r} distils sentence-level outputs; word tasks use {', '.join(WORD_METHODS)}",
            key="distill.method",
            fix="use method: structural (or token / topk for the baselines, none for gold only)",
        )
    if student.kind != "bilstm" or student.vocab == "teacher":
        raise UserError(
            "word tasks train a BiLSTM student on its own word vocabulary",
            key="student.kind",
            fix="set student.kind: bilstm (and leave student.vocab out)",
        )
    if cfg.alpha_schedule != "constant":
        raise UserError(
            "word tasks anneal the teacher term per epoch with distill.anneal_rate",
            key="distill.alpha_schedule",
            fix="remove alpha_schedule and set distill.anneal_rate (e.g. 0.005, Wang et al. 2021)",
        )
    if student.head is not None and word_task(recipe.task).parsing:
        raise UserError("a head-selection parser has no tagger head", key="student.head", fix="remove student.head")
    if recipe.augment is not None:
        raise UserError(
            "augment is not supported for word tasks yet (the teacher already labels every training sentence)",
            key="augment",
            fix="remove augment; give unlabelled sentences as training sentences with task.gold_fraction instead",
        )
    if recipe.teacher.label_once is False:
        raise UserError(
            "word tasks always label the training sentences once with the teacher (or read them from cache.dir)",
            key="teacher.label_once",
            fix="remove teacher.label_once",
        )


def _teacher_info(recipe: Recipe, bank: Treebank) -> TeacherInfo:
    path = resolve_model(recipe.teacher.model or "", key="teacher.model")
    if not is_word_model(path):
        raise UserError(
            f"{recipe.teacher.model} is not a trained word model (tagger or parser)",
            key="teacher.model",
            fix="train a teacher first: kdlab finetune configs/ud/teacher-<task>.yaml, and point teacher.model at "
            "its output's model folder",
        )
    with quiet_transformers():
        config = AutoConfig.from_pretrained(path)
    teacher = TeacherInfo(path, config, load_tokenizer(path, key="teacher.model"))
    _check_fits(teacher.config, bank, "teacher.model", other_column=True)
    if bank.task.parsing and recipe.distill.method == "topk":
        raise UserError(
            "topk (k-best sequences) is a tagging baseline; parsing has token and structural",
            key="distill.method",
            fix="use method: structural or token for ud-ewt-deps",
        )
    return teacher


def _student_labels(bank: Treebank, teacher: TeacherInfo | None) -> tuple[tuple[str, ...], torch.Tensor | None]:
    """The student's label names, and the teacher->student label map when the teacher tags another column."""
    field = bank.task.label_field
    own = inventory(bank.train + bank.dev, field, "task.train")
    if teacher is None:
        return own, None
    teacher_field = "deprels" if teacher.parsing else teacher.config.field
    if teacher_field == field:
        return _names(teacher.config), None
    labelled = [s for s in bank.train if has_gold(s, bank.task.gold_fraction)]
    mapping = label_map(labelled, teacher_field, _names(teacher.config), field, own)
    return own, torch.as_tensor(mapping, dtype=torch.float32)


def _student_tokenizer(recipe: Recipe, sentences: list[Sentence]) -> Any:
    cfg = recipe.student
    texts = [" ".join(s.words) for s in sentences]
    return build_word_tokenizer(
        texts, max_size=cfg.vocab_max_size, min_freq=cfg.vocab_min_freq, lowercase=cfg.lowercase, extra_specials=()
    )


def _new_student(recipe: Recipe, bank: Treebank, names: tuple[str, ...], vocab_size: int, pad: int) -> nn.Module:
    cfg = recipe.student
    common = {
        "encoder": "bilstm",
        "vocab_size": vocab_size,
        "pad_token_id": pad,
        "embedding_dim": cfg.embedding_dim or 100,
        "hidden_size": cfg.lstm_hidden_size,
        "num_layers": cfg.lstm_layers,
        "dropout": 0.33 if cfg.dropout is None else cfg.dropout,
        "num_labels": len(names),
        "id2label": dict(enumerate(names)),
        "label2id": {name: i for i, name in enumerate(names)},
    }
    if bank.task.parsing:
        return WordParser(WordParserConfig(**common))
    return WordTagger(WordTaggerConfig(head=cfg.head or "softmax", field=bank.task.target, **common))


# ---------------------------------------------------------------------------------------------------- evaluate
def evaluate_word_model(recipe: Recipe, path: str, latency_batch: int) -> tuple[dict[str, float], nn.Module, dict]:
    """Dev metrics of a saved tagger or parser, the model, and its inputs for ``latency_batch`` dev sentences."""
    bank = load_treebank(recipe)
    if not bank.dev:
        raise UserError("the task has no dev split to evaluate on", key="task.dev", fix="give task.dev")
    if not is_word_model(path):
        raise UserError(f"{path} is not a word model (tagger or parser)", key="--model", fix="give a kdlab word model")
    model, tokenizer = load_word_model(path)
    _check_fits(model.config, bank, "--model")
    ids = _all_label_ids(bank, _names(model.config))
    dev = _encode(bank, bank.dev, tokenizer, recipe, ids)
    collate = TokenCollator(tokenizer.pad_token_id or 0, bank.task.fields)
    metrics = _evaluator(bank, dev, collate, recipe)(model.to("cpu"))
    return metrics, model, word_model_inputs(collate(dev[:latency_batch]))


# ---------------------------------------------------------------------------------------------------- cache
def cache_words(recipe: Recipe, overwrite: bool = False) -> tuple[int, int, float, str]:
    """Label every training sentence with the teacher once and store the potentials in ``cache.dir``.

    Returns the number of sentences, the bytes written, the seconds taken and what was stored.
    """
    assert recipe.cache.dir is not None  # checked by the caller
    target = Path(recipe.cache.dir)
    check_word_distill(recipe)
    check_word_target(target, overwrite)
    if recipe.distill.method == "none":
        raise UserError("method 'none' uses no teacher: nothing to cache", key="distill.method", fix="use structural")
    bank = load_treebank(recipe)
    teacher = _teacher_info(recipe, bank)
    # The cache must hold every training sentence the student may be given: the gold share changes nothing here.
    recipe = recipe.model_copy(update={"cache": recipe.cache.model_copy(update={"dir": None})})
    names, _ = _student_labels(bank, teacher)
    _, (train, _, collate), _ = _distill_data(recipe, bank, teacher, names)
    start = time.perf_counter()
    outputs = _teacher_outputs(recipe, teacher, train, collate, make_accelerator(recipe.train).device)
    size = save_word_cache(target, outputs, train, teacher.path, recipe.cache.dtype)
    seconds = time.perf_counter() - start
    kind = "arc scores" if teacher.parsing else "emissions" + (" + CRF transitions" if outputs.extras else "")
    return len(train), size, seconds, f"word {kind}"
