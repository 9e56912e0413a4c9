"""The sentence-level quality-estimation BiRNN (deepQuest; Gajbhiye et al. 2021), for text pairs or single texts.

Architecture, per side (source text = token type 0, target text = token type 1)::

    e_t = E_side[row_side(x_t)]                           word embeddings, one table per side
    h_t = [GRU_fwd(e)_t ; GRU_bwd(e)_t]  in R^{2h}        bidirectional GRU over the side's real tokens only
    k_t = W dropout(h_t) + b             in R^{2h}
    a_t = softmax_t(u . k_t)                              attention against a learned context vector u
    s   = sum_t a_t k_t                                   the side's sentence vector

    logits = V [s_source ; s_target] + c                  no sigmoid: kdlab's QE targets are z-scores

The sides have separate embedding tables, encoders and attention, as in the paper: a word shared by source and
target language (a name, a number) has one vector per side. The model takes the joint ids of one tokenizer
(``input_ids`` of a pair with ``token_type_ids``, like a BERT teacher's batch); the buffers ``source_rows`` and
``target_rows`` map a joint id to its row in that side's table (row 0 = padding, row 1 = unknown on this
side), so each table holds only the words seen on its side in training. ``kdlab.models.birnn_for_vocab``
builds those maps from encoded training data.

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

#: Embedding rows every side reserves: padding (a zero vector, never trained) and the side's unknown word.
PAD_ROW, UNK_ROW = 0, 1


class BiRNNConfig(PretrainedConfig):
    """Configuration of :class:`BiRNNForSequenceClassification`.

    ``vocab_size`` is the size of the joint tokenizer (the range of ``input_ids``); ``source_vocab_size`` and
    ``target_vocab_size`` are the rows of each side's embedding table, padding and unknown rows included.
    ``target_vocab_size=0`` makes a single-text model. A classic ``__init__`` (rather than dataclass fields)
    keeps the class working with transformers 4 and 5 alike; every argument has a default because
    transformers instantiates ``BiRNNConfig()`` to diff against when saving.
    """

    model_type = "kdlab-birnn"

    def __init__(
        self,
        vocab_size: int = 30000,
        source_vocab_size: int = 30000,
        target_vocab_size: int = 0,
        embedding_dim: int = 50,
        hidden_size: int = 50,
        dropout: float = 0.5,
        pad_token_id: int | None = 0,
        num_labels: int = 1,
        problem_type: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.source_vocab_size = source_vocab_size
        self.target_vocab_size = target_vocab_size
        self.embedding_dim = embedding_dim
        self.hidden_size = hidden_size
        self.dropout = dropout
        # pad_token_id is not a field of the base config in transformers 5, so it is set here explicitly.
        self.pad_token_id = pad_token_id
        if "id2label" not in kwargs or kwargs["id2label"] is None:
            # transformers 5 derives num_labels from id2label: an explicit map keeps 4 and 5 in sync.
            kwargs["id2label"] = {i: f"LABEL_{i}" for i in range(num_labels)}
            kwargs.setdefault("label2id", {f"LABEL_{i}": i for i in range(num_labels)})
        super().__init__(problem_type=problem_type, **kwargs)


class AttentionPooling(nn.Module):
    """``k_t = W h_t + b``, ``a_t = softmax_t(u . k_t)`` over real positions, returns ``sum_t a_t k_t``.

    Dot-product attention against one learned context vector ``u``: the model learns which (projected) token
    states matter for the sentence score, instead of averaging or taking the last state.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.projection = nn.Linear(size, size)
        self.context = nn.Parameter(torch.empty(size))

    def forward(self, hidden: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        keys = self.projection(hidden)  # [B, T, 2h]
        scores = (keys @ self.context).masked_fill(~valid, float("-inf"))  # [B, T]
        weights = torch.softmax(scores, dim=1)
        return (weights.unsqueeze(-1) * keys).sum(dim=1)


class SideEncoder(nn.Module):
    """One side's embedding table, bidirectional GRU, dropout and attention pooling."""

    def __init__(self, vocab_size: int, embedding_dim: int, hidden_size: int, dropout: float) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(vocab_size, embedding_dim, padding_idx=PAD_ROW)
        self.encoder = nn.GRU(embedding_dim, hidden_size, num_layers=1, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.attention = AttentionPooling(2 * hidden_size)

    def forward(self, rows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encode the tokens of ``rows`` (this side's embedding rows) where ``mask`` is true; returns [B, 2h]."""
        # Move this side's tokens to the front of each row (a stable sort keeps their order): packing needs
        # "real tokens first", and the sides of a pair sit one after the other in the joint sequence.
        order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices
        rows = rows.gather(1, order)
        mask = mask.gather(1, order)
        # An empty side (possible only for hand-made input) would make packing fail: it gets one padding row,
        # a zero vector, instead.
        lengths = mask.sum(dim=1).clamp(min=1)
        max_len = int(lengths.max())
        rows = rows[:, :max_len].masked_fill(~mask[:, :max_len], PAD_ROW)

        embedded = self.embeddings(rows)
        # Packing makes the GRU skip padding entirely, so extra pad tokens cannot change the result.
        packed = nn.utils.rnn.pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        packed_out, _ = self.encoder(packed)
        hidden, _ = nn.utils.rnn.pad_packed_sequence(packed_out, batch_first=True, total_length=max_len)
        valid = torch.arange(max_len, device=hidden.device)[None, :] < lengths.to(hidden.device)[:, None]
        return self.attention(self.dropout(hidden), valid)


def _default_rows(vocab_size: int, side_vocab_size: int, pad_token_id: int | None) -> torch.Tensor:
    """Identity map for ids below the side's size, unknown row above; the pad id to the padding row.

    Only a placeholder for a model built straight from a config: ``birnn_for_vocab`` sets the real maps, and
    they are saved and loaded with the weights (persistent buffers).
    """
    rows = torch.arange(vocab_size, dtype=torch.long)
    rows = torch.where(rows < side_vocab_size, rows, torch.full_like(rows, UNK_ROW))
    if pad_token_id is not None and 0 <= pad_token_id < vocab_size:
        rows[pad_token_id] = PAD_ROW
    return rows


class BiRNNForSequenceClassification(PreTrainedModel):
    """Per side: row map -> embeddings -> packed BiGRU -> dropout -> attention pooling; concat -> linear.

    Called like a HF classifier: ``model(input_ids=..., attention_mask=..., token_type_ids=..., labels=None)``.
    Tokens of type 0 are the source text, type 1 the target text. Without ``token_type_ids`` every token is
    source (as in BERT, where missing type ids mean zeros); a single-text model (``target_vocab_size=0``) reads
    the whole sequence as its one side.
    """

    config_class = BiRNNConfig
    base_model_prefix = "birnn"
    main_input_name = "input_ids"

    def __init__(self, config: BiRNNConfig) -> None:
        super().__init__(config)
        # Each table needs its padding and unknown rows; a target size of 0 means "no target side".
        if config.source_vocab_size < 2:
            raise ValueError(f"source_vocab_size must be at least 2, got {config.source_vocab_size}")
        if config.target_vocab_size < 0 or config.target_vocab_size == 1:
            raise ValueError(f"target_vocab_size must be 0 or at least 2, got {config.target_vocab_size}")
        self.num_labels = config.num_labels
        self.is_pair = config.target_vocab_size > 0
        args = (config.embedding_dim, config.hidden_size, config.dropout)
        self.source = SideEncoder(config.source_vocab_size, *args)
        self.target = SideEncoder(config.target_vocab_size, *args) if self.is_pair else None
        sides = 2 if self.is_pair else 1
        self.classifier = nn.Linear(sides * 2 * config.hidden_size, config.num_labels)
        # Joint token id -> row of each side's embedding table; persistent, so saved with the weights.
        self.register_buffer(
            "source_rows", _default_rows(config.vocab_size, config.source_vocab_size, config.pad_token_id)
        )
        self.register_buffer(
            "target_rows", _default_rows(config.vocab_size, config.target_vocab_size, config.pad_token_id)
        )
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        std = 0.02
        if isinstance(module, nn.Linear):
            _init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                _init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            _init.normal_(module.weight, mean=0.0, std=std)
            # The padding row is a zero vector (and nn.Embedding never updates it), so padding adds nothing.
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.GRU):
            for name, param in module.named_parameters():
                if "weight" in name:
                    _init.xavier_uniform_(param)
                else:
                    _init.zeros_(param)
        elif isinstance(module, AttentionPooling):
            _init.normal_(module.context, mean=0.0, std=std)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.source.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.source.embeddings = value

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
            raise ValueError("BiRNNForSequenceClassification needs input_ids")
        if attention_mask is None:
            if self.config.pad_token_id is None:
                attention_mask = torch.ones_like(input_ids)
            else:
                attention_mask = (input_ids != self.config.pad_token_id).long()
        mask = attention_mask.bool()

        if self.is_pair:
            types = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
            source = self.source(self.source_rows[input_ids], mask & (types == 0))
            target = self.target(self.target_rows[input_ids], mask & (types == 1))
            features = torch.cat([source, target], dim=-1)
        else:
            features = self.source(self.source_rows[input_ids], mask)
        logits = self.classifier(features)

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
BiRNNConfig.register_for_auto_class()
BiRNNForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
