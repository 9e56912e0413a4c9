"""Tokenising examples once, and padding them per batch.

Examples are tokenised without padding: each batch is padded only to its own longest item (dynamic padding),
which together with length bucketing (``batching.EpochBatches``) keeps most of the compute on real tokens.
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


def encode(examples: Sequence[Example], tokenizer: Any, max_length: int) -> list[dict[str, Any]]:
    """Tokenise ``examples`` with a Hugging Face style ``tokenizer``, truncating to ``max_length`` tokens.

    Returns one dict per example with ``input_ids`` (list of ints), ``token_type_ids`` when the tokenizer
    produces them (BERT-style models distinguish the two texts of a pair by them), and ``label``. Pairs are
    truncated with the tokenizer's ``longest_first`` strategy, so both texts keep a share of the budget.
    """
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


class Collator:
    """Turn encoded items into a padded batch of tensors (the ``Batch`` contract in DEVELOPERS.md).

    ``input_ids`` are right-padded with ``pad_token_id`` to the longest item of the batch; ``attention_mask``
    is 1 on real tokens and 0 on padding; ``token_type_ids`` (when the items have them) are padded with 0;
    ``labels`` are int64 class ids, or float32 targets when ``regression`` is true. Items without a ``label``
    (unlabelled inference) give a batch without ``labels``.
    """

    def __init__(self, pad_token_id: int, regression: bool = False) -> None:
        if pad_token_id is None:
            # GPT-style tokenizers have no pad token; padding with an arbitrary id would be silently wrong.
            raise ValueError("the tokenizer has no pad token id; set one (e.g. to the eos token) first")
        self.pad_token_id = int(pad_token_id)
        self.regression = regression

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not items:
            raise ValueError("cannot collate an empty batch")
        size = len(items)
        longest = max(len(item["input_ids"]) for item in items)
        input_ids = torch.full((size, longest), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((size, longest), dtype=torch.long)
        with_types = ["token_type_ids" in item for item in items]
        if any(with_types) and not all(with_types):
            raise ValueError("some items have token_type_ids and some do not; encode them with one tokenizer")
        token_type_ids = torch.zeros((size, longest), dtype=torch.long) if with_types[0] else None

        for row, item in enumerate(items):
            length = len(item["input_ids"])
            input_ids[row, :length] = torch.as_tensor(item["input_ids"], dtype=torch.long)
            attention_mask[row, :length] = 1
            if token_type_ids is not None:
                token_type_ids[row, :length] = torch.as_tensor(item["token_type_ids"], dtype=torch.long)

        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            batch["token_type_ids"] = token_type_ids
        if all("label" in item for item in items):
            dtype = torch.float32 if self.regression else torch.long
            batch["labels"] = torch.tensor([item["label"] for item in items], dtype=dtype)
        return batch
