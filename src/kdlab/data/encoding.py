"""Tokenising examples once, and padding them per batch.

Examples are tokenised without padding: each batch is padded only to its own longest item (dynamic padding),
which together with length bucketing (``batching.EpochBatches``) keeps most of the compute on real tokens.

A student with its own vocabulary reads another tokenization of the same text than its teacher. Its items then
also carry the teacher's view (``teacher_input_ids``, ``teacher_token_type_ids``), and batches hold both views:
the student's under the usual keys, the teacher's under ``teacher_*`` keys (:func:`student_inputs`,
:func:`teacher_inputs` pick them apart).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from kdlab.data.tasks import Example
from kdlab.errors import UserError

# Tokenising in chunks bounds the memory of the tokenizer's intermediate lists on large data sets while
# keeping the fast (Rust) tokenizer's batch parallelism.
_CHUNK = 1024

TEACHER_PREFIX = "teacher_"
"""Batch keys of the teacher's own view of the inputs, when it differs from the student's."""


def student_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """The model inputs of the student (or of a model that reads the batch's main view)."""
    return {k: v for k, v in batch.items() if k != "labels" and not k.startswith(TEACHER_PREFIX)}


def teacher_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """The teacher's model inputs: its own view when the batch has one, else the shared view."""
    if f"{TEACHER_PREFIX}input_ids" not in batch:
        return student_inputs(batch)
    return {k.removeprefix(TEACHER_PREFIX): v for k, v in batch.items() if k.startswith(TEACHER_PREFIX)}


def encode(
    examples: Sequence[Example], tokenizer: Any, max_length: int, teacher_tokenizer: Any = None
) -> list[dict[str, Any]]:
    """Tokenise ``examples`` with a Hugging Face style ``tokenizer``, truncating to ``max_length`` tokens.

    Returns one dict per example with ``input_ids`` (list of ints), ``token_type_ids`` when the tokenizer
    produces them (BERT-style models distinguish the two texts of a pair by them), and ``label`` (None for
    an unlabelled input). Pairs are truncated with the tokenizer's ``longest_first`` strategy, so both texts
    keep a share of the budget. With ``teacher_tokenizer``, each item also holds the teacher's tokenization
    as ``teacher_input_ids`` (and ``teacher_token_type_ids``).
    """
    items = _encode_view(examples, tokenizer, max_length)
    if teacher_tokenizer is not None:
        for item, view in zip(items, _encode_view(examples, teacher_tokenizer, max_length), strict=True):
            item.update({f"{TEACHER_PREFIX}{k}": v for k, v in view.items() if k != "label"})
    return items


def _encode_view(examples: Sequence[Example], tokenizer: Any, max_length: int) -> list[dict[str, Any]]:
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise UserError(
            f"max_length must be an integer of at least 2, got {max_length!r}",
            key="task.max_length",
            fix="e.g. max_length: 128 (tokens, including special tokens)",
        )
    has_pair = [example.text_pair is not None for example in examples]
    if any(has_pair) and not all(has_pair):
        raise ValueError("examples mix single texts and text pairs; a task is one or the other")
    pairs = bool(has_pair) and has_pair[0]

    items: list[dict[str, Any]] = []
    for start in range(0, len(examples), _CHUNK):
        chunk = examples[start : start + _CHUNK]
        texts = [example.text for example in chunk]
        second = [example.text_pair for example in chunk] if pairs else None
        # The attention mask is rebuilt by the collator after padding, so it is not stored per item.
        encoded = tokenizer(
            texts, second, truncation=True, max_length=max_length, padding=False, return_attention_mask=False
        )
        token_types = encoded.get("token_type_ids")
        for i, example in enumerate(chunk):
            item: dict[str, Any] = {"input_ids": list(encoded["input_ids"][i]), "label": example.label}
            if token_types is not None:
                item["token_type_ids"] = list(token_types[i])
            items.append(item)
    return items


IGNORE_LABEL = -100
"""Class id of an unlabelled item in a batch (regression: NaN); the gold-label loss skips those items."""


class Collator:
    """Turn encoded items into a padded batch of tensors (the ``Batch`` contract in DEVELOPERS.md).

    ``input_ids`` are right-padded with ``pad_token_id`` to the longest item of the batch; ``attention_mask``
    is 1 on real tokens and 0 on padding; ``token_type_ids`` (when the items have them) are padded with 0;
    ``labels`` are int64 class ids, or float32 targets when ``regression`` is true; an item whose label is
    None (an augmented input only the teacher labels) gets ``IGNORE_LABEL`` (NaN for regression). Items
    without a ``label`` key (unlabelled inference) give a batch without ``labels``. The teacher's view, when
    the items have one, is padded the same way with ``teacher_pad_token_id`` under ``teacher_*`` keys.
    """

    def __init__(self, pad_token_id: int, regression: bool = False, teacher_pad_token_id: int | None = None) -> None:
        if pad_token_id is None:
            # GPT-style tokenizers have no pad token; padding with an arbitrary id would be silently wrong.
            raise ValueError("the tokenizer has no pad token id; set one (e.g. to the eos token) first")
        self.pad_token_id = int(pad_token_id)
        self.teacher_pad_token_id = int(teacher_pad_token_id or 0)
        self.regression = regression

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not items:
            raise ValueError("cannot collate an empty batch")
        batch = _pad_view(items, "", self.pad_token_id)
        if f"{TEACHER_PREFIX}input_ids" in items[0]:
            batch.update(_pad_view(items, TEACHER_PREFIX, self.teacher_pad_token_id))
        if all("label" in item for item in items):
            batch["labels"] = self._labels(items)
        return batch

    def _labels(self, items: Sequence[dict[str, Any]]) -> torch.Tensor:
        missing = float("nan") if self.regression else IGNORE_LABEL
        values = [missing if item["label"] is None else item["label"] for item in items]
        return torch.tensor(values, dtype=torch.float32 if self.regression else torch.long)


def _pad_view(items: Sequence[dict[str, Any]], prefix: str, pad_token_id: int) -> dict[str, torch.Tensor]:
    """Pad one view (``prefix`` "" or "teacher_") of the items: ids, attention mask, token types."""
    ids_key, types_key = f"{prefix}input_ids", f"{prefix}token_type_ids"
    size = len(items)
    longest = max(len(item[ids_key]) for item in items)
    input_ids = torch.full((size, longest), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((size, longest), dtype=torch.long)
    with_types = [types_key in item for item in items]
    if any(with_types) and not all(with_types):
        raise ValueError("some items have token_type_ids and some do not; encode them with one tokenizer")
    token_type_ids = torch.zeros((size, longest), dtype=torch.long) if with_types[0] else None

    for row, item in enumerate(items):
        length = len(item[ids_key])
        input_ids[row, :length] = torch.as_tensor(item[ids_key], dtype=torch.long)
        attention_mask[row, :length] = 1
        if token_type_ids is not None:
            token_type_ids[row, :length] = torch.as_tensor(item[types_key], dtype=torch.long)

    batch = {ids_key: input_ids, f"{prefix}attention_mask": attention_mask}
    if token_type_ids is not None:
        batch[types_key] = token_type_ids
    return batch
