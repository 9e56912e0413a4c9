"""Models: teachers (alias / local folder / hub), layer-dropping and BiLSTM students, saving, inspection.

Importing this package registers the BiLSTM student with transformers' Auto classes, so inside kdlab a saved
BiLSTM loads with ``AutoModelForSequenceClassification.from_pretrained(folder)`` even without
``trust_remote_code``.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModelForSequenceClassification

from kdlab.models.bilstm import BiLSTMConfig, BiLSTMForSequenceClassification, bilstm_from_teacher
from kdlab.models.inspect import ModuleRow, describe, parameter_count, render_table
from kdlab.models.saving import PROBE_SENTENCE, check_tokenizer_round_trip, save_student
from kdlab.models.shrink import find_layer_lists, layer_list_path, parse_keep_layers, shrink
from kdlab.models.teachers import (
    ALIASES,
    is_offline,
    load_classifier,
    load_tokenizer,
    quiet_transformers,
    resolve_model,
)


def register_auto_classes() -> None:
    """Map ``model_type="kdlab-bilstm"`` to the BiLSTM classes (idempotent)."""
    AutoConfig.register(BiLSTMConfig.model_type, BiLSTMConfig, exist_ok=True)
    AutoModelForSequenceClassification.register(BiLSTMConfig, BiLSTMForSequenceClassification, exist_ok=True)


register_auto_classes()

__all__ = [
    "ALIASES",
    "PROBE_SENTENCE",
    "BiLSTMConfig",
    "BiLSTMForSequenceClassification",
    "ModuleRow",
    "bilstm_from_teacher",
    "check_tokenizer_round_trip",
    "describe",
    "find_layer_lists",
    "is_offline",
    "layer_list_path",
    "load_classifier",
    "load_tokenizer",
    "parameter_count",
    "parse_keep_layers",
    "quiet_transformers",
    "register_auto_classes",
    "render_table",
    "resolve_model",
    "save_student",
    "shrink",
]
