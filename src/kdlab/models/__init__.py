"""Models: teachers (alias / local folder / hub), layer-dropping, BiLSTM and BiRNN students, word vocabularies,
saving, inspection.

Importing this package registers the BiLSTM and BiRNN students with transformers' Auto classes, so inside kdlab
a saved student loads with ``AutoModelForSequenceClassification.from_pretrained(folder)`` even without
``trust_remote_code``.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModelForSequenceClassification

from kdlab.models.bilstm import BiLSTMConfig, BiLSTMForSequenceClassification, bilstm_from_teacher
from kdlab.models.birnn import BiRNNConfig, BiRNNForSequenceClassification
from kdlab.models.inspect import ModuleRow, describe, parameter_count, render_table
from kdlab.models.saving import PROBE_SENTENCE, check_tokenizer_round_trip, save_student
from kdlab.models.shrink import find_layer_lists, layer_list_path, parse_keep_layers, shrink
from kdlab.models.student_vocab import bilstm_for_vocab, birnn_for_vocab
from kdlab.models.teachers import (
    ALIASES,
    is_offline,
    load_classifier,
    load_tokenizer,
    quiet_transformers,
    resolve_model,
)
from kdlab.models.vocab import build_word_tokenizer


def register_auto_classes() -> None:
    """Map ``model_type`` "kdlab-bilstm" and "kdlab-birnn" to the student classes (idempotent)."""
    AutoConfig.register(BiLSTMConfig.model_type, BiLSTMConfig, exist_ok=True)
    AutoModelForSequenceClassification.register(BiLSTMConfig, BiLSTMForSequenceClassification, exist_ok=True)
    AutoConfig.register(BiRNNConfig.model_type, BiRNNConfig, exist_ok=True)
    AutoModelForSequenceClassification.register(BiRNNConfig, BiRNNForSequenceClassification, exist_ok=True)


register_auto_classes()

__all__ = [
    "ALIASES",
    "PROBE_SENTENCE",
    "BiLSTMConfig",
    "BiLSTMForSequenceClassification",
    "BiRNNConfig",
    "BiRNNForSequenceClassification",
    "ModuleRow",
    "bilstm_for_vocab",
    "bilstm_from_teacher",
    "birnn_for_vocab",
    "build_word_tokenizer",
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
