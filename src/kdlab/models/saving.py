"""Saving students so that plain transformers can load them, atomically and with a verified tokenizer.

A saved student is an ordinary Hugging Face folder: ``config.json``, ``model.safetensors``, the full tokenizer
(``tokenizer.json`` and whatever vocabulary files the tokenizer writes) and, for custom students such as the
BiLSTM, the modeling code + ``auto_map``. Students never contain training-only modules: projections used by
feature losses live in ``kdlab.distill`` and are not part of the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdlab.io import atomic_dir
from kdlab.models.teachers import quiet_transformers

#: Mixed case, punctuation, digits and a rare word: a tokenizer that lost its vocabulary fails on this.
PROBE_SENTENCE = "Knowledge distillation keeps 97% of BERT's accuracy; the Zyzzyva-tokenizer round-trips!"


def check_tokenizer_round_trip(tokenizer: Any, folder: str | Path, probe: str = PROBE_SENTENCE) -> None:
    """Reload the tokenizer from ``folder`` and check it encodes ``probe`` exactly like ``tokenizer``.

    Raises RuntimeError otherwise. This catches the transformers-5 trap where a folder with only
    ``tokenizer_config.json`` loads as a 5-token tokenizer mapping every word to [UNK].
    """
    from transformers import AutoTokenizer

    with quiet_transformers():
        reloaded = AutoTokenizer.from_pretrained(str(folder))
    if len(reloaded) != len(tokenizer):
        raise RuntimeError(
            f"the tokenizer saved in {folder} has {len(reloaded)} tokens, the original {len(tokenizer)}: "
            "its vocabulary was not saved"
        )
    original_ids = tokenizer(probe)["input_ids"]
    reloaded_ids = reloaded(probe)["input_ids"]
    if list(original_ids) != list(reloaded_ids):
        raise RuntimeError(
            f"the tokenizer saved in {folder} encodes a probe sentence differently: {reloaded_ids} != {original_ids}"
        )


def save_student(model: Any, tokenizer: Any, path: str | Path) -> Path:
    """Save ``model`` (safetensors) and its full tokenizer to ``path`` in one atomic rename.

    Everything is written to a temporary folder next to ``path`` and verified (weights are safetensors, the
    tokenizer reloads and round-trips) before it replaces ``path``; a crash or a failed check leaves any
    previous ``path`` untouched.
    """
    path = Path(path)
    with atomic_dir(path) as tmp, quiet_transformers():
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        if not any(tmp.glob("*.safetensors")):
            raise RuntimeError(f"{type(model).__name__}.save_pretrained wrote no safetensors weights")
        check_tokenizer_round_trip(tokenizer, tmp)
    return path
