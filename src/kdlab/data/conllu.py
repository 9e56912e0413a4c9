"""Reading Universal Dependencies treebanks in CoNLL-U format.

A CoNLL-U file holds sentences separated by blank lines. Each word line has 10 tab-separated columns
``ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC``; lines starting with ``#`` are comments (``# sent_id = ...``
names the sentence). Two kinds of line are not words of the basic tree and are skipped: multiword tokens (ID a range
``3-4``, e.g. "don't" over "do" + "n't") and empty nodes of the enhanced graph (ID a decimal ``5.1``).

A sentence of ``n`` words is a tree over ``0..n``: ``heads[i]`` is the head of word ``i + 1`` (1-based word indices,
``0`` = ROOT), so ``{(heads[i], i + 1) : i < n}`` are its arcs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kdlab.errors import UserError

__all__ = ["PUNCT_UPOS", "Sentence", "is_punctuation", "label_inventory", "read_conllu"]

PUNCT_UPOS = "PUNCT"
"""The universal POS tag of punctuation tokens."""

_N_COLUMNS = 10
_WORD_ID = re.compile(r"[1-9][0-9]*")
_MULTIWORD_ID = re.compile(r"[1-9][0-9]*-[1-9][0-9]*")
_EMPTY_NODE_ID = re.compile(r"[0-9]+\.[1-9][0-9]*")
_LABEL_FIELDS = ("words", "upos", "xpos", "deprels")


@dataclass(frozen=True)
class Sentence:
    """One sentence of a treebank: per word its form, tags, head and relation.

    All tuples have one entry per word (``n = len(words)``); ``heads[i] ∈ {0..n} \\ {i + 1}`` is the head of word
    ``i + 1`` (``0`` = ROOT) and ``deprels[i]`` the label of the arc ``heads[i] -> i + 1``. ``sent_id`` comes from the
    ``# sent_id = ...`` comment, or is ``"<file stem>-<k>"`` (``k`` = 1-based position in the file) without one.
    """

    words: tuple[str, ...]
    upos: tuple[str, ...]
    xpos: tuple[str, ...]
    heads: tuple[int, ...]
    deprels: tuple[str, ...]
    sent_id: str

    def __len__(self) -> int:
        """Number of words ``n`` (multiword tokens and empty nodes excluded)."""
        return len(self.words)


def _malformed(path: Path, line_no: int, problem: str, key: str, fix: str) -> UserError:
    return UserError(f"{path}, line {line_no}: {problem}", key=key, fix=fix)


def read_conllu(path: str | Path, key: str = "task.train") -> list[Sentence]:
    """Read every sentence of a CoNLL-U file, in file order.

    Comment lines, multiword-token lines (ID ``a-b``) and empty nodes (ID ``a.b``) are skipped; blank lines end a
    sentence (the last one may lack its blank line; runs of blank lines are fine). Word IDs must count ``1, 2, ...``
    within a sentence, and every head must be an integer ``h ∈ {0..n}`` with ``h != ID`` (``n`` = number of words of
    the sentence). Anything else - a missing file, a word line without exactly 10 tab-separated columns, a
    non-integer ID or head, a head out of range - raises :class:`~kdlab.errors.UserError` naming the file, the line
    number (1-based) and ``key`` (the config key that gave the path), with a fix.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"CoNLL-U file {str(path)!r} does not exist", key=key, fix="give the path of a .conllu treebank file"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(
            f"{path} is not UTF-8 text ({err.reason} at byte {err.start})",
            key=key,
            fix="CoNLL-U files are UTF-8; re-encode the file",
        ) from None

    sentences: list[Sentence] = []
    rows: list[tuple[int, list[str]]] = []  # (line number, columns) of the current sentence's words
    sent_id: str | None = None

    def finish() -> None:
        nonlocal rows, sent_id
        if rows:
            sentences.append(_build(path, rows, sent_id or f"{path.stem}-{len(sentences) + 1}", key))
        rows, sent_id = [], None

    # split on "\n" only: str.splitlines would also break inside word forms holding e.g. U+2028 or U+0085
    for line_no, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            finish()
            continue
        if line.startswith("#"):
            comment = line[1:].strip()
            if comment.startswith("sent_id") and "=" in comment:
                sent_id = comment.split("=", 1)[1].strip()
            continue
        cols = line.split("\t")
        if len(cols) != _N_COLUMNS:
            raise _malformed(
                path,
                line_no,
                f"expected {_N_COLUMNS} tab-separated columns, found {len(cols)}",
                key,
                "separate ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC by single tabs (use _ for empty "
                "fields), and end each sentence with a blank line",
            )
        word_id = cols[0]
        if _MULTIWORD_ID.fullmatch(word_id) or _EMPTY_NODE_ID.fullmatch(word_id):
            continue
        if not _WORD_ID.fullmatch(word_id):
            raise _malformed(
                path,
                line_no,
                f"word ID {word_id!r} is not a positive integer, a range (3-4) or a decimal (5.1)",
                key,
                "number the words of each sentence 1, 2, 3, ...",
            )
        if int(word_id) != len(rows) + 1:
            raise _malformed(
                path,
                line_no,
                f"word ID {word_id} follows word {len(rows)} of the sentence (expected {len(rows) + 1})",
                key,
                "number the words of each sentence 1, 2, 3, ... and separate sentences by a blank line",
            )
        rows.append((line_no, cols))
    finish()
    return sentences


def _build(path: Path, rows: list[tuple[int, list[str]]], sent_id: str, key: str) -> Sentence:
    """One :class:`Sentence` from its word lines, checking that every head ``h`` satisfies ``0 <= h <= n``."""
    n = len(rows)
    heads: list[int] = []
    for line_no, cols in rows:
        head_text = cols[6]
        if not re.fullmatch(r"[0-9]+", head_text):
            raise _malformed(
                path,
                line_no,
                f"HEAD {head_text!r} of word {cols[0]} is not an integer",
                key,
                "give every word the ID of its head (0 for the root) in column 7",
            )
        head = int(head_text)
        if head > n or head == int(cols[0]):
            why = "the word itself" if head == int(cols[0]) else f"beyond the sentence's {n} words"
            raise _malformed(
                path,
                line_no,
                f"HEAD {head} of word {cols[0]} is {why}",
                key,
                f"use a head between 0 (root) and {n}, other than the word's own ID",
            )
        heads.append(head)
    return Sentence(
        words=tuple(cols[1] for _, cols in rows),
        upos=tuple(cols[3] for _, cols in rows),
        xpos=tuple(cols[4] for _, cols in rows),
        heads=tuple(heads),
        deprels=tuple(cols[7] for _, cols in rows),
        sent_id=sent_id,
    )


def label_inventory(sentences: Iterable[Sentence], field: str) -> tuple[str, ...]:
    """Sorted distinct labels of one field: ``sorted(⋃_s set(getattr(s, field)))``.

    ``field`` is one of ``"upos"``, ``"xpos"``, ``"deprels"`` or ``"words"``. Build the inventory from the training
    split only, so that label ids do not depend on the evaluation data.
    """
    if field not in _LABEL_FIELDS:
        raise ValueError(f"field must be one of {', '.join(_LABEL_FIELDS)}, got {field!r}")
    labels: set[str] = set()
    for sentence in sentences:
        labels.update(getattr(sentence, field))
    return tuple(sorted(labels))


def is_punctuation(upos: str) -> bool:
    """Whether a token is punctuation: ``upos == "PUNCT"``.

    Attachment scores (UAS = share of words with the right head, LAS = right head and relation) are conventionally
    reported without punctuation tokens, since their attachment is largely arbitrary; the evaluator offers both
    (with and without). Tokens tagged ``SYM`` are not punctuation.
    """
    return upos == PUNCT_UPOS
