"""The word-level models (kdlab.models.words): shapes, padding invariance, decoding, saving and registration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoConfig, AutoModel, BertModel

from kdlab.data.conllu import Sentence, label_inventory, read_conllu
from kdlab.data.encoding import IGNORE_LABEL
from kdlab.data.tokens import TokenCollator, encode_words, encode_words_two_views
from kdlab.models.vocab import build_word_tokenizer
from kdlab.models.words import (
    WordParser,
    WordParserConfig,
    WordParserOutput,
    WordTagger,
    WordTaggerConfig,
    WordTaggerOutput,
    load_word_model,
    register_word_models,
    save_word_model,
    word_model_inputs,
)
from kdlab.structured.crf import crf_viterbi

TREEBANK = Path(__file__).parent / "fixtures" / "ud-ewt" / "train.conllu"
FIELDS = ("upos", "xpos", "deprels", "heads")
BILSTM = {"encoder": "bilstm", "embedding_dim": 8, "hidden_size": 6}
TINY_BERT = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
PARSER_SIZES = {"arc_dim": 7, "rel_dim": 5}


@pytest.fixture(scope="module")
def sentences() -> list[Sentence]:
    return read_conllu(TREEBANK)[:6]


@pytest.fixture(scope="module")
def label_ids() -> dict[str, dict[str, int]]:
    """Label maps from the whole fixture treebank (so every sentence's labels are known)."""
    everything = read_conllu(TREEBANK)
    return {field: {name: i for i, name in enumerate(label_inventory(everything, field))} for field in FIELDS[:3]}


@pytest.fixture(scope="module")
def word_tokenizer(sentences: list[Sentence]) -> Any:
    # Only the first sentences' words: the rest of the treebank exercises [UNK].
    return build_word_tokenizer([" ".join(s.words) for s in sentences[:4]])


def _batch(sentences: list[Sentence], tokenizer: Any, label_ids: dict[str, dict[str, int]]) -> dict[str, Any]:
    items = encode_words(sentences, tokenizer, max_length=64, fields=FIELDS, label_ids=label_ids)
    return TokenCollator(tokenizer.pad_token_id, fields=FIELDS)(items)


@pytest.fixture(scope="module")
def word_batch(sentences, word_tokenizer, label_ids) -> dict[str, Any]:
    return _batch(sentences, word_tokenizer, label_ids)


@pytest.fixture(scope="module")
def subword_batch(sentences, minilm_tokenizer, label_ids) -> dict[str, Any]:
    return _batch(sentences[:3], minilm_tokenizer, label_ids)


def _encoder_kwargs(encoder: str, tokenizer: Any) -> dict[str, Any]:
    if encoder == "bilstm":
        return {**BILSTM, "vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id}
    transformer = {**TINY_BERT, "vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id}
    return {"encoder": "transformer", "transformer": transformer, "vocab_size": len(tokenizer)}


def _shake(model: torch.nn.Module) -> torch.nn.Module:
    """Give the heads (not the encoder) large random weights, so that scores differ clearly between words/labels."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not name.startswith("encoder."):
                param.normal_(0.0, 0.5)
    return model.eval()


def _tagger(encoder: str, head: str, tokenizer: Any, label_ids) -> WordTagger:
    torch.manual_seed(0)
    names = {i: name for name, i in label_ids["upos"].items()}
    config = WordTaggerConfig(head=head, id2label=names, field="upos", **_encoder_kwargs(encoder, tokenizer))
    return _shake(WordTagger(config))


def _parser(encoder: str, tokenizer: Any, label_ids) -> WordParser:
    torch.manual_seed(0)
    names = {i: name for name, i in label_ids["deprels"].items()}
    config = WordParserConfig(id2label=names, **PARSER_SIZES, **_encoder_kwargs(encoder, tokenizer))
    return _shake(WordParser(config))


@pytest.fixture(params=["bilstm", "transformer"])
def setup(request, word_batch, subword_batch, word_tokenizer, minilm_tokenizer):
    """(encoder, tokenizer, batch) for each encoder: the BiLSTM reads word ids, the transformer MiniLM subwords."""
    if request.param == "bilstm":
        return "bilstm", word_tokenizer, word_batch
    return "transformer", minilm_tokenizer, subword_batch


# ---------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("head", ["softmax", "crf"])
def test_tagger_output_shapes(setup, head, label_ids) -> None:
    encoder, tokenizer, batch = setup
    model = _tagger(encoder, head, tokenizer, label_ids)
    with torch.no_grad():
        out = model(**word_model_inputs(batch))
    size, words = batch["word_mask"].shape
    classes = len(label_ids["upos"])
    assert isinstance(out, WordTaggerOutput)
    assert out.logits.shape == (size, words, classes)
    assert torch.isfinite(out.logits).all()
    if head == "softmax":
        assert out.transitions is None and out.start is None and out.end is None
    else:
        assert out.transitions.shape == (classes, classes)
        assert out.start.shape == out.end.shape == (classes,)


def test_crf_parameters_start_at_zero(word_tokenizer, label_ids) -> None:
    config = WordTaggerConfig(head="crf", num_labels=4, **_encoder_kwargs("bilstm", word_tokenizer))
    model = WordTagger(config)
    for param in (model.transitions, model.start, model.end):
        assert isinstance(param, torch.nn.Parameter) and not param.detach().any()


def test_parser_output_shapes(setup, label_ids) -> None:
    encoder, tokenizer, batch = setup
    model = _parser(encoder, tokenizer, label_ids)
    with torch.no_grad():
        out = model(**word_model_inputs(batch))
    size, words = batch["word_mask"].shape
    assert isinstance(out, WordParserOutput)
    assert out.logits.shape == (size, words + 1, words + 1)
    assert out.rel_logits.shape == (size, words + 1, words + 1, len(label_ids["deprels"]))
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.rel_logits).all()


def test_parser_trains_end_to_end(word_batch, word_tokenizer, label_ids) -> None:
    """Gradients reach the encoder, the ROOT vector and both scorers."""
    model = _parser("bilstm", word_tokenizer, label_ids).train()
    out = model(**word_model_inputs(word_batch))
    (out.logits.logsumexp(1).sum() + out.rel_logits.logsumexp(-1).sum()).backward()
    for param in (model.root, model.arc_scorer.weight, model.rel_scorer.weight, model.encoder.embeddings.weight):
        assert param.grad is not None and param.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------- padding


@pytest.mark.parametrize("task", ["tagger", "parser"])
def test_padding_does_not_change_real_words(setup, task, sentences, label_ids) -> None:
    """Each sentence scores the same alone as inside a padded batch (eval mode)."""
    encoder, tokenizer, batch = setup
    if task == "tagger":
        model = _tagger(encoder, "crf", tokenizer, label_ids)
    else:
        model = _parser(encoder, tokenizer, label_ids)
    lengths = batch["word_mask"].sum(1).tolist()
    assert len(set(lengths)) > 1, "the batch must pad some sentences"
    with torch.no_grad():
        together = model(**word_model_inputs(batch)).logits
        for row, n in enumerate(lengths):
            alone = model(**word_model_inputs(_batch([sentences[row]], tokenizer, label_ids))).logits[0]
            if task == "tagger":
                torch.testing.assert_close(together[row, :n], alone, atol=1e-5, rtol=1e-4)
            else:
                torch.testing.assert_close(together[row, : n + 1, : n + 1], alone, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------------- decoding


def test_softmax_decode_is_argmax_with_ignore_on_padding(word_batch, word_tokenizer, label_ids) -> None:
    model = _tagger("bilstm", "softmax", word_tokenizer, label_ids)
    mask = word_batch["word_mask"]
    with torch.no_grad():
        out = model(**word_model_inputs(word_batch))
    labels = model.decode(out, mask)
    assert labels.dtype == torch.long and labels.shape == mask.shape
    assert torch.equal(labels[mask], out.logits.argmax(-1)[mask])
    assert (labels[~mask] == IGNORE_LABEL).all()


def test_crf_decode_equals_viterbi(word_batch, word_tokenizer, label_ids) -> None:
    model = _tagger("bilstm", "crf", word_tokenizer, label_ids)
    mask = word_batch["word_mask"]
    with torch.no_grad():
        out = model(**word_model_inputs(word_batch))
    labels = model.decode(out, mask)
    best, _ = crf_viterbi(out.logits, out.transitions, out.start, out.end, mask)
    assert torch.equal(labels[mask], best[mask])
    assert (labels[~mask] == IGNORE_LABEL).all()
    # The random transitions matter: Viterbi differs from the per-word argmax somewhere.
    assert not torch.equal(labels[mask], out.logits.argmax(-1)[mask])


def test_crf_decode_survives_a_wordless_row(word_tokenizer) -> None:
    model = _tagger("bilstm", "crf", word_tokenizer, {"upos": {"A": 0, "B": 1, "C": 2}})
    potentials = {"transitions": torch.randn(3, 3), "start": torch.zeros(3), "end": torch.zeros(3)}
    out = WordTaggerOutput(logits=torch.randn(2, 3, 3), **potentials)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    labels = model.decode(out, mask)
    assert (labels[1] == IGNORE_LABEL).all() and labels[0, 2] == IGNORE_LABEL and (labels[0, :2] >= 0).all()


def test_parser_decode_never_picks_itself_or_padding(word_tokenizer, label_ids) -> None:
    model = _parser("bilstm", word_tokenizer, label_ids)
    torch.manual_seed(1)
    size, words, rels = 3, 5, 4
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2, [True] + [False] * 4])
    arcs = torch.randn(size, words + 1, words + 1)
    arcs += 1e6 * torch.eye(words + 1)  # self-loops score best...
    arcs[:, 4:, :] += 2e6  # ...and so do padded heads (of rows 1 and 2), yet none may be chosen
    out = WordParserOutput(logits=arcs, rel_logits=torch.randn(size, words + 1, words + 1, rels))
    heads, labels = model.decode(out, mask)
    assert heads.shape == labels.shape == mask.shape
    assert (heads[~mask] == IGNORE_LABEL).all() and (labels[~mask] == IGNORE_LABEL).all()
    for b in range(size):
        n = int(mask[b].sum())
        for d in range(1, n + 1):
            head = int(heads[b, d - 1])
            allowed = [h for h in range(n + 1) if h != d]
            assert head == max(allowed, key=lambda h: float(arcs[b, h, d]))
            assert labels[b, d - 1] == out.rel_logits[b, head, d].argmax()


def test_parser_decode_on_a_real_batch(word_batch, word_tokenizer, label_ids) -> None:
    model = _parser("bilstm", word_tokenizer, label_ids)
    mask = word_batch["word_mask"]
    with torch.no_grad():
        heads, rels = model.decode(model(**word_model_inputs(word_batch)), mask)
    lengths = mask.sum(1, keepdim=True)
    positions = torch.arange(1, mask.shape[1] + 1).expand_as(mask)
    assert ((heads[mask] >= 0) & (heads <= lengths)[mask] & (heads != positions)[mask]).all()
    assert ((rels[mask] >= 0) & (rels[mask] < len(label_ids["deprels"]))).all()


# ---------------------------------------------------------------------------------------------- inputs


def test_word_model_inputs_takes_one_view(sentences, word_tokenizer, minilm_tokenizer, label_ids) -> None:
    items = encode_words_two_views(sentences[:2], word_tokenizer, minilm_tokenizer, 64, ("upos",), label_ids)
    batch = TokenCollator(word_tokenizer.pad_token_id, ("upos",), minilm_tokenizer.pad_token_id)(items)
    own, teacher = word_model_inputs(batch), word_model_inputs(batch, prefix="teacher_")
    expected = {"input_ids", "attention_mask", "word_starts", "word_mask", "token_type_ids"}
    assert set(own) == set(teacher) == expected
    for key in expected:
        assert own[key] is batch[key] and teacher[key] is batch[f"teacher_{key}"]
    del batch["token_type_ids"]
    assert "token_type_ids" not in word_model_inputs(batch)
    with pytest.raises(KeyError, match="teacher_word_starts"):
        word_model_inputs({"input_ids": 0}, prefix="teacher_")


# ---------------------------------------------------------------------------------------------- saving


def _same_outputs(model, reloaded, batch) -> None:
    with torch.no_grad():
        before, after = model(**word_model_inputs(batch)), reloaded(**word_model_inputs(batch))
    for key in before:
        assert torch.equal(before[key], after[key]), key


def test_save_and_load_bilstm_round_trip(tmp_path: Path, word_batch, word_tokenizer, sentences, label_ids) -> None:
    for model in (_tagger("bilstm", "crf", word_tokenizer, label_ids), _parser("bilstm", word_tokenizer, label_ids)):
        folder = save_word_model(model, word_tokenizer, tmp_path / type(model).__name__)
        assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folders left behind"
        reloaded, tokenizer = load_word_model(folder)
        assert type(reloaded) is type(model) and not reloaded.training
        settings = [{k: v for k, v in m.config.to_dict().items() if k != "_name_or_path"} for m in (model, reloaded)]
        assert settings[0] == settings[1]
        _same_outputs(model, reloaded, word_batch)
        words = [*sentences[0].words, "zyzzyva"]
        assert (
            tokenizer(words, is_split_into_words=True)["input_ids"]
            == word_tokenizer(words, is_split_into_words=True)["input_ids"]
        )


def test_save_and_load_transformer_round_trip(tmp_path: Path, subword_batch, minilm_tokenizer, label_ids) -> None:
    model = _tagger("transformer", "softmax", minilm_tokenizer, label_ids)
    folder = save_word_model(model, minilm_tokenizer, tmp_path / "tagger")
    reloaded, tokenizer = load_word_model(folder)
    assert isinstance(reloaded, WordTagger) and isinstance(reloaded.encoder, BertModel)
    assert reloaded.config.field == "upos" and reloaded.config.id2label == model.config.id2label
    _same_outputs(model, reloaded, subword_batch)
    ids = tokenizer(["distillation"], is_split_into_words=True, add_special_tokens=False)["input_ids"]
    assert ids == minilm_tokenizer(["distillation"], is_split_into_words=True, add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    # The default attention is not eager; an explicit choice reaches the encoder and scores the same.
    assert reloaded.encoder.config._attn_implementation == "sdpa"
    eager = AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    assert eager.encoder.config._attn_implementation == "eager"
    with torch.no_grad():
        expected = model(**word_model_inputs(subword_batch)).logits
        torch.testing.assert_close(eager(**word_model_inputs(subword_batch)).logits, expected, atol=1e-5, rtol=1e-4)


def test_save_replaces_an_existing_folder(tmp_path: Path, word_tokenizer, label_ids) -> None:
    folder = tmp_path / "model"
    save_word_model(_tagger("bilstm", "softmax", word_tokenizer, label_ids), word_tokenizer, folder)
    save_word_model(_parser("bilstm", word_tokenizer, label_ids), word_tokenizer, folder)
    assert isinstance(load_word_model(folder)[0], WordParser)


# ---------------------------------------------------------------------------------------------- registration


def test_auto_classes_know_the_word_models(tmp_path: Path, word_tokenizer, label_ids) -> None:
    register_word_models()  # idempotent: a second registration (e.g. a re-import) is fine
    tagger_config = AutoConfig.for_model("kdlab-word-tagger", head="crf", num_labels=3)
    assert isinstance(tagger_config, WordTaggerConfig) and tagger_config.num_labels == 3
    assert isinstance(AutoConfig.for_model("kdlab-word-parser", num_rels=5), WordParserConfig)
    model = _parser("bilstm", word_tokenizer, label_ids)
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(loaded, WordParser) and loaded.config.num_rels == len(label_ids["deprels"])
    assert torch.equal(loaded.root, model.root)


def test_config_rejects_unknown_choices() -> None:
    with pytest.raises(ValueError, match="encoder"):
        WordTaggerConfig(encoder="cnn")
    with pytest.raises(ValueError, match="head"):
        WordTaggerConfig(head="mlp")
    with pytest.raises(ValueError, match="transformer"):
        WordParserConfig(encoder="transformer")


# ---------------------------------------------------------------------------------------------- pretrained encoder


def test_from_encoder_loads_the_pretrained_weights(minilm_path: Path, subword_batch, label_ids) -> None:
    names = {i: name for name, i in label_ids["upos"].items()}
    model = WordTagger.from_encoder(minilm_path, head="crf", id2label=names, field="upos").eval()
    reference = BertModel.from_pretrained(minilm_path, add_pooling_layer=False)
    for name in ("embeddings.word_embeddings.weight", "encoder.layer.5.output.dense.weight"):
        assert torch.equal(model.encoder.get_parameter(name), reference.get_parameter(name)), name
    assert model.config.transformer["hidden_size"] == 384 and model.config.head == "crf"
    assert model.encoder.config._attn_implementation != "eager"  # the default (sdpa) path works
    with torch.no_grad():
        out = model(**word_model_inputs(subword_batch))
    assert out.logits.shape == (*subword_batch["word_mask"].shape, len(names))
    parser = WordParser.from_encoder(minilm_path, num_rels=3)
    assert torch.equal(parser.encoder.embeddings.word_embeddings.weight, reference.embeddings.word_embeddings.weight)
    assert parser.config.encoder == "transformer" and parser.config.num_rels == 3
