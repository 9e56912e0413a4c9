"""The word-level tokenizer built from training text (kdlab.models.vocab)."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from kdlab.data import Example, encode, read_rows
from kdlab.models import build_word_tokenizer, check_tokenizer_round_trip

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def qe_rows() -> list[dict[str, str]]:
    return read_rows(FIXTURES / "mlqe-pe" / "ro-en" / "train.tsv")


@pytest.fixture(scope="module")
def sst2_texts() -> list[str]:
    return [row["sentence"] for row in read_rows(FIXTURES / "sst2" / "train.tsv")]


@pytest.fixture(scope="module")
def qe_tokenizer(qe_rows):
    return build_word_tokenizer([r["original"] for r in qe_rows], [r["translation"] for r in qe_rows])


def words(tokenizer) -> list[str]:
    """The vocabulary in id order."""
    vocab = tokenizer.get_vocab()
    return sorted(vocab, key=vocab.__getitem__)


def test_special_ids_are_fixed(sst2_texts):
    tokenizer = build_word_tokenizer(sst2_texts)
    assert words(tokenizer)[:4] == ["[PAD]", "[UNK]", "[SEP]", "[MASK]"]
    assert (tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.sep_token_id) == (0, 1, 2)
    assert tokenizer.mask_token_id == 3
    extra = build_word_tokenizer(sst2_texts, extra_specials=("[MASK]", "[CLS]", "[MASK]"))
    assert words(extra)[:5] == ["[PAD]", "[UNK]", "[SEP]", "[MASK]", "[CLS]"]
    assert len(extra) == len(tokenizer) + 1  # the duplicate [MASK] is added once
    plain = build_word_tokenizer(sst2_texts, extra_specials=())
    assert plain.mask_token is None
    assert words(plain)[:3] == ["[PAD]", "[UNK]", "[SEP]"] and words(plain)[3:] == words(tokenizer)[4:]


def test_min_freq_max_size_and_ties():
    texts = ["b a c", "a b", "a d", "e"]  # a: 3, b: 2, c/d/e: 1
    assert words(build_word_tokenizer(texts, extra_specials=()))[3:] == ["a", "b", "c", "d", "e"]
    assert words(build_word_tokenizer(texts, extra_specials=(), max_size=3))[3:] == ["a", "b", "c"]
    assert words(build_word_tokenizer(texts, extra_specials=(), min_freq=2))[3:] == ["a", "b"]
    assert words(build_word_tokenizer(texts, extra_specials=(), min_freq=4)) == ["[PAD]", "[UNK]", "[SEP]"]
    # The order of the texts does not matter, even where max_size cuts through a tie.
    assert words(build_word_tokenizer(texts[::-1], extra_specials=(), max_size=3))[3:] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="max_size"):
        build_word_tokenizer(texts, max_size=0)
    with pytest.raises(ValueError, match="min_freq"):
        build_word_tokenizer(texts, min_freq=0)


def test_real_text_vocabulary_is_deterministic(sst2_texts):
    forward = build_word_tokenizer(sst2_texts, max_size=50)
    backward = build_word_tokenizer(sst2_texts[::-1], max_size=50)
    assert forward.get_vocab() == backward.get_vocab()
    assert len(forward) == 4 + 50
    assert len(build_word_tokenizer(sst2_texts, max_size=50, min_freq=3)) < len(forward)
    # Punctuation is split off words, as BERT's pre-tokenizer does.
    assert {",", "the", "movie"} <= set(forward.get_vocab())


def test_sides_are_counted_separately():
    # max_size applies per side: the second side's top word survives next to the first side's.
    tokenizer = build_word_tokenizer(["x x y", "x"], ["z z x", "w"], max_size=1, extra_specials=())
    assert words(tokenizer)[3:] == ["x", "z"]
    # A second-side word already in the first side is not added twice; first-side words come first.
    tokenizer = build_word_tokenizer(["b a"], ["a c"], extra_specials=())
    assert words(tokenizer)[3:] == ["a", "b", "c"]


def test_lowercase_on_and_off():
    texts = ["Film film FILM", "ﬁlm"]  # the last one is written with the "fi" ligature: NFKC makes it "film"
    lower = build_word_tokenizer(texts)
    assert words(lower)[4:] == ["film"]
    film = lower.convert_tokens_to_ids("film")
    assert lower("FiLm ﬁlm")["input_ids"] == [film, film, 2]
    cased = build_word_tokenizer(texts, lowercase=False)
    assert words(cased)[4:] == ["film", "FILM", "Film"]  # film occurs twice (one via NFKC), the others once
    assert cased("Film FiLm")["input_ids"] == [cased.convert_tokens_to_ids("Film"), 1, 2]


def test_unseen_words_are_unknown(sst2_texts):
    tokenizer = build_word_tokenizer(sst2_texts)
    encoded = tokenizer("the zyzzyva film")
    assert encoded["input_ids"] == [
        tokenizer.convert_tokens_to_ids("the"),
        1,
        tokenizer.convert_tokens_to_ids("film"),
        2,
    ]
    assert encoded["token_type_ids"] == [0, 0, 0, 0]


def test_mask_survives_lowercase():
    tokenizer = build_word_tokenizer(["The [MASK] was great", "a [MASK] b"])
    assert "mask" not in tokenizer.get_vocab() and "[" not in tokenizer.get_vocab()  # not counted as words
    ids = tokenizer("The [MASK] was GREAT")["input_ids"]
    assert ids == [tokenizer.convert_tokens_to_ids(w) for w in ("the", "[MASK]", "was", "great", "[SEP]")]
    assert ids[1] == tokenizer.mask_token_id == 3
    assert 3 not in tokenizer("the [mask] was great")["input_ids"]  # only the exact special string


def test_pair_token_types_and_both_seps(qe_tokenizer):
    encoded = qe_tokenizer(["Guvernul numește un prefect."], ["The Government appoints a prefect."])
    ids, types = encoded["input_ids"][0], encoded["token_type_ids"][0]
    # guvernul numește un prefect . [SEP] | the government appoints a prefect . [SEP]
    assert types == [0] * 6 + [1] * 7
    assert [i for i, token in enumerate(ids) if token == 2] == [5, 12]
    assert 1 not in ids  # every word occurs in the fixture
    # Even empty texts keep one [SEP] per side, so no side is ever empty.
    empty = qe_tokenizer([""], [""])
    assert (empty["input_ids"], empty["token_type_ids"]) == ([[2, 2]], [[0, 1]])


def test_longest_first_truncation_through_encode(qe_rows, qe_tokenizer):
    examples = [Example(text=r["original"], text_pair=r["translation"], label=float(r["z_mean"])) for r in qe_rows]
    full = encode(examples, qe_tokenizer, max_length=512)
    cut = encode(examples, qe_tokenizer, max_length=12)
    assert [item["label"] for item in cut] == [e.label for e in examples]
    for whole, item in zip(full, cut, strict=True):
        ids, types = item["input_ids"], item["token_type_ids"]
        assert len(ids) == min(12, len(whole["input_ids"]))
        first, second = types.count(0), types.count(1)
        assert types == [0] * first + [1] * second
        assert ids[first - 1] == ids[-1] == 2 and ids.count(2) == 2  # both [SEP]s survive
        whole_first = whole["token_type_ids"].count(0)
        # Each side keeps a prefix of its words; longest_first trims the longer side until they fit.
        assert ids[: first - 1] == whole["input_ids"][: first - 1]
        assert ids[first:-1] == whole["input_ids"][whole_first : whole_first + second - 1]
        if whole_first - 1 >= 5 and len(whole["input_ids"]) - whole_first - 1 >= 5:
            assert (first, second) == (6, 6)  # 10 word slots shared evenly


def test_single_texts_through_encode(sst2_texts):
    tokenizer = build_word_tokenizer(sst2_texts)
    items = encode([Example(text=t, text_pair=None, label=0) for t in sst2_texts], tokenizer, max_length=8)
    assert all(item["input_ids"][-1] == 2 and len(item["input_ids"]) <= 8 for item in items)
    assert all(set(item["token_type_ids"]) == {0} for item in items)
    assert all(1 not in item["input_ids"] for item in items)  # built from these very texts


def test_save_and_reload_with_plain_transformers(qe_rows, qe_tokenizer, tmp_path):
    qe_tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    check_tokenizer_round_trip(qe_tokenizer, tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert len(reloaded) == len(qe_tokenizer)
    assert reloaded.get_vocab() == qe_tokenizer.get_vocab()
    assert (reloaded.pad_token_id, reloaded.unk_token_id, reloaded.sep_token_id, reloaded.mask_token_id) == (0, 1, 2, 3)
    texts, pairs = [r["original"] for r in qe_rows], [r["translation"] for r in qe_rows]
    texts[0] = "A [MASK] in an UNSEEN zyzzyva sentence"
    before = qe_tokenizer(texts, pairs, truncation=True, max_length=20)
    after = reloaded(texts, pairs, truncation=True, max_length=20)
    assert after["input_ids"] == before["input_ids"]
    assert after["token_type_ids"] == before["token_type_ids"]
    assert after["input_ids"][0][1] == 3
