"""Word-level tasks on treebanks: which CoNLL-U files, what to predict, which labels and metrics.

A :class:`WordTask` predicts one tag column (``upos`` or ``xpos``) or the dependency tree (``deps``: heads and
relations) of every word. The ready tasks read Universal Dependencies English-EWT under the data root
(``ud-ewt/{train,dev}.conllu``); users point ``task.train``/``task.dev`` at their own CoNLL-U files with
``task.format: conllu`` and ``task.target``.

Low-resource training (``gold_fraction``) keeps the gold labels of a fixed share of the training sentences, chosen
by a hash of each sentence's words, so the labelled share is the same for a teacher and its students and on every
machine and seed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdlab.config import TaskConfig
from kdlab.data.conllu import Sentence, label_inventory, read_conllu
from kdlab.data.encoding import IGNORE_LABEL
from kdlab.data.tasks import default_data_root
from kdlab.errors import UserError

WORD_TASKS: dict[str, tuple[str, str]] = {
    "ud-ewt-upos": ("ud-ewt", "upos"),
    "ud-ewt-xpos": ("ud-ewt", "xpos"),
    "ud-ewt-deps": ("ud-ewt", "deps"),
}
"""Ready word tasks: name -> (folder under the data root, target)."""


@dataclass(frozen=True)
class WordTask:
    name: str
    train: Path | None
    dev: Path | None
    target: str  # upos | xpos | deps
    gold_fraction: float | None = None

    @property
    def parsing(self) -> bool:
        return self.target == "deps"

    @property
    def label_field(self) -> str:
        """The per-word class field the model's labels name: the tag column, or the relations of a parser."""
        return "deprels" if self.parsing else self.target

    @property
    def fields(self) -> tuple[str, ...]:
        """Per-word fields the encoded items carry (a parser also needs gold UPOS to leave punctuation out)."""
        return ("heads", "deprels", "upos") if self.parsing else (self.target,)

    @property
    def gold_fields(self) -> tuple[str, ...]:
        """The fields that are labels (hidden outside the gold share); UPOS of a parser is only for scoring."""
        return ("heads", "deprels") if self.parsing else (self.target,)

    @property
    def metrics(self) -> tuple[str, ...]:
        return ("las", "uas", "las_punct", "uas_punct") if self.parsing else ("accuracy",)

    @property
    def main_metric(self) -> str:
        return self.metrics[0]


def is_word_task(cfg: TaskConfig) -> bool:
    return cfg.format == "conllu" or cfg.target is not None or (cfg.name or "") in WORD_TASKS


def word_task(cfg: TaskConfig) -> WordTask:
    """The recipe's word task: a ready one (paths under the data root) or CoNLL-U files with a target."""
    if cfg.name is not None and cfg.name not in WORD_TASKS:
        raise UserError(
            f"{cfg.name!r} is not a treebank task",
            key="task.name",
            fix=f"use one of {', '.join(WORD_TASKS)}, or give task.train/task.dev CoNLL-U files with "
            "format: conllu and target: upos|xpos|deps",
        )
    if cfg.name is None:
        assert cfg.target is not None and cfg.train is not None  # the schema checks this
        train, dev = Path(cfg.train), Path(cfg.dev) if cfg.dev else None
        return WordTask("conllu", train, dev, cfg.target, cfg.gold_fraction)
    folder, target = WORD_TASKS[cfg.name]
    if cfg.target is not None and cfg.target != target:
        raise UserError(
            f"task {cfg.name!r} predicts {target}, not {cfg.target}",
            key="task.target",
            fix=f"remove task.target, or use the ud-ewt-{cfg.target} task",
        )
    base = (Path(cfg.root) if cfg.root else default_data_root()) / folder
    train = Path(cfg.train) if cfg.train else base / "train.conllu"
    dev = Path(cfg.dev) if cfg.dev else base / "dev.conllu"
    return WordTask(cfg.name, train, dev, target, cfg.gold_fraction)


def read_split(path: Path | None, key: str, limit: int | None) -> list[Sentence]:
    """The sentences of one CoNLL-U file; ``limit`` keeps a random subset (fixed seed, file order kept)."""
    if path is None:
        return []
    if not path.is_file():
        raise UserError(
            f"treebank file {path} does not exist",
            key=key,
            fix=f"point {key} at a CoNLL-U file, or set task.root / KDLAB_DATA_ROOT to the folder holding ud-ewt/",
        )
    sentences = read_conllu(path, key=key)
    if limit is not None and limit < len(sentences):
        # The subset must not depend on the training seed: a teacher and its students see the same sentences.
        keep = np.sort(np.random.default_rng(0).choice(len(sentences), size=limit, replace=False))
        sentences = [sentences[i] for i in keep]
    return sentences


def inventory(sentences: Sequence[Sentence], field: str, key: str) -> tuple[str, ...]:
    names = label_inventory(sentences, field)
    if not names:
        raise UserError("the training treebank has no sentences", key=key, fix="point it at a non-empty CoNLL-U file")
    return names


def has_gold(sentence: Sentence, fraction: float | None) -> bool:
    """Whether ``sentence`` is in the labelled share: uniform in a hash of its words, independent of any seed."""
    if fraction is None or fraction >= 1:
        return True
    digest = hashlib.sha1("\x00".join(sentence.words).encode("utf-8")).hexdigest()
    return int(digest[:15], 16) / 16**15 < fraction


def hide_gold(items: list[dict[str, Any]], sentences: Sequence[Sentence], task: WordTask) -> int:
    """Replace the labels of sentences outside the gold share by IGNORE_LABEL, in place; returns how many kept gold."""
    kept = 0
    for item, sentence in zip(items, sentences, strict=True):
        if has_gold(sentence, task.gold_fraction):
            kept += 1
            continue
        for field in task.gold_fields:
            item[field] = [IGNORE_LABEL] * len(item[field])
    return kept


def label_map(
    sentences: Sequence[Sentence], source: str, source_names: Sequence[str], target: str, target_names: Sequence[str]
) -> np.ndarray:
    """``M[x, y] = P(target label y | source label x)`` counted over words of ``sentences`` ([Cx, Cy], rows sum to 1).

    It turns a teacher's marginals over one tag set into marginals over another (Wang et al. case 4). Assuming the
    target tag depends on the word only through its source tag, mapping the teacher's node and edge marginals with
    ``M`` is exact. A source label never seen in the data maps uniformly.
    """
    src = {name: i for i, name in enumerate(source_names)}
    tgt = {name: i for i, name in enumerate(target_names)}
    counts = np.zeros((len(source_names), len(target_names)))
    for sentence in sentences:
        for a, b in zip(getattr(sentence, source), getattr(sentence, target), strict=True):
            if a in src and b in tgt:
                counts[src[a], tgt[b]] += 1
    totals = counts.sum(axis=1, keepdims=True)
    uniform = np.full_like(counts, 1.0 / len(target_names))
    return np.where(totals > 0, counts / np.maximum(totals, 1), uniform)
