"""Tests of kdlab.data.conllu on excerpts of UD English-EWT (tests/fixtures/ud-ewt) and small hand-written files."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdlab.data.conllu import Sentence, is_punctuation, label_inventory, read_conllu
from kdlab.errors import UserError

UD = Path(__file__).parent / "fixtures" / "ud-ewt"


def word_line(i: int | str, form: str, head: int | str, upos: str = "NOUN", deprel: str = "dep") -> str:
    return f"{i}\t{form}\t{form.lower()}\t{upos}\tNN\t_\t{head}\t{deprel}\t_\t_"


def write(tmp_path: Path, lines: list[str], name: str = "x.conllu") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def test_reads_the_ewt_fixtures() -> None:
    train = read_conllu(UD / "train.conllu")
    dev = read_conllu(UD / "dev.conllu", key="task.dev")
    assert len(train) == 40 and len(dev) == 20
    # words = lines whose ID is a plain integer (counted with grep -c '^[0-9]*<TAB>')
    assert sum(len(s) for s in train) == 848 and sum(len(s) for s in dev) == 474
    for s in train + dev:
        n = len(s)
        assert len(s.upos) == len(s.xpos) == len(s.heads) == len(s.deprels) == n
        assert all(0 <= h <= n and h != i + 1 for i, h in enumerate(s.heads))
        assert sum(h == 0 for h in s.heads) == 1  # UD: one root per sentence
        assert s.sent_id.startswith(("weblog-", "email-", "answers-", "newsgroup-", "reviews-"))
    first = dev[0]
    assert first == Sentence(
        words=("From", "the", "AP", "comes", "this", "story", ":"),
        upos=("ADP", "DET", "PROPN", "VERB", "DET", "NOUN", "PUNCT"),
        xpos=("IN", "DT", "NNP", "VBZ", "DT", "NN", ":"),
        heads=(3, 3, 4, 0, 6, 4, 4),
        deprels=("case", "det", "obl", "root", "det", "nsubj", "punct"),
        sent_id="weblog-blogspot.com_nominations_20041117172713_ENG_20041117_172713-0001",
    )
    assert dev[1].words[:2] == ("President", "Bush") and dev[1].heads[4] == 0
    assert train[0].words[:3] == ("Al", "-", "Zaman") and train[0].heads[:3] == (0, 3, 1)


def test_multiword_tokens_are_skipped_in_the_fixture() -> None:
    # the train excerpt holds multiword tokens such as "19-20 don't": only "do" and "n't" are words
    train = read_conllu(UD / "train.conllu")
    text = (UD / "train.conllu").read_text(encoding="utf-8")
    assert "\n19-20\tdon't" in text
    assert not any("don't" in s.words for s in train)
    assert any(s.words[i : i + 2] == ("do", "n't") for s in train for i in range(len(s)))


def test_multiword_tokens_empty_nodes_comments_and_no_final_blank_line(tmp_path: Path) -> None:
    lines = [
        "# newdoc id = d1",
        "# sent_id = s1",
        "# text = I don't go",
        word_line(1, "I", 3, "PRON", "nsubj"),
        "2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_",
        word_line(2, "do", 4, "AUX", "aux"),
        word_line(3, "n't", 4, "PART", "advmod"),
        "3.1\tgo\tgo\tVERB\tVB\t_\t_\t_\t4:conj\t_",
        word_line(4, "go", 0, "VERB", "root"),
        "",
        "",
        word_line(1, "Hi", 0, "INTJ", "root"),
        word_line(2, "!", 1, "PUNCT", "punct"),  # no trailing blank line, no sent_id
    ]
    first, second = read_conllu(write(tmp_path, lines, "mini.conllu"))
    assert first.words == ("I", "do", "n't", "go")
    assert first.heads == (3, 4, 4, 0)
    assert first.upos == ("PRON", "AUX", "PART", "VERB")
    assert first.sent_id == "s1"
    assert second.words == ("Hi", "!") and second.heads == (0, 1) and second.sent_id == "mini-2"
    # the same with Windows line endings and a trailing blank line
    crlf = tmp_path / "crlf.conllu"
    crlf.write_bytes(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"))
    assert [s.words for s in read_conllu(crlf)] == [first.words, second.words]


MALFORMED = [
    # (lines, line number blamed, words the message must contain)
    ([word_line(1, "a", 0), "2\tb\tb\tNOUN\tNN\t_\t1\tdep\t_"], 2, "10 tab-separated columns, found 9"),
    ([word_line(1, "a", 0), "2 b b NOUN NN _ 1 dep _ _"], 2, "found 1"),
    ([word_line(1, "a", 0), word_line(2, "b", "x")], 2, "HEAD 'x' of word 2 is not an integer"),
    ([word_line(1, "a", 0), word_line(2, "b", "_")], 2, "not an integer"),
    ([word_line(1, "a", 0), word_line(2, "b", -1)], 2, "not an integer"),
    (["# c", word_line(1, "a", 0), word_line(2, "b", 3), "", word_line(1, "c", 0)], 3, "HEAD 3 of word 2 is beyond"),
    ([word_line(1, "a", 0), word_line(2, "b", 2)], 2, "the word itself"),
    ([word_line(1, "a", 0), word_line(3, "b", 1)], 2, "expected 2"),
    ([word_line("x", "a", 0)], 1, "word ID 'x'"),
]


@pytest.mark.parametrize(("lines", "line_no", "problem"), MALFORMED)
def test_malformed_input_raises_user_error(tmp_path: Path, lines: list[str], line_no: int, problem: str) -> None:
    path = write(tmp_path, lines)
    with pytest.raises(UserError) as info:
        read_conllu(path, key="task.dev")
    err = info.value
    assert err.key == "task.dev" and err.fix
    assert f"{path}, line {line_no}:" in err.problem
    assert problem in err.problem
    assert "task.dev" in str(err) and "fix:" in str(err)


def test_missing_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist") as info:
        read_conllu(tmp_path / "nope.conllu")
    assert info.value.key == "task.train"


def test_label_inventory_and_punctuation() -> None:
    train = read_conllu(UD / "train.conllu")
    upos = label_inventory(train, "upos")
    assert upos == tuple(sorted(set(upos)))
    assert {"NOUN", "VERB", "PUNCT", "PROPN", "DET"} <= set(upos)
    universal = {"ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN"}
    assert set(upos) <= universal | {"PUNCT", "SCONJ", "SYM", "VERB", "X"}
    deprels = label_inventory(train, "deprels")
    assert "root" in deprels and "punct" in deprels and deprels == tuple(sorted(deprels))
    assert "NNP" in label_inventory(train, "xpos")
    with pytest.raises(ValueError, match="field must be one of"):
        label_inventory(train, "heads")
    assert is_punctuation("PUNCT") and not is_punctuation("SYM") and not is_punctuation("NOUN")
    # every ":" / "." / "," in the excerpt is tagged PUNCT
    assert all(is_punctuation(u) for s in train for w, u in zip(s.words, s.upos, strict=True) if w in {",", "."})
