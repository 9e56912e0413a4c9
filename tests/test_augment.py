"""Tests of kdlab.augment: perturbations, unlabelled pools, candidate assembly and the distribution filter.

Text comes from tests/fixtures (SST-2 single sentences, MLQE-PE ro-en pairs); the filter is tested on
synthetic teacher outputs whose expected per-bin counts are computed independently here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kdlab.augment import AugmentReport, candidates, match_distribution, perturb, read_pool, select, subsample
from kdlab.config import AugmentConfig, PerturbConfig, PoolConfig
from kdlab.data import Example, load_examples, ready_task
from kdlab.data.tasks import read_inputs
from kdlab.errors import UserError

FIXTURES = Path(__file__).parent / "fixtures"
MASK = "[MASK]"
OFF = {"mask": 0.0, "replace": 0.0, "delete": 0.0, "swap": 0.0, "ngram": 0.0}


def only(copies: int = 1, **changes: object) -> PerturbConfig:
    """A perturbation with every probability off except the ones given."""
    return PerturbConfig(copies=copies, **{**OFF, **changes})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def sst2() -> list[Example]:
    return load_examples(ready_task("sst2", FIXTURES), "train")


@pytest.fixture(scope="module")
def qe() -> list[Example]:
    return load_examples(ready_task("mlqe-ro-en", FIXTURES), "train")


def words_of(examples: list[Example], field: str) -> set[str]:
    return {word for example in examples for word in (getattr(example, field) or "").split()}


def source_of(variants: list[Example], examples: list[Example], copies: int) -> list[Example]:
    """The original of each variant, for perturbations whose variants are never dropped (copies per example)."""
    assert len(variants) == copies * len(examples)
    return [examples[i // copies] for i in range(len(variants))]


# ----------------------------------------------------------------------------------------------------------
# Perturbation
# ----------------------------------------------------------------------------------------------------------


def test_perturb_is_deterministic_and_seed_sensitive(sst2: list[Example]) -> None:
    cfg = PerturbConfig(copies=3)
    first = perturb(sst2, cfg, mask_token=MASK, seed=7)
    again = perturb(sst2, cfg, mask_token=MASK, seed=7)
    other = perturb(sst2, cfg, mask_token=MASK, seed=8)
    assert first == again
    assert len(first) > len(sst2)
    assert [v.uid for v in first] != [v.uid for v in other]
    assert all(v.label is None for v in first)


def test_adding_examples_leaves_earlier_variants_unchanged(sst2: list[Example]) -> None:
    # No replacement: the replacement vocabulary is the only thing the other examples influence.
    cfg = PerturbConfig(copies=2, mask=0.3, replace=0.0, delete=0.2, swap=0.2, ngram=0.3)
    head = perturb(sst2[:15], cfg, mask_token=MASK, seed=3)
    whole = perturb(sst2, cfg, mask_token=MASK, seed=3)
    assert head and len(whole) > len(head)
    assert whole[: len(head)] == head


def test_zero_probabilities_give_no_variants(sst2: list[Example], qe: list[Example]) -> None:
    assert perturb(sst2, only(), mask_token=MASK, seed=0) == []
    assert perturb(qe, only(copies=4), mask_token=MASK, seed=0) == []


def test_zero_copies_give_no_variants(sst2: list[Example]) -> None:
    assert perturb(sst2, only(copies=0, mask=1.0), mask_token=MASK, seed=0) == []


def test_mask_one_masks_every_word(sst2: list[Example]) -> None:
    variants = perturb(sst2, only(mask=1.0), mask_token=MASK, seed=0)
    for variant, original in zip(variants, source_of(variants, sst2, 1), strict=True):
        assert variant.text.split() == [MASK] * len(original.text.split())
        assert variant.text_pair is None


def test_mask_only_touches_the_chosen_fields(qe: list[Example]) -> None:
    cfg = only(copies=2, mask=1.0, fields=["text_pair"])
    variants = perturb(qe, cfg, mask_token=MASK, seed=0)
    # Both copies are fully masked, hence equal; the caller drops that duplicate by uid.
    for variant, original in zip(variants, source_of(variants, qe, 2), strict=True):
        assert variant.text == original.text  # the source sentence, byte for byte
        assert variant.text_pair is not None and original.text_pair is not None
        assert variant.text_pair.split() == [MASK] * len(original.text_pair.split())

    both = perturb(qe, only(mask=1.0), mask_token=MASK, seed=0)
    for variant, original in zip(both, source_of(both, qe, 1), strict=True):
        assert variant.text.split() == [MASK] * len(original.text.split())
        assert variant.text_pair is not None and original.text_pair is not None
        assert variant.text_pair.split() == [MASK] * len(original.text_pair.split())


def test_text_pair_field_on_single_texts_is_a_user_error(sst2: list[Example]) -> None:
    with pytest.raises(UserError) as err:
        perturb(sst2, PerturbConfig(copies=1, fields=["text_pair"]), mask_token=MASK, seed=0)
    assert err.value.key == "augment.perturb.fields"


def test_delete_never_empties_a_field(sst2: list[Example], qe: list[Example]) -> None:
    everything = perturb(sst2, only(delete=1.0), mask_token=MASK, seed=0)
    many_words = [ex for ex in sst2 if len(ex.text.split()) > 1]
    # Every multi-word sentence loses all but one word (a word of its own); one-word sentences stay and drop out.
    assert len(everything) == len(many_words)
    for variant, original in zip(everything, many_words, strict=True):
        assert len(variant.text.split()) == 1
        assert variant.text.split()[0] in original.text.split()

    heavy = perturb(qe, only(copies=5, delete=0.9, fields=["text_pair"]), mask_token=MASK, seed=1)
    assert len(heavy) == 5 * len(qe)
    assert all(variant.text_pair is not None and variant.text_pair.split() for variant in heavy)
    assert any(len((variant.text_pair or "").split()) == 1 for variant in heavy)


def test_deleted_words_keep_their_order(sst2: list[Example]) -> None:
    for index, original in enumerate(sst2):
        for variant in perturb([original], only(delete=0.5), mask_token=MASK, seed=index):
            remaining = iter(original.text.split())
            assert all(word in remaining for word in variant.text.split())  # an ordered subsequence


def test_replace_draws_from_the_fields_own_vocabulary(sst2: list[Example], qe: list[Example]) -> None:
    variants = perturb(sst2, only(copies=3, replace=1.0), mask_token=MASK, seed=0)
    assert words_of(variants, "text") <= words_of(sst2, "text")

    # Pairs: Romanian sources and English translations; a draw from the wrong side would show up.
    pairs = perturb(qe, only(copies=3, replace=1.0), mask_token=MASK, seed=0)
    source_vocab, target_vocab = words_of(qe, "text"), words_of(qe, "text_pair")
    assert len(source_vocab - target_vocab) > 50 and len(target_vocab - source_vocab) > 50
    assert words_of(pairs, "text") <= source_vocab
    assert words_of(pairs, "text_pair") <= target_vocab
    for variant, original in zip(pairs, source_of(pairs, qe, 3), strict=True):
        assert len(variant.text.split()) == len(original.text.split())
    # Replacement really happens (not just copies of the original words).
    changed = sum(v.text.split() != o.text.split() for v, o in zip(pairs, source_of(pairs, qe, 3), strict=True))
    assert changed == len(pairs)


def test_replace_follows_word_frequencies() -> None:
    # "a" is 9 of 10 word occurrences: a unigram draw gives it about 90% of the time, a uniform draw over the
    # two distinct words only 50%.
    examples = [Example(text="a a a a a a a a a b", text_pair=None, label=0) for _ in range(30)]
    variants = perturb(examples, only(copies=4, replace=1.0), mask_token=MASK, seed=0)
    drawn = [word for variant in variants for word in variant.text.split()]
    assert len(drawn) > 500
    assert 0.85 < drawn.count("a") / len(drawn) < 0.95


def test_swap_one_swaps_every_disjoint_pair(sst2: list[Example]) -> None:
    variants = perturb(sst2, only(swap=1.0), mask_token=MASK, seed=0)
    expected = []
    for original in sst2:
        words = original.text.split()
        swapped = list(words)
        for i in range(0, len(words) - 1, 2):  # (0 1) (2 3) ...: a swapped word is not swapped again
            swapped[i], swapped[i + 1] = words[i + 1], words[i]
        if swapped != words:
            expected.append(" ".join(swapped))
    assert len(expected) > 30
    assert [variant.text for variant in variants] == expected


def test_swap_is_a_permutation(qe: list[Example]) -> None:
    cfg = only(copies=3, swap=0.4, fields=["text_pair"])
    variants = perturb(qe, cfg, mask_token=MASK, seed=5)
    originals = {ex.text: ex for ex in qe}
    assert variants
    for variant in variants:
        original = originals[variant.text]
        assert variant.text_pair is not None and original.text_pair is not None
        assert sorted(variant.text_pair.split()) == sorted(original.text_pair.split())
        assert variant.text_pair != original.text_pair


def test_ngram_cuts_a_contiguous_window(sst2: list[Example]) -> None:
    variants = perturb(sst2, only(copies=4, ngram=1.0, ngram_max=3), mask_token=MASK, seed=0)
    assert variants
    lengths = set()
    for variant in variants:
        words = variant.text.split()
        lengths.add(len(words))
        assert 1 <= len(words) <= 3
        windows = [
            ex.text.split()[i : i + len(words)] for ex in sst2 for i in range(len(ex.text.split()) - len(words) + 1)
        ]
        assert words in windows
    assert lengths == {1, 2, 3}  # n is drawn, not fixed at ngram_max


def test_ngram_window_is_within_its_own_example(sst2: list[Example]) -> None:
    for index, original in enumerate(sst2):
        words = original.text.split()
        for variant in perturb([original], only(copies=3, ngram=1.0), mask_token=MASK, seed=index):
            cut = variant.text.split()
            assert 1 <= len(cut) <= 5
            assert any(words[i : i + len(cut)] == cut for i in range(len(words)))


# ----------------------------------------------------------------------------------------------------------
# Pools and read_inputs
# ----------------------------------------------------------------------------------------------------------


def test_read_inputs_matches_the_labelled_reader() -> None:
    spec = ready_task("mlqe-ro-en", FIXTURES)
    labelled = load_examples(spec, "dev")
    inputs = read_inputs(
        FIXTURES / "mlqe-pe" / "ro-en" / "dev.tsv",
        format=None,
        header=True,
        text="original",
        text_pair="translation",
        key="augment.pools[0].path",
    )
    assert [ex.uid for ex in inputs] == [ex.uid for ex in labelled]
    assert all(ex.label is None for ex in inputs)


def test_read_inputs_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        read_inputs(tmp_path / "missing.tsv", format=None, header=True, text="sentence", text_pair=None, key="k.path")
    assert err.value.key == "k.path"
    empty = tmp_path / "empty.tsv"
    empty.write_text("sentence\n", encoding="utf-8")
    with pytest.raises(UserError) as err:
        read_inputs(empty, format=None, header=True, text="sentence", text_pair=None, key="k.path")
    assert err.value.key == "k.path" and "no data rows" in err.value.problem


def test_pool_by_task_drops_labels() -> None:
    task = ready_task("sst2", FIXTURES)
    pool = read_pool(PoolConfig(task="sst2", split="dev"), 0, task, FIXTURES)
    dev = load_examples(task, "dev")
    assert [ex.text for ex in pool] == [ex.text for ex in dev]
    assert [ex.uid for ex in pool] == [ex.uid for ex in dev]
    assert all(ex.label is None for ex in pool)


def test_pool_file_defaults_to_the_task_columns(tmp_path: Path) -> None:
    # A pool file laid out like the task's, without a label column, and with an extra column.
    path = tmp_path / "unlabelled.tsv"
    path.write_text("id\tsentence\n1\t a gripping film \n2\tdull and lifeless\n", encoding="utf-8")
    task = ready_task("sst2", FIXTURES)
    pool = read_pool(PoolConfig(path=str(path)), 0, task, FIXTURES)
    assert [(ex.text, ex.text_pair, ex.label) for ex in pool] == [
        ("a gripping film", None, None),
        ("dull and lifeless", None, None),
    ]

    qe_task = ready_task("mlqe-ro-en", FIXTURES)
    qe_pool = read_pool(PoolConfig(path=str(FIXTURES / "mlqe-pe" / "ro-en" / "dev.tsv")), 0, qe_task, None)
    assert [ex.uid for ex in qe_pool] == [ex.uid for ex in load_examples(qe_task, "dev")]
    assert all(ex.text_pair for ex in qe_pool)


def test_pool_file_with_explicit_columns_and_no_header(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text('x,"Buna ziua, lume",Hello world\ny,Multumesc,Thank you\n', encoding="utf-8")
    pool = read_pool(
        PoolConfig(path=str(path), header=False, text=1, text_pair=2), 2, ready_task("mlqe-ro-en", FIXTURES), None
    )
    assert [(ex.text, ex.text_pair) for ex in pool] == [("Buna ziua, lume", "Hello world"), ("Multumesc", "Thank you")]


def test_pool_max_examples_is_a_seeded_subset_in_file_order() -> None:
    task = ready_task("sst2", FIXTURES)
    full = read_pool(PoolConfig(task="sst2"), 0, task, FIXTURES)
    small = read_pool(PoolConfig(task="sst2", max_examples=10), 0, task, FIXTURES, seed=1)
    again = read_pool(PoolConfig(task="sst2", max_examples=10), 0, task, FIXTURES, seed=1)
    other = read_pool(PoolConfig(task="sst2", max_examples=10), 0, task, FIXTURES, seed=2)
    assert len(small) == 10 and small == again and small != other
    positions = [full.index(ex) for ex in small]
    assert positions == sorted(positions)


def test_pool_pairness_mismatch_is_a_user_error(tmp_path: Path) -> None:
    sst2_task = ready_task("sst2", FIXTURES)
    with pytest.raises(UserError) as err:
        read_pool(PoolConfig(task="mlqe-ro-en"), 1, sst2_task, FIXTURES)
    assert err.value.key == "augment.pools[1].task"
    assert "text pairs" in err.value.problem and "single texts" in err.value.problem

    with pytest.raises(UserError) as err:
        read_pool(PoolConfig(task="sst2"), 0, ready_task("mlqe-ro-en", FIXTURES), FIXTURES)
    assert err.value.key == "augment.pools[0].task"

    path = tmp_path / "pairs.tsv"
    path.write_text("sentence\tother\na\tb\n", encoding="utf-8")
    with pytest.raises(UserError) as err:
        read_pool(PoolConfig(path=str(path), text_pair="other"), 3, sst2_task, None)
    assert err.value.key == "augment.pools[3].text_pair"


def test_pool_errors_name_the_pool_key(tmp_path: Path) -> None:
    task = ready_task("sst2", FIXTURES)
    with pytest.raises(UserError) as err:
        read_pool(PoolConfig(path=str(tmp_path / "nope.tsv")), 0, task, None)
    assert err.value.key == "augment.pools[0].path"
    assert "does not exist" in err.value.problem

    path = tmp_path / "other.tsv"
    path.write_text("review\nnice\n", encoding="utf-8")
    with pytest.raises(UserError) as err:
        read_pool(PoolConfig(path=str(path)), 1, task, None)
    assert err.value.key == "augment.pools[1].text"  # the task's column "sentence" is not in this file

    with pytest.raises(UserError) as err:
        read_pool(PoolConfig(task="no-such-task"), 2, task, FIXTURES)
    assert err.value.key == "augment.pools[2].task"

    with pytest.raises(UserError) as err:
        read_pool(PoolConfig(task="sst2"), 4, task, tmp_path)  # a data root without the files
    assert err.value.key == "augment.pools[4].task"


# ----------------------------------------------------------------------------------------------------------
# Candidates
# ----------------------------------------------------------------------------------------------------------


def test_candidates_drop_train_and_dev_inputs_and_count_them(sst2: list[Example], tmp_path: Path) -> None:
    task = ready_task("sst2", FIXTURES)
    dev = load_examples(task, "dev")
    # A pool file mixing new sentences, dev sentences (with extra spaces, stripped) and a train sentence.
    new = ["an utterly new sentence", "another unseen line"]
    lines = ["sentence", *new, f"  {dev[0].text} ", dev[1].text, sst2[0].text, new[0]]
    path = tmp_path / "pool.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = AugmentConfig(
        pools=[PoolConfig(path=str(path)), PoolConfig(task="sst2", split="dev")],
        perturb=PerturbConfig(copies=2, mask=0.3, replace=0.2, ngram=0.3),
        seed=4,
    )
    exclude = {ex.uid for ex in sst2} | {ex.uid for ex in dev}
    kept, report = candidates(sst2, cfg, task=task, data_root=FIXTURES, mask_token=MASK, exclude_uids=exclude)

    assert isinstance(report, AugmentReport)
    assert report.from_pools == len(lines) - 1 + len(dev)
    assert report.from_perturbation == len(perturb(sst2, cfg.perturb, mask_token=MASK, seed=4))
    assert report.dropped_overlap >= 3 + len(dev)  # 2 dev + 1 train line in the file, the whole dev pool
    assert report.dropped_duplicates >= 1  # the repeated new sentence
    assert report.kept == len(kept)
    assert not {ex.uid for ex in kept} & exclude
    assert len({ex.uid for ex in kept}) == len(kept)
    assert [ex.text for ex in kept[:2]] == new  # pools first, in file order
    assert all(ex.label is None for ex in kept)

    again, _ = candidates(sst2, cfg, task=task, data_root=FIXTURES, mask_token=MASK, exclude_uids=exclude)
    assert again == kept


def test_candidates_counts_are_exact_for_pools_only() -> None:
    task = ready_task("sst2", FIXTURES)
    dev = load_examples(task, "dev")
    cfg = AugmentConfig(pools=[PoolConfig(task="sst2", split="dev"), PoolConfig(task="sst2", split="dev")])
    kept, report = candidates([], cfg, task=task, data_root=FIXTURES, mask_token=MASK, exclude_uids=[dev[0].uid])
    assert report == AugmentReport(
        from_pools=2 * len(dev), from_perturbation=0, dropped_duplicates=len(dev) - 1, dropped_overlap=2
    )
    assert [ex.uid for ex in kept] == [ex.uid for ex in dev[1:]]


# ----------------------------------------------------------------------------------------------------------
# Distribution matching
# ----------------------------------------------------------------------------------------------------------


def expected_bins(original: np.ndarray, values: np.ndarray, bins: int) -> np.ndarray:
    """Independent binning: equal-mass quantile cuts, open-ended ends (np.digitize, right-closed edges)."""
    cuts = np.quantile(original, np.linspace(0, 1, bins + 1)[1:-1])
    return np.digitize(values, cuts)


def test_match_distribution_matches_the_original_shares() -> None:
    rng = np.random.default_rng(0)
    original = rng.normal(0.0, 1.0, size=1000)
    candidates_ = np.concatenate([rng.normal(1.0, 1.5, size=4000), rng.normal(-2.0, 0.3, size=500)])
    kept = match_distribution(original, candidates_, bins=10, discrete=False, max_examples=None, seed=0)

    orig_counts = np.bincount(expected_bins(original, original, 10), minlength=10)
    cand_counts = np.bincount(expected_bins(original, candidates_, 10), minlength=10)
    kept_counts = np.bincount(expected_bins(original, candidates_[kept], 10), minlength=10)
    shares = orig_counts / orig_counts.sum()
    total = int(np.floor(min(cand_counts / shares)))
    assert len(kept) == total
    assert np.all(np.abs(kept_counts - total * shares) < 1)
    assert np.all(kept_counts <= cand_counts)
    assert np.array_equal(kept, np.unique(kept))  # sorted, no repeats
    # The candidates as a whole are far from the original distribution; the kept set is not.
    assert np.abs(cand_counts / cand_counts.sum() - shares).max() > 0.1
    assert np.abs(kept_counts / kept_counts.sum() - shares).max() < 0.01


def test_match_distribution_total_is_limited_by_the_scarcest_bin() -> None:
    original = (np.arange(100) + 0.5) / 100  # four equal-mass bins of width 0.25
    scarce = np.full(10, 0.3)  # bin 1
    plenty = np.concatenate([np.full(40, 0.1), np.full(40, 0.6), np.full(40, 0.9)])
    candidates_ = np.concatenate([plenty[:40], scarce, plenty[40:]])
    kept = match_distribution(original, candidates_, bins=4, discrete=False, max_examples=None, seed=0)
    assert len(kept) == 40  # M = 10 / 0.25
    assert np.bincount(expected_bins(original, candidates_[kept], 4), minlength=4).tolist() == [10, 10, 10, 10]
    assert set(range(40, 50)) <= set(kept.tolist())  # every scarce candidate is used


def test_match_distribution_on_classes() -> None:
    original = np.array([0] * 70 + [1] * 30)
    candidates_ = np.array([2] * 20 + [0] * 50 + [1] * 50)
    kept = match_distribution(original, candidates_, bins=10, discrete=True, max_examples=None, seed=0)
    # M = min(50 / 0.7, 50 / 0.3) = 71.4 -> 71: 49.7 and 21.3 places, rounded by largest remainder to 50 and 21.
    assert np.bincount(candidates_[kept], minlength=3).tolist() == [50, 21, 0]

    capped = match_distribution(original, candidates_, bins=10, discrete=True, max_examples=20, seed=0)
    assert np.bincount(candidates_[capped], minlength=3).tolist() == [14, 6, 0]

    # A class between the teacher's classes (here: never predicted on the training data) is dropped too.
    gaps = match_distribution(
        np.array([0, 2, 2, 0]), np.array([1] * 6 + [0, 0, 2, 2]), bins=10, discrete=True, max_examples=None, seed=0
    )
    assert gaps.tolist() == [6, 7, 8, 9]

    # Class logits must be reduced first: one value per example.
    with pytest.raises(ValueError):
        match_distribution(np.zeros((5, 3)), np.zeros((5, 3)), bins=2, discrete=True, max_examples=None, seed=0)


def test_candidates_outside_the_original_range_fall_in_the_end_bins() -> None:
    original = np.linspace(0.0, 1.0, 100)
    candidates_ = np.array([-5.0] * 10 + [5.0] * 10)
    kept = match_distribution(original, candidates_, bins=2, discrete=False, max_examples=None, seed=0)
    assert kept.tolist() == list(range(20))
    lopsided = np.array([-5.0] * 10 + [5.0] * 3)
    picked = match_distribution(original, lopsided, bins=2, discrete=False, max_examples=None, seed=0)
    assert len(picked) == 6 and (lopsided[picked] > 0).sum() == 3


def test_match_distribution_respects_max_examples_and_is_deterministic() -> None:
    rng = np.random.default_rng(1)
    original = rng.uniform(size=300)
    candidates_ = rng.uniform(-0.2, 1.2, size=2000)
    kept = match_distribution(original, candidates_, bins=5, discrete=False, max_examples=37, seed=3)
    assert len(kept) == 37
    counts = np.bincount(expected_bins(original, candidates_[kept], 5), minlength=5)
    shares = np.bincount(expected_bins(original, original, 5), minlength=5) / len(original)
    assert np.all(np.abs(counts - 37 * shares) < 1)
    again = match_distribution(original, candidates_, bins=5, discrete=False, max_examples=37, seed=3)
    other = match_distribution(original, candidates_, bins=5, discrete=False, max_examples=37, seed=4)
    assert np.array_equal(kept, again)
    assert not np.array_equal(kept, other)


def test_match_distribution_edge_cases() -> None:
    assert match_distribution(np.ones(5), np.zeros(0), bins=3, discrete=False, max_examples=None, seed=0).size == 0
    with pytest.raises(ValueError):
        match_distribution(np.zeros(0), np.ones(3), bins=3, discrete=False, max_examples=None, seed=0)
    with pytest.raises(ValueError):
        match_distribution(np.ones(3), np.array([np.nan]), bins=3, discrete=False, max_examples=None, seed=0)
    # Regression heads give [N, 1].
    scores = np.arange(10.0)[:, None]
    assert match_distribution(scores, scores, bins=2, discrete=False, max_examples=None, seed=0).tolist() == list(
        range(10)
    )


def test_subsample() -> None:
    assert subsample(5, None, 0).tolist() == [0, 1, 2, 3, 4]
    assert subsample(5, 9, 0).tolist() == [0, 1, 2, 3, 4]
    picked = subsample(100, 7, 0)
    assert len(picked) == 7 and np.array_equal(picked, np.unique(picked)) and picked.max() < 100
    assert np.array_equal(picked, subsample(100, 7, 0)) and not np.array_equal(picked, subsample(100, 7, 1))


# ----------------------------------------------------------------------------------------------------------
# select
# ----------------------------------------------------------------------------------------------------------


def test_select_without_filter_subsamples() -> None:
    cfg = AugmentConfig(perturb=PerturbConfig(copies=1), max_examples=10, seed=2)
    assert np.array_equal(select(50, cfg, None, None, discrete=True), subsample(50, 10, 2))
    assert select(8, cfg, None, None, discrete=True).tolist() == list(range(8))
    unlimited = AugmentConfig(perturb=PerturbConfig(copies=1))
    assert select(30, unlimited, None, None, discrete=False).tolist() == list(range(30))


def test_select_match_teacher() -> None:
    cfg = AugmentConfig(perturb=PerturbConfig(copies=1), filter="match_teacher", filter_bins=4, seed=1)
    with pytest.raises(ValueError):
        select(3, cfg, None, np.zeros(3), discrete=False)
    with pytest.raises(ValueError):
        select(3, cfg, np.zeros(3), None, discrete=False)
    with pytest.raises(ValueError):
        select(4, cfg, np.zeros(3), np.zeros(3), discrete=False)

    rng = np.random.default_rng(2)
    original_logits = rng.normal(size=(60, 3)) + np.array([2.0, 0.0, 0.0])
    candidate_logits = rng.normal(size=(200, 3))
    picked = select(200, cfg, original_logits, candidate_logits, discrete=True)
    direct = match_distribution(
        original_logits.argmax(1), candidate_logits.argmax(1), bins=4, discrete=True, max_examples=None, seed=1
    )
    assert np.array_equal(picked, direct) and len(picked) > 0

    scores = rng.normal(size=(80, 1))
    candidate_scores = rng.normal(size=(120, 1))
    capped = AugmentConfig(
        perturb=PerturbConfig(copies=1), filter="match_teacher", filter_bins=4, max_examples=20, seed=1
    )
    picked_scores = select(120, capped, scores, candidate_scores, discrete=False)
    assert len(picked_scores) == 20
    assert np.array_equal(
        picked_scores,
        match_distribution(scores, candidate_scores, bins=4, discrete=False, max_examples=20, seed=1),
    )
