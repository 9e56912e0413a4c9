"""Perturbed copies of training inputs, for the teacher to label (Tang et al. 2019).

Tang et al. ("Distilling task-specific knowledge from BERT into simple neural networks", 2019) grow the
transfer set by perturbing each training sentence word by word (masking, replacing by a word of the same
part of speech, n-gram sampling); the teacher then labels the new inputs, so no gold labels are needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kdlab.config import PerturbConfig
from kdlab.data.tasks import Example
from kdlab.errors import UserError

FIELDS: tuple[str, ...] = ("text", "text_pair")


def _example_rng(seed: int, index: int) -> np.random.RandomState:
    # One stream per (seed, example index): adding or removing other examples leaves this one's draws alone.
    # SeedSequence mixes both numbers (any size); the legacy RandomState methods keep their stream across numpy
    # versions, so the variants (and the uids their cached teacher outputs are stored under) stay the same.
    return np.random.RandomState(np.random.MT19937(np.random.SeedSequence([seed, index])))


def _fields_to_perturb(examples: Sequence[Example], cfg: PerturbConfig) -> tuple[str, ...]:
    has_pairs = any(example.text_pair is not None for example in examples)
    if cfg.fields is None:
        return FIELDS if has_pairs else ("text",)
    chosen = tuple(field for field in FIELDS if field in cfg.fields)
    if "text_pair" in chosen and not has_pairs and examples:
        raise UserError(
            "perturb.fields names text_pair, but the task's inputs are single texts",
            key="augment.perturb.fields",
            fix="remove text_pair from augment.perturb.fields (or leave fields out to perturb every text)",
        )
    return chosen


def _vocabulary(examples: Sequence[Example], field: str) -> list[str]:
    """Every word occurrence of ``field`` over the examples: a uniform pick from it is a unigram draw."""
    words: list[str] = []
    for example in examples:
        value = getattr(example, field)
        if value is not None:
            words.extend(value.split())
    return words


def _perturb_words(
    words: list[str],
    cfg: PerturbConfig,
    rng: np.random.RandomState,
    *,
    mask_token: str,
    vocabulary: list[str],
    cut: bool,
) -> list[str]:
    """One field of one variant: per-word mask / replace / delete, then swaps, then the n-gram window."""
    draws = rng.random_sample(len(words))
    # Replacement picks as uniform floats scaled to the vocabulary: randint's consumption of the stream depends on
    # its bound, which would make every later choice depend on the vocabulary size (i.e. on the other examples).
    picks = rng.random_sample(len(words))
    mask_below = cfg.mask
    replace_below = cfg.mask + cfg.replace
    delete_below = cfg.mask + cfg.replace + cfg.delete
    out: list[str] = []
    deleted: list[int] = []
    for position, (word, draw, pick) in enumerate(zip(words, draws, picks, strict=True)):
        if draw < mask_below:
            out.append(mask_token)
        elif draw < replace_below:
            out.append(vocabulary[min(int(pick * len(vocabulary)), len(vocabulary) - 1)])
        elif draw < delete_below:
            deleted.append(position)
        else:
            out.append(word)
    if words and not out:
        # Every word drew "delete": an empty input says nothing, so one word (a random one) survives.
        out.append(words[deleted[rng.randint(len(deleted))]])

    swaps = rng.random_sample(len(out))
    position = 0
    while position < len(out) - 1:
        if swaps[position] < cfg.swap:
            out[position], out[position + 1] = out[position + 1], out[position]
            position += 2  # the moved word is not swapped again
        else:
            position += 1

    if cut and out:
        size = min(int(rng.randint(1, cfg.ngram_max + 1)), len(out))
        start = int(rng.randint(len(out) - size + 1))
        out = out[start : start + size]
    return out


def perturb(examples: Sequence[Example], cfg: PerturbConfig, *, mask_token: str, seed: int) -> list[Example]:
    """``cfg.copies`` perturbed variants of each example, unlabelled (``label=None``), in example order.

    Words are the whitespace-separated tokens of a text. Per variant and per perturbed field (``cfg.fields``;
    default every text field the examples have: ``text``, and ``text_pair`` for pairs):

    1. One uniform draw ``u`` per word: ``u < mask`` -> ``mask_token``; ``u < mask + replace`` -> a word drawn
       from the unigram distribution of that field's words over all ``examples`` (Tang et al. draw a word
       of the same part of speech; there is no tagger offline, so the draw ignores the part of speech);
       ``u < mask + replace + delete`` -> the word is deleted, but never every word: if all drew "delete",
       one of them (chosen at random) is kept.
    2. Left to right, each word swaps with its right neighbour with probability ``swap``; a swapped pair is
       not swapped again (the next candidate is the word after the pair).
    3. Once per variant, with probability ``ngram`` (one draw per variant, as in ``PerturbConfig``), each
       perturbed field is cut to its own random window of ``n`` contiguous words, ``n`` uniform in
       ``1..ngram_max`` (capped by the field's length), the window start uniform over the positions where it
       fits.

    A field whose words come out unchanged keeps its original string; a variant equal to its original in every
    field is dropped (so all-zero probabilities give no variants). Variants are not deduplicated here (the
    caller drops duplicate uids).

    Deterministic given ``seed``: example ``i`` draws from its own stream seeded by ``(seed, i)``, so adding
    examples at the end leaves the earlier examples' choices (which words, windows, swaps) unchanged; the
    replacement words themselves come from the vocabulary of all examples, which more examples change.
    """
    if not examples or cfg.copies == 0:
        return []
    fields = _fields_to_perturb(examples, cfg)
    vocabularies = {field: _vocabulary(examples, field) for field in fields}
    variants: list[Example] = []
    for index, example in enumerate(examples):
        rng = _example_rng(seed, index)
        for _ in range(cfg.copies):
            # One n-gram decision per variant (each field then draws its own window).
            cut = bool(rng.random_sample() < cfg.ngram)
            values: dict[str, str | None] = {"text": example.text, "text_pair": example.text_pair}
            changed = False
            for field in fields:
                value = values[field]
                if value is None:
                    continue
                words = value.split()
                out = _perturb_words(words, cfg, rng, mask_token=mask_token, vocabulary=vocabularies[field], cut=cut)
                if out != words:
                    values[field] = " ".join(out)
                    changed = True
            if changed:
                variants.append(Example(text=values["text"] or "", text_pair=values["text_pair"], label=None))
    return variants
