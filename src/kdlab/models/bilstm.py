"""A BiLSTM student for sequence classification, usable with the teacher's tokenizer.

The model follows the "distil BERT into a simple network" recipe: word embeddings (initialised from the
teacher's input embeddings by ``kdlab.models.bilstm_from_teacher``), a bidirectional LSTM over the real tokens
only, max pooling over time, and a linear classifier.

This file is deliberately SELF-CONTAINED (it imports only torch and transformers): ``save_pretrained`` copies
it into the saved folder next to an ``auto_map``, so that plain transformers can load the student with
``AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)`` without kdlab
installed. Do not import kdlab here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

try:  # transformers >= 5: init functions that skip weights already loaded from a checkpoint
    from transformers import initialization as _init
except ImportError:  # transformers 4: plain torch init (weights are loaded after init there)
    from torch.nn import init as _init


class BiLSTMConfig(PretrainedConfig):
    """Configuration of :class:`BiLSTMForSequenceClassification`.

    A classic ``__init__`` (rather than dataclass fields) keeps the class working with transformers 4 and 5
    alike; every argument has a default because transformers instantiates ``BiLSTMConfig()`` to diff against
    when saving.
    """

    model_type = "kdlab-bilstm"

    def __init__(
        self,
        vocab_size: int = 30522,
        embedding_dim: int = 300,
        hidden_size: int = 300,
        num_layers: int = 1,
        dropout: float = 0.1,
        pad_token_id: int | None = 0,
        num_labels: int = 2,
        problem_type: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = dropout
        # pad_token_id is not a field of the base config in transformers 5, so it is set here explicitly.
        self.pad_token_id = pad_token_id
        if "id2label" not in kwargs or kwargs["id2label"] is None:
            # transformers 5 derives num_labels from id2label: an explicit map keeps 4 and 5 in sync.
            kwargs["id2label"] = {i: f"LABEL_{i}" for i in range(num_labels)}
            kwargs.setdefault("label2id", {f"LABEL_{i}": i for i in range(num_labels)})
        super().__init__(problem_type=problem_type, **kwargs)


class BiLSTMForSequenceClassification(PreTrainedModel):
    """Embeddings -> packed BiLSTM -> max pooling over real tokens -> linear classifier.

    Called like a HF classifier: ``model(input_ids=..., attention_mask=..., labels=None)``; ``token_type_ids``
    and other HF keyword arguments are accepted and ignored so the same batches feed teacher and student.
    """

    config_class = BiLSTMConfig
    base_model_prefix = "bilstm"
    main_input_name = "input_ids"

    def __init__(self, config: BiLSTMConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_dim)
        self.encoder = nn.LSTM(
            input_size=config.embedding_dim,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            batch_first=True,
            bidirectional=True,
            # nn.LSTM only applies dropout between stacked layers (and warns when there is just one).
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(2 * config.hidden_size, config.num_labels)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        std = 0.02
        if isinstance(module, nn.Linear):
            _init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                _init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            _init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LSTM):
            for name, param in module.named_parameters():
                if "weight" in name:
                    _init.xavier_uniform_(param)
                else:
                    _init.zeros_(param)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput | tuple[torch.Tensor, ...]:
        if input_ids is None:
            raise ValueError("BiLSTMForSequenceClassification needs input_ids")
        if attention_mask is None:
            if self.config.pad_token_id is None:
                attention_mask = torch.ones_like(input_ids)
            else:
                attention_mask = (input_ids != self.config.pad_token_id).long()
        mask = attention_mask.bool()

        # Move the real tokens to the front of each row (a stable sort keeps their order), so left padding or
        # holes in the mask work as well as the usual right padding; packing needs "real tokens first".
        order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices
        input_ids = input_ids.gather(1, order)
        mask = mask.gather(1, order)
        # An all-padding row would make pack_padded_sequence fail; give it one (pad) token instead.
        lengths = mask.sum(dim=1).clamp(min=1)
        max_len = int(lengths.max())
        input_ids = input_ids[:, :max_len]
        mask = mask[:, :max_len]

        embedded = self.dropout(self.embeddings(input_ids))
        # Packing makes the LSTM skip padding entirely, so extra pad tokens cannot change the result.
        packed = nn.utils.rnn.pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        packed_out, _ = self.encoder(packed)
        hidden, _ = nn.utils.rnn.pad_packed_sequence(packed_out, batch_first=True, total_length=max_len)

        # Max pooling over real tokens only: padded positions are set to -inf so they never win.
        valid = torch.arange(max_len, device=hidden.device)[None, :] < lengths.to(hidden.device)[:, None]
        pooled = hidden.masked_fill(~valid[:, :, None], float("-inf")).max(dim=1).values
        logits = self.classifier(self.dropout(pooled))

        loss = None
        if labels is not None:
            loss = self._loss(logits, labels)
        if return_dict is None:
            return_dict = getattr(self.config, "return_dict", True)
        if not return_dict:
            return (logits,) if loss is None else (loss, logits)
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss rules of HF's ``*ForSequenceClassification`` heads, so the student is a drop-in."""
        problem_type = self.config.problem_type
        if problem_type is None:
            if self.num_labels == 1:
                problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                problem_type = "single_label_classification"
            else:
                problem_type = "multi_label_classification"
        if problem_type == "regression":
            if self.num_labels == 1:
                return nn.functional.mse_loss(logits.squeeze(-1), labels.squeeze(-1).to(logits.dtype))
            return nn.functional.mse_loss(logits, labels.to(logits.dtype))
        if problem_type == "single_label_classification":
            return nn.functional.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


# Saving copies this file and writes an ``auto_map`` into config.json, so plain transformers can load the
# student.
BiLSTMConfig.register_for_auto_class()
BiLSTMForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")


def bilstm_from_teacher(
    teacher: PreTrainedModel,
    tokenizer: Any,
    hidden_size: int = 300,
    num_layers: int = 1,
    dropout: float = 0.1,
    freeze_embeddings: bool = False,
    embedding_weight: torch.Tensor | None = None,
) -> BiLSTMForSequenceClassification:
    """Build a BiLSTM student whose embedding matrix is a copy of the teacher's input word embeddings.

    The student reuses the teacher's tokenizer, so its vocabulary (and ``embedding_dim``) is the teacher's;
    copying the embeddings gives it pretrained word vectors for free (``embedding_weight``, when given, is that
    matrix read from the teacher's files, for a meta-device teacher skeleton). Labels (``num_labels``,
    ``problem_type``, ``id2label``) come from the teacher's config, so both models solve the same task.
    """
    teacher_embeddings = teacher.get_input_embeddings()
    if not isinstance(teacher_embeddings, nn.Embedding):
        raise ValueError(f"the teacher's input embeddings are a {type(teacher_embeddings).__name__}, not nn.Embedding")
    vocab_size, embedding_dim = teacher_embeddings.weight.shape
    if len(tokenizer) > vocab_size:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the teacher's embedding matrix only {vocab_size} rows"
        )
    tconf = teacher.config
    config = BiLSTMConfig(
        vocab_size=vocab_size,
        embedding_dim=embedding_dim,
        hidden_size=hidden_size,
        num_layers=num_layers,
        dropout=dropout,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=tconf.num_labels,
        problem_type=tconf.problem_type,
        id2label=dict(tconf.id2label) if tconf.id2label else None,
        label2id=dict(tconf.label2id) if tconf.label2id else None,
    )
    student = BiLSTMForSequenceClassification(config)
    with torch.no_grad():
        source = teacher_embeddings.weight if embedding_weight is None else embedding_weight
        student.embeddings.weight.copy_(source.detach().to(student.embeddings.weight.dtype))
    student.embeddings.weight.requires_grad_(not freeze_embeddings)
    return student
