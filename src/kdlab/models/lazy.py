"""Students initialised from a teacher's weight files, without constructing or loading the teacher.

Training from a cache (``kdlab.cache``) never loads the teacher. A shrunk student still starts from the teacher's
kept layers, embeddings and head, and a BiLSTM from its word embeddings, so: the teacher's *structure* is built
on the meta device (no memory, no weights) to find module names and shapes, and only the tensors the student
needs are read, one by one, from the memory-mapped safetensors files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from safetensors import safe_open
from torch import Tensor, nn

from kdlab.config import StudentConfig
from kdlab.errors import UserError
from kdlab.models.bilstm import bilstm_from_teacher
from kdlab.models.shrink import shrink_as_configured
from kdlab.models.teachers import classifier_skeleton


class CheckpointTensors(Mapping[str, Tensor]):
    """Read-only view of a model folder's safetensors weights by state-dict name, loading tensors on access.

    A base checkpoint saved without its classifier wrapper names its tensors without the base-model prefix
    (``embeddings...`` instead of ``bert.embeddings...``): both spellings are accepted.
    """

    def __init__(self, folder: str | Path, base_prefix: str = "", key: str = "teacher.model") -> None:
        self.folder = Path(folder)
        self.base_prefix = f"{base_prefix}." if base_prefix else ""
        self._file_of = self._weight_map(key)

    def _weight_map(self, key: str) -> dict[str, str]:
        index = self.folder / "model.safetensors.index.json"
        if index.is_file():
            return dict(json.loads(index.read_text(encoding="utf-8"))["weight_map"])
        single = self.folder / "model.safetensors"
        if not single.is_file():
            raise UserError(
                f"{self.folder} has no safetensors weights to initialise the student from",
                key=key,
                fix="save the teacher with save_pretrained (safetensors), or use student.kind: pretrained",
            )
        with safe_open(single, framework="pt") as handle:
            return dict.fromkeys(handle.keys(), single.name)

    def _stored_name(self, name: str) -> str | None:
        if name in self._file_of:
            return name
        bare = name.removeprefix(self.base_prefix) if self.base_prefix else name
        return bare if bare in self._file_of else None

    def __getitem__(self, name: str) -> Tensor:
        stored = self._stored_name(name)
        if stored is None:
            raise KeyError(name)
        with safe_open(self.folder / self._file_of[stored], framework="pt") as handle:
            return handle.get_tensor(stored)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._stored_name(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._file_of)

    def __len__(self) -> int:
        return len(self._file_of)


def student_from_teacher_files(
    teacher_path: str, cfg: StudentConfig, num_labels: int, regression: bool, tokenizer: Any, attention: bool
) -> nn.Module:
    """A ``shrink`` or ``bilstm`` student initialised from ``teacher_path`` without loading the teacher."""
    skeleton = classifier_skeleton(
        teacher_path, num_labels, regression, "eager" if attention else "sdpa", key="teacher.model"
    )
    tensors = CheckpointTensors(skeleton.name_or_path, skeleton.base_model_prefix)
    if cfg.kind == "shrink":
        return shrink_as_configured(skeleton, cfg, attention, weights=tensors).train()
    if cfg.kind == "bilstm":
        name = next(n for n, m in skeleton.named_modules() if m is skeleton.get_input_embeddings())
        embeddings = tensors[f"{name}.weight"]
        return bilstm_from_teacher(
            skeleton, tokenizer, cfg.lstm_hidden_size, cfg.lstm_layers, embedding_weight=embeddings
        )
    raise ValueError(f"student.kind {cfg.kind!r} is not built from the teacher's files")
