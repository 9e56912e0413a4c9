"""One student for several sentence tasks: a shared encoder and one linear head per task on the pooled [CLS].

Every task's logits are returned in one ``[B, C_max]`` tensor (``C_max``: the largest class count of the tasks);
the columns a task does not have hold :data:`PAD_LOGIT`. Teacher logits are padded the same way
(:func:`pad_logits`), so the losses of single-task KD apply unchanged to a batch that mixes tasks.

Saved as ``config.json`` (the task heads and the encoder's config), ``model.safetensors`` (the whole module) and
the full tokenizer, written atomically like every kdlab student.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from kdlab.io import atomic_dir
from kdlab.models.saving import check_tokenizer_round_trip
from kdlab.models.teachers import load_tokenizer, quiet_transformers

# Large negative, NOT -inf: exp(-1e4 / T) is exactly 0 in float32 for any usual temperature, so a padded class has
# zero probability for teacher and student alike, while every loss stays finite. With -inf, the logit MSE would
# compute (-inf) - (-inf) = nan, and log_softmax rows holding -inf give nan gradients through 0 * inf.
# -1e4 also fits in float16 (max 65504), so mixed precision keeps it.
PAD_LOGIT = -1e4

CONFIG_TYPE = "kdlab-multitask"


@dataclass
class MultiTaskOutput:
    logits: Tensor  # [B, C_max], PAD_LOGIT on the classes an example's task does not have


def pad_logits(logits: Tensor, width: int) -> Tensor:
    """``[N, C]`` -> ``[N, width]`` with :data:`PAD_LOGIT` in the added columns."""
    extra = width - logits.shape[-1]
    if extra < 0:
        raise ValueError(f"cannot pad {logits.shape[-1]} classes to {width}")
    return nn.functional.pad(logits, (0, extra), value=PAD_LOGIT)


class MultiTaskClassifier(nn.Module):
    """``encoder`` (a Hugging Face base model, e.g. ``BertModel``) + ``heads[task]``: Linear(hidden, C_task)."""

    def __init__(self, encoder: nn.Module, tasks: dict[str, int], dropout: float | None = None) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("a multi-task classifier needs at least one task")
        self.encoder = encoder
        self.task_names = list(tasks)
        self.num_labels = dict(tasks)
        self.max_labels = max(tasks.values())
        hidden = encoder.config.hidden_size
        rate = getattr(encoder.config, "hidden_dropout_prob", 0.1) if dropout is None else dropout
        self.dropout = nn.Dropout(rate)
        self.heads = nn.ModuleDict({name: nn.Linear(hidden, count) for name, count in tasks.items()})

    @property
    def config(self) -> Any:
        """The encoder's config: code that reads ``model.config`` (attention implementation, sizes) sees it."""
        return self.encoder.config

    def pooled(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        """The pooled [CLS] representation (the encoder's pooler when it has one, else the [CLS] hidden state)."""
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        pooled = getattr(out, "pooler_output", None)
        return pooled if pooled is not None else out.last_hidden_state[:, 0]

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        token_type_ids: Tensor | None = None,
        task_ids: Tensor | None = None,
    ) -> MultiTaskOutput:
        if task_ids is None:
            if len(self.task_names) > 1:
                raise ValueError("a multi-task classifier needs task_ids [B] (index into its task list)")
            task_ids = torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
        features = self.dropout(self.pooled(input_ids, attention_mask, token_type_ids))
        # Every head on every row (a linear layer is cheap next to the encoder), then each row keeps its task's:
        # one gather instead of per-task index bookkeeping, and every head takes part in the graph (DDP).
        every = torch.stack([pad_logits(self.heads[name](features), self.max_labels) for name in self.task_names])
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        return MultiTaskOutput(logits=every[task_ids.to(input_ids.device), rows])


def save_multitask(model: MultiTaskClassifier, tokenizer: Any, path: str | Path) -> Path:
    """Save weights (safetensors), ``config.json`` and the full tokenizer to ``path`` in one atomic rename."""
    path = Path(path)
    config = {
        "model_type": CONFIG_TYPE,
        "tasks": [[name, count] for name, count in model.num_labels.items()],  # a list: the order is the task id
        "dropout": model.dropout.p,
        "pad_logit": PAD_LOGIT,
        "encoder": model.encoder.config.to_dict(),
    }
    with atomic_dir(path) as tmp, quiet_transformers():
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(str(tmp))
        # After the tokenizer: its save may write a config.json of its own in some transformers versions.
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        check_tokenizer_round_trip(tokenizer, tmp)
    return path


def is_multitask_folder(path: str | Path) -> bool:
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    return json.loads(config.read_text(encoding="utf-8")).get("model_type") == CONFIG_TYPE


def load_multitask(path: str | Path) -> tuple[MultiTaskClassifier, Any]:
    """A saved :class:`MultiTaskClassifier` (eval mode) and its tokenizer."""
    from transformers import AutoConfig, AutoModel

    path = Path(path)
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != CONFIG_TYPE:
        raise ValueError(f"{path} does not hold a kdlab multi-task model")
    encoder_config = dict(config["encoder"])
    with quiet_transformers():
        enc = AutoConfig.for_model(encoder_config.pop("model_type"), **encoder_config)
        encoder = AutoModel.from_config(enc)
    model = MultiTaskClassifier(encoder, {name: int(count) for name, count in config["tasks"]}, config["dropout"])
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    return model.eval(), load_tokenizer(str(path), key="--model")
