"""Dev-set evaluation of word-level models: tagging accuracy, unlabelled/labelled attachment scores.

* tagging: ``accuracy = |{i : ŷ_i = y_i}| / |G|`` over the gold-labelled words ``G`` (gold not IGNORE_LABEL);
* parsing: ``uas = |{d : ĥ_d = h_d}| / |G|``, ``las = |{d : ĥ_d = h_d ∧ l̂_d = l_d}| / |G|`` over the words ``G``
  with a gold head, punctuation excluded (gold UPOS ``PUNCT``, :func:`kdlab.data.conllu.is_punctuation`);
  ``uas_punct`` / ``las_punct`` count every word of ``G``.

A score over no word is 0.0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from kdlab.data.conllu import is_punctuation
from kdlab.data.encoding import IGNORE_LABEL
from kdlab.engine.evaluation import length_sorted_batches

__all__ = ["evaluate_words", "predict_words", "word_metrics"]

_INPUT_KEYS = ("input_ids", "attention_mask", "word_starts", "word_mask", "token_type_ids")


def _model_inputs(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The word model's inputs of the batch's main view (token_type_ids only when present)."""
    return {key: batch[key] for key in _INPUT_KEYS if key in batch}


def _ratio(correct: int, total: int) -> float:
    return correct / total if total else 0.0


def word_metrics(
    task: str,
    predictions: Sequence[Any],
    gold: Sequence[Any],
    upos_gold: Sequence[Sequence[str]] | None = None,
) -> dict[str, float]:
    """Scores of per-sentence predictions against gold (see the module docstring).

    Args:
        task: ``"tagging"`` or ``"parsing"``.
        predictions: per sentence, tagging: the predicted label ids (one per word); parsing: ``(heads, rels)``.
        gold: the same structure; IGNORE_LABEL marks words without gold (tagging: label; parsing: head).
        upos_gold: parsing only: per sentence, the gold UPOS names of the words (for the punctuation rule).

    Returns:
        tagging: ``{"accuracy"}``; parsing: ``{"uas", "las", "uas_punct", "las_punct"}``, all in ``[0, 1]``.
    """
    if len(predictions) != len(gold):
        raise ValueError(f"{len(predictions)} predicted sentences for {len(gold)} gold ones")
    if task == "tagging":
        return _tagging_metrics(predictions, gold)
    if task != "parsing":
        raise ValueError(f"unknown word task {task!r}; choose tagging or parsing")
    if upos_gold is None or len(upos_gold) != len(gold):
        raise ValueError("parsing metrics need the gold UPOS names of every sentence (for the punctuation rule)")
    return _parsing_metrics(predictions, gold, upos_gold)


def _tagging_metrics(predictions: Sequence[Any], gold: Sequence[Any]) -> dict[str, float]:
    correct = total = 0
    for row, (pred, ref) in enumerate(zip(predictions, gold, strict=True)):
        pred, ref = list(pred), list(ref)
        if len(pred) != len(ref):
            raise ValueError(f"sentence {row}: {len(pred)} predicted labels for {len(ref)} words")
        for p, g in zip(pred, ref, strict=True):
            if g != IGNORE_LABEL:
                total += 1
                correct += int(p == g)
    return {"accuracy": _ratio(correct, total)}


def _parsing_metrics(
    predictions: Sequence[Any], gold: Sequence[Any], upos_gold: Sequence[Sequence[str]]
) -> dict[str, float]:
    counts = dict.fromkeys(("uas", "las", "uas_punct", "las_punct", "words", "words_punct"), 0)
    for row, ((p_heads, p_rels), (g_heads, g_rels), upos) in enumerate(zip(predictions, gold, upos_gold, strict=True)):
        p_heads, p_rels, g_heads, g_rels, upos = map(list, (p_heads, p_rels, g_heads, g_rels, upos))
        n = len(g_heads)
        if not len(p_heads) == len(p_rels) == len(g_rels) == len(upos) == n:
            raise ValueError(
                f"sentence {row}: lengths differ (predicted heads {len(p_heads)}, rels {len(p_rels)}; gold heads "
                f"{n}, rels {len(g_rels)}, upos {len(upos)})"
            )
        for ph, pr, gh, gr, tag in zip(p_heads, p_rels, g_heads, g_rels, upos, strict=True):
            if gh == IGNORE_LABEL:
                continue
            head_ok = ph == gh
            both_ok = head_ok and pr == gr
            counts["words_punct"] += 1
            counts["uas_punct"] += int(head_ok)
            counts["las_punct"] += int(both_ok)
            if not is_punctuation(tag):
                counts["words"] += 1
                counts["uas"] += int(head_ok)
                counts["las"] += int(both_ok)
    return {
        "uas": _ratio(counts["uas"], counts["words"]),
        "las": _ratio(counts["las"], counts["words"]),
        "uas_punct": _ratio(counts["uas_punct"], counts["words_punct"]),
        "las_punct": _ratio(counts["las_punct"], counts["words_punct"]),
    }


@torch.inference_mode()
def predict_words(
    model: nn.Module,
    items: Sequence[dict[str, Any]],
    collate: Callable[[list[dict[str, Any]]], dict[str, Tensor]],
    batch_size: int,
    device: torch.device,
    task: str,
) -> list[Any]:
    """Per item, in item order: the decoded labels (tagging) or ``(heads, rels)`` (parsing), one per word."""
    was_training = model.training
    model.eval()
    predictions: list[Any] = [None] * len(items)
    try:
        for indices in length_sorted_batches(items, batch_size):
            batch = collate([items[i] for i in indices])
            inputs = {k: v.to(device) for k, v in _model_inputs(batch).items()}
            decoded = model.decode(model(**inputs), inputs["word_mask"])
            for row, i in enumerate(indices):
                n = len(items[i]["word_starts"])
                if task == "parsing":
                    heads, rels = decoded
                    predictions[i] = (heads[row, :n].tolist(), rels[row, :n].tolist())
                else:
                    predictions[i] = decoded[row, :n].tolist()
    finally:
        model.train(was_training)
    return predictions


def evaluate_words(
    model: nn.Module,
    items: Sequence[dict[str, Any]],
    collate: Callable[[list[dict[str, Any]]], dict[str, Tensor]],
    batch_size: int,
    device: torch.device,
    task: str,
    field: str = "upos",
    upos_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """Decode every item (length-sorted batches, inference mode) and score it against the items' gold.

    Tagging compares with ``item[field]``; parsing with ``item["heads"]`` / ``item["deprels"]``, and needs
    ``item["upos"]`` (class ids) with ``upos_names`` (id -> UPOS name) to leave punctuation out.
    """
    if task not in ("tagging", "parsing"):
        raise ValueError(f"unknown word task {task!r}; choose tagging or parsing")
    if task == "parsing":
        missing = sorted({key for item in items for key in ("heads", "deprels", "upos") if key not in item})
        if missing:
            raise ValueError(f"parsing evaluation needs per-word {', '.join(missing)} in every item")
        if upos_names is None:
            raise ValueError("parsing evaluation needs upos_names (UPOS id -> name) for the punctuation rule")
    elif any(field not in item for item in items):
        raise ValueError(f"tagging evaluation needs per-word {field!r} labels in every item")
    predictions = predict_words(model, items, collate, batch_size, device, task)
    if task == "tagging":
        return word_metrics(task, predictions, [item[field] for item in items])
    assert upos_names is not None
    gold = [(item["heads"], item["deprels"]) for item in items]
    upos = [[upos_names[u] if 0 <= u < len(upos_names) else "" for u in item["upos"]] for item in items]
    return word_metrics(task, predictions, gold, upos)
