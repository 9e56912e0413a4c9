"""Word-level tasks (POS tagging, dependency parsing) over subword and word tokenizers.

Treebank labels belong to words, models read tokens. Each word is represented by its FIRST subword (first-subword
pooling, :func:`gather_words`), so an encoded item records ``word_starts``: for every kept word, the position of its
first token in ``input_ids``. Labels are stored per kept word, so a student and a teacher that tokenise differently
still predict for the same words in the same order and their outputs can be compared word by word.

Choices that the callers rely on:

* Truncation cuts tokens; a word none of whose tokens survived is dropped (with its labels), and its count is kept
  under ``truncated_words``. A word cut only partly keeps its first subword and stays.
* ``heads`` keep the CoNLL-U convention (``0`` = ROOT, words numbered from 1 in the kept sequence); a head that
  points at a dropped word becomes :data:`IGNORE_LABEL`, and so does that word's ``deprels`` label, since the arc
  it names no longer exists in the encoded sentence.
* A word the tokenizer turns into no token at all (an empty string, a zero-width space, a control character) is
  replaced by the tokenizer's unknown token before encoding. It then owns one token like any other word, rather
  than sharing a position with its neighbour: two words pooled from one token would get identical vectors, which
  a parser cannot tell apart as heads.
* With two views (:func:`encode_words_two_views`) a word is kept only if it survived truncation in BOTH views, so
  the word positions agree; tokens of a word dropped that way stay in the other view's ``input_ids`` as context.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from kdlab.data.conllu import Sentence
from kdlab.data.encoding import _CHUNK, IGNORE_LABEL, TEACHER_PREFIX, _pad_view
from kdlab.errors import UserError

__all__ = ["WORD_FIELDS", "TokenCollator", "encode_words", "encode_words_two_views", "gather_words"]

LABEL_FIELDS = ("upos", "xpos", "deprels")
"""Fields whose labels are strings mapped to class ids through ``label_ids``."""

WORD_FIELDS = (*LABEL_FIELDS, "heads")
"""Every per-word field an item can carry."""


@dataclass
class _View:
    """One tokenizer's encoding of one sentence: ids, token types and the first token of each word that kept one."""

    input_ids: list[int]
    token_type_ids: list[int] | None
    starts: dict[int, int]  # 0-based word index -> position of its first token in input_ids


def encode_words(
    sentences: Sequence[Sentence],
    tokenizer: Any,
    max_length: int,
    fields: Sequence[str] = ("upos",),
    label_ids: Mapping[str, Mapping[str, int]] | None = None,
) -> list[dict[str, Any]]:
    """Tokenise the words of each sentence and attach per-word labels (see the module docstring for the rules).

    ``tokenizer`` is a fast Hugging Face tokenizer (it must offer ``word_ids()``), subword or word-level. Each item
    holds ``input_ids``, ``token_type_ids`` (when the tokenizer produces them), ``word_starts``, ``words`` (number
    of kept words), ``truncated_words`` (number dropped by truncation) and, per entry of ``fields``, a list with one
    value per kept word: the class id ``label_ids[field][label]`` for ``upos``/``xpos``/``deprels``, the head for
    ``heads``. A label missing from ``label_ids`` raises ValueError naming it, whatever ``max_length`` cuts.
    """
    _check_fields(fields, label_ids)
    views = _encode_view(sentences, tokenizer, max_length)
    return [_item(sentence, [view], fields, label_ids) for sentence, view in zip(sentences, views, strict=True)]


def encode_words_two_views(
    sentences: Sequence[Sentence],
    tokenizer: Any,
    teacher_tokenizer: Any,
    max_length: int,
    fields: Sequence[str] = ("upos",),
    label_ids: Mapping[str, Mapping[str, int]] | None = None,
) -> list[dict[str, Any]]:
    """Like :func:`encode_words`, plus the teacher's tokenization under ``teacher_*`` keys.

    The teacher's view adds ``teacher_input_ids``, ``teacher_token_type_ids`` (when produced) and
    ``teacher_word_starts``. Labels are shared: a word is kept only when truncation spared it in both views, so
    ``word_starts[i]`` and ``teacher_word_starts[i]`` are the same word ``i`` and student and teacher predictions
    line up position by position.
    """
    _check_fields(fields, label_ids)
    student = _encode_view(sentences, tokenizer, max_length)
    teacher = _encode_view(sentences, teacher_tokenizer, max_length)
    return [
        _item(sentence, [own, other], fields, label_ids)
        for sentence, own, other in zip(sentences, student, teacher, strict=True)
    ]


def _check_fields(fields: Sequence[str], label_ids: Mapping[str, Mapping[str, int]] | None) -> None:
    """Fail before tokenising anything when a field is unknown or has no label map."""
    if isinstance(fields, str):
        raise ValueError(f"fields must be a sequence of field names, e.g. ({fields!r},), not a string")
    for field in fields:
        if field not in WORD_FIELDS:
            raise ValueError(f"unknown word field {field!r}; choose from {', '.join(WORD_FIELDS)}")
        if field in LABEL_FIELDS and (label_ids is None or field not in label_ids):
            raise ValueError(f"field {field!r} needs label_ids[{field!r}] mapping each label to its class id")


def _encode_view(sentences: Sequence[Sentence], tokenizer: Any, max_length: int) -> list[_View]:
    """Tokenise every sentence with one tokenizer, giving tokenless words the unknown token."""
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise UserError(
            f"max_length must be an integer of at least 2, got {max_length!r}",
            key="task.max_length",
            fix="e.g. max_length: 128 (tokens, including special tokens)",
        )
    views: list[_View] = []
    for begin in range(0, len(sentences), _CHUNK):
        chunk = [list(sentence.words) for sentence in sentences[begin : begin + _CHUNK]]
        encoded = _tokenize(tokenizer, chunk, max_length)
        for i, words in enumerate(chunk):
            view = _view(encoded, i)
            empty = _tokenless_words(view, len(words), max_length)
            if empty:
                if tokenizer.unk_token is None:
                    raise ValueError(
                        f"words {[words[w] for w in empty]!r} give no token and the tokenizer has no unknown token "
                        "to stand in for them; remove or replace such words"
                    )
                words = [tokenizer.unk_token if w in empty else word for w, word in enumerate(words)]
                view = _view(_tokenize(tokenizer, [words], max_length), 0)
            views.append(view)
    return views


def _tokenize(tokenizer: Any, word_lists: list[list[str]], max_length: int) -> Any:
    """One call of the tokenizer over pre-split words (the attention mask is rebuilt by the collator)."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("word-level encoding needs a fast tokenizer (it maps tokens back to words via word_ids())")
    return tokenizer(
        word_lists,
        is_split_into_words=True,
        truncation=True,
        max_length=max_length,
        padding=False,
        return_attention_mask=False,
    )


def _view(encoded: Any, i: int) -> _View:
    """Item ``i`` of a batch encoding, with the position of the first token of every word that has one."""
    starts: dict[int, int] = {}
    for position, word in enumerate(encoded.word_ids(i)):
        if word is not None and word not in starts:
            starts[word] = position
    token_types = encoded.get("token_type_ids")
    return _View(
        input_ids=list(encoded["input_ids"][i]),
        token_type_ids=None if token_types is None else list(token_types[i]),
        starts=starts,
    )


def _tokenless_words(view: _View, n_words: int, max_length: int) -> list[int]:
    """Words that have no token for a reason other than truncation.

    A missing word before a kept one cannot have been cut (truncation removes the end of the sequence); one after
    the last kept word can only have been cut when the sequence is full. A tokenless word at the end of a full
    sequence is left as cut: its stand-in token would not fit either.
    """
    last = max(view.starts, default=-1)
    full = len(view.input_ids) >= max_length
    return [w for w in range(n_words) if w not in view.starts and (w < last or not full)]


def _item(
    sentence: Sentence,
    views: Sequence[_View],
    fields: Sequence[str],
    label_ids: Mapping[str, Mapping[str, int]] | None,
) -> dict[str, Any]:
    """The encoded item of one sentence: the first view under plain keys, a second one under ``teacher_*`` keys."""
    kept = sorted(set.intersection(*(set(view.starts) for view in views)))
    new_index = {old: new for new, old in enumerate(kept)}
    # Heads renumbered into the kept words (1-based, 0 = ROOT); a head that was dropped is ignored.
    heads = [
        0 if head == 0 else new_index[head - 1] + 1 if head - 1 in new_index else IGNORE_LABEL
        for head in (sentence.heads[w] for w in kept)
    ]
    item: dict[str, Any] = {}
    for prefix, view in zip(("", TEACHER_PREFIX)[: len(views)], views, strict=True):
        item[f"{prefix}input_ids"] = view.input_ids
        if view.token_type_ids is not None:
            item[f"{prefix}token_type_ids"] = view.token_type_ids
        item[f"{prefix}word_starts"] = [view.starts[w] for w in kept]
    item["words"] = len(kept)
    item["truncated_words"] = len(sentence) - len(kept)
    for field in fields:
        if field == "heads":
            item["heads"] = heads
            continue
        assert label_ids is not None  # checked by _check_fields
        ids = _label_ids(sentence, field, label_ids[field])
        values = [ids[w] for w in kept]
        if field == "deprels":
            values = [IGNORE_LABEL if head == IGNORE_LABEL else v for v, head in zip(values, heads, strict=True)]
        item[field] = values
    return item


def _label_ids(sentence: Sentence, field: str, mapping: Mapping[str, int]) -> list[int]:
    """Class ids of all words of a field, so that an unknown label fails however much truncation keeps."""
    labels = getattr(sentence, field)
    unknown = sorted({label for label in labels if label not in mapping})
    if unknown:
        raise ValueError(
            f"{field} label(s) {', '.join(map(repr, unknown))} of sentence {sentence.sent_id!r} are not in "
            f"label_ids[{field!r}]; build the label map from all labels the data can hold"
        )
    return [int(mapping[label]) for label in labels]


class TokenCollator:
    """Pad word-level items into a batch of tensors.

    Token keys are padded like :class:`kdlab.data.Collator` (``input_ids`` with ``pad_token_id``, a 0/1
    ``attention_mask``, ``token_type_ids`` with 0). Word keys are padded to the batch's most words ``W``:
    ``word_starts`` [B, W] with 0 (a valid position, so :func:`gather_words` needs no masking), ``word_mask`` [B, W]
    (bool, true on real words), and each field of ``fields`` [B, W] with :data:`IGNORE_LABEL`. A teacher view in the
    items is padded the same way under ``teacher_*`` keys (``teacher_word_mask`` equals ``word_mask``: the views
    share their words), so ``teacher_inputs`` hands the teacher its own positions.
    """

    def __init__(self, pad_token_id: int, fields: Sequence[str] = ("upos",), teacher_pad_token_id: int | None = None):
        if pad_token_id is None:
            raise ValueError("the tokenizer has no pad token id; set one (e.g. to the eos token) first")
        if isinstance(fields, str):
            raise ValueError(f"fields must be a sequence of field names, e.g. ({fields!r},), not a string")
        self.pad_token_id = int(pad_token_id)
        self.teacher_pad_token_id = int(teacher_pad_token_id or 0)
        self.fields = tuple(fields)

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not items:
            raise ValueError("cannot collate an empty batch")
        size = len(items)
        longest = max(len(item["word_starts"]) for item in items)
        word_mask = torch.zeros((size, longest), dtype=torch.bool)
        for row, item in enumerate(items):
            word_mask[row, : len(item["word_starts"])] = True

        batch = _pad_view(items, "", self.pad_token_id)
        batch["word_starts"] = _pad_words(items, "word_starts", longest, 0)
        batch["word_mask"] = word_mask
        if f"{TEACHER_PREFIX}input_ids" in items[0]:
            batch.update(_pad_view(items, TEACHER_PREFIX, self.teacher_pad_token_id))
            batch[f"{TEACHER_PREFIX}word_starts"] = _pad_words(items, f"{TEACHER_PREFIX}word_starts", longest, 0)
            batch[f"{TEACHER_PREFIX}word_mask"] = word_mask.clone()
        for field in self.fields:
            batch[field] = _pad_words(items, field, longest, IGNORE_LABEL)
        return batch


def _pad_words(items: Sequence[dict[str, Any]], key: str, longest: int, fill: int) -> torch.Tensor:
    """Right-pad one per-word list of every item to ``longest`` words."""
    out = torch.full((len(items), longest), fill, dtype=torch.long)
    for row, item in enumerate(items):
        values = item[key]
        if len(values) != len(item["word_starts"]):
            raise ValueError(f"item {row} has {len(values)} {key} values for {len(item['word_starts'])} words")
        if values:
            out[row, : len(values)] = torch.as_tensor(values, dtype=torch.long)
    return out


def gather_words(hidden: torch.Tensor, word_starts: torch.Tensor) -> torch.Tensor:
    """Per-word vectors [B, W, D] from token vectors [B, T, D]: the vector of each word's first subword.

    First-subword pooling keeps one vector per word whatever the tokenizer, which is what lets a word-level student
    and a subword teacher be compared position by position. Padded words read position 0; mask them with
    ``word_mask``.
    """
    if hidden.dim() != 3 or word_starts.dim() != 2 or hidden.shape[0] != word_starts.shape[0]:
        raise ValueError(
            f"expected hidden [B, T, D] and word_starts [B, W], got {tuple(hidden.shape)} and "
            f"{tuple(word_starts.shape)}"
        )
    index = word_starts.long().unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
    return hidden.gather(1, index)
