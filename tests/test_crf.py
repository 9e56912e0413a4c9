"""Tests of kdlab.structured.crf against brute-force enumeration of all C^n tag sequences.

The reference scores every sequence with its own indexing code (not crf_sequence_score), in float64, so a wrong
recursion, an off-by-one at the sequence end or a mask leak shows up as a numeric mismatch.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import Tensor

from kdlab.structured import (
    PAD_TAG,
    crf_kbest,
    crf_log_partition,
    crf_marginals,
    crf_sequence_score,
    crf_viterbi,
)

F64 = torch.float64
LENGTHS = (5, 1, 3, 4, 2)  # a batch mixing lengths 1..5; padded to L = 5
TOL = 1e-9


Potentials = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]


def make(num_tags: int, seed: int, lengths: tuple[int, ...] = LENGTHS, pad: int = 0) -> Potentials:
    """Random float64 potentials (emissions, transitions, start, end, mask) with right padding."""
    gen = torch.Generator().manual_seed(seed)
    length = max(lengths) + pad
    emissions = torch.randn(len(lengths), length, num_tags, generator=gen, dtype=F64) * 2
    transitions = torch.randn(num_tags, num_tags, generator=gen, dtype=F64) * 2
    start = torch.randn(num_tags, generator=gen, dtype=F64)
    end = torch.randn(num_tags, generator=gen, dtype=F64)
    mask = torch.arange(length).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    return emissions, transitions, start, end, mask


class Brute:
    """All sequences of one row with their scores, by explicit enumeration."""

    def __init__(self, pot: Potentials, row: int) -> None:
        emissions, transitions, start, end, mask = pot
        self.n = n = int(mask[row].sum())
        self.num_tags = c = emissions.shape[2]
        self.seqs = torch.tensor(list(itertools.product(range(c), repeat=n)), dtype=torch.long)  # [C^n, n]
        em = emissions[row, :n]
        s = start[self.seqs[:, 0]] + end[self.seqs[:, -1]]
        s = s + em[torch.arange(n), self.seqs].sum(dim=1)
        if n > 1:
            s = s + transitions[self.seqs[:, :-1], self.seqs[:, 1:]].sum(dim=1)
        self.scores = s
        self.log_z = torch.logsumexp(s, dim=0)
        self.probs = torch.exp(s - self.log_z)

    def node(self) -> Tensor:
        out = torch.zeros(self.n, self.num_tags, dtype=F64)
        for i in range(self.n):
            out[i].index_add_(0, self.seqs[:, i], self.probs)
        return out

    def edge(self) -> Tensor:
        out = torch.zeros(max(self.n - 1, 0), self.num_tags, self.num_tags, dtype=F64)
        for i in range(self.n - 1):
            for seq, p in zip(self.seqs.tolist(), self.probs.tolist(), strict=True):
                out[i, seq[i], seq[i + 1]] += p
        return out


def rows(pot: Potentials) -> list[Brute]:
    return [Brute(pot, b) for b in range(pot[0].shape[0])]


CASES = [(c, seed) for c in (2, 3) for seed in (0, 1)]


@pytest.mark.parametrize(("num_tags", "seed"), CASES)
def test_log_partition_and_sequence_score_match_enumeration(num_tags: int, seed: int) -> None:
    pot = make(num_tags, seed)
    log_z = crf_log_partition(*pot)
    assert log_z.dtype == F64 and log_z.shape == (len(LENGTHS),)
    for b, ref in enumerate(rows(pot)):
        assert abs(log_z[b].item() - ref.log_z.item()) < TOL
        # Score a few sequences of this row through the batched API (other rows get arbitrary tags).
        for j in (0, len(ref.seqs) // 2, len(ref.seqs) - 1):
            tags = torch.where(pot[4], 1, PAD_TAG)
            tags[b, : ref.n] = ref.seqs[j]
            score = crf_sequence_score(*pot[:4], tags, pot[4])
            assert abs(score[b].item() - ref.scores[j].item()) < TOL


@pytest.mark.parametrize(("num_tags", "seed"), CASES)
def test_marginals_match_enumeration(num_tags: int, seed: int) -> None:
    pot = make(num_tags, seed)
    node, edge = crf_marginals(*pot)
    length = pot[0].shape[1]
    assert node.shape == (len(LENGTHS), length, num_tags)
    assert edge.shape == (len(LENGTHS), length - 1, num_tags, num_tags)
    for b, ref in enumerate(rows(pot)):
        n = ref.n
        torch.testing.assert_close(node[b, :n], ref.node(), atol=TOL, rtol=0)
        torch.testing.assert_close(edge[b, : n - 1], ref.edge(), atol=TOL, rtol=0)
        assert torch.all(node[b, n:] == 0) and torch.all(edge[b, n - 1 :] == 0)
        torch.testing.assert_close(node[b, :n].sum(-1), torch.ones(n, dtype=F64), atol=TOL, rtol=0)
        if n > 1:
            torch.testing.assert_close(edge[b, : n - 1].sum((-1, -2)), torch.ones(n - 1, dtype=F64), atol=TOL, rtol=0)
            torch.testing.assert_close(edge[b, : n - 1].sum(-1), node[b, : n - 1], atol=TOL, rtol=0)
            torch.testing.assert_close(edge[b, : n - 1].sum(-2), node[b, 1:n], atol=TOL, rtol=0)


@pytest.mark.parametrize(("num_tags", "seed"), CASES)
def test_viterbi_is_the_argmax(num_tags: int, seed: int) -> None:
    pot = make(num_tags, seed)
    tags, scores = crf_viterbi(*pot)
    assert tags.dtype == torch.long and tags.shape == pot[4].shape
    for b, ref in enumerate(rows(pot)):
        best = int(ref.scores.argmax())
        assert tags[b, : ref.n].tolist() == ref.seqs[best].tolist()
        assert torch.all(tags[b, ref.n :] == PAD_TAG)
        assert abs(scores[b].item() - ref.scores[best].item()) < TOL
    # The decoded tags (with PAD_TAG at padding) can be scored back.
    torch.testing.assert_close(crf_sequence_score(*pot[:4], tags, pot[4]), scores, atol=TOL, rtol=0)


@pytest.mark.parametrize("k", [1, 3, 40])
@pytest.mark.parametrize(("num_tags", "seed"), CASES)
def test_kbest_is_the_sorted_top_k(num_tags: int, seed: int, k: int) -> None:
    pot = make(num_tags, seed)
    tags, scores = crf_kbest(*pot[:4], k, pot[4])
    assert tags.shape == (len(LENGTHS), k, pot[0].shape[1]) and scores.shape == (len(LENGTHS), k)
    for b, ref in enumerate(rows(pot)):
        order = torch.argsort(ref.scores, descending=True)
        have = min(k, len(order))
        for r in range(have):
            assert abs(scores[b, r].item() - ref.scores[order[r]].item()) < TOL
            assert tags[b, r, : ref.n].tolist() == ref.seqs[order[r]].tolist()
        # Fewer than k sequences: -inf scores and the best sequence's tags.
        assert torch.all(torch.isneginf(scores[b, have:]))
        for r in range(have, k):
            assert tags[b, r].tolist() == tags[b, 0].tolist()
        assert torch.all(tags[b, :, ref.n :] == PAD_TAG)
    assert k <= num_tags**5 or torch.isneginf(scores[0, -1])  # the longest row runs out only if C^5 < k
    viterbi_tags, viterbi_scores = crf_viterbi(*pot)
    assert torch.equal(tags[:, 0], viterbi_tags)
    torch.testing.assert_close(scores[:, 0], viterbi_scores, atol=TOL, rtol=0)


def test_padding_is_ignored() -> None:
    """Extra padding, and any values (even nan/inf) in padded emissions, change no result."""
    pot = make(3, 5)
    padded = make(3, 5, pad=2)
    emissions = padded[0].clone()
    emissions[:, : pot[0].shape[1]] = pot[0]
    emissions[~padded[4]] = torch.randn(int((~padded[4]).sum()), 3, dtype=F64) * 100
    emissions[1, 3, 0], emissions[2, 4, 1] = float("nan"), float("inf")
    longer = (emissions, pot[1], pot[2], pot[3], padded[4])
    length = pot[0].shape[1]

    torch.testing.assert_close(crf_log_partition(*longer), crf_log_partition(*pot), atol=0, rtol=0)
    node_a, edge_a = crf_marginals(*pot)
    node_b, edge_b = crf_marginals(*longer)
    assert not node_b.isnan().any() and not edge_b.isnan().any()
    torch.testing.assert_close(node_b[:, :length], node_a, atol=0, rtol=0)
    torch.testing.assert_close(edge_b[:, : length - 1], edge_a, atol=0, rtol=0)
    assert torch.all(node_b[:, length:] == 0) and torch.all(edge_b[:, length - 1 :] == 0)
    tags_a, scores_a = crf_viterbi(*pot)
    tags_b, scores_b = crf_viterbi(*longer)
    assert torch.equal(tags_b[:, :length], tags_a) and torch.all(tags_b[:, length:] == PAD_TAG)
    torch.testing.assert_close(scores_b, scores_a, atol=0, rtol=0)
    ktags_a, kscores_a = crf_kbest(*pot[:4], 4, pot[4])
    ktags_b, kscores_b = crf_kbest(*longer[:4], 4, longer[4])
    assert torch.equal(ktags_b[:, :, :length], ktags_a)
    torch.testing.assert_close(kscores_b, kscores_a, atol=0, rtol=0)
    padded_tags = torch.cat([tags_a, torch.full((len(LENGTHS), 2), 7)], dim=1)  # junk tags at padding
    torch.testing.assert_close(crf_sequence_score(*longer[:4], padded_tags, longer[4]), scores_a, atol=TOL, rtol=0)

    # Gradients never reach padded emissions, even the nan/inf ones.
    grad_emissions = emissions.clone().requires_grad_(True)
    crf_log_partition(grad_emissions, *longer[1:]).sum().backward()
    assert grad_emissions.grad is not None and not grad_emissions.grad.isnan().any()
    assert torch.all(grad_emissions.grad[~padded[4]] == 0)


def test_gradcheck_log_partition_and_sequence_score() -> None:
    emissions, transitions, start, end, mask = make(2, 7, lengths=(3, 1, 2))
    params = tuple(t.clone().requires_grad_(True) for t in (emissions, transitions, start, end))
    assert torch.autograd.gradcheck(lambda e, t, s, n: crf_log_partition(e, t, s, n, mask), params)
    tags = torch.tensor([[1, 0, 1], [0, PAD_TAG, PAD_TAG], [1, 1, PAD_TAG]])
    assert torch.autograd.gradcheck(lambda e, t, s, n: crf_sequence_score(e, t, s, n, tags, mask), params)


@pytest.mark.parametrize(("num_tags", "seed"), CASES)
def test_log_partition_gradients_are_marginals(num_tags: int, seed: int) -> None:
    """d logZ / d emissions = node marginals; d logZ / d transitions = Σ_{b,i} edge marginals; start/end likewise."""
    emissions, transitions, start, end, mask = make(num_tags, seed)
    params = [t.clone().requires_grad_(True) for t in (emissions, transitions, start, end)]
    crf_log_partition(*params, mask).sum().backward()
    node, edge = crf_marginals(emissions, transitions, start, end, mask)
    grads = [p.grad for p in params]
    assert all(g is not None for g in grads)
    torch.testing.assert_close(grads[0], node, atol=TOL, rtol=0)
    torch.testing.assert_close(grads[1], edge.sum((0, 1)), atol=TOL, rtol=0)
    torch.testing.assert_close(grads[2], node[:, 0].sum(0), atol=TOL, rtol=0)
    last = node[torch.arange(len(LENGTHS)), mask.sum(1) - 1]
    torch.testing.assert_close(grads[3], last.sum(0), atol=TOL, rtol=0)


def test_inference_mode_and_float32() -> None:
    pot = make(3, 11)
    node64, edge64 = crf_marginals(*pot)
    tags64, scores64 = crf_viterbi(*pot)
    pot32 = tuple(t.float() if t.is_floating_point() else t for t in pot)
    with torch.inference_mode():
        node, edge = crf_marginals(*pot32)
        tags, scores = crf_viterbi(*pot32)
        ktags, kscores = crf_kbest(*pot32[:4], 2, pot32[4])
        log_z = crf_log_partition(*pot32)
    assert node.dtype == edge.dtype == scores.dtype == log_z.dtype == torch.float32
    torch.testing.assert_close(node.double(), node64, atol=1e-5, rtol=0)
    torch.testing.assert_close(edge.double(), edge64, atol=1e-5, rtol=0)
    assert torch.equal(tags, tags64) and torch.equal(ktags[:, 0], tags64)
    torch.testing.assert_close(scores.double(), scores64, atol=1e-4, rtol=0)
    torch.testing.assert_close(kscores[:, 0], scores, atol=0, rtol=0)
    # Half-precision potentials are upcast to float32; no mask means every position is real.
    half = crf_log_partition(pot32[0][:1].half(), *pot32[1:4])
    assert half.dtype == torch.float32
    assert math.isfinite(half.item())


def test_bad_inputs_raise() -> None:
    emissions, transitions, start, end, mask = make(2, 0)
    with pytest.raises(ValueError, match="prefix"):
        crf_log_partition(emissions, transitions, start, end, mask.flip(1))
    empty = mask.clone()
    empty[1] = False
    with pytest.raises(ValueError, match="prefix"):
        crf_marginals(emissions, transitions, start, end, empty)
    with pytest.raises(ValueError, match="transitions"):
        crf_viterbi(emissions, transitions[:1], start, end, mask)
    with pytest.raises(ValueError, match="k must be"):
        crf_kbest(emissions, transitions, start, end, 0, mask)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        crf_sequence_score(emissions, transitions, start, end, torch.full(mask.shape, 2), mask)
