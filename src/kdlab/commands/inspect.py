"""inspect: module paths, parameter counts and output shapes of a model on a sample batch (to write layer maps)."""

from __future__ import annotations

from typing import Any

from kdlab.models import load_tokenizer, resolve_model
from kdlab.models.inspect import ModuleRow, describe

SAMPLE_TEXT = "Knowledge distillation makes a small model learn from a large one."


def inspect_model(model: str, text: str = SAMPLE_TEXT) -> tuple[list[ModuleRow], Any]:
    """Rows for every module of ``model`` (eager attention, so attention probabilities show up as outputs)."""
    from transformers import AutoModelForSequenceClassification

    path = resolve_model(model, key="MODEL")
    tokenizer = load_tokenizer(path)
    net = AutoModelForSequenceClassification.from_pretrained(path, attn_implementation="eager")
    inputs = tokenizer([text], return_tensors="pt")
    return describe(net, dict(inputs)), net
