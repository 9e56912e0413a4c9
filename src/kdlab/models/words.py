"""Word-level models for treebank tasks: a POS tagger (softmax or CRF head) and a graph-based dependency parser.

Both read the batch contract of :class:`kdlab.data.tokens.TokenCollator` (tokens plus ``word_starts`` /
``word_mask``) and predict one thing per WORD, not per token: the encoder's token vectors are reduced to the
vector of each word's first token (:func:`kdlab.data.tokens.gather_words`). This is what lets a student and a
teacher with different tokenizers be compared word by word during distillation.

Two encoders share one code path:

* ``transformer``: a BERT encoder built from the config dict stored in the word model's config, so a saved model
  is self-describing; :meth:`WordTagger.from_encoder` / :meth:`WordParser.from_encoder` start it from pretrained
  weights (e.g. the bundled MiniLM folder).
* ``bilstm``: the classic small student, own word embeddings on a word vocabulary
  (:func:`kdlab.models.vocab.build_word_tokenizer`) and a BiLSTM over the real tokens.

Heads return raw scores (emissions, CRF potentials, arc and relation scores) in finite form everywhere, padded
positions included, so losses only have to mask and never meet ``inf - inf``. ``decode`` applies the masks.

Importing this module registers both models with ``AutoConfig`` / ``AutoModel`` (model types
``kdlab-word-tagger`` and ``kdlab-word-parser``), so a saved folder loads without ``trust_remote_code``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import torch
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, BertConfig, BertModel, PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from kdlab.data.encoding import IGNORE_LABEL
from kdlab.data.tokens import gather_words
from kdlab.models.saving import save_student
from kdlab.models.teachers import quiet_transformers
from kdlab.structured.crf import crf_viterbi

try:  # transformers >= 5: init functions that skip weights already loaded from a checkpoint
    from transformers import initialization as _init
except ImportError:  # transformers 4: plain torch init (weights are loaded after init there)
    from torch.nn import init as _init

__all__ = [
    "WordParser",
    "WordParserConfig",
    "WordParserOutput",
    "WordTagger",
    "WordTaggerConfig",
    "WordTaggerOutput",
    "load_word_model",
    "save_word_model",
    "word_model_inputs",
]

ENCODERS = ("transformer", "bilstm")
TAGGER_HEADS = ("softmax", "crf")
_INPUT_KEYS = ("input_ids", "attention_mask", "word_starts", "word_mask")
# Keys of a BertConfig dict that describe where it came from rather than the network: dropped so that the stored
# encoder config is stable and rebuilds the same BertModel under any transformers version.
_UNSTORED_KEYS = ("transformers_version", "architectures", "model_type", "id2label", "label2id", "dtype", "torch_dtype")


# ---------------------------------------------------------------------------------------------- configurations


class _WordModelConfig(PretrainedConfig):
    """Encoder settings shared by the tagger and the parser.

    A classic ``__init__`` with a default for every argument (transformers instantiates the class without
    arguments to diff against when saving). ``hidden_size`` is the BiLSTM's size PER DIRECTION; a transformer's
    own sizes live in the ``transformer`` dict.
    """

    def __init__(
        self,
        encoder: str = "bilstm",
        transformer: dict[str, Any] | None = None,
        vocab_size: int = 30522,
        embedding_dim: int = 100,
        hidden_size: int = 200,
        num_layers: int = 1,
        dropout: float = 0.33,
        pad_token_id: int | None = 0,
        **kwargs: Any,
    ) -> None:
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {', '.join(ENCODERS)}, got {encoder!r}")
        if encoder == "transformer" and not transformer:
            raise ValueError("encoder 'transformer' needs the encoder's config dict in `transformer`")
        self.encoder = encoder
        self.transformer = dict(transformer) if transformer else None
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = dropout
        # pad_token_id is not a field of the base config in transformers 5, so it is set here explicitly.
        self.pad_token_id = pad_token_id
        super().__init__(**kwargs)


def _label_kwargs(count: int, id2label: Mapping[Any, str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with an explicit ``id2label``/``label2id``: transformers 5 derives ``num_labels`` from them."""
    if id2label is None:
        id2label = {i: f"LABEL_{i}" for i in range(count)}
    kwargs["id2label"] = {int(i): str(name) for i, name in id2label.items()}
    kwargs["label2id"] = {name: i for i, name in kwargs["id2label"].items()}
    return kwargs


class WordTaggerConfig(_WordModelConfig):
    """Configuration of :class:`WordTagger`: the encoder settings plus the head and its labels.

    ``field`` names the treebank column the labels come from (``upos`` or ``xpos``), so a saved tagger says which
    task it solves; ``id2label`` (when given) fixes the label count, otherwise ``num_labels`` generic labels.
    """

    model_type = "kdlab-word-tagger"

    def __init__(
        self,
        encoder: str = "bilstm",
        head: str = "softmax",
        num_labels: int = 2,
        id2label: Mapping[Any, str] | None = None,
        field: str = "upos",
        **kwargs: Any,
    ) -> None:
        if head not in TAGGER_HEADS:
            raise ValueError(f"head must be one of {', '.join(TAGGER_HEADS)}, got {head!r}")
        kwargs.pop("label2id", None)  # rebuilt from id2label, so the two never disagree
        self.head = head
        self.field = field
        super().__init__(encoder=encoder, **_label_kwargs(num_labels, id2label, kwargs))


class WordParserConfig(_WordModelConfig):
    """Configuration of :class:`WordParser`: the encoder settings plus the biaffine scorer sizes and relations.

    ``arc_dim`` / ``rel_dim`` are the sizes of the head/dependent MLP outputs fed to the arc and relation
    scorers (Dozat & Manning use 500 / 100 on a large BiLSTM; the smaller defaults suit small students).
    ``id2label`` holds the relation names; without it ``num_rels`` generic ones.
    """

    model_type = "kdlab-word-parser"

    def __init__(
        self,
        encoder: str = "bilstm",
        arc_dim: int = 256,
        rel_dim: int = 64,
        num_rels: int = 2,
        id2label: Mapping[Any, str] | None = None,
        field: str = "deps",
        **kwargs: Any,
    ) -> None:
        kwargs.pop("label2id", None)
        kwargs = _label_kwargs(num_rels, id2label, kwargs)
        self.arc_dim = arc_dim
        self.rel_dim = rel_dim
        self.num_rels = len(kwargs["id2label"])
        self.field = field
        super().__init__(encoder=encoder, **kwargs)


# ---------------------------------------------------------------------------------------------- outputs


@dataclass
class WordTaggerOutput(ModelOutput):
    """Tagger scores: ``logits`` [B, W, C] emissions; CRF potentials ``transitions`` [C, C] (``[from, to]``),
    ``start`` [C], ``end`` [C], all None for a softmax head. Padded words hold finite (meaningless) emissions."""

    logits: Tensor | None = None
    transitions: Tensor | None = None
    start: Tensor | None = None
    end: Tensor | None = None


@dataclass
class WordParserOutput(ModelOutput):
    """Parser scores over the nodes ``0..W`` (node 0 = ROOT): ``logits`` [B, W+1, W+1] arc scores
    ``[b, head, dep]`` and ``rel_logits`` [B, W+1, W+1, R] relation scores ``[b, head, dep, rel]``.
    Entries involving padded nodes are finite (meaningless); the diagonal is not masked either."""

    logits: Tensor | None = None
    rel_logits: Tensor | None = None


# ---------------------------------------------------------------------------------------------- building blocks


class _BiLSTMEncoder(nn.Module):
    """Embeddings -> dropout -> BiLSTM over the real tokens; token vectors [B, T, 2H].

    Packing by the attention-mask lengths makes the LSTM skip padding entirely, so a sentence gets the same
    vectors whatever it is batched with (TokenCollator pads on the right).
    """

    def __init__(self, config: _WordModelConfig) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.pad_token_id)
        self.dropout = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(
            input_size=config.embedding_dim,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            batch_first=True,
            bidirectional=True,
            # nn.LSTM only applies dropout between stacked layers (and warns when there is just one).
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        # An empty row would make pack_padded_sequence fail; it reads one (pad) token instead.
        lengths = attention_mask.sum(dim=1).clamp(min=1).cpu()
        embedded = self.dropout(self.embeddings(input_ids))
        packed = nn.utils.rnn.pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        hidden, _ = self.lstm(packed)
        hidden, _ = nn.utils.rnn.pad_packed_sequence(hidden, batch_first=True, total_length=input_ids.shape[1])
        return hidden


class Biaffine(nn.Module):
    """Biaffine scorer ``s[b, x, y, o] = [x_i; 1]^T W_o [y_j; 1]`` over all pairs of two vector sets.

    The appended 1s (``bias_x`` / ``bias_y``) give the linear and constant terms of Dozat & Manning's scorers:
    with ``bias_y`` only, ``s = x^T U y + x^T u`` (arc score = head-dep interaction + a prior on the head).
    """

    def __init__(self, in_dim: int, out_dim: int, bias_x: bool, bias_y: bool) -> None:
        super().__init__()
        self.bias_x, self.bias_y = bias_x, bias_y
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim + int(bias_x), in_dim + int(bias_y)))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """``x`` [B, X, D], ``y`` [B, Y, D] -> [B, X, Y, out_dim]."""
        if self.bias_x:
            x = torch.cat([x, torch.ones_like(x[..., :1])], dim=-1)
        if self.bias_y:
            y = torch.cat([y, torch.ones_like(y[..., :1])], dim=-1)
        return torch.einsum("bxi,oij,byj->bxyo", x, self.weight, y)


def _mlp(in_dim: int, out_dim: int, dropout: float) -> nn.Sequential:
    """The parser's one-layer MLP (Linear -> LeakyReLU -> dropout) that specialises vectors for one role."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.LeakyReLU(0.1), nn.Dropout(dropout))


def _bert_config(transformer: Mapping[str, Any]) -> BertConfig:
    """The BertConfig stored as a dict in a word model's config."""
    return BertConfig(**{k: v for k, v in transformer.items() if k not in _UNSTORED_KEYS})


def _stored_encoder_dict(config: BertConfig) -> dict[str, Any]:
    """A pretrained encoder's config as the dict a word model stores: network settings only, no private state."""
    return {k: v for k, v in config.to_dict().items() if not k.startswith("_") and k not in _UNSTORED_KEYS}


# ---------------------------------------------------------------------------------------------- models


class _WordModel(PreTrainedModel):
    """Encoder -> per-word vectors, shared by the tagger and the parser (subclasses add a head)."""

    config_class = _WordModelConfig
    base_model_prefix = "word_model"
    main_input_name = "input_ids"
    # The attention backends BERT supports, declared here so that ``from_pretrained(attn_implementation=...)`` is
    # accepted for the word model and handed on to its encoder (a BiLSTM has no attention and ignores it).
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def __init__(self, config: _WordModelConfig) -> None:
        super().__init__(config)
        if config.encoder == "transformer":
            bert_config = _bert_config(config.transformer)
            bert_config._attn_implementation = config._attn_implementation  # sdpa unless the caller chose one
            # No pooler: it is unused here, and unused parameters upset DDP and waste a save.
            self.encoder: nn.Module = BertModel(bert_config, add_pooling_layer=False)
            self.word_dim = int(config.transformer["hidden_size"])
        else:
            self.encoder = _BiLSTMEncoder(config)
            self.word_dim = 2 * config.hidden_size
        self.dropout = nn.Dropout(config.dropout)

    def head_parameter_names(self) -> list[str]:
        """Parameters of the task head (everything but the encoder): the trainer may give them ``train.head_lr``."""
        return [name for name, _ in self.named_parameters() if not name.startswith("encoder.")]

    def word_vectors(
        self, input_ids: Tensor, attention_mask: Tensor, word_starts: Tensor, token_type_ids: Tensor | None
    ) -> Tensor:
        """Per-word vectors [B, W, D]: the encoder's vector of each word's first token, after dropout."""
        if isinstance(self.encoder, BertModel):
            tokens = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
        else:
            tokens = self.encoder(input_ids, attention_mask)
        return self.dropout(gather_words(tokens, word_starts))

    def _init_weights(self, module: nn.Module) -> None:
        """Init of the non-BERT modules (a nested BertModel is initialised by its own ``_init_weights``)."""
        std = 0.02
        if isinstance(module, nn.Linear):
            _init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                _init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            _init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LSTM):
            for name, param in module.named_parameters():
                (_init.xavier_uniform_ if "weight" in name else _init.zeros_)(param)
        elif isinstance(module, Biaffine):
            _init.normal_(module.weight, mean=0.0, std=std)

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings() if isinstance(self.encoder, BertModel) else self.encoder.embeddings

    @classmethod
    def from_encoder(cls, path: str | Path, **config_kwargs: Any) -> Self:
        """A new word model whose ``transformer`` encoder starts from the pretrained BERT weights in ``path``.

        ``config_kwargs`` are the head's settings (e.g. ``head``, ``num_labels``, ``id2label``, ``field`` for the
        tagger); the encoder's config dict, vocabulary size and pad id come from ``path``. The heads are freshly
        initialised and the model is in training mode, like any newly built module.
        """
        with quiet_transformers():
            pretrained = BertModel.from_pretrained(str(path), add_pooling_layer=False)
        config = cls.config_class(
            encoder="transformer",
            transformer=_stored_encoder_dict(pretrained.config),
            vocab_size=pretrained.config.vocab_size,
            pad_token_id=pretrained.config.pad_token_id,
            **config_kwargs,
        )
        model = cls(config)
        model.encoder.load_state_dict(pretrained.state_dict())
        return model


class WordTagger(_WordModel):
    """Sequence tagger over words: encoder -> per-word vectors -> linear emissions (+ a linear-chain CRF).

    The CRF parameters are returned with the emissions rather than used inside ``forward``, so that losses (gold
    likelihood, structural KD) can combine them with a teacher's potentials however they need.
    """

    config_class = WordTaggerConfig

    def __init__(self, config: WordTaggerConfig) -> None:
        super().__init__(config)
        self.classifier = nn.Linear(self.word_dim, config.num_labels)
        if config.head == "crf":
            # Zero potentials: the CRF starts as the softmax tagger and learns label-pair preferences from data.
            self.transitions = nn.Parameter(torch.zeros(config.num_labels, config.num_labels))
            self.start = nn.Parameter(torch.zeros(config.num_labels))
            self.end = nn.Parameter(torch.zeros(config.num_labels))
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, WordTagger) and module.config.head == "crf":
            for param in (module.transitions, module.start, module.end):
                _init.zeros_(param)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        word_starts: Tensor,
        word_mask: Tensor,
        token_type_ids: Tensor | None = None,
    ) -> WordTaggerOutput:
        """Emissions [B, W, C] for every word (``word_mask`` is part of the contract; scores need no masking)."""
        logits = self.classifier(self.word_vectors(input_ids, attention_mask, word_starts, token_type_ids))
        if self.config.head == "softmax":
            return WordTaggerOutput(logits=logits)
        return WordTaggerOutput(logits=logits, transitions=self.transitions, start=self.start, end=self.end)

    @torch.no_grad()
    def decode(self, output: WordTaggerOutput, word_mask: Tensor) -> Tensor:
        """Best label per word [B, W] (argmax, or the Viterbi sequence for a CRF); IGNORE_LABEL on padding."""
        mask = word_mask.bool()
        if output.transitions is None or mask.shape[1] == 0:
            labels = output.logits.argmax(dim=-1)
        else:
            # crf_viterbi wants >= 1 real word per row; a wordless row decodes one dummy word, masked below.
            safe = mask.clone()
            safe[:, 0] = True
            labels, _ = crf_viterbi(output.logits, output.transitions, output.start, output.end, safe)
        return labels.masked_fill(~mask, IGNORE_LABEL)


class WordParser(_WordModel):
    """Graph-based dependency parser (Dozat & Manning, 2017) over words.

    Node 0 is ROOT: a learned vector prepended to the word vectors, so that attaching to ROOT is scored by the
    same biaffine function as attaching to a word. Arcs: ``s[h, d] = head_h^T U dep_d + head_h^T u`` on MLP
    outputs of size ``arc_dim``; relations: a bilinear score plus linear terms per relation on MLP outputs of
    size ``rel_dim``, for every (head, dependent) pair.
    """

    config_class = WordParserConfig

    def __init__(self, config: WordParserConfig) -> None:
        super().__init__(config)
        self.root = nn.Parameter(torch.zeros(self.word_dim))
        self.arc_head = _mlp(self.word_dim, config.arc_dim, config.dropout)
        self.arc_dep = _mlp(self.word_dim, config.arc_dim, config.dropout)
        self.rel_head = _mlp(self.word_dim, config.rel_dim, config.dropout)
        self.rel_dep = _mlp(self.word_dim, config.rel_dim, config.dropout)
        self.arc_scorer = Biaffine(config.arc_dim, 1, bias_x=False, bias_y=True)
        self.rel_scorer = Biaffine(config.rel_dim, config.num_rels, bias_x=True, bias_y=True)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, WordParser):
            _init.normal_(module.root, mean=0.0, std=0.02)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        word_starts: Tensor,
        word_mask: Tensor,
        token_type_ids: Tensor | None = None,
    ) -> WordParserOutput:
        """Arc scores [B, W+1, W+1] and relation scores [B, W+1, W+1, R] over ROOT + words, ``[b, head, dep]``."""
        words = self.word_vectors(input_ids, attention_mask, word_starts, token_type_ids)
        root = self.root.to(words.dtype).expand(words.shape[0], 1, -1)
        nodes = torch.cat([root, words], dim=1)  # node 0 = ROOT, node i = word i (1-based, as in CoNLL-U)
        arcs = self.arc_scorer(self.arc_head(nodes), self.arc_dep(nodes)).squeeze(-1)
        rels = self.rel_scorer(self.rel_head(nodes), self.rel_dep(nodes))
        return WordParserOutput(logits=arcs, rel_logits=rels)

    @torch.no_grad()
    def decode(self, output: WordParserOutput, word_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Heads and relations per word, both [B, W], IGNORE_LABEL on padding.

        Each dependent takes its best-scoring head among ROOT and the other real words (greedy head selection:
        the result need not be a tree); its relation is the best one at that head.
        """
        mask = word_mask.bool()
        batch, words = mask.shape
        nodes = torch.cat([mask.new_ones(batch, 1), mask], dim=1)  # [B, N]
        eye = torch.eye(words + 1, dtype=torch.bool, device=mask.device)
        allowed = nodes.unsqueeze(2) & ~eye  # [B, head, dep]: a real head other than the dependent itself
        scores = output.logits.masked_fill(~allowed, float("-inf"))
        heads = scores.argmax(dim=1)[:, 1:]  # [B, W]: ROOT is always allowed, so every real word has a head
        index = heads.view(batch, 1, words, 1).expand(-1, 1, -1, output.rel_logits.shape[-1])
        rels = output.rel_logits[:, :, 1:].gather(1, index).squeeze(1).argmax(dim=-1)
        return heads.masked_fill(~mask, IGNORE_LABEL), rels.masked_fill(~mask, IGNORE_LABEL)


# ---------------------------------------------------------------------------------------------- helpers


def word_model_inputs(batch: Mapping[str, Any], prefix: str = "") -> dict[str, Tensor]:
    """The inputs of one view of a word batch (``prefix`` = "" for the student, "teacher_" for the teacher view).

    Returns exactly ``input_ids``, ``attention_mask``, ``word_starts``, ``word_mask`` (and ``token_type_ids`` when
    the view has them) under the plain key names, so a model never sees labels or the other view.
    """
    missing = [prefix + key for key in _INPUT_KEYS if prefix + key not in batch]
    if missing:
        raise KeyError(f"the batch has no {', '.join(missing)}; it holds {', '.join(sorted(batch))}")
    inputs = {key: batch[prefix + key] for key in _INPUT_KEYS}
    if prefix + "token_type_ids" in batch:
        inputs["token_type_ids"] = batch[prefix + "token_type_ids"]
    return inputs


def save_word_model(model: _WordModel, tokenizer: Any, path: str | Path) -> Path:
    """Save a word model (safetensors) and its full tokenizer to ``path`` atomically.

    Same guarantees as :func:`kdlab.models.saving.save_student`: written to a temporary sibling folder, checked
    (safetensors present, tokenizer reloads and encodes a probe identically), then renamed onto ``path``.
    """
    return save_student(model, tokenizer, path)


def is_word_model(path: str | Path) -> bool:
    """Whether ``path`` holds a saved kdlab tagger or parser (read from its config.json, nothing loaded)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    return str(json.loads(config.read_text(encoding="utf-8")).get("model_type", "")).startswith("kdlab-word-")


def load_word_model(path: str | Path) -> tuple[_WordModel, Any]:
    """Load a folder written by :func:`save_word_model`: ``(model in eval mode, tokenizer)``.

    Goes through ``AutoConfig`` / ``AutoModel`` (registered at import), so the model type stored in config.json
    picks the class and no remote code is involved.
    """
    with quiet_transformers():
        config = AutoConfig.from_pretrained(str(path))
        if not isinstance(config, _WordModelConfig):
            raise ValueError(f"{path} holds a {config.model_type!r} model, not a kdlab word model")
        model = AutoModel.from_pretrained(str(path), config=config)
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    return model.eval(), tokenizer


def register_word_models() -> None:
    """Map the model types "kdlab-word-tagger" / "kdlab-word-parser" to their classes (idempotent)."""
    for config_class, model_class in ((WordTaggerConfig, WordTagger), (WordParserConfig, WordParser)):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model_class, exist_ok=True)


register_word_models()
