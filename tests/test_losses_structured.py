"""Tests of kdlab.losses.structured against brute-force enumeration of all C^n tag sequences and all trees.

The references score sequences and trees with their own indexing code in float64 (not the CRF / tree library), so
a wrong expectation term, a missed temperature, a T² slip or a padding leak shows up as a numeric mismatch.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import Tensor

from kdlab.losses.structured import (
    CRFPotentials,
    arc_kd,
    arc_kd_from_marginals,
    crf_entropy,
    crf_kd,
    crf_kd_from_marginals,
    crf_sequence_logprob,
    crf_to_token_kd,
    kbest_weights,
    map_labels,
    sequence_kd,
    token_kd,
    token_sequence_logprob,
    token_to_crf_kd,
)
from kdlab.structured import crf_kbest, crf_marginals, tree_arc_marginals

F64 = torch.float64
LENGTHS = (4, 1, 3, 2)  # a batch mixing lengths 1..4, padded to L = 4
TOL = 1e-9


def make_crf(num_tags: int, seed: int, lengths: tuple[int, ...] = LENGTHS, scale: float = 1.5) -> CRFPotentials:
    gen = torch.Generator().manual_seed(seed)
    emissions = torch.randn(len(lengths), max(lengths), num_tags, generator=gen, dtype=F64) * scale
    transitions = torch.randn(num_tags, num_tags, generator=gen, dtype=F64) * scale
    start = torch.randn(num_tags, generator=gen, dtype=F64)
    end = torch.randn(num_tags, generator=gen, dtype=F64)
    return CRFPotentials(emissions, transitions, start, end)


def make_mask(lengths: tuple[int, ...] = LENGTHS) -> Tensor:
    return torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]


def make_probs(num_tags: int, seed: int, lengths: tuple[int, ...] = LENGTHS) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(len(lengths), max(lengths), num_tags, generator=gen, dtype=F64) * 2, dim=-1)


def seq_score(pot: CRFPotentials, b: int, y: tuple[int, ...], temperature: float = 1.0) -> float:
    e, tr, st, en = pot
    s = st[y[0]] + en[y[-1]] + sum(e[b, i, y[i]] for i in range(len(y)))
    s = s + sum(tr[y[i - 1], y[i]] for i in range(1, len(y)))
    return float(s) / temperature


def seq_log_probs(pot: CRFPotentials, b: int, n: int, temperature: float = 1.0) -> dict[tuple[int, ...], float]:
    """log P(y) for every y in C^n by enumeration."""
    num_tags = pot.emissions.shape[-1]
    ys = list(itertools.product(range(num_tags), repeat=n))
    scores = torch.tensor([seq_score(pot, b, y, temperature) for y in ys], dtype=F64)
    log_p = scores - torch.logsumexp(scores, dim=0)
    return dict(zip(ys, log_p.tolist(), strict=True))


def product_log_probs(probs: Tensor, b: int, n: int) -> dict[tuple[int, ...], float]:
    num_tags = probs.shape[-1]
    return {
        y: float(sum(torch.log(probs[b, i, y[i]]) for i in range(n)))
        for y in itertools.product(range(num_tags), repeat=n)
    }


def kl(log_p: dict, log_q: dict) -> float:
    return sum(math.exp(lp) * (lp - log_q[y]) for y, lp in log_p.items())


def cross_entropy(log_p: dict, log_q: dict) -> float:
    return -sum(math.exp(lp) * log_q[y] for y, lp in log_p.items())


def tempered(pot: CRFPotentials, temperature: float) -> CRFPotentials:
    return CRFPotentials(*(t / temperature for t in pot))


# ----------------------------------------------------------------------------------------------------------------
# exactness against enumeration


@pytest.mark.parametrize("num_tags", [2, 3])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_crf_kd_equals_enumerated_kl(num_tags: int, temperature: float) -> None:
    student, teacher, mask = make_crf(num_tags, 1), make_crf(num_tags, 2), make_mask()
    expected = sum(
        kl(seq_log_probs(teacher, b, n, temperature), seq_log_probs(student, b, n, temperature))
        for b, n in enumerate(LENGTHS)
    )
    expected *= temperature**2 / len(LENGTHS)
    got = crf_kd(student, teacher, mask, temperature)
    assert got.dtype == F64
    assert got.item() == pytest.approx(expected, abs=TOL, rel=TOL)


@pytest.mark.parametrize("num_tags", [2, 3])
def test_crf_kd_from_marginals_cross_entropy_and_entropy(num_tags: int) -> None:
    temperature = 2.0
    student, teacher, mask = make_crf(num_tags, 3), make_crf(num_tags, 4), make_mask()
    node, edge = crf_marginals(*tempered(teacher, temperature), mask=mask)
    ce = crf_kd_from_marginals(student, node, edge, mask, temperature)
    expected_ce = sum(
        cross_entropy(seq_log_probs(teacher, b, n, temperature), seq_log_probs(student, b, n, temperature))
        for b, n in enumerate(LENGTHS)
    )
    assert ce.item() == pytest.approx(expected_ce * temperature**2 / len(LENGTHS), abs=TOL, rel=TOL)
    entropy = crf_entropy(teacher, mask, temperature)
    for b, n in enumerate(LENGTHS):
        log_p = seq_log_probs(teacher, b, n, temperature)
        assert entropy[b].item() == pytest.approx(cross_entropy(log_p, log_p), abs=TOL)
    with_entropy = crf_kd_from_marginals(student, node, edge, mask, temperature, teacher_entropy=entropy)
    assert with_entropy.item() == pytest.approx(crf_kd(student, teacher, mask, temperature).item(), abs=TOL)


@pytest.mark.parametrize("num_tags", [2, 3])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_token_to_crf_kd_equals_enumerated_kl(num_tags: int, temperature: float) -> None:
    student, probs, mask = make_crf(num_tags, 5), make_probs(num_tags, 6), make_mask()
    expected = sum(
        kl(product_log_probs(probs, b, n), seq_log_probs(student, b, n, temperature)) for b, n in enumerate(LENGTHS)
    )
    got = token_to_crf_kd(student, probs, mask, temperature)
    assert got.item() == pytest.approx(expected * temperature**2 / len(LENGTHS), abs=TOL, rel=TOL)


@pytest.mark.parametrize("num_tags", [2, 3])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_crf_to_token_kd_matches_enumerated_marginals(num_tags: int, temperature: float) -> None:
    teacher, mask = make_crf(num_tags, 7), make_mask()
    gen = torch.Generator().manual_seed(8)
    logits = torch.randn(len(LENGTHS), max(LENGTHS), num_tags, generator=gen, dtype=F64) * 2
    q = torch.softmax(logits / temperature, dim=-1)
    total_kl = total_ce_gap = 0.0
    for b, n in enumerate(LENGTHS):
        log_p = seq_log_probs(teacher, b, n, temperature)
        marg = torch.zeros(n, num_tags, dtype=F64)
        for y, lp in log_p.items():
            for i in range(n):
                marg[i, y[i]] += math.exp(lp)
        total_kl += float((marg * (marg.log() - q[b, :n].log())).sum())
        # The cross-entropy part is the exact sequence-level cross-entropy to the product student.
        seq_ce = cross_entropy(log_p, product_log_probs(q, b, n))
        total_ce_gap += seq_ce - float(-(marg * marg.log()).sum())
    got = crf_to_token_kd(logits, teacher, mask, temperature)
    assert got.item() == pytest.approx(total_kl * temperature**2 / len(LENGTHS), abs=TOL, rel=TOL)
    assert got.item() == pytest.approx(total_ce_gap * temperature**2 / len(LENGTHS), abs=TOL, rel=TOL)


@pytest.mark.parametrize("num_tags", [2, 3])
def test_crf_to_token_kd_is_sequence_kl_for_product_teacher(num_tags: int) -> None:
    temperature = 2.0
    emissions = make_crf(num_tags, 9).emissions
    zeros = torch.zeros(num_tags, num_tags, dtype=F64)
    teacher = CRFPotentials(emissions, zeros, zeros[0], zeros[0])
    gen = torch.Generator().manual_seed(10)
    logits = torch.randn(emissions.shape, generator=gen, dtype=F64)
    q = torch.softmax(logits / temperature, dim=-1)
    expected = sum(
        kl(seq_log_probs(teacher, b, n, temperature), product_log_probs(q, b, n)) for b, n in enumerate(LENGTHS)
    )
    got = crf_to_token_kd(logits, teacher, make_mask(), temperature)
    assert got.item() == pytest.approx(expected * temperature**2 / len(LENGTHS), abs=TOL, rel=TOL)


@pytest.mark.parametrize("stochastic", [False, True])
def test_map_labels_equals_enumerated_mapped_marginals(stochastic: bool) -> None:
    teacher, mask = make_crf(3, 11), make_mask()
    if stochastic:
        label_map = torch.tensor([[0.7, 0.3], [0.0, 1.0], [0.4, 0.6]], dtype=F64)
    else:
        label_map = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=F64)
    node, edge = crf_marginals(*teacher, mask=mask)
    node_y, edge_y = map_labels(node, edge, label_map)
    assert edge_y is not None
    for b, n in enumerate(LENGTHS):
        exp_node = torch.zeros(n, 2, dtype=F64)
        exp_edge = torch.zeros(max(n - 1, 0), 2, 2, dtype=F64)
        for x, lp in seq_log_probs(teacher, b, n).items():
            for y in itertools.product(range(2), repeat=n):
                w = math.exp(lp) * torch.prod(torch.stack([label_map[x[i], y[i]] for i in range(n)]))
                for i in range(n):
                    exp_node[i, y[i]] += w
                for i in range(n - 1):
                    exp_edge[i, y[i], y[i + 1]] += w
        torch.testing.assert_close(node_y[b, :n], exp_node, atol=TOL, rtol=0)
        torch.testing.assert_close(edge_y[b, : n - 1], exp_edge, atol=TOL, rtol=0)
        assert float(node_y[b, n:].abs().sum()) == 0.0
    assert map_labels(node, None, label_map)[1] is None


@pytest.mark.parametrize("uniform", [False, True])
def test_sequence_kd_with_crf_logprob_equals_enumeration(uniform: bool) -> None:
    student, teacher, mask = make_crf(2, 12), make_crf(2, 13), make_mask()
    k = 3  # the length-1 row has only 2 sequences: its third entry is -inf / weight 0
    tags, scores = crf_kbest(*teacher, k=k, mask=mask)
    weights = kbest_weights(scores, uniform=uniform)
    logprobs = crf_sequence_logprob(student, tags, mask)
    expected = 0.0
    for b, n in enumerate(LENGTHS):
        log_s = seq_log_probs(student, b, n)
        log_t = seq_log_probs(teacher, b, n)
        found = [tuple(tags[b, j, :n].tolist()) for j in range(k) if torch.isfinite(scores[b, j])]
        probs = torch.tensor([log_t[y] for y in found], dtype=F64).exp()
        w = torch.full_like(probs, 1 / len(found)) if uniform else probs / probs.sum()
        for j, y in enumerate(found):
            assert logprobs[b, j].item() == pytest.approx(log_s[y], abs=TOL)
            assert weights[b, j].item() == pytest.approx(w[j].item(), abs=TOL)
            expected -= w[j].item() * log_s[y]
    assert weights[1, 2].item() == 0.0
    assert sequence_kd(logprobs, weights).item() == pytest.approx(expected / len(LENGTHS), abs=TOL)


def test_token_sequence_logprob_matches_direct_sum() -> None:
    mask = make_mask()
    gen = torch.Generator().manual_seed(14)
    logits = torch.randn(len(LENGTHS), max(LENGTHS), 3, generator=gen, dtype=F64)
    tags = torch.randint(0, 3, (len(LENGTHS), 2, max(LENGTHS)), generator=gen).masked_fill(~mask[:, None], -1)
    got = token_sequence_logprob(logits, tags, mask)
    log_q = torch.log_softmax(logits, dim=-1)
    for b, n in enumerate(LENGTHS):
        for j in range(2):
            expected = sum(float(log_q[b, i, tags[b, j, i]]) for i in range(n))
            assert got[b, j].item() == pytest.approx(expected, abs=TOL)


# ----------------------------------------------------------------------------------------------------------------
# parsing


def enumerate_trees(n: int, single_root: bool = True) -> list[tuple[int, ...]]:
    """All head assignments (heads[d-1] for d = 1..n) that form a tree rooted at 0."""
    trees = []
    for heads in itertools.product(range(n + 1), repeat=n):
        if any(h == d for d, h in enumerate(heads, start=1)):
            continue
        if single_root and sum(h == 0 for h in heads) != 1:
            continue
        ok = True
        for d in range(1, n + 1):
            seen, node = set(), d
            while node != 0 and ok:
                if node in seen:
                    ok = False
                seen.add(node)
                node = heads[node - 1]
        if ok:
            trees.append(heads)
    return trees


ARC_LENGTHS = (4, 1, 3, 2)


def make_arcs(seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    size = max(ARC_LENGTHS) + 1
    return torch.randn(len(ARC_LENGTHS), size, size, generator=gen, dtype=F64) * 1.5


def head_log_probs(logits: Tensor, b: int, n: int, temperature: float) -> Tensor:
    """log p_s(h | d) [n+1, n+1] by a plain loop over valid heads."""
    out = torch.full((n + 1, n + 1), float("-inf"), dtype=F64)
    for d in range(1, n + 1):
        heads = [h for h in range(n + 1) if h != d]
        out[heads, d] = torch.log_softmax(logits[b, heads, d] / temperature, dim=0)
    return out


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("single_root", [True, False])
def test_arc_kd_cross_entropy_equals_enumerated_trees(temperature: float, single_root: bool) -> None:
    student, teacher = make_arcs(15), make_arcs(16)
    lengths = torch.tensor(ARC_LENGTHS)
    expected_ce = expected_kl = 0.0
    for b, n in enumerate(ARC_LENGTHS):
        trees = enumerate_trees(n, single_root)
        scores = torch.tensor(
            [sum(float(teacher[b, h, d]) for d, h in enumerate(t, start=1)) for t in trees], dtype=F64
        )
        p = torch.softmax(scores / temperature, dim=0)
        log_q = head_log_probs(student, b, n, temperature)
        tree_logq = torch.tensor([sum(float(log_q[h, d]) for d, h in enumerate(t, start=1)) for t in trees], dtype=F64)
        expected_ce += float(-(p * tree_logq).sum())
        mu = torch.zeros(n + 1, n + 1, dtype=F64)
        for pt, t in zip(p, trees, strict=True):
            for d, h in enumerate(t, start=1):
                mu[h, d] += pt
        expected_kl += float(torch.where(mu > 0, mu * (mu.log() - log_q), 0.0).sum())
    scale = temperature**2 / len(ARC_LENGTHS)
    marg = tree_arc_marginals(teacher / temperature, lengths, single_root=single_root)
    ce = arc_kd_from_marginals(student, marg, lengths, temperature)
    assert ce.item() == pytest.approx(expected_ce * scale, abs=1e-8, rel=1e-8)
    got = arc_kd(student, teacher, lengths, temperature, single_root=single_root)
    assert got.item() == pytest.approx(expected_kl * scale, abs=1e-8, rel=1e-8)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_arc_kd_zero_when_student_matches_marginals(temperature: float) -> None:
    teacher, lengths = make_arcs(17), torch.tensor(ARC_LENGTHS)
    mu = tree_arc_marginals(teacher / temperature, lengths)
    student = temperature * torch.log(mu.clamp(min=1e-300))
    assert abs(arc_kd(student, teacher, lengths, temperature).item()) < 1e-10
    assert arc_kd(make_arcs(18), teacher, lengths, temperature).item() > 1e-3


# ----------------------------------------------------------------------------------------------------------------
# properties


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_zero_when_student_equals_teacher(temperature: float) -> None:
    pot, mask = make_crf(3, 19), make_mask()
    assert abs(crf_kd(pot, pot, mask, temperature).item()) < 1e-10
    logits = pot.emissions
    probs = torch.softmax(logits / temperature, dim=-1)
    assert abs(token_kd(logits, probs, mask, temperature).item()) < 1e-12
    zeros = torch.zeros(3, 3, dtype=F64)
    product_teacher = CRFPotentials(logits, zeros, zeros[0], zeros[0])
    assert abs(crf_to_token_kd(logits, product_teacher, mask, temperature).item()) < 1e-10
    # token_to_crf_kd is 0 for a CRF student with no transitions equal to the teacher's token distributions.
    product_student = CRFPotentials(logits, zeros, zeros[0], zeros[0])
    assert abs(token_to_crf_kd(product_student, probs, mask, temperature).item()) < 1e-10


@pytest.mark.parametrize("seed", range(5))
def test_non_negative_on_random_inputs(seed: int) -> None:
    mask = make_mask()
    student, teacher = make_crf(3, 100 + seed, scale=3.0), make_crf(3, 200 + seed, scale=3.0)
    probs = make_probs(3, 300 + seed)
    lengths = torch.tensor(ARC_LENGTHS)
    for temperature in (0.5, 1.0, 4.0):
        values = [
            crf_kd(student, teacher, mask, temperature),
            token_to_crf_kd(student, probs, mask, temperature),
            crf_to_token_kd(student.emissions, teacher, mask, temperature),
            token_kd(student.emissions, probs, mask, temperature),
            arc_kd(make_arcs(400 + seed), make_arcs(500 + seed), lengths, temperature),
        ]
        for value in values:
            assert value.item() > 1e-6  # distinct random distributions: strictly positive


def spoil(t: Tensor, mask: Tensor, value: float) -> Tensor:
    return t.masked_fill(~mask.unsqueeze(-1), value)


def test_padding_is_ignored() -> None:
    mask = make_mask()
    student, teacher, probs = make_crf(3, 20), make_crf(3, 21), make_probs(3, 22)
    bad_student = student._replace(emissions=spoil(student.emissions, mask, float("nan")))
    bad_teacher = teacher._replace(emissions=spoil(teacher.emissions, mask, 1e6))
    bad_probs = spoil(probs, mask, float("nan"))
    pairs = [
        (crf_kd(student, teacher, mask, 2.0), crf_kd(bad_student, bad_teacher, mask, 2.0)),
        (token_to_crf_kd(student, probs, mask, 2.0), token_to_crf_kd(bad_student, bad_probs, mask, 2.0)),
        (
            crf_to_token_kd(student.emissions, teacher, mask, 2.0),
            crf_to_token_kd(bad_student.emissions, bad_teacher, mask, 2.0),
        ),
        (token_kd(student.emissions, probs, mask, 2.0), token_kd(bad_student.emissions, bad_probs, mask, 2.0)),
    ]
    node, edge = crf_marginals(*tempered(teacher, 2.0), mask=mask)
    pairs.append(
        (
            crf_kd_from_marginals(student, node, edge, mask, 2.0),
            crf_kd_from_marginals(
                bad_student, spoil(node, mask, 7.0), edge.masked_fill(~mask[:, 1:, None, None], 7.0), mask, 2.0
            ),
        )
    )
    lengths = torch.tensor(ARC_LENGTHS)
    s_arcs, t_arcs = make_arcs(23), make_arcs(24)
    size = s_arcs.shape[1]
    pos = torch.arange(size)
    outside = (pos[None, :, None] > lengths[:, None, None]) | (pos[None, None, :] > lengths[:, None, None])
    outside = outside | (pos[None, :, None] == pos[None, None, :]) | (pos[None, None, :] == 0)
    pairs.append(
        (
            arc_kd(s_arcs, t_arcs, lengths, 2.0),
            arc_kd(s_arcs.masked_fill(outside, float("nan")), t_arcs.masked_fill(outside, 50.0), lengths, 2.0),
        )
    )
    for clean, spoiled in pairs:
        assert torch.isfinite(spoiled)
        assert spoiled.item() == pytest.approx(clean.item(), abs=1e-12, rel=1e-12)
    # gradients at padded student positions are exactly 0 (and not nan)
    emissions = bad_student.emissions.clone().requires_grad_(True)
    crf_kd(bad_student._replace(emissions=emissions), teacher, mask, 2.0).backward()
    assert emissions.grad is not None
    assert float(emissions.grad[~mask].abs().sum()) == 0.0
    assert torch.isfinite(emissions.grad).all()


def test_temperature_squared_scaling() -> None:
    student, teacher, mask = make_crf(2, 25), make_crf(2, 26), make_mask()
    t = 2.0
    at_t = crf_kd(student, teacher, mask, t)
    unscaled = crf_kd(tempered(student, t), tempered(teacher, t), mask, 1.0)
    assert at_t.item() == pytest.approx(t**2 * unscaled.item(), rel=1e-12)
    probs = make_probs(2, 27)
    assert token_to_crf_kd(student, probs, mask, t).item() == pytest.approx(
        t**2 * token_to_crf_kd(tempered(student, t), probs, mask, 1.0).item(), rel=1e-12
    )


def test_gradient_of_kl_equals_gradient_of_cross_entropy() -> None:
    student, teacher, mask = make_crf(3, 28), make_crf(3, 29), make_mask()
    leaves = [t.clone().requires_grad_(True) for t in student]
    grads_kl = torch.autograd.grad(crf_kd(CRFPotentials(*leaves), teacher, mask, 2.0), leaves)
    node, edge = crf_marginals(*tempered(teacher, 2.0), mask=mask)
    grads_ce = torch.autograd.grad(crf_kd_from_marginals(CRFPotentials(*leaves), node, edge, mask, 2.0), leaves)
    for a, b in zip(grads_kl, grads_ce, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    # the teacher gets no gradient
    teacher_leaves = [t.clone().requires_grad_(True) for t in teacher]
    loss = crf_kd(student, CRFPotentials(*teacher_leaves), mask, 2.0)
    assert not loss.requires_grad


def test_gradcheck_crf_kd_and_token_to_crf_kd() -> None:
    lengths = (3, 1, 2)
    mask = make_mask(lengths)
    teacher = make_crf(2, 30, lengths)
    probs = make_probs(2, 31, lengths)
    leaves = tuple(t.clone().requires_grad_(True) for t in make_crf(2, 32, lengths))
    assert torch.autograd.gradcheck(lambda *s: crf_kd(CRFPotentials(*s), teacher, mask, 1.5), leaves)
    assert torch.autograd.gradcheck(lambda *s: token_to_crf_kd(CRFPotentials(*s), probs, mask, 1.5), leaves)


def test_float32_and_half_inputs_compute_in_float32() -> None:
    student, teacher, mask = make_crf(3, 33), make_crf(3, 34), make_mask()
    s32 = CRFPotentials(*(t.float() for t in student))
    t16 = CRFPotentials(*(t.half() for t in teacher))
    value = crf_kd(s32, t16, mask, 2.0)
    assert value.dtype == torch.float32
    assert torch.isfinite(value)


def test_bad_inputs_raise() -> None:
    student, teacher, mask = make_crf(3, 35), make_crf(3, 36), make_mask()
    with pytest.raises(ValueError, match="temperature"):
        crf_kd(student, teacher, mask, 0.0)
    with pytest.raises(ValueError, match="differ"):
        crf_kd(student, make_crf(2, 37), mask)
    with pytest.raises(ValueError, match="prefix"):
        crf_kd(student, teacher, mask.flip(1))
    with pytest.raises(ValueError, match="teacher_probs"):
        token_to_crf_kd(student, make_probs(2, 38), mask)
    with pytest.raises(ValueError, match="B, L, C"):
        token_kd(student.emissions[0], make_probs(3, 38)[0], None)
    with pytest.raises(ValueError, match="rows summing"):
        map_labels(make_probs(3, 39), None, torch.ones(3, 2, dtype=F64))
    with pytest.raises(ValueError, match="edge_t"):
        crf_kd_from_marginals(student, make_probs(3, 40), torch.zeros(4, 2, 3, 3, dtype=F64), mask)
    with pytest.raises(ValueError, match="weights"):
        sequence_kd(torch.zeros(2, 3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="lengths"):
        arc_kd(make_arcs(41), make_arcs(42), torch.tensor([5, 1, 1, 1]))
    with pytest.raises(ValueError, match="tags"):
        crf_sequence_logprob(student, torch.full((4, 1, 4), 3), mask)
