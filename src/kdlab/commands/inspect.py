"""inspect: module paths, parameter counts and output shapes of a model on a sample batch (to write layer maps)."""

from __future__ import annotations

from typing import Any

from kdlab.data.conllu import Sentence
from kdlab.data.tokens import TokenCollator, encode_words
from kdlab.models import load_tokenizer, resolve_model
from kdlab.models.inspect import ModuleRow, describe
from kdlab.models.words import is_word_model, load_word_model, word_model_inputs

SAMPLE_TEXT = "Knowledge distillation makes a small model learn from a large one."


def inspect_model(model: str, text: str = SAMPLE_TEXT) -> tuple[list[ModuleRow], Any]:
    """Rows for every module of ``model`` (eager attention, so attention probabilities show up as outputs)."""
    from transformers import AutoModelForSequenceClassification

    path = resolve_model(model, key="MODEL")
    if is_word_model(path):
        return _inspect_word_model(path, text)
    tokenizer = load_tokenizer(path)
    net = AutoModelForSequenceClassification.from_pretrained(path, attn_implementation="eager")
    inputs = tokenizer([text], return_tensors="pt")
    return describe(net, dict(inputs)), net


def _inspect_word_model(path: str, text: str) -> tuple[list[ModuleRow], Any]:
    """A tagger or parser reads words: the sample sentence split on spaces, through the word collator."""
    net, tokenizer = load_word_model(path)
    words = tuple(text.split())
    blank = ("_",) * len(words)
    sentence = Sentence(words, blank, blank, (0,) * len(words), blank, "sample")
    item = encode_words([sentence], tokenizer, max_length=128, fields=())[0]
    batch = TokenCollator(tokenizer.pad_token_id or 0, fields=())([item])
    return describe(net, word_model_inputs(batch)), net
