"""A word-level tokenizer built from training text, for small students that learn their own embeddings.

The result is a standard ``PreTrainedTokenizerFast`` over a ``tokenizers`` WordLevel model: it saves as
``tokenizer.json`` and reloads with ``transformers.AutoTokenizer.from_pretrained(folder)`` without kdlab.

Layout of the vocabulary (ids are fixed so that students and collators can rely on them)::

    [PAD]=0  [UNK]=1  [SEP]=2  extra specials ([MASK], ...)  words of the first side  new words of the second side

Every encoded side ends with [SEP] (``$A [SEP]`` and ``$A:0 [SEP]:0 $B:1 [SEP]:1``), so a side is never empty
even when its text is, and ``token_type_ids`` tell the sides of a pair apart (a per-side student such as the
BiRNN routes tokens by them).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD, UNK, SEP, MASK = "[PAD]", "[UNK]", "[SEP]", "[MASK]"


def build_word_tokenizer(
    texts: Iterable[str],
    pairs: Iterable[str] | None = None,
    *,
    max_size: int = 30000,
    min_freq: int = 1,
    lowercase: bool = True,
    extra_specials: Sequence[str] = (MASK,),
) -> PreTrainedTokenizerFast:
    """Build a word-level tokenizer whose vocabulary is the frequent words of ``texts`` (and ``pairs``).

    Words are what NFKC normalisation (+ lowercasing when ``lowercase``) and BERT's pre-tokenizer (split on
    whitespace and around punctuation) produce; they are counted with the tokenizer's own normalizer and
    pre-tokenizer, so a counted word encodes to its own id. ``texts`` (first side) and ``pairs`` (second side,
    e.g. translations) are counted separately, and from each side the ``max_size`` most frequent words with
    count >= ``min_freq`` are kept (ties broken alphabetically, so the vocabulary is deterministic). Keeping
    the sides apart lets a rare target-language vocabulary survive next to a large source one; the vocabulary
    is their union, at most ``2 * max_size`` words plus the specials.

    Specials are added as special tokens: they are matched in raw text before normalisation, so "[MASK]"
    keeps its id even with ``lowercase`` on, and they are never split.
    """
    if max_size < 1:
        raise ValueError(f"max_size must be at least 1, got {max_size}")
    if min_freq < 1:
        raise ValueError(f"min_freq must be at least 1, got {min_freq}")
    specials = list(dict.fromkeys([PAD, UNK, SEP, *extra_specials]))

    steps: list[normalizers.Normalizer] = [normalizers.NFKC()]
    if lowercase:
        steps.append(normalizers.Lowercase())
    normalizer = normalizers.Sequence(steps)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # Special tokens are cut out of the raw text before normalisation at encoding time; counting does the same,
    # so "[MASK]" in a text is not counted as the words "[", "mask", "]".
    special_split = re.compile("|".join(re.escape(token) for token in sorted(specials, key=len, reverse=True)))

    def top_words(side: Iterable[str]) -> list[str]:
        counts: Counter[str] = Counter()
        for text in side:
            for piece in special_split.split(text):
                normalized = normalizer.normalize_str(piece)
                counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalized))
        # Sorting by (-count, word) makes the cut at max_size independent of the order of the texts.
        ranked = sorted((item for item in counts.items() if item[1] >= min_freq), key=lambda kv: (-kv[1], kv[0]))
        return [word for word, _ in ranked[:max_size]]

    vocab: dict[str, int] = {token: i for i, token in enumerate(specials)}
    for word in top_words(texts) + (top_words(pairs) if pairs is not None else []):
        vocab.setdefault(word, len(vocab))

    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.add_special_tokens(specials)
    sep_id = vocab[SEP]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {SEP}",
        pair=f"$A:0 {SEP}:0 $B:1 {SEP}:1",
        special_tokens=[(SEP, sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD,
        unk_token=UNK,
        sep_token=SEP,
        mask_token=MASK if MASK in specials else None,
        # Without token_type_ids in the outputs a pair student could not tell source from target.
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
