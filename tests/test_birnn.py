"""The QE BiRNN student (kdlab.models.birnn) and the students on a word vocabulary (kdlab.models.student_vocab)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import load_without_kdlab
from transformers import AutoModelForSequenceClassification

from kdlab.data import Collator, Example, encode, read_rows
from kdlab.models import (
    BiLSTMForSequenceClassification,
    BiRNNConfig,
    BiRNNForSequenceClassification,
    bilstm_for_vocab,
    birnn_for_vocab,
    build_word_tokenizer,
    parameter_count,
    save_student,
)

FIXTURES = Path(__file__).parent / "fixtures"
SMALL = {"embedding_dim": 12, "hidden_size": 10}


@pytest.fixture(scope="module")
def qe_examples() -> list[Example]:
    rows = read_rows(FIXTURES / "mlqe-pe" / "ro-en" / "train.tsv")
    return [Example(text=r["original"], text_pair=r["translation"], label=float(r["z_mean"])) for r in rows]


@pytest.fixture(scope="module")
def qe_tokenizer(qe_examples):
    return build_word_tokenizer([e.text for e in qe_examples], [e.text_pair for e in qe_examples])


@pytest.fixture(scope="module")
def qe_items(qe_examples, qe_tokenizer):
    return encode(qe_examples, qe_tokenizer, max_length=64)


@pytest.fixture(scope="module")
def qe_model(qe_tokenizer, qe_items):
    torch.manual_seed(0)
    return birnn_for_vocab(qe_tokenizer, qe_items, num_labels=1, problem_type="regression", **SMALL).eval()


def inputs_of(items) -> dict[str, torch.Tensor]:
    batch = Collator(pad_token_id=0, regression=True)(items)
    batch.pop("labels")
    return batch


def logits_of(model, batch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def side_ids(items, side: int) -> set[int]:
    return {i for item in items for i, t in zip(item["input_ids"], item["token_type_ids"], strict=True) if t == side}


def differs(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Relative difference: a fresh model's outputs are tiny (std-0.02 init), so absolute tolerances mislead."""
    return bool((a - b).abs().max() > 1e-3 * b.abs().max())


def side_vectors(model, item) -> tuple[torch.Tensor, torch.Tensor]:
    """The pooled (source, target) sentence vectors of one item, read with forward hooks."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        getattr(model, side).register_forward_hook(lambda _m, _i, out, side=side: seen.__setitem__(side, out))
        for side in ("source", "target")
    ]
    try:
        logits_of(model, inputs_of([item]))
    finally:
        for hook in hooks:
            hook.remove()
    return seen["source"], seen["target"]


def birnn_parameters(v_source: int, v_target: int, d: int, h: int, labels: int) -> int:
    """Embeddings V*d, BiGRU 2 directions * 3 gates * (h*d + h*h + 2h), projection 2h*2h + 2h, context 2h."""

    def per_side(v: int) -> int:
        return v * d + 2 * 3 * h * (d + h + 2) + (4 * h * h + 2 * h) + 2 * h

    sides = 2 if v_target else 1
    return per_side(v_source) + (per_side(v_target) if v_target else 0) + (sides * 2 * h) * labels + labels


def test_row_maps_hold_each_side_only(qe_model, qe_items):
    source, target = side_ids(qe_items, 0), side_ids(qe_items, 1)
    assert 1 not in source | target  # built from these very texts: no [UNK] in the items
    config = qe_model.config
    assert config.vocab_size == 561
    assert (config.source_vocab_size, config.target_vocab_size) == (2 + len(source), 2 + len(target))
    assert qe_model.source.embeddings.weight.shape == (2 + len(source), 12)
    assert qe_model.target.embeddings.weight.shape == (2 + len(target), 12)
    # seen ids get rows 2.. in increasing id order; padding 0; unknown and the other side's words 1
    assert qe_model.source_rows[sorted(source)].tolist() == list(range(2, 2 + len(source)))
    assert qe_model.target_rows[sorted(target)].tolist() == list(range(2, 2 + len(target)))
    assert qe_model.source_rows[0] == qe_model.target_rows[0] == 0
    assert qe_model.source_rows[1] == qe_model.target_rows[1] == 1
    target_only = sorted(target - source)
    assert target_only and set(qe_model.source_rows[target_only].tolist()) == {1}
    assert 2 in source & target  # [SEP] ends both sides and has a row on each
    assert torch.count_nonzero(qe_model.source.embeddings.weight[0]) == 0


def test_output_shapes(qe_model, qe_tokenizer, qe_items):
    batch = inputs_of(qe_items[:5])
    assert logits_of(qe_model, batch).shape == (5, 1)
    three = birnn_for_vocab(qe_tokenizer, qe_items, num_labels=3, problem_type=None, id2label={0: "a", 1: "b", 2: "c"})
    assert logits_of(three, batch).shape == (5, 3)
    assert three.config.id2label == {0: "a", 1: "b", 2: "c"}
    assert three.classifier.in_features == 2 * 2 * 50  # paper defaults: h = 50, two sides


def test_padding_invariance(qe_model, qe_items):
    items = qe_items[:6]
    reference = logits_of(qe_model, inputs_of(items))
    for row, item in enumerate(items):  # alone, without any padding
        alone = inputs_of([item])
        assert torch.allclose(logits_of(qe_model, alone)[0], reference[row], atol=1e-6)
    batch = inputs_of(items)
    extra = 7
    padded = {
        "input_ids": torch.cat([batch["input_ids"], torch.zeros(6, extra, dtype=torch.long)], dim=1),
        "attention_mask": torch.cat([batch["attention_mask"], torch.zeros(6, extra, dtype=torch.long)], dim=1),
        "token_type_ids": torch.cat([batch["token_type_ids"], torch.zeros(6, extra, dtype=torch.long)], dim=1),
    }
    assert torch.allclose(logits_of(qe_model, padded), reference, atol=1e-6)
    # a much longer batch mate changes nothing either
    longest = max(qe_items, key=lambda item: len(item["input_ids"]))
    mixed = logits_of(qe_model, inputs_of([*items, longest]))
    assert len(longest["input_ids"]) > batch["input_ids"].shape[1]
    assert torch.allclose(mixed[:6], reference, atol=1e-6)


def test_sides_are_separate(qe_model, qe_items):
    item = qe_items[1]
    reference = logits_of(qe_model, inputs_of([item]))
    first_target = item["token_type_ids"].index(1)
    source, target = side_ids(qe_items, 0), side_ids(qe_items, 1)
    target_only = sorted(target - source)

    # changing a target-side word changes the score; the new word is seen on both sides (it has a source row),
    # so a source encoder that wrongly read target tokens would change too
    shared = sorted((source & target) - {2, item["input_ids"][first_target]})
    other_target = dict(item, input_ids=list(item["input_ids"]))
    other_target["input_ids"][first_target] = shared[0]
    assert differs(logits_of(qe_model, inputs_of([other_target])), reference)

    # and only through the target encoder: each side's sentence vector depends on its own tokens alone
    other_source = dict(item, input_ids=[item["input_ids"][1], *item["input_ids"][1:]])
    base, new_target, new_source = (side_vectors(qe_model, x) for x in (item, other_target, other_source))
    assert torch.equal(new_target[0], base[0]) and differs(new_target[1], base[1])
    assert differs(new_source[0], base[0]) and torch.equal(new_source[1], base[1])

    # a word seen only on the target side reads the source table's unknown row: same as [UNK] on the source side
    with_target_word = dict(item, input_ids=[target_only[0], *item["input_ids"][1:]])
    with_unknown = dict(item, input_ids=[1, *item["input_ids"][1:]])
    as_target_word = logits_of(qe_model, inputs_of([with_target_word]))
    assert torch.equal(as_target_word, logits_of(qe_model, inputs_of([with_unknown])))
    assert differs(as_target_word, reference)

    # without token_type_ids every token is source (BERT's convention), which is a different input
    batch = inputs_of([item])
    zeros = dict(batch, token_type_ids=torch.zeros_like(batch["token_type_ids"]))
    no_types = {k: v for k, v in batch.items() if k != "token_type_ids"}
    assert torch.equal(logits_of(qe_model, no_types), logits_of(qe_model, zeros))
    assert differs(logits_of(qe_model, no_types), reference)


def test_single_text_mode():
    texts = [row["sentence"] for row in read_rows(FIXTURES / "sst2" / "train.tsv")]
    labels = [int(row["label"]) for row in read_rows(FIXTURES / "sst2" / "train.tsv")]
    tokenizer = build_word_tokenizer(texts)
    items = encode(
        [Example(text=t, text_pair=None, label=y) for t, y in zip(texts, labels, strict=True)], tokenizer, 32
    )
    torch.manual_seed(0)
    model = birnn_for_vocab(tokenizer, items, num_labels=2, problem_type="single_label_classification", **SMALL)
    assert model.config.target_vocab_size == 0 and model.target is None
    # rows: padding, unknown, then every id seen in the texts (all but [PAD], [UNK] and [MASK])
    assert model.config.source_vocab_size == len(tokenizer) - 3 + 2
    assert model.classifier.in_features == 2 * 10
    batch = Collator(pad_token_id=0)(items[:4])
    out = model(**batch)
    assert out.logits.shape == (4, 2)
    assert torch.allclose(out.loss, torch.nn.functional.cross_entropy(out.logits, batch["labels"]))
    assert parameter_count(model) == birnn_parameters(len(tokenizer) - 1, 0, 12, 10, 2)


def test_parameter_count_formula(qe_tokenizer, qe_items, minilm_path):
    config = BiRNNConfig(vocab_size=10, source_vocab_size=7, target_vocab_size=5, embedding_dim=4, hidden_size=3)
    small = BiRNNForSequenceClassification(config)
    # by hand: source 7*4 + 6*3*(4+3+2) + (36+6) + 6 = 238, target 5*4 + 162 + 42 + 6 = 230, output 12*1 + 1
    assert parameter_count(small) == birnn_parameters(7, 5, 4, 3, 1) == 238 + 230 + 13
    paper = birnn_for_vocab(qe_tokenizer, qe_items, num_labels=1, problem_type="regression")
    sizes = (paper.config.source_vocab_size, paper.config.target_vocab_size)
    assert parameter_count(paper) == birnn_parameters(*sizes, 50, 50, 1)
    assert parameter_count(paper) < 22_700_000 // 100  # all-MiniLM-L6-v2 has 22.7M


def test_config_checks():
    with pytest.raises(ValueError, match="source_vocab_size"):
        BiRNNForSequenceClassification(BiRNNConfig(vocab_size=5, source_vocab_size=1))
    with pytest.raises(ValueError, match="target_vocab_size"):
        BiRNNForSequenceClassification(BiRNNConfig(vocab_size=5, source_vocab_size=5, target_vocab_size=1))
    model = BiRNNForSequenceClassification(BiRNNConfig(vocab_size=6, source_vocab_size=4, target_vocab_size=0))
    assert model.source_rows.tolist() == [0, 1, 2, 3, 1, 1]  # placeholder map: ids past the table are unknown


def test_loss_rules(qe_tokenizer, qe_items):
    batch = inputs_of(qe_items[:4])
    torch.manual_seed(0)
    regression = birnn_for_vocab(qe_tokenizer, qe_items, num_labels=1, problem_type=None, **SMALL).eval()
    targets = torch.tensor([0.5, -1.0, 0.0, 2.0])
    out = regression(**batch, labels=targets)
    assert torch.allclose(out.loss, torch.nn.functional.mse_loss(out.logits.squeeze(-1), targets))
    classes = birnn_for_vocab(qe_tokenizer, qe_items, num_labels=3, problem_type=None, **SMALL).eval()
    ids = torch.tensor([0, 2, 1, 2])
    out = classes(**batch, labels=ids)
    assert torch.allclose(out.loss, torch.nn.functional.cross_entropy(out.logits, ids))
    multi = torch.tensor([[1.0, 0.0, 1.0]] * 4)
    out = classes(**batch, labels=multi)
    assert torch.allclose(out.loss, torch.nn.functional.binary_cross_entropy_with_logits(out.logits, multi))
    loss, logits = classes(**batch, labels=ids, return_dict=False)
    assert logits.shape == (4, 3) and loss.ndim == 0
    with pytest.raises(ValueError, match="input_ids"):
        classes(attention_mask=batch["attention_mask"])


def test_bilstm_for_vocab(qe_tokenizer, qe_items):
    model = bilstm_for_vocab(qe_tokenizer, num_labels=1, problem_type="regression", embedding_dim=8, hidden_size=6)
    assert isinstance(model, BiLSTMForSequenceClassification)
    assert model.embeddings.weight.shape == (len(qe_tokenizer), 8)
    assert model.config.pad_token_id == qe_tokenizer.pad_token_id == 0
    assert logits_of(model, inputs_of(qe_items[:3])).shape == (3, 1)


def test_save_and_load_with_plain_transformers(qe_model, qe_tokenizer, qe_examples, tmp_path):
    target = tmp_path / "birnn"
    save_student(qe_model, qe_tokenizer, target)
    config = json.loads((target / "config.json").read_text())
    assert config["model_type"] == "kdlab-birnn"
    assert config["auto_map"]["AutoModelForSequenceClassification"] == "birnn.BiRNNForSequenceClassification"
    assert (target / "birnn.py").is_file() and (target / "tokenizer.json").is_file()

    texts, pairs = [e.text for e in qe_examples[:4]], [e.text_pair for e in qe_examples[:4]]
    batch = dict(qe_tokenizer(texts, pairs, padding=True, return_tensors="pt"))
    expected = logits_of(qe_model, batch)

    # inside kdlab the class is registered: no remote code needed; the row maps come back with the weights
    loaded = AutoModelForSequenceClassification.from_pretrained(target)
    assert isinstance(loaded, BiRNNForSequenceClassification)
    assert torch.equal(loaded.source_rows, qe_model.source_rows)
    assert torch.equal(loaded.target_rows, qe_model.target_rows)
    assert torch.allclose(logits_of(loaded, batch), expected, atol=1e-6)

    # a fresh process that never imports kdlab loads model and tokenizer with plain transformers
    result = load_without_kdlab(target, tmp_path, f"{texts!r}, {pairs!r}, padding=True")
    assert result["kdlab"] is False
    assert result["class"] == "BiRNNForSequenceClassification"
    assert result["vocab"] == len(qe_tokenizer)
    assert torch.allclose(torch.tensor(result["logits"]), expected, atol=1e-5)


def test_a_few_steps_reduce_the_error(qe_tokenizer, qe_items):
    torch.manual_seed(0)
    model = birnn_for_vocab(qe_tokenizer, qe_items, num_labels=1, problem_type="regression", **SMALL)
    batch = Collator(pad_token_id=0, regression=True)(qe_items)
    assert len(qe_items) == 30
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    def error() -> float:
        model.eval()
        with torch.no_grad():
            return float(model(**batch).loss)

    before = error()
    model.train()
    for _ in range(15):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    after = error()
    assert after < 0.5 * before
    assert torch.count_nonzero(model.source.embeddings.weight[0]) == 0  # padding row never trained
