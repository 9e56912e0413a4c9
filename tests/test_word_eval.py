"""Word metrics by hand, and the evaluator with fake models that read their answers from the token ids."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdlab.data.encoding import IGNORE_LABEL
from kdlab.data.tokens import TokenCollator, gather_words
from kdlab.methods.word_eval import evaluate_words, word_metrics

UPOS = ("NOUN", "PUNCT", "SYM", "VERB")


def test_tagging_accuracy_by_hand() -> None:
    got = word_metrics("tagging", [[1, 2, 3], [0, 0]], [[1, 2, 0], [0, IGNORE_LABEL]])
    assert got == {"accuracy": 0.75}
    assert word_metrics("tagging", [[1]], [[IGNORE_LABEL]]) == {"accuracy": 0.0}  # no gold word
    with pytest.raises(ValueError, match="sentence 0"):
        word_metrics("tagging", [[1, 2]], [[1]])


def test_attachment_scores_with_and_without_punctuation() -> None:
    predictions = [([2, 0, 1, 2], [1, 1, 3, 4]), ([1, 1], [0, 0])]
    gold = [([2, 0, 2, 2], [1, 0, 3, 4]), ([IGNORE_LABEL, 0], [IGNORE_LABEL, 0])]
    upos = [["NOUN", "VERB", "NOUN", "PUNCT"], ["PUNCT", "SYM"]]
    got = word_metrics("parsing", predictions, gold, upos)
    # with punctuation: 5 gold words; heads right for 3, heads and relations for 2
    assert got["uas_punct"] == pytest.approx(3 / 5)
    assert got["las_punct"] == pytest.approx(2 / 5)
    # without: the PUNCT word of sentence 0 leaves (SYM stays); 4 words, 2 heads right, 1 both
    assert got["uas"] == pytest.approx(2 / 4)
    assert got["las"] == pytest.approx(1 / 4)
    with pytest.raises(ValueError, match="UPOS"):
        word_metrics("parsing", predictions, gold)


# ------------------------------------------------------------------------------------------------------------------
# evaluator

OFFSET = 1000  # token id of a word = OFFSET + 100 * head + label (label = tag for taggers, relation for parsers)


class FakeTagger(nn.Module):
    """Predicts the label written in each word's token id; ``wrong`` shifts the first word's label by one."""

    def __init__(self, wrong: bool = False) -> None:
        super().__init__()
        self.wrong = wrong
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask, word_starts, word_mask, token_type_ids=None):
        assert not torch.is_grad_enabled() and not self.training
        ids = gather_words(input_ids.unsqueeze(-1), word_starts).squeeze(-1)
        return ids

    def decode(self, output, word_mask):
        labels = (output - OFFSET) % 100
        if self.wrong:
            labels[:, 0] = labels[:, 0] + 1
        return labels.masked_fill(~word_mask, IGNORE_LABEL)


class FakeParser(FakeTagger):
    def decode(self, output, word_mask):
        heads = (output - OFFSET) // 100
        rels = (output - OFFSET) % 100
        if self.wrong:
            rels[:, 0] = rels[:, 0] + 1  # first word: right head, wrong relation
        return heads.masked_fill(~word_mask, IGNORE_LABEL), rels.masked_fill(~word_mask, IGNORE_LABEL)


def items_for(sentences: list[list[tuple[int, int, int]]]) -> list[dict]:
    """Items from ``(head, relation or tag, upos)`` per word: token 0 is [CLS], word i is token i + 1."""
    items = []
    for words in sentences:
        items.append(
            {
                "input_ids": [1] + [OFFSET + 100 * h + r for h, r, _ in words],
                "word_starts": list(range(1, len(words) + 1)),
                "heads": [h for h, _, _ in words],
                "deprels": [r for _, r, _ in words],
                "xpos": [r for _, r, _ in words],
                "upos": [u for _, _, u in words],
            }
        )
    return items


SENTENCES = [
    [(2, 3, 0), (0, 1, 3), (2, 4, 1)],  # NOUN VERB PUNCT
    [(0, 2, 3)],
    [(0, 0, 3), (1, 5, 0), (1, 6, 0), (3, 2, 1), (1, 7, 2)],  # ... PUNCT SYM
    [(2, 1, 1), (0, 1, 3)],  # PUNCT first
]


@pytest.mark.parametrize("batch_size", [1, 3])
def test_tagging_evaluator(batch_size: int) -> None:
    items = items_for(SENTENCES)
    collate = TokenCollator(pad_token_id=0, fields=("xpos",))
    model = FakeTagger()
    model.train()
    got = evaluate_words(model, items, collate, batch_size, torch.device("cpu"), "tagging", field="xpos")
    assert got == {"accuracy": 1.0}
    assert model.training  # mode restored
    got = evaluate_words(FakeTagger(wrong=True), items, collate, batch_size, torch.device("cpu"), "tagging", "xpos")
    assert got["accuracy"] == pytest.approx(1 - 4 / 11)  # the first word of each of the 4 sentences is wrong


def test_tagging_evaluator_skips_hidden_gold() -> None:
    items = items_for(SENTENCES)
    items[2]["xpos"] = [IGNORE_LABEL] * 5  # an unlabelled sentence
    got = evaluate_words(
        FakeTagger(wrong=True), items, TokenCollator(0, ("xpos",)), 2, torch.device("cpu"), "tagging", "xpos"
    )
    assert got["accuracy"] == pytest.approx(3 / 6)


def test_parsing_evaluator() -> None:
    items = items_for(SENTENCES)
    collate = TokenCollator(pad_token_id=0, fields=("heads", "deprels", "upos"))
    device = torch.device("cpu")
    got = evaluate_words(FakeParser(), items, collate, 2, device, "parsing", upos_names=UPOS)
    assert got == {"uas": 1.0, "las": 1.0, "uas_punct": 1.0, "las_punct": 1.0}
    got = evaluate_words(FakeParser(wrong=True), items, collate, 2, device, "parsing", upos_names=UPOS)
    # 11 words, 3 PUNCT (one of them a first word); the 4 first words get a wrong relation
    assert got["uas"] == 1.0 and got["uas_punct"] == 1.0
    assert got["las_punct"] == pytest.approx(7 / 11)
    assert got["las"] == pytest.approx(5 / 8)
    with pytest.raises(ValueError, match="upos_names"):
        evaluate_words(FakeParser(), items, collate, 2, device, "parsing")
