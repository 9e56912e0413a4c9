"""WordObjective: each KD case against direct calls of the structured losses, gold terms, annealing, gradients."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from kdlab.data.encoding import IGNORE_LABEL
from kdlab.engine.teacher import TeacherSignals
from kdlab.losses.structured import (
    CRFPotentials,
    arc_kd,
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
from kdlab.methods.stages import Stage
from kdlab.methods.word_objective import WordObjective, annealed_lambda, chain_entropy
from kdlab.structured.crf import crf_kbest, crf_marginals

STAGE = Stage("vanilla", (), True, 1)
LENGTHS = [4, 2, 3]
B, W = len(LENGTHS), max(LENGTHS)
T = 2.0
D = torch.float64


@dataclass
class TaggerOut:
    logits: torch.Tensor
    transitions: torch.Tensor | None = None
    start: torch.Tensor | None = None
    end: torch.Tensor | None = None


@dataclass
class ParserOut:
    logits: torch.Tensor
    rel_logits: torch.Tensor


def mask() -> torch.Tensor:
    return torch.arange(W)[None, :] < torch.tensor(LENGTHS)[:, None]


def make_batch(**fields: torch.Tensor) -> dict[str, torch.Tensor]:
    batch = {
        "input_ids": torch.ones(B, 6, dtype=torch.long),
        "attention_mask": torch.ones(B, 6, dtype=torch.long),
        "word_mask": mask(),
    }
    batch.update(fields)
    return batch


def tagger(c: int, crf: bool, seed: int, grad: bool = True) -> TaggerOut:
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=D).requires_grad_(grad)

    if crf:
        return TaggerOut(r(B, W, c), r(c, c), r(c), r(c))
    return TaggerOut(r(B, W, c))


def teacher_of(out: TaggerOut) -> TeacherSignals:
    extras = {}
    if out.transitions is not None:
        extras = {"transitions": out.transitions.detach(), "start": out.start.detach(), "end": out.end.detach()}
    return TeacherSignals(logits=out.logits.detach(), extras=extras)


def pot(out: TaggerOut) -> CRFPotentials:
    return CRFPotentials(out.logits, out.transitions, out.start, out.end)


def labels(c: int, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (B, W), generator=g)
    return y.masked_fill(~mask(), IGNORE_LABEL)


def kd_of(objective: WordObjective, student, teacher: TeacherSignals, batch=None) -> torch.Tensor:
    step = objective(STAGE, None, student, {}, teacher, batch if batch is not None else make_batch())
    return step.total


def structural(**kw) -> WordObjective:
    return WordObjective("structural", 1.0, T, **kw)


# ------------------------------------------------------------------------------------------------------------------
# KD cases against the losses


@pytest.mark.parametrize("t_crf", [True, False])
@pytest.mark.parametrize("s_crf", [True, False])
def test_structural_cases_match_the_losses(t_crf: bool, s_crf: bool) -> None:
    s, t = tagger(5, s_crf, 0), tagger(5, t_crf, 1)
    got = kd_of(structural(), s, teacher_of(t))
    m = mask()
    if t_crf and s_crf:
        want = crf_kd(pot(s), pot(t), m, T)
    elif t_crf:
        want = crf_to_token_kd(s.logits, pot(t), m, T)
    elif s_crf:
        want = token_to_crf_kd(pot(s), torch.softmax(t.logits / T, -1), m, T)
    else:
        want = token_kd(s.logits, torch.softmax(t.logits / T, -1), m, T)
    assert got.dtype == D
    torch.testing.assert_close(got, want)
    assert float(got.detach()) > 0


@pytest.mark.parametrize("t_crf", [True, False])
def test_structural_kd_is_zero_for_an_identical_student(t_crf: bool) -> None:
    t = tagger(4, t_crf, 1)
    s = TaggerOut(t.logits.detach().clone().requires_grad_())
    if t_crf:
        s = TaggerOut(s.logits, *(p.detach().clone().requires_grad_() for p in (t.transitions, t.start, t.end)))
    assert abs(float(kd_of(structural(), s, teacher_of(t)).detach())) < 1e-6
    # identity label map (case 4 machinery) gives the same zero
    identity = torch.eye(4, dtype=D)
    assert abs(float(kd_of(structural(label_map=identity), s, teacher_of(t)).detach())) < 1e-6


def test_softmax_teacher_to_crf_student_with_zero_transitions_is_zero() -> None:
    t = tagger(4, False, 1)
    zeros = [torch.zeros(4, 4, dtype=D, requires_grad=True), *(torch.zeros(4, dtype=D) for _ in range(2))]
    s = TaggerOut(t.logits.detach().clone().requires_grad_(), *zeros)
    assert abs(float(kd_of(structural(), s, teacher_of(t)).detach())) < 1e-6


@pytest.mark.parametrize("t_crf", [True, False])
@pytest.mark.parametrize("s_crf", [True, False])
def test_case4_label_map_matches_mapped_marginals(t_crf: bool, s_crf: bool) -> None:
    ct, cs = 5, 3
    label_map = torch.tensor(
        [[1, 0, 0], [0, 1, 0], [0, 0.5, 0.5], [0, 0, 1], [0.2, 0.3, 0.5]], dtype=D
    )  # stochastic rows
    s, t = tagger(cs, s_crf, 0), tagger(ct, t_crf, 1)
    got = kd_of(structural(label_map=label_map), s, teacher_of(t))
    m = mask()
    if t_crf:
        node, edge = crf_marginals(*(p.detach() / T for p in pot(t)), mask=m)
    else:
        node = torch.softmax(t.logits.detach() / T, -1) * m[..., None]
        edge = node[:, :-1, :, None] * node[:, 1:, None, :]
    node_y, edge_y = map_labels(node, edge, label_map)
    if s_crf:
        want = crf_kd_from_marginals(pot(s), node_y, edge_y, m, T, teacher_entropy=chain_entropy(node_y, edge_y, m))
    else:
        want = token_kd(s.logits, node_y, m, T)
    torch.testing.assert_close(got, want)
    assert float(got.detach()) >= -1e-9


def test_case4_identity_map_equals_crf_kd() -> None:
    s, t = tagger(4, True, 0), tagger(4, True, 1)
    got = kd_of(structural(label_map=torch.eye(4, dtype=D)), s, teacher_of(t))
    torch.testing.assert_close(got, crf_kd(pot(s), pot(t), mask(), T))


def test_chain_entropy_of_crf_marginals_is_the_crf_entropy() -> None:
    from kdlab.losses.structured import crf_entropy

    t = tagger(3, True, 1, grad=False)
    node, edge = crf_marginals(*pot(t), mask=mask())
    torch.testing.assert_close(chain_entropy(node, edge, mask()), crf_entropy(pot(t), mask()))


def test_case4_needs_matching_map_and_no_map_needs_equal_labels() -> None:
    s, t = tagger(3, False, 0), tagger(5, False, 1)
    with pytest.raises(ValueError, match="label_map"):
        kd_of(structural(), s, teacher_of(t))
    with pytest.raises(ValueError, match=r"label_map must be \[Ct, Cs\]"):
        kd_of(structural(label_map=torch.eye(3, dtype=D)), s, teacher_of(t))
    with pytest.raises(ValueError, match="rows summing to 1"):
        structural(label_map=torch.ones(5, 3))


@pytest.mark.parametrize("t_crf", [True, False])
@pytest.mark.parametrize("s_crf", [True, False])
def test_token_method_uses_emissions_whatever_the_heads(t_crf: bool, s_crf: bool) -> None:
    s, t = tagger(4, s_crf, 0), tagger(4, t_crf, 1)
    got = kd_of(WordObjective("token", 1.0, T), s, teacher_of(t))
    torch.testing.assert_close(got, token_kd(s.logits, torch.softmax(t.logits / T, -1), mask(), T))


def test_token_method_with_a_label_map() -> None:
    label_map = torch.tensor([[1, 0], [0, 1], [0, 1]], dtype=D)
    s, t = tagger(2, False, 0), tagger(3, True, 1)
    got = kd_of(WordObjective("token", 1.0, T, label_map=label_map), s, teacher_of(t))
    want = token_kd(s.logits, torch.softmax(t.logits / T, -1) @ label_map, mask(), T)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("t_crf", [True, False])
@pytest.mark.parametrize("s_crf", [True, False])
def test_topk_matches_sequence_kd(t_crf: bool, s_crf: bool) -> None:
    s, t = tagger(3, s_crf, 0), tagger(3, t_crf, 1)
    got = kd_of(WordObjective("topk", 1.0, T, kbest=4), s, teacher_of(t))
    m = mask()
    tp = (
        pot(t)
        if t_crf
        else CRFPotentials(t.logits, torch.zeros(3, 3, dtype=D), torch.zeros(3, dtype=D), torch.zeros(3, dtype=D))
    )
    tags, scores = crf_kbest(*(p.detach() for p in tp), k=4, mask=m)
    logp = crf_sequence_logprob(pot(s), tags, m) if s_crf else token_sequence_logprob(s.logits, tags, m)
    torch.testing.assert_close(got, sequence_kd(logp, kbest_weights(scores / T)))


def test_topk_with_a_label_map_translates_tags_to_the_most_probable_student_tag() -> None:
    label_map = torch.tensor([[1, 0], [0, 1], [0, 1]], dtype=D)
    s, t = tagger(2, True, 0), tagger(3, True, 1)
    got = kd_of(WordObjective("topk", 1.0, T, kbest=3, label_map=label_map), s, teacher_of(t))
    m = mask()
    tags, scores = crf_kbest(*(p.detach() for p in pot(t)), k=3, mask=m)
    mapped = torch.where(tags < 0, tags, torch.tensor([0, 1, 1])[tags.clamp(min=0)])
    torch.testing.assert_close(got, sequence_kd(crf_sequence_logprob(pot(s), mapped, m), kbest_weights(scores / T)))
    soft = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]], dtype=D)
    got_soft = kd_of(WordObjective("topk", 1.0, T, kbest=3, label_map=soft), s, teacher_of(t))
    torch.testing.assert_close(got_soft, got)


# ------------------------------------------------------------------------------------------------------------------
# parsing


def parser(r: int, seed: int, grad: bool = True) -> ParserOut:
    g = torch.Generator().manual_seed(seed)
    arcs = torch.randn(B, W + 1, W + 1, generator=g, dtype=D).requires_grad_(grad)
    rels = torch.randn(B, W + 1, W + 1, r, generator=g, dtype=D).requires_grad_(grad)
    return ParserOut(arcs, rels)


def local_head_kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Direct loop: Σ_b Σ_d KL(softmax_h(t[:, d]/T) ‖ softmax_h(s[:, d]/T)) over h ∈ 0..n, h ≠ d; mean × T²."""
    total = torch.zeros((), dtype=D)
    for b, n in enumerate(LENGTHS):
        for d in range(1, n + 1):
            heads = [h for h in range(n + 1) if h != d]
            p = torch.softmax(teacher[b, heads, d] / T, 0)
            log_q = torch.log_softmax(student[b, heads, d] / T, 0)
            total = total + (p * (p.log() - log_q)).sum()
    return total * T**2 / B


def test_parsing_structural_is_arc_kd_and_token_is_local_kl() -> None:
    s, t = parser(3, 0), parser(3, 1, grad=False)
    signals = TeacherSignals(logits=t.logits)
    lengths = torch.tensor(LENGTHS)
    got = kd_of(WordObjective("structural", 1.0, T, task="parsing"), s, signals)
    torch.testing.assert_close(got, arc_kd(s.logits, t.logits, lengths, T))
    got = kd_of(WordObjective("token", 1.0, T, task="parsing"), s, signals)
    torch.testing.assert_close(got, local_head_kl(s.logits, t.logits))
    same = ParserOut(t.logits.clone().requires_grad_(), s.rel_logits)
    assert abs(float(kd_of(WordObjective("token", 1.0, T, task="parsing"), same, signals).detach())) < 1e-6
    got.backward()
    assert s.logits.grad is not None and float(s.logits.grad.abs().sum()) > 0


def test_parsing_topk_is_refused() -> None:
    with pytest.raises(ValueError, match="topk is for taggers"):
        WordObjective("topk", 0.5, T, kbest=2, task="parsing")


def test_parser_gold_loss_by_hand() -> None:
    s = parser(3, 0)
    heads = torch.tensor([[2, 0, 2, 3], [0, 1, -100, -100], [-100, -100, -100, -100]])
    rels = torch.tensor([[1, 0, -100, 2], [0, 2, -100, -100], [-100, -100, -100, -100]])
    batch = make_batch(heads=heads, deprels=rels)
    got = WordObjective("none", 0.0, task="parsing")(STAGE, None, s, {}, TeacherSignals(), batch)
    total = torch.zeros((), dtype=D)
    for b in range(B):
        n = LENGTHS[b]
        for i in range(n):
            d, h = i + 1, int(heads[b, i])
            if h == IGNORE_LABEL:
                continue
            cand = [x for x in range(n + 1) if x != d]
            total = total - torch.log_softmax(s.logits[b, cand, d], 0)[cand.index(h)]
            if int(rels[b, i]) != IGNORE_LABEL:
                total = total - torch.log_softmax(s.rel_logits[b, h, d], 0)[int(rels[b, i])]
    torch.testing.assert_close(got.total, total / 2)  # two labelled sentences
    assert set(got.parts) == {"gold", "loss"}
    bad = make_batch(heads=torch.tensor([[1, 0, 2, 3], [0, 1, -100, -100], [0, 1, 1, -100]]), deprels=rels)
    with pytest.raises(ValueError, match="gold heads"):
        WordObjective("none", 0.0, task="parsing")(STAGE, None, s, {}, TeacherSignals(), bad)


# ------------------------------------------------------------------------------------------------------------------
# gold, mixing, annealing


def test_softmax_gold_ignores_unlabelled_words_and_sentences() -> None:
    s = tagger(4, False, 0)
    y = labels(4)
    y[0, 1] = IGNORE_LABEL  # one hidden word
    y[2] = IGNORE_LABEL  # one unlabelled sentence
    got = WordObjective("none", 0.7)(STAGE, None, s, {}, TeacherSignals(), make_batch(upos=y))
    keep = y != IGNORE_LABEL
    want = F.cross_entropy(s.logits[keep], y[keep], reduction="sum") / 2
    torch.testing.assert_close(got.total, want)


def test_crf_gold_uses_fully_labelled_sentences_only() -> None:
    s = tagger(4, True, 0)
    y = labels(4)
    y[0, 1] = IGNORE_LABEL  # sentence 0 partly labelled: left out
    got = WordObjective("none", 0.0)(STAGE, None, s, {}, TeacherSignals(), make_batch(upos=y))
    rows = torch.tensor([1, 2])
    sub = CRFPotentials(s.logits[rows], s.transitions, s.start, s.end)
    want = -crf_sequence_logprob(sub, y[rows].unsqueeze(1), mask()[rows]).mean()
    torch.testing.assert_close(got.total, want)


@pytest.mark.parametrize("crf", [True, False])
def test_no_labelled_sentence_gives_a_graph_keeping_zero(crf: bool) -> None:
    s = tagger(4, crf, 0)
    y = torch.full((B, W), IGNORE_LABEL)
    if crf:
        y[0, 0] = 1  # partly labelled only: still nothing for a CRF
    got = WordObjective("none", 0.0)(STAGE, None, s, {}, TeacherSignals(), make_batch(upos=y))
    assert float(got.total.detach()) == 0.0 and got.total.grad_fn is not None
    got.total.backward()
    p = parser(3, 0)
    heads = torch.full((B, W), IGNORE_LABEL)
    out = WordObjective("none", 0.0, task="parsing")(
        STAGE, None, p, {}, TeacherSignals(), make_batch(heads=heads, deprels=heads)
    )
    assert float(out.total.detach()) == 0.0 and out.total.grad_fn is not None


def test_mix_gold_and_kd_and_method_none_ignores_the_teacher() -> None:
    s, t = tagger(4, True, 0), tagger(4, True, 1)
    y = labels(4)
    batch = make_batch(upos=y)
    objective = WordObjective("structural", 0.3, T)
    step = objective(STAGE, None, s, {}, teacher_of(t), batch)
    gold = -crf_sequence_logprob(pot(s), y.unsqueeze(1), mask()).mean()
    kd = crf_kd(pot(s), pot(t), mask(), T)
    torch.testing.assert_close(step.total, 0.7 * gold + 0.3 * kd)
    torch.testing.assert_close(step.parts["gold"], gold.detach())
    torch.testing.assert_close(step.parts["kd"], kd.detach())
    assert set(step.parts) == {"gold", "kd", "loss"}
    none = WordObjective("none", 0.3, T)
    assert not none.needs_teacher_logits(STAGE) and none.needs_student_logits(STAGE)
    assert objective.needs_teacher_logits(STAGE)
    plain = none(STAGE, None, s, {}, TeacherSignals(), batch)  # no teacher outputs at all
    torch.testing.assert_close(plain.total, gold)
    assert "kd" not in plain.parts


def test_lambda_one_needs_no_gold() -> None:
    s, t = tagger(4, False, 0), tagger(4, False, 1)
    step = WordObjective("structural", 1.0, T)(STAGE, None, s, {}, teacher_of(t), make_batch())
    assert set(step.parts) == {"kd", "loss"}
    with pytest.raises(ValueError, match="gold labels"):
        WordObjective("structural", 0.5, T)(STAGE, None, s, {}, teacher_of(t), make_batch())
    with pytest.raises(ValueError, match="teacher"):
        WordObjective("structural", 0.5, T)(STAGE, None, s, {}, TeacherSignals(), make_batch(upos=labels(4)))


def test_annealing_schedule() -> None:
    assert annealed_lambda(0.8, 0.005, 0) == 0.8
    assert annealed_lambda(0.8, 0.005, 100) == pytest.approx(0.4)
    assert annealed_lambda(0.8, 0.005, 200) == 0.0
    assert annealed_lambda(0.8, 0.005, 500) == 0.0  # clipped at 0
    assert annealed_lambda(0.8, None, 50) == 0.8 and annealed_lambda(0.8, 0.0, 50) == 0.8
    objective = WordObjective("structural", 1.0, T, anneal_rate=0.25)
    assert objective.lam == 1.0
    objective.start_epoch(0)
    assert objective.lam == 1.0
    objective.start_epoch(2)
    assert objective.lam == pytest.approx(0.5)
    objective.start_epoch(4)
    assert objective.lam == 0.0
    assert objective.needs_teacher_logits(STAGE)  # decided on alpha, not on the annealed lambda
    s = tagger(4, False, 0)
    step = objective(STAGE, None, s, {}, TeacherSignals(), make_batch(upos=labels(4)))  # lambda 0: no teacher used
    assert set(step.parts) == {"gold", "loss"}
    assert WordObjective("none", 0.9, anneal_rate=0.1).lam == 0.0


def test_gradients_reach_every_student_potential() -> None:
    s, t = tagger(4, True, 0), tagger(4, False, 1)
    step = WordObjective("structural", 0.5, T)(STAGE, None, s, {}, teacher_of(t), make_batch(upos=labels(4)))
    step.total.backward()
    for p in (s.logits, s.transitions, s.start, s.end):
        assert p.grad is not None and float(p.grad.abs().sum()) > 0
    assert t.logits.grad is None


def test_float32_and_a_sentence_without_words() -> None:
    lengths = torch.tensor([3, 0])
    m = torch.arange(3)[None, :] < lengths[:, None]
    s = TaggerOut(torch.randn(2, 3, 4, requires_grad=True), torch.randn(4, 4), torch.randn(4), torch.randn(4))
    t = TaggerOut(torch.randn(2, 3, 4), torch.randn(4, 4), torch.randn(4), torch.randn(4))
    batch = {"input_ids": torch.ones(2, 5, dtype=torch.long), "word_mask": m}
    got = WordObjective("structural", 1.0, T)(STAGE, None, s, {}, teacher_of(t), batch).total
    want = crf_kd(
        CRFPotentials(s.logits[:1], s.transitions, s.start, s.end), pot(t)._replace(emissions=t.logits[:1]), m[:1], T
    )
    torch.testing.assert_close(got, want)


def test_bad_shapes_are_reported() -> None:
    s = tagger(4, False, 0)
    short = TaggerOut(s.logits[:, :2])
    with pytest.raises(ValueError, match="student emissions"):
        kd_of(structural(), short, teacher_of(tagger(4, False, 1)))
    with pytest.raises(ValueError, match="teacher emissions"):
        kd_of(structural(), s, TeacherSignals(logits=torch.zeros(B, W + 1, 4, dtype=D)))
    crf_t = teacher_of(tagger(4, True, 1))
    crf_t.extras["transitions"] = torch.zeros(3, 3, dtype=D)
    with pytest.raises(ValueError, match="teacher CRF"):
        kd_of(structural(), s, crf_t)
    p = parser(3, 0)
    with pytest.raises(ValueError, match="arc logits"):
        kd_of(
            WordObjective("structural", 1.0, T, task="parsing"),
            ParserOut(p.logits[:, :3, :3], p.rel_logits),
            TeacherSignals(logits=p.logits),
        )
    with pytest.raises(ValueError, match="teacher arc scores"):
        kd_of(WordObjective("structural", 1.0, T, task="parsing"), p, TeacherSignals(logits=p.logits[:, :3, :3]))
    with pytest.raises(ValueError, match="unknown word KD method"):
        WordObjective("vanilla", 0.5)
    with pytest.raises(ValueError, match="kbest"):
        WordObjective("topk", 0.5)
