"""Students on a word vocabulary of their own (``kdlab.models.vocab.build_word_tokenizer``), randomly initialised.

``birnn_for_vocab`` sizes each side of the QE BiRNN from the encoded training data, so the source table holds
only source words and the target table only target words: the parameters of separate source and target
vocabularies, with one joint tokenizer that the teacher-style batches (``token_type_ids``) already use.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from kdlab.models.bilstm import BiLSTMConfig, BiLSTMForSequenceClassification
from kdlab.models.birnn import PAD_ROW, UNK_ROW, BiRNNConfig, BiRNNForSequenceClassification


def _side_rows(vocab_size: int, seen: set[int], pad_id: int | None, unk_id: int | None) -> tuple[torch.Tensor, int]:
    """Joint id -> side row: pad -> 0, unknown and unseen -> 1, seen ids -> 2, 3, ... in increasing id order.

    Returns the map and the side's table size (``2 + #seen ids``). Increasing joint-id order keeps the map
    independent of the order of the training items.
    """
    rows = torch.full((vocab_size,), UNK_ROW, dtype=torch.long)
    kept = sorted(seen - {pad_id, unk_id})
    if kept:
        rows[torch.tensor(kept, dtype=torch.long)] = torch.arange(2, 2 + len(kept), dtype=torch.long)
    if pad_id is not None:
        rows[pad_id] = PAD_ROW
    return rows, 2 + len(kept)


def birnn_for_vocab(
    tokenizer: Any,
    items: Iterable[Mapping[str, Any]],
    *,
    num_labels: int,
    problem_type: str | None,
    embedding_dim: int = 50,
    hidden_size: int = 50,
    dropout: float = 0.5,
    id2label: Mapping[int, str] | None = None,
    label2id: Mapping[str, int] | None = None,
) -> BiRNNForSequenceClassification:
    """A randomly initialised QE BiRNN whose side vocabularies are the ids seen on each side of ``items``.

    ``items`` are encoded training items (``kdlab.data.encode``: ``input_ids`` and, for pairs,
    ``token_type_ids``). Ids with token type 0 belong to the source side, type 1 to the target side; the model
    has a target side iff some item has a type-1 token. Each side's table has ``2 + #seen ids`` rows (padding,
    unknown, then the seen ids); ids never seen on a side read that side's unknown row, so the source table is
    never indexed with a target-only word. The defaults (50/50, dropout 0.5) are the paper's.
    """
    vocab_size = len(tokenizer)
    seen: tuple[set[int], set[int]] = (set(), set())
    for item in items:
        ids = item["input_ids"]
        types = item.get("token_type_ids") or [0] * len(ids)
        for token, side in zip(ids, types, strict=True):
            if not 0 <= token < vocab_size:
                raise ValueError(f"token id {token} is outside the tokenizer's {vocab_size} ids")
            if side not in (0, 1):
                raise ValueError(f"token type {side} is neither 0 (source) nor 1 (target)")
            seen[side].add(int(token))
    pad_id, unk_id = tokenizer.pad_token_id, tokenizer.unk_token_id
    source_rows, source_size = _side_rows(vocab_size, seen[0], pad_id, unk_id)
    target_rows, target_size = _side_rows(vocab_size, seen[1], pad_id, unk_id)
    is_pair = bool(seen[1])

    config = BiRNNConfig(
        vocab_size=vocab_size,
        source_vocab_size=source_size,
        target_vocab_size=target_size if is_pair else 0,
        embedding_dim=embedding_dim,
        hidden_size=hidden_size,
        dropout=dropout,
        pad_token_id=pad_id,
        num_labels=num_labels,
        problem_type=problem_type,
        id2label=dict(id2label) if id2label else None,
        label2id=dict(label2id) if label2id else None,
    )
    model = BiRNNForSequenceClassification(config)
    model.source_rows.copy_(source_rows)
    model.target_rows.copy_(target_rows)
    return model


def bilstm_for_vocab(
    tokenizer: Any,
    *,
    num_labels: int,
    problem_type: str | None,
    embedding_dim: int = 300,
    hidden_size: int = 300,
    num_layers: int = 1,
    dropout: float = 0.1,
    id2label: Mapping[int, str] | None = None,
    label2id: Mapping[str, int] | None = None,
) -> BiLSTMForSequenceClassification:
    """The BiLSTM student (``kdlab.models.bilstm``) on ``tokenizer``'s vocabulary, with random embeddings.

    Unlike ``bilstm_from_teacher`` there are no teacher vectors to copy: a word vocabulary built from the
    training text has its own ids, so the embeddings are learned from scratch.
    """
    config = BiLSTMConfig(
        vocab_size=len(tokenizer),
        embedding_dim=embedding_dim,
        hidden_size=hidden_size,
        num_layers=num_layers,
        dropout=dropout,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=num_labels,
        problem_type=problem_type,
        id2label=dict(id2label) if id2label else None,
        label2id=dict(label2id) if label2id else None,
    )
    return BiLSTMForSequenceClassification(config)
