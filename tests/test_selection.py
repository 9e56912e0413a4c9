"""Tests for kdlab.methods.selection (MUD hidden-state knowledge selection).

The batch mixes every padding pattern (a full, a half, a short and a one-token example), puts nan in the padding
and gives padding and [SEP] tokens the highest [CLS] scores, so a selection that reads or picks a padded or [SEP]
token shows up as a wrong position or a non-finite value.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from kdlab.losses import hidden_mse
from kdlab.methods.selection import (
    Selected,
    SelectionSpec,
    cls_attention,
    from_examples,
    gather_student,
    select_teacher,
    to_examples,
    width_dims,
)

LENGTHS = (9, 6, 3, 1)
MAX_LEN = 9
WIDTH = 16

TOKEN_RULES = ("all", "cls", "first:4", "first:20", "attention:4", "attention:20", "attention_no_sep:4")
WIDTH_RULES = ((1.0, "uniform"), (0.25, "uniform"), (0.3, "random"), (0.25, "importance"))
ALL_SPECS = [
    SelectionSpec(tokens=t, width=w, width_mask=m, seed=3) for t, (w, m) in itertools.product(TOKEN_RULES, WIDTH_RULES)
]


def _ids(spec: SelectionSpec) -> str:
    return spec.signature()


def make_batch(seed: int = 0, dtype: torch.dtype = torch.float64) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    batch = len(LENGTHS)
    mask = torch.tensor([[1] * n + [0] * (MAX_LEN - n) for n in LENGTHS])
    real = mask.bool()
    hidden = torch.randn(batch, MAX_LEN, WIDTH, generator=g, dtype=torch.float64)
    hidden = hidden.masked_fill(~real.unsqueeze(-1), float("nan")).to(dtype)
    sep = torch.zeros(batch, MAX_LEN, dtype=torch.bool)
    for b, n in enumerate(LENGTHS):
        sep[b, n - 1] = n > 1  # a one-token example is only [CLS]
    sep[0, 4] = True  # a sentence pair: a [SEP] in the middle
    # Distinct scores (no ties); padding and [SEP] score highest, so a rule that does not exclude them picks them.
    scores = torch.rand(batch, MAX_LEN, generator=g, dtype=torch.float64)
    scores = torch.where(~real, 10.0 + scores, scores)
    scores = torch.where(sep, 5.0 + scores, scores)
    return {"hidden": hidden, "mask": mask, "sep": sep, "scores": scores}


def select(spec: SelectionSpec, data: dict[str, Tensor]) -> Selected:
    return select_teacher(spec, data["hidden"], data["mask"], cls_scores=data["scores"], sep_mask=data["sep"])


def full_positions(sel: Selected) -> Tensor:
    if sel.positions is not None:
        return sel.positions
    batch, n = sel.token_mask.shape
    return torch.arange(n).expand(batch, n)


def full_dims(sel: Selected) -> Tensor:
    """[B, n, k] dims of every slot, whatever the kind of width mask."""
    batch, n, k = sel.values.shape
    if sel.dims is None:
        return torch.arange(k).expand(batch, n, k)
    if sel.dims.ndim == 1:
        return sel.dims.expand(batch, n, k)
    return sel.dims


# ------------------------------------------------------------------------------------------------------------
# SelectionSpec
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tokens": "first"},
        {"tokens": "first:0"},
        {"tokens": "first:-1"},
        {"tokens": "first:2.5"},
        {"tokens": "attn:3"},
        {"tokens": "cls:1"},
        {"tokens": "ALL"},
        {"tokens": ""},
        {"tokens": 5},
        {"width": 0.0},
        {"width": 1.5},
        {"width": -0.1},
        {"width": float("nan")},
        {"width": True},
        {"width": "0.5"},
        {"width_mask": "topk"},
        {"seed": -1},
        {"seed": 1.5},
        {"seed": True},
    ],
)
def test_spec_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="SelectionSpec"):
        SelectionSpec(**kwargs)


@pytest.mark.parametrize(
    ("tokens", "rule", "count", "needs_attention"),
    [
        ("all", "all", None, False),
        ("cls", "cls", 1, False),
        ("first:7", "first", 7, False),
        ("attention:10", "attention", 10, True),
        ("attention_no_sep:1", "attention_no_sep", 1, True),
    ],
)
def test_spec_parse_helpers(tokens: str, rule: str, count: int | None, needs_attention: bool) -> None:
    spec = SelectionSpec(tokens=tokens)
    assert (spec.token_rule, spec.token_count, spec.needs_attention) == (rule, count, needs_attention)
    assert spec.is_identity == (tokens == "all")
    assert not SelectionSpec(tokens=tokens, width=0.5).is_identity


def test_spec_canonical_forms() -> None:
    assert SelectionSpec(tokens="first:05") == SelectionSpec(tokens="first:5")
    assert SelectionSpec(tokens="first:05").tokens == "first:5"
    assert SelectionSpec(width=1).width == 1.0 and isinstance(SelectionSpec(width=1).width, float)
    assert SelectionSpec(width=1).is_identity


def test_signature_is_stable() -> None:
    # Literal strings: a change here invalidates every disk cache keyed by a signature.
    assert SelectionSpec().signature() == "tokens=all"
    assert SelectionSpec(width_mask="random", seed=9).signature() == "tokens=all"
    assert SelectionSpec("cls", 0.5).signature() == "tokens=cls,width=uniform:0.5"
    assert (
        SelectionSpec("attention_no_sep:10", 0.1, "importance").signature()
        == "tokens=attention_no_sep:10,width=importance:0.1"
    )
    assert SelectionSpec("first:3", 0.25, "random", 7).signature() == "tokens=first:3,width=random:0.25,seed=7"
    assert SelectionSpec("first:3", 0.25, "uniform", 7).signature() == "tokens=first:3,width=uniform:0.25"


def test_signature_is_unique() -> None:
    tokens = ("all", "cls", "first:1", "first:10", "attention:10", "attention_no_sep:10", "attention:100")
    widths = (1.0, 0.5, 0.1, 1 / 3, 0.30000000000000004)
    specs = {
        SelectionSpec(t, w, m, s)
        for t, w, m, s in itertools.product(tokens, widths, ("uniform", "random", "importance"), (0, 1))
    }

    def behaviour(spec: SelectionSpec) -> tuple:
        """What the selection does: the mask does not matter at p = 1, the seed only for random masks."""
        if spec.width == 1.0:
            return (spec.tokens,)
        return (spec.tokens, spec.width, spec.width_mask, spec.seed if spec.width_mask == "random" else None)

    by_signature: dict[str, tuple] = {}
    for spec in specs:
        assert by_signature.setdefault(spec.signature(), behaviour(spec)) == behaviour(spec)
    assert len(by_signature) == len({behaviour(spec) for spec in specs})


def test_kept_dims() -> None:
    assert SelectionSpec(width=0.1).kept_dims(768) == 77
    assert SelectionSpec(width=0.5).kept_dims(8) == 4
    assert SelectionSpec(width=0.001).kept_dims(16) == 1
    assert SelectionSpec().kept_dims(5) == 5
    with pytest.raises(ValueError, match="width"):
        SelectionSpec().kept_dims(0)


# ------------------------------------------------------------------------------------------------------------
# Width masks
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [1, 2, 7, 16, 100, 768])
@pytest.mark.parametrize("p", [0.01, 0.1, 0.25, 1 / 3, 0.5, 0.9, 0.99])
def test_uniform_dims_are_k_distinct_evenly_spread(width: int, p: float) -> None:
    spec = SelectionSpec(width=p, width_mask="uniform")
    dims = width_dims(spec, width)
    assert dims is not None and dims.dtype == torch.long
    k = spec.kept_dims(width)
    assert dims.shape == (k,)
    assert dims.unique().numel() == k
    assert torch.equal(dims, dims.sort().values)
    assert int(dims[0]) == 0 and int(dims[-1]) < width
    # Evenly spread: the gaps (including the wrap-around to the end) differ by at most one.
    gaps = torch.diff(torch.cat([dims, torch.tensor([width])]))
    assert int(gaps.max() - gaps.min()) <= 1


def test_uniform_dims_every_other() -> None:
    assert width_dims(SelectionSpec(width=0.5), 8).tolist() == [0, 2, 4, 6]
    assert width_dims(SelectionSpec(width=0.25), 16).tolist() == [0, 4, 8, 12]


def test_random_dims_reproducible_by_seed() -> None:
    dims = {seed: width_dims(SelectionSpec(width=0.25, width_mask="random", seed=seed), 64) for seed in range(5)}
    for seed, d in dims.items():
        assert d is not None and d.shape == (16,) and d.unique().numel() == 16
        assert torch.equal(d, d.sort().values) and int(d.min()) >= 0 and int(d.max()) < 64
        assert torch.equal(d, width_dims(SelectionSpec(width=0.25, width_mask="random", seed=seed), 64))
    assert len({tuple(d.tolist()) for d in dims.values()}) == len(dims)
    # Not simply the uniform mask.
    assert not torch.equal(dims[0], width_dims(SelectionSpec(width=0.25), 64))


def test_width_dims_none_without_shared_mask() -> None:
    assert width_dims(SelectionSpec(), 16) is None
    assert width_dims(SelectionSpec(width_mask="random"), 16) is None
    assert width_dims(SelectionSpec(width=0.5, width_mask="importance"), 16) is None


# ------------------------------------------------------------------------------------------------------------
# Token selection
# ------------------------------------------------------------------------------------------------------------


def test_cls_attention() -> None:
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(2, 3, 5, 5, generator=g).softmax(dim=-1)
    expected = torch.stack([probs[:, h, 0, :] for h in range(3)]).mean(dim=0)
    assert torch.allclose(cls_attention(probs), expected)
    assert cls_attention(probs.half()).dtype == torch.float32
    with pytest.raises(ValueError, match="cls_attention"):
        cls_attention(probs[:, :, :, :4])


@pytest.mark.parametrize("spec", ALL_SPECS, ids=_ids)
def test_selected_slots_are_real_tokens_in_order(spec: SelectionSpec) -> None:
    data = make_batch()
    sel = select(spec, data)
    batch, n, k = sel.values.shape
    assert k == spec.kept_dims(WIDTH)
    assert sel.token_mask.dtype == torch.bool and sel.token_mask.shape == (batch, n)
    positions = full_positions(sel)
    counts = sel.token_mask.sum(dim=1)
    for b in range(batch):
        c = int(counts[b])
        assert sel.token_mask[b, :c].all() and not sel.token_mask[b, c:].any(), "real slots first"
        real_positions = positions[b, :c]
        assert data["mask"][b, real_positions].all(), "a selected position is padding"
        assert (torch.diff(real_positions) > 0).all(), "positions not in sentence order"
        if sel.positions is not None:
            assert (sel.positions[b, c:] == 0).all()


@pytest.mark.parametrize("spec", ALL_SPECS, ids=_ids)
def test_masked_slots_hold_zeros(spec: SelectionSpec) -> None:
    sel = select(spec, make_batch())  # padding holds nan
    masked = ~sel.token_mask
    assert torch.isfinite(sel.values).all()
    assert (sel.values[masked] == 0).all()
    if sel.dims is not None and sel.dims.ndim == 3:
        assert (sel.dims[masked] == 0).all()


def test_cls_selects_position_zero() -> None:
    sel = select(SelectionSpec("cls"), make_batch())
    assert sel.positions is not None and sel.positions.shape == (len(LENGTHS), 1)
    assert (sel.positions == 0).all() and sel.token_mask.all()
    assert torch.equal(sel.values[:, 0], make_batch()["hidden"][:, 0])


@pytest.mark.parametrize(("count", "n"), [(1, 1), (4, 4), (7, 7), (20, MAX_LEN)])
def test_first_n_with_short_examples(count: int, n: int) -> None:
    sel = select(SelectionSpec(f"first:{count}"), make_batch())
    assert sel.positions is not None and sel.positions.shape == (len(LENGTHS), n)
    assert sel.token_mask.sum(dim=1).tolist() == [min(count, length) for length in LENGTHS]
    for b, length in enumerate(LENGTHS):
        c = min(count, length)
        assert sel.positions[b, :c].tolist() == list(range(c))


@pytest.mark.parametrize("count", [1, 2, 4, 20])
@pytest.mark.parametrize("rule", ["attention", "attention_no_sep"])
def test_attention_picks_top_scoring_candidates(rule: str, count: int) -> None:
    data = make_batch()
    sel = select(SelectionSpec(f"{rule}:{count}"), data)
    assert sel.positions is not None
    for b in range(len(LENGTHS)):
        candidates = [
            j for j in range(MAX_LEN) if data["mask"][b, j] and not (rule.endswith("no_sep") and data["sep"][b, j])
        ]
        ranked = sorted(candidates, key=lambda j: -float(data["scores"][b, j]))
        expected = sorted(ranked[:count])
        c = int(sel.token_mask[b].sum())
        assert sel.positions[b, :c].tolist() == expected


def test_attention_no_sep_never_selects_sep_or_padding() -> None:
    for seed in range(5):
        data = make_batch(seed)
        for count in range(1, MAX_LEN + 2):
            sel = select(SelectionSpec(f"attention_no_sep:{count}"), data)
            assert sel.positions is not None
            picked_sep = data["sep"].gather(1, sel.positions) & sel.token_mask
            picked_pad = ~data["mask"].bool().gather(1, sel.positions) & sel.token_mask
            assert not picked_sep.any() and not picked_pad.any()
    # Without the no_sep rule the highly scored [SEP]s are chosen: the exclusion above is not vacuous.
    data = make_batch()
    sel = select(SelectionSpec("attention:2"), data)
    assert (data["sep"].gather(1, sel.positions) & sel.token_mask).any()


def test_attention_ties_go_to_earlier_positions() -> None:
    data = make_batch()
    data["scores"] = torch.ones_like(data["scores"])
    sel = select(SelectionSpec("attention:3"), data)
    assert sel.positions is not None
    assert sel.positions[0].tolist() == [0, 1, 2]


def test_attention_rules_require_scores_and_sep() -> None:
    data = make_batch()
    with pytest.raises(ValueError, match="cls_scores"):
        select_teacher(SelectionSpec("attention:3"), data["hidden"], data["mask"])
    with pytest.raises(ValueError, match="sep_mask"):
        select_teacher(SelectionSpec("attention_no_sep:3"), data["hidden"], data["mask"], cls_scores=data["scores"])
    with pytest.raises(ValueError, match="attention_mask"):
        select_teacher(SelectionSpec(), data["hidden"], data["mask"][:, :4])


# ------------------------------------------------------------------------------------------------------------
# Width selection on the teacher
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ALL_SPECS, ids=_ids)
def test_values_are_the_teacher_at_positions_and_dims(spec: SelectionSpec) -> None:
    data = make_batch()
    sel = select(spec, data)
    positions, dims = full_positions(sel), full_dims(sel)
    for b, i in zip(*torch.nonzero(sel.token_mask, as_tuple=True), strict=True):
        row = data["hidden"][b, positions[b, i]]
        assert torch.equal(sel.values[b, i], row[dims[b, i]])


@pytest.mark.parametrize("tokens", ["all", "attention:4"])
def test_importance_dims_are_largest_magnitudes(tokens: str) -> None:
    data = make_batch()
    spec = SelectionSpec(tokens, 0.25, "importance")
    sel = select(spec, data)
    k = spec.kept_dims(WIDTH)
    assert sel.dims is not None and sel.dims.shape == (*sel.token_mask.shape, k)
    positions = full_positions(sel)
    for b, i in zip(*torch.nonzero(sel.token_mask, as_tuple=True), strict=True):
        magnitude = data["hidden"][b, positions[b, i]].abs()
        kept = set(sel.dims[b, i].tolist())
        assert len(kept) == k
        assert min(float(magnitude[d]) for d in kept) > max(float(magnitude[d]) for d in range(WIDTH) if d not in kept)
        assert torch.equal(sel.dims[b, i], sel.dims[b, i].sort().values)


def test_half_precision_keeps_dtype() -> None:
    for dtype in (torch.float16, torch.bfloat16):
        data = make_batch(dtype=dtype)
        for spec in (SelectionSpec("attention:4", 0.25, "importance"), SelectionSpec("all", 0.5)):
            sel = select(spec, data)
            assert sel.values.dtype == dtype and torch.isfinite(sel.values).all()
            assert torch.equal(gather_student(sel, data["hidden"]), sel.values)


# ------------------------------------------------------------------------------------------------------------
# Student side
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ALL_SPECS, ids=_ids)
def test_student_equal_to_teacher_gathers_the_same_values(spec: SelectionSpec) -> None:
    data = make_batch()
    sel = select(spec, data)
    student = gather_student(sel, data["hidden"].clone())
    assert torch.equal(student, sel.values)
    assert float(hidden_mse(student, sel.values, sel.token_mask)) == 0.0


@pytest.mark.parametrize("spec", ALL_SPECS, ids=_ids)
def test_gradient_only_at_selected_entries(spec: SelectionSpec) -> None:
    data = make_batch()
    sel = select(spec, data)
    student = torch.randn(len(LENGTHS), MAX_LEN, WIDTH, dtype=torch.float64, requires_grad=True)
    weights = torch.rand(sel.values.shape, dtype=torch.float64) + 0.5
    (gather_student(sel, student) * weights).sum().backward()
    assert student.grad is not None
    # Expected: each selected (token, dim) gets its own weight; everything else exactly 0.
    expected = torch.zeros_like(student)
    positions, dims = full_positions(sel), full_dims(sel)
    for b, i in zip(*torch.nonzero(sel.token_mask, as_tuple=True), strict=True):
        expected[b, positions[b, i], dims[b, i]] += weights[b, i]
    assert torch.equal(student.grad, expected)


@pytest.mark.parametrize("spec", ALL_SPECS, ids=_ids)
def test_projection_path(spec: SelectionSpec) -> None:
    data = make_batch()
    sel = select(spec, data)
    torch.manual_seed(0)
    projection = nn.Linear(7, WIDTH).double()
    student = torch.randn(len(LENGTHS), MAX_LEN, 7, dtype=torch.float64, requires_grad=True)
    out = gather_student(sel, student, projection)
    assert out.shape == sel.values.shape
    loss = hidden_mse(out, sel.values, sel.token_mask)
    loss.backward()
    assert projection.weight.grad is not None and projection.weight.grad.abs().sum() > 0
    assert student.grad is not None
    selected_rows = torch.zeros(len(LENGTHS), MAX_LEN, dtype=torch.bool)
    positions = full_positions(sel)
    for b, i in zip(*torch.nonzero(sel.token_mask, as_tuple=True), strict=True):
        selected_rows[b, positions[b, i]] = True
    assert (student.grad[~selected_rows] == 0).all()
    assert (student.grad[selected_rows].abs().sum(dim=-1) > 0).all()
    with pytest.raises(ValueError, match="gather_student"):
        gather_student(sel, student)  # width 7 != 16, no projection


def test_gather_student_ignores_nan_in_unselected_student_entries() -> None:
    data = make_batch()
    sel = select(SelectionSpec("first:4", 0.5), data)
    student = torch.randn(len(LENGTHS), MAX_LEN, WIDTH, dtype=torch.float64)
    student[~data["mask"].bool()] = float("nan")
    student.requires_grad_(True)
    out = gather_student(sel, student)
    assert torch.isfinite(out).all()
    hidden_mse(out, sel.values, sel.token_mask).backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()


# ------------------------------------------------------------------------------------------------------------
# Disk cache round trip
# ------------------------------------------------------------------------------------------------------------


def assert_same_selection(a: Selected, b: Selected) -> None:
    """Equal on real slots; slots only one side has must be masked."""
    n = min(a.token_mask.shape[1], b.token_mask.shape[1])
    for sel in (a, b):
        assert not sel.token_mask[:, n:].any()
    assert torch.equal(a.token_mask[:, :n], b.token_mask[:, :n])
    real = a.token_mask[:, :n]
    assert a.values.dtype == b.values.dtype
    assert torch.equal(a.values[:, :n][real], b.values[:, :n][real])
    assert (a.positions is None) == (b.positions is None)
    if a.positions is not None and b.positions is not None:
        assert torch.equal(a.positions[:, :n][real], b.positions[:, :n][real])
        assert b.positions.dtype == torch.long
    assert (a.dims is None) == (b.dims is None)
    if a.dims is not None and b.dims is not None:
        assert a.dims.ndim == b.dims.ndim and b.dims.dtype == torch.long
        if a.dims.ndim == 1:
            assert torch.equal(a.dims, b.dims)
        else:
            assert torch.equal(a.dims[:, :n][real], b.dims[:, :n][real])


@pytest.mark.parametrize("spec", ALL_SPECS, ids=_ids)
def test_round_trip(spec: SelectionSpec) -> None:
    data = make_batch()
    sel = select(spec, data)
    lengths = data["mask"].sum(dim=1)
    examples = to_examples(sel, lengths)
    assert len(examples) == len(LENGTHS)
    counts = lengths if sel.positions is None else sel.token_mask.sum(dim=1)
    for example, c in zip(examples, counts.tolist(), strict=True):
        assert example["values"].shape == (c, sel.values.shape[-1]) and example["values"].dtype == np.float64
        assert ("positions" in example) == (sel.positions is not None)
        if "positions" in example:
            assert example["positions"].dtype == np.int32
        assert ("dims" in example) == (spec.width < 1 and spec.width_mask == "importance")
        if "dims" in example:
            assert example["dims"].dtype == np.int16 and example["dims"].shape == example["values"].shape
    back = from_examples(examples, MAX_LEN, width_dims(spec, WIDTH), device="cpu")
    assert_same_selection(sel, back)
    assert torch.isfinite(back.values).all() and (back.values[~back.token_mask] == 0).all()
    # The student side sees the same entries after the round trip.
    student = torch.randn(len(LENGTHS), MAX_LEN, WIDTH, dtype=torch.float64)
    n = back.token_mask.shape[1]
    assert torch.equal(gather_student(back, student), gather_student(sel, student)[:, :n])


def test_round_trip_all_tokens_pads_to_batch_length() -> None:
    data = make_batch()
    sel = select(SelectionSpec(width=0.5), data)
    examples = to_examples(sel, data["mask"].sum(dim=1))
    back = from_examples(examples, MAX_LEN + 3, width_dims(SelectionSpec(width=0.5), WIDTH))
    assert back.values.shape == (len(LENGTHS), MAX_LEN + 3, 8)
    assert back.token_mask.sum(dim=1).tolist() == list(LENGTHS)
    with pytest.raises(ValueError, match="seq_len"):
        from_examples(examples, MAX_LEN - 1, None)


def test_round_trip_half_precision_and_tensor_inputs() -> None:
    data = make_batch(dtype=torch.float16)
    sel = select(SelectionSpec("attention:4", 0.25, "importance"), data)
    examples = to_examples(sel, data["mask"].sum(dim=1))
    assert examples[0]["values"].dtype == np.float16
    assert_same_selection(sel, from_examples(examples, MAX_LEN, None))
    as_tensors = [{key: torch.from_numpy(value) for key, value in ex.items()} for ex in examples]
    assert_same_selection(sel, from_examples(as_tensors, MAX_LEN, None))
    # bfloat16 has no numpy dtype: stored as float32, which holds it exactly.
    bf16 = select(SelectionSpec("first:4"), make_batch(dtype=torch.bfloat16))
    stored = to_examples(bf16, data["mask"].sum(dim=1))
    assert stored[0]["values"].dtype == np.float32
    back = from_examples(stored, MAX_LEN, None)
    assert torch.equal(back.values.to(torch.bfloat16)[back.token_mask], bf16.values[bf16.token_mask])


def test_round_trip_read_only_arrays_without_warning() -> None:
    data = make_batch()
    sel = select(SelectionSpec("first:4", 0.25, "importance"), data)
    examples = to_examples(sel, data["mask"].sum(dim=1))
    for ex in examples:
        for value in ex.values():
            value.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = from_examples(examples, MAX_LEN, None)
    assert_same_selection(sel, back)


@pytest.mark.parametrize("seq_len", [MAX_LEN, MAX_LEN + 2])
def test_round_trip_attention_maps(seq_len: int) -> None:
    g = torch.Generator().manual_seed(0)
    heads = 3
    mask = torch.tensor([[1] * n + [0] * (MAX_LEN - n) for n in LENGTHS])
    maps = torch.rand(len(LENGTHS), heads, MAX_LEN, MAX_LEN, generator=g).softmax(dim=-1)
    sel = Selected(values=maps, token_mask=mask.bool())
    examples = to_examples(sel, mask.sum(dim=1))
    assert [ex["values"].shape for ex in examples] == [(heads, n, n) for n in LENGTHS]
    assert set(examples[0]) == {"values"}
    back = from_examples(examples, seq_len, None)
    assert back.values.shape == (len(LENGTHS), heads, seq_len, seq_len)
    assert back.positions is None and back.dims is None
    assert back.token_mask.sum(dim=1).tolist() == list(LENGTHS)
    for b, n in enumerate(LENGTHS):
        assert torch.equal(back.values[b, :, :n, :n], maps[b, :, :n, :n])
        assert back.values[b, :, n:].abs().sum() == 0 and back.values[b, :, :, n:].abs().sum() == 0
    # The student's maps are compared on the same real query/key pairs.
    student = torch.rand(len(LENGTHS), heads, seq_len, seq_len, generator=g)
    gathered = gather_student(back, student)
    real = back.token_mask
    pair = (real[:, None, :, None] & real[:, None, None, :]).expand_as(student)
    assert torch.equal(gathered[pair], student[pair]) and (gathered[~pair] == 0).all()


def test_to_examples_rejects_left_padding() -> None:
    data = make_batch()
    left = data["mask"].flip(dims=[1])
    hidden = data["hidden"].nan_to_num()
    sel = select_teacher(SelectionSpec("first:4"), hidden, left)
    with pytest.raises(ValueError, match="right padding"):
        to_examples(sel, left.sum(dim=1))
    sel_all = select_teacher(SelectionSpec(), hidden, left)
    with pytest.raises(ValueError, match="right padding"):
        to_examples(sel_all, left.sum(dim=1))


def test_from_examples_rejects_inconsistent_input() -> None:
    good = {"values": np.zeros((2, 4), np.float32), "positions": np.zeros(2, np.int32)}
    with pytest.raises(ValueError, match="no examples"):
        from_examples([], 4, None)
    with pytest.raises(ValueError, match="same keys"):
        from_examples([good, {"values": np.zeros((2, 4), np.float32)}], 4, None)
    with pytest.raises(ValueError, match="positions"):
        from_examples([{"values": np.zeros((2, 4), np.float32), "positions": np.zeros(3, np.int32)}], 4, None)
    with pytest.raises(ValueError, match="shared_dims"):
        from_examples([good], 4, torch.arange(3))
