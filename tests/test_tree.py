"""Tests of kdlab.structured.tree against brute-force enumeration of every dependency tree (n <= 5 words)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from kdlab.structured.tree import tree_arc_marginals, tree_log_partition, tree_score

LENGTHS = [3, 1, 5, 2, 4]
N = 6  # one more than the longest sentence, so every sentence has padding


def is_tree(heads: tuple[int, ...], single_root: bool) -> bool:
    """heads[i] is the head of word i+1; a tree iff every word reaches 0 by following heads."""
    n = len(heads)
    if single_root and sum(h == 0 for h in heads) != 1:
        return False
    for start in range(1, n + 1):
        node, steps = start, 0
        while node != 0:
            node = heads[node - 1]
            steps += 1
            if steps > n:
                return False
    return True


def all_trees(n: int, single_root: bool) -> list[tuple[int, ...]]:
    choices = [[h for h in range(n + 1) if h != d] for d in range(1, n + 1)]
    return [heads for heads in itertools.product(*choices) if is_tree(heads, single_root)]


def brute_force(scores: torch.Tensor, n: int, single_root: bool) -> tuple[float, torch.Tensor]:
    """Exact log Z and arc marginals [n+1, n+1] of one sentence (scores [>= n+1, >= n+1], float64)."""
    trees = all_trees(n, single_root)
    tree_scores = torch.stack([sum(scores[h, d + 1] for d, h in enumerate(heads)) for heads in trees])
    log_z = torch.logsumexp(tree_scores, dim=0)
    probs = torch.exp(tree_scores - log_z)
    marg = torch.zeros(n + 1, n + 1, dtype=torch.float64)
    for p, heads in zip(probs, trees, strict=True):
        for d, h in enumerate(heads):
            marg[h, d + 1] += p
    return log_z.item(), marg


def random_batch(seed: int, scale: float = 2.0, lengths: list[int] = LENGTHS, size: int = N) -> tuple:
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(len(lengths), size + 1, size + 1, generator=gen, dtype=torch.float64) * scale
    return scores, torch.tensor(lengths)


@pytest.mark.parametrize("single_root", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_log_partition_and_marginals_match_brute_force(single_root: bool, seed: int) -> None:
    scores, lengths = random_batch(seed)
    log_z = tree_log_partition(scores, lengths, single_root=single_root)
    marg = tree_arc_marginals(scores, lengths, single_root=single_root)
    assert log_z.shape == (len(LENGTHS),) and marg.shape == scores.shape
    for b, n in enumerate(LENGTHS):
        want_z, want_marg = brute_force(scores[b], n, single_root)
        assert log_z[b].item() == pytest.approx(want_z, abs=1e-8)
        torch.testing.assert_close(marg[b, : n + 1, : n + 1], want_marg, atol=1e-8, rtol=0)
        assert marg[b, n + 1 :].abs().max() == 0 and marg[b, :, n + 1 :].abs().max() == 0


@pytest.mark.parametrize("single_root", [True, False])
def test_marginals_are_the_gradient_and_sum_to_one(single_root: bool) -> None:
    scores, lengths = random_batch(2)
    scores.requires_grad_(True)
    (grad,) = torch.autograd.grad(tree_log_partition(scores, lengths, single_root).sum(), scores)
    with torch.no_grad():
        marg = tree_arc_marginals(scores, lengths, single_root)
    torch.testing.assert_close(marg, grad, atol=1e-10, rtol=0)
    sums = marg.sum(dim=1)  # [B, N+1]: total incoming probability of each dependent
    for b, n in enumerate(LENGTHS):
        torch.testing.assert_close(sums[b, 1 : n + 1], torch.ones(n, dtype=torch.float64), atol=1e-10, rtol=0)
        assert sums[b, 0] == 0 and sums[b, n + 1 :].abs().max() == 0
    assert torch.diagonal(marg, dim1=1, dim2=2).abs().max() == 0
    if single_root:
        torch.testing.assert_close(marg[:, 0].sum(dim=1), torch.ones(len(LENGTHS), dtype=torch.float64))


@pytest.mark.parametrize("single_root", [True, False])
def test_counts_trees_with_zero_scores(single_root: bool) -> None:
    # Cayley: (n+1)^(n-1) trees rooted at 0 over n words; n^(n-1) with a single word under ROOT.
    lengths = torch.tensor([1, 2, 3, 4, 5])
    log_z = tree_log_partition(torch.zeros(5, 6, 6, dtype=torch.float64), lengths, single_root)
    for b, n in enumerate(lengths.tolist()):
        count = n ** (n - 1) if single_root else (n + 1) ** (n - 1)
        assert count == len(all_trees(n, single_root))
        assert log_z[b].item() == pytest.approx(math.log(count), abs=1e-10)


@pytest.mark.parametrize("single_root", [True, False])
def test_padding_column_zero_and_diagonal_are_ignored(single_root: bool) -> None:
    scores, lengths = random_batch(3)
    changed = scores.clone()
    noise = torch.randn(scores.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64) * 50
    for b, n in enumerate(LENGTHS):
        changed[b, n + 1 :] += noise[b, n + 1 :]  # arcs from padded heads
        changed[b, :, n + 1 :] += noise[b, :, n + 1 :]  # arcs into padded words
    changed[:, :, 0] += noise[:, :, 0]  # arcs into ROOT
    changed += torch.diag_embed(torch.diagonal(noise, dim1=1, dim2=2))  # self loops
    for fn in (tree_log_partition, tree_arc_marginals):
        torch.testing.assert_close(fn(changed, lengths, single_root), fn(scores, lengths, single_root))
    # ... while a real arc does count
    changed[0, 1, 2] += 1.0
    assert not torch.allclose(tree_log_partition(changed, lengths, single_root), tree_log_partition(scores, lengths))


@pytest.mark.parametrize("single_root", [True, False])
def test_large_scores_are_stable(single_root: bool) -> None:
    # exp(500) per arc: a tree of 5 words weighs exp(2500), which overflows float64 without the per-column shift
    scores, lengths = random_batch(4)
    scores = scores + 500.0
    log_z = tree_log_partition(scores, lengths, single_root)
    marg = tree_arc_marginals(scores, lengths, single_root)
    assert torch.isfinite(log_z).all() and torch.isfinite(marg).all()
    for b, n in enumerate(LENGTHS):
        want_z, want_marg = brute_force(scores[b], n, single_root)
        assert log_z[b].item() == pytest.approx(want_z, abs=1e-8)
        torch.testing.assert_close(marg[b, : n + 1, : n + 1], want_marg, atol=1e-8, rtol=0)
    # float32 too (exp(100) overflows float32): less exact, but finite and close
    small = scores - 400.0
    log_z32 = tree_log_partition(small.float(), lengths, single_root)
    assert log_z32.dtype == torch.float32
    torch.testing.assert_close(log_z32.double(), tree_log_partition(small, lengths, single_root), rtol=1e-5, atol=1e-4)
    marg32 = tree_arc_marginals(small.float(), lengths, single_root)
    torch.testing.assert_close(marg32.double(), marg, rtol=0, atol=1e-4)


def test_marginals_under_inference_mode_and_no_grad() -> None:
    scores, lengths = random_batch(5)
    want = tree_arc_marginals(scores, lengths)
    with torch.inference_mode():
        torch.testing.assert_close(tree_arc_marginals(scores, lengths), want)
    with torch.no_grad():
        torch.testing.assert_close(tree_arc_marginals(scores, lengths), want)


@pytest.mark.parametrize("single_root", [True, False])
def test_gradcheck_log_partition(single_root: bool) -> None:
    scores, lengths = random_batch(6, scale=1.0, lengths=[3, 1, 2], size=3)
    scores.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: tree_log_partition(s, lengths, single_root), (scores,))


def test_tree_score_and_probabilities() -> None:
    scores, lengths = random_batch(7)
    heads = torch.full((len(LENGTHS), N + 1), -100)  # padding and heads[:, 0] hold garbage
    # a right-branching chain: word 1 under ROOT, word d under word d-1
    for b, n in enumerate(LENGTHS):
        heads[b, 1 : n + 1] = torch.arange(0, n)
    got = tree_score(scores, heads, lengths)
    for b, n in enumerate(LENGTHS):
        want = sum(scores[b, d - 1, d].item() for d in range(1, n + 1))
        assert got[b].item() == pytest.approx(want, abs=1e-12)
    # probabilities of all trees of each sentence sum to 1
    for single_root in (True, False):
        log_z = tree_log_partition(scores, lengths, single_root)
        for b, n in enumerate(LENGTHS):
            trees = all_trees(n, single_root)
            batch_heads = torch.full((len(trees), N + 1), 0)
            batch_heads[:, 1 : n + 1] = torch.tensor(trees)
            s = tree_score(scores[b].expand(len(trees), -1, -1), batch_heads, torch.full((len(trees),), n))
            assert torch.logsumexp(s, dim=0).item() == pytest.approx(log_z[b].item(), abs=1e-8)
